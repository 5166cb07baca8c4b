//! What the origin tells `/metrics` about SRT ingest: handshakes refused by
//! reason, and each live link's statistics as libsrt measures them (round
//! trip, bandwidth, loss, retransmission, drops, decryption failures, buffer).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use super::ffi;
use crate::publish::PushOptions;
use crate::rtmp::IngestCounters;

/// Link statistics of one SRT push, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkStats {
    pub rtt_ms: f64,
    pub bandwidth_mbps: f64,
    pub received_packets: u64,
    pub lost_packets: u64,
    pub retransmitted_packets: u64,
    pub dropped_packets: u64,
    pub undecrypted_packets: u64,
    pub receive_buffer_ms: u64,
    pub latency_ms: u64,
}

/// SRT ingest counters and the live links' statistics.
#[derive(Default)]
pub struct SrtCounters {
    pub ingest: IngestCounters,
    /// Handshakes refused by the listener callback, by reason.
    refusals: Mutex<HashMap<&'static str, u64>>,
    /// By stream, rendition and encoder role.
    pub(super) links: Mutex<HashMap<LinkKey, LinkStats>>,
}

impl SrtCounters {
    pub(super) fn refused(&self, reason: &'static str) {
        self.ingest.refused.fetch_add(1, Ordering::Relaxed);
        *self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Prometheus text for SRT ingest.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP strom_ingest_srt_refused_total SRT handshakes refused, by reason.\n# TYPE strom_ingest_srt_refused_total counter\n");
        let refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let mut reasons: Vec<_> = refusals.iter().collect();
        reasons.sort();
        for (reason, n) in reasons {
            out.push_str(&format!(
                "strom_ingest_srt_refused_total{{reason=\"{reason}\"}} {n}\n"
            ));
        }
        drop(refusals);
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let mut links: Vec<_> = links.iter().collect();
        links.sort_by(|a, b| a.0.cmp(b.0));
        type Field = fn(&LinkStats) -> String;
        let rows: [(&str, &str, &str, Field); 9] = [
            (
                "strom_ingest_srt_rtt_seconds",
                "gauge",
                "Round-trip time of the SRT link.",
                |l| format!("{}", l.rtt_ms / 1000.0),
            ),
            (
                "strom_ingest_srt_bandwidth_bytes_per_second",
                "gauge",
                "Link bandwidth estimated by SRT.",
                |l| format!("{}", l.bandwidth_mbps * 1e6 / 8.0),
            ),
            (
                "strom_ingest_srt_received_packets_total",
                "counter",
                "Data packets received.",
                |l| l.received_packets.to_string(),
            ),
            (
                "strom_ingest_srt_lost_packets_total",
                "counter",
                "Data packets detected lost (before retransmission).",
                |l| l.lost_packets.to_string(),
            ),
            (
                "strom_ingest_srt_retransmitted_packets_total",
                "counter",
                "Retransmitted packets received.",
                |l| l.retransmitted_packets.to_string(),
            ),
            (
                "strom_ingest_srt_dropped_packets_total",
                "counter",
                "Packets dropped as too late to play.",
                |l| l.dropped_packets.to_string(),
            ),
            (
                "strom_ingest_srt_undecrypted_packets_total",
                "counter",
                "Packets that failed to decrypt.",
                |l| l.undecrypted_packets.to_string(),
            ),
            (
                "strom_ingest_srt_receive_buffer_seconds",
                "gauge",
                "Media held in the SRT receive buffer.",
                |l| format!("{}", l.receive_buffer_ms as f64 / 1000.0),
            ),
            (
                "strom_ingest_srt_latency_seconds",
                "gauge",
                "Negotiated SRT receive latency.",
                |l| format!("{}", l.latency_ms as f64 / 1000.0),
            ),
        ];
        for (name, kind, help, value) in rows {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for ((labels, rendition, role), l) in &links {
                out.push_str(&format!(
                    "{name}{{{labels},rendition=\"{rendition}\",encoder=\"{role}\"}} {}\n",
                    value(l)
                ));
            }
        }
        out
    }
}

/// A link's key in the statistics: the stream's labels, rendition, encoder role.
pub(super) type LinkKey = (String, String, &'static str);

pub(super) fn link_key(
    namespace: &strom_relay::broadcast::Namespace,
    options: &PushOptions,
) -> LinkKey {
    (
        strom_relay::metrics::namespace_labels(namespace),
        options.rendition.clone().unwrap_or_else(|| "main".into()),
        options.role().as_str(),
    )
}

pub(super) fn sample(sock: ffi::SRTSOCKET, link: &LinkKey, counters: &SrtCounters) {
    let mut perf = ffi::CBytePerfMon::default();
    // SAFETY: `perf` is the library's struct, written in place.
    if unsafe { ffi::srt_bstats(sock, &mut perf, 0) } == ffi::SRT_ERROR {
        return;
    }
    let stats = LinkStats {
        rtt_ms: perf.msRTT,
        bandwidth_mbps: perf.mbpsBandwidth,
        received_packets: perf.pktRecvTotal.max(0) as u64,
        lost_packets: perf.pktRcvLossTotal.max(0) as u64,
        // Without clearing, the "interval" counters run since the start.
        retransmitted_packets: perf.pktRcvRetrans.max(0) as u64,
        dropped_packets: perf.pktRcvDropTotal.max(0) as u64,
        undecrypted_packets: perf.pktRcvUndecryptTotal.max(0) as u64,
        receive_buffer_ms: perf.msRcvBuf.max(0) as u64,
        latency_ms: perf.msRcvTsbPdDelay.max(0) as u64,
    };
    counters
        .links
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(link.clone(), stats);
}

//! What the origin tells `/metrics` about SRT ingest: handshakes refused by
//! reason, and each live link's statistics as libsrt measures them (round
//! trip, bandwidth, loss, retransmission, drops, decryption failures, buffer).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use strom_relay::metrics::{Figure, Scrape};

use super::ffi;
use crate::publish::PushOptions;
use crate::rtmp::IngestCounters;

/// Link statistics of one SRT push, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct LinkStats {
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

    /// Adds SRT ingest to the page.
    pub fn collect(&self, scrape: &Scrape) {
        let refused = scrape.counter(
            "strom_ingest_srt_refused_total",
            "SRT handshakes refused, by reason.",
            &["reason"],
        );
        for (reason, n) in self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            refused.with_label_values(&[reason]).inc_by(*n as f64);
        }
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        type Field = fn(&LinkStats) -> f64;
        let rows: [(&str, bool, &str, Field); 9] = [
            (
                "strom_ingest_srt_rtt_seconds",
                false,
                "Round-trip time of the SRT link.",
                |l| l.rtt_ms / 1000.0,
            ),
            (
                "strom_ingest_srt_bandwidth_bytes_per_second",
                false,
                "Link bandwidth estimated by SRT.",
                |l| l.bandwidth_mbps * 1e6 / 8.0,
            ),
            (
                "strom_ingest_srt_received_packets_total",
                true,
                "Data packets received.",
                |l| l.received_packets as f64,
            ),
            (
                "strom_ingest_srt_lost_packets_total",
                true,
                "Data packets detected lost (before retransmission).",
                |l| l.lost_packets as f64,
            ),
            (
                "strom_ingest_srt_retransmitted_packets_total",
                true,
                "Retransmitted packets received.",
                |l| l.retransmitted_packets as f64,
            ),
            (
                "strom_ingest_srt_dropped_packets_total",
                true,
                "Packets dropped as too late to play.",
                |l| l.dropped_packets as f64,
            ),
            (
                "strom_ingest_srt_undecrypted_packets_total",
                true,
                "Packets that failed to decrypt.",
                |l| l.undecrypted_packets as f64,
            ),
            (
                "strom_ingest_srt_receive_buffer_seconds",
                false,
                "Media held in the SRT receive buffer.",
                |l| l.receive_buffer_ms as f64 / 1000.0,
            ),
            (
                "strom_ingest_srt_latency_seconds",
                false,
                "Negotiated SRT receive latency.",
                |l| l.latency_ms as f64 / 1000.0,
            ),
        ];
        let labels = ["tenant", "event", "stream", "rendition", "encoder"];
        for (name, counter, help, value) in rows {
            let family = Figure::new(scrape, name, help, counter, &labels);
            for (([tenant, event, stream], rendition, role), l) in links.iter() {
                family.set_at(&[tenant, event, stream, rendition, role], value(l));
            }
        }
    }
}

/// A link's key in the statistics: the stream's tenant, event and stream,
/// rendition, encoder role.
pub(super) type LinkKey = ([String; 3], String, &'static str);

pub(super) fn link_key(namespace: &strom_relay::Namespace, options: &PushOptions) -> LinkKey {
    (
        strom_relay::metrics::namespace_values(namespace),
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

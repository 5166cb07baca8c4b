//! What this relay tells the control plane every few seconds
//! ([`strom_token::sync::RelayStatus`]): per broadcast the bitrate stored
//! and the viewers — MoQT subscribers of the video track plus HLS players,
//! counted by the distinct tokens that fetched a video playlist recently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strom_token::sync::{RelayStatus, StreamStatus};

use crate::broadcast::Broadcasts;

/// An HLS player reloads its playlist at least every target duration; one
/// not seen for this long has gone.
const HLS_VIEWER_GONE: Duration = Duration::from_secs(10);
/// Bounds the memory a flood of distinct tokens can take.
const MAX_HLS_VIEWERS: usize = 200_000;

/// HLS viewers by broadcast, keyed by the token's id (never a person).
#[derive(Default)]
pub struct HlsViewers {
    seen: Mutex<HashMap<String, HashMap<String, Instant>>>,
    total: Mutex<usize>,
}

impl HlsViewers {
    pub fn saw(&self, namespace: &str, token_id: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = self.total.lock().unwrap_or_else(|p| p.into_inner());
        let viewers = seen.entry(namespace.to_owned()).or_default();
        if !viewers.contains_key(token_id) && *total >= MAX_HLS_VIEWERS {
            return;
        }
        if viewers
            .insert(token_id.to_owned(), Instant::now())
            .is_none()
        {
            *total += 1;
        }
    }

    /// Current viewers per broadcast; forgets players gone quiet.
    pub fn counts(&self) -> HashMap<String, u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        seen.retain(|_, v| {
            v.retain(|_, at| now.duration_since(*at) < HLS_VIEWER_GONE);
            !v.is_empty()
        });
        *self.total.lock().unwrap_or_else(|p| p.into_inner()) =
            seen.values().map(|v| v.len()).sum();
        seen.iter()
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect()
    }
}

/// Builds successive reports; bitrates are the byte counters' growth since
/// the previous report.
pub struct Reporter {
    role: &'static str,
    broadcasts: Arc<Broadcasts>,
    hls: Arc<HlsViewers>,
    previous: HashMap<String, (u64, Instant)>,
}

impl Reporter {
    pub fn new(role: &'static str, broadcasts: Arc<Broadcasts>, hls: Arc<HlsViewers>) -> Self {
        Self {
            role,
            broadcasts,
            hls,
            previous: HashMap::new(),
        }
    }

    pub fn report(&mut self) -> RelayStatus {
        let now = Instant::now();
        let hls = self.hls.counts();
        let mut streams = Vec::new();
        let mut next = HashMap::new();
        for b in self.broadcasts.list() {
            let namespace = b.namespace.to_string();
            let mut bytes = 0;
            let mut moqt_viewers = 0;
            for (name, counters, cache) in b.track_figures() {
                bytes += counters.bytes_in.load(std::sync::atomic::Ordering::Relaxed);
                if name == "video" {
                    moqt_viewers = cache.map_or(0, |c| c.reader_count() as u64);
                }
            }
            let ingest_bps = match self.previous.get(&namespace) {
                Some((before, at)) if bytes >= *before => {
                    let secs = now.duration_since(*at).as_secs_f64().max(0.001);
                    ((bytes - before) as f64 * 8.0 / secs) as u64
                }
                _ => 0,
            };
            next.insert(namespace.clone(), (bytes, now));
            let viewers = moqt_viewers + hls.get(&namespace).copied().unwrap_or(0);
            streams.push(StreamStatus {
                namespace,
                ingest_bps,
                viewers,
            });
        }
        self.previous = next;
        RelayStatus {
            role: self.role.into(),
            streams,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hls_viewers_are_distinct_tokens_and_expire() {
        let v = HlsViewers::default();
        v.saw("t/e/s", "a");
        v.saw("t/e/s", "a");
        v.saw("t/e/s", "b");
        v.saw("t/e/other", "a");
        let c = v.counts();
        assert_eq!(c.get("t/e/s"), Some(&2));
        assert_eq!(c.get("t/e/other"), Some(&1));
        v.seen.lock().unwrap().get_mut("t/e/s").unwrap().insert(
            "b".into(),
            Instant::now() - HLS_VIEWER_GONE - Duration::from_secs(1),
        );
        assert_eq!(v.counts().get("t/e/s"), Some(&1));
    }
}

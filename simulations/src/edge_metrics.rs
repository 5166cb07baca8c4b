//! The edge's own view of a run: its Prometheus `/metrics` scraped before,
//! every few seconds during, and after the load.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::{Client, Target};

pub use strom_relay::metrics::sum as metric;

/// The figures of one scrape.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Sample {
    /// Seconds since the run started (negative: before).
    pub at_secs: f64,
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<f64>,
    /// Object bytes handed to MoQT subscribers, summed over the namespace's tracks.
    pub moqt_egress_bytes: Option<f64>,
    pub hls_egress_bytes: Option<f64>,
    pub moqt_sessions_active: Option<f64>,
    pub track_readers: Option<f64>,
    pub reader_skips: Option<f64>,
    pub cache_bytes: Option<f64>,
}

impl Sample {
    pub fn parse(text: &str, namespace: &str, at_secs: f64) -> Sample {
        let mut f = namespace.splitn(3, '/');
        let ns = [
            ("tenant", f.next().unwrap_or("")),
            ("event", f.next().unwrap_or("")),
            ("stream", f.next().unwrap_or("")),
        ];
        Sample {
            at_secs,
            cpu_seconds: metric(text, "process_cpu_seconds_total", &[]),
            rss_bytes: metric(text, "process_resident_memory_bytes", &[]),
            moqt_egress_bytes: metric(text, "strom_track_egress_bytes_total", &ns),
            hls_egress_bytes: metric(text, "strom_hls_egress_bytes_total", &[]),
            moqt_sessions_active: metric(text, "strom_moqt_sessions_active", &[]),
            track_readers: metric(text, "strom_track_readers", &ns),
            reader_skips: metric(text, "strom_track_reader_skips_total", &ns),
            cache_bytes: metric(text, "strom_track_cache_bytes", &ns),
        }
    }
}

/// Scrapes `/metrics` of one edge.
pub struct Scraper {
    client: Client,
    namespace: String,
    started: Instant,
}

impl Scraper {
    pub fn new(target: Target, namespace: &str, started: Instant) -> Scraper {
        Scraper {
            client: Client::new(target),
            namespace: namespace.to_owned(),
            started,
        }
    }

    pub async fn scrape(&mut self) -> anyhow::Result<Sample> {
        let at = Instant::now();
        let r = self.client.get("/metrics", Duration::from_secs(10)).await?;
        if r.status != 200 {
            anyhow::bail!("/metrics answered {}", r.status);
        }
        let text = String::from_utf8_lossy(&r.body);
        let secs = if at >= self.started {
            at.duration_since(self.started).as_secs_f64()
        } else {
            -self.started.duration_since(at).as_secs_f64()
        };
        Ok(Sample::parse(&text, &self.namespace, secs))
    }

    /// Scrapes every `every` until `end`, appending to `samples`.
    pub async fn sample_until(
        mut self,
        every: Duration,
        end: tokio::time::Instant,
        samples: Arc<Mutex<Vec<Sample>>>,
    ) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = tokio::time::sleep_until(end) => return,
            }
            match self.scrape().await {
                Ok(s) => {
                    if let Ok(mut v) = samples.lock() {
                        v.push(s);
                    }
                }
                Err(err) => tracing::warn!(error = %format!("{err:#}"), "scraping /metrics failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP strom_track_egress_bytes_total x
# TYPE strom_track_egress_bytes_total counter
strom_track_egress_bytes_total{role=\"edge\",tenant=\"dev\",event=\"demo\",stream=\"main\",track=\"audio\"} 100
strom_track_egress_bytes_total{role=\"edge\",tenant=\"dev\",event=\"demo\",stream=\"main\",track=\"video\"} 900
strom_track_egress_bytes_total{role=\"edge\",tenant=\"other\",event=\"x\",stream=\"y\",track=\"video\"} 5
strom_hls_egress_bytes_total{role=\"edge\"} 42
process_cpu_seconds_total 1.25
process_resident_memory_bytes 1048576
";

    #[test]
    fn parses_the_edge_exposition() {
        let s = Sample::parse(TEXT, "dev/demo/main", 1.0);
        assert_eq!(s.moqt_egress_bytes, Some(1000.0));
        assert_eq!(s.hls_egress_bytes, Some(42.0));
        assert_eq!(s.cpu_seconds, Some(1.25));
        assert_eq!(s.rss_bytes, Some(1_048_576.0));
        assert_eq!(s.track_readers, None);
        assert_eq!(metric(TEXT, "strom_track_egress_bytes", &[]), None);
    }
}

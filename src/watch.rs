//! `strom watch`: a MoQT subscriber that writes the broadcast as one
//! fragmented MP4 (all tracks) and prints per-track statistics to stderr.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use strom_relay::metrics::ServerCounters;
use strom_relay::tls::{self, Trust};
use strom_relay::upstream::{self, UpstreamContext};
use strom_relay::{CacheLimits, CatalogView, Delivery, Namespace, TrackReader};
use strom_token::media::{MediaKeys, ObjectPlace};
use tokio::io::AsyncWriteExt;

pub struct WatchOptions {
    pub url: url::Url,
    /// Relays to move to, in order, when the current one goes away (its
    /// process dies, its link is cut, it is shut down): the broadcast
    /// continues at the object it lacks, with the same token.
    pub fallbacks: Vec<(url::Url, Trust)>,
    pub namespace: String,
    pub output: Option<PathBuf>,
    pub trust: Trust,
    pub duration: Option<Duration>,
    /// Playback token, sent as AUTHORIZATION TOKEN in SETUP.
    pub token: Option<String>,
    /// When set, every object's origin signature is checked against these.
    pub media_keys: Option<MediaKeys>,
}

/// The key set for `--media-key` (64 hex digits).
pub fn media_keys(hex: &str) -> anyhow::Result<MediaKeys> {
    let bytes: Vec<u8> = ::hex::decode(hex).context("--media-key must be hex")?;
    let mut keys = MediaKeys::default();
    if !keys.insert(&bytes) {
        bail!("--media-key must be a 32-byte Ed25519 public key");
    }
    Ok(keys)
}

/// Per-track figures; latency in 1 ms buckets up to 60 s (the last bucket holds the rest).
struct TrackStats {
    objects: u64,
    /// Objects whose origin signature held, and those whose did not (or had none).
    verified: u64,
    refused: u64,
    groups: u64,
    bytes: u64,
    latency_buckets: Vec<u64>,
    /// Which objects arrived, to tell objects that never came from
    /// objects that came out of order.
    continuity: Continuity,
    /// Longest time between two consecutive objects, counted from the first
    /// object produced after this viewer joined (what came before is the
    /// history a join starts with).
    last_arrival: Option<Instant>,
    max_gap: Duration,
    /// When the longest gap ended (to find it in the relays' logs).
    max_gap_end: Option<Instant>,
    /// When this viewer joined (µs since the epoch), and the latency of the
    /// objects produced after that.
    joined_us: u64,
    live: bool,
    live_buckets: Vec<u64>,
    /// How long after the session opened the first object was shown (the
    /// rest of `--duration` is what the viewer watched).
    first_after: Option<Duration>,
}

impl Default for TrackStats {
    fn default() -> Self {
        Self {
            objects: 0,
            verified: 0,
            refused: 0,
            groups: 0,
            bytes: 0,
            latency_buckets: vec![0; 60_001],
            continuity: Continuity::default(),
            last_arrival: None,
            max_gap: Duration::ZERO,
            max_gap_end: None,
            joined_us: now_us(),
            live: false,
            live_buckets: vec![0; 60_001],
            first_after: None,
        }
    }
}

impl TrackStats {
    /// Notes an object's place and arrival: holes, skipped groups, gaps.
    fn record_arrival(&mut self, group: u64, object: u64, at: Instant) {
        self.continuity.record(group, object);
        if self.live {
            if let Some(prev) = self.last_arrival {
                let gap = at.duration_since(prev);
                if gap > self.max_gap {
                    self.max_gap = gap;
                    self.max_gap_end = Some(at);
                }
            }
        }
        self.last_arrival = Some(at);
    }

    /// Latency of an object produced at `produced_us`; objects produced
    /// after the viewer joined also count as live.
    fn record_produced(&mut self, produced_us: u64, now_us: u64) {
        let ms = (now_us as f64 - produced_us as f64) / 1000.0;
        self.record_latency(ms);
        if produced_us >= self.joined_us {
            self.live = true;
            let i = (ms.max(0.0) as usize).min(self.live_buckets.len() - 1);
            self.live_buckets[i] += 1;
        }
    }

    fn record_latency(&mut self, ms: f64) {
        let i = (ms.max(0.0) as usize).min(self.latency_buckets.len() - 1);
        self.latency_buckets[i] += 1;
    }

    /// The latency (ms) below which `q` of the samples lie.
    fn quantile(&self, q: f64) -> Option<usize> {
        quantile(&self.latency_buckets, q)
    }
}

/// Which objects of which groups arrived. Objects of a group that arrive
/// after a newer group's (each group is its own QUIC stream) are late, not
/// lost: holes and skipped groups count only what never came. Groups more
/// than `WINDOW` behind the newest are settled and forgotten.
#[derive(Default)]
struct Continuity {
    open: BTreeMap<u64, BTreeSet<u64>>,
    /// The newest settled group, and the figures settled so far.
    settled: Option<u64>,
    settled_holes: u64,
    settled_skipped: u64,
    /// Groups whose first object came after a newer group's.
    late_groups: u64,
}

impl Continuity {
    const WINDOW: usize = 16;

    fn record(&mut self, group: u64, object: u64) {
        if self.settled.is_some_and(|s| group <= s) {
            return;
        }
        let newest = self.open.keys().next_back().copied();
        let objects = self.open.entry(group).or_default();
        if objects.is_empty() && newest.is_some_and(|n| group < n) {
            self.late_groups += 1;
        }
        objects.insert(object);
        while self.open.len() > Self::WINDOW {
            let (group, objects) = self.open.pop_first().expect("not empty");
            let (holes, skipped) = Self::missing(self.settled, group, &objects);
            self.settled_holes += holes;
            self.settled_skipped += skipped;
            self.settled = Some(group);
        }
    }

    /// Objects missing in `group` (below the highest that came; a viewer's
    /// first group may start anywhere), and groups missing since `previous`.
    fn missing(previous: Option<u64>, group: u64, objects: &BTreeSet<u64>) -> (u64, u64) {
        let (Some(&low), Some(&high)) = (objects.first(), objects.last()) else {
            return (0, 0);
        };
        let from = if previous.is_none() { low } else { 0 };
        let holes = high + 1 - from - objects.len() as u64;
        let skipped = previous.map_or(0, |p| group - p - 1);
        (holes, skipped)
    }

    fn totals(&self) -> (u64, u64) {
        let mut previous = self.settled;
        let (mut holes, mut skipped) = (self.settled_holes, self.settled_skipped);
        for (&group, objects) in &self.open {
            let (h, s) = Self::missing(previous, group, objects);
            holes += h;
            skipped += s;
            previous = Some(group);
        }
        (holes, skipped)
    }

    fn holes(&self) -> u64 {
        self.totals().0
    }

    fn skipped_groups(&self) -> u64 {
        self.totals().1
    }
}

fn quantile(buckets: &[u64], q: f64) -> Option<usize> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let want = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    buckets.iter().position(|c| {
        seen += c;
        seen >= want
    })
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn trust_from(cert_sha256: Option<&str>, ca: Option<PathBuf>) -> anyhow::Result<Trust> {
    Ok(match (cert_sha256, ca) {
        (Some(h), _) => Trust::Pinned(tls::parse_hex32(h)?),
        (None, Some(ca)) => Trust::CaFile(ca),
        (None, None) => bail!("give --cert-sha256 (development certificate) or --ca (CA bundle)"),
    })
}

/// Pairs each `--fallback` with its `--fallback-cert-sha256`, or with
/// `trust` when none are given.
pub fn fallbacks(
    urls: Vec<url::Url>,
    certs: &[String],
    trust: &Trust,
) -> anyhow::Result<Vec<(url::Url, Trust)>> {
    if certs.is_empty() {
        return Ok(urls.into_iter().map(|u| (u, trust.clone())).collect());
    }
    if certs.len() != urls.len() {
        bail!(
            "{} --fallback but {} --fallback-cert-sha256: give one certificate per fallback, or none",
            urls.len(),
            certs.len()
        );
    }
    urls.into_iter()
        .zip(certs)
        .map(|(u, c)| Ok((u, Trust::Pinned(tls::parse_hex32(c)?))))
        .collect()
}

/// Whether the upstream refused `track` for want of a valid token
/// (REQUEST_ERROR UNAUTHORIZED, MALFORMED_AUTH_TOKEN, EXPIRED_AUTH_TOKEN).
async fn refused_access(track: &strom_relay::TrackCache) -> bool {
    use moq_transport::message::RequestErrorCode as Code;
    matches!(
        track.upstream_answer(Duration::ZERO).await,
        strom_relay::UpstreamState::Refused(moq_transport::serve::ServeError::Closed(code))
            if [Code::Unauthorized, Code::MalformedAuthToken, Code::ExpiredAuthToken]
                .iter()
                .any(|c| *c as u64 == code)
    )
}

/// How often in a row every relay may fail to connect before `strom watch`
/// gives up.
const CONNECT_ROUNDS: usize = 3;

/// Keeps a session to one of `relays` (in order, from the first), handing
/// each new session's subscriber to the tracks. With one relay, its
/// session's end is the end; with more, the next one takes over.
async fn follow_relays(
    relays: Vec<(url::Url, Trust)>,
    token: Option<String>,
    serving: tokio::sync::watch::Sender<Option<moq_transport::session::Subscriber>>,
    first: moq_transport::session::Session,
) -> anyhow::Result<()> {
    let mut session = Some(first);
    let mut current = 0;
    let mut failures = 0;
    loop {
        if let Some(s) = session.take() {
            failures = 0;
            let ended = s.run().await;
            serving.send_replace(None);
            if relays.len() == 1 {
                return ended.context("MoQT session ended");
            }
            let why = ended.err().map_or("closed".to_owned(), |e| e.to_string());
            current = (current + 1) % relays.len();
            eprintln!(
                "the session to {} ended ({why}); moving to {}",
                relays[(current + relays.len() - 1) % relays.len()].0,
                relays[current].0
            );
        }
        let (url, trust) = &relays[current];
        match upstream::connect_viewer(url, trust, token.as_deref()).await {
            Ok((s, subscriber)) => {
                serving.send_replace(Some(subscriber));
                session = Some(s);
            }
            Err(err) => {
                failures += 1;
                if failures >= CONNECT_ROUNDS * relays.len() {
                    return Err(
                        err.context(format!("no relay answered, {CONNECT_ROUNDS} times each"))
                    );
                }
                eprintln!("{url}: {err:#}; trying the next relay");
                current = (current + 1) % relays.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

pub async fn run(options: WatchOptions) -> anyhow::Result<()> {
    let namespace = Namespace::parse(&options.namespace)?;
    let (session, subscriber) =
        upstream::connect_viewer(&options.url, &options.trust, options.token.as_deref()).await?;
    let ctx = UpstreamContext {
        broadcasts: strom_relay::Broadcasts::new(),
        // Counted like an edge's upstream; never shown.
        counters: Arc::new(ServerCounters::new(strom_relay::Role::Edge)),
        limits: CacheLimits::default(),
        idle: Duration::from_secs(1),
        credential: None,
        // From the live edge: a burst of old groups would queue the live
        // objects behind it on a thin link.
        history: 0,
    };
    let (serving, follow) = tokio::sync::watch::channel(Some(subscriber));
    let (broadcast, requests) = upstream::attach(namespace.clone(), follow, ctx);
    let mut relays = vec![(options.url.clone(), options.trust.clone())];
    relays.extend(options.fallbacks.iter().cloned());
    let sessions = follow_relays(relays, options.token.clone(), serving, session);
    let began = Instant::now();
    let deadline = options.duration.map(|d| began + d);
    let work = async {
        // The catalog tells which tracks exist and how to initialise a decoder.
        // A relay that has not learnt of the broadcast yet (it went live a
        // moment ago, or the relay has just started) refuses the catalog:
        // ask again, as a player would, for up to 10 s.
        const WAIT_FOR_CATALOG: Duration = Duration::from_secs(10);
        let asked = Instant::now();
        let catalog_track = loop {
            let track = broadcast.track("catalog").context("catalog track")?;
            let mut reader = track.reader_from_newest();
            let left = WAIT_FOR_CATALOG.saturating_sub(asked.elapsed());
            match tokio::time::timeout(left, reader.next()).await {
                Err(_) => bail!("no catalog within 10 s: is the broadcast live?"),
                Ok(Some(_)) => break track,
                // Refused for the token: asking again will not help.
                Ok(None) if refused_access(&track).await => {
                    bail!("the relay refused the catalog: the token does not allow this broadcast")
                }
                Ok(None) if asked.elapsed() + Duration::from_millis(500) < WAIT_FOR_CATALOG => {
                    eprintln!("the catalog is not there yet; asking again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(None) => bail!("the catalog track ended before delivering anything"),
            }
        };
        let catalog = CatalogView::latest(&catalog_track).context("the catalog does not parse")?;
        let names = catalog.media_tracks();
        if names.is_empty() {
            bail!("the catalog lists no media tracks");
        }
        let inits: Vec<bytes::Bytes> = names
            .iter()
            .map(|n| {
                catalog
                    .init_segment(n)
                    .with_context(|| format!("track {n} has no init data"))
            })
            .collect::<anyhow::Result<_>>()?;
        let init = strom_media::cmaf::combine_init(&inits).context("combining init segments")?;

        let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &options.output {
            Some(p) if p.as_os_str() != "-" => Box::new(
                tokio::fs::File::create(p)
                    .await
                    .with_context(|| format!("creating {}", p.display()))?,
            ),
            _ => Box::new(tokio::io::stdout()),
        };
        out.write_all(&init).await?;

        let mut readers: Vec<(String, TrackReader)> = Vec::new();
        for n in &names {
            let t = broadcast.track(n).with_context(|| format!("track {n}"))?;
            readers.push((n.clone(), t.reader_from_newest()));
        }
        let mut stats: HashMap<String, TrackStats> = HashMap::new();
        let mut report = tokio::time::interval(Duration::from_secs(1));
        let mut started = false;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let next = futures_next(&mut readers);
            tokio::select! {
                item = next => {
                    let Some((name, delivery)) = item else { break };
                    let s = stats.entry(name.clone()).or_default();
                    match delivery {
                        Delivery::Object { group, object } => {
                            // Start the file at a decodable point of the first track (video).
                            if !started {
                                if name != names[0] || object.id != 0 { continue; }
                                started = true;
                                s.first_after = Some(began.elapsed());
                            }
                            s.objects += 1;
                            s.record_arrival(group, object.id, Instant::now());
                            if let Some(keys) = &options.media_keys {
                                let place = ObjectPlace {
                                    namespace: namespace.fields(),
                                    track: &name,
                                    group,
                                    object: object.id,
                                };
                                match object.signature().map(|sig| keys.verify(&place, &object.payload, sig)) {
                                    Some(Ok(())) => s.verified += 1,
                                    outcome => {
                                        s.refused += 1;
                                        tracing::warn!(track = %name, group, object = object.id, outcome = ?outcome, "object signature does not hold");
                                    }
                                }
                            }
                            s.bytes += object.payload.len() as u64;
                            if object.id == 0 { s.groups += 1; }
                            if let Some(p) = object.meta.producer_time_us {
                                s.record_produced(p, now_us());
                            }
                            out.write_all(&object.payload).await?;
                        }
                        Delivery::GroupEnd { .. } => {}
                    }
                }
                _ = report.tick() => print_stats(&stats, began),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        out.flush().await?;
        print_stats(&stats, began);
        Ok(())
    };
    tokio::select! {
        res = work => res,
        res = sessions => res,
        _ = requests => bail!("track requests stopped"),
        _ = strom_service::stop_signal() => Ok(()),
    }
}

/// The next delivery from whichever track has one.
async fn futures_next(readers: &mut [(String, TrackReader)]) -> Option<(String, Delivery)> {
    let futures = readers.iter_mut().map(|(name, r)| {
        let name = name.clone();
        Box::pin(async move { r.next().await.map(|d| (name, d)) })
    });
    let (item, _, _) = futures::future::select_all(futures).await;
    item
}

fn print_stats(stats: &HashMap<String, TrackStats>, began: Instant) {
    let mut names: Vec<&String> = stats.keys().collect();
    names.sort();
    let lines: Vec<String> = names
        .into_iter()
        .map(|n| {
            let s = &stats[n];
            let q = |q: f64| s.quantile(q).map_or("-".to_owned(), |v| v.to_string());
            let live = |q: f64| quantile(&s.live_buckets, q).map_or("-".to_owned(), |v| v.to_string());
            let signatures = if s.verified + s.refused > 0 {
                format!(", signatures {} verified {} refused", s.verified, s.refused)
            } else {
                String::new()
            };
            let gap_at = s.max_gap_end.map_or(String::new(), |at| {
                format!(" at {:.2} s", at.duration_since(began).as_secs_f64())
            });
            let first = s
                .first_after
                .map_or(String::new(), |d| format!(", first after {} ms", d.as_millis()));
            format!(
                "{n}: {} objects, {} groups, {} bytes, latency p50 {} ms p99 {} ms, live p50 {} ms p99 {} ms, holes {}, skipped groups {}, late groups {}, max gap {} ms{gap_at}{first}{signatures}",
                s.objects,
                s.groups,
                s.bytes,
                q(0.5),
                q(0.99),
                live(0.5),
                live(0.99),
                s.continuity.holes(),
                s.continuity.skipped_groups(),
                s.continuity.late_groups,
                s.max_gap.as_millis()
            )
        })
        .collect();
    if !lines.is_empty() {
        eprintln!("{}", lines.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::Continuity;

    fn run(arrivals: &[(u64, u64)]) -> (u64, u64, u64) {
        let mut c = Continuity::default();
        for &(g, o) in arrivals {
            c.record(g, o);
        }
        (c.holes(), c.skipped_groups(), c.late_groups)
    }

    #[test]
    fn a_group_that_comes_after_a_newer_one_is_late_not_lost() {
        assert_eq!(
            run(&[(5, 0), (5, 1), (7, 0), (6, 0), (6, 1), (7, 1)]),
            (0, 0, 1)
        );
    }

    #[test]
    fn groups_and_objects_that_never_come_are_counted() {
        // Joined mid-group 3; object 1 of group 4 and all of group 5 missing.
        assert_eq!(run(&[(3, 4), (3, 5), (4, 0), (4, 2), (6, 0)]), (1, 1, 0));
        // A group starting late misses its first objects.
        assert_eq!(run(&[(1, 0), (2, 3)]), (3, 0, 0));
    }

    #[test]
    fn settled_groups_keep_their_figures_and_duplicates_count_once() {
        let mut arrivals = vec![(0, 0), (0, 0), (0, 2)];
        arrivals.extend((2..40).map(|g| (g, 0)));
        // Group 0 lacks object 1, group 1 never came; both settle long before the end.
        assert_eq!(run(&arrivals), (1, 1, 0));
        // An object of a settled group arriving far too late changes nothing.
        arrivals.push((1, 0));
        assert_eq!(run(&arrivals), (1, 1, 0));
    }
}

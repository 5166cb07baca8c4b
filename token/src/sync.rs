//! Keeps a [`Verifier`] in step with the control plane: the key set every
//! minute and the revocation log by long poll, so a revocation reaches a
//! relay within about a second. New revocations are broadcast to the relay,
//! which closes the sessions they cover. When the control plane is away the
//! verifier keeps what it has: tokens keep verifying offline.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::broadcast;
use url::Url;

use crate::revocation::RevocationFeed;
use crate::{KeySet, Revocation, Verifier};

/// Key set path under the control plane's base URL.
pub const KEYS_PATH: &str = "api/v1/relay/keys";
/// Revocation log path under the control plane's base URL.
pub const REVOCATIONS_PATH: &str = "api/v1/relay/revocations";
/// Where relays report what they carry (viewers, ingest bitrate).
pub const STATUS_PATH: &str = "api/v1/relay/status";
/// Where an origin registers its media signing key.
pub const MEDIA_KEY_PATH: &str = "api/v1/relay/media-key";
/// How often relays report.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);
/// How long the control plane holds a revocation poll open.
pub const LONG_POLL_SECS: u64 = 20;

/// Where a relay finds its control plane.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneLink {
    /// Base URL, e.g. `https://cp.example.com/`.
    pub url: Url,
    /// Relay credential (a strom token with action `relay`).
    pub credential: String,
    /// CA certificate (PEM) to trust for an https URL besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// What a relay carries now, reported to the control plane every
/// [`STATUS_EVERY`]: per broadcast its ingest bitrate (at an origin: the
/// encoder's push) and its viewers (at an edge: MoQT subscribers of the
/// video track plus HLS players seen in the last seconds). No personal data.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
pub struct RelayStatus {
    /// `origin` or `edge`.
    pub role: String,
    pub streams: Vec<StreamStatus>,
    /// Per event: viewers here now and the players' QoE since the last report.
    #[serde(default)]
    pub events: Vec<EventFigures>,
    /// Bits per second sent to viewers and relays (MoQT and HLS) over the
    /// last interval.
    #[serde(default)]
    pub egress_bps: u64,
    /// The relay process's CPU use over the last interval, in cores (1.0 =
    /// one core busy).
    #[serde(default)]
    pub cpu_cores: f64,
}

/// One event at one relay or peer-agent: viewers now, and what its players'
/// QoE beacons reported since the previous report (sums, so the control
/// plane can add relays up). No personal data.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventFigures {
    /// tenant/event.
    pub event: String,
    /// Play sessions (MoQT) and HLS players (distinct tokens) now.
    pub viewers: u64,
    pub qoe: QoeSums,
}

impl EventFigures {
    /// Folds figures not yet delivered (`older`) into the newest ones:
    /// viewers are the newest count, QoE sums add up.
    pub fn merge(older: Vec<EventFigures>, newer: Vec<EventFigures>) -> Vec<EventFigures> {
        let mut out = newer;
        for old in older {
            match out.iter_mut().find(|e| e.event == old.event) {
                Some(e) => e.qoe.add(&old.qoe),
                None => out.push(EventFigures { viewers: 0, ..old }),
            }
        }
        out
    }
}

/// QoE beacon figures summed over an interval.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QoeSums {
    pub beacons: u64,
    pub watch_seconds: f64,
    pub stall_seconds: f64,
    pub stalls: u64,
    /// Sum and number of the latencies to live players reported.
    pub latency_seconds_sum: f64,
    pub latency_samples: u64,
}

impl QoeSums {
    pub fn add(&mut self, o: &QoeSums) {
        self.beacons += o.beacons;
        self.watch_seconds += o.watch_seconds;
        self.stall_seconds += o.stall_seconds;
        self.stalls += o.stalls;
        self.latency_seconds_sum += o.latency_seconds_sum;
        self.latency_samples += o.latency_samples;
    }

    /// `self - before` for cumulative totals (a restart counts from zero).
    pub fn since(&self, before: &QoeSums) -> QoeSums {
        if self.beacons < before.beacons {
            return *self;
        }
        QoeSums {
            beacons: self.beacons - before.beacons,
            watch_seconds: (self.watch_seconds - before.watch_seconds).max(0.0),
            stall_seconds: (self.stall_seconds - before.stall_seconds).max(0.0),
            stalls: self.stalls.saturating_sub(before.stalls),
            latency_seconds_sum: (self.latency_seconds_sum - before.latency_seconds_sum).max(0.0),
            latency_samples: self.latency_samples.saturating_sub(before.latency_samples),
        }
    }

    /// Figures a report may carry: finite, non-negative, within a day of
    /// watching per beacon.
    pub fn plausible(&self) -> bool {
        let fine = |v: f64| v.is_finite() && v >= 0.0;
        fine(self.watch_seconds)
            && fine(self.stall_seconds)
            && fine(self.latency_seconds_sum)
            && self.watch_seconds <= self.beacons as f64 * 86_400.0
            && self.stall_seconds <= self.watch_seconds + 1.0
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct StreamStatus {
    /// tenant/event/stream.
    pub namespace: String,
    /// Bits per second stored for the broadcast over the last interval.
    pub ingest_bps: u64,
    pub viewers: u64,
}

/// Reports `status()` to the control plane at `link` every [`STATUS_EVERY`]
/// until the task is aborted. Failures are logged once per outage: the
/// control plane being away must not disturb serving.
pub async fn report_status(
    link: ControlPlaneLink,
    mut status: impl FnMut() -> RelayStatus + Send + 'static,
) {
    {
        let client = match client(&link, Duration::from_secs(5)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "status reports disabled");
                return;
            }
        };
        let Ok(url) = link.url.join(STATUS_PATH) else {
            return;
        };
        let mut failing = false;
        let mut tick = tokio::time::interval(STATUS_EVERY);
        loop {
            tick.tick().await;
            let report = status();
            let sent = client
                .post(url.clone())
                .bearer_auth(&link.credential)
                .json(&report)
                .send()
                .await
                .and_then(|r| r.error_for_status());
            match sent {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("status reports reach the control plane again");
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "status report failed");
                }
                _ => {}
            }
        }
    }
}

/// Registers this origin's media signing key (hex) with the control plane,
/// retrying every few seconds until it is accepted.
pub async fn register_media_key(link: ControlPlaneLink, key: String) {
    {
        let Ok(client) = client(&link, Duration::from_secs(5)) else {
            return;
        };
        let Ok(url) = link.url.join(MEDIA_KEY_PATH) else {
            return;
        };
        loop {
            let sent = client
                .post(url.clone())
                .bearer_auth(&link.credential)
                .json(&serde_json::json!({ "key": key }))
                .send()
                .await
                .and_then(|r| r.error_for_status());
            match sent {
                Ok(_) => {
                    tracing::info!("media signing key registered with the control plane");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "media signing key not registered yet; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }
}

/// Where origins fetch every tenant's SRT secret.
pub const SRT_SECRETS_PATH: &str = "api/v1/relay/srt-secrets";

/// The tenants' SRT secrets an origin holds (tenant id → secret), fetched
/// with [`fetch_srt_secrets`]; `None` until the first answer.
#[derive(Clone, Default)]
pub struct SrtSecretSlot {
    secrets: Arc<std::sync::RwLock<Option<HashMap<String, [u8; crate::srt::SECRET_LEN]>>>>,
    wanted: Arc<tokio::sync::Notify>,
}

impl SrtSecretSlot {
    /// `tenant`'s secret; `Err(())` when the secrets have not arrived yet.
    /// An unknown tenant (created since the last fetch) asks for a refresh.
    pub fn get(&self, tenant: &str) -> Result<Option<[u8; crate::srt::SECRET_LEN]>, ()> {
        let held = self.secrets.read().unwrap_or_else(|p| p.into_inner());
        let map = held.as_ref().ok_or(())?;
        let found = map.get(tenant).copied();
        if found.is_none() {
            self.wanted.notify_one();
        }
        Ok(found)
    }

    /// Replaces what is held (the fetch, and tests).
    pub fn set(&self, secrets: HashMap<String, [u8; crate::srt::SECRET_LEN]>) {
        *self.secrets.write().unwrap_or_else(|p| p.into_inner()) = Some(secrets);
    }
}

/// Fetches the tenants' SRT secrets into `slot` (retrying every few seconds
/// until the control plane hands them out), then keeps them current by long
/// poll: a new tenant's secret arrives within about a second of its
/// creation. An SRT key of a tenant not held asks for a fetch at once.
pub fn fetch_srt_secrets(
    link: ControlPlaneLink,
    slot: SrtSecretSlot,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(client) = client(&link, Duration::from_secs(LONG_POLL_SECS + 10)) else {
            return;
        };
        let Ok(url) = link.url.join(SRT_SECRETS_PATH) else {
            return;
        };
        #[derive(serde::Deserialize)]
        struct Answer {
            secrets: HashMap<String, String>,
            #[serde(default)]
            version: u64,
        }
        let mut version: Option<u64> = None;
        let mut failing = false;
        // SRT handshakes naming unknown tenants (anyone can send them) ask
        // for a fetch at most this often.
        let mut forced: Option<tokio::time::Instant> = None;
        loop {
            let may_force = forced.is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
            let mut request = client.get(url.clone()).bearer_auth(&link.credential);
            if let Some(v) = version {
                request = request.query(&[("version", v), ("wait", LONG_POLL_SECS)]);
            }
            let fetch = async {
                let answer: Answer = request.send().await?.error_for_status()?.json().await?;
                let secrets = answer
                    .secrets
                    .into_iter()
                    .map(|(tenant, hex)| {
                        crate::srt::secret_from_hex(&hex)
                            .map(|s| (tenant, s))
                            .ok_or_else(|| anyhow::anyhow!("an SRT secret is not 64 hex digits"))
                    })
                    .collect::<anyhow::Result<HashMap<_, _>>>()?;
                anyhow::Ok((secrets, answer.version))
            };
            let got = tokio::select! {
                got = fetch => got,
                // A tenant not held asks: drop the poll and fetch now.
                _ = slot.wanted.notified(), if may_force => {
                    forced = Some(tokio::time::Instant::now());
                    version = None;
                    continue;
                }
            };
            match got {
                Ok((secrets, v)) => {
                    if version.is_none() && !failing {
                        tracing::info!(
                            tenants = secrets.len(),
                            "SRT secrets fetched from the control plane"
                        );
                    }
                    failing = false;
                    version = Some(v);
                    slot.set(secrets);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %format!("{e:#}"), "SRT secrets not fetched; retrying");
                    }
                    failing = true;
                    version = None;
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
            }
        }
    })
}

/// An HTTP client for the control plane at `link` (its CA file trusted).
pub fn http_client(link: &ControlPlaneLink, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    client(link, timeout)
}

fn client(link: &ControlPlaneLink, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    // A relay's credential goes to its control plane and nowhere else: a
    // redirect (a misconfigured or taken-over proxy) is not followed.
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &link.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| anyhow::anyhow!("control plane CA {}: {e}", ca.display()))?;
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    Ok(builder.build()?)
}

/// The shortest time between two key set fetches asked for by
/// [`Verifier::want_fresh_keys`].
const MIN_ASKED_REFRESH: Duration = Duration::from_secs(5);

/// A running sync; drop it to stop.
pub struct SyncHandle {
    revoked: broadcast::Sender<Revocation>,
    task: tokio::task::JoinHandle<()>,
}

impl SyncHandle {
    /// Revocations as they arrive.
    pub fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.revoked.subscribe()
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Fetches the key set once (so a relay that starts knows its keys), then
/// keeps syncing in the background.
pub async fn start(link: ControlPlaneLink, verifier: Arc<Verifier>) -> anyhow::Result<SyncHandle> {
    let client = client(&link, Duration::from_secs(LONG_POLL_SECS + 10))?;
    let keys_url = link.url.join(KEYS_PATH)?;
    let revocations_url = link.url.join(REVOCATIONS_PATH)?;
    match fetch_keys(&client, &keys_url).await {
        Ok(set) => apply_keys(&verifier, &set),
        Err(e) => tracing::warn!(error = %e, "control plane key set not reachable yet; retrying"),
    }
    let (revoked, _) = broadcast::channel(1024);
    let sender = revoked.clone();
    let task = tokio::spawn(async move {
        let keys = {
            let (client, verifier) = (client.clone(), verifier.clone());
            async move {
                let mut last: Option<tokio::time::Instant> = None;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                        _ = verifier.fresh_keys_wanted() => {
                            // However many ask, at most one fetch per interval.
                            if let Some(last) = last {
                                tokio::time::sleep_until(last + MIN_ASKED_REFRESH).await;
                            }
                        }
                    }
                    last = Some(tokio::time::Instant::now());
                    match fetch_keys(&client, &keys_url).await {
                        Ok(set) => apply_keys(&verifier, &set),
                        Err(e) => tracing::warn!(error = %e, "key set refresh failed"),
                    }
                }
            }
        };
        let revocations = async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                let after = verifier.revocations().seq();
                match fetch_revocations(&client, &revocations_url, &link.credential, after).await {
                    Ok(feed) => {
                        backoff = Duration::from_millis(250);
                        let fresh = {
                            let mut held = verifier.revocations_mut();
                            let fresh = held.apply(&feed);
                            held.prune(time::OffsetDateTime::now_utc());
                            fresh
                        };
                        for entry in fresh {
                            tracing::info!(kind = ?entry.kind, tenant = %entry.tenant, id = %entry.id, "revocation received");
                            let _ = sender.send(entry);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "revocation poll failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        // Keys may have rotated while we were away.
                        if let Ok(set) = fetch_keys(&client, &keys_url_of(&revocations_url)).await {
                            apply_keys(&verifier, &set);
                        }
                    }
                }
            }
        };
        tokio::join!(keys, revocations);
    });
    Ok(SyncHandle { revoked, task })
}

fn keys_url_of(revocations_url: &Url) -> Url {
    let mut url = revocations_url.clone();
    url.set_query(None);
    url.join("keys").unwrap_or(url)
}

fn apply_keys(verifier: &Verifier, set: &KeySet) {
    for kid in verifier.set_keys(set) {
        tracing::warn!(%kid, "key set entry refused: id does not match the key");
    }
}

async fn fetch_keys(client: &reqwest::Client, url: &Url) -> anyhow::Result<KeySet> {
    let response = client.get(url.clone()).send().await?.error_for_status()?;
    Ok(response.json().await?)
}

async fn fetch_revocations(
    client: &reqwest::Client,
    url: &Url,
    credential: &str,
    after: u64,
) -> anyhow::Result<RevocationFeed> {
    let response = client
        .get(url.clone())
        .query(&[("after", after), ("wait", LONG_POLL_SECS)])
        .bearer_auth(credential)
        .send()
        .await?
        .error_for_status()?;
    Ok(response.json().await?)
}

#[cfg(test)]
mod figures_tests {
    use super::*;

    #[test]
    fn undelivered_qoe_is_carried_into_the_next_report() {
        let qoe = |beacons: u64| QoeSums {
            beacons,
            watch_seconds: 10.0 * beacons as f64,
            ..QoeSums::default()
        };
        let fig = |event: &str, viewers: u64, beacons: u64| EventFigures {
            event: event.into(),
            viewers,
            qoe: qoe(beacons),
        };
        let merged = EventFigures::merge(
            vec![fig("t/a", 5, 2), fig("t/gone", 3, 1)],
            vec![fig("t/a", 4, 1)],
        );
        assert_eq!(merged, vec![fig("t/a", 4, 3), fig("t/gone", 0, 1)]);
    }
}

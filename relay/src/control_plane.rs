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

use strom_token::revocation::RevocationFeed;
use strom_token::{KeySet, Revocation, Verifier};

pub(crate) use strom_protocol::{
    paths, EventFigures, QoeSums, RelayStatus, StreamStatus, LONG_POLL_SECS,
};

/// How often relays report.
pub(crate) const STATUS_EVERY: Duration = Duration::from_secs(strom_protocol::STATUS_EVERY_SECS);

mod endpoints;
pub(crate) mod last_word;
pub(crate) use endpoints::replica_failed;
pub use endpoints::{Endpoints, Next};

/// Where a relay finds its control plane.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneLink {
    /// Base URL, e.g. `https://cp.example.com/` (one load-balanced name,
    /// or the first replica).
    pub url: Url,
    /// Further replicas, tried in turn when the one in use fails (an
    /// installation without a load balancer in front of its replicas).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_urls: Vec<Url>,
    /// Relay credential (a strom token with action `relay`).
    pub credential: String,
    /// CA certificate (PEM) to trust for an https URL besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl ControlPlaneLink {
    /// Every replica's base URL, `url` first.
    pub fn urls(&self) -> impl Iterator<Item = &Url> {
        std::iter::once(&self.url).chain(&self.fallback_urls)
    }

    /// A fresh choice among the replicas, starting at `url`.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints::new(self.urls().cloned().collect())
    }
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
        let mut endpoints = link.endpoints();
        let mut failing = false;
        let mut tick = tokio::time::interval(STATUS_EVERY);
        loop {
            tick.tick().await;
            let report = status();
            // One pass over the replicas at most per report.
            let sent = loop {
                let Ok(url) = endpoints.url(paths::STATUS) else {
                    return;
                };
                let sent = client
                    .post(url)
                    .bearer_auth(&link.credential)
                    .json(&report)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status());
                match &sent {
                    Err(e) if replica_failed(e) => {
                        if endpoints.failed() == Next::TryNow {
                            continue;
                        }
                    }
                    _ => endpoints.succeeded(),
                }
                break sent;
            };
            match sent {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!(control_plane = %endpoints.base(), "status reports reach the control plane again");
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
        let mut endpoints = link.endpoints();
        loop {
            let Ok(url) = endpoints.url(paths::MEDIA_KEY) else {
                return;
            };
            let sent = client
                .post(url)
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
                    if replica_failed(&e) && endpoints.failed() == Next::TryNow {
                        continue;
                    }
                    tracing::warn!(error = %e, "media signing key not registered yet; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }
}

/// The tenants' SRT secrets an origin holds (tenant id → secret), fetched
/// with [`fetch_srt_secrets`]; `None` until the first answer.
#[derive(Clone, Default)]
pub struct SrtSecretSlot {
    secrets: Arc<std::sync::RwLock<Option<HashMap<String, [u8; strom_token::srt::SECRET_LEN]>>>>,
    wanted: Arc<tokio::sync::Notify>,
}

impl SrtSecretSlot {
    /// `tenant`'s secret; `Err(())` when the secrets have not arrived yet.
    /// An unknown tenant (created since the last fetch) asks for a refresh.
    pub fn get(&self, tenant: &str) -> Result<Option<[u8; strom_token::srt::SECRET_LEN]>, ()> {
        let held = self.secrets.read().unwrap_or_else(|p| p.into_inner());
        let map = held.as_ref().ok_or(())?;
        let found = map.get(tenant).copied();
        if found.is_none() {
            self.wanted.notify_one();
        }
        Ok(found)
    }

    /// Replaces what is held (the fetch, and tests).
    pub fn set(&self, secrets: HashMap<String, [u8; strom_token::srt::SECRET_LEN]>) {
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
        let mut endpoints = link.endpoints();
        let mut version: Option<u64> = None;
        let mut failing = false;
        // SRT handshakes naming unknown tenants (anyone can send them) ask
        // for a fetch at most this often.
        let mut forced: Option<tokio::time::Instant> = None;
        loop {
            let may_force = forced.is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
            let Ok(url) = endpoints.url(paths::SRT_SECRETS) else {
                return;
            };
            let mut request = client.get(url).bearer_auth(&link.credential);
            if let Some(v) = version {
                request = request.query(&[("version", v), ("wait", LONG_POLL_SECS)]);
            }
            let fetch = async {
                // Which failures are the replica's: no answer, a 5xx, an
                // answer that does not parse. A 4xx every replica would give.
                let response = match request.send().await.and_then(|r| r.error_for_status()) {
                    Ok(r) => r,
                    Err(e) => return Err((replica_failed(&e), anyhow::Error::from(e))),
                };
                let parsed = async {
                    let answer: strom_protocol::SrtSecrets = response.json().await?;
                    let secrets = answer
                        .secrets
                        .into_iter()
                        .map(|(tenant, hex)| {
                            strom_token::srt::secret_from_hex(&hex)
                                .map(|s| (tenant, s))
                                .ok_or_else(|| {
                                    anyhow::anyhow!("an SRT secret is not 64 hex digits")
                                })
                        })
                        .collect::<anyhow::Result<HashMap<_, _>>>()?;
                    anyhow::Ok((secrets, answer.version))
                };
                parsed.await.map_err(|e| (true, e))
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
                    endpoints.succeeded();
                    version = Some(v);
                    slot.set(secrets);
                }
                Err((replica, e)) => {
                    if !failing {
                        tracing::warn!(error = %format!("{e:#}"), "SRT secrets not fetched; retrying");
                    }
                    failing = true;
                    // The version names the tenant set on every replica:
                    // another replica may go on polling with it.
                    if replica && endpoints.failed() == Next::TryNow {
                        continue;
                    }
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
pub async fn start_key_sync(
    link: ControlPlaneLink,
    verifier: Arc<Verifier>,
) -> anyhow::Result<SyncHandle> {
    start_key_sync_kept(link, verifier, None).await
}

/// [`start_key_sync`], keeping what the control plane said last in the
/// file `kept` ([`last_word`]) and starting from it when no replica
/// answers at start.
pub async fn start_key_sync_kept(
    link: ControlPlaneLink,
    verifier: Arc<Verifier>,
    kept: Option<PathBuf>,
) -> anyhow::Result<SyncHandle> {
    let client = client(&link, Duration::from_secs(LONG_POLL_SECS + 10))?;
    let mut endpoints = link.endpoints();
    let latest: Arc<std::sync::Mutex<Option<KeySet>>> = Arc::default();
    let start_from = kept.clone();
    let keep = {
        let (latest, verifier) = (latest.clone(), verifier.clone());
        move |set: Option<&KeySet>| {
            let Some(path) = kept.as_deref() else {
                return;
            };
            let mut latest = latest.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(set) = set {
                *latest = Some(set.clone());
            }
            if let Some(set) = latest.as_ref() {
                last_word::save(path, set, &verifier);
            }
        }
    };
    // The first key set from the first replica that has it.
    loop {
        match fetch_keys(&client, &endpoints.url(paths::KEYS)?).await {
            Ok(set) => {
                apply_keys(&verifier, &set);
                heard(&verifier);
                endpoints.succeeded();
                keep(Some(&set));
                break;
            }
            Err(e) => {
                let next = match e.downcast_ref::<reqwest::Error>() {
                    Some(e) if !replica_failed(e) => Next::Wait,
                    _ => endpoints.failed(),
                };
                if next == Next::Wait {
                    tracing::warn!(error = %e, "control plane key set not reachable yet; retrying");
                    match start_from
                        .as_deref()
                        .and_then(|path| last_word::restore(path, &verifier))
                    {
                        Some(set) => {
                            *latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(set);
                        }
                        None => {
                            verifier.issuer_unreachable();
                        }
                    }
                    break;
                }
            }
        }
    }
    let (revoked, _) = broadcast::channel(1024);
    let sender = revoked.clone();
    let task = tokio::spawn(async move {
        let keys = {
            let (client, verifier, mut endpoints, keep) = (
                client.clone(),
                verifier.clone(),
                endpoints.clone(),
                keep.clone(),
            );
            async move {
                let mut last: Option<tokio::time::Instant> = None;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                        () = fresh_keys_wanted(&verifier) => {
                            // However many ask, at most one fetch per interval.
                            if let Some(last) = last {
                                tokio::time::sleep_until(last + MIN_ASKED_REFRESH).await;
                            }
                        }
                    }
                    last = Some(tokio::time::Instant::now());
                    // One pass over the replicas.
                    loop {
                        let Ok(url) = endpoints.url(paths::KEYS) else {
                            break;
                        };
                        match fetch_keys(&client, &url).await {
                            Ok(set) => {
                                apply_keys(&verifier, &set);
                                heard(&verifier);
                                endpoints.succeeded();
                                keep(Some(&set));
                                break;
                            }
                            Err(e) => {
                                if endpoints.failed() == Next::Wait {
                                    tracing::warn!(error = %e, "key set refresh failed");
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        };
        let revocations = async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                let after = verifier.revocations().seq();
                let Ok(revocations_url) = endpoints.url(paths::REVOCATIONS) else {
                    return;
                };
                match fetch_revocations(&client, &revocations_url, &link.credential, after).await {
                    Ok(feed) => {
                        backoff = Duration::from_millis(250);
                        endpoints.succeeded();
                        // Before pruning: entries go only once the outage's
                        // grace has ended (strom_token::Issuer).
                        heard(&verifier);
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
                        keep(None);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, control_plane = %endpoints.base(), "revocation poll failed");
                        let replica = e
                            .downcast_ref::<reqwest::Error>()
                            .is_none_or(replica_failed);
                        if replica {
                            if endpoints.failed() == Next::TryNow {
                                continue;
                            }
                            // No replica answers: viewers cannot refresh
                            // their tokens now.
                            if verifier.issuer_unreachable() {
                                tracing::warn!(
                                    grace_secs = strom_token::OUTAGE_GRACE_SECS,
                                    "no control-plane replica answers: play tokens expiring from now on stay accepted for the grace period; revocations held still apply"
                                );
                            }
                        }
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

pub(crate) fn apply_keys(verifier: &Verifier, set: &KeySet) {
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

/// The control plane answered: expiry is as minted again.
fn heard(verifier: &Verifier) {
    if verifier.issuer_heard(time::OffsetDateTime::now_utc()) {
        tracing::info!(
            extended = verifier.extended_count(),
            "the control plane answers again: play tokens expire as minted"
        );
    }
}

/// Resolves once something asked the verifier for fresh keys
/// ([`Verifier::want_fresh_keys`]); polled, the token crate has no runtime.
async fn fresh_keys_wanted(verifier: &Verifier) {
    while !verifier.take_fresh_keys_wanted() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

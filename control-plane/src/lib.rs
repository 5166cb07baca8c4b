#![warn(unreachable_pub)]
//! strom's control plane: tenants, staff and roles, events, streams,
//! participants, sites and edges; identity (passwords with lockout, TOTP,
//! magic links); publish and playback tokens with revocation push; audit
//! trail, consent, data subject rights and retention — personal data sealed
//! at rest under per-tenant and per-event keys.
//!
//! `ControlPlane::load(config, data_dir)` opens everything and
//! `ControlPlane::run()` serves the API; `strom control-plane`, `strom dev`
//! and the tests start it through these two calls.

pub mod admin;
mod api;
mod audit;
mod forwarded;
mod keys;
mod limits;
mod metrics;
pub mod migrate;
pub mod model;
pub mod repo;
pub mod store;

// The crate's surface besides `ControlPlane`. Four modules stay public as
// namespaces: the data model, the repository over it, the `Store` a second
// backend implements, and the admin socket's client (`admin::call`).
pub use api::auth::{issue_link, LinkRequest};
pub use api::{openapi_document, Shared, SECURITY_EVENTS_PER_MINUTE};
pub use audit::{verify as verify_audit_trail, AuditRecord};
pub use keys::{write_secret_file, KeyError, KeyRing, MasterKeys, Scope};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strom_identity::mail::{FileOutbox, Mailer, SmtpConfig, SmtpMailer};
pub use strom_token::RelayRole;

use crate::model::Role;
use crate::repo::Repo;
use crate::store::{PgStore, RocksStore, Store, Table};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlaneConfig {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz` and `/readyz` for monitoring (loopback only);
    /// none to turn it off.
    pub metrics_listen: Option<SocketAddr>,
    /// Public base URL of the portal; links in mails point here.
    pub public_url: url::Url,
    /// RTMP URL shown to broadcasters with their publish credential.
    pub rtmp_url: String,
    /// SRT listener shown to broadcasters (`srt://host:port`).
    pub srt_url: String,
    /// Edge base URLs viewers are sent to (besides edges that register).
    pub edges: Vec<String>,
    /// Master key file (`v<N>:<base64>` lines); `STROM_MASTER_KEY` overrides.
    /// Empty: `<data_dir>/control-plane/master.key`.
    pub master_key_file: Option<PathBuf>,
    /// Generate the master key file when it is missing (development).
    pub generate_master_key: bool,
    /// Outgoing mail; without it mails go to `<data_dir>/control-plane/outbox`.
    pub smtp: Option<SmtpConfig>,
    /// Cookies carry `Secure` (turn off only for plain-HTTP tests).
    pub secure_cookies: bool,
    pub rate_limit_per_ip_per_minute: u32,
    pub rate_limit_per_account_per_minute: u32,
    /// Single sign-on may reach identity providers at loopback and internal
    /// (RFC 1918, CGNAT, unique-local) addresses, and over plain http on
    /// loopback; off, only https to public addresses (no SSRF through a
    /// tenant's issuer). Link-local and cloud metadata stay refused.
    pub oidc_allow_private_addresses: bool,
    /// Reverse proxies (addresses or CIDRs) whose `Forwarded` /
    /// `X-Forwarded-For` headers name the client; rate limits key on that
    /// client. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Where records live: RocksDB under the data directory (the default),
    /// or PostgreSQL, which several replicas share.
    pub store: StoreConfig,
}

/// `[control_plane.store]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// Embedded RocksDB: `<data_dir>/control-plane/db` and `keys`.
    #[default]
    Rocksdb,
    /// PostgreSQL. `url` in libpq form (`postgresql://user@host/db`); the
    /// environment's `STROM_POSTGRES_URL` overrides it, so the password
    /// need not sit in the configuration file. The wrapped data keys live
    /// in a relation of their own (`strom_keys`), in another database when
    /// `keys_url` (or `STROM_POSTGRES_KEYS_URL`) says so.
    ///
    /// Off this machine the connection is TLS, the server verified against
    /// `ca_file` (PEM; e.g. the managed service's CA bundle), unless the url
    /// says `sslmode=disable` (`store::postgres::tls_plan`).
    Postgres {
        #[serde(default)]
        url: String,
        #[serde(default)]
        keys_url: Option<String>,
        #[serde(default)]
        ca_file: Option<PathBuf>,
    },
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8090".parse().expect("address"),
            // The shipped configuration turns it on (127.0.0.1:8091); off
            // by default here so that embedders and tests choose a port.
            metrics_listen: None,
            public_url: "http://localhost:8090/".parse().expect("url"),
            rtmp_url: "rtmp://localhost:1935/live".into(),
            srt_url: "srt://localhost:9000".into(),
            edges: vec![],
            master_key_file: None,
            generate_master_key: false,
            smtp: None,
            secure_cookies: true,
            rate_limit_per_ip_per_minute: 120,
            rate_limit_per_account_per_minute: 10,
            oidc_allow_private_addresses: false,
            trusted_proxies: Vec::new(),
            store: StoreConfig::default(),
        }
    }
}

impl ControlPlaneConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !matches!(self.public_url.scheme(), "http" | "https") {
            anyhow::bail!(
                "control_plane.public_url = {} must be http or https",
                self.public_url
            );
        }
        if self.metrics_listen.is_some_and(|a| !a.ip().is_loopback()) {
            anyhow::bail!("control_plane.metrics_listen must be a loopback address");
        }
        if self.rate_limit_per_ip_per_minute == 0 || self.rate_limit_per_account_per_minute == 0 {
            anyhow::bail!("control_plane.rate_limit_* must be at least 1");
        }
        forwarded::parse_trusted(&self.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("control_plane.trusted_proxies: {e}"))?;
        Ok(())
    }
}

/// Paths under the data directory.
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("control-plane"),
        }
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }
    /// Wrapped data keys and the deletion journal: never in data backups.
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }
    pub fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }
    pub fn master_key(&self) -> PathBuf {
        self.root.join("master.key")
    }
}

pub struct ControlPlane {
    pub config: ControlPlaneConfig,
    pub repo: Arc<Repo>,
    pub state: api::Shared,
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    admin_listener: Option<tokio::net::UnixListener>,
    admin_socket: PathBuf,
    master_key_file: PathBuf,
}

/// Opens the stores and key ring without serving (CLI commands use this).
pub fn open_repo(
    config: &ControlPlaneConfig,
    data_dir: &Path,
) -> anyhow::Result<(Arc<Repo>, PathBuf)> {
    let paths = Paths::new(data_dir);
    let master_file = config
        .master_key_file
        .clone()
        .unwrap_or_else(|| paths.master_key());
    let master = MasterKeys::load(&master_file, config.generate_master_key).with_context(|| {
        format!("master key: set STROM_MASTER_KEY, or create {} with `strom control-plane master-key new`", master_file.display())
    })?;
    let (store, keys) = open_stores(&config.store, &paths)?;
    migrate::check_not_marked(&*store).map_err(anyhow::Error::msg)?;
    let ring = KeyRing::new(keys.clone(), master);
    let repo = Arc::new(Repo::new(store, keys, ring)?);
    let replayed = repo.replay_journal()?;
    if replayed > 0 {
        tracing::warn!(
            replayed,
            "deletions replayed from the journal (restored from a backup?)"
        );
    }
    Ok((repo, master_file))
}

/// The data store and the key store the configuration names.
pub fn open_stores(
    config: &StoreConfig,
    paths: &Paths,
) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Store>)> {
    match config {
        StoreConfig::Rocksdb => {
            let store: Arc<dyn Store> = Arc::new(
                RocksStore::open(&paths.db(), &Table::DATA)
                    .context("opening the control-plane database")?,
            );
            let keys: Arc<dyn Store> = Arc::new(
                RocksStore::open(&paths.keys(), &Table::KEYS).context("opening the key store")?,
            );
            Ok((store, keys))
        }
        StoreConfig::Postgres {
            url,
            keys_url,
            ca_file,
        } => {
            let url = std::env::var("STROM_POSTGRES_URL").unwrap_or_else(|_| url.clone());
            anyhow::ensure!(
                !url.is_empty(),
                "control_plane.store: kind = \"postgres\" needs url (or STROM_POSTGRES_URL)"
            );
            let keys_url = std::env::var("STROM_POSTGRES_KEYS_URL")
                .ok()
                .or_else(|| keys_url.clone())
                .unwrap_or_else(|| url.clone());
            let store: Arc<dyn Store> = Arc::new(
                PgStore::connect_with(&url, "strom_kv", ca_file.as_deref())
                    .context("connecting to PostgreSQL")?,
            );
            let keys: Arc<dyn Store> = Arc::new(
                PgStore::connect_with(&keys_url, "strom_keys", ca_file.as_deref())
                    .context("connecting to PostgreSQL (key store)")?,
            );
            Ok((store, keys))
        }
    }
}

impl ControlPlane {
    pub async fn load(config: ControlPlaneConfig, data_dir: &Path) -> anyhow::Result<Self> {
        config.validate()?;
        let (repo, master_key_file) = open_repo(&config, data_dir)?;
        let mailer: Arc<dyn Mailer> = match &config.smtp {
            Some(smtp) => Arc::new(SmtpMailer::new(smtp.clone()).context("control_plane.smtp")?),
            None => Arc::new(FileOutbox::new(Paths::new(data_dir).outbox())),
        };
        let verifier = repo.verifier().clone();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the control plane on {}", config.listen))?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding control_plane.metrics_listen on {addr}"))?,
            ),
            None => None,
        };
        // What relays and agents report lately, shared by every replica
        // where the store is (in this process's memory otherwise).
        let presence = repo
            .store
            .clone()
            .shared_presence()
            .unwrap_or_else(|| Arc::new(store::MemoryPresence::default()));
        let state = Arc::new(api::AppState {
            repo: repo.clone(),
            mailer,
            limits: limits::RateLimits::new(
                presence.clone(),
                config.rate_limit_per_ip_per_minute,
                config.rate_limit_per_account_per_minute,
            ),
            public_url: config.public_url.clone(),
            rtmp_url: std::sync::RwLock::new(config.rtmp_url.clone()),
            srt_url: std::sync::RwLock::new(config.srt_url.clone()),
            outbox: config.smtp.is_none().then(|| Paths::new(data_dir).outbox()),
            edges: config.edges.clone(),
            secure_cookies: config.secure_cookies,
            verifier,
            relay_status: api::relay::StatusBoard::new(presence.clone()),
            dashboard: api::dashboard::Dashboard::new(presence.clone()),
            agents: api::agents::AgentBoard::new(presence.clone()),
            presence,
            oidc_allow_private_addresses: config.oidc_allow_private_addresses,
            mails_in_flight: Default::default(),
            trusted_proxies: forwarded::parse_trusted(&config.trusted_proxies)
                .map_err(|e| anyhow::anyhow!("control_plane.trusted_proxies: {e}"))?,
        });
        let admin_socket = admin::socket_path(data_dir);
        // Without it (a path too long for a Unix socket, a read-only
        // directory) the operator's tools work only while the control plane
        // is stopped; serving goes on.
        let admin_listener = match admin::bind(&admin_socket) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(socket = %admin_socket.display(), error = %e, "operator socket not available");
                None
            }
        };
        Ok(Self {
            config,
            repo,
            state,
            listener,
            metrics_listener,
            admin_listener,
            admin_socket,
            master_key_file,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Sets the URL that links in mails and the OIDC callback point at, for a
    /// listener whose port is only known after binding (`strom dev`).
    pub fn set_public_url(&mut self, url: url::Url) -> anyhow::Result<()> {
        let state = Arc::get_mut(&mut self.state)
            .context("the public URL is set before the control plane is shared")?;
        state.public_url = url.clone();
        self.config.public_url = url;
        Ok(())
    }

    /// Sends mail through `mailer` instead of the configured one (embedders;
    /// tests use a mail server that answers slowly).
    pub fn set_mailer(&mut self, mailer: Arc<dyn Mailer>) -> anyhow::Result<()> {
        let state = Arc::get_mut(&mut self.state)
            .context("the mailer is set before the control plane is shared")?;
        state.mailer = mailer;
        Ok(())
    }

    /// The base URL relays use to reach this control plane.
    pub fn url(&self) -> anyhow::Result<url::Url> {
        Ok(format!("http://{}/", self.local_addr()?).parse()?)
    }

    /// Mints a credential for one of the operator's relays (an origin or
    /// an edge) named `subject`.
    pub fn relay_credential(&self, role: RelayRole, subject: &str) -> anyhow::Result<String> {
        mint_relay_credential(&self.repo, role, subject)
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until a part fails (an error naming it).
    pub async fn run(self) -> anyhow::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `stop` resolves, then removes the operator socket and
    /// closes the store; or until a part fails (an error naming it).
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tracing::info!(
            http = %self.local_addr()?,
            metrics = %self.metrics_addr().map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            "control plane ready"
        );
        let mut parts = strom_service::Tasks::new();
        if let Some(listener) = self.metrics_listener.take() {
            let app = metrics_router(self.repo.clone());
            parts.spawn("metrics server", async move {
                axum::serve(listener, app).await.context("metrics listener")
            });
        }
        parts.spawn_loop("retention sweep", sweep_loop(self.repo.clone()));
        parts.spawn_loop("other replicas' changes", follow_loop(self.repo.clone()));
        parts.spawn_loop(
            "dashboard sampler",
            api::dashboard::sample_loop(self.state.clone()),
        );
        parts.spawn_loop(
            "master key watch",
            watch_master_key(
                self.repo.clone(),
                self.state.clone(),
                self.master_key_file.clone(),
            ),
        );
        if let Some(listener) = self.admin_listener.take() {
            let app = admin::router(self.repo.clone());
            parts.spawn("operator socket", async move {
                axum::serve(listener, app).await.context("operator socket")
            });
        }
        let app =
            api::router(self.state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let listener = self.listener;
        parts.spawn("API server", async move {
            axum::serve(listener, app).await.context("API server")
        });
        let ended = parts.run_until(stop).await;
        let _ = std::fs::remove_file(&self.admin_socket);
        ended?;
        tracing::info!("control plane stopped");
        Ok(())
    }
}

/// `/metrics`, `/healthz` and `/readyz` on the loopback metrics listener.
fn metrics_router(repo: Arc<Repo>) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let repo = repo.clone();
                async move {
                    let text = repo.metrics.render();
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        text,
                    )
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(|| async { "ready\n" }))
}

/// Twice a second: revocations other replicas appended to a shared store
/// reach this replica's verifier and the relays long-polling it, signing
/// keys another replica rotated are taken up, and tenants another replica
/// created or deleted wake the origins long-polling for SRT secrets (three
/// reads when nothing changed). A failed read is retried on the next tick.
async fn follow_loop(repo: Arc<Repo>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = repo.clone();
        let followed = tokio::task::spawn_blocking(move || {
            r.follow_revocations()?;
            r.follow_signing_keys()?;
            r.follow_tenants().map(|_| ())
        })
        .await;
        if let Ok(Err(e)) = followed {
            tracing::warn!(error = %e, "following other replicas failed");
        }
    }
}

/// Every 10 minutes: the retention sweep, then the revocation log's
/// compaction.
async fn sweep_loop(repo: Arc<Repo>) {
    loop {
        let r = repo.clone();
        match tokio::task::spawn_blocking(move || r.sweep_retention()).await {
            Ok(Ok(done)) if !done.is_empty() => {
                tracing::info!(deleted = done.len(), "retention sweep")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "retention sweep failed"),
            _ => {}
        }
        let r = repo.clone();
        let compacted = tokio::task::spawn_blocking(move || {
            r.compact_revocations(time::OffsetDateTime::now_utc())
        })
        .await;
        if let Ok(Err(e)) = compacted {
            tracing::warn!(error = %e, "revocation log compaction failed");
        }
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}

/// Mints a credential for the operator's relay `subject` (listed and
/// revocable with `strom control-plane relay-credential list|revoke`).
pub fn mint_relay_credential(
    repo: &Repo,
    role: RelayRole,
    subject: &str,
) -> anyhow::Result<String> {
    Ok(repo.issue_relay_credential("operator", role, subject)?.0)
}

/// Re-wraps data keys when a new master key version appears in the file,
/// while serving (no downtime); keeps the verifier's key set fresh too.
async fn watch_master_key(repo: Arc<Repo>, state: api::Shared, file: PathBuf) {
    let mut seen = std::fs::read_to_string(&file).ok();
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if let Ok(set) = repo.key_set() {
            state.verifier.set_keys(&set);
        }
        if std::env::var("STROM_MASTER_KEY").is_ok() {
            continue;
        }
        let now = std::fs::read_to_string(&file).ok();
        if now.is_none() || now == seen {
            continue;
        }
        match MasterKeys::parse(now.as_deref().unwrap_or("")) {
            Ok(keys) => {
                let r = repo.clone();
                match tokio::task::spawn_blocking(move || r.ring.rotate_master(keys)).await {
                    Ok(Ok(n)) => tracing::info!(rewrapped = n, "master key rotated"),
                    Ok(Err(e)) => tracing::error!(error = %e, "master key rotation failed"),
                    Err(e) => tracing::error!(error = %e, "master key rotation failed"),
                }
                seen = now;
            }
            Err(e) => {
                tracing::error!(error = %e, "master key file unreadable; keeping the loaded keys")
            }
        }
    }
}

/// Creates the first tenant and its owner (CLI and `strom dev`).
pub fn bootstrap(
    repo: &Repo,
    tenant_name: &str,
    owner_email: &str,
    owner_name: &str,
) -> anyhow::Result<(model::Tenant, repo::UserView, Option<String>)> {
    let tenant = repo.create_tenant(tenant_name)?;
    let (user, password) = repo.create_user(
        "system",
        &tenant.id,
        owner_email,
        owner_name,
        Role::Owner,
        None,
    )?;
    Ok((tenant, user, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// V13: a configuration that would weaken the control plane is refused
    /// at start with the key that is wrong.
    #[test]
    fn unsafe_configurations_are_refused() {
        let ok = ControlPlaneConfig::default();
        assert!(ok.validate().is_ok());
        let cases: Vec<(ControlPlaneConfig, &str)> = vec![
            (
                ControlPlaneConfig {
                    metrics_listen: Some("0.0.0.0:8091".parse().unwrap()),
                    ..ok.clone()
                },
                "metrics_listen",
            ),
            (
                ControlPlaneConfig {
                    public_url: "ftp://example.com/".parse().unwrap(),
                    ..ok.clone()
                },
                "public_url",
            ),
            (
                ControlPlaneConfig {
                    rate_limit_per_ip_per_minute: 0,
                    ..ok.clone()
                },
                "rate_limit",
            ),
            (
                ControlPlaneConfig {
                    trusted_proxies: vec!["10.0.0.0/8".into(), "proxy.example".into()],
                    ..ok.clone()
                },
                "trusted_proxies",
            ),
        ];
        for (config, key) in cases {
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let proxied = ControlPlaneConfig {
            trusted_proxies: vec!["10.0.0.0/8".into(), "::1".into()],
            ..ok
        };
        assert!(proxied.validate().is_ok());
    }
}

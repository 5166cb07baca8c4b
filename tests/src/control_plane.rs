//! The real control plane (`strom-control-plane`: RocksDB, key ring, HTTP
//! API) running inside the test process, for tests that start origins and
//! edges as separate processes: they fetch its key set and long-poll its
//! revocation log with a relay credential, exactly as in production. Tests
//! mint tokens and record revocations through its repository.

use std::time::Instant;

use strom_control_plane::{repo::Repo, ControlPlane, ControlPlaneConfig};
use strom_token::{Action, Grant, RevocationKind};
use time::OffsetDateTime;

/// A running control plane; it stops with the test process.
pub struct TestControlPlane {
    /// Base URL, e.g. `http://127.0.0.1:41234/`.
    pub url: String,
    /// An edge's relay credential.
    pub relay_credential: String,
    /// An origin's relay credential (SRT secrets, media keys).
    pub origin_credential: String,
    pub repo: std::sync::Arc<Repo>,
    /// `http://127.0.0.1:<port>/metrics`.
    pub metrics_url: String,
    _dir: tempfile::TempDir,
}

impl TestControlPlane {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = ControlPlaneConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            metrics_listen: Some("127.0.0.1:0".parse().expect("address")),
            generate_master_key: true,
            ..ControlPlaneConfig::default()
        };
        let data_dir = dir.path().to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let mut cp = match ControlPlane::load(config, &data_dir).await {
                    Ok(cp) => cp,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                // Pages served here call the API from here (same origin).
                if let Err(e) = cp.url().and_then(|url| cp.set_public_url(url)) {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return;
                }
                let ready = cp.url().map_err(|e| e.to_string()).and_then(|url| {
                    let edge = cp
                        .relay_credential(strom_control_plane::RelayRole::Edge, "edge-1")
                        .map_err(|e| e.to_string())?;
                    let origin = cp
                        .relay_credential(strom_control_plane::RelayRole::Origin, "origin-1")
                        .map_err(|e| e.to_string())?;
                    let metrics = cp
                        .metrics_addr()
                        .map(|a| format!("http://{a}/metrics"))
                        .unwrap_or_default();
                    Ok((url.to_string(), edge, origin, cp.repo.clone(), metrics))
                });
                let _ = ready_tx.send(ready);
                if let Err(e) = cp.run().await {
                    eprintln!("control plane stopped: {e:#}");
                }
            });
        });
        let (url, relay_credential, origin_credential, repo, metrics_url) = ready_rx
            .recv()
            .expect("control plane thread")
            .expect("starting the control plane");
        Self {
            url,
            relay_credential,
            origin_credential,
            repo,
            metrics_url,
            _dir: dir,
        }
    }

    /// Mints a token now.
    pub fn mint(&self, grant: Grant) -> String {
        self.mint_at(grant, OffsetDateTime::now_utc())
    }

    /// Mints a token as if at `at` (in the past: an expired token).
    pub fn mint_at(&self, grant: Grant, at: OffsetDateTime) -> String {
        self.repo.mint_at(&grant, at).expect("minting a token").0
    }

    /// A token for `action` on tenant/event(/stream), living `lifetime_secs`.
    pub fn token(
        &self,
        action: Action,
        subject: &str,
        namespace: &str,
        lifetime_secs: i64,
    ) -> String {
        let mut fields = namespace.split('/');
        let grant = Grant {
            subject: subject.into(),
            tenant: fields.next().unwrap_or_default().into(),
            event: fields.next().unwrap_or_default().into(),
            stream: fields.next().map(str::to_owned),
            action,
            lifetime_secs,
            not_after: None,
            role: None,
            via: None,
        };
        self.mint(grant)
    }

    /// Records a revocation of every token of `id` (by `kind`) in `tenant`
    /// issued up to now; relays' long polls return it at once.
    pub fn revoke(&self, kind: RevocationKind, tenant: &str, id: &str) -> Instant {
        self.repo
            .revoke(kind, tenant, id)
            .expect("recording a revocation");
        Instant::now()
    }

    /// Serves this control plane over HTTPS on `listen` as well (a TLS
    /// terminator in front of it, as in production), with a certificate for
    /// `listen`'s address made in `dir`. Returns the base URL and the
    /// certificate to trust (PEM).
    pub fn serve_tls(
        &self,
        listen: std::net::SocketAddr,
        dir: &std::path::Path,
    ) -> (String, std::path::PathBuf) {
        let identity = strom_relay::tls::Identity::dev(dir, &[listen.ip().to_string()])
            .expect("certificate for the TLS terminator");
        let config = std::sync::Arc::new(
            identity
                .server_config(&[b"http/1.1"])
                .expect("TLS configuration"),
        );
        let backend: std::net::SocketAddr = self
            .url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("control plane address");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .expect("binding the TLS terminator");
                let _ = tx.send(listener.local_addr().expect("local address"));
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        });
        let bound = rx.recv().expect("TLS terminator thread");
        (format!("https://{bound}/"), dir.join("dev-cert.pem"))
    }

    /// `[<section>.control_plane]` for a service's TOML: an origin's
    /// credential for `origin`, an edge's for anything else.
    pub fn toml(&self, section: &str) -> String {
        let credential = if section == "origin" {
            &self.origin_credential
        } else {
            &self.relay_credential
        };
        format!(
            "[{section}.control_plane]\nurl = \"{}\"\ncredential = \"{}\"\n",
            self.url, credential
        )
    }
}

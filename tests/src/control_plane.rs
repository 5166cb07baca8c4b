//! STAND-IN for the control plane's two relay endpoints, until the real
//! control plane (`control-plane/`) can be started by the tests: a small
//! HTTP/1.1 server on 127.0.0.1 that serves
//!
//! - `GET /api/v1/relay/keys` → the key set of its one [`SigningKey`];
//! - `GET /api/v1/relay/revocations?after=N&wait=S` with
//!   `Authorization: Bearer <relay credential>` → the revocations after N,
//!   held open up to S seconds (at most 20) until there is one.
//!
//! It mints the tokens the tests present (publish, play, relay) with the same
//! key, so origin and edge verify them exactly as they would the real
//! control plane's. Nothing about strom itself is simulated here.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use strom_token::revocation::RevocationFeed;
use strom_token::{Action, Grant, KeySet, Revocation, RevocationKind, SigningKey, Verifier};
use time::OffsetDateTime;

/// The revocation log, oldest first (`seq` = position + 1).
#[derive(Default)]
struct Log {
    entries: Vec<Revocation>,
}

struct Shared {
    key: SigningKey,
    verifier: Verifier,
    log: Mutex<Log>,
    changed: Condvar,
}

/// A running stand-in; its thread ends with the test process.
pub struct StandInControlPlane {
    /// Base URL, e.g. `http://127.0.0.1:41234/`.
    pub url: String,
    /// A relay credential (action `relay`) for origins and edges.
    pub relay_credential: String,
    shared: Arc<Shared>,
}

impl StandInControlPlane {
    pub fn start() -> Self {
        let key = SigningKey::generate();
        let verifier = Verifier::new();
        verifier.set_keys(&KeySet {
            keys: vec![key.public_key()],
        });
        let shared = Arc::new(Shared {
            key,
            verifier,
            log: Mutex::new(Log::default()),
            changed: Condvar::new(),
        });
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("binding the stand-in control plane");
        let url = format!(
            "http://127.0.0.1:{}/",
            listener.local_addr().expect("local address").port()
        );
        let serving = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = serving.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &shared);
                });
            }
        });
        let mut cp = Self {
            url,
            relay_credential: String::new(),
            shared,
        };
        cp.relay_credential = cp.mint(Grant {
            subject: "relay-1".into(),
            tenant: "operator".into(),
            event: String::new(),
            stream: None,
            action: Action::Relay,
            lifetime_secs: 86_400,
            not_after: None,
        });
        cp
    }

    /// Mints a token now.
    pub fn mint(&self, grant: Grant) -> String {
        self.mint_at(grant, OffsetDateTime::now_utc())
    }

    /// Mints a token as if at `at` (in the past: an expired token).
    pub fn mint_at(&self, grant: Grant, at: OffsetDateTime) -> String {
        self.shared.key.mint(&grant, at).expect("minting a token").0
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
        };
        self.mint(grant)
    }

    /// Appends a revocation of every token of `id` (by `kind`) in `tenant`
    /// issued up to now (and within the next second: token times are whole
    /// seconds); long polls return it at once.
    pub fn revoke(&self, kind: RevocationKind, tenant: &str, id: &str) -> Instant {
        let mut log = self.shared.log.lock().unwrap_or_else(|p| p.into_inner());
        let seq = log.entries.len() as u64 + 1;
        log.entries.push(Revocation {
            seq,
            kind,
            tenant: tenant.into(),
            id: id.into(),
            issued_before: OffsetDateTime::now_utc() + time::Duration::seconds(1),
        });
        let at = Instant::now();
        self.shared.changed.notify_all();
        at
    }

    /// `[<section>.control_plane]` for a service's TOML.
    pub fn toml(&self, section: &str) -> String {
        format!(
            "[{section}.control_plane]\nurl = \"{}\"\ncredential = \"{}\"\n",
            self.url, self.relay_credential
        )
    }
}

fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut bearer = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                bearer = value.trim().strip_prefix("Bearer ").map(str::to_owned);
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, body) = match path {
        "/api/v1/relay/keys" => (
            "200 OK",
            serde_json::to_string(&KeySet {
                keys: vec![shared.key.public_key()],
            })
            .unwrap_or_default(),
        ),
        "/api/v1/relay/revocations" => {
            let relay = bearer
                .as_deref()
                .and_then(|t| shared.verifier.verify(t, OffsetDateTime::now_utc()).ok())
                .is_some_and(|c| c.act == Action::Relay);
            if relay {
                ("200 OK", revocations(shared, query))
            } else {
                (
                    "401 Unauthorized",
                    "{\"error\":\"relay credential required\"}".into(),
                )
            }
        }
        _ => ("404 Not Found", "{}".into()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn revocations(shared: &Shared, query: &str) -> String {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    let after = param("after").unwrap_or(0);
    let wait = Duration::from_secs(param("wait").unwrap_or(0).min(20));
    let deadline = Instant::now() + wait;
    let mut log = shared.log.lock().unwrap_or_else(|p| p.into_inner());
    while log.entries.len() as u64 <= after {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        log = shared
            .changed
            .wait_timeout(log, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    let feed = RevocationFeed {
        seq: log.entries.len() as u64,
        entries: log
            .entries
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect(),
        reset: false,
    };
    serde_json::to_string(&feed).unwrap_or_default()
}

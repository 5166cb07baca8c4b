//! A real control plane on a loopback port with a fresh data directory, and
//! a small HTTP client that keeps cookies and the CSRF token by hand.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use strom_control_plane::{repo::Repo, ControlPlane, ControlPlaneConfig, StoreConfig};

pub struct Plane {
    pub base: String,
    pub repo: Arc<Repo>,
    pub state: strom_control_plane::Shared,
    pub dir: tempfile::TempDir,
    /// An edge's relay credential.
    pub relay: String,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn config() -> ControlPlaneConfig {
    ControlPlaneConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        generate_master_key: true,
        secure_cookies: false,
        rate_limit_per_ip_per_minute: 10_000,
        rate_limit_per_account_per_minute: 10_000,
        store: store(),
        ..Default::default()
    }
}

/// The backend under test: RocksDB, or with `STROM_TEST_POSTGRES` (a libpq
/// connection string to a PostgreSQL server, e.g. `host=/tmp/pg
/// user=strom`) a fresh database of that server per control plane — the
/// same suites on the second backend (`scripts/test` runs them both ways).
pub fn store() -> StoreConfig {
    let Ok(server) = std::env::var("STROM_TEST_POSTGRES") else {
        return StoreConfig::Rocksdb;
    };
    let name = format!("cp_{}_{}", std::process::id(), rand::random::<u64>());
    let out = std::process::Command::new("psql")
        .arg(format!("{server} dbname=postgres"))
        .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "creating a test database: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    StoreConfig::Postgres {
        url: format!("{server} dbname={name}"),
        keys_url: None,
        ca_file: None,
    }
}

/// Whether the suites run on PostgreSQL (tests of RocksDB's own files
/// skip then, and say so).
pub fn on_postgres() -> bool {
    std::env::var_os("STROM_TEST_POSTGRES").is_some()
}

pub async fn start() -> Plane {
    start_with(config()).await
}

pub async fn start_with(config: ControlPlaneConfig) -> Plane {
    start_custom(config, |_| {}).await
}

/// Starts a control plane after `prepare` had its way with it (a mailer).
pub async fn start_custom(
    mut config: ControlPlaneConfig,
    prepare: impl FnOnce(&mut ControlPlane),
) -> Plane {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::load(config.clone(), dir.path())
        .await
        .unwrap();
    prepare(&mut cp);
    let base = format!("http://{}", cp.local_addr().unwrap());
    config.public_url = format!("{base}/").parse().unwrap();
    let repo = cp.repo.clone();
    let state = cp.state.clone();
    let relay = cp
        .relay_credential(strom_control_plane::RelayRole::Edge, "edge-test")
        .unwrap();
    let task = tokio::spawn(cp.run());
    Plane {
        base,
        repo,
        state,
        dir,
        relay,
        task,
    }
}

impl Plane {
    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("control-plane/outbox")
    }

    /// Waits until every mail handed to the mailer is out (they are sent
    /// in the background).
    pub async fn mails_sent(&self) {
        for _ in 0..500 {
            if self
                .state
                .mails_in_flight
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("mails still not sent after 5 s");
    }

    /// The newest mail to `to`: its text.
    pub async fn last_mail(&self, to: &str) -> Option<String> {
        self.mails_sent().await;
        let mut files: Vec<_> = std::fs::read_dir(self.outbox())
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        files.sort();
        files.into_iter().rev().find_map(|f| {
            let text = std::fs::read_to_string(&f).ok()?;
            text.lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("To: {to}")))
                .then_some(text)
        })
    }

    pub async fn mail_link(&self, to: &str) -> Option<(String, String)> {
        let text = self.last_mail(to).await?;
        let text = text
            .replace("=\r\n", "")
            .replace("=\n", "")
            .replace("=3D", "=");
        let link = strom_identity::mail::links_in(&text).into_iter().next()?;
        let token = link.split("#token=").nth(1)?.to_owned();
        let code = text
            .split("enter this code instead: ")
            .nth(1)?
            .chars()
            .take(8)
            .collect();
        Some((token, code))
    }

    /// A new tenant with an owner who has changed their initial password.
    pub async fn tenant(&self, name: &str) -> (String, Client) {
        let email = format!("owner@{}.example", name.to_lowercase());
        let (t, _u, pw) =
            strom_control_plane::bootstrap(&self.repo, name, &email, "Owner Person").unwrap();
        let mut c = Client::new(&self.base);
        let pw = pw.unwrap();
        let r = c
            .post(
                "/api/v1/auth/login",
                json!({"tenant": t.id, "email": email, "password": pw}),
            )
            .await;
        assert_eq!(r.0, 200, "{:?}", r.1);
        assert_eq!(r.1["must_change_password"], true);
        let r = c.get("/api/v1/events").await;
        assert_eq!(
            r.0, 403,
            "nothing before the forced password change: {:?}",
            r.1
        );
        let r = c
            .post(
                "/api/v1/auth/password",
                json!({"current_password": pw, "new_password": GOOD_PASSWORD}),
            )
            .await;
        assert_eq!(r.0, 204, "{:?}", r.1);
        (t.id, c)
    }
}

/// A staff member of `role` created by `owner`, logged in with their own
/// password ([`GOOD_PASSWORD`]): (user id, their client).
pub async fn staff_session(
    plane: &Plane,
    owner: &mut Client,
    tenant: &str,
    email: &str,
    role: &str,
) -> (String, Client) {
    let r = owner
        .post(
            "/api/v1/users",
            json!({"email": email, "name": "Staff", "role": role, "password": "Initial-pass-1"}),
        )
        .await;
    assert_eq!(r.0, 201, "{:?}", r.1);
    let mut c = Client::new(&plane.base);
    assert_eq!(
        c.post(
            "/api/v1/auth/login",
            json!({"tenant": tenant, "email": email, "password": "Initial-pass-1"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        c.post(
            "/api/v1/auth/password",
            json!({"current_password": "Initial-pass-1", "new_password": GOOD_PASSWORD})
        )
        .await
        .0,
        204
    );
    (r.1["user"]["id"].as_str().unwrap().into(), c)
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub cookies: Vec<(String, String)>,
    pub csrf: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.into(),
            http: reqwest::Client::new(),
            cookies: vec![],
            csrf: None,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn absorb(&mut self, res: &reqwest::Response) {
        for v in res.headers().get_all("set-cookie") {
            let s = v.to_str().unwrap();
            let (kv, _) = s.split_once(';').unwrap_or((s, ""));
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.cookies.push((k.into(), v.into()));
            }
        }
    }

    pub async fn send(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, text, _) = self
            .send_raw(
                method,
                path,
                body.map(|b| ("application/json", b.to_string().into_bytes())),
            )
            .await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn send_raw(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, String, reqwest::header::HeaderMap) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", self.cookie_header());
        if let Some(csrf) = &self.csrf {
            req = req.header("x-csrf-token", csrf);
        }
        if let Some((ct, bytes)) = body {
            req = req.header("content-type", ct).body(bytes);
        }
        let res = req.send().await.unwrap();
        self.absorb(&res);
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        if status >= 400 {
            let kind = headers.get("content-type").unwrap().to_str().unwrap();
            // The one error answer that is not a problem: an import's report
            // of its bad rows (422, `ImportResult`).
            let row_report = status == 422
                && path.ends_with("/participants/import")
                && kind == "application/json";
            assert!(
                kind == "application/problem+json" || row_report,
                "{path}: {kind}"
            );
        }
        let text = res.text().await.unwrap();
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            if let Some(csrf) = v.get("csrf").and_then(|c| c.as_str()) {
                self.csrf = Some(csrf.into());
            }
        }
        (status, text, headers)
    }

    pub async fn get(&mut self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&mut self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn patch(&mut self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&mut self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}

pub const GOOD_PASSWORD: &str = "Correct-horse-7";

pub fn event_body(title: &str) -> Value {
    let start = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let end = start + time::Duration::hours(3);
    let f = &time::format_description::well_known::Rfc3339;
    json!({
        "title": title,
        "starts_at": start.format(f).unwrap(),
        "ends_at": end.format(f).unwrap(),
        "access": "open",
        "privacy_notice": "https://example.com/privacy-v1",
        "form": [
            {"name": "company", "label": "Company", "kind": "text", "required": true},
            {"name": "dept", "label": "Department", "kind": "select", "options": ["Sales", "R&D"]}
        ]
    })
}

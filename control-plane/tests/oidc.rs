//! Single sign-on (AUTH-6) against a real OpenID Connect provider: panva's
//! certified `oidc-provider` (tests/oidc-provider, started with node), driven
//! through its login and consent pages with plain HTTP and a cookie jar, as a
//! browser would. Needs node and npm (the test fails, it does not skip,
//! when they are missing).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

const CLIENT_ID: &str = "strom-test";
const STAFF_EMAIL: &str = "moderator@acme.example";
const VIEWER_EMAIL: &str = "viewer@acme.example";

/// The provider's accounts: login id → claims. `unverified` claims the
/// staff member's address without the provider having verified it.
fn accounts() -> Value {
    json!({
        "staff": {"email": STAFF_EMAIL, "email_verified": true},
        "viewer": {"email": VIEWER_EMAIL, "email_verified": true},
        "stranger": {"email": "stranger@elsewhere.example", "email_verified": true},
        "unverified": {"email": STAFF_EMAIL, "email_verified": false},
    })
}

fn provider_dir() -> PathBuf {
    manifest_dir().join("tests/oidc-provider")
}

/// `npm ci` once per test run, unless the pinned version is installed already.
fn install_provider() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = provider_dir();
        let pinned = |p: &Path| -> Option<String> {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
            v.pointer("/dependencies/oidc-provider")
                .or_else(|| v.get("version"))
                .and_then(|s| s.as_str())
                .map(str::to_owned)
        };
        let wanted = pinned(&dir.join("package.json"))
            .expect("tests/oidc-provider/package.json pins oidc-provider");
        let installed = pinned(&dir.join("node_modules/oidc-provider/package.json"));
        if installed.as_deref() == Some(wanted.as_str()) {
            return;
        }
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .unwrap_or_else(|e| {
                panic!("this test needs npm (and node >= 20) on PATH to install oidc-provider: {e}")
            });
        assert!(status.success(), "npm ci in {} failed", dir.display());
    });
}

struct Provider {
    issuer: String,
    secret: String,
    _child: tokio::process::Child,
}

/// Starts the provider for a relying party whose callback is `redirect_uri`.
async fn provider(redirect_uri: &str, claims_in: &str) -> Provider {
    install_provider();
    let secret = format!("secret-{}", rand::random::<u64>());
    let mut child = tokio::process::Command::new("node")
        .arg("provider.js")
        .arg("0")
        .current_dir(provider_dir())
        .env("OIDC_CLIENT_ID", CLIENT_ID)
        .env("OIDC_CLIENT_SECRET", &secret)
        .env("OIDC_REDIRECT_URI", redirect_uri)
        .env("OIDC_ACCOUNTS", accounts().to_string())
        .env("OIDC_CLAIMS_IN", claims_in)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("this test needs node (>= 20) on PATH to run the OIDC provider: {e}")
        });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let issuer = loop {
        match lines.next_line().await.unwrap() {
            Some(line) => {
                if let Some(issuer) = line.strip_prefix("READY ") {
                    break issuer.trim().to_owned();
                }
            }
            None => panic!(
                "provider.js exited before it was ready: {:?}",
                child.wait().await
            ),
        }
    };
    // Keep reading, so the provider never writes into a closed pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("provider: {line}");
        }
    });
    Provider {
        issuer,
        secret,
        _child: child,
    }
}

/// A control plane whose public URL is its own address, with tenant Acme
/// using the provider for single sign-on, a moderator and an event with
/// an invited participant.
struct World {
    plane: Plane,
    provider: Provider,
    tenant: String,
    owner: Client,
    staff_id: String,
    event: String,
    viewer_id: String,
}

async fn world(claims_in: &str) -> World {
    // The redirect URI must be registered before the plane runs, so pick its port first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let redirect_uri = format!("{base}/api/v1/auth/oidc/callback");
    let provider = provider(&redirect_uri, claims_in).await;
    let mut config = config();
    // The test provider listens on 127.0.0.1 over plain http.
    config.oidc_allow_private_addresses = true;
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    config.public_url = format!("{base}/").parse().unwrap();
    let plane = start_with(config).await;
    assert_eq!(plane.base, base);
    let (tenant, mut owner) = plane.tenant("Acme").await;

    let r = owner.patch("/api/v1/tenant", json!({"oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": provider.secret}})).await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    assert_eq!(r.1["oidc"]["redirect_uri"], redirect_uri);
    assert_eq!(r.1["oidc"]["has_client_secret"], true);
    assert!(
        r.1["oidc"].get("client_secret").is_none(),
        "the secret is never shown: {:?}",
        r.1
    );

    let r = owner
        .post(
            "/api/v1/users",
            json!({"email": STAFF_EMAIL, "name": "Mo Derator", "role": "moderator"}),
        )
        .await;
    assert_eq!(r.0, 201, "{:?}", r.1);
    let staff_id = r.1["user"]["id"].as_str().unwrap().to_owned();
    let r = owner.post("/api/v1/events", event_body("Town hall")).await;
    assert_eq!(r.0, 201, "{:?}", r.1);
    let event = r.1["id"].as_str().unwrap().to_owned();
    let r = owner
        .post(&format!("/api/v1/events/{event}/participants"), json!({"email": VIEWER_EMAIL, "name": "Vi Ewer", "fields": {"company": "Acme"}, "send_mail": false}))
        .await;
    assert_eq!(r.0, 201, "{:?}", r.1);
    assert_eq!(r.1["status"], "invited");
    let viewer_id = r.1["id"].as_str().unwrap().to_owned();
    World {
        plane,
        provider,
        tenant,
        owner,
        staff_id,
        event,
        viewer_id,
    }
}

/// A browser: a cookie jar for both sites, redirects followed by hand.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(res: &reqwest::Response) -> String {
    let l = res
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("no location in {res:?}"))
        .to_str()
        .unwrap();
    res.url().join(l).unwrap().to_string()
}

/// What the browser does at the provider after `start`.
#[derive(Clone, Copy)]
enum AtProvider<'a> {
    LogIn(&'a str),
    Abort,
}

/// From our start URL through the provider's login and consent pages, up
/// to (not into) our callback; returns the callback URL.
async fn authorize(
    b: &reqwest::Client,
    w: &World,
    start_query: &str,
    act: AtProvider<'_>,
) -> String {
    let res = b
        .get(format!(
            "{}/api/v1/auth/oidc/start?{start_query}",
            w.plane.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    assert!(
        res.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("strom_oidc=")),
        "pre-auth cookie set"
    );
    let auth = location(&res);
    let url = url::Url::parse(&auth).unwrap();
    assert!(auth.starts_with(&w.provider.issuer), "{auth}");
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["response_type"], "code");
    assert!(
        q["scope"].split(' ').any(|s| s == "openid") && q["scope"].split(' ').any(|s| s == "email")
    );
    for p in ["state", "nonce", "code_challenge"] {
        assert!(
            q.get(p).is_some_and(|v| v.len() >= 22),
            "{p} is random: {auth}"
        );
    }
    let callback = format!("{}/api/v1/auth/oidc/callback", w.plane.base);
    let mut next = auth;
    for _ in 0..20 {
        if next.starts_with(&callback) {
            return next;
        }
        let res = b.get(&next).send().await.unwrap();
        match res.status().as_u16() {
            302 | 303 => next = location(&res),
            200 => {
                let page = res.url().clone();
                let html = res.text().await.unwrap();
                let form = if html.contains(r#"name="prompt" value="login""#) {
                    match act {
                        AtProvider::LogIn(login) => {
                            vec![("prompt", "login"), ("login", login), ("password", "any")]
                        }
                        AtProvider::Abort => {
                            next = format!("{}/abort", page.as_str().trim_end_matches('/'));
                            continue;
                        }
                    }
                } else if html.contains(r#"name="prompt" value="consent""#) {
                    vec![("prompt", "consent")]
                } else {
                    panic!("unexpected page at {page}: {html}");
                };
                let res = b.post(page.clone()).form(&form).send().await.unwrap();
                assert!(
                    matches!(res.status().as_u16(), 302 | 303),
                    "{page}: {:?}",
                    res.text().await
                );
                next = location(&res);
            }
            s => panic!("provider answered {s} at {next}: {:?}", res.text().await),
        }
    }
    panic!("no way back to the callback");
}

/// Calls our callback; returns status, Location and the problem body.
/// A fresh browser that starts a staff login of the world's tenant and does
/// `act` at the provider; the callback URL the provider sends it back to.
async fn staff_login(w: &World, act: AtProvider<'_>) -> (reqwest::Client, String) {
    let b = browser();
    let cb = authorize(&b, w, &format!("tenant={}", w.tenant), act).await;
    (b, cb)
}

/// The same for a participant's login to the world's event.
async fn participant_login(w: &World, act: AtProvider<'_>) -> (reqwest::Client, String) {
    let b = browser();
    let query = format!("tenant={}&event={}", w.tenant, w.event);
    let cb = authorize(&b, w, &query, act).await;
    (b, cb)
}

async fn finish(b: &reqwest::Client, callback: &str) -> (u16, Option<String>, Value) {
    let res = b.get(callback).send().await.unwrap();
    let status = res.status().as_u16();
    let loc = res
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    if status >= 400 {
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
    }
    let body = serde_json::from_str(&res.text().await.unwrap()).unwrap_or(Value::Null);
    (status, loc, body)
}

async fn session(b: &reqwest::Client, w: &World) -> (u16, Value) {
    let res = b
        .get(format!("{}/api/v1/session", w.plane.base))
        .send()
        .await
        .unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn staff_and_participants_log_in_through_the_tenants_provider() {
    let mut w = world("id_token").await;

    // Staff: no event.
    let (b, cb) = staff_login(&w, AtProvider::LogIn("staff")).await;
    let (status, loc, body) = finish(&b, &cb).await;
    assert_eq!(status, 303, "{body:?}");
    assert_eq!(loc.as_deref(), Some(format!("{}/", w.plane.base).as_str()));
    let (status, s) = session(&b, &w).await;
    assert_eq!(status, 200, "{s:?}");
    assert_eq!(
        (s["kind"].as_str(), s["id"].as_str(), s["role"].as_str()),
        (Some("staff"), Some(w.staff_id.as_str()), Some("moderator"))
    );
    assert_eq!(s["tenant"], w.tenant);
    assert_eq!(
        s["must_change_password"], false,
        "single sign-on does not force the local password change"
    );
    // The session is a real one: a moderator may read events, not tenant settings.
    let events = b
        .get(format!("{}/api/v1/events", w.plane.base))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let tenant = b
        .get(format!("{}/api/v1/tenant", w.plane.base))
        .send()
        .await
        .unwrap();
    assert_eq!(tenant.status(), 403);

    // Participant: with event=, lands on the event's page, and is active now.
    let (b, cb) = participant_login(&w, AtProvider::LogIn("viewer")).await;
    let (status, loc, body) = finish(&b, &cb).await;
    assert_eq!(status, 303, "{body:?}");
    // The viewer portal's address (`/e/{tenant}/{event}`).
    assert_eq!(
        loc,
        Some(format!("{}/e/{}/{}", w.plane.base, w.tenant, w.event))
    );
    let (_, s) = session(&b, &w).await;
    assert_eq!(
        (s["kind"].as_str(), s["id"].as_str(), s["event"].as_str()),
        (
            Some("participant"),
            Some(w.viewer_id.as_str()),
            Some(w.event.as_str())
        )
    );
    let r = w
        .owner
        .get(&format!(
            "/api/v1/events/{}/participants/{}",
            w.event, w.viewer_id
        ))
        .await;
    assert_eq!(r.1["status"], "active", "{:?}", r.1);

    // The participant's address is no staff account, and the staff member is
    // no participant of the event: each login is for what it was started for.
    let (b, cb) = staff_login(&w, AtProvider::LogIn("viewer")).await;
    assert_eq!(finish(&b, &cb).await.0, 403);
    let (b, cb) = participant_login(&w, AtProvider::LogIn("staff")).await;
    assert_eq!(finish(&b, &cb).await.0, 403);
    assert_eq!(session(&b, &w).await.0, 401);
}

#[tokio::test]
async fn unknown_unverified_and_deactivated_identities_are_refused() {
    let mut w = world("id_token").await;

    let (b, cb) = staff_login(&w, AtProvider::LogIn("stranger")).await;
    let (status, _, body) = finish(&b, &cb).await;
    assert_eq!(status, 403, "{body:?}");
    assert!(
        !body.to_string().contains("stranger@"),
        "no personal data echoed: {body}"
    );
    assert_eq!(session(&b, &w).await.0, 401);

    let (b, cb) = staff_login(&w, AtProvider::LogIn("unverified")).await;
    let (status, _, body) = finish(&b, &cb).await;
    assert_eq!(status, 403, "{body:?}");
    assert!(
        body["detail"].as_str().unwrap().contains("verified"),
        "{body:?}"
    );
    assert_eq!(session(&b, &w).await.0, 401);

    let r = w
        .owner
        .patch(
            &format!("/api/v1/users/{}", w.staff_id),
            json!({"active": false}),
        )
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    let (b, cb) = staff_login(&w, AtProvider::LogIn("staff")).await;
    assert_eq!(finish(&b, &cb).await.0, 403);

    // The user says no at the provider: its error comes back as a problem.
    let (b, cb) = staff_login(&w, AtProvider::Abort).await;
    assert!(cb.contains("error=access_denied"), "{cb}");
    let (status, _, body) = finish(&b, &cb).await;
    assert_eq!(status, 403, "{body:?}");
    assert!(
        body["detail"].as_str().unwrap().contains("access_denied"),
        "{body:?}"
    );
}

#[tokio::test]
async fn the_state_is_single_use_and_bound_to_the_browser_that_started() {
    let w = world("id_token").await;
    let (a, cb) = staff_login(&w, AtProvider::LogIn("staff")).await;

    // Another browser with the same callback URL (no pre-auth cookie).
    let other = browser();
    let (status, _, body) = finish(&other, &cb).await;
    assert_eq!(status, 403, "{body:?}");
    assert_eq!(session(&other, &w).await.0, 401);

    // A tampered state.
    let mut url = url::Url::parse(&cb).unwrap();
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let tampered: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| {
            if k == "state" {
                (k.clone(), format!("{}x", &v[..v.len() - 1]))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(&tampered);
    let (status, _, body) = finish(&a, url.as_str()).await;
    assert_eq!(status, 400, "{body:?}");
    // No state at all.
    let (status, _, _) = finish(
        &a,
        &format!("{}/api/v1/auth/oidc/callback?code=abc", w.plane.base),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(session(&a, &w).await.0, 401);

    // The refusals above did not spoil the real login...
    let (status, _, body) = finish(&a, &cb).await;
    assert_eq!(status, 303, "{body:?}");
    assert_eq!(session(&a, &w).await.0, 200);
    // ...which works once: the same callback again is refused.
    let (status, _, body) = finish(&a, &cb).await;
    assert_eq!(status, 400, "{body:?}");
    let again = browser();
    assert_eq!(finish(&again, &cb).await.0, 400);
}

#[tokio::test]
async fn email_claims_from_userinfo_and_bad_start_requests() {
    // The provider keeps e-mail claims out of the ID token (the spec's
    // default for the code flow): they come from the UserInfo endpoint.
    let w = world("userinfo").await;
    let (b, cb) = staff_login(&w, AtProvider::LogIn("staff")).await;
    let (status, _, body) = finish(&b, &cb).await;
    assert_eq!(status, 303, "{body:?}");
    let (_, s) = session(&b, &w).await;
    assert_eq!(s["id"], w.staff_id);
    let (b, cb) = staff_login(&w, AtProvider::LogIn("unverified")).await;
    assert_eq!(finish(&b, &cb).await.0, 403);

    // Start: unknown tenant or event, tenant without OIDC, missing tenant.
    let b = browser();
    let get = |q: String| {
        let b = b.clone();
        let base = w.plane.base.clone();
        async move {
            let res = b
                .get(format!("{base}/api/v1/auth/oidc/start?{q}"))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            assert_eq!(
                res.headers().get("content-type").unwrap(),
                "application/problem+json"
            );
            status
        }
    };
    assert_eq!(get("tenant=t_nope".into()).await, 404);
    assert_eq!(get(format!("tenant={}&event=e_nope", w.tenant)).await, 404);
    assert_eq!(get(String::new()).await, 400);
    let (other, _) = w.plane.tenant("Globex").await;
    assert_eq!(get(format!("tenant={other}")).await, 404);
}

/// A TCP listener on 127.0.0.1 that counts who connects: where a provider
/// request would land if the control plane could be aimed at its own host.
async fn knock_counter() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let knocks = Arc::new(AtomicUsize::new(0));
    let counted = knocks.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, knocks)
}

#[tokio::test]
async fn an_issuer_at_a_private_address_is_refused_when_set() {
    // The default: oidc_allow_private_addresses off.
    let plane = start().await;
    let (_, mut owner) = plane.tenant("Acme").await;
    let (port, knocks) = knock_counter().await;
    for (issuer, says) in [
        (
            format!("http://127.0.0.1:{port}"),
            "oidc.issuer must be https",
        ),
        (
            format!("http://localhost:{port}"),
            "oidc.issuer must be https",
        ),
        (
            format!("https://127.0.0.1:{port}"),
            "oidc.issuer is not a public address (127.0.0.1)",
        ),
        (format!("https://127.1:{port}"), "is not a public address"),
        (format!("https://[::1]:{port}"), "is not a public address"),
        (
            format!("https://[::ffff:127.0.0.1]:{port}"),
            "is not a public address",
        ),
        (format!("https://localhost:{port}"), "localhost"),
        ("https://10.0.0.1/".into(), "is not a public address"),
        ("https://192.168.1.1/".into(), "is not a public address"),
        ("https://100.64.0.1/".into(), "is not a public address"),
        ("https://[fd00::1]/".into(), "is not a public address"),
        (
            "https://169.254.169.254/latest/meta-data/".into(),
            "is not a public address (169.254.169.254)",
        ),
        ("https://[fe80::1]/".into(), "is not a public address"),
        ("https://metadata.google.internal/".into(), "cloud metadata"),
    ] {
        let r = owner
            .patch(
                "/api/v1/tenant",
                json!({"oidc": {"issuer": issuer, "client_id": CLIENT_ID}}),
            )
            .await;
        assert_eq!(r.0, 400, "{issuer}: {:?}", r.1);
        let detail = r.1["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{issuer}: {detail}");
    }
    let r = owner.get("/api/v1/tenant").await;
    assert!(r.1["oidc"].is_null(), "nothing was set: {:?}", r.1);
    // A public https issuer is taken (nothing is fetched when it is set).
    let r = owner
        .patch(
            "/api/v1/tenant",
            json!({"oidc": {"issuer": "https://login.example.com/", "client_id": CLIENT_ID}}),
        )
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(knocks.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn no_provider_request_reaches_a_private_address() {
    let plane = start().await;
    let (tenant, _) = plane.tenant("Acme").await;
    let (port, knocks) = knock_counter().await;
    let b = browser();
    // Issuers whose discovery (and keys) would be fetched from the listener,
    // stored as if set before the check existed, or while the flag was on:
    // each login start answers why it will not go there.
    for (issuer, status, says) in [
        (
            format!("https://127.0.0.1:{port}"),
            400,
            "is not a public address",
        ),
        (format!("https://localhost:{port}/realm"), 400, "localhost"),
        (
            format!("https://[::ffff:127.0.0.1]:{port}"),
            400,
            "is not a public address",
        ),
        (format!("http://127.0.0.1:{port}"), 400, "must be https"),
    ] {
        let mut t = plane.repo.tenant(&tenant).unwrap();
        t.settings.oidc = Some(strom_control_plane::model::OidcSettings {
            issuer: issuer.clone(),
            client_id: CLIENT_ID.into(),
            client_secret: None,
        });
        plane.repo.update_tenant("test", &t).unwrap();
        let res = b
            .get(format!(
                "{}/api/v1/auth/oidc/start?tenant={tenant}",
                plane.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "{issuer}");
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
        let body: Value = res.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("the tenant's OIDC issuer") && detail.contains(says),
            "{issuer}: {detail}"
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        knocks.load(Ordering::SeqCst),
        0,
        "the control plane connected to a loopback listener"
    );
}

/// The package directory at run time (cargo sets it for tests); the
/// compile-time one can name another checkout that shares the target dir.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

//! The whole product through `strom dev` (control plane, origin, edge): an
//! owner logs in by magic link, a participant registers with consent and
//! logs in by magic link, gets a playback token and watches over MoQT and
//! HLS; wrong credentials are refused at the origin and the edge; the owner
//! deactivates the participant and their MoQT session closes within 5 s;
//! re-issuing the stream's credential ends the running push. Afterwards the
//! logs are searched for the participant's e-mail address and name.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strom_tests::*;

/// A browser-like client: cookies by hand, CSRF token from the session.
struct Web {
    base: String,
    cookies: Vec<(String, String)>,
    csrf: Option<String>,
}

impl Web {
    fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').into(),
            cookies: vec![],
            csrf: None,
        }
    }

    fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(20))
            .build();
        let mut req = agent.request(method, &format!("{}{path}", self.base));
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        if !cookie.is_empty() {
            req = req.set("cookie", &cookie);
        }
        if let Some(csrf) = &self.csrf {
            req = req.set("x-csrf-token", csrf);
        }
        let res = match body {
            Some(b) => req
                .set("content-type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        let res = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        for v in res.all("set-cookie") {
            let (kv, _) = v.split_once(';').unwrap_or((v, ""));
            if let Some((k, v)) = kv.split_once('=') {
                self.cookies.retain(|(n, _)| n != k);
                if !v.is_empty() {
                    self.cookies.push((k.into(), v.into()));
                }
            }
        }
        let status = res.status();
        let text = res.into_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if let Some(csrf) = value.get("csrf").and_then(|c| c.as_str()) {
            self.csrf = Some(csrf.into());
        }
        (status, value)
    }
}

/// How many mails to `to` the dev outbox holds.
fn mails_to(outbox: &Path, to: &str) -> usize {
    std::fs::read_dir(outbox)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter(|text| mail::is_to(text, to))
                .count()
        })
        .unwrap_or(0)
}

/// The newest mail to `to` in the dev outbox once there are more than
/// `before` (mails go out in the background): (link secret, code).
fn mail_link(outbox: &Path, to: &str, before: usize) -> (String, String) {
    wait_until(Duration::from_secs(10), "login mail", || {
        if mails_to(outbox, to) <= before {
            return None;
        }
        let mut files: Vec<_> = std::fs::read_dir(outbox)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        files.sort();
        files.into_iter().rev().find_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            if !mail::is_to(&text, to) {
                return None;
            }
            mail::magic_link(&text)
        })
    })
}

fn login_by_link(
    web: &mut Web,
    outbox: &Path,
    tenant: &str,
    event: Option<&str>,
    email: &str,
) -> Value {
    let before = mails_to(outbox, email);
    let r = web.call(
        "POST",
        "/api/v1/auth/magic-link",
        Some(json!({"tenant": tenant, "event": event, "email": email})),
    );
    assert_eq!(r.0, 202, "{:?}", r.1);
    let (token, _) = mail_link(outbox, email, before);
    let r = web.call(
        "POST",
        "/api/v1/auth/magic-link/consume",
        Some(json!({"token": token})),
    );
    assert_eq!(r.0, 200, "{:?}", r.1);
    r.1
}

const EMAIL: &str = "erika.mustermann@example.com";
const NAME: &str = "Erika Mustermann";

#[test]
fn participants_tokens_and_revocation_through_strom_dev() {
    let _serial = serial();
    participants_tokens_and_revocation(&Dev::start());
}

/// The same journey with the control plane's records in PostgreSQL
/// (`strom dev --postgres`), a server of Debian's started for the test.
#[test]
fn participants_tokens_and_revocation_through_strom_dev_on_postgresql() {
    let _serial = serial();
    let pg = postgres::Postgres::start();
    let url = pg.database("dev");
    let dev = Dev::start_with(&["--postgres", &url]);
    let embedded = dev.dir.path().join("control-plane/db");
    participants_tokens_and_revocation(&dev);
    // The participant went into PostgreSQL, not into a RocksDB beside it.
    let participants: u64 = pg
        .sql_in(
            "dev",
            "SELECT count(*) FROM strom_kv WHERE tbl = 'participants'",
        )
        .trim()
        .parse()
        .unwrap();
    assert!(participants >= 1, "{participants} participants stored");
    assert!(!embedded.exists(), "strom dev opened RocksDB too");
}

fn participants_tokens_and_revocation(dev: &Dev) {
    let dir = dev.dir.path();
    let outbox = Path::new(dev.endpoints["outbox"].as_str().unwrap()).to_owned();
    let (tenant, event) = (dev.get("tenant"), dev.get("event"));
    let mut owner = Web::new(&dev.get("control_plane_url"));
    let session = login_by_link(&mut owner, &outbox, &tenant, None, &dev.get("owner_email"));
    assert_eq!(session["role"], "owner");

    // A participant registers with consent, logs in by magic link, gets a token.
    let mut viewer = Web::new(&dev.get("control_plane_url"));
    let r = viewer.call(
        "GET",
        &format!("/api/v1/public/{tenant}/events/{event}"),
        None,
    );
    assert_eq!(r.0, 200, "{:?}", r.1);
    let r = viewer.call("POST", &format!("/api/v1/public/{tenant}/events/{event}/register"), Some(json!({"email": EMAIL, "name": NAME, "fields": {"company": "Musterfirma"}, "consent": false})));
    assert_eq!(r.0, 400, "no registration without consent");
    let r = viewer.call("POST", &format!("/api/v1/public/{tenant}/events/{event}/register"), Some(json!({"email": EMAIL, "name": NAME, "fields": {"company": "Musterfirma"}, "consent": true})));
    assert_eq!(r.0, 202, "{:?}", r.1);
    let (secret, _) = mail_link(&outbox, EMAIL, 0);
    let me = viewer.call(
        "POST",
        "/api/v1/auth/magic-link/consume",
        Some(json!({"token": secret})),
    );
    assert_eq!(me.0, 200, "{:?}", me.1);
    let participant = me.1["id"].as_str().unwrap().to_owned();
    let export = viewer.call("GET", "/api/v1/me", None).1;
    assert_eq!(
        export["consents"][0]["given"], true,
        "consent recorded: {export}"
    );
    let r = viewer.call(
        "POST",
        &format!("/api/v1/events/{event}/playback-token"),
        Some(json!({})),
    );
    assert_eq!(r.0, 200, "{:?}", r.1);
    let token = r.1["token"].as_str().unwrap().to_owned();

    // Publishing: a wrong credential is refused, the stream's credential works.
    let server = dev.get("rtmp_server_url");
    let mut wrong = push(&format!("{server}/not-a-credential"), 10, dir, "push-wrong");
    assert!(
        wrong
            .wait(Duration::from_secs(20))
            .is_some_and(|s| !s.success()),
        "wrong credential refused"
    );
    let _push = push(&dev.get("rtmp_publish_url"), 90, dir, "push");
    let (moq, ns, cert) = (
        dev.get("moq_url"),
        dev.get("namespace"),
        dev.get("cert_sha256"),
    );
    let edge_http = dev.get("hls_url");
    let master = edge_http.split('?').next().unwrap().to_owned();
    wait_until(
        Duration::from_secs(30),
        "HLS with the participant's token",
        || {
            http_text(&format!("{master}?token={token}"))
                .filter(|t| t.contains("#EXT-X-STREAM-INF"))
        },
    );

    // Viewers: no token, a forged token, another event's token are refused (MoQT and HLS).
    assert_eq!(http_get(&master).unwrap().0, 401, "HLS without token");
    let mut forged = token.clone();
    forged.replace_range(20..24, "AAAA");
    assert_eq!(
        http_get(&format!("{master}?token={forged}")).unwrap().0,
        403,
        "forged token"
    );
    let f = &time::format_description::well_known::Rfc3339;
    let start = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let other = owner.call("POST", "/api/v1/events", Some(json!({
        "title": "Other event", "starts_at": start.format(f).unwrap(), "ends_at": (start + time::Duration::days(1)).format(f).unwrap(), "access": "open"
    })));
    assert_eq!(other.0, 201, "{:?}", other.1);
    let other_token = owner.call(
        "POST",
        &format!(
            "/api/v1/events/{}/playback-token",
            other.1["id"].as_str().unwrap()
        ),
        Some(json!({})),
    );
    assert_eq!(other_token.0, 200, "{:?}", other_token.1);
    let other_token = other_token.1["token"].as_str().unwrap().to_owned();
    assert_eq!(
        http_get(&format!("{master}?token={other_token}"))
            .unwrap()
            .0,
        403,
        "other event's token"
    );
    for (name, t) in [
        ("none", None),
        ("forged", Some(forged.as_str())),
        ("other-event", Some(other_token.as_str())),
    ] {
        let file = dir.join(format!("refused-{name}.mp4"));
        let mut w = watch_with_token(
            &moq,
            &ns,
            &cert,
            5.0,
            &file,
            dir,
            &format!("watch-{name}"),
            t,
        );
        w.wait(Duration::from_secs(20));
        assert!(
            std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) < 1000,
            "{name}: no media for a refused viewer"
        );
    }

    // The participant watches over MoQT; the owner deactivates them: closed within 5 s.
    let file = dir.join("viewer.mp4");
    let mut w = watch_with_token(
        &moq,
        &ns,
        &cert,
        60.0,
        &file,
        dir,
        "watch-viewer",
        Some(&token),
    );
    wait_until(Duration::from_secs(20), "viewer receiving", || {
        (std::fs::metadata(&file).ok()?.len() > 200_000).then_some(())
    });
    let revoked_at = Instant::now();
    let r = owner.call(
        "POST",
        &format!("/api/v1/events/{event}/participants/{participant}/status"),
        Some(json!({"status": "deactivated"})),
    );
    assert_eq!(r.0, 200, "{:?}", r.1);
    let closed = w
        .wait(Duration::from_secs(10))
        .map(|_| revoked_at.elapsed());
    let size_at_close = std::fs::metadata(&file).unwrap().len();
    eprintln!("revocation to session close: {closed:?}");
    assert!(
        closed.is_some_and(|d| d <= Duration::from_secs(5)),
        "session closed after {closed:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), size_at_close);
    assert_eq!(
        http_get(&format!("{master}?token={token}")).unwrap().0,
        403,
        "revoked token refused over HLS"
    );
    let r = viewer.call(
        "POST",
        &format!("/api/v1/events/{event}/playback-token"),
        Some(json!({})),
    );
    assert!(
        r.0 == 401 || r.0 == 403,
        "a deactivated participant gets no new token: {:?}",
        r
    );

    // Re-issuing the stream's credential ends the running push.
    let r = owner.call(
        "POST",
        &format!("/api/v1/events/{event}/streams/main/credential"),
        Some(json!({})),
    );
    assert_eq!(r.0, 200, "{:?}", r.1);
    let mut old = push(&dev.get("rtmp_publish_url"), 10, dir, "push-old-key");
    assert!(
        old.wait(Duration::from_secs(20))
            .is_some_and(|s| !s.success()),
        "revoked credential refused"
    );

    // No personal data in any log of the run.
    let mut logs = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "log") {
            logs.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    let lower = logs.to_lowercase();
    for needle in [
        "erika",
        "mustermann",
        "musterfirma",
        "owner@dev.strom.invalid",
    ] {
        assert!(!lower.contains(needle), "{needle} appears in the logs");
    }
    assert!(
        logs.contains(&participant),
        "the logs do name the participant pseudonymously"
    );
}

fn strom_cp(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(strom_bin())
        .arg("--config")
        .arg(dir.join("strom.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("control-plane")
        .args(args)
        .output()
        .expect("running strom control-plane");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The operator's CLI: master key, first tenant, relay credential, audit
/// verification that finds an edited record, backup and restore.
#[test]
fn operator_cli_finds_an_edited_audit_record_and_restores_a_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key_file = dir.join("master.key");
    std::fs::write(
        dir.join("strom.toml"),
        format!(
            "[control_plane]\nmaster_key_file = \"{}\"\n",
            key_file.display()
        ),
    )
    .unwrap();
    let (ok, out) = strom_cp(
        dir,
        &[
            "init",
            "--tenant",
            "Acme",
            "--owner-email",
            "a@acme.example",
            "--owner-name",
            "Anna",
        ],
    );
    assert!(!ok, "no master key yet, none generated outside dev: {out}");
    let (ok, out) = strom_cp(
        dir,
        &["master-key", "new", "--file", key_file.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    let (ok, out) = strom_cp(
        dir,
        &["master-key", "new", "--file", key_file.to_str().unwrap()],
    );
    assert!(!ok, "an existing key file is never overwritten: {out}");
    let (ok, out) = strom_cp(
        dir,
        &[
            "init",
            "--tenant",
            "Acme",
            "--owner-email",
            "a@acme.example",
            "--owner-name",
            "Anna",
        ],
    );
    assert!(ok, "{out}");
    let tenant = out
        .lines()
        .find_map(|l| l.strip_prefix("tenant "))
        .unwrap()
        .trim()
        .to_owned();
    let (ok, out) = strom_cp(
        dir,
        &[
            "relay-credential",
            "issue",
            "--role",
            "edge",
            "--subject",
            "edge-fra-1",
        ],
    );
    assert!(ok && out.starts_with("v4.public."), "{out}");
    let (ok, out) = strom_cp(dir, &["audit", "verify"]);
    assert!(ok && out.contains("chain intact"), "{out}");
    let backup = dir.join("backup");
    let (ok, out) = strom_cp(dir, &["backup", "--to", backup.to_str().unwrap()]);
    assert!(ok, "{out}");

    // Someone with disk access rewrites who created the tenant.
    {
        use strom_control_plane::store::{Batch, RocksStore, Store, Table};
        let db = strom_control_plane::Paths::new(&dir.join("data")).db();
        let store = RocksStore::open(&db, &Table::DATA).unwrap();
        let key = format!("{tenant}/{:016}", 1);
        let mut record: Value =
            serde_json::from_slice(&store.get(Table::Audit, key.as_bytes()).unwrap().unwrap())
                .unwrap();
        record["actor"] = json!("u_someoneelse");
        let mut b = Batch::default();
        b.put(Table::Audit, key, serde_json::to_vec(&record).unwrap());
        store.write(b).unwrap();
    }
    let (ok, out) = strom_cp(dir, &["audit", "verify"]);
    assert!(!ok, "an edited record fails verification: {out}");
    assert!(
        out.contains("CHAIN BROKEN") && out.contains("Edited { seq: 1 }"),
        "{out}"
    );

    let (ok, out) = strom_cp(dir, &["restore", "--from", backup.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = strom_cp(dir, &["audit", "verify"]);
    assert!(ok && out.contains("chain intact"), "after restore: {out}");
}

/// GET `path` at the control plane with a bearer token: the status.
fn bearer_status(base: &str, path: &str, token: &str) -> u16 {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    match agent
        .get(&format!("{}{path}", base.trim_end_matches('/')))
        .set("authorization", &format!("Bearer {token}"))
        .call()
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{path}: {e}"),
    }
}

/// The operator's tools on a running control plane (its socket in the data
/// directory): relay credentials issued, listed and revoked — refused at
/// once — and the signing key rotated with no overlap, which ends every
/// credential signed before.
#[test]
fn the_operator_revokes_relays_and_rotates_the_signing_key_while_it_runs() {
    let _serial = serial();
    operator_tools_while_it_runs(Dev::start());
}

/// The same on PostgreSQL: the operator's tools reach the running control
/// plane through its socket, whichever store it uses.
#[test]
fn the_operator_revokes_relays_and_rotates_the_signing_key_on_postgresql() {
    let _serial = serial();
    let pg = postgres::Postgres::start();
    let url = pg.database("dev");
    operator_tools_while_it_runs(Dev::start_with(&["--postgres", &url]));
}

fn operator_tools_while_it_runs(dev: Dev) {
    let dir = dev.dir.path().to_owned();
    let cp = dev.get("control_plane_url");
    let strom = |args: &[&str]| {
        let out = std::process::Command::new(strom_bin())
            .arg("--data-dir")
            .arg(&dir)
            .arg("control-plane")
            .args(args)
            .output()
            .expect("running strom");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let list = strom(&["relay-credential", "list"]);
    assert!(
        list.contains("dev-origin") && list.contains("dev-edge"),
        "{list}"
    );
    let credential = strom(&[
        "relay-credential",
        "issue",
        "--role",
        "edge",
        "--subject",
        "edge-extra",
    ]);
    let credential = credential.trim();
    let feed = "/api/v1/relay/revocations?after=0";
    assert_eq!(bearer_status(&cp, feed, credential), 200);
    let revoked = strom(&["relay-credential", "revoke", "--subject", "edge-extra"]);
    assert!(revoked.contains("edge-extra"), "{revoked}");
    assert_eq!(bearer_status(&cp, feed, credential), 401, "refused at once");
    let list = strom(&["relay-credential", "list"]);
    let line = list.lines().find(|l| l.starts_with("edge-extra")).unwrap();
    assert!(!line.contains(" - "), "revocation time listed: {line}");

    // A leaked signing key: rotate with no overlap.
    let fresh = strom(&[
        "relay-credential",
        "issue",
        "--role",
        "edge",
        "--subject",
        "edge-extra",
    ]);
    assert_eq!(bearer_status(&cp, feed, fresh.trim()), 200);
    let rotated = strom(&["signing-key", "rotate", "--overlap", "0"]);
    assert!(
        rotated.contains("issue these credentials again"),
        "{rotated}"
    );
    assert!(rotated.contains("edge-extra"), "{rotated}");
    assert_eq!(
        bearer_status(&cp, feed, fresh.trim()),
        401,
        "old key gone at once"
    );
    let keys = strom(&["signing-key", "list"]);
    assert_eq!(keys.lines().count(), 2, "{keys}");
    assert_eq!(
        keys.lines().filter(|l| l.ends_with("current")).count(),
        1,
        "{keys}"
    );
    let reissued = strom(&[
        "relay-credential",
        "issue",
        "--role",
        "edge",
        "--subject",
        "edge-extra",
    ]);
    assert_eq!(bearer_status(&cp, feed, reissued.trim()), 200);
}

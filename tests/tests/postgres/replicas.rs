//! Two control-plane replicas as real processes on one PostgreSQL, reached
//! over HTTP the way an attacker, a participant and an edge reach them:
//! wrong passwords sent to each replica in turn lock the account on both,
//! and a participant deactivated through one replica loses their MoQT
//! session within 5 s at an edge that long-polls only the other.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strom_control_plane::model::{Principal, Role};
use strom_control_plane::repo::Repo;
use strom_tests::balancer::Balancer;
use strom_tests::postgres::Postgres;
use strom_tests::{http_get, push, wait_until, watch_with_token, Service};
use strom_token::Grant;

use super::storm::{Mails, ReplicaProcess, Storm, Tally};

const OWNER: &str = "owner@acme.example";
const PASSWORD: &str = "Harbour lights at 7 past nine";

/// A JSON POST to one replica: the status, the body and the session cookie
/// it set, if any.
fn post(
    base: &str,
    path: &str,
    session: Option<(&str, &str)>,
    body: &Value,
) -> (u16, Value, Option<String>) {
    let mut req = ureq::post(&format!("{base}{path}")).set("Content-Type", "application/json");
    if let Some((cookie, csrf)) = session {
        req = req
            .set("Cookie", &format!("strom_session={cookie}"))
            .set("x-csrf-token", csrf);
    }
    let res = match req.send_string(&body.to_string()) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {base}{path}: {e}"),
    };
    let status = res.status();
    let cookie = res.all("set-cookie").into_iter().find_map(|c| {
        c.strip_prefix("strom_session=")?
            .split(';')
            .next()
            .map(str::to_owned)
    });
    let text = res.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        cookie,
    )
}

/// A tenant with an owner who has chosen their own password (so the login
/// opens a full session), on the test's own replica of the installation.
fn tenant_with_owner(repo: &Repo) -> (String, Principal) {
    let tenant = repo.create_tenant("Acme").unwrap().id;
    let (user, _) = repo
        .create_user(
            "system",
            &tenant,
            OWNER,
            "Owner",
            Role::Owner,
            Some("Initial 4 harbour lights"),
        )
        .unwrap();
    let policy = repo.tenant(&tenant).unwrap().settings.password_policy;
    let owner = Principal::Staff {
        user: user.id,
        role: Role::Owner,
    };
    repo.set_password(&tenant, &owner, PASSWORD, &policy, None)
        .unwrap();
    (tenant, owner)
}

fn replicas(dir: &Path, url: &str) -> ([ReplicaProcess; 2], [String; 2]) {
    let master_key = dir.join("master.key");
    let ports = [strom_tests::free_tcp_port(), strom_tests::free_tcp_port()];
    let a = ReplicaProcess::start("replica-a", dir, url, &master_key, ports[0]);
    let b = ReplicaProcess::start("replica-b", dir, url, &master_key, ports[1]);
    ([a, b], ports.map(|p| format!("http://127.0.0.1:{p}")))
}

/// Three wrong passwords, sent to replica A, B and A again, lock the
/// account: the right password is then refused on both, before it is
/// looked at, and so is a fourth wrong one.
#[test]
fn wrong_passwords_sent_to_alternate_replicas_lock_the_account_on_both() {
    let pg = Postgres::start();
    let url = pg.database("lockout_http");
    let dir = tempfile::tempdir().unwrap();
    let repo = super::replica(&url, dir.path());
    let (tenant, owner) = tenant_with_owner(&repo);
    let (_replicas, [a, b]) = replicas(dir.path(), &url);
    let login = |base: &str, password: &str| {
        post(
            base,
            "/api/v1/auth/login",
            None,
            &json!({"tenant": tenant, "email": OWNER, "password": password}),
        )
    };
    // The account is real and both replicas let its owner in.
    for base in [&a, &b] {
        let (status, body, cookie) = login(base, PASSWORD);
        assert_eq!(status, 200, "{base}: {body}");
        assert!(cookie.is_some());
    }
    for (i, base) in [&a, &b, &a].into_iter().enumerate() {
        let (status, body, _) = login(base, "Not the password 1");
        assert_eq!(status, 401, "wrong password {} on {base}: {body}", i + 1);
    }
    for base in [&b, &a] {
        let (status, body, cookie) = login(base, PASSWORD);
        assert_eq!(
            status, 423,
            "the right password after three wrong ones on {base}: {body}"
        );
        assert!(cookie.is_none());
        let (status, _, _) = login(base, "Not the password 2");
        assert_eq!(status, 423, "a fourth wrong password on {base}");
    }
    assert!(
        matches!(
            repo.reserve_attempt(&tenant, &owner),
            Err(strom_control_plane::repo::RepoError::Locked(Some(_)))
        ),
        "the stored credential is locked"
    );
}

/// A participant joins through the load balancer and watches at an edge
/// whose control-plane link names replica B only; the owner deactivates
/// them through replica A. B takes the revocation up from the database and
/// answers the edge's long poll: the session closes within 5 s.
#[test]
fn a_participant_deactivated_on_one_replica_loses_the_edge_session_through_the_other() {
    let _serial = strom_tests::serial();
    let pg = Postgres::start();
    let url = pg.database("revoke_http");
    let shared = tempfile::tempdir().unwrap();
    let dir = shared.path();
    let repo = super::replica(&url, dir);
    let (tenant, _) = tenant_with_owner(&repo);
    let opened = strom_control_plane::repo::now() - time::Duration::minutes(5);
    let mut event = strom_control_plane::model::Event::open(
        &tenant,
        "Town hall",
        opened,
        opened + time::Duration::hours(2),
    );
    event.privacy_notice = "We process your address to let you in.".into();
    let event = repo.create_event("system", event).unwrap().id;
    repo.create_stream("system", &tenant, &event, "main")
        .unwrap();
    let (processes, [a, b]) = replicas(dir, &url);

    // Origin on A, edge on B only.
    let credential =
        |role, name| strom_control_plane::mint_relay_credential(&repo, role, name).unwrap();
    let link = |base: &str, credential: String, section: &str| {
        format!("[{section}.control_plane]\nurl = \"{base}/\"\ncredential = \"{credential}\"\n")
    };
    let origin = Service::origin_with(
        "origin",
        dir,
        &[],
        &link(
            &a,
            credential(strom_token::RelayRole::Origin, "origin-1"),
            "origin",
        ),
    );
    let edge = Service::edge_with(
        "edge",
        dir,
        &origin,
        &link(
            &b,
            credential(strom_token::RelayRole::Edge, "edge-1"),
            "edge",
        ),
    );
    let publish = repo
        .mint_at(
            &Grant::publish("s_broadcaster", &tenant, &event, "main", 3600),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap()
        .0;
    let _pusher = push(
        &format!(
            "rtmp://127.0.0.1:{}/live/{publish}",
            origin.rtmp_port.unwrap()
        ),
        90,
        dir,
        "ffmpeg",
    );

    // The participant registers, logs in and gets a playback token through
    // the balancer, whichever replica each step lands on.
    let balancer = Balancer::start(
        [&a, &b]
            .iter()
            .map(|base| {
                base.trim_start_matches("http://")
                    .parse::<SocketAddr>()
                    .unwrap()
            })
            .collect(),
    );
    let mails = Mails::watch(vec![
        processes[0].outbox("replica-a"),
        processes[1].outbox("replica-b"),
    ]);
    let storm = Storm {
        base: balancer.url(),
        tenant: tenant.clone(),
        event: event.clone(),
        mails,
        tally: Mutex::new(Tally::default()),
    };
    let viewer = "viewer@acme.example";
    let joined = storm
        .join(&ureq::AgentBuilder::new().build(), viewer)
        .expect("the participant joins");
    let participant = repo
        .participant_by_email(&tenant, &event, viewer)
        .unwrap()
        .id;
    let ns = format!("{tenant}/{event}/main");
    let hls = |token: &str| {
        http_get(&edge.http_url(&format!("/hls/{ns}/master.m3u8?token={token}")))
            .map(|(status, _)| status)
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(30), "the broadcast at the edge", || {
        (hls(&joined.token) == 200).then_some(())
    });
    let file = dir.join("viewer.mp4");
    let mut watcher = watch_with_token(
        &edge.moq_url(),
        &ns,
        &edge.cert_sha256,
        60.0,
        &file,
        dir,
        "watch-viewer",
        Some(&joined.token),
    );
    wait_until(Duration::from_secs(20), "media at the viewer", || {
        (std::fs::metadata(&file).ok()?.len() > 200_000).then_some(())
    });

    // The owner, logged in on A, deactivates the participant there.
    let (status, session, cookie) = post(
        &a,
        "/api/v1/auth/login",
        None,
        &json!({"tenant": tenant, "email": OWNER, "password": PASSWORD}),
    );
    assert_eq!(status, 200, "{session}");
    let (cookie, csrf) = (
        cookie.unwrap(),
        session["csrf"].as_str().unwrap().to_owned(),
    );
    let revoked_at = Instant::now();
    let (status, body, _) = post(
        &a,
        &format!("/api/v1/events/{event}/participants/{participant}/status"),
        Some((&cookie, &csrf)),
        &json!({"status": "deactivated"}),
    );
    assert_eq!(status, 200, "{body}");
    let closed = watcher
        .wait(Duration::from_secs(15))
        .map(|s| (s, revoked_at.elapsed()));
    eprintln!("deactivated on replica A → session closed at the edge on B: {closed:?}");
    let (exit, took) = closed.expect("the participant's session is closed");
    assert!(
        !exit.success(),
        "the watch ends because its session was closed"
    );
    assert!(took <= Duration::from_secs(5), "closed after {took:?}");
    assert_eq!(hls(&joined.token), 403, "the token is refused from now on");
    let log = edge.proc.log_text();
    assert!(log.contains("credential revoked"), "{log}");
}

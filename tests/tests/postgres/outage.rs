//! Viewers through a complete outage of every control-plane replica:
//! `strom watch`, HLS and a browser player keep playing, a restarted edge
//! takes up the control plane's last word, and the grace ends when a
//! replica answers.

use super::*;

/// One control-plane replica served in a runtime of its own on a fixed
/// port; stopping drops the runtime, as a machine dies (connections cut,
/// long polls unanswered), and starting again binds the same port.
struct Replica {
    port: u16,
    stop: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Replica {
    fn start(
        config: &ControlPlaneConfig,
        dir: &std::path::Path,
        port: u16,
    ) -> (Replica, [String; 2]) {
        let mut config = config.clone();
        config.listen = format!("127.0.0.1:{port}").parse().unwrap();
        let dir = dir.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let cp = rt
                .block_on(strom_control_plane::ControlPlane::load(config, &dir))
                .expect("a replica");
            let edge = cp
                .relay_credential(strom_control_plane::RelayRole::Edge, "edge-1")
                .unwrap();
            let origin = cp
                .relay_credential(strom_control_plane::RelayRole::Origin, "origin-1")
                .unwrap();
            let port = cp.local_addr().unwrap().port();
            rt.spawn(cp.run());
            ready_tx.send((port, [edge, origin])).unwrap();
            let _ = stop_rx.recv();
            rt.shutdown_timeout(std::time::Duration::from_millis(200));
        });
        let (port, credentials) = ready_rx.recv().expect("the replica started");
        (
            Replica {
                port,
                stop: Some((stop_tx, thread)),
            },
            credentials,
        )
    }

    fn stop(&mut self) {
        if let Some((tx, thread)) = self.stop.take() {
            let _ = tx.send(());
            thread.join().unwrap();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Viewers keep watching through a complete control-plane outage: a play
/// token that expires while no replica answers is still accepted by the
/// edge (HLS requests, a MoQT session opened anew), one that had expired
/// before is not, a revocation the edge holds still applies, and once a
/// replica answers again expiry is as minted. The edge's metrics say so.
#[test]
fn viewers_keep_watching_while_no_control_plane_replica_answers() {
    viewers_through_an_outage(0);
}

/// The same through a 30-minute outage (`STROM_OUTAGE_SECS` to change
/// it), checking every 30 s: a soak for BENCHMARKS.md,
/// `cargo test -p strom-tests --test postgres -- --ignored --nocapture outage_soak`.
#[test]
#[ignore]
fn outage_soak() {
    let secs = std::env::var("STROM_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800);
    viewers_through_an_outage(secs);
}

/// An outage of every control-plane replica lasting past a play token's
/// expiry, and `longer` seconds more.
fn viewers_through_an_outage(longer: u64) {
    use std::time::{Duration, Instant};
    use strom_tests::{http_get, push, wait_until, watch_with_token, Service};
    use strom_token::{Action, Grant, RevocationKind};

    let _serial = strom_tests::serial();
    let pg = Postgres::start();
    let url = pg.database("outage");
    let shared = tempfile::tempdir().unwrap();
    let dir = shared.path();
    // The replica's port is chosen first: the portal's pages call the API
    // at the public URL.
    let cp_port = strom_tests::free_tcp_port();
    let config = ControlPlaneConfig {
        public_url: format!("http://127.0.0.1:{cp_port}/").parse().unwrap(),
        secure_cookies: false,
        ..super::replica_config(&url, dir)
    };
    let cp_dir = dir.join("cp");
    std::fs::create_dir_all(&cp_dir).unwrap();
    // The test's own replica of the same installation mints and revokes.
    let minting = replica(&url, dir);
    // A real tenant and event: a browser watches it through the portal.
    let tenant = minting.create_tenant("Acme").unwrap().id;
    let opened = strom_control_plane::repo::now() - time::Duration::minutes(5);
    let event = minting
        .create_event(
            "system",
            strom_control_plane::model::Event::open(
                &tenant,
                "Town hall",
                opened,
                opened + time::Duration::hours(3),
            ),
        )
        .unwrap()
        .id;
    minting
        .create_stream("system", &tenant, &event, "main")
        .unwrap();
    let (mut serving, [edge_credential, origin_credential]) =
        Replica::start(&config, &cp_dir, cp_port);
    let cp_url = format!("http://127.0.0.1:{}/", serving.port);
    let link = |credential: &str, section: &str| {
        format!("[{section}.control_plane]\nurl = \"{cp_url}\"\ncredential = \"{credential}\"\n")
    };
    let origin = Service::origin_with("origin", dir, &[], &link(&origin_credential, "origin"));
    let edge = Service::edge_with("edge", dir, &origin, &link(&edge_credential, "edge"));

    let ns = &format!("{tenant}/{event}/main");
    let mint = |subject: &str, action: Action, lifetime_secs: i64, at: time::OffsetDateTime| {
        let grant = Grant {
            subject: subject.into(),
            tenant: tenant.clone(),
            event: event.clone(),
            // A publish token names its stream.
            stream: (action == Action::Publish).then(|| "main".to_owned()),
            action,
            lifetime_secs,
            not_after: None,
            role: None,
            via: None,
        };
        minting.mint_at(&grant, at).unwrap().0
    };
    let now = time::OffsetDateTime::now_utc;
    let publish = mint("s_broadcaster", Action::Publish, 3600, now());
    let _pusher = push(
        &format!(
            "rtmp://127.0.0.1:{}/live/{publish}",
            origin.rtmp_port.unwrap()
        ),
        150 + longer as u32,
        dir,
        "ffmpeg",
    );
    let hls = |token: &str| {
        http_get(&edge.http_url(&format!("/hls/{ns}/master.m3u8?token={token}")))
            .map(|(status, _)| status)
            .unwrap_or(0)
    };
    let metric = |name: &str| {
        edge.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
            .unwrap_or_default()
    };

    // Tokens: one living 40 s (it expires during the outage), one that
    // expired before it, one revoked before it.
    let lifetime = 40;
    let short = mint("p_viewer", Action::Play, lifetime, now());
    let expires = Instant::now() + Duration::from_secs(lifetime as u64);
    let stale = mint(
        "p_late",
        Action::Play,
        30,
        now() - time::Duration::seconds(60),
    );
    let revoked = mint(
        "p_revoked",
        Action::Play,
        600,
        now() - time::Duration::seconds(5),
    );
    wait_until(Duration::from_secs(30), "the broadcast at the edge", || {
        (hls(&short) == 200).then_some(())
    });
    assert_eq!(hls(&stale), 403);
    assert_eq!(hls(&revoked), 200);
    minting
        .revoke(RevocationKind::Subject, &tenant, "p_revoked")
        .unwrap();
    wait_until(Duration::from_secs(5), "the revocation at the edge", || {
        (hls(&revoked) == 403).then_some(())
    });
    assert_eq!(metric("strom_control_plane_reachable"), "1");
    // A viewer watching over MoQT from before the outage to after the
    // token's expiry.
    let watched = dir.join("through.mp4");
    let mut through = watch_with_token(
        &edge.moq_url(),
        ns,
        &edge.cert_sha256,
        (lifetime as u64 + 25 + longer) as f64,
        &watched,
        dir,
        "watch-through",
        Some(&short),
    );

    // A participant watching in Chromium through the portal's player.
    let browser_secs = lifetime as u64 + 90 + longer;
    let (browser, browser_out) =
        browser_viewer(&minting, &tenant, &event, &edge, cp_port, browser_secs, dir);
    let played = |lines: &[serde_json::Value]| -> Option<(u64, f64)> {
        let last = lines.last()?;
        Some((last["at"].as_u64()?, last["currentTime"].as_f64()?))
    };
    let (_, playing_at) = wait_until(Duration::from_secs(60), "the browser playing", || {
        played(&browser_lines(&browser_out)).filter(|(_, t)| *t > 2.0)
    });
    eprintln!(
        "browser playing ({playing_at:.1} s) over {}",
        browser_lines(&browser_out).last().unwrap()["transport"]
    );

    // --- every replica gone.
    serving.stop();
    let outage_began = std::time::SystemTime::now();
    wait_until(
        Duration::from_secs(30),
        "the edge noticing the outage",
        || (metric("strom_control_plane_reachable") == "0").then_some(()),
    );
    std::thread::sleep(expires.saturating_duration_since(Instant::now()) + Duration::from_secs(3));
    // The token has expired, while nobody could refresh it: still good.
    assert_eq!(hls(&short), 200, "a token that expired during the outage");
    assert_eq!(hls(&stale), 403, "a token that had expired before");
    assert_eq!(hls(&revoked), 403, "a revocation held before the outage");
    let size_then = std::fs::metadata(&watched).map(|m| m.len()).unwrap_or(0);
    // A player reconnecting (a network change, another edge) with it.
    let mut again = watch_with_token(
        &edge.moq_url(),
        ns,
        &edge.cert_sha256,
        5.0,
        &dir.join("again.mp4"),
        dir,
        "watch-again",
        Some(&short),
    );
    let status = again.wait(Duration::from_secs(40)).expect("watch ends");
    assert!(status.success(), "{}", again.log_text());
    let mut refused = watch_with_token(
        &edge.moq_url(),
        ns,
        &edge.cert_sha256,
        5.0,
        &dir.join("stale.mp4"),
        dir,
        "watch-stale",
        Some(&stale),
    );
    let status = refused.wait(Duration::from_secs(40)).expect("watch ends");
    assert!(!status.success(), "a stale token opens no session");
    // Longer: the viewer from before keeps receiving, the expired token
    // keeps serving HLS.
    let end = Instant::now() + Duration::from_secs(longer);
    let mut size_was = size_then;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(30).min(end - Instant::now()));
        assert_eq!(
            hls(&short),
            200,
            "{} s more into the outage",
            longer - (end - Instant::now()).as_secs()
        );
        let size = std::fs::metadata(&watched).unwrap().len();
        assert!(
            size > size_was,
            "the viewer from before stopped receiving: {size} bytes"
        );
        eprintln!(
            "outage: {} s more, the viewer has {size} bytes, tokens extended {}",
            longer - (end - Instant::now()).as_secs(),
            metric("strom_play_tokens_extended_total")
        );
        size_was = size;
    }
    let status = through.wait(Duration::from_secs(60)).expect("watch ends");
    assert!(status.success(), "{}", through.log_text());
    let size_after = std::fs::metadata(&watched).unwrap().len();
    assert!(
        size_after > size_then + 500_000,
        "the viewer from before kept receiving after its token expired: {size_then} → {size_after} bytes"
    );
    let extended: u64 = metric("strom_play_tokens_extended_total").parse().unwrap();
    assert!(extended >= 2, "counted: {extended}");

    // The browser played on through the outage (its token refreshes
    // failing, retried), as far as the wall clock went.
    let lines = browser_lines(&browser_out);
    let began_ms = outage_began
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let at_outage = lines
        .iter()
        .rev()
        .find(|l| l["at"].as_u64().is_some_and(|at| at <= began_ms))
        .and_then(|l| l["currentTime"].as_f64())
        .expect("a browser figure from before the outage");
    let (last_at, last_time) = played(&lines).expect("browser figures");
    let wall = (last_at.saturating_sub(began_ms)) as f64 / 1000.0;
    eprintln!(
        "browser through the outage: {:.1} s played in {wall:.1} s; last {}",
        last_time - at_outage,
        lines.last().unwrap()
    );
    assert!(
        last_time - at_outage >= wall * 0.8 && wall > lifetime as f64,
        "the browser stalled in the outage: {:.1} s played in {wall:.1} s ({})",
        last_time - at_outage,
        browser.log_text()
    );
    assert_eq!(lines.last().unwrap()["paused"], false);
    drop(browser);

    // An edge starting while no replica answers (a restart, a new machine
    // with the first one's disk): it takes up what the control plane said
    // last, kept in its data directory, so the token that expired during
    // the outage still plays, and the stale and revoked ones still do not.
    let kept = dir.join("edge").join(strom_relay::LAST_WORD_FILE);
    assert!(
        kept.exists(),
        "the edge kept nothing of what the control plane said"
    );
    std::fs::create_dir_all(dir.join("edge-2")).unwrap();
    std::fs::copy(&kept, dir.join("edge-2").join(strom_relay::LAST_WORD_FILE)).unwrap();
    let second = Service::edge_with("edge-2", dir, &origin, &link(&edge_credential, "edge"));
    let hls_second = |token: &str| {
        http_get(&second.http_url(&format!("/hls/{ns}/master.m3u8?token={token}")))
            .map(|(status, _)| status)
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(30),
        "a restarted edge playing the expired token",
        || (hls_second(&short) == 200).then_some(()),
    );
    assert_eq!(
        hls_second(&stale),
        403,
        "a stale token at the restarted edge"
    );
    assert_eq!(
        hls_second(&revoked),
        403,
        "a revocation the restarted edge took up"
    );
    drop(second);

    // --- a replica answers again: expiry is as minted.
    let (_serving, _) = Replica::start(&config, &cp_dir, serving.port);
    wait_until(
        Duration::from_secs(30),
        "the edge hearing the control plane",
        || (metric("strom_control_plane_reachable") == "1").then_some(()),
    );
    assert_eq!(hls(&short), 403, "the outage's grace ends with it");
    let fresh = mint("p_viewer", Action::Play, 600, now());
    assert_eq!(hls(&fresh), 200, "a refreshed token");
}

/// Starts Chromium on the portal's embeddable player for a new participant
/// of the event (a session made in the store, as after a login), the edge
/// registered so playback tokens name it; its figures go to the returned
/// file, one JSON line every 2 s.
fn browser_viewer(
    repo: &Repo,
    tenant: &str,
    event: &str,
    edge: &strom_tests::Service,
    cp_port: u16,
    seconds: u64,
    dir: &std::path::Path,
) -> (strom_tests::Proc, std::path::PathBuf) {
    use strom_control_plane::model::{
        EdgeRegistration, ParticipantSource, ParticipantStatus, Session,
    };
    let now = strom_control_plane::repo::now();
    repo.put_edge(&EdgeRegistration {
        id: "edge-1".into(),
        region: "test".into(),
        url: edge.http_url("/"),
        load: 0.0,
        registered_at: now,
        last_seen: None,
    })
    .unwrap();
    let participant = repo
        .create_participants(
            "system",
            tenant,
            event,
            vec![strom_control_plane::repo::NewParticipant {
                email: "viewer@acme.example".into(),
                name: "Viewer".into(),
                fields: Default::default(),
                password: None,
                status: ParticipantStatus::Active,
                source: ParticipantSource::Imported,
                consent: None,
            }],
        )
        .unwrap()
        .remove(0);
    let session = repo
        .create_session(&Session {
            tenant: tenant.into(),
            principal: Principal::Participant {
                event: event.into(),
                participant: participant.id,
            },
            csrf: "outage-csrf".into(),
            created_at: now,
            last_seen: now,
            idle_minutes: 24 * 60,
            must_change_password: false,
            must_enrol_totp: false,
        })
        .unwrap();
    let out = dir.join("browser.jsonl");
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    let mut cmd = std::process::Command::new("node");
    cmd.current_dir(web)
        .arg("tests/outage-watch.mjs")
        .args([
            &format!("http://127.0.0.1:{cp_port}/"),
            tenant,
            event,
            &session,
        ])
        .arg(seconds.to_string())
        .stdout(std::fs::File::create(&out).unwrap());
    (strom_tests::Proc::spawn("browser", cmd, dir), out)
}

/// The browser's figures so far.
fn browser_lines(out: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

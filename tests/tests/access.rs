//! Tokens at origin and edge end to end (issue: control plane, AUTH-8): real
//! ffmpeg pushes, real `strom origin` / `strom edge` processes, real MoQT
//! (`strom watch`) and HLS clients. Keys and revocations come from a real
//! control plane in the test process ([`TestControlPlane`]); a second one
//! with its own keys forges tokens.

use std::path::Path;
use std::time::Duration;

use strom_tests::control_plane::TestControlPlane;
use strom_tests::*;
use strom_token::{Action, Grant, RevocationKind};

const NAMESPACE: &str = "acme/townhall/main";
const TENANT: &str = "acme";

/// An origin and an edge that both take their keys from `cp`.
struct Deployment {
    origin: Service,
    edge: Service,
}

fn deploy(cp: &TestControlPlane, dir: &Path) -> Deployment {
    let origin = Service::origin_with("origin", dir, &[], &cp.toml("origin"));
    let edge = Service::edge_with("edge", dir, &origin, &cp.toml("edge"));
    Deployment { origin, edge }
}

fn publish_token(cp: &TestControlPlane) -> String {
    cp.token(Action::Publish, "stream-main", NAMESPACE, 3600)
}

fn play_token(cp: &TestControlPlane, subject: &str, scope: &str) -> String {
    cp.token(Action::Play, subject, scope, 300)
}

/// Waits until the origin publishes `NAMESPACE` (the edge announces it).
fn wait_live(edge: &Service, token: &str) {
    let master = edge.http_url(&format!("/hls/{NAMESPACE}/master.m3u8?token={token}"));
    wait_until(Duration::from_secs(25), "the broadcast at the edge", || {
        http_text(&master).filter(|t| t.contains("#EXT-X-STREAM-INF"))
    });
}

/// Runs `strom watch` against `url` with `token` until it exits by itself.
fn watch_outcome(
    url: &str,
    cert: &str,
    token: Option<&str>,
    seconds: f64,
    dir: &Path,
    name: &str,
) -> (bool, u64, String) {
    let file = dir.join(format!("{name}.mp4"));
    let mut watcher = watch_with_token(url, NAMESPACE, cert, seconds, &file, dir, name, token);
    let status = watcher
        .wait(Duration::from_secs(seconds as u64 + 30))
        .unwrap_or_else(|| panic!("{name} did not end"));
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    (status.success(), size, watcher.log_text())
}

#[test]
fn rtmp_publish_needs_a_valid_unrevoked_publish_token() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = TestControlPlane::start();
    let origin = Service::origin_with("origin", dir, &[], &cp.toml("origin"));

    // A wrong credential: a random key, and a playback token.
    let wrong = "not-a-token-0123456789abcdef";
    let play = play_token(&cp, "viewer-1", NAMESPACE);
    for (i, key) in [wrong, play.as_str()].into_iter().enumerate() {
        let mut push = push(&origin.rtmp_url(key), 20, dir, &format!("ffmpeg-wrong-{i}"));
        let status = push
            .wait(Duration::from_secs(15))
            .expect("a refused push ends");
        assert!(
            !status.success(),
            "a push with a wrong credential must fail"
        );
    }
    let log = origin.proc.log_text();
    assert!(log.matches("publish refused").count() >= 2, "{log}");
    assert!(log.contains("invalid_token"), "{log}");
    assert!(log.contains("not_publish"), "{log}");
    assert!(
        !log.contains(wrong) && !log.contains(&play),
        "a credential reached the log"
    );

    // A revoked publish credential.
    let revoked = cp.token(Action::Publish, "stream-old", NAMESPACE, 3600);
    cp.revoke(RevocationKind::Subject, TENANT, "stream-old");
    wait_until(
        Duration::from_secs(10),
        "the origin to hear of the revocation",
        || {
            origin
                .proc
                .log_text()
                .contains("revocation received")
                .then_some(())
        },
    );
    let mut push_revoked = push(&origin.rtmp_url(&revoked), 20, dir, "ffmpeg-revoked");
    let status = push_revoked
        .wait(Duration::from_secs(15))
        .expect("a push with a revoked credential ends");
    assert!(!status.success());
    let log = origin.proc.log_text();
    assert!(log.contains("reason=\"revoked\""), "{log}");

    // A valid one publishes under the token's namespace.
    let token = publish_token(&cp);
    let mut good = push(&origin.rtmp_url(&token), 60, dir, "ffmpeg-good");
    wait_until(Duration::from_secs(15), "publish started", || {
        let log = origin.proc.log_text();
        log.contains(&format!("namespace={NAMESPACE}"))
            .then_some(())
            .filter(|_| log.contains("publish started"))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(good.is_running(), "the valid push must keep running");
    assert!(
        !origin.proc.log_text().contains(&token),
        "a credential reached the log"
    );

    // Revoking the stream's credential stops the running push within 5 s.
    let revoked_at = cp.revoke(RevocationKind::Stream, TENANT, "townhall/main");
    let status = good
        .wait(Duration::from_secs(10))
        .expect("the revoked push is disconnected");
    let took = revoked_at.elapsed();
    eprintln!("publish revocation to disconnect: {took:?}");
    assert!(!status.success());
    assert!(took <= Duration::from_secs(5), "took {took:?}");
    assert!(origin
        .proc
        .log_text()
        .contains("publish credential was revoked"));
    assert!(!origin.proc.log_text().contains("panicked"));
}

#[test]
fn viewers_need_a_play_token_for_their_event() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cp = TestControlPlane::start();
    let Deployment { origin, edge } = deploy(&cp, dir);
    let _push = push(
        &origin.rtmp_url(&publish_token(&cp)),
        120,
        dir,
        "ffmpeg-push",
    );
    let good = play_token(&cp, "viewer-good", NAMESPACE);
    // The edge pulls with its relay credential, so the broadcast reaches it.
    wait_live(&edge, &good);

    let expired = cp.mint_at(
        Grant {
            lifetime_secs: 60,
            ..Grant::play("viewer-late", TENANT, "townhall")
        },
        time::OffsetDateTime::now_utc() - time::Duration::hours(1),
    );
    let forged = {
        let stranger = TestControlPlane::start();
        play_token(&stranger, "viewer-good", NAMESPACE)
    };
    let other_event = play_token(&cp, "viewer-other", "acme/allhands");
    let other_tenant = play_token(&cp, "viewer-globex", "globex/townhall");

    // MoQT (raw QUIC): refused sessions and requests deliver nothing.
    let moq = edge.moq_url();
    let cert = edge.cert_sha256.clone();
    for (name, token) in [
        ("no-token", None),
        ("expired", Some(expired.as_str())),
        ("forged", Some(forged.as_str())),
        ("other-event", Some(other_event.as_str())),
        ("other-tenant", Some(other_tenant.as_str())),
    ] {
        let (ok, size, log) = watch_outcome(&moq, &cert, token, 6.0, dir, &format!("watch-{name}"));
        assert!(
            !ok,
            "{name}: a viewer without a valid token must be refused\n{log}"
        );
        assert_eq!(size, 0, "{name}: a refused viewer received media");
    }
    let metrics = edge.metrics();
    assert!(
        metric(
            &metrics,
            "strom_access_refused_total",
            &[("what", "moqt_session")]
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "strom_access_refused_total",
            &[("what", "moqt_request")]
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{metrics}"
    );

    // The origin takes relay credentials only: a viewer's token opens nothing there.
    let (ok, size, _) = watch_outcome(
        &origin.moq_url(),
        &origin.cert_sha256,
        Some(&good),
        4.0,
        dir,
        "watch-origin-direct",
    );
    assert!(!ok && size == 0, "a play token must not open the origin");

    // A valid viewer plays, over raw QUIC and WebTransport.
    let (ok, size, log) = watch_outcome(&moq, &cert, Some(&good), 6.0, dir, "watch-good");
    assert!(ok, "a valid viewer must play: {log}");
    assert!(size > 100_000, "only {size} bytes");
    let streams = probe(dir.join("watch-good.mp4").to_str().unwrap());
    assert!(
        streams
            .iter()
            .any(|s| s.codec_type == "video" && s.frames >= 60),
        "{streams:?}"
    );
    let wt = format!("https://127.0.0.1:{}/", edge.moqt_port);
    let (ok, size, log) = watch_outcome(&wt, &cert, Some(&good), 5.0, dir, "watch-good-wt");
    assert!(
        ok && size > 50_000,
        "WebTransport viewer: {size} bytes\n{log}"
    );
    let (ok, size, _) = watch_outcome(&wt, &cert, Some(&other_event), 4.0, dir, "watch-other-wt");
    assert!(
        !ok && size == 0,
        "WebTransport viewer of another event must be refused"
    );

    // HLS: every request needs the token, by query or cookie.
    let hls = |path: &str| edge.http_url(&format!("/hls/{NAMESPACE}/{path}"));
    let (status, _, _) = http_request(&hls("master.m3u8"), &[]).unwrap();
    assert_eq!(status, 401, "HLS without a token");
    for (name, token) in [
        ("expired", &expired),
        ("forged", &forged),
        ("other-event", &other_event),
        ("other-tenant", &other_tenant),
    ] {
        for path in ["master.m3u8", "video/playlist.m3u8", "video/init.mp4"] {
            let (status, _, body) =
                http_request(&format!("{}?token={token}", hls(path)), &[]).unwrap();
            assert_eq!(
                status,
                403,
                "{name} {path}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let cookie = format!("strom_token={token}");
        let (status, _, _) =
            http_request(&hls("video/playlist.m3u8"), &[("Cookie", &cookie)]).unwrap();
        assert_eq!(status, 403, "{name} as a cookie");
    }

    let (status, headers, body) =
        http_request(&format!("{}?token={good}", hls("master.m3u8")), &[]).unwrap();
    assert_eq!(status, 200);
    let master = String::from_utf8(body).unwrap();
    assert!(
        master.contains(&format!("video/playlist.m3u8?token={good}")),
        "{master}"
    );
    let set_cookie = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.clone())
        .expect("the master playlist sets the token cookie");
    assert!(
        set_cookie.contains("Path=/hls/acme/townhall/"),
        "{set_cookie}"
    );
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP on loopback: {set_cookie}"
    );
    // The cookie alone authorises the rest (a browser's player).
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let (status, _, body) =
        http_request(&hls("video/playlist.m3u8"), &[("Cookie", &cookie)]).unwrap();
    assert_eq!(status, 200);
    let playlist = String::from_utf8(body).unwrap();
    assert!(playlist.contains("#EXTINF"), "{playlist}");
    // A player without cookies follows the tokenised URIs (ffmpeg's HLS reader).
    let recorded = dir.join("hls.mp4");
    let errors = record(
        &format!("{}?token={good}", hls("master.m3u8")),
        6,
        &recorded,
    );
    assert!(
        errors.trim().is_empty(),
        "ffmpeg reading HLS with a token: {errors}"
    );
    let streams = probe(recorded.to_str().unwrap());
    assert!(
        streams
            .iter()
            .any(|s| s.codec_type == "video" && s.frames >= 120),
        "{streams:?}"
    );
    assert!(
        metric(
            &edge.metrics(),
            "strom_access_refused_total",
            &[("what", "hls_request")]
        )
        .unwrap_or(0.0)
            >= 13.0
    );
    for service in [&origin, &edge] {
        let log = service.proc.log_text();
        assert!(!log.contains("panicked"));
        for token in [&good, &expired, &forged, &other_event, &cp.relay_credential] {
            assert!(
                !log.contains(token.as_str()),
                "a token reached {}'s log",
                service.proc.name
            );
        }
    }
}

#[test]
fn revoking_a_viewer_closes_its_moqt_session_within_5_s() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cp = TestControlPlane::start();
    let Deployment { origin, edge } = deploy(&cp, dir);
    let _push = push(
        &origin.rtmp_url(&publish_token(&cp)),
        90,
        dir,
        "ffmpeg-push",
    );
    let viewer = play_token(&cp, "viewer-7f3a", NAMESPACE);
    let bystander = play_token(&cp, "viewer-9b21", NAMESPACE);
    wait_live(&edge, &viewer);

    let file = dir.join("revoked.mp4");
    let mut watcher = watch_with_token(
        &edge.moq_url(),
        NAMESPACE,
        &edge.cert_sha256,
        60.0,
        &file,
        dir,
        "watch-revoked",
        Some(&viewer),
    );
    let other_file = dir.join("bystander.mp4");
    let mut bystander_watch = watch_with_token(
        &edge.moq_url(),
        NAMESPACE,
        &edge.cert_sha256,
        60.0,
        &other_file,
        dir,
        "watch-bystander",
        Some(&bystander),
    );
    // Both are receiving media.
    for f in [&file, &other_file] {
        wait_until(Duration::from_secs(20), "media at the viewer", || {
            let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            (size > 200_000).then_some(())
        });
    }

    let revoked_at = cp.revoke(RevocationKind::Subject, TENANT, "viewer-7f3a");
    eprintln!(
        "revoked at {}",
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    let status = watcher
        .wait(Duration::from_secs(15))
        .expect("the revoked viewer's session is closed");
    let took = revoked_at.elapsed();
    eprintln!("viewer revocation to MoQT session close: {took:?}");
    for line in edge.proc.log_text().lines().filter(|l| l.contains("revo")) {
        eprintln!("edge: {line}");
    }
    if let Some(line) = watcher.log_text().lines().find(|l| l.starts_with("Error")) {
        eprintln!("watch: {line}");
    }
    assert!(
        !status.success(),
        "the watch ends because its session was closed"
    );
    assert!(
        took <= Duration::from_secs(5),
        "revocation took {took:?} to close the session"
    );

    // The same token is refused from now on, over MoQT and HLS; the other
    // viewer goes on.
    let master = edge.http_url(&format!("/hls/{NAMESPACE}/master.m3u8?token={viewer}"));
    let (status, _, _) = http_request(&master, &[]).unwrap();
    assert_eq!(status, 403);
    let (ok, size, _) = watch_outcome(
        &edge.moq_url(),
        &edge.cert_sha256,
        Some(&viewer),
        4.0,
        dir,
        "watch-again",
    );
    assert!(!ok && size == 0);
    let before = std::fs::metadata(&other_file).map(|m| m.len()).unwrap_or(0);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        bystander_watch.is_running(),
        "{}",
        bystander_watch.log_text()
    );
    let after = std::fs::metadata(&other_file).map(|m| m.len()).unwrap_or(0);
    assert!(after > before, "the other viewer must keep receiving");
    let log = edge.proc.log_text();
    assert!(log.contains("credential revoked"), "{log}");
    assert!(!log.contains(&viewer), "a token reached the log");
}

/// F4 end to end: revoking a tenant's agent credential closes the edge
/// sessions of the tickets minted with it within 5 s (the credential itself
/// is refused too), and revoking an edge's own credential makes the origin
/// close that edge's upstream session.
#[test]
fn revoked_agent_and_relay_credentials_lose_their_sessions_within_5_s() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cp = TestControlPlane::start();
    let Deployment { origin, edge } = deploy(&cp, dir);
    let _push = push(
        &origin.rtmp_url(&publish_token(&cp)),
        90,
        dir,
        "ffmpeg-push",
    );
    let viewer = play_token(&cp, "viewer-7f3a", NAMESPACE);
    wait_live(&edge, &viewer);

    // As the control plane gives it to an agent that registered.
    let (credential_id, credential) = cp.repo.issue_agent_credential("u_owner", TENANT).unwrap();
    let ticket = cp.mint(Grant {
        subject: "agent:s_hq:12D3KooWLdvg7ZbBHnyFeY4kU7VZ5U3T8fM6o6x4o3HVYxBXYxKn".into(),
        tenant: TENANT.into(),
        event: String::new(),
        stream: None,
        action: Action::Relay,
        lifetime_secs: 3600,
        not_after: None,
        role: None,
        via: Some(credential_id.clone()),
    });
    let ticket_file = dir.join("ticket.mp4");
    let mut agent = watch_with_token(
        &edge.moq_url(),
        NAMESPACE,
        &edge.cert_sha256,
        60.0,
        &ticket_file,
        dir,
        "watch-ticket",
        Some(&ticket),
    );
    let viewer_file = dir.join("viewer.mp4");
    let mut viewer_watch = watch_with_token(
        &edge.moq_url(),
        NAMESPACE,
        &edge.cert_sha256,
        60.0,
        &viewer_file,
        dir,
        "watch-viewer",
        Some(&viewer),
    );
    for f in [&ticket_file, &viewer_file] {
        wait_until(Duration::from_secs(20), "media at the watcher", || {
            let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            (size > 200_000).then_some(())
        });
    }

    let revoked_at = std::time::Instant::now();
    cp.repo
        .revoke_credential("u_owner", TENANT, &credential_id)
        .unwrap();
    let status = agent
        .wait(Duration::from_secs(15))
        .expect("the ticket's session is closed");
    let took = revoked_at.elapsed();
    eprintln!("agent credential revocation to MoQT session close: {took:?}");
    assert!(!status.success());
    assert!(took <= Duration::from_secs(5), "took {took:?}");
    assert!(viewer_watch.is_running(), "{}", viewer_watch.log_text());
    // Neither the ticket nor the credential opens a session any more.
    for (token, name) in [(&ticket, "ticket-again"), (&credential, "credential-again")] {
        let (ok, size, _) = watch_outcome(
            &edge.moq_url(),
            &edge.cert_sha256,
            Some(token),
            4.0,
            dir,
            name,
        );
        assert!(!ok && size == 0, "{name}");
    }

    // The edge's own credential: the origin closes the edge's session.
    let revoked_at = std::time::Instant::now();
    cp.repo
        .revoke_credential("operator", strom_control_plane::repo::PLATFORM, "edge-1")
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the origin to close the edge's session",
        || {
            origin
                .proc
                .log_text()
                .lines()
                .any(|l| l.contains("credential revoked") && l.contains("edge-1"))
                .then_some(())
        },
    );
    let took = revoked_at.elapsed();
    eprintln!("edge credential revocation to upstream close: {took:?}");
    assert!(took <= Duration::from_secs(5), "took {took:?}");
    let _ = viewer_watch.wait(Duration::from_secs(1));
}

/// A relay that meets a media key it does not know asks for the key set at
/// once instead of waiting for the minute's refresh (a new origin's stream
/// must not be refused by agents for a minute).
#[test]
fn a_relay_that_meets_an_unknown_media_key_fetches_the_key_set_at_once() {
    let cp = TestControlPlane::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let link = strom_relay::ControlPlaneLink {
            url: cp.url.parse().expect("url"),
            fallback_urls: Vec::new(),
            credential: cp.relay_credential.clone(),
            ca_file: None,
        };
        let verifier = std::sync::Arc::new(strom_token::Verifier::new());
        let _sync = strom_relay::start_key_sync(link, verifier.clone())
            .await
            .expect("sync");
        assert!(verifier.media_keys().is_empty());
        let signer = strom_token::media::MediaSigner::generate();
        let key: String = signer
            .public_key()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        cp.repo
            .put_media_key(&strom_control_plane::model::MediaKeyRegistration {
                origin: "origin-new".into(),
                key,
                registered_at: time::OffsetDateTime::now_utc(),
            })
            .expect("media key");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            verifier.media_keys().is_empty(),
            "the key arrived without being asked for: this test proves nothing"
        );
        let asked = std::time::Instant::now();
        verifier.want_fresh_keys();
        while verifier.media_keys().is_empty() {
            assert!(
                asked.elapsed() < Duration::from_secs(10),
                "the key set was not fetched when asked"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("new media key known {:?} after asking", asked.elapsed());
    });
}

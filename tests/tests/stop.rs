//! Every command stops within 5 s on SIGINT (Ctrl-C) and on SIGTERM (the
//! service manager), and stops cleanly: a running recording gets its `end`
//! line, the control plane's RocksDB is closed, viewers' MoQT sessions are
//! closed at once instead of timing out.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strom_tests::control_plane::TestControlPlane;
use strom_tests::*;

/// The most a stop may take.
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// Sends `signal` and returns how long the process took to exit; panics
/// when it is still running after [`STOP_WITHIN`] or exits unsuccessfully.
fn stop(proc: &mut Proc, signal: &str) -> Duration {
    let sent = Instant::now();
    proc.signal(signal);
    let status = proc.wait(STOP_WITHIN + Duration::from_secs(5));
    let took = sent.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "{} still running {took:?} after SIG{signal}:\n{}",
            proc.name,
            proc.log_text()
        )
    });
    eprintln!("{} stopped {took:?} after SIG{signal}", proc.name);
    assert!(
        took <= STOP_WITHIN,
        "{} took {took:?} to stop after SIG{signal}",
        proc.name
    );
    assert!(
        status.success(),
        "{} exited with {status} after SIG{signal}:\n{}",
        proc.name,
        proc.log_text()
    );
    took
}

/// The last non-empty line of RocksDB's own log in `db_dir`.
fn rocksdb_last_line(db_dir: &Path) -> String {
    let text = std::fs::read_to_string(db_dir.join("LOG")).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// Every `index.log` of a recording under `root`.
fn recording_indexes(root: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == "index.log") {
                found.push(path);
            }
        }
    }
    found
}

/// `strom dev`, the command a new user runs and stops with Ctrl-C, with a
/// push going on: it exits, the recording is ended, RocksDB is closed, and
/// a viewer at its edge is told at once.
#[test]
fn strom_dev_stops_on_ctrl_c_mid_push_and_ends_its_recording() {
    let _serial = serial();
    let mut dev = Dev::start();
    let dir = dev.dir.path().to_owned();
    let _push = push(&dev.get("rtmp_publish_url"), 60, &dir, "ffmpeg-push");
    let recordings = dir.join("recordings");
    wait_until(Duration::from_secs(30), "a recorded group", || {
        recording_indexes(&recordings)
            .iter()
            .any(|i| {
                std::fs::read_to_string(i)
                    .unwrap_or_default()
                    .contains("\nseg ")
            })
            .then_some(())
    });
    let hls = dev.get("hls_url");
    wait_until(Duration::from_secs(20), "the stream at the edge", || {
        http_get(&hls).ok().filter(|(s, _)| *s == 200).map(|_| ())
    });
    let file = dir.join("viewer.mp4");
    let mut viewer = watch_with_token(
        &dev.get("moq_url"),
        &dev.get("namespace"),
        &dev.get("cert_sha256"),
        60.0,
        &file,
        &dir,
        "watch",
        Some(&dev.get("playback_token")),
    );
    wait_until(Duration::from_secs(20), "media at the viewer", || {
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        (size > 100_000).then_some(())
    });

    stop(&mut dev.proc, "INT");

    let log = dev.proc.log_text();
    for said in ["origin stopped", "edge stopped", "control plane stopped"] {
        assert!(log.contains(said), "no \"{said}\" in:\n{log}");
    }
    let indexes = recording_indexes(&recordings);
    assert!(!indexes.is_empty());
    for index in indexes {
        let text = std::fs::read_to_string(&index).unwrap();
        assert_eq!(
            text.lines().last(),
            Some("end"),
            "{} was not ended:\n{text}",
            index.display()
        );
    }
    let db = rocksdb_last_line(&dir.join("control-plane/db"));
    assert!(
        db.ends_with("Shutdown complete"),
        "RocksDB not closed: {db}"
    );
    // The viewer's session was closed, not left to time out (10 s).
    let ended = viewer.wait(Duration::from_secs(3));
    assert!(ended.is_some(), "the viewer was not told the edge stopped");
}

/// `strom dev` with nothing pushed, stopped the way a service manager does.
#[test]
fn strom_dev_stops_on_sigterm() {
    let _serial = serial();
    let mut dev = Dev::start();
    stop(&mut dev.proc, "TERM");
    let db = rocksdb_last_line(&dev.dir.path().join("control-plane/db"));
    assert!(
        db.ends_with("Shutdown complete"),
        "RocksDB not closed: {db}"
    );
}

/// The production commands, each alone: origin (with an SRT and an RTMP
/// push running), edge (with a viewer), peer-agent, control plane; SIGINT
/// for some, SIGTERM for the others, so both are covered for each kind.
#[test]
fn every_service_command_stops_on_sigint_and_sigterm() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cp = TestControlPlane::start();

    for signal in ["INT", "TERM"] {
        let name = format!("origin-{signal}");
        let mut origin =
            Service::origin(&name, dir, &[("stop-test-key-0001", "acme/townhall/main")]);
        let _rtmp = push(
            &origin.rtmp_url("stop-test-key-0001"),
            60,
            dir,
            &format!("push-{signal}"),
        );
        let mut edge = Service::edge(&format!("edge-{signal}"), dir, &origin);
        let file = dir.join(format!("viewer-{signal}.mp4"));
        let mut viewer = watch(
            &edge.moq_url(),
            "acme/townhall/main",
            &edge.cert_sha256,
            60.0,
            &file,
            dir,
            &format!("watch-{signal}"),
        );
        wait_until(Duration::from_secs(30), "media at the viewer", || {
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            (size > 100_000).then_some(())
        });
        stop(&mut edge.proc, signal);
        assert!(edge.proc.log_text().contains("edge stopped"));
        assert!(
            viewer.wait(Duration::from_secs(3)).is_some(),
            "the viewer was not told the edge stopped"
        );
        stop(&mut origin.proc, signal);
        let log = origin.proc.log_text();
        assert!(log.contains("origin stopped"), "{log}");
        for index in recording_indexes(&dir.join(&name).join("recordings")) {
            let text = std::fs::read_to_string(&index).unwrap();
            assert_eq!(text.lines().last(), Some("end"), "{text}");
        }
    }

    // An SRT push holds a libsrt thread per connection: it must not keep
    // the origin from exiting.
    let mut origin = Service::origin(
        "origin-srt",
        dir,
        &[("stop-test-key-0002", "acme/townhall/srt")],
    );
    let url = srt_url(origin.srt_port.unwrap(), "live/stop-test-key-0002", None, 0);
    let _srt = push_srt(&url, 60, dir, "push-srt");
    wait_until(Duration::from_secs(20), "the SRT push", || {
        origin.proc.log_text().contains("SRT publish").then_some(())
    });
    stop(&mut origin.proc, "INT");

    // A peer-agent (loopback, its tenant's agent credential).
    let edge_origin = Service::origin("origin-agent", dir, &[]);
    let edge = Service::edge("edge-agent", dir, &edge_origin);
    let (_, credential) = cp.repo.issue_agent_credential("u_owner", "acme").unwrap();
    for signal in ["INT", "TERM"] {
        let data = dir.join(format!("agent-{signal}"));
        let toml = format!(
            "data_dir = {data:?}\n[peer_agent]\np2p_listen = \"127.0.0.1:{}\"\nmoqt_listen = \"127.0.0.1:{}\"\n\
             http_listen = \"127.0.0.1:{}\"\nhttp_tls = false\nmetrics_listen = \"127.0.0.1:{}\"\n\
             [peer_agent.edge]\nurl = \"{}\"\ncert_sha256 = \"{}\"\n\
             [peer_agent.control_plane]\nurl = \"{}\"\ncredential = \"{credential}\"\n",
            free_udp_port(),
            free_udp_port(),
            free_tcp_port(),
            free_tcp_port(),
            edge.moq_url(),
            edge.cert_sha256,
            cp.url,
        );
        let config = dir.join(format!("agent-{signal}.toml"));
        std::fs::write(&config, toml).unwrap();
        let mut cmd = Command::new(strom_bin());
        cmd.arg("--config")
            .arg(&config)
            .arg("peer-agent")
            .stdout(Stdio::null());
        let mut agent = Proc::spawn(&format!("agent-{signal}"), cmd, dir);
        wait_until(Duration::from_secs(30), "peer-agent ready", || {
            agent.log_text().contains("peer-agent ready").then_some(())
        });
        stop(&mut agent, signal);
        assert!(agent.log_text().contains("peer-agent stopped"));
    }

    // The control plane's own process.
    for signal in ["INT", "TERM"] {
        let data = dir.join(format!("cp-{signal}"));
        let toml = format!(
            "data_dir = {data:?}\n[control_plane]\nlisten = \"127.0.0.1:{}\"\nmetrics_listen = \"127.0.0.1:{}\"\n\
             generate_master_key = true\n",
            free_tcp_port(),
            free_tcp_port(),
        );
        let config = dir.join(format!("cp-{signal}.toml"));
        std::fs::write(&config, toml).unwrap();
        let mut cmd = Command::new(strom_bin());
        cmd.arg("--config")
            .arg(&config)
            .args(["control-plane", "serve"])
            .stdout(Stdio::null());
        let mut serve = Proc::spawn(&format!("cp-{signal}"), cmd, dir);
        wait_until(Duration::from_secs(30), "control plane ready", || {
            serve
                .log_text()
                .contains("control plane ready")
                .then_some(())
        });
        stop(&mut serve, signal);
        let db = rocksdb_last_line(&data.join("control-plane/db"));
        assert!(
            db.ends_with("Shutdown complete"),
            "RocksDB not closed: {db}"
        );
        assert!(
            !data.join("control-plane/admin.sock").exists(),
            "the operator socket was left behind"
        );
    }
}

/// `strom watch` is stopped with Ctrl-C too.
#[test]
fn strom_watch_stops_on_ctrl_c() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let origin = Service::origin(
        "origin",
        dir,
        &[("stop-test-key-0001", "acme/townhall/main")],
    );
    let _push = push(&origin.rtmp_url("stop-test-key-0001"), 60, dir, "push");
    let file = dir.join("viewer.mp4");
    let mut viewer = watch(
        &origin.moq_url(),
        "acme/townhall/main",
        &origin.cert_sha256,
        60.0,
        &file,
        dir,
        "watch",
    );
    wait_until(Duration::from_secs(30), "media at the viewer", || {
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        (size > 100_000).then_some(())
    });
    stop(&mut viewer, "INT");
}

//! The operator's commands: `strom config check` checks every section it
//! will use; `strom control-plane tenant delete` ends a tenant for good.

use std::process::{Command, Stdio};
use std::time::Duration;

use strom_tests::{free_tcp_port, strom_bin, wait_until, Proc};

fn check(toml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strom.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(strom_bin())
        .arg("--config")
        .arg(&path)
        .args(["config", "check"])
        .output()
        .expect("running strom config check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_peer_agent_section_is_named_by_config_check() {
    let agent = "[peer_agent.control_plane]\nurl = \"http://127.0.0.1:8090/\"\ncredential = \"c\"\n\
                 [peer_agent.edge]\nurl = \"moqt://127.0.0.1:4443\"\ncert_sha256 = \"abababababababababababababababababababababababababababababababab\"\n";
    let (ok, err) = check(agent);
    assert!(ok, "{err}");
    let (ok, err) = check(&format!("[peer_agent]\nfanout = 0\n{agent}"));
    assert!(!ok);
    assert!(err.contains("peer_agent.fanout"), "{err}");
    // A control plane reached over plain HTTP off loopback is refused too.
    let remote = agent.replace("127.0.0.1:8090", "cp.example.com");
    let (ok, err) = check(&remote);
    assert!(!ok);
    assert!(err.contains("peer_agent.control_plane.url"), "{err}");
    // Without a control plane the section is not used, and not checked.
    let (ok, err) = check("[peer_agent]\nfanout = 0\n");
    assert!(ok, "{err}");
}

/// Runs `strom --config <config> control-plane <args>`.
fn cp(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(strom_bin())
        .arg("--config")
        .arg(config)
        .arg("control-plane")
        .args(args)
        .output()
        .expect("running strom control-plane");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tenant whose contract ended is deleted by the operator, through the
/// running control plane's socket or offline; it takes a confirmation, and
/// a second deletion finds nothing.
#[test]
fn the_operator_deletes_a_tenant_for_good() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let config = dir.join("cp.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[control_plane]\nlisten = \"127.0.0.1:{}\"\nmetrics_listen = \"127.0.0.1:{}\"\ngenerate_master_key = true\n",
            free_tcp_port(),
            free_tcp_port()
        ),
    )
    .unwrap();
    let mut tenants = Vec::new();
    for name in ["Acme", "Globex"] {
        let (ok, out, err) = cp(
            &config,
            &[
                "init",
                "--tenant",
                name,
                "--owner-email",
                "owner@example.com",
                "--owner-name",
                "Owner",
            ],
        );
        assert!(ok, "{err}");
        let id = out
            .split_whitespace()
            .skip_while(|w| *w != "tenant")
            .nth(1)
            .expect("the tenant id")
            .to_owned();
        tenants.push(id);
    }
    let mut cmd = Command::new(strom_bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["control-plane", "serve"])
        .stdout(Stdio::null());
    let mut serve = Proc::spawn("cp", cmd, dir);
    wait_until(Duration::from_secs(30), "control plane ready", || {
        serve
            .log_text()
            .contains("control plane ready")
            .then_some(())
    });

    let acme = tenants[0].as_str();
    // No confirmation, or the wrong one: nothing happens.
    let (ok, _, err) = cp(&config, &["tenant", "delete", acme]);
    assert!(!ok && err.contains("--confirm"), "{err}");
    let (ok, _, _) = cp(
        &config,
        &["tenant", "delete", acme, "--confirm", &tenants[1]],
    );
    assert!(!ok);
    // Through the running control plane.
    let (ok, out, err) = cp(&config, &["tenant", "delete", acme, "--confirm", acme]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("tenant {acme} deleted")), "{out}");
    assert!(serve.log_text().contains("tenant deleted by the operator"));
    let (ok, _, err) = cp(&config, &["tenant", "delete", acme, "--confirm", acme]);
    assert!(!ok && err.contains("404"), "{err}");

    // Offline, after the control plane stopped; the other tenant is there.
    serve.signal("TERM");
    assert!(serve
        .wait(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let (ok, _, err) = cp(&config, &["tenant", "delete", acme, "--confirm", acme]);
    assert!(!ok, "deleted twice: {err}");
    let globex = tenants[1].as_str();
    let (ok, out, err) = cp(&config, &["tenant", "delete", globex, "--confirm", globex]);
    assert!(ok, "{err}");
    assert!(out.contains("deleted"));
}

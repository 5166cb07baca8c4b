//! The systemd units in `deploy/systemd`: one per service, each accepted by
//! `systemd-analyze verify` without a warning (an unknown or misspelt
//! directive is only a warning to systemd, and here a failure), each
//! starting `strom` with arguments it accepts, each stopping it with
//! SIGTERM (every strom service stops cleanly on it).

use std::path::Path;
use std::process::Command;

use strom_tests::strom_bin;

const INSTALLED: &str = "/usr/local/bin/strom";

#[test]
fn every_service_has_a_unit_systemd_accepts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let mut units: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service"))
        .collect();
    units.sort();
    assert_eq!(
        units,
        [
            "strom-control-plane.service",
            "strom-edge.service",
            "strom-origin.service",
            "strom-peer-agent.service"
        ]
    );
    let bin = strom_bin();
    let work = tempfile::tempdir().unwrap();
    for unit in &units {
        let text = std::fs::read_to_string(dir.join(unit)).unwrap();
        // The binary where the unit expects it is this build.
        let here = work.path().join(unit);
        std::fs::write(&here, text.replace(INSTALLED, &bin.to_string_lossy())).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&here)
            .output()
            .expect("systemd-analyze (Debian's systemd) is installed by the test command");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}: {stderr}"
        );
        for needed in [
            "KillSignal=SIGTERM",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "User=strom",
        ] {
            assert!(
                text.lines().any(|l| l.trim() == needed),
                "{unit} lacks {needed}"
            );
        }
        check_command_line(unit, &text, &bin);
    }
}

/// The unit's `ExecStart=` names this binary's subcommand with options it
/// parses (`--help` after them: clap checks them first, then exits 0).
fn check_command_line(unit: &str, text: &str, bin: &Path) {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some(INSTALLED), "{unit}");
    let args: Vec<&str> = words.collect();
    let out = Command::new(bin)
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{unit}: strom {} refused: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

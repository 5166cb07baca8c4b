//! A private PostgreSQL server for tests: Debian's `postgresql` package,
//! a cluster made with `initdb` in a temporary directory, listening on a
//! Unix socket only (no TCP port to race other tests for), stopped and
//! removed on drop. As root the server runs as the `postgres` user
//! (PostgreSQL refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    dir: tempfile::TempDir,
    server: Child,
    /// Connection string for the `postgres` database (superuser `strom`).
    pub url: String,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (apt-get install postgresql)")
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL version installed").1
}

fn as_owner(program: &Path) -> Command {
    if crate::netns::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn spawn_server(dir: &Path, log: std::fs::File) -> Child {
    as_owner(&bin_dir().join("postgres"))
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-k")
        .arg(dir)
        .args(["-c", "listen_addresses=", "-c", "max_connections=200"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("postgres")
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("strom-pg-")
            .tempdir()
            .expect("temporary directory");
        if crate::netns::is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the cluster directory failed");
        }
        let data = dir.path().join("data");
        let out = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "strom", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        if crate::netns::is_root() {
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path().join("server.log"))
                .status();
        }
        let server = spawn_server(dir.path(), log);
        let url = format!("host={} user=strom dbname=postgres", dir.path().display());
        let pg = Postgres { dir, server, url };
        pg.wait_ready(1);
        pg
    }

    /// Waits until the server's log says it accepts connections for the
    /// `n`th time.
    fn wait_ready(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log().matches("ready to accept connections").count() < n {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: sessions are cut, as in a restart
    /// or a failover), leaving its data.
    pub fn stop(&mut self) {
        // pg_ctl signals the server itself (as root the child is `runuser`,
        // which does not pass SIGINT on).
        let out = as_owner(&bin_dir().join("pg_ctl"))
            .args(["stop", "-m", "fast", "-w", "-t", "30", "-D"])
            .arg(self.dir.path().join("data"))
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = self.server.wait();
    }

    /// Starts the stopped server again on the same data.
    pub fn start_again(&mut self) {
        let starts = self.log().matches("ready to accept connections").count();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        self.server = spawn_server(self.dir.path(), log);
        self.wait_ready(starts + 1);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A new, empty database; its connection string.
    pub fn database(&self, name: &str) -> String {
        self.sql(&format!("CREATE DATABASE {name}"));
        format!(
            "host={} user=strom dbname={name}",
            self.dir.path().display()
        )
    }

    /// Runs SQL with `psql` against the `postgres` database; its output
    /// (unaligned, tuples only).
    pub fn sql(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    pub fn sql_in(&self, database: &str, sql: &str) -> String {
        let out = Command::new(bin_dir().join("psql"))
            .arg(format!(
                "host={} user=strom dbname={database}",
                self.dir.path().display()
            ))
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.server.try_wait() {
            return;
        }
        // Fast shutdown: clients still connected are cut off.
        let _ = as_owner(&bin_dir().join("pg_ctl"))
            .args(["stop", "-m", "fast", "-w", "-t", "10", "-D"])
            .arg(self.dir.path().join("data"))
            .output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

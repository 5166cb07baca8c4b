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
    /// More server settings (`-c name=value`), kept for restarts.
    settings: Vec<String>,
    /// The TLS certificate and key, when there are any.
    _tls: Option<tempfile::TempDir>,
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

fn spawn_server(dir: &Path, log: std::fs::File, settings: &[String]) -> Child {
    let mut args = vec!["-c".to_owned(), "listen_addresses=".to_owned()];
    for s in settings {
        args.extend(["-c".to_owned(), s.clone()]);
    }
    as_owner(&bin_dir().join("postgres"))
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-k")
        .arg(dir)
        .args(["-c", "max_connections=200"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("postgres")
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(&[])
    }

    /// Also listening on 127.0.0.1:`port` for TLS connections only, with
    /// this certificate and key (PEM); plain TCP connections are refused.
    /// Unix-socket connections stay as they are.
    pub fn start_tls(port: u16, cert_pem: &str, key_pem: &str) -> Postgres {
        let tls_dir = tempfile::Builder::new()
            .prefix("strom-pg-tls-")
            .tempdir()
            .expect("temporary directory");
        let (cert, key) = (
            tls_dir.path().join("server.crt"),
            tls_dir.path().join("server.key"),
        );
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if crate::netns::is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(tls_dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let mut pg = Self::start_with(&[
            "listen_addresses=127.0.0.1".to_owned(),
            format!("port={port}"),
            "ssl=on".to_owned(),
            format!("ssl_cert_file={}", cert.display()),
            format!("ssl_key_file={}", key.display()),
        ]);
        // TCP: TLS or nothing.
        let hba = pg.dir.path().join("data").join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).unwrap_or_default();
        text = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("host"))
            .collect::<Vec<_>>()
            .join("\n");
        text.push_str(
            "\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        );
        std::fs::write(&hba, text).unwrap();
        pg.sql("SELECT pg_reload_conf()");
        pg._tls = Some(tls_dir);
        pg
    }

    fn start_with(settings: &[String]) -> Postgres {
        let settings = settings.to_vec();
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
        let server = spawn_server(dir.path(), log, &settings);
        let port = settings
            .iter()
            .find_map(|s| s.strip_prefix("port="))
            .unwrap_or("5432")
            .to_owned();
        let url = format!(
            "host={} port={port} user=strom dbname=postgres",
            dir.path().display()
        );
        let pg = Postgres {
            dir,
            server,
            settings,
            _tls: None,
            url,
        };
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
        self.server = spawn_server(self.dir.path(), log, &self.settings);
        self.wait_ready(starts + 1);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// One of the server's client programs (pg_dump, pg_restore, psql), of
    /// the installed version.
    pub fn tool(&self, name: &str) -> Command {
        Command::new(bin_dir().join(name))
    }

    /// The server's port (its Unix socket's name carries it).
    fn port(&self) -> &str {
        self.settings
            .iter()
            .find_map(|s| s.strip_prefix("port="))
            .unwrap_or("5432")
    }

    /// A new, empty database; its connection string.
    pub fn database(&self, name: &str) -> String {
        self.sql(&format!("CREATE DATABASE {name}"));
        format!(
            "host={} port={} user=strom dbname={name}",
            self.dir.path().display(),
            self.port()
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
                "host={} port={} user=strom dbname={database}",
                self.dir.path().display(),
                self.port()
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

//! Two control-plane replicas as real processes (`strom control-plane
//! serve`) behind a load balancer, on one PostgreSQL: a join storm of
//! participants registering, opening their login mail and asking for a
//! playback token, while one replica is killed with SIGKILL and, in a
//! second storm, while the database restarts. Every participant ends with
//! a token, nothing acknowledged is lost, and the audit chain written by
//! both replicas verifies.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strom_tests::balancer::Balancer;
use strom_tests::postgres::Postgres;
use strom_tests::{log_field, mail, strom_bin, wait_until, Proc};

/// One `strom control-plane serve` process of the installation.
pub(super) struct ReplicaProcess {
    proc: Proc,
    config: PathBuf,
    dir: PathBuf,
    starts: usize,
}

impl ReplicaProcess {
    pub(super) fn start(
        name: &str,
        dir: &Path,
        url: &str,
        master_key: &Path,
        port: u16,
    ) -> ReplicaProcess {
        let data = dir.join(name);
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n[control_plane]\nlisten = \"127.0.0.1:{port}\"\n\
                 metrics_listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:{port}/\"\n\
                 master_key_file = {master_key:?}\nsecure_cookies = false\n\
                 rate_limit_per_ip_per_minute = 4294967295\n\
                 rate_limit_per_account_per_minute = 4294967295\n\
                 [control_plane.store]\nkind = \"postgres\"\nurl = \"{url}\"\n"
            ),
        )
        .unwrap();
        let replica = ReplicaProcess {
            proc: Self::spawn(name, &config, dir),
            config,
            dir: dir.to_owned(),
            starts: 1,
        };
        replica.ready();
        replica
    }

    fn spawn(name: &str, config: &Path, dir: &Path) -> Proc {
        let mut cmd = Command::new(strom_bin());
        cmd.arg("--config")
            .arg(config)
            .args(["control-plane", "serve"])
            .stdout(Stdio::null());
        Proc::spawn(name, cmd, dir)
    }

    fn ready(&self) -> SocketAddr {
        let log = wait_until(Duration::from_secs(30), "control plane ready", || {
            let text = self.proc.log_text();
            text.contains("control plane ready").then_some(text)
        });
        log_field(&log, "control plane ready", "http")
            .and_then(|a| a.parse().ok())
            .expect("the replica's address in its log")
    }

    /// SIGKILL: the machine dies with requests in flight.
    fn kill_9(&mut self) {
        self.proc.signal("KILL");
        self.proc.kill();
    }

    fn restart(&mut self) {
        self.starts += 1;
        let name = format!("{}-{}", self.proc.name, self.starts);
        self.proc = Self::spawn(&name, &self.config, &self.dir);
        self.ready();
    }

    pub(super) fn outbox(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("control-plane/outbox")
    }
}

/// Login mails as they land in the replicas' outboxes, by addressee.
pub(super) struct Mails {
    by_to: Mutex<HashMap<String, Vec<(String, String)>>>,
    arrived: Condvar,
    stop: AtomicBool,
}

impl Mails {
    pub(super) fn watch(dirs: Vec<PathBuf>) -> Arc<Mails> {
        let mails = Arc::new(Mails {
            by_to: Mutex::new(HashMap::new()),
            arrived: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let watcher = mails.clone();
        std::thread::spawn(move || {
            let mut seen = HashSet::new();
            while !watcher.stop.load(Ordering::Relaxed) {
                let mut new = Vec::new();
                for dir in &dirs {
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        continue;
                    };
                    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
                        if seen.contains(&path) {
                            continue;
                        }
                        // A mail still being written parses next time.
                        let Ok(text) = std::fs::read_to_string(&path) else {
                            continue;
                        };
                        if let (Some(to), Some(link)) = (mail::to(&text), mail::magic_link(&text)) {
                            new.push((
                                path.metadata().and_then(|m| m.modified()).ok(),
                                to.to_owned(),
                                link,
                            ));
                            seen.insert(path);
                        }
                    }
                }
                if !new.is_empty() {
                    new.sort_by_key(|(at, _, _)| *at);
                    let mut by_to = watcher.by_to.lock().unwrap();
                    for (_, to, link) in new {
                        by_to.entry(to).or_default().push(link);
                    }
                    watcher.arrived.notify_all();
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        mails
    }

    /// The newest mail to `to` once there are more than `known`, and how
    /// many there are; None after `limit`.
    fn wait_new(
        &self,
        to: &str,
        known: usize,
        limit: Duration,
    ) -> Option<((String, String), usize)> {
        let deadline = Instant::now() + limit;
        let mut by_to = self.by_to.lock().unwrap();
        loop {
            if let Some(links) = by_to.get(to).filter(|l| l.len() > known) {
                return Some((links.last().unwrap().clone(), links.len()));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            by_to = self.arrived.wait_timeout(by_to, left).unwrap().0;
        }
    }
}

impl Drop for Mails {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What clients met on the way: answers they had to retry.
#[derive(Default, Debug)]
pub(super) struct Tally {
    /// Connections cut or refused (a replica that died).
    transport: usize,
    /// 503 with a Retry-After (the database unreachable).
    retry_after: usize,
    /// Any other 5xx, or a 503 without Retry-After: not clean.
    unclean: Vec<u16>,
    /// Login links asked for again (a mail or an answer lost with a replica).
    relinks: usize,
}

pub(super) struct Storm {
    pub(super) base: String,
    pub(super) tenant: String,
    pub(super) event: String,
    pub(super) mails: Arc<Mails>,
    pub(super) tally: Mutex<Tally>,
}

/// A participant's acknowledged writes: registered, and a session.
pub(super) struct Joined {
    pub(super) email: String,
    pub(super) session: String,
    pub(super) csrf: String,
    pub(super) token: String,
}

impl Storm {
    /// Sends until the answer is not a transient failure (cut connection,
    /// 502/503/504), honouring Retry-After as a browser's retry would.
    fn send(
        &self,
        deadline: Instant,
        request: impl Fn() -> ureq::Request,
        body: &Value,
    ) -> Result<ureq::Response, String> {
        loop {
            match request().send_string(&body.to_string()) {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(code @ (502..=504), r)) => {
                    let retry: Option<u64> = r.header("retry-after").and_then(|v| v.parse().ok());
                    {
                        let mut tally = self.tally.lock().unwrap();
                        match (code, retry) {
                            (503, Some(_)) => tally.retry_after += 1,
                            _ => tally.unclean.push(code),
                        }
                    }
                    std::thread::sleep(
                        Duration::from_secs(retry.unwrap_or(0)).max(Duration::from_millis(100)),
                    );
                }
                Err(ureq::Error::Status(code, r)) if code >= 500 => {
                    self.tally.lock().unwrap().unclean.push(code);
                    return Ok(r);
                }
                Err(ureq::Error::Status(_, r)) => return Ok(r),
                Err(ureq::Error::Transport(_)) => {
                    self.tally.lock().unwrap().transport += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if Instant::now() > deadline {
                return Err("no answer within the participant's time".into());
            }
        }
    }

    fn post(&self, agent: &ureq::Agent, path: &str) -> ureq::Request {
        agent
            .post(&format!("{}{path}", self.base))
            .set("Content-Type", "application/json")
    }

    /// Registers, opens the login mail, asks for a playback token.
    pub(super) fn join(&self, agent: &ureq::Agent, email: &str) -> Result<Joined, String> {
        let deadline = Instant::now() + Duration::from_secs(240);
        let register = format!(
            "/api/v1/public/{}/events/{}/register",
            self.tenant, self.event
        );
        let r = self.send(
            deadline,
            || self.post(agent, &register),
            &json!({"email": email, "name": "Storm Viewer", "consent": true}),
        )?;
        if r.status() != 202 {
            return Err(format!("register: {}", r.status()));
        }
        let mut known = 0;
        let (session, csrf) = loop {
            if Instant::now() > deadline {
                return Err("no session within the participant's time".into());
            }
            let Some(((token, code), count)) =
                self.mails.wait_new(email, known, Duration::from_secs(5))
            else {
                // The replica that took the request died before mailing.
                self.relink(agent, deadline, email)?;
                continue;
            };
            known = count;
            let r = self.send(
                deadline,
                || self.post(agent, "/api/v1/auth/magic-link/consume"),
                &json!({"token": token, "code": code}),
            )?;
            match r.status() {
                200 => {
                    let session = r
                        .all("set-cookie")
                        .into_iter()
                        .find_map(|c| {
                            c.strip_prefix("strom_session=")?
                                .split(';')
                                .next()
                                .map(str::to_owned)
                        })
                        .ok_or("no session cookie")?;
                    let info: Value =
                        serde_json::from_str(&r.into_string().map_err(|e| e.to_string())?)
                            .map_err(|e| e.to_string())?;
                    break (session, info["csrf"].as_str().ok_or("no csrf")?.to_owned());
                }
                // Used already: the answer was lost with a replica.
                404 => self.relink(agent, deadline, email)?,
                code => return Err(format!("consume: {code}")),
            }
        };
        let token = self.token(agent, deadline, &session, &csrf)?;
        Ok(Joined {
            email: email.to_owned(),
            session,
            csrf,
            token,
        })
    }

    fn relink(&self, agent: &ureq::Agent, deadline: Instant, email: &str) -> Result<(), String> {
        self.tally.lock().unwrap().relinks += 1;
        let body = json!({"tenant": self.tenant, "event": self.event, "email": email});
        let r = self.send(
            deadline,
            || self.post(agent, "/api/v1/auth/magic-link"),
            &body,
        )?;
        match r.status() {
            202 => Ok(()),
            code => Err(format!("magic link: {code}")),
        }
    }

    fn token(
        &self,
        agent: &ureq::Agent,
        deadline: Instant,
        session: &str,
        csrf: &str,
    ) -> Result<String, String> {
        let path = format!("/api/v1/events/{}/playback-token", self.event);
        let r = self.send(
            deadline,
            || {
                self.post(agent, &path)
                    .set("Cookie", &format!("strom_session={session}"))
                    .set("x-csrf-token", csrf)
            },
            &json!({}),
        )?;
        if r.status() != 200 {
            return Err(format!("playback token: {}", r.status()));
        }
        let answer: Value = serde_json::from_str(&r.into_string().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        Ok(answer["token"].as_str().ok_or("no token")?.to_owned())
    }

    /// `count` participants from `first` on, `clients` at once; `during`
    /// is called once `at` of them have joined (the fault), on this thread.
    fn run(
        self: &Arc<Self>,
        first: usize,
        count: usize,
        at: usize,
        during: impl FnOnce(),
    ) -> (Vec<Result<Joined, String>>, Duration) {
        let clients = 32;
        let next = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let (storm, next, done) = (self.clone(), next.clone(), done.clone());
                std::thread::spawn(move || {
                    // A connection per request: the balancer spreads every
                    // step of a participant's join over both replicas.
                    let agent = ureq::AgentBuilder::new()
                        .max_idle_connections(0)
                        .timeout(Duration::from_secs(30))
                        .build();
                    let mut joined = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return joined;
                        }
                        joined.push(storm.join(&agent, &format!("v{}@storm.example", first + i)));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        while done.load(Ordering::Relaxed) < at {
            std::thread::sleep(Duration::from_millis(10));
        }
        during();
        let joined = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        (joined, started.elapsed())
    }
}

/// The acceptance run. `STROM_STORM_PARTICIPANTS` sets the first storm's
/// size (10,000 by default); the second, through the database restart, is
/// a fifth of it.
#[test]
fn a_join_storm_survives_a_killed_replica_and_a_database_restart() {
    let _serial = strom_tests::serial();
    let participants: usize = std::env::var("STROM_STORM_PARTICIPANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut pg = Postgres::start();
    let url = pg.database("storm");
    let dir = tempfile::tempdir().unwrap();
    // The test's own view of the installation: the same database and
    // master key as the replicas.
    let repo = super::replica(&url, dir.path());
    let tenant = repo.create_tenant("Storm").unwrap().id;
    let now = strom_control_plane::repo::now();
    let mut event = strom_control_plane::model::Event::open(
        &tenant,
        "Town hall",
        now - time::Duration::minutes(5),
        now + time::Duration::hours(2),
    );
    event.privacy_notice = "We process your address to let you in.".into();
    let event = repo.create_event("system", event).unwrap().id;

    let master_key = dir.path().join("master.key");
    let ports = [strom_tests::free_tcp_port(), strom_tests::free_tcp_port()];
    let mut a = ReplicaProcess::start("replica-a", dir.path(), &url, &master_key, ports[0]);
    let b = ReplicaProcess::start("replica-b", dir.path(), &url, &master_key, ports[1]);
    let balancer = Balancer::start(
        ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect(),
    );
    let mails = Mails::watch(vec![a.outbox("replica-a"), b.outbox("replica-b")]);
    let storm = Arc::new(Storm {
        base: balancer.url(),
        tenant: tenant.clone(),
        event: event.clone(),
        mails,
        tally: Mutex::new(Tally::default()),
    });

    // Storm one: replica A dies with SIGKILL a third of the way in.
    let (first, took) = storm.run(0, participants, participants / 3, || a.kill_9());
    let one = std::mem::take(&mut *storm.tally.lock().unwrap());
    eprintln!(
        "storm one: {participants} joins in {:.1} s with replica A killed after a third; {one:?}",
        took.as_secs_f64()
    );
    let failed: Vec<&String> = first.iter().filter_map(|j| j.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {participants} got no token: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        one.transport > 0,
        "the kill cut no request: the storm did not test it"
    );
    assert!(one.unclean.is_empty(), "{one:?}");

    // Storm two, both replicas up: the database stops for three seconds a
    // third of the way in (a restart, or a failover to a standby).
    a.restart();
    let second_size = (participants / 5).max(1);
    let (second, took) = storm.run(participants, second_size, second_size / 3, || {
        pg.stop();
        std::thread::sleep(Duration::from_secs(3));
        pg.start_again();
    });
    let two = std::mem::take(&mut *storm.tally.lock().unwrap());
    eprintln!(
        "storm two: {second_size} joins in {:.1} s with the database restarted; {two:?}",
        took.as_secs_f64()
    );
    let failed: Vec<&String> = second.iter().filter_map(|j| j.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {second_size} got no token: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        two.retry_after > 0,
        "no request met the restart: the storm did not test it"
    );
    assert!(
        two.unclean.is_empty(),
        "answers during the restart that were not 503 with Retry-After: {two:?}"
    );

    // Nothing acknowledged is lost: every registration is there once,
    // every session still answers, every token is a valid one for the event.
    let joined: Vec<Joined> = first
        .into_iter()
        .chain(second)
        .map(Result::unwrap)
        .collect();
    let stored = repo.participants(&tenant, &event).unwrap();
    assert_eq!(
        stored.len(),
        joined.len(),
        "participants stored against registrations acknowledged"
    );
    let verifier = strom_token::Verifier::new();
    verifier.set_keys(&repo.key_set().unwrap());
    let at = time::OffsetDateTime::now_utc();
    let deadline = Instant::now() + Duration::from_secs(600);
    std::thread::scope(|scope| {
        for chunk in joined.chunks(joined.len().div_ceil(16)) {
            let (repo, verifier, storm, tenant, event) =
                (&repo, &verifier, &storm, &tenant, &event);
            scope.spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                for j in chunk {
                    repo.participant_by_email(tenant, event, &j.email)
                        .unwrap_or_else(|e| panic!("{}: {e}", j.email));
                    verifier
                        .authorize(
                            &j.token,
                            strom_token::Action::Play,
                            &[tenant, event, "main"],
                            at,
                        )
                        .unwrap_or_else(|e| panic!("{}: {e:?}", j.email));
                    storm
                        .token(&agent, deadline, &j.session, &j.csrf)
                        .unwrap_or_else(|e| panic!("{}'s session: {e}", j.email));
                }
            });
        }
    });
    // The audit chain both replicas wrote to verifies.
    let (records, broken) =
        strom_control_plane::verify_audit_trail(repo.store.as_ref(), &tenant).unwrap();
    assert!(broken.is_empty(), "{broken:?}");
    assert!(
        records as usize >= joined.len(),
        "{records} audit records for {} registrations",
        joined.len()
    );
    drop(b);
}

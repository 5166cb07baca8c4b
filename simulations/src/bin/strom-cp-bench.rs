//! Control-plane benchmarks (BENCHMARKS.md): token issuance and edge-side
//! verification per second on one core; argon2id password checks per second
//! and login throughput over HTTP; a join storm of N participants asking
//! for playback tokens, against a real control plane (RocksDB, HTTP), or
//! against one or more replicas on PostgreSQL (`--postgres`, `--replicas`),
//! with the CPU time of the benchmark process and of the database's
//! processes counted per phase.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use strom_control_plane::model::{Principal, Session};
use strom_control_plane::repo::{now, NewParticipant};
use strom_token::{Action, Grant, KeySet, SigningKey, Verifier};

#[derive(Parser)]
struct Args {
    /// Seconds per single-core measurement.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Participants in the join storm.
    #[arg(long, default_value_t = 10_000)]
    participants: usize,
    /// Concurrent requests in the join storm.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Run the control plane on this PostgreSQL database (libpq form;
    /// it must be empty) instead of embedded RocksDB.
    #[arg(long, env = "STROM_POSTGRES_URL")]
    postgres: Option<String>,
    /// Control-plane replicas on the one database, requests spread over
    /// them in turn as a load balancer would (PostgreSQL only).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Skip the single-core token and argon2 figures.
    #[arg(long)]
    http_only: bool,
}

/// CPU seconds used so far: this process, and every process named
/// `postgres` on the machine (the database's server and backends).
fn cpu_seconds() -> (f64, f64) {
    let ticks = 100.0; // USER_HZ on Linux
    let of = |stat: &str| -> Option<f64> {
        // Fields after the command's closing parenthesis; utime and stime
        // are the 12th and 13th of those.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
    };
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| of(&s))
        .unwrap_or(0.0);
    let mut database = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.filter_map(|e| e.ok()) {
            let path = e.path();
            if std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == "postgres") {
                database += std::fs::read_to_string(path.join("stat"))
                    .ok()
                    .and_then(|s| of(&s))
                    .unwrap_or(0.0);
            }
        }
    }
    (own, database)
}

/// CPU seconds since `from` (this process, the database).
fn cpu_since(from: (f64, f64)) -> (f64, f64) {
    let now = cpu_seconds();
    (now.0 - from.0, now.1 - from.1)
}

fn per_second(secs: f64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    if !args.http_only {
        single_core(&args);
    }
    let args = &args;
    anyhow::ensure!(
        args.replicas >= 1 && (args.replicas == 1 || args.postgres.is_some()),
        "several replicas need --postgres (RocksDB has one writer)"
    );
    println!(
        "store: {}, {} replica(s)",
        if args.postgres.is_some() {
            "PostgreSQL"
        } else {
            "RocksDB"
        },
        args.replicas
    );
    http(args).await
}

fn single_core(args: &Args) {
    // 1. Tokens, one core.
    let key = SigningKey::generate();
    let grant = Grant::play("p_abcdefghijkm", "t_abcdefghijkm", "e_abcdefghijkm");
    let mint = per_second(args.secs, || {
        key.mint(&grant, time::OffsetDateTime::now_utc()).unwrap();
    });
    let verifier = Verifier::new();
    verifier.set_keys(&KeySet {
        keys: vec![key.public_key()],
        media: Vec::new(),
    });
    let (token, _) = key.mint(&grant, time::OffsetDateTime::now_utc()).unwrap();
    let parts = ["t_abcdefghijkm", "e_abcdefghijkm", "main"];
    let verify = per_second(args.secs, || {
        verifier
            .authorize(
                &token,
                Action::Play,
                &parts,
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
    });
    println!(
        "tokens: mint {mint:.0}/s, verify+authorize {verify:.0}/s (one core); token {} bytes",
        token.len()
    );

    // 2. argon2id, one core.
    let hash = strom_identity::password::hash_password("Correct-horse-7");
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed().as_secs_f64() < args.secs {
        assert!(strom_identity::password::verify_password(
            "Correct-horse-7",
            &hash
        ));
        n += 1;
    }
    let per_core = n as f64 / t0.elapsed().as_secs_f64();
    println!(
        "argon2id verify: {per_core:.1}/s on one core ({:.1} ms each); hash {}",
        1000.0 / per_core,
        hash.split('$').take(4).collect::<Vec<_>>().join("$")
    );
}

async fn http(args: &Args) -> anyhow::Result<()> {
    // 3. A real control plane: one, or several replicas of one
    // installation (one master key, one database).
    let dir = tempfile::tempdir()?;
    let config = strom_control_plane::ControlPlaneConfig {
        listen: "127.0.0.1:0".parse()?,
        generate_master_key: true,
        master_key_file: Some(dir.path().join("master.key")),
        secure_cookies: false,
        rate_limit_per_ip_per_minute: u32::MAX,
        rate_limit_per_account_per_minute: u32::MAX,
        store: match &args.postgres {
            Some(url) => strom_control_plane::StoreConfig::Postgres {
                url: url.clone(),
                keys_url: None,
                ca_file: None,
            },
            None => strom_control_plane::StoreConfig::default(),
        },
        ..Default::default()
    };
    let mut bases = Vec::new();
    let mut repo = None;
    for i in 0..args.replicas {
        let data = dir.path().join(format!("replica-{i}"));
        let cp = strom_control_plane::ControlPlane::load(config.clone(), &data).await?;
        bases.push(format!("http://{}", cp.local_addr()?));
        repo.get_or_insert_with(|| cp.repo.clone());
        tokio::spawn(cp.run());
    }
    let repo = repo.expect("one replica at least");
    let bases = Arc::new(bases);
    let (tenant, _, owner_pw) =
        strom_control_plane::bootstrap(&repo, "Bench", "owner@bench.example", "Owner")?;
    let start = now() - time::Duration::minutes(5);
    let f = &time::format_description::well_known::Rfc3339;
    let (start, end) = (
        start.format(f)?,
        (start + time::Duration::hours(2)).format(f)?,
    );
    let event: strom_control_plane::model::Event = serde_json::from_value(serde_json::json!({
        "id": "", "tenant": tenant.id, "title": "Storm", "starts_at": start, "ends_at": end,
        "retention_days": 1, "access": "list", "form": [], "attendance": false, "privacy_notice": "", "created_at": start,
    }))?;
    let event = repo.create_event("bench", event)?;

    // Login throughput over HTTP (2 cores, 16 clients, one staff account each).
    let logins = 64;
    let mut accounts = Vec::new();
    for i in 0..16 {
        let (u, _) = repo.create_user(
            "bench",
            &tenant.id,
            &format!("s{i}@bench.example"),
            "Staff",
            strom_control_plane::model::Role::Moderator,
            Some("Correct-horse-7"),
        )?;
        accounts.push(format!("s{i}@bench.example"));
        let _ = u;
    }
    let client = reqwest::Client::new();
    let cpu = cpu_seconds();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, email) in accounts.iter().enumerate() {
        let (client, base, t, email) = (
            client.clone(),
            bases[i % bases.len()].clone(),
            tenant.id.clone(),
            email.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..logins / 16 {
                let r = client
                    .post(format!("{base}/api/v1/auth/login"))
                    .json(&serde_json::json!({"tenant": t, "email": email, "password": "Correct-horse-7"}))
                    .send()
                    .await
                    .unwrap();
                ok += (r.status() == 200) as usize;
            }
            let _ = i;
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await?;
    }
    let el = t0.elapsed().as_secs_f64();
    let (own, db) = cpu_since(cpu);
    println!(
        "login over HTTP: {ok}/{logins} ok in {el:.2} s = {:.1} logins/s (all cores); CPU per login: control plane and clients {:.1} ms, database {:.1} ms",
        ok as f64 / el,
        own * 1000.0 / ok.max(1) as f64,
        db * 1000.0 / ok.max(1) as f64
    );
    let _ = owner_pw;

    // Join storm: participants already logged in (sessions), all ask for a playback token.
    let t0 = Instant::now();
    let mut secrets = Vec::with_capacity(args.participants);
    for chunk in 0..args.participants.div_ceil(1000) {
        let rows: Vec<NewParticipant> = (chunk * 1000..((chunk + 1) * 1000).min(args.participants))
            .map(|i| NewParticipant {
                email: format!("v{i}@bench.example"),
                name: format!("Viewer {i}"),
                fields: Default::default(),
                password: None,
                status: strom_control_plane::model::ParticipantStatus::Active,
                source: strom_control_plane::model::ParticipantSource::Imported,
                consent: None,
            })
            .collect();
        for p in repo.create_participants("bench", &tenant.id, &event.id, rows)? {
            let s = Session {
                tenant: tenant.id.clone(),
                principal: Principal::Participant {
                    event: event.id.clone(),
                    participant: p.id,
                },
                csrf: "bench-csrf".into(),
                created_at: now(),
                last_seen: now(),
                idle_minutes: 60,
                must_change_password: false,
                must_enrol_totp: false,
            };
            secrets.push(repo.create_session(&s)?);
        }
    }
    println!(
        "prepared {} participants with sessions in {:.1} s",
        secrets.len(),
        t0.elapsed().as_secs_f64()
    );
    let secrets = Arc::new(secrets);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu = cpu_seconds();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, bases, secrets, next, e) = (
            client.clone(),
            bases.clone(),
            secrets.clone(),
            next.clone(),
            event.id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= secrets.len() {
                    return (lat, failed);
                }
                let s = Instant::now();
                let base = &bases[i % bases.len()];
                let r = client
                    .post(format!("{base}/api/v1/events/{e}/playback-token"))
                    .header("cookie", format!("strom_session={}", secrets[i]))
                    .header("x-csrf-token", "bench-csrf")
                    .json(&serde_json::json!({}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => lat.push(s.elapsed()),
                    _ => failed += 1,
                }
            }
        }));
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await?;
        lat.extend(l);
        failed += f;
    }
    let el = t0.elapsed().as_secs_f64();
    let (own, db) = cpu_since(cpu);
    lat.sort();
    println!(
        "join storm: {} playback tokens in {el:.2} s = {:.0}/s, {failed} failed; latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms (concurrency {}); CPU per join: control plane and clients {:.2} ms, database {:.2} ms",
        lat.len(),
        lat.len() as f64 / el,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        args.concurrency,
        own * 1000.0 / lat.len().max(1) as f64,
        db * 1000.0 / lat.len().max(1) as f64
    );
    Ok(())
}

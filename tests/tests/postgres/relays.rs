//! Relays and browsers reaching several replicas over HTTP: relay reports
//! and agent rosters shared through the database and 503 while it
//! restarts, a relay that lists two replicas carrying on when the first
//! dies, one rate-limit window across replicas, and what shared reports
//! cost.

use super::*;

/// POSTs a relay status report; the status code and Retry-After.
fn report(base: &str, credential: &str, body: &serde_json::Value) -> (u16, Option<String>) {
    let sent = ureq::post(&format!("{base}/api/v1/relay/status"))
        .set("Authorization", &format!("Bearer {credential}"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string());
    match sent {
        Ok(r) => (r.status(), None),
        Err(ureq::Error::Status(code, r)) => (code, r.header("retry-after").map(str::to_owned)),
        Err(e) => panic!("report: {e}"),
    }
}

#[test]
fn two_http_replicas_share_relay_reports_and_rosters_and_say_503_while_the_database_restarts() {
    let mut pg = Postgres::start();
    let url = pg.database("replicas");
    let shared = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = super::replica_config(&url, shared.path());
    // Two replicas of one installation, as behind a load balancer.
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut planes = Vec::new();
    for dir in &dirs {
        let cp = rt
            .block_on(strom_control_plane::ControlPlane::load(
                config.clone(),
                dir.path(),
            ))
            .unwrap();
        planes.push(cp);
    }
    let origin = planes[0]
        .relay_credential(strom_control_plane::RelayRole::Origin, "origin-1")
        .unwrap();
    let edge = planes[1]
        .relay_credential(strom_control_plane::RelayRole::Edge, "edge-1")
        .unwrap();
    let bases: Vec<String> = planes
        .iter()
        .map(|cp| format!("http://{}", cp.local_addr().unwrap()))
        .collect();
    let states: Vec<_> = planes.iter().map(|cp| cp.state.clone()).collect();
    let tasks: Vec<_> = planes.into_iter().map(|cp| rt.spawn(cp.run())).collect();
    let live = |i: usize| states[i].relay_status.stream("t/e/main").unwrap();

    // The origin reports to replica A only; replica B says the stream is
    // live. The edge reports its viewers to B; A counts them.
    let streams = |viewers: u64| serde_json::json!([{ "namespace": "t/e/main", "ingest_bps": 2_500_000, "viewers": viewers }]);
    let origin_report = serde_json::json!({
        "role": "origin", "streams": streams(0), "events": [], "egress_bps": 0, "cpu_cores": 0.2
    });
    let edge_report = serde_json::json!({
        "role": "edge", "streams": streams(17), "events": [], "egress_bps": 1_000_000, "cpu_cores": 0.1
    });
    assert_eq!(report(&bases[0], &origin, &origin_report).0, 204);
    assert_eq!(report(&bases[1], &edge, &edge_report).0, 204);
    for i in 0..2 {
        let figures = live(i);
        assert!(figures.live, "replica {i}: {figures:?}");
        assert_eq!(figures.ingest_bps, 2_500_000);
        assert_eq!(figures.viewers, 17, "replica {i}");
    }
    // The credentials hold on either replica: the origin's on B too.
    assert_eq!(report(&bases[1], &origin, &origin_report).0, 204);

    // A site's agents registering with different replicas find each other
    // (and players on either replica get them as their nearest servers).
    let repo = &states[0].repo;
    let tenant = repo.create_tenant("Acme").unwrap().id;
    let site = strom_control_plane::model::Site {
        id: strom_control_plane::model::new_id("s"),
        tenant: tenant.clone(),
        name: "Berlin office".into(),
        cidrs: vec!["10.1.0.0/16".into()],
        p2p: strom_control_plane::model::P2pMode::On,
    };
    repo.put_site("system", &site, true).unwrap();
    let (_, agent_credential) = repo.issue_agent_credential("system", &tenant).unwrap();
    let register = |base: &str, peer: &str, addr: &str| -> serde_json::Value {
        let body = serde_json::json!({
            "peer_id": peer, "addrs": [addr], "listen": [format!("/ip4/{addr}/udp/4001/quic-v1")],
            "moqt_port": 4443, "http_port": 8443
        });
        let answer = ureq::post(&format!("{base}/api/v1/agents/register"))
            .set("Authorization", &format!("Bearer {agent_credential}"))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .expect("registered");
        serde_json::from_str(&answer.into_string().unwrap()).unwrap()
    };
    let (one, two) = (
        "12D3KooWLdvg7ZbBHnyFeY4kU7VZ5U3T8fM6o6x4o3HVYxBXYxKn",
        "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
    );
    let first = register(&bases[0], one, "10.1.0.5");
    assert_eq!(first["roster"], serde_json::json!([]));
    let second = register(&bases[1], two, "10.1.0.6");
    let roster: Vec<&str> = second["roster"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["peer_id"].as_str().unwrap())
        .collect();
    assert_eq!(roster, [one], "replica B's roster lacks the agent A took");
    for state in &states {
        let ids: Vec<String> = state
            .agents
            .site_agents(&tenant, &site.id)
            .unwrap()
            .into_iter()
            .map(|e| e.peer_id)
            .collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
    }

    // The database restarts (or fails over): the replicas say 503 with a
    // Retry-After instead of failing in odd ways, and recover by themselves.
    pg.stop();
    for base in &bases {
        let (code, retry) = report(base, &origin, &origin_report);
        assert_eq!(code, 503, "{base}");
        assert_eq!(retry.as_deref(), Some("5"));
        // A browser's session cannot be looked up either: that is not a
        // logout (401 would send the viewer to the login page).
        match ureq::get(&format!("{base}/api/v1/me"))
            .set("Cookie", "__Host-strom_session=some-session")
            .call()
        {
            Err(ureq::Error::Status(code, r)) => {
                assert_eq!(code, 503, "a session looked up while the database is down");
                assert_eq!(r.header("retry-after"), Some("5"));
            }
            other => panic!("a session looked up while the database is down: {other:?}"),
        }
    }
    pg.start_again();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (code, _) = report(&bases[1], &origin, &origin_report);
        if code == 204 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica B still answers {code} 15 s after the database came back"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Presence lives in an unlogged relation: after a crash it would be
    // empty, after this clean restart it is kept; either way the origin's
    // report of just now is there.
    assert!(live(0).live);
    for t in tasks {
        t.abort();
    }
    drop(rt);
}

/// A relay that lists two replicas (no load balancer in front) goes on
/// reporting, learning revocations and fetching SRT secrets when the first
/// replica's machine dies, and one that starts while it is dead finds the
/// second.
#[test]
fn a_relay_listing_two_replicas_carries_on_when_the_first_dies() {
    use std::time::{Duration, Instant};
    let pg = Postgres::start();
    let url = pg.database("failover");
    let shared = tempfile::tempdir().unwrap();
    let config = super::replica_config(&url, shared.path());
    // Each replica in its own runtime: dropping one stops its listener and
    // every connection it holds, as a machine that dies.
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    let (rt_a, rt_b, relay_rt) = (runtime(), runtime(), runtime());
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let start = |rt: &tokio::runtime::Runtime, dir: &std::path::Path| {
        let cp = rt
            .block_on(strom_control_plane::ControlPlane::load(config.clone(), dir))
            .unwrap();
        let base: url::Url = format!("http://{}/", cp.local_addr().unwrap())
            .parse()
            .unwrap();
        let state = cp.state.clone();
        let credential = cp
            .relay_credential(strom_control_plane::RelayRole::Origin, "origin-1")
            .unwrap();
        rt.spawn(cp.run());
        (base, state, credential)
    };
    let (base_a, _, credential) = start(&rt_a, dirs[0].path());
    let (base_b, state_b, _) = start(&rt_b, dirs[1].path());
    let tenant = state_b.repo.create_tenant("Acme").unwrap().id;
    let link = strom_relay::ControlPlaneLink {
        url: base_a.clone(),
        fallback_urls: vec![base_b.clone()],
        credential,
        ca_file: None,
    };
    let namespace = format!("{tenant}/e/main");
    let status = move || strom_protocol::RelayStatus {
        role: strom_protocol::RelayKind::Origin,
        streams: vec![strom_protocol::StreamStatus {
            namespace: namespace.clone(),
            ingest_bps: 1_000_000,
            viewers: 0,
        }],
        events: vec![],
        egress_bps: 0,
        cpu_cores: 0.1,
    };
    let verifier = Arc::new(strom_token::Verifier::new());
    let slot = strom_relay::SrtSecretSlot::default();
    let (reporting, sync, _srt) = relay_rt.block_on(async {
        (
            tokio::spawn(strom_relay::report_status(link.clone(), status)),
            strom_relay::start_key_sync(link.clone(), verifier.clone())
                .await
                .unwrap(),
            strom_relay::fetch_srt_secrets(link.clone(), slot.clone()),
        )
    });
    let fresh_report = |within: Duration| {
        state_b
            .relay_status
            .current(Instant::now())
            .unwrap()
            .iter()
            .any(|(id, r)| id == "origin-1" && r.at.elapsed() < within)
    };
    let wait = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(Instant::now() < deadline, "{what} within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("a report", &|| fresh_report(Duration::from_secs(3)));
    wait("the tenant's SRT secret", &|| {
        slot.get(&tenant).ok().flatten().is_some()
    });

    // Replica A's machine dies.
    drop(rt_a);
    let died = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    wait("reports after A died", &|| {
        fresh_report(Duration::from_secs(1))
    });
    // A revocation recorded on B reaches the relay's verifier (its long
    // poll moved to B), and so does a new tenant's SRT secret.
    let before = verifier.revocations().seq();
    state_b
        .repo
        .revoke(strom_token::RevocationKind::Subject, &tenant, "p_gone")
        .unwrap();
    wait("the revocation at the relay", &|| {
        verifier.revocations().seq() > before
    });
    let newcomer = state_b.repo.create_tenant("Newcomer").unwrap().id;
    wait("the new tenant's SRT secret", &|| {
        slot.get(&newcomer).ok().flatten().is_some()
    });
    eprintln!(
        "after replica A died: reports, revocations and SRT secrets from B within {:.1} s",
        died.elapsed().as_secs_f64()
    );

    // A relay starting now, A still dead, finds B for its first key set.
    let late = Arc::new(strom_token::Verifier::new());
    let _late_sync = relay_rt
        .block_on(strom_relay::start_key_sync(link.clone(), late.clone()))
        .unwrap();
    wait("the late relay's revocations from B", &|| {
        late.revocations().seq() > 0
    });
    reporting.abort();
    drop(sync);
    drop(relay_rt);
    drop(rt_b);
}

/// Rate limits count one window across replicas: an attacker alternating
/// between two replicas behind a load balancer gets the allowance of one.
#[test]
fn two_http_replicas_count_one_rate_limit_window() {
    let pg = Postgres::start();
    let url = pg.database("limits");
    let shared = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = ControlPlaneConfig {
        rate_limit_per_ip_per_minute: 6,
        rate_limit_per_account_per_minute: 4,
        ..super::replica_config(&url, shared.path())
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut bases = Vec::new();
    let mut tasks = Vec::new();
    for dir in &dirs {
        let cp = rt
            .block_on(strom_control_plane::ControlPlane::load(
                config.clone(),
                dir.path(),
            ))
            .unwrap();
        bases.push(format!("http://{}", cp.local_addr().unwrap()));
        tasks.push(rt.spawn(cp.run()));
    }
    let login = |base: &str, email: &str| -> (u16, Option<String>) {
        let body =
            serde_json::json!({ "tenant": "t_nosuchtenant", "email": email, "password": "wrong" });
        match ureq::post(&format!("{base}/api/v1/auth/login"))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
        {
            Ok(r) => (r.status(), None),
            Err(ureq::Error::Status(code, r)) => (code, r.header("retry-after").map(str::to_owned)),
            Err(e) => panic!("login: {e}"),
        }
    };
    // One account from one address, alternating replicas: the account's
    // allowance (4) is used up after four, not eight.
    let codes: Vec<u16> = (0..5)
        .map(|i| login(&bases[i % 2], "same@example.com").0)
        .collect();
    assert!(codes[..4].iter().all(|c| *c != 429), "{codes:?}");
    assert_eq!(codes[4], 429, "{codes:?}");
    // The address's allowance (6) covers every account: one more request
    // with a fresh address each time, alternating, and the 7th is refused
    // on whichever replica it lands, with a time to come back.
    let (code, _) = login(&bases[1], "other-1@example.com");
    assert_ne!(code, 429, "the 6th request from this address");
    for (i, base) in bases.iter().enumerate() {
        let (code, retry) = login(base, &format!("fresh-{i}@example.com"));
        assert_eq!(code, 429, "replica {i}");
        let retry: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    for t in tasks {
        t.abort();
    }
    drop(rt);
}

/// What relay reports cost on PostgreSQL: puts per second from several
/// threads (replicas taking reports) and the time to list them all (what
/// `/live` and the dashboard read). A measurement for BENCHMARKS.md, not a
/// check: `cargo test -p strom-tests --test postgres -- --ignored --nocapture`.
#[test]
#[ignore]
fn presence_cost_on_postgresql() {
    use strom_control_plane::store::Presence;
    let pg = Postgres::start();
    let url = pg.database("presencecost");
    let store = Arc::new(PgStore::connect(&url, "strom_kv").unwrap());
    // A report as an edge with 20 streams sends it, JSON-encoded.
    let value = vec![b'x'; 2_000];
    let ttl = std::time::Duration::from_secs(10);
    for relays in [100usize, 1_000] {
        let puts = 20_000;
        let started = std::time::Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (store, value) = (store.clone(), value.clone());
                std::thread::spawn(move || {
                    for i in 0..puts / 4 {
                        let key = format!("e/relay-{}", (i * 4 + t) % relays);
                        store.put("relay-status", &key, &value, ttl).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let rate = puts as f64 / started.elapsed().as_secs_f64();
        let started = std::time::Instant::now();
        let rounds = 50;
        for _ in 0..rounds {
            assert_eq!(store.list("relay-status", "").unwrap().len(), relays);
        }
        let list_ms = started.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
        eprintln!(
            "{relays} relays: {rate:.0} reports/s from 4 threads (a relay reports every 2 s: \
             room for {:.0} relays); listing all {relays}: {list_ms:.1} ms",
            rate * 2.0
        );
    }
    // Rate-limit hits: one upsert each. Spread over 10,000 addresses, and
    // all on one key (a flood from one address: the row lock serialises).
    for (what, keys) in [("10,000 addresses", 10_000usize), ("one address", 1)] {
        let hits = 20_000;
        let started = std::time::Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..hits / 4 {
                        let key = format!("10.0.{}", (i * 4 + t) % keys);
                        store
                            .count("limit-ip", &key, std::time::Duration::from_secs(60))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let rate = hits as f64 / started.elapsed().as_secs_f64();
        eprintln!("rate-limit hits on {what}: {rate:.0}/s from 4 threads");
    }
}

//! Moving up and keeping safe: `strom control-plane migrate` from an
//! embedded installation, PostgreSQL dumps that hold no keys and replay
//! later deletions, and the store reaching the database over verified TLS
//! only.

use super::*;

/// `strom control-plane migrate` as an operator runs it the day an embedded
/// installation outgrows one machine: refused while the control plane
/// runs, a verified copy once it is stopped, the copy serving with every
/// participant, consent and audit record, a second run refused, and a run
/// that was interrupted completed by the next.
#[test]
fn an_embedded_installation_moves_into_postgresql_verified() {
    use std::process::Command;
    use strom_control_plane::model::{Event, ParticipantSource, ParticipantStatus};
    use strom_control_plane::repo::NewParticipant;
    use strom_tests::strom_bin;

    let pg = Postgres::start();
    let url = pg.database("moved");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("control-plane")).unwrap();
    let embedded = ControlPlaneConfig {
        generate_master_key: true,
        ..ControlPlaneConfig::default()
    };
    let on_pg = |url: &str| ControlPlaneConfig {
        store: StoreConfig::Postgres {
            url: url.to_owned(),
            keys_url: None,
            ca_file: None,
        },
        ..ControlPlaneConfig::default()
    };
    let config_file = dir.path().join("strom.toml");
    std::fs::write(
        &config_file,
        format!("data_dir = {data:?}\n[control_plane]\ngenerate_master_key = true\n"),
    )
    .unwrap();
    let strom = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(strom_bin())
            .arg("--config")
            .arg(&config_file)
            .arg("control-plane")
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("strom control-plane");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // --- an embedded installation: one tenant, two events, 1,010
    // participants, consent given and withdrawn, everything audited.
    let repo = open_repo(&embedded, &data).unwrap().0;
    let (tenant, _) = staff(&repo);
    let now = time::OffsetDateTime::now_utc();
    let town_hall = repo
        .create_event(
            "system",
            Event::open(&tenant, "Town hall", now, now + time::Duration::hours(2)),
        )
        .unwrap()
        .id;
    let board = repo
        .create_event(
            "system",
            Event::open(&tenant, "Board", now, now + time::Duration::hours(1)),
        )
        .unwrap()
        .id;
    let row = |i: usize| NewParticipant {
        email: format!("person{i}@example.com"),
        name: format!("Person {i}"),
        fields: Default::default(),
        password: None,
        status: ParticipantStatus::Active,
        source: ParticipantSource::Imported,
        consent: None,
    };
    for chunk in (0..1_000).collect::<Vec<_>>().chunks(250) {
        repo.create_participants(
            "system",
            &tenant,
            &town_hall,
            chunk.iter().map(|&i| row(i)).collect(),
        )
        .unwrap();
    }
    repo.create_participants("system", &tenant, &board, (1_000..1_010).map(row).collect())
        .unwrap();
    let people = repo.participants(&tenant, &town_hall).unwrap();
    for p in people.iter().take(100) {
        repo.record_consent(&tenant, &town_hall, &p.id, "notice v1", true)
            .unwrap();
    }
    repo.record_consent(&tenant, &town_hall, &people[0].id, "notice v1", false)
        .unwrap();
    let emails = |repo: &Repo| {
        let mut e: Vec<String> = repo
            .participants(&tenant, &town_hall)
            .unwrap()
            .iter()
            .map(|p| repo.participant_view(p).unwrap().email)
            .collect();
        e.sort();
        e
    };
    let before = emails(&repo);
    assert_eq!(before.len(), 1_000);

    // --- while the control plane has the database open: refused.
    let (ok, _, err) = strom(&["migrate", "--to", &url], &[]);
    assert!(!ok);
    assert!(err.contains("stop the control plane first"), "{err}");
    drop(repo);

    // --- stopped: copied and verified. The URL comes from the
    // environment, as an operator passes one with a password.
    let (ok, out, err) = strom(&["migrate"], &[("STROM_POSTGRES_URL", &url)]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("1010 participants") && out.contains("1 users"),
        "{out}"
    );
    assert!(out.contains(&format!("audit chain of {tenant}")), "{out}");
    assert!(
        !out.contains(&url) && !err.contains(&url),
        "the URL is not echoed"
    );

    // The copy serves: every participant, consent record and audit record.
    let moved = open_repo(&on_pg(&url), &data).unwrap().0;
    assert_eq!(emails(&moved), before);
    assert_eq!(moved.participants(&tenant, &board).unwrap().len(), 10);
    let consents = moved.consents(&tenant, &town_hall, &people[0].id).unwrap();
    assert_eq!(consents.len(), 2, "given, then withdrawn");
    assert_eq!(
        moved
            .consents(&tenant, &town_hall, &people[99].id)
            .unwrap()
            .len(),
        1
    );
    let (records, findings) =
        strom_control_plane::verify_audit_trail(&moved_store(&url), &tenant).unwrap();
    assert!(findings.is_empty(), "{findings:?}");
    assert!(records > 100, "imports and consent are audited: {records}");
    drop(moved);
    std::fs::write(
        &config_file,
        format!("data_dir = {data:?}\n[control_plane.store]\nkind = \"postgres\"\nurl = {url:?}\n"),
    )
    .unwrap();
    let (ok, out, err) = strom(&["audit", "verify"], &[]);
    assert!(
        ok && out.contains(&format!("{tenant}: {records} records, chain intact")),
        "{out}\n{err}"
    );
    std::fs::write(
        &config_file,
        format!("data_dir = {data:?}\n[control_plane]\ngenerate_master_key = true\n"),
    )
    .unwrap();

    // --- a second run into the now serving database: refused, untouched.
    let rows = pg.sql_in("moved", "SELECT count(*) FROM strom_kv");
    let (ok, _, err) = strom(&["migrate", "--to", &url], &[]);
    assert!(!ok);
    assert!(err.contains("already holds a control plane"), "{err}");
    assert_eq!(pg.sql_in("moved", "SELECT count(*) FROM strom_kv"), rows);

    // --- a run stopped half way leaves its mark and some rows (here made
    // as such a run leaves them): no control plane starts on it, and the
    // next run clears it and completes.
    let half = pg.database("half");
    {
        let store = PgStore::connect(&half, "strom_kv").unwrap();
        let mut b = Batch::default();
        b.put(
            Table::Meta,
            strom_control_plane::migrate::MARKER,
            b"2026-12-07T17:00:00Z".to_vec(),
        );
        b.put(Table::Tenants, tenant.as_bytes().to_vec(), b"{}".to_vec());
        store.write(b).unwrap();
    }
    let refused = open_repo(&on_pg(&half), &data).err().expect("refused");
    assert!(
        format!("{refused:#}").contains("did not finish"),
        "{refused:#}"
    );
    let (ok, out, err) = strom(&["migrate", "--to", &half], &[]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("interrupted migration"), "{out}");
    let completed = open_repo(&on_pg(&half), &data).unwrap().0;
    assert_eq!(emails(&completed), before);
}

fn moved_store(url: &str) -> PgStore {
    PgStore::connect(url, "strom_kv").unwrap()
}

/// Backups on PostgreSQL keep what the RocksDB path promises: the data
/// relation is dumped without the keys (they never sit in a data backup),
/// and deletions made after the backup — an event, one participant — are
/// replayed from the journal when a control plane starts on the restored
/// data, so a restore brings nobody back. `strom control-plane backup` and
/// `restore` refuse on a PostgreSQL configuration and say how instead.
#[test]
fn a_restored_postgresql_dump_replays_later_deletions_and_holds_no_keys() {
    use strom_control_plane::model::{Event, ParticipantSource, ParticipantStatus};
    use strom_control_plane::repo::NewParticipant;

    let pg = Postgres::start();
    let url = pg.database("restored");
    let dir = tempfile::tempdir().unwrap();
    let repo = replica(&url, dir.path());
    let (tenant, _) = staff(&repo);
    let now = time::OffsetDateTime::now_utc();
    let event = |title: &str| {
        repo.create_event(
            "system",
            Event::open(&tenant, title, now, now + time::Duration::hours(1)),
        )
        .unwrap()
        .id
    };
    let (kept, deleted) = (event("Kept"), event("Deleted later"));
    let row = |i: usize| NewParticipant {
        email: format!("restore{i}@example.com"),
        name: format!("Person {i}"),
        fields: Default::default(),
        password: None,
        status: ParticipantStatus::Active,
        source: ParticipantSource::Imported,
        consent: None,
    };
    let people = repo
        .create_participants("system", &tenant, &kept, (0..5).map(row).collect())
        .unwrap();
    repo.create_participants("system", &tenant, &deleted, (5..8).map(row).collect())
        .unwrap();

    // The documented backup: the data relation, in PostgreSQL's custom format.
    let dump = dir.path().join("strom_kv.dump");
    let out = pg
        .tool("pg_dump")
        .args(["-Fc", "-t", "strom_kv", "-f"])
        .arg(&dump)
        .args(["-d", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = pg.tool("pg_restore").arg("-l").arg(&dump).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("strom_kv"), "{listing}");
    assert!(
        !listing.contains("strom_keys"),
        "no keys in a data backup: {listing}"
    );

    // After the backup: an event deleted, a participant erased.
    repo.delete_event("system", &tenant, &deleted).unwrap();
    assert!(repo
        .erase_participant("system", &tenant, &kept, &people[0].id)
        .unwrap());
    drop(repo);

    // Restored over the live data, with every control plane stopped.
    let out = pg
        .tool("pg_restore")
        .args(["--clean", "--if-exists", "-d", &url])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pg.sql_in(
            "restored",
            "SELECT count(*) FROM strom_kv WHERE tbl = 'events'"
        ),
        "2",
        "the restore brought the deleted event's rows back"
    );

    // A control plane starting on it replays the journal first.
    let repo = replica(&url, dir.path());
    let events: Vec<String> = repo
        .events(&tenant)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(events, vec![kept.clone()]);
    assert!(matches!(
        repo.participants(&tenant, &deleted),
        Err(RepoError::NotFound)
    ));
    let left: Vec<String> = repo
        .participants(&tenant, &kept)
        .unwrap()
        .iter()
        .map(|p| repo.participant_view(p).unwrap().email)
        .collect();
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(!left.contains(&"restore0@example.com".to_owned()));
    assert!(repo
        .participant_by_email(&tenant, &kept, "restore0@example.com")
        .is_err());
    let store = PgStore::connect(&url, "strom_kv").unwrap();
    let (_, findings) = strom_control_plane::verify_audit_trail(&store, &tenant).unwrap();
    assert!(findings.is_empty(), "{findings:?}");

    // The embedded tools refuse on PostgreSQL, pointing to these steps.
    let config = dir.path().join("strom.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[control_plane]\nmaster_key_file = {:?}\n[control_plane.store]\nkind = \"postgres\"\nurl = {url:?}\n",
            dir.path().join("data"),
            dir.path().join("master.key")
        ),
    )
    .unwrap();
    for args in [["backup", "--to"], ["restore", "--from"]] {
        let out = std::process::Command::new(strom_tests::strom_bin())
            .arg("--config")
            .arg(&config)
            .arg("control-plane")
            .args(args)
            .arg(dir.path().join("elsewhere"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("pg_dump") && err.contains("journal"), "{err}");
        assert!(
            !dir.path().join("data/control-plane/db").exists(),
            "no RocksDB made"
        );
    }
}

/// How fast `migrate` copies and verifies: an embedded installation with
/// 20,000 participants (each with index rows and audit records) into
/// PostgreSQL. A measurement for BENCHMARKS.md:
/// `cargo test -p strom-tests --test postgres -- --ignored --nocapture migrate_cost`.
#[test]
#[ignore]
fn migrate_cost() {
    use strom_control_plane::migrate::{migrate, Stores};
    use strom_control_plane::model::{Event, ParticipantSource, ParticipantStatus};
    use strom_control_plane::repo::NewParticipant;
    use strom_control_plane::store::RocksStore;
    use strom_control_plane::{MasterKeys, Paths};

    let pg = Postgres::start();
    let url = pg.database("migratecost");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("control-plane")).unwrap();
    let embedded = ControlPlaneConfig {
        generate_master_key: true,
        ..ControlPlaneConfig::default()
    };
    let repo = open_repo(&embedded, &data).unwrap().0;
    let (tenant, _) = staff(&repo);
    let now = time::OffsetDateTime::now_utc();
    let event = repo
        .create_event(
            "system",
            Event::open(&tenant, "Town hall", now, now + time::Duration::hours(2)),
        )
        .unwrap()
        .id;
    let people = 20_000;
    for chunk in (0..people).collect::<Vec<_>>().chunks(1_000) {
        let rows = chunk
            .iter()
            .map(|i| NewParticipant {
                email: format!("person{i}@example.com"),
                name: format!("Person {i}"),
                fields: Default::default(),
                password: None,
                status: ParticipantStatus::Active,
                source: ParticipantSource::Imported,
                consent: None,
            })
            .collect();
        repo.create_participants("system", &tenant, &event, rows)
            .unwrap();
    }
    drop(repo);
    let paths = Paths::new(&data);
    let source = Stores {
        data: Arc::new(RocksStore::open(&paths.db(), &Table::DATA).unwrap()),
        keys: Arc::new(RocksStore::open(&paths.keys(), &Table::KEYS).unwrap()),
    };
    let target = Stores {
        data: Arc::new(PgStore::connect(&url, "strom_kv").unwrap()),
        keys: Arc::new(PgStore::connect(&url, "strom_keys").unwrap()),
    };
    let master = MasterKeys::load(&paths.master_key(), false).unwrap();
    let started = std::time::Instant::now();
    let m = migrate(&source, &target, master, &mut |_, _| {}).unwrap();
    let took = started.elapsed().as_secs_f64();
    let rows: u64 = m.tables.iter().map(|t| t.rows).sum();
    eprintln!(
        "{people} participants: {rows} rows copied and verified in {took:.1} s ({:.0} rows/s), \
         {} audit records, {} participants opened",
        rows as f64 / took,
        m.audit.iter().map(|(_, n)| n).sum::<u64>(),
        m.participants_opened
    );
}

/// The store reaches a database off this machine over TLS only, and only a
/// server whose certificate chains to the configured CA: a server with
/// another certificate (an attacker on the path) is refused, a missing CA
/// file is named, and a plain connection where the server demands TLS
/// fails rather than being retried in the clear.
#[test]
fn the_store_reaches_postgresql_over_verified_tls_only() {
    use strom_relay::tls::generate_self_signed;
    let day = std::time::Duration::from_secs(24 * 3600);
    let port = strom_tests::free_tcp_port();
    let (cert, key) = generate_self_signed(&["127.0.0.1".into(), "localhost".into()], day).unwrap();
    let pg = Postgres::start_tls(port, &cert, &key);
    pg.sql("CREATE DATABASE tls");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert).unwrap();
    let (other, _) = generate_self_signed(&["127.0.0.1".into()], day).unwrap();
    let wrong_ca = dir.path().join("other-ca.pem");
    std::fs::write(&wrong_ca, other).unwrap();
    let plain = format!("host=127.0.0.1 port={port} user=strom dbname=tls");
    let tls = format!("{plain} sslmode=verify-full");
    let error = |r: Result<PgStore, strom_control_plane::store::StoreError>| match r {
        Ok(_) => panic!("connected"),
        Err(e) => {
            eprintln!("refused: {e}");
            e.to_string()
        }
    };

    // Loopback without sslmode stays plain, which this server refuses.
    let e = error(PgStore::connect_with(&plain, "strom_kv", Some(&ca)));
    assert!(e.contains("no encryption") || e.contains("pg_hba"), "{e}");
    // TLS without a CA file: named.
    let e = error(PgStore::connect_with(&tls, "strom_kv", None));
    assert!(e.contains("ca_file"), "{e}");
    // A server whose certificate the CA did not sign.
    let e = error(PgStore::connect_with(&tls, "strom_kv", Some(&wrong_ca)));
    assert!(
        e.to_lowercase().contains("certificate") || e.contains("tls"),
        "{e}"
    );

    // With the right CA: a store meeting its contract, over TLS.
    let store = PgStore::connect_with(&tls, "strom_kv", Some(&ca)).unwrap();
    contract::check(&store);
    let encrypted = pg.sql_in(
        "tls",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE s.ssl AND a.datname = 'tls' AND a.pid <> pg_backend_pid()",
    );
    assert!(encrypted.parse::<u32>().unwrap() >= 1, "{encrypted}");
    drop(store);

    // And a control plane configured so.
    let config = ControlPlaneConfig {
        generate_master_key: true,
        master_key_file: Some(dir.path().join("master.key")),
        store: StoreConfig::Postgres {
            url: tls.clone(),
            keys_url: None,
            ca_file: Some(ca.clone()),
        },
        ..ControlPlaneConfig::default()
    };
    let repo = open_repo(&config, dir.path()).unwrap().0;
    staff(&repo);
}

//! The control plane on PostgreSQL, against a real server (Debian's
//! `postgresql`, started per test): the store meets the same contract as
//! RocksDB, and what one process's write lock guarantees holds between
//! replicas sharing one database — a link is used once, lockout counts
//! attempts wherever they land, the audit chain neither forks nor gaps
//! under writers on two replicas, and a replica whose connection dies in
//! the middle of a write section cannot write on the lock it lost.
//!
//! Beside this file, in `postgres/`: replicas as processes behind a load
//! balancer (`storm`: the join storm; `replicas`: lockout and revocation
//! over HTTP), relays reaching replicas (`relays`), moving up, backups and
//! TLS (`moving`), and viewers through an outage (`outage`).

use std::sync::{Arc, Barrier};

use strom_control_plane::model::{Link, LinkPurpose, Principal, Role};
use strom_control_plane::repo::{Repo, RepoError};
use strom_control_plane::store::{contract, Batch, PgStore, Store, Table};
use strom_control_plane::{open_repo, ControlPlaneConfig, StoreConfig};
use strom_tests::postgres::Postgres;

#[path = "postgres/moving.rs"]
mod moving;
#[path = "postgres/outage.rs"]
mod outage;
#[path = "postgres/relays.rs"]
mod relays;
#[path = "postgres/replicas.rs"]
mod replicas;
#[path = "postgres/storm.rs"]
mod storm;

/// A replica's repository on `url`; replicas made with the same `dir`
/// share the master key, as replicas of one installation do.
fn replica(url: &str, dir: &std::path::Path) -> Arc<Repo> {
    open_repo(&replica_config(url, dir), dir)
        .expect("a replica")
        .0
}

/// A replica's configuration on `url`, listening on a free port, with the
/// master key shared through `dir`.
fn replica_config(url: &str, dir: &std::path::Path) -> ControlPlaneConfig {
    ControlPlaneConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        generate_master_key: true,
        master_key_file: Some(dir.join("master.key")),
        store: StoreConfig::Postgres {
            url: url.to_owned(),
            keys_url: None,
            ca_file: None,
        },
        ..ControlPlaneConfig::default()
    }
}

fn staff(repo: &Repo) -> (String, Principal) {
    let t = repo.create_tenant("Acme").unwrap().id;
    let (u, _) = repo
        .create_user(
            "system",
            &t,
            "staff@example.com",
            "Staff",
            Role::Owner,
            None,
        )
        .unwrap();
    (
        t,
        Principal::Staff {
            user: u.id,
            role: Role::Owner,
        },
    )
}

#[test]
fn postgresql_meets_the_store_contract() {
    let pg = Postgres::start();
    let url = pg.database("contract");
    let store = PgStore::connect(&url, "strom_kv").unwrap();
    contract::check(&store);
    // A second connect (another replica starting) finds the schema there
    // and migrates nothing twice.
    let again = PgStore::connect(&url, "strom_kv").unwrap();
    assert_eq!(again.get(Table::Users, b"t1/a").unwrap().unwrap(), b"user");
    assert_eq!(
        pg.sql_in(
            "contract",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM strom_migrations \
             WHERE relation = 'strom_kv'"
        ),
        "1,2,3"
    );
    // A relation name is never SQL.
    assert!(PgStore::connect(&url, "kv; DROP TABLE strom_kv").is_err());
}

#[test]
fn replicas_starting_together_migrate_once() {
    let pg = Postgres::start();
    let url = pg.database("together");
    let start = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                PgStore::connect(&url, "strom_kv").map(|_| ())
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    assert_eq!(
        pg.sql_in(
            "together",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM strom_migrations"
        ),
        "1,2,3"
    );
}

#[test]
fn a_link_is_used_once_whichever_replicas_race_for_it() {
    let pg = Postgres::start();
    let url = pg.database("links");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (replica(&url, dir.path()), replica(&url, dir.path()));
    let (t, p) = staff(&a);
    for round in 0..5u8 {
        let hash = [round; 32];
        let link = Link {
            purpose: LinkPurpose::MagicLogin,
            tenant: t.clone(),
            principal: p.clone(),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::minutes(15),
            used: false,
            browser: None,
            code: None,
        };
        a.create_link(&link, &hash).unwrap();
        // Eight requests with the same link, four on each replica, at once.
        let start = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let repo = if i % 2 == 0 { a.clone() } else { b.clone() };
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    repo.consume_link(&hash, LinkPurpose::MagicLogin, |_| true)
                        .is_ok()
                })
            })
            .collect();
        let used = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(used, 1, "round {round}: the link was used {used} times");
    }
}

#[test]
fn lockout_counts_attempts_on_every_replica() {
    let pg = Postgres::start();
    let url = pg.database("lockout");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (replica(&url, dir.path()), replica(&url, dir.path()));
    let (t, p) = staff(&a);
    // Three failures spread over the replicas lock the account...
    for repo in [&a, &b, &a] {
        repo.reserve_attempt(&t, &p).unwrap();
        assert!(!repo.finish_attempt(&t, &p, false, 15, None).unwrap());
    }
    // ...on both: the right password is refused before it is looked at.
    for repo in [&b, &a] {
        assert!(matches!(
            repo.reserve_attempt(&t, &p),
            Err(RepoError::Locked(Some(_)))
        ));
    }
    a.unlock("system", &t, &p).unwrap();
    // Twelve attempts at once over both replicas: three get through.
    let start = Arc::new(Barrier::new(12));
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let repo = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (t, p, start) = (t.clone(), p.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                repo.reserve_attempt(&t, &p).is_ok()
            })
        })
        .collect();
    let reserved = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(reserved, 3, "parallel attempts over two replicas");
    // A TOTP step passes once, whichever replica sees it first.
    a.unlock("system", &t, &p).unwrap();
    a.reserve_attempt(&t, &p).unwrap();
    assert!(a.finish_attempt(&t, &p, true, 15, Some(77)).unwrap());
    b.reserve_attempt(&t, &p).unwrap();
    assert!(!b.finish_attempt(&t, &p, true, 15, Some(77)).unwrap());
}

#[test]
fn the_audit_chain_holds_under_writers_on_two_replicas() {
    let pg = Postgres::start();
    let url = pg.database("audit");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (replica(&url, dir.path()), replica(&url, dir.path()));
    let (t, _) = staff(&a);
    // What one new user adds to the trail, measured alone.
    let count = |repo: &Repo| {
        strom_control_plane::verify_audit_trail(repo.store.as_ref(), &t)
            .unwrap()
            .0
    };
    let before = count(&a);
    b.create_user(
        "system",
        &t,
        "alone@example.com",
        "Staff",
        Role::Moderator,
        None,
    )
    .unwrap();
    let per_user = count(&a) - before;
    assert!(per_user > 0);
    let before = count(&a);
    let per_writer: u64 = 15;
    let start = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let repo = if w % 2 == 0 { a.clone() } else { b.clone() };
            let (t, start) = (t.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..per_writer {
                    repo.create_user(
                        "system",
                        &t,
                        &format!("w{w}-{i}@example.com"),
                        "Staff",
                        Role::Moderator,
                        None,
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let (records, broken) = strom_control_plane::verify_audit_trail(a.store.as_ref(), &t).unwrap();
    assert!(broken.is_empty(), "the audit chain broke: {broken:?}");
    // The same chain from the other replica's side.
    let (again, broken) = strom_control_plane::verify_audit_trail(b.store.as_ref(), &t).unwrap();
    assert_eq!((again, broken.len()), (records, 0));
    // Nothing lost either (two writers appending at the same place would
    // leave a linear chain with one of them overwritten).
    assert_eq!(
        records,
        before + 4 * per_writer * per_user,
        "audit records after {} users",
        4 * per_writer
    );
}

#[test]
fn a_replica_that_lost_its_connection_mid_section_cannot_write() {
    let pg = Postgres::start();
    let url = pg.database("sections");
    let a = PgStore::connect(&url, "strom_kv").unwrap();
    let b = PgStore::connect(&url, "strom_kv").unwrap();
    let section = a.exclusive().unwrap();
    // The connection holding the section dies (its machine went away, a
    // network cut, an operator's pg_terminate_backend).
    let killed = pg.sql_in(
        "sections",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted",
    );
    assert_eq!(killed, "1");
    // Another replica may now open a section...
    let other = std::thread::spawn(move || {
        let s = b.exclusive().unwrap();
        let mut batch = Batch::default();
        batch.put(Table::Meta, b"winner".to_vec(), b"b".to_vec());
        b.write(batch).unwrap();
        drop(s);
        b
    })
    .join()
    .unwrap();
    // ...and the first one's write inside its lost section fails: it never
    // writes on a lock it no longer holds.
    let mut batch = Batch::default();
    batch.put(Table::Meta, b"winner".to_vec(), b"a".to_vec());
    assert!(
        a.write(batch).is_err(),
        "a write on a lost section went through"
    );
    drop(section);
    assert_eq!(other.get(Table::Meta, b"winner").unwrap().unwrap(), b"b");
    // The store recovers: the next section and write on `a` work.
    let s = a.exclusive().unwrap();
    let mut batch = Batch::default();
    batch.put(Table::Meta, b"after".to_vec(), b"a".to_vec());
    a.write(batch).unwrap();
    drop(s);
    assert_eq!(other.get(Table::Meta, b"after").unwrap().unwrap(), b"a");
}

/// A write from another thread while a section is open goes outside it
/// (as on RocksDB): it does not borrow the section's connection (so it
/// does not fail with it, nor keep the lock alive after the section
/// closes).
#[test]
fn a_write_beside_an_open_section_leaves_the_lock_to_its_holder() {
    let pg = Postgres::start();
    let url = pg.database("beside");
    let store = Arc::new(PgStore::connect(&url, "strom_kv").unwrap());
    let write_beside = |key: &'static [u8]| {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut batch = Batch::default();
            batch.put(Table::Meta, key.to_vec(), b"x".to_vec());
            store.write(batch)
        })
        .join()
        .unwrap()
    };
    let section = store.exclusive().unwrap();
    // The section's connection dies: a write from another thread, which
    // never was the section's, goes through all the same.
    let killed = pg.sql_in(
        "beside",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted",
    );
    assert_eq!(killed, "1");
    write_beside(b"beside").expect("a write outside the section");
    drop(section);
    // Sections and writes beside them, over and over: no lock outlives
    // its section.
    for _ in 0..20 {
        let section = store.exclusive().unwrap();
        write_beside(b"again").unwrap();
        let mut batch = Batch::default();
        batch.put(Table::Meta, b"inside".to_vec(), b"y".to_vec());
        store.write(batch).unwrap();
        drop(section);
        let held = pg.sql_in(
            "beside",
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
        );
        assert_eq!(held, "0", "the lock outlived its section");
    }
}

/// More threads want the write section than the store has connections
/// (32 against 16): new participants each make a data key in the key
/// store's section while sessions are touched beside it. Every call
/// succeeds: waiters queue in the process, not on pooled connections the
/// holder needs.
#[test]
fn more_writers_than_connections_all_get_through() {
    let pg = Postgres::start();
    let url = pg.database("crowd");
    let dir = tempfile::tempdir().unwrap();
    let repo = replica(&url, dir.path());
    let (tenant, _) = staff(&repo);
    let now = strom_control_plane::repo::now();
    let event = repo
        .create_event(
            "system",
            strom_control_plane::model::Event::open(
                &tenant,
                "Crowd",
                now,
                now + time::Duration::hours(1),
            ),
        )
        .unwrap()
        .id;
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let (repo, tenant, event) = (repo.clone(), tenant.clone(), event.clone());
            std::thread::spawn(move || {
                for i in 0..5 {
                    let row = strom_control_plane::repo::NewParticipant {
                        email: format!("c{t}-{i}@crowd.example"),
                        name: "Crowd".into(),
                        fields: Default::default(),
                        password: None,
                        status: strom_control_plane::model::ParticipantStatus::Active,
                        source: strom_control_plane::model::ParticipantSource::Imported,
                        consent: None,
                    };
                    repo.create_participants("system", &tenant, &event, vec![row])
                        .unwrap_or_else(|e| panic!("thread {t}, participant {i}: {e}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(repo.participants(&tenant, &event).unwrap().len(), 160);
}

#[test]
fn revocations_from_two_replicas_keep_one_log_and_reach_both() {
    use strom_token::RevocationKind;
    let pg = Postgres::start();
    let url = pg.database("revocations");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (replica(&url, dir.path()), replica(&url, dir.path()));
    let t = a.create_tenant("Acme").unwrap().id;
    let mut watch_b = b.revocation_watch();
    // Alternating replicas: each appends after the other's entries, never
    // over them (the position comes from the store, not a replica's memory).
    let mut seqs = Vec::new();
    for (i, repo) in [&a, &b, &a, &b].into_iter().enumerate() {
        let r = repo
            .revoke(RevocationKind::Subject, &t, &format!("p_{i}"))
            .unwrap();
        seqs.push(r.seq);
    }
    assert_eq!(seqs, [1, 2, 3, 4]);
    for repo in [&a, &b] {
        let feed = repo.revocations_after(0, None).unwrap();
        let ids: Vec<&str> = feed.entries.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["p_0", "p_1", "p_2", "p_3"]);
    }
    // A revocation written on A wakes a long-poll on B once B follows the
    // store (the control plane does so every 500 ms).
    watch_b.borrow_and_update();
    a.revoke(RevocationKind::Subject, &t, "p_late").unwrap();
    assert!(!watch_b.has_changed().unwrap(), "B cannot know yet");
    assert_eq!(b.follow_revocations().unwrap(), 5);
    assert!(watch_b.has_changed().unwrap());
    assert_eq!(*watch_b.borrow_and_update(), 5);
    let feed = b.revocations_after(4, None).unwrap();
    assert_eq!(feed.entries.len(), 1);
    assert_eq!(feed.entries[0].id, "p_late");
}

#[test]
fn a_signing_key_rotated_on_one_replica_is_taken_up_by_the_other() {
    let pg = Postgres::start();
    let url = pg.database("signing");
    let dir = tempfile::tempdir().unwrap();
    // Two replicas starting on an empty database make one first key
    // (with the installation's master key in place, as an operator puts it).
    strom_control_plane::MasterKeys::load(&dir.path().join("master.key"), true).unwrap();
    let start = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (url, path, start) = (url.clone(), dir.path().to_owned(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                replica(&url, &path)
            })
        })
        .collect();
    let replicas: Vec<Arc<Repo>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let (a, b) = (&replicas[0], &replicas[1]);
    let kids = |r: &Repo| -> Vec<String> { r.signing_keys().into_iter().map(|k| k.kid).collect() };
    assert_eq!(kids(a).len(), 1, "two first keys: {:?}", kids(a));
    assert_eq!(kids(a), kids(b));
    let kid = a.rotate_signing_key(time::Duration::hours(1)).unwrap();
    assert!(b.follow_signing_keys().unwrap());
    let current = b.signing_keys().into_iter().find(|k| k.current).unwrap();
    assert_eq!(current.kid, kid);
    assert!(b.key_set().unwrap().keys.iter().any(|k| k.kid == kid));
    assert!(
        !b.follow_signing_keys().unwrap(),
        "nothing new the second time"
    );
    // A rotation on B now retires A's key too (the section reads the store).
    let second = b.rotate_signing_key(time::Duration::ZERO).unwrap();
    assert!(a.follow_signing_keys().unwrap());
    let listed = a.signing_keys();
    assert_eq!(listed.last().unwrap().kid, second);
    assert!(listed
        .iter()
        .filter(|k| !k.current)
        .all(|k| k.retire_at.is_some()));
}

/// A tenant created on one replica wakes the SRT-secret long polls held by
/// the other, and both name the tenant set with the same version, so an
/// origin's poll may move between replicas.
#[test]
fn a_tenant_created_on_one_replica_wakes_srt_polls_on_the_other() {
    let pg = Postgres::start();
    let url = pg.database("tenants");
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&url, dir.path());
    let b = replica(&url, dir.path());
    let mut polls_on_b = b.tenants_watch();
    let before = *polls_on_b.borrow_and_update();
    assert_eq!(before, *a.tenants_watch().borrow());
    let tenant = a.create_tenant("Newcomer").unwrap().id;
    assert!(!polls_on_b.has_changed().unwrap(), "not before B follows");
    let version = b.follow_tenants().unwrap();
    assert!(polls_on_b.has_changed().unwrap(), "B's long polls answer");
    assert_eq!(version, *a.tenants_watch().borrow());
    assert_ne!(version, before);
    assert!(b.srt_tenant_secrets().unwrap().contains_key(&tenant));
    b.delete_tenant(&tenant).unwrap();
    assert_eq!(a.follow_tenants().unwrap(), before);
}

#[test]
fn postgresql_presence_meets_the_presence_contract() {
    let pg = Postgres::start();
    let url = pg.database("presence");
    let store = PgStore::connect(&url, "strom_kv").unwrap();
    strom_control_plane::store::presence::contract::check(&store);
}

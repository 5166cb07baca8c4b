//! Durability (DATA-10) and deletion (DATA-1/7): every write the API
//! acknowledged survives `kill -9`; a backup taken before an event was
//! deleted cannot decrypt its participants; a restore does not bring deleted
//! data back; the audit chain finds an edited record.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;
use strom_control_plane::model::{Participant, ParticipantSource, ParticipantStatus};
use strom_control_plane::repo::{NewParticipant, RepoError};
use strom_control_plane::store::{RocksStore, Store, Table};
use strom_control_plane::{open_repo, ControlPlane, Paths};
use strom_control_plane::{KeyError, KeyRing, MasterKeys, Scope};

/// Child process: serves a control plane on the data dir in the environment
/// until it is killed. Does nothing in a normal test run.
#[test]
fn durability_child() {
    let Ok(dir) = std::env::var("STROM_DURABILITY_CHILD") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let cp = ControlPlane::load(config(), std::path::Path::new(&dir))
            .await
            .unwrap();
        let fresh = cp.repo.tenants().unwrap().is_empty();
        let boot = if fresh {
            let (t, _, pw) =
                strom_control_plane::bootstrap(&cp.repo, "Durable", "o@durable.example", "Owner")
                    .unwrap();
            format!("{} {}", t.id, pw.unwrap())
        } else {
            "existing".into()
        };
        println!("READY http://{} {boot}", cp.local_addr().unwrap());
        cp.run().await.unwrap();
    });
}

// The callers kill the child (that is the point) and wait for it.
#[allow(clippy::zombie_processes)]
fn spawn_child(dir: &std::path::Path) -> (Child, String, Vec<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durability_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STROM_DURABILITY_CHILD", dir)
        .env("STROM_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("child output").unwrap();
        // libtest prints "test durability_child ... " on the same line first.
        if let Some((_, rest)) = line.split_once("READY ") {
            let mut parts = rest.split(' ').map(String::from);
            let base = parts.next().unwrap();
            return (child, base, parts.collect());
        }
    }
}

#[tokio::test]
async fn every_acknowledged_write_survives_kill_9() {
    if common::on_postgres() {
        eprintln!("skipped on PostgreSQL: RocksDB's own WAL and BackupEngine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base, boot) = spawn_child(dir.path());
    let (tenant, password) = (boot[0].clone(), boot[1].clone());
    let mut owner = Client::new(&base);
    assert_eq!(
        owner
            .post(
                "/api/v1/auth/login",
                json!({"tenant": tenant, "email": "o@durable.example", "password": password})
            )
            .await
            .0,
        200
    );
    assert_eq!(
        owner
            .post(
                "/api/v1/auth/password",
                json!({"current_password": password, "new_password": GOOD_PASSWORD})
            )
            .await
            .0,
        204
    );
    let event = owner.post("/api/v1/events", event_body("Burst")).await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (mut c, acked, event) = (owner.clone(), acked.clone(), event.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let body = json!({"email": format!("w{w}-{i}@durable.example"), "name": format!("Writer {w} {i}"), "fields": {"company": "D"}, "send_mail": false});
                let res = c
                    .http
                    .post(format!("{}/api/v1/events/{event}/participants", c.base))
                    .header("cookie", c.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
                    .header("x-csrf-token", c.csrf.clone().unwrap())
                    .json(&body)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().as_u16() == 201 => match r.json::<serde_json::Value>().await {
                        Ok(v) => acked.lock().unwrap().push(v["id"].as_str().unwrap().to_owned()),
                        Err(_) => return,
                    },
                    _ => return,
                }
                let _ = &mut c;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // SIGKILL in the middle of the burst.
    child.kill().unwrap();
    child.wait().unwrap();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "the burst wrote too little to mean anything: {}",
        acked.len()
    );

    let (mut child, base, _) = spawn_child(dir.path());
    owner.base = base;
    let r = owner
        .get(&format!("/api/v1/events/{event}/participants"))
        .await;
    assert_eq!(r.0, 200, "the session survived too: {:?}", r.1);
    let present: std::collections::HashSet<String> =
        r.1.as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !present.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acked.len()
    );
    let verify = owner.get("/api/v1/audit/verify").await.1;
    assert_eq!(verify["intact"], true, "{verify}");
    eprintln!(
        "kill -9 after {} acknowledged writes: all present, audit chain intact",
        acked.len()
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

fn participant_rows(n: usize) -> Vec<NewParticipant> {
    (0..n)
        .map(|i| NewParticipant {
            email: format!("p{i}@shred.example"),
            name: format!("Person {i}"),
            fields: [("company".to_string(), "Shred".to_string())].into(),
            password: None,
            status: ParticipantStatus::Active,
            source: ParticipantSource::Imported,
            consent: None,
        })
        .collect()
}

#[tokio::test]
async fn a_backup_from_before_an_event_was_deleted_cannot_decrypt_its_participants() {
    if common::on_postgres() {
        eprintln!("skipped on PostgreSQL: RocksDB's own WAL and BackupEngine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let cfg = config();
    let paths = Paths::new(dir.path());
    let (tenant, doomed, kept) = {
        let (repo, _) = open_repo(&cfg, dir.path()).unwrap();
        let (t, _, _) =
            strom_control_plane::bootstrap(&repo, "Shred", "o@shred.example", "O").unwrap();
        let mut ev = serde_json::from_value::<strom_control_plane::model::Event>(json!({
            "id": "", "tenant": t.id, "title": "Doomed", "starts_at": "2026-01-01T10:00:00Z", "ends_at": "2026-01-01T12:00:00Z",
            "retention_days": 30, "access": "list", "form": [{"name": "company", "label": "Company", "kind": "text", "required": true}],
            "attendance": false, "privacy_notice": "", "created_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        let doomed = repo.create_event("test", ev.clone()).unwrap();
        ev.title = "Kept".into();
        let kept = repo.create_event("test", ev).unwrap();
        repo.create_participants("test", &t.id, &doomed.id, participant_rows(5))
            .unwrap();
        repo.create_participants("test", &t.id, &kept.id, participant_rows(3))
            .unwrap();
        repo.store.backup(&backups).unwrap();
        repo.delete_event("test", &t.id, &doomed.id).unwrap();
        assert!(matches!(
            repo.participants(&t.id, &doomed.id),
            Err(RepoError::NotFound)
        ));
        (t.id, doomed.id, kept.id)
    };

    // The backup still holds the ciphertext …
    RocksStore::restore(&backups, &dir.path().join("restored")).unwrap();
    let restored = RocksStore::open(&dir.path().join("restored"), &Table::DATA).unwrap();
    let rows = restored
        .scan(
            Table::Participants,
            format!("{tenant}/{doomed}/").as_bytes(),
            usize::MAX,
        )
        .unwrap();
    assert_eq!(rows.len(), 5);
    // … which the keys of today cannot open: the event's data key is gone.
    let keys: Arc<dyn Store> = Arc::new(RocksStore::open(&paths.keys(), &Table::KEYS).unwrap());
    let master = MasterKeys::load(&paths.master_key(), false).unwrap();
    let ring = KeyRing::new(keys, master);
    for (_, v) in &rows {
        let p: Participant = serde_json::from_slice(v).unwrap();
        let raw = String::from_utf8_lossy(v);
        assert!(
            !raw.contains("shred.example") && !raw.contains("Person"),
            "no clear text at rest: {raw}"
        );
        let opened = ring.open_str(
            &Scope::Event(tenant.clone(), doomed.clone()),
            &format!("{tenant}|participant|{}|email", p.id),
            &p.email,
        );
        assert!(matches!(opened, Err(KeyError::Shredded(_))), "{opened:?}");
    }
    // The other event's participants in the same backup still open.
    let rows = restored
        .scan(
            Table::Participants,
            format!("{tenant}/{kept}/").as_bytes(),
            usize::MAX,
        )
        .unwrap();
    let p: Participant = serde_json::from_slice(&rows[0].1).unwrap();
    assert!(ring
        .open_str(
            &Scope::Event(tenant.clone(), kept.clone()),
            &format!("{tenant}|participant|{}|email", p.id),
            &p.email
        )
        .unwrap()
        .ends_with("@shred.example"));
    drop((restored, ring));

    // Restoring the backup as the live database: the journal deletes the event again.
    std::fs::remove_dir_all(paths.db()).unwrap();
    RocksStore::restore(&backups, &paths.db()).unwrap();
    let (repo, _) = open_repo(&cfg, dir.path()).unwrap();
    assert!(matches!(
        repo.event(&tenant, &doomed),
        Err(RepoError::NotFound)
    ));
    assert_eq!(repo.participants(&tenant, &kept).unwrap().len(), 3);
}

#[tokio::test]
async fn audit_verification_finds_an_edited_record() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Audit").await;
    let e = owner.post("/api/v1/events", event_body("Audited")).await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = owner.post(&format!("/api/v1/events/{e}/participants"), json!({"email": "grace@audit.example", "name": "Grace Hopper", "fields": {"company": "Navy"}, "send_mail": false})).await.1;
    let pid = p["id"].as_str().unwrap();
    assert_eq!(
        owner
            .patch(
                &format!("/api/v1/events/{e}/participants/{pid}"),
                json!({"name": "Grace B. Hopper"})
            )
            .await
            .0,
        200
    );
    let log = owner.get("/api/v1/audit?limit=1000").await.1;
    let change = log
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "change" && r["field"] == "name")
        .unwrap();
    assert_eq!(
        (change["old_value"].as_str(), change["new_value"].as_str()),
        (Some("Grace Hopper"), Some("Grace B. Hopper"))
    );
    assert!(
        !change["old"].as_str().unwrap().contains("Grace"),
        "stored sealed"
    );
    assert_eq!(owner.get("/api/v1/audit/verify").await.1["intact"], true);

    // Someone with disk access rewrites who made the change.
    let seq = change["seq"].as_u64().unwrap();
    let key = format!("{t}/{seq:016}");
    let raw = plane
        .repo
        .store
        .get(Table::Audit, key.as_bytes())
        .unwrap()
        .unwrap();
    let mut record: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    record["actor"] = json!("u_someoneelse");
    let mut b = strom_control_plane::store::Batch::default();
    b.put(Table::Audit, key, serde_json::to_vec(&record).unwrap());
    plane.repo.store.write(b).unwrap();
    let v = owner.get("/api/v1/audit/verify").await.1;
    assert_eq!(v["intact"], false);
    assert!(
        v["findings"]
            .to_string()
            .contains(&format!("Edited {{ seq: {seq} }}")),
        "{v}"
    );
}

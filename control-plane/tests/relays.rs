//! Relay and agent credentials end to end at the control plane (F3, F4,
//! F9, F15): the revocation log read page by page and compacted, credentials
//! listed and revoked with everything minted from them, scopes by role, and
//! signing-key rotation with a bounded overlap.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use strom_control_plane::RelayRole;
use strom_token::revocation::RevocationFeed;
use strom_token::{Grant, RevocationKind, Revocations, TokenError, Verifier};
use time::OffsetDateTime;

const PEER: &str = "12D3KooWLdvg7ZbBHnyFeY4kU7VZ5U3T8fM6o6x4o3HVYxBXYxKn";

async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn get(base: &str, path: &str, token: &str) -> (u16, Value) {
    call(base, reqwest::Method::GET, path, token, None).await
}

async fn post(base: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    call(base, reqwest::Method::POST, path, token, body).await
}

fn play_grant(tenant: &str, subject: &str) -> Grant {
    Grant::play(subject, tenant, "e_aaaaaaaaaaaa")
}

/// Reads the whole log as a relay does: page after page from `after`.
fn catch_up(repo: &strom_control_plane::repo::Repo, held: &mut Revocations) -> usize {
    let mut pages = 0;
    loop {
        let feed = repo.revocations_after(held.seq(), None).unwrap();
        pages += 1;
        held.apply(&feed);
        if !feed.more {
            return pages;
        }
    }
}

/// F3: the 10,001st revocation reaches a relay that starts from nothing.
#[tokio::test]
async fn a_relay_catches_up_with_a_long_log_page_by_page() {
    let plane = common::start().await;
    let at = OffsetDateTime::now_utc();
    let subjects: Vec<String> = (0..10_001).map(|i| format!("p_{i:012}")).collect();
    let entries: Vec<(RevocationKind, &str, &str, OffsetDateTime)> = subjects
        .iter()
        .map(|s| (RevocationKind::Subject, "t_x", s.as_str(), at))
        .collect();
    plane.repo.revoke_all_at(&entries).unwrap();
    let claims = |s: &str| {
        let mut g = play_grant("t_x", s);
        g.lifetime_secs = 300;
        plane
            .repo
            .mint_at(&g, at - time::Duration::seconds(5))
            .unwrap()
            .1
    };
    let mut held = Revocations::default();
    let pages = catch_up(&plane.repo, &mut held);
    assert_eq!(pages, 2);
    assert_eq!(held.len(), 10_001);
    assert!(
        held.revokes(&claims(&subjects[10_000])),
        "the 10,001st entry"
    );
    assert!(held.revokes(&claims(&subjects[0])));

    // The real relay sync, over HTTP, gets there too.
    let verifier = Arc::new(Verifier::new());
    let link = strom_relay::ControlPlaneLink {
        url: format!("{}/", plane.base).parse().unwrap(),
        fallback_urls: Vec::new(),
        credential: plane.relay.clone(),
        ca_file: None,
    };
    let _sync = strom_relay::start_key_sync(link, verifier.clone())
        .await
        .unwrap();
    let last = claims(&subjects[10_000]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !verifier.revocations().revokes(&last) {
        assert!(
            std::time::Instant::now() < deadline,
            "relay never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// F3: what can no longer match a valid token is compacted away, so a relay
/// starting after a year reads only what still matters.
#[tokio::test]
async fn the_log_is_compacted_to_what_can_still_match() {
    let plane = common::start().await;
    let year_ago = OffsetDateTime::now_utc() - time::Duration::days(365);
    let old: Vec<String> = (0..20_000).map(|i| format!("p_{i:012}")).collect();
    let mut entries: Vec<(RevocationKind, &str, &str, OffsetDateTime)> = old
        .iter()
        .map(|s| (RevocationKind::Subject, "t_x", s.as_str(), year_ago))
        .collect();
    entries.push((RevocationKind::Event, "t_x", "e_ended", year_ago));
    entries.push((RevocationKind::EventDeleted, "t_x", "e_deleted", year_ago));
    plane.repo.revoke_all_at(&entries).unwrap();
    let now = OffsetDateTime::now_utc();
    plane
        .repo
        .revoke_all_at(&[
            (RevocationKind::Subject, "t_x", "p_fresh", now),
            (
                RevocationKind::Subject,
                "t_x",
                "p_twice",
                now - time::Duration::seconds(2),
            ),
            (RevocationKind::Subject, "t_x", "p_twice", now),
        ])
        .unwrap();
    let head = plane.repo.revocations_after(0, None).unwrap();
    assert!(head.more, "before: more than a page");

    let dropped = plane.repo.compact_revocations(now).unwrap();
    assert_eq!(dropped, 20_002);
    let feed = plane.repo.revocations_after(0, None).unwrap();
    assert!(!feed.more);
    let kept: Vec<(&str, u64)> = feed
        .entries
        .iter()
        .map(|e| (e.id.as_str(), e.seq))
        .collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(
        kept.iter().any(|(id, _)| *id == "e_deleted"),
        "deletions stay for years"
    );
    assert!(kept.iter().any(|(id, _)| *id == "p_fresh"));
    assert_eq!(kept.iter().filter(|(id, _)| *id == "p_twice").count(), 1);
    // Positions go on: a relay that was in the middle reads on.
    assert_eq!(feed.seq, 20_005);
    let mut held = Revocations::default();
    held.apply(&RevocationFeed {
        seq: 10,
        ..Default::default()
    });
    catch_up(&plane.repo, &mut held);
    assert_eq!(held.seq(), 20_005);
    // A restart of the control plane's own verifier keeps the fresh ones.
    assert!(plane.repo.verifier().revocations().len() >= 3);
}

/// F4: an owner lists and revokes an agent credential; the credential and
/// the tickets minted with it stop working at the control plane at once.
#[tokio::test]
async fn a_revoked_agent_credential_and_its_tickets_stop_working() {
    let plane = common::start().await;
    let (_tenant, mut owner) = plane.tenant("Acme").await;
    let (status, hq) = owner
        .post(
            "/api/v1/sites",
            json!({"name": "HQ", "cidrs": ["10.77.0.0/16"], "p2p": "on"}),
        )
        .await;
    assert_eq!(status, 201, "{hq:?}");
    let (status, cred) = owner.post("/api/v1/agent-credentials", json!({})).await;
    assert_eq!(status, 201, "{cred:?}");
    let id = cred["id"].as_str().unwrap().to_owned();
    let credential = cred["credential"].as_str().unwrap().to_owned();
    let registration = json!({
        "peer_id": PEER, "addrs": ["10.77.0.10"], "listen": ["/ip4/10.77.0.10/udp/4001/quic-v1"],
        "moqt_port": 4443, "http_port": 8443,
    });
    let (status, answer) = post(
        &plane.base,
        "/api/v1/agents/register",
        &credential,
        Some(registration.clone()),
    )
    .await;
    assert_eq!(status, 200, "{answer:?}");
    let ticket = answer["ticket"].as_str().unwrap().to_owned();
    let now = OffsetDateTime::now_utc();
    let ticket_claims = plane.repo.verifier().verify(&ticket, now).unwrap();
    assert_eq!(ticket_claims.via.as_deref(), Some(id.as_str()));
    let (status, _) = get(&plane.base, "/api/v1/relay/revocations?after=0", &ticket).await;
    assert_eq!(status, 200);

    let (status, list) = owner.get("/api/v1/agent-credentials").await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["kind"], "agent");
    assert!(list[0]["revoked_at"].is_null());

    let (status, body) = owner
        .delete(&format!("/api/v1/agent-credentials/{id}"))
        .await;
    assert_eq!(status, 204, "{body:?}");
    let (_, list) = owner.get("/api/v1/agent-credentials").await;
    assert!(list[0]["revoked_at"].is_string());
    // At once, no polling involved: the credential, and the ticket.
    let (status, _) = post(
        &plane.base,
        "/api/v1/agents/register",
        &credential,
        Some(registration),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = get(&plane.base, "/api/v1/relay/revocations?after=0", &ticket).await;
    assert_eq!(status, 401);
    assert_eq!(
        plane
            .repo
            .verifier()
            .verify(&ticket, OffsetDateTime::now_utc()),
        Err(TokenError::Revoked)
    );
    // A relay's verifier learns it from the feed.
    let feed = plane.repo.revocations_after(0, None).unwrap();
    let mut held = Revocations::default();
    held.apply(&feed);
    assert!(held.revokes(&ticket_claims));
    // Another tenant's owner cannot revoke it (not found), nor can a
    // non-owner list them.
    let (_, mut other) = plane.tenant("Globex").await;
    assert_eq!(
        other
            .delete(&format!("/api/v1/agent-credentials/{id}"))
            .await
            .0,
        404
    );
    assert_eq!(
        other
            .get("/api/v1/agent-credentials")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// F4/F9: operator relay credentials have roles; a revoked one stops at once.
#[tokio::test]
async fn relay_credentials_are_scoped_by_role_and_revocable() {
    let plane = common::start().await;
    let origin = plane
        .repo
        .issue_relay_credential("operator", RelayRole::Origin, "origin-1")
        .unwrap()
        .0;
    let edge = plane.relay.clone();
    // Only origins get the SRT secrets (and register media keys).
    let (status, secrets) = get(&plane.base, "/api/v1/relay/srt-secrets", &origin).await;
    assert_eq!(status, 200, "{secrets:?}");
    let (status, _) = get(&plane.base, "/api/v1/relay/srt-secrets", &edge).await;
    assert_eq!(status, 403);
    let key = json!({"key": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"});
    let (status, _) = post(
        &plane.base,
        "/api/v1/relay/media-key",
        &edge,
        Some(key.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post(&plane.base, "/api/v1/relay/media-key", &origin, Some(key)).await;
    assert_eq!(status, 204);
    // The old single root secret is not handed out any more.
    let (status, _) = get(&plane.base, "/api/v1/relay/srt-secret", &origin).await;
    assert_eq!(status, 404);
    // An edge cannot claim to be an origin (and mark broadcasts live).
    let report = |role: &str| json!({"role": role, "streams": [{"namespace": "t/e/main", "ingest_bps": 1, "viewers": 0}]});
    let (status, _) = post(
        &plane.base,
        "/api/v1/relay/status",
        &edge,
        Some(report("origin")),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post(
        &plane.base,
        "/api/v1/relay/status",
        &edge,
        Some(report("edge")),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = post(
        &plane.base,
        "/api/v1/relay/status",
        &origin,
        Some(report("origin")),
    )
    .await;
    assert_eq!(status, 204);

    // Listed, then revoked: refused at once.
    let listed = plane
        .repo
        .credentials(strom_control_plane::repo::PLATFORM)
        .unwrap();
    assert!(listed.iter().any(|c| c.id == "origin-1"));
    plane
        .repo
        .revoke_credential("operator", strom_control_plane::repo::PLATFORM, "origin-1")
        .unwrap();
    let (status, _) = get(&plane.base, "/api/v1/relay/srt-secrets", &origin).await;
    assert_eq!(status, 401);
    // Issued again (the relay gets a new credential): works.
    let fresh = plane
        .repo
        .issue_relay_credential("operator", RelayRole::Origin, "origin-1")
        .unwrap()
        .0;
    let (status, _) = get(&plane.base, "/api/v1/relay/srt-secrets", &fresh).await;
    assert_eq!(status, 200);
    // Names that would pose as agents or carry odd bytes are refused.
    for bad in ["agent:s_x:peer", "", "Edge 1", "e/1"] {
        assert!(
            plane
                .repo
                .issue_relay_credential("operator", RelayRole::Edge, bad)
                .is_err(),
            "{bad:?}"
        );
    }
}

/// F15: an agent credential reads only its own tenant's revocations.
#[tokio::test]
async fn an_agent_reads_only_its_tenants_revocations() {
    let plane = common::start().await;
    let (tenant, mut owner) = plane.tenant("Acme").await;
    let (_, cred) = owner.post("/api/v1/agent-credentials", json!({})).await;
    let credential = cred["credential"].as_str().unwrap().to_owned();
    plane
        .repo
        .revoke(RevocationKind::Subject, &tenant, "p_aaaaaaaaaaaa")
        .unwrap();
    plane
        .repo
        .revoke(RevocationKind::Subject, "t_other", "p_bbbbbbbbbbbb")
        .unwrap();
    plane
        .repo
        .revoke(RevocationKind::Event, "t_other", "e_cccccccccccc")
        .unwrap();
    let (status, feed) = get(
        &plane.base,
        "/api/v1/relay/revocations?after=0",
        &credential,
    )
    .await;
    assert_eq!(status, 200);
    let tenants: Vec<&str> = feed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, vec![tenant.as_str()]);
    // The position still covers everything, so the agent does not read it again.
    let (_, platform) = get(
        &plane.base,
        "/api/v1/relay/revocations?after=0",
        &plane.relay,
    )
    .await;
    assert_eq!(feed["seq"], platform["seq"]);
    assert_eq!(platform["entries"].as_array().unwrap().len(), 3);
}

/// F4: rotating the signing key retires the old one after the overlap, not
/// after a year.
#[tokio::test]
async fn old_signing_keys_stop_verifying_after_the_overlap() {
    let plane = common::start().await;
    let repo = &plane.repo;
    let now = OffsetDateTime::now_utc();
    let (before, _) = repo.mint(&play_grant("t_x", "p_one")).unwrap();
    assert!(repo.verifier().verify(&before, now).is_ok());

    // With an overlap, earlier tokens keep working meanwhile.
    repo.rotate_signing_key(time::Duration::hours(1)).unwrap();
    assert_eq!(repo.key_set().unwrap().keys.len(), 2);
    assert!(repo.verifier().verify(&before, now).is_ok());
    let keys = repo.signing_keys();
    assert!(keys[0]
        .retire_at
        .is_some_and(|r| r <= now + time::Duration::hours(1) + time::Duration::seconds(2)));
    assert!(keys.last().unwrap().current);

    // An emergency rotation (overlap 0): everything signed before stops.
    let (middle, _) = repo.mint(&play_grant("t_x", "p_two")).unwrap();
    repo.rotate_signing_key(time::Duration::ZERO).unwrap();
    assert_eq!(repo.key_set().unwrap().keys.len(), 1);
    assert_eq!(
        repo.verifier().verify(&before, now),
        Err(TokenError::UnknownKey)
    );
    assert_eq!(
        repo.verifier().verify(&middle, now),
        Err(TokenError::UnknownKey)
    );
    let (after, _) = repo.mint(&play_grant("t_x", "p_three")).unwrap();
    assert!(repo
        .verifier()
        .verify(&after, OffsetDateTime::now_utc())
        .is_ok());
    // Relays fetching the key set see the same.
    let set: Value = reqwest::get(format!("{}/api/v1/relay/keys", plane.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(set["keys"].as_array().unwrap().len(), 1);
}

/// F9: origins hold one SRT secret per tenant (never the root) and learn a
/// new tenant's at once, by long poll.
#[tokio::test]
async fn origins_learn_each_tenants_srt_secret_as_tenants_come() {
    let plane = common::start().await;
    let origin = plane
        .repo
        .issue_relay_credential("operator", RelayRole::Origin, "origin-1")
        .unwrap()
        .0;
    let (status, first) = get(&plane.base, "/api/v1/relay/srt-secrets", &origin).await;
    assert_eq!(status, 200, "{first:?}");
    let version = first["version"].as_u64().unwrap();
    let base = plane.base.clone();
    let token = origin.clone();
    let waiting = tokio::spawn(async move {
        get(
            &base,
            &format!("/api/v1/relay/srt-secrets?version={version}&wait=20"),
            &token,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the poll waits while nothing changes"
    );
    let started = std::time::Instant::now();
    let tenant = plane.repo.create_tenant("Newcomer").unwrap().id;
    let (status, answer) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    let secret = answer["secrets"][&tenant].as_str().unwrap();
    assert_eq!(
        strom_token::srt::secret_from_hex(secret).unwrap(),
        plane.repo.srt_tenant_secret(&tenant).unwrap()
    );
    // Each tenant its own; none of them the root.
    let root = plane.repo.srt_secret().unwrap();
    let secrets = answer["secrets"].as_object().unwrap();
    let mut seen = std::collections::HashSet::new();
    for hex in secrets.values() {
        let s = strom_token::srt::secret_from_hex(hex.as_str().unwrap()).unwrap();
        assert_ne!(s, root);
        assert!(seen.insert(s));
    }
}

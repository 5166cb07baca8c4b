//! Peer-agent enrolment over the real API: agent credentials, registration
//! against the site map, tickets, the roster, what an agent credential may
//! not do, and the join answer that sends a viewer inside a site to its
//! agents.

mod common;

use serde_json::{json, Value};
use strom_token::{Action, Verifier};

const PEER_A: &str = "12D3KooWLdvg7ZbBHnyFeY4kU7VZ5U3T8fM6o6x4o3HVYxBXYxKn";
const PEER_B: &str = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";

async fn bearer(base: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn registration(peer: &str, addr: &str) -> Value {
    json!({
        "peer_id": peer,
        "addrs": [addr],
        "listen": [format!("/ip4/{addr}/udp/4001/quic-v1")],
        "moqt_port": 4443,
        "http_port": 8443,
    })
}

#[tokio::test]
async fn agents_register_into_their_site_and_learn_its_roster() {
    let plane = common::start().await;
    let (tenant, mut owner) = plane.tenant("Acme").await;
    let (_, mut other_owner) = plane.tenant("Globex").await;

    let (status, cred) = owner.post("/api/v1/agent-credentials", json!({})).await;
    assert_eq!(status, 201, "{cred:?}");
    let credential = cred["credential"].as_str().unwrap().to_owned();
    let (status, globex_cred) = other_owner
        .post("/api/v1/agent-credentials", json!({}))
        .await;
    assert_eq!(status, 201);
    let globex_credential = globex_cred["credential"].as_str().unwrap().to_owned();

    // No site holds the agent's address yet.
    let reg = "/api/v1/agents/register";
    let (status, body) = bearer(
        &plane.base,
        reg,
        &credential,
        registration(PEER_A, "10.77.0.10"),
    )
    .await;
    assert_eq!(status, 404, "{body:?}");

    let (status, hq) = owner
        .post(
            "/api/v1/sites",
            json!({"name": "HQ", "cidrs": ["10.77.0.0/16"], "p2p": "on"}),
        )
        .await;
    assert_eq!(status, 201, "{hq:?}");
    // A longer prefix wins over a shorter one.
    let (status, floor) = owner
        .post(
            "/api/v1/sites",
            json!({"name": "HQ floor 3", "cidrs": ["10.77.3.0/24"], "p2p": "on"}),
        )
        .await;
    assert_eq!(status, 201);

    let (status, a) = bearer(
        &plane.base,
        reg,
        &credential,
        registration(PEER_A, "10.77.0.10"),
    )
    .await;
    assert_eq!(status, 200, "{a:?}");
    assert_eq!(a["site"]["id"], hq["id"]);
    assert_eq!(a["roster"].as_array().unwrap().len(), 0);
    let (status, b) = bearer(
        &plane.base,
        reg,
        &credential,
        registration(PEER_B, "10.77.0.11"),
    )
    .await;
    assert_eq!(status, 200);
    let roster = b["roster"].as_array().unwrap();
    assert_eq!(roster.len(), 1);
    assert_eq!(roster[0]["peer_id"], PEER_A);
    assert_eq!(roster[0]["listen"][0], "/ip4/10.77.0.10/udp/4001/quic-v1");
    let (status, c) = bearer(
        &plane.base,
        reg,
        &credential,
        registration(PEER_B, "10.77.3.9"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        c["site"]["id"], floor["id"],
        "moved to the more specific site"
    );
    assert_eq!(c["roster"].as_array().unwrap().len(), 0);

    // The ticket: a relay token of this tenant naming site and peer.
    let verifier = Verifier::new();
    verifier.set_keys(&plane.repo.key_set().unwrap());
    let claims = verifier
        .verify(
            a["ticket"].as_str().unwrap(),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    assert_eq!(claims.act, Action::Relay);
    assert_eq!(claims.ten, tenant);
    assert_eq!(
        claims.sub,
        format!("agent:{}:{PEER_A}", hq["id"].as_str().unwrap())
    );
    assert!(!claims.is_platform_relay());

    // Another tenant's agent at the same address lands in none of Acme's sites.
    let (status, _) = bearer(
        &plane.base,
        reg,
        &globex_credential,
        registration(PEER_A, "10.77.0.10"),
    )
    .await;
    assert_eq!(status, 404);

    // Owners see the live roster per site.
    let (status, list) = owner.get("/api/v1/agents").await;
    assert_eq!(status, 200);
    let total: usize = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["agents"].as_array().unwrap().len())
        .sum();
    assert_eq!(total, 2, "{list:?}");
    let (_, list) = other_owner.get("/api/v1/agents").await;
    assert_eq!(list.as_array().unwrap().len(), 0);

    // What an agent credential and a ticket may not do.
    let ticket = a["ticket"].as_str().unwrap();
    for (token, what) in [
        (ticket, "a ticket"),
        (plane.relay.as_str(), "a platform relay credential"),
    ] {
        let (status, _) = bearer(&plane.base, reg, token, registration(PEER_A, "10.77.0.10")).await;
        assert_eq!(status, 403, "{what} cannot register");
    }
    for (path, body) in [
        (
            "/api/v1/relay/heartbeat",
            json!({"region": "x", "url": "https://edge.example/", "load": 0.1}),
        ),
        (
            "/api/v1/relay/status",
            json!({"role": "edge", "streams": []}),
        ),
        ("/api/v1/relay/media-key", json!({"key": "ab".repeat(32)})),
    ] {
        let (status, _) = bearer(&plane.base, path, &credential, body).await;
        assert_eq!(status, 403, "an agent credential may not post {path}");
    }
    // Bad registrations.
    for body in [
        registration("not-a-peer-id", "10.77.0.10"),
        registration(PEER_A, "not-an-address"),
        json!({"peer_id": PEER_A, "addrs": [], "listen": [], "moqt_port": 1, "http_port": 1}),
        json!({"peer_id": PEER_A, "addrs": ["10.77.0.10"], "listen": ["/dns4/evil.example/udp/1/quic-v1"], "moqt_port": 1, "http_port": 1}),
    ] {
        let (status, _) = bearer(&plane.base, reg, &credential, body.clone()).await;
        assert_eq!(status, 400, "{body}");
    }
    let (status, _) = bearer(
        &plane.base,
        reg,
        "garbage",
        registration(PEER_A, "10.77.0.10"),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_viewer_inside_a_p2p_site_is_sent_to_its_agents_first() {
    let plane = common::start().await;
    let (_, mut owner) = plane.tenant("Acme").await;
    let (status, event) = owner
        .post("/api/v1/events", common::event_body("Town hall"))
        .await;
    assert_eq!(status, 201, "{event:?}");
    let event = event["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/events/{event}/playback-token");
    let (status, direct) = owner.post(&path, json!({})).await;
    assert_eq!(status, 200, "{direct:?}");
    let edges_before = direct["edges"].as_array().unwrap().clone();

    // The test client comes from 127.0.0.1: make loopback a p2p site.
    let (_, site) = owner
        .post(
            "/api/v1/sites",
            json!({"name": "Lab", "cidrs": ["127.0.0.0/8"], "p2p": "on"}),
        )
        .await;
    let (_, cred) = owner.post("/api/v1/agent-credentials", json!({})).await;
    let credential = cred["credential"].as_str().unwrap();
    let (status, _) = bearer(
        &plane.base,
        "/api/v1/agents/register",
        credential,
        registration(PEER_A, "127.0.0.2"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, via_agent) = owner.post(&path, json!({})).await;
    assert_eq!(status, 200);
    let edges = via_agent["edges"].as_array().unwrap();
    assert_eq!(edges[0], "https://127.0.0.2:8443/", "{via_agent:?}");
    assert_eq!(&edges[1..], &edges_before[..], "edges remain the fallback");

    // Peer-assist off for the site: straight to the edges again.
    let id = site["id"].as_str().unwrap();
    let (status, _) = owner
        .patch(
            &format!("/api/v1/sites/{id}"),
            json!({"name": "Lab", "cidrs": ["127.0.0.0/8"], "p2p": "off"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, off) = owner.post(&path, json!({})).await;
    assert_eq!(off["edges"], direct["edges"]);
}

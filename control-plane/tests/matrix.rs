//! Need-to-know (TENANT-1/2): every role × every endpoint, allowed or
//! denied, and ids of tenant B used from tenant A's session get 404.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

struct Fixture {
    tenant: String,
    event: String,
    participant: String,
    user: String,
    site: String,
}

async fn fixture(plane: &Plane, name: &str) -> (Fixture, Client, Client, Client, Client) {
    let (tenant, mut owner) = plane.tenant(name).await;
    let domain = name.to_lowercase();
    let (user, manager) = staff_session(
        plane,
        &mut owner,
        &tenant,
        &format!("m@{domain}.example"),
        "event_manager",
    )
    .await;
    let (_, moderator) = staff_session(
        plane,
        &mut owner,
        &tenant,
        &format!("mod@{domain}.example"),
        "moderator",
    )
    .await;
    let ev = owner.post("/api/v1/events", event_body("All hands")).await;
    assert_eq!(ev.0, 201, "{:?}", ev.1);
    let event = ev.1["id"].as_str().unwrap().to_owned();
    assert_eq!(
        owner
            .post(
                &format!("/api/v1/events/{event}/streams"),
                json!({"name": "main"})
            )
            .await
            .0,
        201
    );
    let email = format!("viewer@{domain}.example");
    let mut viewer = Client::new(&plane.base);
    let r = viewer
        .post(
            &format!("/api/v1/public/{tenant}/events/{event}/register"),
            json!({"email": email, "name": "Viewer", "fields": {"company": "X"}, "consent": true}),
        )
        .await;
    assert_eq!(r.0, 202, "{:?}", r.1);
    let (token, _) = plane.mail_link(&email).await.unwrap();
    let r = viewer
        .post("/api/v1/auth/magic-link/consume", json!({"token": token}))
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    let participant = r.1["id"].as_str().unwrap().to_owned();
    let site = owner
        .post(
            "/api/v1/sites",
            json!({"name": "HQ", "cidrs": ["10.1.0.0/16"], "p2p": "on"}),
        )
        .await;
    assert_eq!(site.0, 201, "{:?}", site.1);
    let site = site.1["id"].as_str().unwrap().to_owned();
    (
        Fixture {
            tenant,
            event,
            participant,
            user,
            site,
        },
        owner,
        manager,
        moderator,
        viewer,
    )
}

const ABSENT_E: &str = "e_aaaaaaaaaaaa";
const ABSENT_P: &str = "p_aaaaaaaaaaaa";
const ABSENT_U: &str = "u_aaaaaaaaaaaa";
const ABSENT_S: &str = "s_aaaaaaaaaaaa";

/// (method, path, body, roles allowed: owner, manager, moderator, participant)
fn endpoints(f: &Fixture) -> Vec<(Method, String, Option<Value>, [bool; 4])> {
    let e = &f.event;
    let p = &f.participant;
    let both = [true, true, false, false];
    let owner = [true, false, false, false];
    let staff = [true, true, true, false];
    let participant = [false, false, false, true];
    vec![
        (Method::GET, "/api/v1/tenant".into(), None, owner),
        (
            Method::PATCH,
            "/api/v1/tenant".into(),
            Some(json!({})),
            owner,
        ),
        (Method::GET, "/api/v1/users".into(), None, owner),
        (
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({"email": "bad", "name": "x", "role": "owner"})),
            owner,
        ),
        (
            Method::GET,
            format!("/api/v1/users/{ABSENT_U}"),
            None,
            owner,
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{ABSENT_U}"),
            Some(json!({})),
            owner,
        ),
        (
            Method::DELETE,
            format!("/api/v1/users/{ABSENT_U}"),
            None,
            owner,
        ),
        (
            Method::POST,
            format!("/api/v1/users/{ABSENT_U}/unlock"),
            Some(json!({})),
            owner,
        ),
        (
            Method::DELETE,
            format!("/api/v1/users/{ABSENT_U}/totp"),
            None,
            owner,
        ),
        (Method::GET, "/api/v1/sites".into(), None, owner),
        (
            Method::POST,
            "/api/v1/sites".into(),
            Some(json!({"name": "x", "cidrs": ["bad"], "p2p": "on"})),
            owner,
        ),
        (
            Method::PATCH,
            format!("/api/v1/sites/{ABSENT_S}"),
            Some(json!({"name": "x", "cidrs": ["10.0.0.0/8"], "p2p": "off"})),
            owner,
        ),
        (
            Method::DELETE,
            format!("/api/v1/sites/{ABSENT_S}"),
            None,
            owner,
        ),
        (Method::GET, "/api/v1/audit".into(), None, owner),
        (Method::GET, "/api/v1/audit/verify".into(), None, owner),
        (Method::GET, "/api/v1/access-review".into(), None, owner),
        (Method::GET, "/api/v1/retention".into(), None, both),
        (Method::GET, "/api/v1/edges".into(), None, owner),
        (Method::GET, "/api/v1/events".into(), None, staff),
        (
            Method::POST,
            "/api/v1/events".into(),
            Some(event_body("Matrix event")),
            both,
        ),
        (Method::GET, format!("/api/v1/events/{e}"), None, staff),
        (
            Method::PATCH,
            format!("/api/v1/events/{ABSENT_E}"),
            Some(event_body("x")),
            both,
        ),
        (
            Method::DELETE,
            format!("/api/v1/events/{ABSENT_E}"),
            None,
            both,
        ),
        (
            Method::POST,
            format!("/api/v1/events/{ABSENT_E}/end"),
            Some(json!({})),
            both,
        ),
        (
            Method::GET,
            format!("/api/v1/events/{e}/streams"),
            None,
            both,
        ),
        (
            Method::POST,
            format!("/api/v1/events/{ABSENT_E}/streams"),
            Some(json!({"name": "x"})),
            both,
        ),
        (
            Method::DELETE,
            format!("/api/v1/events/{e}/streams/absent"),
            None,
            both,
        ),
        (
            Method::POST,
            format!("/api/v1/events/{ABSENT_E}/streams/main/credential"),
            Some(json!({})),
            both,
        ),
        (
            Method::GET,
            format!("/api/v1/events/{e}/participants"),
            None,
            both,
        ),
        (
            Method::POST,
            format!("/api/v1/events/{ABSENT_E}/participants"),
            Some(json!({"email": "a@b.example", "name": "A"})),
            both,
        ),
        (
            Method::GET,
            format!("/api/v1/events/{e}/participants/{p}"),
            None,
            both,
        ),
        (
            Method::PATCH,
            format!("/api/v1/events/{e}/participants/{ABSENT_P}"),
            Some(json!({})),
            both,
        ),
        (
            Method::DELETE,
            format!("/api/v1/events/{e}/participants/{ABSENT_P}"),
            None,
            both,
        ),
        (
            Method::POST,
            format!("/api/v1/events/{e}/participants/{ABSENT_P}/status"),
            Some(json!({"status": "active"})),
            both,
        ),
        (
            Method::POST,
            format!("/api/v1/events/{e}/participants/{ABSENT_P}/unlock"),
            Some(json!({})),
            both,
        ),
        (
            Method::GET,
            format!("/api/v1/events/{e}/participants/{p}/export"),
            None,
            both,
        ),
        (
            Method::POST,
            format!("/api/v1/events/{ABSENT_E}/participants/import"),
            Some(json!("email,name\n")),
            both,
        ),
        (
            Method::GET,
            format!("/api/v1/events/{e}/participants/export"),
            None,
            both,
        ),
        (
            Method::POST,
            format!("/api/v1/events/{e}/playback-token"),
            Some(json!({})),
            [true, true, true, true],
        ),
        (
            Method::POST,
            format!("/api/v1/events/{e}/attendance"),
            Some(json!({"seconds": 1})),
            participant,
        ),
        (Method::GET, "/api/v1/me".into(), None, participant),
        (
            Method::PATCH,
            "/api/v1/me".into(),
            Some(json!({})),
            participant,
        ),
        (
            Method::POST,
            "/api/v1/me/consent".into(),
            Some(json!({"given": true})),
            participant,
        ),
        (Method::GET, "/api/v1/agent-credentials".into(), None, owner),
        (
            Method::DELETE,
            "/api/v1/agent-credentials/ag_aaaaaaaaaaaa".into(),
            None,
            owner,
        ),
        (
            Method::POST,
            "/api/v1/auth/totp/enrol".into(),
            Some(json!({"password": GOOD_PASSWORD})),
            [true, true, true, false],
        ),
        // Everyone's own sessions (the password is left out: no attempt is
        // spent, staff get 400, the participant's fresh session 404).
        (
            Method::GET,
            "/api/v1/auth/sessions".into(),
            None,
            [true, true, true, true],
        ),
        (
            Method::POST,
            "/api/v1/auth/sessions/0000000000000000/end".into(),
            Some(json!({})),
            [true, true, true, true],
        ),
    ]
}

#[tokio::test]
async fn every_role_against_every_endpoint() {
    let plane = start().await;
    let (f, owner, manager, moderator, viewer) = fixture(&plane, "Matrix").await;
    let mut clients = [owner, manager, moderator, viewer];
    let names = ["owner", "event_manager", "moderator", "participant"];
    let mut anonymous = Client::new(&plane.base);
    let mut failures = Vec::new();
    let mut checked = 0;
    for (method, path, body, allowed) in endpoints(&f) {
        for (i, c) in clients.iter_mut().enumerate() {
            let (status, reply) = c.send(method.clone(), &path, body.clone()).await;
            let denied = status == 403 || status == 401;
            if denied == allowed[i] {
                failures.push(format!("{method} {path} as {}: {status} {reply}", names[i]));
            }
            checked += 1;
        }
        let (status, _) = anonymous.send(method.clone(), &path, body.clone()).await;
        if status != 401 {
            failures.push(format!("{method} {path} anonymously: {status}"));
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Need-to-know of a moderator: events but no participant data.
    let r = clients[2]
        .get(&format!("/api/v1/events/{}/participants", f.event))
        .await;
    assert_eq!(r.0, 403);
    let _ = (&f.user, &f.site, &f.tenant);
}

#[tokio::test]
async fn ids_of_another_tenant_are_not_found() {
    let plane = start().await;
    let (a, mut a_owner, _, _, mut a_viewer) = fixture(&plane, "Alpha").await;
    let (b, mut b_owner, _, _, _) = fixture(&plane, "Beta").await;
    let probes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/v1/events/{}", b.event), None),
        (
            Method::PATCH,
            format!("/api/v1/events/{}", b.event),
            Some(event_body("taken over")),
        ),
        (
            Method::POST,
            format!("/api/v1/events/{}/end", b.event),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/api/v1/events/{}/streams", b.event),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/events/{}/streams/main/credential", b.event),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/api/v1/events/{}/participants", b.event),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/events/{}/participants/{}", b.event, b.participant),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/events/{}/participants/{}", a.event, b.participant),
            None,
        ),
        (
            Method::GET,
            format!(
                "/api/v1/events/{}/participants/{}/export",
                b.event, b.participant
            ),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v1/events/{}/participants/{}", b.event, b.participant),
            Some(json!({"name": "Changed"})),
        ),
        (
            Method::POST,
            format!(
                "/api/v1/events/{}/participants/{}/status",
                b.event, b.participant
            ),
            Some(json!({"status": "deactivated"})),
        ),
        (
            Method::GET,
            format!("/api/v1/events/{}/participants/export", b.event),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/events/{}/participants", b.event),
            Some(json!({"email": "x@y.example", "name": "X", "send_mail": false})),
        ),
        (
            Method::POST,
            format!("/api/v1/events/{}/participants/import", b.event),
            Some(json!("email,name\nx@y.example,X\n")),
        ),
        (Method::GET, format!("/api/v1/users/{}", b.user), None),
        (
            Method::PATCH,
            format!("/api/v1/users/{}", b.user),
            Some(json!({"role": "owner"})),
        ),
        (
            Method::POST,
            format!("/api/v1/users/{}/unlock", b.user),
            Some(json!({})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/users/{}/totp", b.user),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v1/sites/{}", b.site),
            Some(json!({"name": "x", "cidrs": ["10.0.0.0/8"], "p2p": "off"})),
        ),
        (Method::DELETE, format!("/api/v1/sites/{}", b.site), None),
        (
            Method::DELETE,
            format!("/api/v1/events/{}/participants/{}", b.event, b.participant),
            None,
        ),
        (Method::DELETE, format!("/api/v1/users/{}", b.user), None),
        (Method::DELETE, format!("/api/v1/events/{}", b.event), None),
    ];
    for (method, path, body) in probes {
        let (status, reply) = a_owner.send(method.clone(), &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {reply}");
        assert!(!reply.to_string().contains("viewer@beta"), "{reply}");
    }
    // A participant of A cannot get a playback token for B's event.
    assert_eq!(
        a_viewer
            .post(
                &format!("/api/v1/events/{}/playback-token", b.event),
                json!({})
            )
            .await
            .0,
        404
    );
    // B's data is untouched.
    let r = b_owner
        .get(&format!(
            "/api/v1/events/{}/participants/{}",
            b.event, b.participant
        ))
        .await;
    assert_eq!(r.0, 200);
    assert_eq!(r.1["name"], "Viewer");
    assert_eq!(
        b_owner.get(&format!("/api/v1/users/{}", b.user)).await.1["role"],
        "event_manager"
    );
    assert_eq!(
        b_owner
            .get("/api/v1/sites")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_same_origin() {
    let plane = start().await;
    let (_t, mut owner) = plane.tenant("Csrf").await;
    let csrf = owner.csrf.take();
    assert_eq!(owner.post("/api/v1/events", event_body("x")).await.0, 403);
    owner.csrf = csrf;
    assert_eq!(owner.post("/api/v1/events", event_body("x")).await.0, 201);
    let res = owner
        .http
        .post(format!("{}/api/v1/events", plane.base))
        .header(
            "cookie",
            owner
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
        .header("x-csrf-token", owner.csrf.clone().unwrap())
        .header("origin", "https://evil.example")
        .json(&event_body("y"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
}

//! Identity rules through the real HTTP API: lockout and unlock, password
//! policy, history and expiry, reset window, magic links (single use,
//! expiry, browser binding, code), TOTP, rate limits.

mod common;

use common::*;
use serde_json::json;
use strom_control_plane::{model::Link, store::Table};

async fn staff(plane: &Plane, owner: &mut Client, email: &str, role: &str) -> (String, String) {
    let r = owner
        .post(
            "/api/v1/users",
            json!({"email": email, "name": "Staff Member", "role": role}),
        )
        .await;
    assert_eq!(r.0, 201, "{:?}", r.1);
    let _ = plane;
    (
        r.1["user"]["id"].as_str().unwrap().into(),
        r.1["initial_password"].as_str().unwrap().into(),
    )
}

async fn login(
    base: &str,
    tenant: &str,
    email: &str,
    password: &str,
) -> (u16, serde_json::Value, Client) {
    let mut c = Client::new(base);
    let r = c
        .post(
            "/api/v1/auth/login",
            json!({"tenant": tenant, "email": email, "password": password}),
        )
        .await;
    (r.0, r.1, c)
}

#[tokio::test]
async fn fourth_attempt_after_three_failures_is_locked_until_an_owner_unlocks() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Acme").await;
    let (id, pw) = staff(&plane, &mut owner, "mgr@acme.example", "event_manager").await;
    for _ in 0..3 {
        assert_eq!(
            login(&plane.base, &t, "mgr@acme.example", "wrong password 1!")
                .await
                .0,
            401
        );
    }
    // The 4th attempt is refused even with the right password.
    let (status, body, _) = login(&plane.base, &t, "mgr@acme.example", &pw).await;
    assert_eq!(status, 423, "{body:?}");
    let r = owner.get(&format!("/api/v1/users/{id}")).await;
    assert_eq!(r.1["locked"], true);
    // Unknown accounts answer exactly like wrong passwords.
    assert_eq!(
        login(&plane.base, &t, "nobody@acme.example", &pw).await.0,
        401
    );

    assert_eq!(
        owner
            .post(&format!("/api/v1/users/{id}/unlock"), json!({}))
            .await
            .0,
        204
    );
    let (status, body, _) = login(&plane.base, &t, "mgr@acme.example", &pw).await;
    assert_eq!(status, 200, "{body:?}");
    let audit = owner.get("/api/v1/audit?limit=1000").await.1;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["entity_id"] == id.as_str())
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"locked") && actions.contains(&"unlock"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn parallel_attempts_cannot_exceed_the_limit() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Para").await;
    let (_id, pw) = staff(&plane, &mut owner, "mgr@para.example", "moderator").await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (base, t) = (plane.base.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            login(&base, &t, "mgr@para.example", "wrong password 1!")
                .await
                .0
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert!(
        statuses.iter().filter(|s| **s == 401).count() <= 3,
        "{statuses:?}"
    );
    assert_eq!(login(&plane.base, &t, "mgr@para.example", &pw).await.0, 423);
}

#[tokio::test]
async fn password_policy_history_and_expiry() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Pol").await;
    let (id, pw) = staff(&plane, &mut owner, "m@pol.example", "moderator").await;
    let (status, body, mut m) = login(&plane.base, &t, "m@pol.example", &pw).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["must_change_password"], true,
        "admin-generated passwords must be changed"
    );
    assert_eq!(m.get("/api/v1/events").await.0, 403);
    // Too short, common (ASVS 6.2.4) or made of the account's own words
    // (6.2.11); no class rules by default (6.2.5).
    for weak in [
        "short1!",
        "password1234",
        "Qwertyuiop123",
        "aaaaaaaaaaaaaaa",
        // Made of the organisation's name and the account's address (6.2.11).
        "Pol-Example-2026",
    ] {
        let r = m
            .post(
                "/api/v1/auth/password",
                json!({"current_password": pw, "new_password": weak}),
            )
            .await;
        assert_eq!(r.0, 400, "{weak}: {:?}", r.1);
    }
    let mut current = pw.clone();
    let mut used = vec![pw.clone()];
    for i in 0..10 {
        let next = format!("Passphrase-{i}-ok");
        let r = m
            .post(
                "/api/v1/auth/password",
                json!({"current_password": current, "new_password": next}),
            )
            .await;
        assert_eq!(r.0, 204, "{:?}", r.1);
        used.push(next.clone());
        current = next;
    }
    // Any of the last 10 is refused; the 11th back is allowed again.
    let r = m
        .post(
            "/api/v1/auth/password",
            json!({"current_password": current, "new_password": used[5]}),
        )
        .await;
    assert_eq!(r.0, 400, "{:?}", r.1);
    let r = m
        .post(
            "/api/v1/auth/password",
            json!({"current_password": current, "new_password": used[0]}),
        )
        .await;
    assert_eq!(r.0, 204, "the 11th password back may be reused: {:?}", r.1);
    current = used[0].clone();
    assert_eq!(m.get("/api/v1/events").await.0, 200);

    // Expiry: the tenant turns on 30 days; a password set 31 days ago must change.
    let r = owner.patch("/api/v1/tenant", json!({"password_policy": {"min_length": 10, "require_classes": true, "expiry_days": 30, "history": 10}})).await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    let r = owner.patch("/api/v1/tenant", json!({"password_policy": {"min_length": 10, "require_classes": true, "expiry_days": 181, "history": 10}})).await;
    assert_eq!(r.0, 400, "expiry is 1..=180 days");
    plane
        .repo
        .update_credential(
            &t,
            &strom_control_plane::model::Principal::Staff {
                user: id.clone(),
                role: strom_control_plane::model::Role::Moderator,
            },
            |c| {
                c.password_set_at =
                    Some(time::OffsetDateTime::now_utc() - time::Duration::days(31));
                Ok(())
            },
        )
        .unwrap();
    let (status, body, _) = login(&plane.base, &t, "m@pol.example", &current).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["must_change_password"], true,
        "expired password must be changed"
    );
}

#[tokio::test]
async fn magic_link_is_single_use_bound_to_the_browser_or_code_and_expires() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Magic").await;
    let ev = owner
        .post("/api/v1/events", event_body("Town hall"))
        .await
        .1;
    let e = ev["id"].as_str().unwrap().to_owned();
    let r = owner.post(&format!("/api/v1/events/{e}/participants"), json!({"email": "ada@magic.example", "name": "Ada Lovelace", "fields": {"company": "Analytical"}, "send_mail": false})).await;
    assert_eq!(r.0, 201, "{:?}", r.1);

    // Unknown and known addresses get the same answer.
    let mut browser = Client::new(&plane.base);
    let unknown = browser
        .post(
            "/api/v1/auth/magic-link",
            json!({"tenant": t, "event": e, "email": "nobody@magic.example"}),
        )
        .await;
    let known = browser
        .post(
            "/api/v1/auth/magic-link",
            json!({"tenant": t, "event": e, "email": "ada@magic.example"}),
        )
        .await;
    assert_eq!((unknown.0, known.0), (202, 202));
    assert_eq!(unknown.1, known.1);
    assert!(plane.last_mail("nobody@magic.example").await.is_none());
    let (token, code) = plane
        .mail_link("ada@magic.example")
        .await
        .expect("mail with link");

    // Another browser without the code cannot use it (mail scanners), and does not use it up.
    let mut scanner = Client::new(&plane.base);
    assert_eq!(
        scanner
            .post("/api/v1/auth/magic-link/consume", json!({"token": token}))
            .await
            .0,
        404
    );
    assert_eq!(
        scanner
            .post(
                "/api/v1/auth/magic-link/consume",
                json!({"token": token, "code": "00000000"})
            )
            .await
            .0,
        404
    );
    let r = browser
        .post("/api/v1/auth/magic-link/consume", json!({"token": token}))
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    assert_eq!(r.1["kind"], "participant");
    assert_eq!(
        browser.get("/api/v1/me").await.1["participant"]["status"],
        "active"
    );
    // Single use.
    let mut again = Client::new(&plane.base);
    again.cookies = browser
        .cookies
        .iter()
        .filter(|(k, _)| k.contains("preauth"))
        .cloned()
        .collect();
    assert_eq!(
        again
            .post("/api/v1/auth/magic-link/consume", json!({"token": token}))
            .await
            .0,
        404
    );

    // The code opens it on another device.
    browser
        .post(
            "/api/v1/auth/magic-link",
            json!({"tenant": t, "event": e, "email": "ada@magic.example"}),
        )
        .await;
    let (token2, code2) = plane.mail_link("ada@magic.example").await.unwrap();
    assert_ne!(token2, token);
    assert_ne!(code2, code);
    let mut phone = Client::new(&plane.base);
    assert_eq!(
        phone
            .post(
                "/api/v1/auth/magic-link/consume",
                json!({"token": token2, "code": code2})
            )
            .await
            .0,
        200
    );

    // Expiry: a link older than 10 minutes is refused.
    browser
        .post(
            "/api/v1/auth/magic-link",
            json!({"tenant": t, "event": e, "email": "ada@magic.example"}),
        )
        .await;
    let (token3, _) = plane.mail_link("ada@magic.example").await.unwrap();
    age_links(&plane, &t, 11);
    assert_eq!(
        browser
            .post("/api/v1/auth/magic-link/consume", json!({"token": token3}))
            .await
            .0,
        404
    );
}

/// Moves every stored link of a tenant `minutes` into the past.
fn age_links(plane: &Plane, tenant: &str, minutes: i64) {
    let rows = plane
        .repo
        .store
        .scan(Table::Links, format!("{tenant}/").as_bytes(), usize::MAX)
        .unwrap();
    let mut b = strom_control_plane::store::Batch::default();
    for (k, v) in rows {
        let mut link: Link = serde_json::from_slice(&v).unwrap();
        link.expires_at -= time::Duration::minutes(minutes);
        b.put(Table::Links, k, serde_json::to_vec(&link).unwrap());
    }
    plane.repo.store.write(b).unwrap();
}

#[tokio::test]
async fn reset_link_works_once_within_twenty_minutes() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Reset").await;
    staff(&plane, &mut owner, "r@reset.example", "moderator").await;
    let mut c = Client::new(&plane.base);
    assert_eq!(
        c.post(
            "/api/v1/auth/password-reset",
            json!({"tenant": t, "email": "r@reset.example"})
        )
        .await
        .0,
        202
    );
    let (token, _) = plane.mail_link("r@reset.example").await.unwrap();
    assert!(plane
        .last_mail("r@reset.example")
        .await
        .unwrap()
        .contains("20 minutes"));
    // A weak password is refused without using the link up.
    assert_eq!(
        c.post(
            "/api/v1/auth/password-reset/complete",
            json!({"token": token, "new_password": "weak"})
        )
        .await
        .0,
        400
    );
    assert_eq!(
        c.post(
            "/api/v1/auth/password-reset/complete",
            json!({"token": token, "new_password": "Brand-new-pass-1"})
        )
        .await
        .0,
        204
    );
    assert_eq!(
        c.post(
            "/api/v1/auth/password-reset/complete",
            json!({"token": token, "new_password": "Brand-new-pass-2"})
        )
        .await
        .0,
        404
    );
    let (status, body, _) = login(&plane.base, &t, "r@reset.example", "Brand-new-pass-1").await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(body["must_change_password"], false);

    // 19 minutes old: still valid; 21: refused.
    c.post(
        "/api/v1/auth/password-reset",
        json!({"tenant": t, "email": "r@reset.example"}),
    )
    .await;
    let (token, _) = plane.mail_link("r@reset.example").await.unwrap();
    age_links(&plane, &t, 19);
    assert_eq!(
        c.post(
            "/api/v1/auth/password-reset/complete",
            json!({"token": token, "new_password": "Brand-new-pass-3"})
        )
        .await
        .0,
        204
    );
    c.post(
        "/api/v1/auth/password-reset",
        json!({"tenant": t, "email": "r@reset.example"}),
    )
    .await;
    let (token, _) = plane.mail_link("r@reset.example").await.unwrap();
    age_links(&plane, &t, 21);
    assert_eq!(
        c.post(
            "/api/v1/auth/password-reset/complete",
            json!({"token": token, "new_password": "Brand-new-pass-4"})
        )
        .await
        .0,
        404
    );
}

fn code_at(secret: &str, unix: u64) -> String {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(totp_rs::Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap()
        .generate(unix)
        .to_string()
}

#[tokio::test]
async fn totp_is_required_once_enrolled_refuses_replays_and_can_be_mandatory() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Totp").await;
    let r = owner
        .post(
            "/api/v1/auth/totp/enrol",
            json!({"password": GOOD_PASSWORD}),
        )
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    let secret = r.1["secret"].as_str().unwrap().to_owned();
    assert!(r.1["uri"].as_str().unwrap().starts_with("otpauth://totp/"));
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    assert_eq!(
        owner
            .post("/api/v1/auth/totp/confirm", json!({"code": "000000"}))
            .await
            .0,
        400
    );
    assert_eq!(
        owner
            .post(
                "/api/v1/auth/totp/confirm",
                json!({"code": code_at(&secret, now - 30)})
            )
            .await
            .0,
        204
    );

    let email = "owner@totp.example";
    let mut c = Client::new(&plane.base);
    let r = c
        .post(
            "/api/v1/auth/login",
            json!({"tenant": t, "email": email, "password": GOOD_PASSWORD}),
        )
        .await;
    assert_eq!(r.0, 401, "password alone is not enough: {:?}", r.1);
    let code = code_at(&secret, now);
    let r = c
        .post(
            "/api/v1/auth/login",
            json!({"tenant": t, "email": email, "password": GOOD_PASSWORD, "totp": code}),
        )
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    let r = c
        .post(
            "/api/v1/auth/login",
            json!({"tenant": t, "email": email, "password": GOOD_PASSWORD, "totp": code}),
        )
        .await;
    assert_eq!(r.0, 401, "a used code cannot be replayed");

    // Mandatory for owners: a new owner without TOTP must enrol before anything else.
    assert_eq!(
        owner
            .patch("/api/v1/tenant", json!({"totp_required_for_owners": true}))
            .await
            .0,
        200
    );
    let r = owner.post("/api/v1/users", json!({"email": "o2@totp.example", "name": "Second Owner", "role": "owner", "password": "Preset-pass-123"})).await;
    assert_eq!(r.0, 201);
    let mut o2 = Client::new(&plane.base);
    let r = o2
        .post(
            "/api/v1/auth/login",
            json!({"tenant": t, "email": "o2@totp.example", "password": "Preset-pass-123"}),
        )
        .await;
    assert_eq!(r.1["must_enrol_totp"], true);
    assert_eq!(
        o2.post(
            "/api/v1/auth/password",
            json!({"current_password": "Preset-pass-123", "new_password": "Own-choice-pass-9"})
        )
        .await
        .0,
        204
    );
    assert_eq!(o2.get("/api/v1/users").await.0, 403);
    let s = o2
        .post(
            "/api/v1/auth/totp/enrol",
            json!({"password": "Own-choice-pass-9"}),
        )
        .await
        .1["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        o2.post(
            "/api/v1/auth/totp/confirm",
            json!({"code": code_at(&s, now)})
        )
        .await
        .0,
        204
    );
    assert_eq!(o2.get("/api/v1/users").await.0, 200);
}

#[tokio::test]
async fn login_and_link_endpoints_are_rate_limited_per_account_and_per_address() {
    let mut config = config();
    config.rate_limit_per_account_per_minute = 5;
    config.rate_limit_per_ip_per_minute = 12;
    let plane = start_with(config).await;
    let t = strom_control_plane::bootstrap(&plane.repo, "Rate", "o@rate.example", "O")
        .unwrap()
        .0
        .id;
    let mut c = Client::new(&plane.base);
    let mut statuses = vec![];
    for _ in 0..6 {
        statuses.push(
            c.post(
                "/api/v1/auth/magic-link",
                json!({"tenant": t, "email": "x@rate.example"}),
            )
            .await
            .0,
        );
    }
    assert_eq!(statuses, vec![202, 202, 202, 202, 202, 429]);
    let (status, _, headers) = c
        .send_raw(
            reqwest::Method::POST,
            "/api/v1/auth/password-reset",
            Some((
                "application/json",
                json!({"tenant": t, "email": "x@rate.example"})
                    .to_string()
                    .into_bytes(),
            )),
        )
        .await;
    assert_eq!(status, 429);
    assert!(headers.get("retry-after").is_some());
    // Other accounts from the same address until the per-address limit.
    let mut more = vec![];
    for i in 0..7 {
        more.push(
            c.post(
                "/api/v1/auth/magic-link",
                json!({"tenant": t, "email": format!("y{i}@rate.example")}),
            )
            .await
            .0,
        );
    }
    assert_eq!(more.iter().filter(|s| **s == 429).count(), 2, "{more:?}");
}

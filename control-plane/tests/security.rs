//! Regression tests for the findings of the security review (F1, F2, F5,
//! F6, F10, F13, F16–F19) through the real HTTP API: each one tries the
//! attack the review describes and expects it to fail.
//!
//! Why one file of ~1,000 lines: a finding's regression test is found by
//! its id here, next to the others of the same review, and each plays the
//! whole attack (several requests as two parties) against the real API.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use strom_control_plane::Scope;

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

fn unix_now() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp() as u64
}

/// Enrols a second factor for `c` (whose password is [`GOOD_PASSWORD`]);
/// returns its secret. The confirming code is from the previous time step,
/// so the current one stays free for a login.
async fn enrol_totp(c: &mut Client) -> String {
    let r = c
        .post(
            "/api/v1/auth/totp/enrol",
            json!({"password": GOOD_PASSWORD}),
        )
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    let secret = r.1["secret"].as_str().unwrap().to_owned();
    let r = c
        .post(
            "/api/v1/auth/totp/confirm",
            json!({"code": code_at(&secret, unix_now() - 30)}),
        )
        .await;
    assert_eq!(r.0, 204, "{:?}", r.1);
    secret
}

async fn login(base: &str, body: Value) -> (u16, Value, Client) {
    let mut c = Client::new(base);
    let r = c.post("/api/v1/auth/login", body).await;
    (r.0, r.1, c)
}

/// F1: a demoted owner keeps nothing of the old role in a live session and
/// cannot give it back to themselves; a deactivated one is logged out.
#[tokio::test]
async fn a_role_change_takes_effect_at_once_in_every_session() {
    let plane = start().await;
    let (t, mut a) = plane.tenant("Demote").await;
    let (b_id, mut b) = staff_session(&plane, &mut a, &t, "b@demote.example", "owner").await;
    assert_eq!(b.get("/api/v1/users").await.0, 200, "B is an owner");

    let r = a
        .patch(
            &format!("/api/v1/users/{b_id}"),
            json!({"role": "moderator"}),
        )
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    // B's session, opened as an owner, now has a moderator's rights.
    assert_eq!(b.get("/api/v1/users").await.0, 403);
    let r = b
        .patch(&format!("/api/v1/users/{b_id}"), json!({"role": "owner"}))
        .await;
    assert_eq!(r.0, 403, "no self-promotion: {:?}", r.1);
    let session = b.get("/api/v1/session").await;
    assert_eq!(session.1["role"], "moderator");
    assert_eq!(b.get("/api/v1/events").await.0, 200, "still a moderator");

    // Promoted to owner where owners must have TOTP: enrol first.
    assert_eq!(
        a.patch("/api/v1/tenant", json!({"totp_required_for_owners": true}))
            .await
            .0,
        200
    );
    enrol_totp(&mut a).await;
    let r = a
        .patch(&format!("/api/v1/users/{b_id}"), json!({"role": "owner"}))
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    assert_eq!(b.get("/api/v1/session").await.1["must_enrol_totp"], true);
    assert_eq!(b.get("/api/v1/users").await.0, 403, "not before enrolling");

    // Deactivated: every session ends.
    let r = a
        .patch(&format!("/api/v1/users/{b_id}"), json!({"active": false}))
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    assert_eq!(b.get("/api/v1/session").await.0, 401);
}

/// F2: a magic link proves the mailbox, not the second factor.
#[tokio::test]
async fn a_staff_magic_link_needs_the_second_factor() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Mailbox").await;
    let secret = enrol_totp(&mut owner).await;
    let email = "owner@mailbox.example";

    // Someone controlling the mailbox asks for a link in their browser.
    let mut attacker = Client::new(&plane.base);
    let r = attacker
        .post(
            "/api/v1/auth/magic-link",
            json!({"tenant": t, "email": email}),
        )
        .await;
    assert_eq!(r.0, 202);
    let (token, _) = plane.mail_link(email).await.unwrap();
    let r = attacker
        .post("/api/v1/auth/magic-link/consume", json!({"token": token}))
        .await;
    assert_eq!(r.0, 401, "{:?}", r.1);
    assert_eq!(r.1["reason"], "totp_required");
    assert_eq!(attacker.get("/api/v1/tenant").await.0, 401);
    let r = attacker
        .post(
            "/api/v1/auth/magic-link/consume",
            json!({"token": token, "totp": "000000"}),
        )
        .await;
    assert_eq!(r.0, 401, "a wrong code: {:?}", r.1);
    assert_eq!(attacker.get("/api/v1/tenant").await.0, 401);

    // The owner, with the code, from the browser that asked: in, once.
    let r = attacker
        .post(
            "/api/v1/auth/magic-link/consume",
            json!({"token": token, "totp": code_at(&secret, unix_now())}),
        )
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    assert_eq!(r.1["role"], "owner");
    assert_eq!(attacker.get("/api/v1/tenant").await.0, 200);
    let r = attacker
        .post(
            "/api/v1/auth/magic-link/consume",
            json!({"token": token, "totp": code_at(&secret, unix_now())}),
        )
        .await;
    assert_eq!(r.0, 404, "single use");

    // Guessing codes through links locks the account like passwords do.
    let mut guesser = Client::new(&plane.base);
    guesser
        .post(
            "/api/v1/auth/magic-link",
            json!({"tenant": t, "email": email}),
        )
        .await;
    let (token, _) = plane.mail_link(email).await.unwrap();
    let mut statuses = vec![];
    for guess in ["111111", "222222", "333333", "444444"] {
        statuses.push(
            guesser
                .post(
                    "/api/v1/auth/magic-link/consume",
                    json!({"token": token, "totp": guess}),
                )
                .await
                .0,
        );
    }
    assert_eq!(statuses, vec![401, 401, 401, 423]);
}

/// F5: a session alone cannot add or replace the second factor.
#[tokio::test]
async fn a_second_factor_is_replaced_only_with_the_password_and_the_current_one() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Replace").await;
    // First enrolment needs the password.
    let r = owner.post("/api/v1/auth/totp/enrol", json!({})).await;
    assert_eq!(r.0, 400, "{:?}", r.1);
    let r = owner
        .post(
            "/api/v1/auth/totp/enrol",
            json!({"password": "Wrong-pass-123"}),
        )
        .await;
    assert_eq!(r.0, 401, "{:?}", r.1);
    let old = enrol_totp(&mut owner).await;

    // A stolen cookie with the password but without the current factor.
    let r = owner
        .post(
            "/api/v1/auth/totp/enrol",
            json!({"password": GOOD_PASSWORD}),
        )
        .await;
    assert_eq!(r.0, 401, "{:?}", r.1);
    let r = owner
        .post(
            "/api/v1/auth/totp/enrol",
            json!({"password": GOOD_PASSWORD, "current_code": "123456"}),
        )
        .await;
    assert_eq!(r.0, 401, "{:?}", r.1);

    // With it: a new factor, and the old one is gone.
    let r = owner
        .post(
            "/api/v1/auth/totp/enrol",
            json!({"password": GOOD_PASSWORD, "current_code": code_at(&old, unix_now())}),
        )
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    let new = r.1["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let r = owner
        .post(
            "/api/v1/auth/totp/confirm",
            json!({"code": code_at(&new, unix_now() - 30)}),
        )
        .await;
    assert_eq!(r.0, 204, "{:?}", r.1);
    let email = "owner@replace.example";
    let (status, _, _) = login(
        &plane.base,
        json!({"tenant": t, "email": email, "password": GOOD_PASSWORD, "totp": code_at(&old, unix_now())}),
    )
    .await;
    assert_eq!(status, 401, "the replaced factor no longer works");
    let (status, _, _) = login(
        &plane.base,
        json!({"tenant": t, "email": email, "password": GOOD_PASSWORD, "totp": code_at(&new, unix_now())}),
    )
    .await;
    assert_eq!(status, 200);
}

/// F6: changing or resetting a password logs out everyone else.
#[tokio::test]
async fn a_password_change_or_reset_ends_the_other_sessions() {
    let plane = start().await;
    let (t, _owner) = plane.tenant("Sessions").await;
    let email = "owner@sessions.example";
    let creds = json!({"tenant": t, "email": email, "password": GOOD_PASSWORD});
    let (_, _, mut a) = login(&plane.base, creds.clone()).await;
    let (_, _, mut b) = login(&plane.base, creds.clone()).await;
    assert_eq!(b.get("/api/v1/session").await.0, 200);
    let r = a
        .post(
            "/api/v1/auth/password",
            json!({"current_password": GOOD_PASSWORD, "new_password": "Another-good-pass-42"}),
        )
        .await;
    assert_eq!(r.0, 204, "{:?}", r.1);
    assert_eq!(
        b.get("/api/v1/session").await.0,
        401,
        "the other session ended"
    );
    assert_eq!(
        a.get("/api/v1/session").await.0,
        200,
        "the changing one stays"
    );

    // A reset (the account was taken over) ends every session.
    let (_, _, mut c) = login(
        &plane.base,
        json!({"tenant": t, "email": email, "password": "Another-good-pass-42"}),
    )
    .await;
    let mut anon = Client::new(&plane.base);
    anon.post(
        "/api/v1/auth/password-reset",
        json!({"tenant": t, "email": email}),
    )
    .await;
    let (token, _) = plane.mail_link(email).await.unwrap();
    let r = anon
        .post(
            "/api/v1/auth/password-reset/complete",
            json!({"token": token, "new_password": "Third-good-pass-77"}),
        )
        .await;
    assert_eq!(r.0, 204, "{:?}", r.1);
    assert_eq!(a.get("/api/v1/session").await.0, 401);
    assert_eq!(c.get("/api/v1/session").await.0, 401);
}

/// F10: behind a trusted reverse proxy the per-address limit keys on the
/// client it names; per account, spellings of one address share a limit.
#[tokio::test]
async fn rate_limits_key_on_the_real_client_and_the_normalised_account() {
    let mut config = config();
    config.rate_limit_per_ip_per_minute = 2;
    config.rate_limit_per_account_per_minute = 5;
    config.trusted_proxies = vec!["127.0.0.1/32".into()];
    let plane = start_with(config).await;
    let t = strom_control_plane::bootstrap(&plane.repo, "Proxy", "o@proxy.example", "O")
        .unwrap()
        .0
        .id;
    let attempt = |from: &'static str, email: &'static str| {
        let base = plane.base.clone();
        let t = t.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/api/v1/auth/login"))
                .header("x-forwarded-for", from)
                .json(&json!({"tenant": t, "email": email, "password": "wrong-wrong-1"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Client Y uses up its allowance ...
    assert_eq!(attempt("198.51.100.1", "y1@proxy.example").await, 401);
    assert_eq!(attempt("198.51.100.1", "y2@proxy.example").await, 401);
    assert_eq!(attempt("198.51.100.1", "y3@proxy.example").await, 429);
    // ... and client X, through the same proxy, is not affected.
    assert_eq!(attempt("198.51.100.2", "x@proxy.example").await, 401);
    // A client's own X-Forwarded-For entry does not reset its allowance:
    // the proxy appends what it saw.
    assert_eq!(
        attempt("203.0.113.7, 198.51.100.1", "y4@proxy.example").await,
        429
    );

    // Per account: white space and case make no new account.
    let mut statuses = vec![];
    for (i, variant) in [
        "v@proxy.example",
        " v@proxy.example",
        "v@proxy.example ",
        "\tV@proxy.example",
        "V@PROXY.EXAMPLE",
        " v@Proxy.example\t",
    ]
    .iter()
    .enumerate()
    {
        statuses.push(
            reqwest::Client::new()
                .post(format!("{}/api/v1/auth/magic-link", plane.base))
                .header("x-forwarded-for", format!("192.0.2.{i}"))
                .json(&json!({"tenant": t, "email": variant}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![202, 202, 202, 202, 202, 429]);
}

/// A mail server that takes half a minute per mail.
struct SlowMailer;

impl strom_identity::mail::Mailer for SlowMailer {
    fn send(
        &self,
        _mail: strom_identity::mail::Mail,
    ) -> futures::future::BoxFuture<'_, Result<(), strom_identity::mail::MailError>> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        })
    }
}

/// F13: a known address is not told apart from an unknown one by how long
/// the answer takes (the mail goes out in the background), nor by a lock
/// after failed logins.
#[tokio::test]
async fn answers_do_not_tell_which_addresses_have_accounts() {
    let plane = start_custom(config(), |cp| {
        cp.set_mailer(Arc::new(SlowMailer)).unwrap();
    })
    .await;
    let (t, _owner) = plane.tenant("Timing").await;
    let mut c = Client::new(&plane.base);
    for email in ["owner@timing.example", "nobody@timing.example"] {
        for path in ["/api/v1/auth/magic-link", "/api/v1/auth/password-reset"] {
            let started = Instant::now();
            let r = c.post(path, json!({"tenant": t, "email": email})).await;
            assert_eq!(r.0, 202);
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{path} for {email} waited for the mail server: {:?}",
                started.elapsed()
            );
        }
    }
    // Unknown accounts lock like real ones after three failures.
    for email in ["owner@timing.example", "nobody@timing.example"] {
        let mut statuses = vec![];
        for _ in 0..4 {
            let (status, _, _) = login(
                &plane.base,
                json!({"tenant": t, "email": email, "password": "Not-the-password-1"}),
            )
            .await;
            statuses.push(status);
        }
        assert_eq!(statuses, vec![401, 401, 401, 423], "{email}");
    }
}

/// F17: two logins racing with the same password and code: one gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_totp_code_cannot_be_used_twice_at_once() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Race").await;
    let secret = enrol_totp(&mut owner).await;
    let code = code_at(&secret, unix_now());
    let body = json!({"tenant": t, "email": "owner@race.example", "password": GOOD_PASSWORD, "totp": code});
    let (a, b) = tokio::join!(
        login(&plane.base, body.clone()),
        login(&plane.base, body.clone())
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 401]);
}

/// F18: withdrawing consent ends access; attendance cannot be inflated.
#[tokio::test]
async fn withdrawn_consent_ends_access_and_attendance_counts_real_time_only() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Consent").await;
    let mut body = event_body("Town hall");
    body["attendance"] = json!(true);
    let r = owner.post("/api/v1/events", body).await;
    assert_eq!(r.0, 201, "{:?}", r.1);
    let e = r.1["id"].as_str().unwrap().to_owned();
    let email = "pia@consent.example";
    let mut viewer = Client::new(&plane.base);
    let r = viewer
        .post(
            &format!("/api/v1/public/{t}/events/{e}/register"),
            json!({"email": email, "name": "Pia", "fields": {"company": "X"}, "consent": true}),
        )
        .await;
    assert_eq!(r.0, 202, "{:?}", r.1);
    let (token, _) = plane.mail_link(email).await.unwrap();
    let r = viewer
        .post("/api/v1/auth/magic-link/consume", json!({"token": token}))
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    let play = format!("/api/v1/events/{e}/playback-token");
    assert_eq!(viewer.post(&play, json!({})).await.0, 200);
    // A participant's address is the organiser's record (and the login
    // name): it is not theirs to change, nor anyone else's through them.
    let r = viewer
        .patch("/api/v1/me", json!({"email": "someone.else@example.com"}))
        .await;
    assert_eq!(r.0, 403, "{:?}", r.1);
    assert_eq!(
        viewer.get("/api/v1/me").await.1["participant"]["email"],
        email
    );

    let r = viewer
        .post("/api/v1/me/consent", json!({"given": false}))
        .await;
    assert!(r.0 < 300, "{:?}", r.1);
    assert_eq!(
        viewer.post(&play, json!({})).await.0,
        403,
        "withdrawn: no token"
    );
    let r = viewer
        .post("/api/v1/me/consent", json!({"given": true}))
        .await;
    assert!(r.0 < 300, "{:?}", r.1);
    assert_eq!(viewer.post(&play, json!({})).await.0, 200, "given again");

    // Ten reports of 600 s in a moment credit at most one report's worth.
    let report = format!("/api/v1/events/{e}/attendance");
    for _ in 0..10 {
        assert_eq!(viewer.post(&report, json!({"seconds": 600})).await.0, 204);
    }
    let attended = viewer.get("/api/v1/me").await.1["participant"]["attended_secs"]
        .as_u64()
        .unwrap();
    assert!(
        (600..=600 + 10 * 6).contains(&attended),
        "credited {attended} s in a few seconds"
    );
}

/// F19: a CSV import cannot queue tens of thousands of password hashes.
#[tokio::test]
async fn an_import_takes_a_bounded_number_of_passwords() {
    let plane = start().await;
    let (_t, mut owner) = plane.tenant("Import").await;
    let r = owner.post("/api/v1/events", event_body("Town hall")).await;
    let e = r.1["id"].as_str().unwrap().to_owned();
    let rows = strom_control_plane::repo::MAX_PASSWORDS_PER_IMPORT + 1;
    let mut csv = String::from("email,name,company,password\n");
    for i in 0..rows {
        csv.push_str(&format!("p{i}@import.example,P {i},Co,Pass-word-{i:05}x\n"));
    }
    let (status, text, _) = owner
        .send_raw(
            reqwest::Method::POST,
            &format!("/api/v1/events/{e}/participants/import"),
            Some(("text/csv", csv.into_bytes())),
        )
        .await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("rows with a password"), "{text}");
    assert_eq!(
        owner
            .get(&format!("/api/v1/events/{e}/participants"))
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// F16: once a participant is erased, what the audit trail kept of them
/// cannot be opened by anyone, with any key the control plane holds.
#[tokio::test]
async fn an_erased_participants_data_is_unreadable_in_the_audit_trail() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Erase").await;
    let r = owner.post("/api/v1/events", event_body("Town hall")).await;
    let e = r.1["id"].as_str().unwrap().to_owned();
    let r = owner
        .post(
            &format!("/api/v1/events/{e}/participants"),
            json!({"email": "eva@erase.example", "name": "Eva Example", "fields": {"company": "Co"}, "send_mail": false}),
        )
        .await;
    assert_eq!(r.0, 201, "{:?}", r.1);
    let p = r.1["id"].as_str().unwrap().to_owned();
    let audit = owner.get("/api/v1/audit?limit=1000").await.1;
    let before: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["entity_id"] == p.as_str())
        .collect();
    assert!(before.iter().any(|a| a["new_value"] == "eva@erase.example"));

    let r = owner
        .delete(&format!("/api/v1/events/{e}/participants/{p}"))
        .await;
    assert!(r.0 < 300, "{:?}", r.1);
    let audit = owner.get("/api/v1/audit?limit=1000").await.1;
    let after: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["entity_id"] == p.as_str())
        .collect();
    assert!(after.len() > before.len(), "the erasure is recorded");
    for a in &after {
        for v in [&a["old_value"], &a["new_value"]] {
            let text = v.as_str().unwrap_or("");
            assert!(
                !text.contains("eva@") && !text.contains("Eva Example"),
                "readable after erasure: {a}"
            );
        }
    }
    // Not with the event's key nor the tenant's either (both still exist).
    let records: Vec<strom_control_plane::AuditRecord> = plane
        .repo
        .store
        .scan(
            strom_control_plane::store::Table::Audit,
            format!("{t}/").as_bytes(),
            usize::MAX,
        )
        .unwrap()
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).unwrap())
        .filter(|r: &strom_control_plane::AuditRecord| r.entity_id == p)
        .collect();
    let mut sealed = 0;
    for r in &records {
        for v in [&r.old, &r.new].into_iter().flatten() {
            if v.starts_with('=') {
                continue;
            }
            sealed += 1;
            let place = format!("{t}|audit|{p}|{}", r.field.clone().unwrap_or_default());
            for scope in [
                Scope::Event(t.clone(), e.clone()),
                Scope::Tenant(t.clone()),
                Scope::Subject(t.clone(), p.clone()),
            ] {
                assert!(
                    plane.repo.ring.open_str(&scope, &place, v).is_err(),
                    "{scope:?} opens {place}"
                );
            }
        }
    }
    assert!(sealed >= 4, "{sealed} sealed values");
}

/// Moves every session of `tenant` back in time (idle and absolute).
fn age_sessions(plane: &Plane, tenant: &str, idle_minutes: i64, age_minutes: i64) {
    use strom_control_plane::store::{Batch, Table};
    let rows = plane
        .repo
        .store
        .scan(Table::Sessions, format!("{tenant}/").as_bytes(), usize::MAX)
        .unwrap();
    let mut b = Batch::default();
    for (k, v) in rows {
        let mut s: strom_control_plane::model::Session = serde_json::from_slice(&v).unwrap();
        s.last_seen -= time::Duration::minutes(idle_minutes);
        s.created_at -= time::Duration::minutes(age_minutes);
        b.put(Table::Sessions, k, serde_json::to_vec(&s).unwrap());
    }
    plane.repo.store.write(b).unwrap();
}

/// V7 with secure cookies on, as in production: the cookie's flags, the
/// idle and the absolute timeout, logout.
#[tokio::test]
async fn sessions_use_host_cookies_and_end_by_idle_absolute_timeout_and_logout() {
    let mut config = config();
    config.secure_cookies = true;
    let plane = start_with(config).await;
    let (t, _, _) = {
        let (tenant, user, password) =
            strom_control_plane::bootstrap(&plane.repo, "Cookies", "o@cookies.example", "O")
                .unwrap();
        (tenant.id, user, password)
    };
    // The bootstrap password must be changed; set a known one directly.
    let owner = strom_control_plane::model::Principal::Staff {
        user: plane.repo.users(&t).unwrap()[0].id.clone(),
        role: strom_control_plane::model::Role::Owner,
    };
    plane
        .repo
        .set_password(&t, &owner, GOOD_PASSWORD, &Default::default(), None)
        .unwrap();
    let creds = json!({"tenant": t, "email": "o@cookies.example", "password": GOOD_PASSWORD});
    let log_in = || async {
        let mut c = Client::new(&plane.base);
        let (status, _, headers) = c
            .send_raw(
                reqwest::Method::POST,
                "/api/v1/auth/login",
                Some(("application/json", creds.to_string().into_bytes())),
            )
            .await;
        assert_eq!(status, 200);
        let cookie = headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|v| v.starts_with("__Host-strom_session="))
            .expect("a __Host- session cookie");
        (c, cookie)
    };
    let (mut c, cookie) = log_in().await;
    for flag in [
        "; Path=/",
        "; HttpOnly",
        "; SameSite=Lax",
        "; Secure",
        "; Max-Age=43200",
    ] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    assert!(!cookie.to_lowercase().contains("domain="), "{cookie}");
    assert_eq!(c.get("/api/v1/session").await.0, 200);
    // Without the __Host- name the cookie is not taken.
    let mut plain = Client::new(&plane.base);
    plain.cookies = vec![("strom_session".into(), c.cookies[0].1.clone())];
    assert_eq!(plain.get("/api/v1/session").await.0, 401);

    // Idle past the tenant's 30 minutes: over.
    age_sessions(&plane, &t, 31, 31);
    assert_eq!(c.get("/api/v1/session").await.0, 401);
    // Active all along but older than 12 hours: over.
    let (mut c, _) = log_in().await;
    age_sessions(&plane, &t, 0, 12 * 60 + 1);
    assert_eq!(c.get("/api/v1/session").await.0, 401);

    // Logout clears the cookie and ends the session for good.
    let (mut c, _) = log_in().await;
    let stolen = c.cookies.clone();
    let (status, _, headers) = c
        .send_raw(reqwest::Method::POST, "/api/v1/auth/logout", None)
        .await;
    assert_eq!(status, 204);
    let cleared = headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let mut replay = Client::new(&plane.base);
    replay.cookies = stolen;
    assert_eq!(replay.get("/api/v1/session").await.0, 401);

    // Logging in again in a browser that holds a session (planted there, or
    // left over) ends that session on the server: it does not live on.
    let (mut c, _) = log_in().await;
    let planted = c.cookies.clone();
    let (status, _, _) = c
        .send_raw(
            reqwest::Method::POST,
            "/api/v1/auth/login",
            Some(("application/json", creds.to_string().into_bytes())),
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(c.cookies, planted);
    assert_eq!(c.get("/api/v1/session").await.0, 200);
    let mut old = Client::new(&plane.base);
    old.cookies = planted;
    assert_eq!(old.get("/api/v1/session").await.0, 401);
}

/// V16: failed logins, refused requests and CSRF refusals are security
/// events in the audit trail owners read, pseudonymous, and bounded.
#[tokio::test]
async fn refusals_are_security_events_in_the_audit_trail() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Events").await;
    let (m_id, mut moderator) =
        staff_session(&plane, &mut owner, &t, "m@events.example", "moderator").await;
    // A wrong password for an account that exists.
    let (status, _, _) = login(
        &plane.base,
        json!({"tenant": t, "email": "m@events.example", "password": "Not-it-at-all-1"}),
    )
    .await;
    assert_eq!(status, 401);
    // A moderator asking for the owners' user list; then a state change
    // without the CSRF token.
    assert_eq!(moderator.get("/api/v1/users").await.0, 403);
    let csrf = moderator.csrf.take();
    assert_eq!(
        moderator.post("/api/v1/events", event_body("X")).await.0,
        403
    );
    moderator.csrf = csrf;
    // Calling forbidden routes in a loop adds a bounded number of records.
    for _ in 0..30 {
        moderator.get("/api/v1/users").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let audit = owner.get("/api/v1/audit?limit=1000").await.1;
    let of = |action: &str| -> Vec<Value> {
        audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == action && a["entity_id"] == m_id.as_str())
            .cloned()
            .collect()
    };
    assert_eq!(of("login-failed").len(), 1, "{audit}");
    let refused = of("access-refused");
    assert!(
        refused.iter().any(|a| a["field"] == "GET /api/v1/users"),
        "{refused:?}"
    );
    assert!(refused.len() <= strom_control_plane::SECURITY_EVENTS_PER_MINUTE as usize);
    assert_eq!(of("csrf-refused").len(), 1, "{audit}");
    assert!(!of("login").is_empty(), "staff logins are recorded too");
    // Pseudonymous: no e-mail address in these records.
    for action in ["login-failed", "access-refused", "csrf-refused", "login"] {
        for record in of(action) {
            assert!(!record.to_string().contains('@'), "{record}");
        }
    }
    // And counted for the monitoring.
    let metrics = plane.repo.metrics.render();
    assert!(metrics.contains("strom_cp_refusals_total{reason=\"forbidden\"}"));
    assert!(
        !metrics.contains("strom_cp_refusals_total{reason=\"csrf\"} 0"),
        "{metrics}"
    );
}

/// Tenant ids are logged (pseudonymous) with every login: one that could
/// forge a log line, or is not an organisation id at all, is refused before
/// it gets near a log, on each unauthenticated entry that takes one.
#[tokio::test]
async fn tenant_ids_that_are_not_organisation_ids_are_refused() {
    let plane = start().await;
    let (t, _owner) = plane.tenant("Ids").await;
    for tenant in [
        format!("{t}\n2026-12-06T00:00:00Z INFO login tenant=t_000000000000"),
        format!("{t}\r"),
        "t_short".into(),
        "../../etc".into(),
        String::new(),
    ] {
        let r = login(
            &plane.base,
            json!({"tenant": tenant, "email": "owner@ids.example", "password": GOOD_PASSWORD}),
        )
        .await;
        assert_eq!(r.0, 400, "{tenant:?}: {:?}", r.1);
        let mut c = Client::new(&plane.base);
        let r = c
            .post(
                "/api/v1/auth/magic-link",
                json!({"tenant": tenant, "email": "owner@ids.example"}),
            )
            .await;
        assert_eq!(r.0, 400, "{tenant:?}: {:?}", r.1);
    }
    // The real id still works.
    let r = login(
        &plane.base,
        json!({"tenant": t, "email": "owner@ids.example", "password": GOOD_PASSWORD}),
    )
    .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
}

/// ASVS 6.4.4: a staff member who lost the authenticator gets a new
/// enrolment from an owner, not a way around the factor: the owner removes
/// it (audited), every session of the account ends, and nobody removes
/// their own factor this way or anyone's without being an owner.
#[tokio::test]
async fn an_owner_removes_a_lost_second_factor_and_the_sessions_end() {
    let plane = start().await;
    let (t, mut owner) = plane.tenant("Lost").await;
    let (b_id, mut b) =
        staff_session(&plane, &mut owner, &t, "b@lost.example", "event_manager").await;
    let (_, mut moderator) =
        staff_session(&plane, &mut owner, &t, "m@lost.example", "moderator").await;
    enrol_totp(&mut b).await;
    let creds = json!({"tenant": t, "email": "b@lost.example", "password": GOOD_PASSWORD});
    let (status, body, _) = login(&plane.base, creds.clone()).await;
    assert_eq!(status, 401, "the factor is needed: {body:?}");
    assert_eq!(b.get("/api/v1/session").await.0, 200);

    let path = format!("/api/v1/users/{b_id}/totp");
    assert_eq!(moderator.delete(&path).await.0, 403, "moderators may not");
    assert_eq!(
        b.delete(&path).await.0,
        403,
        "nor the holder, without password and code"
    );
    let me = owner.get("/api/v1/session").await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        owner.delete(&format!("/api/v1/users/{me}/totp")).await.0,
        403,
        "nor an owner their own"
    );

    let r = owner.delete(&path).await;
    assert_eq!(r.0, 204, "{:?}", r.1);
    assert_eq!(b.get("/api/v1/session").await.0, 401, "the sessions end");
    assert_eq!(
        owner.get(&format!("/api/v1/users/{b_id}")).await.1["totp"],
        false
    );
    let (status, body, _) = login(&plane.base, creds).await;
    assert_eq!(status, 200, "a password login enrols anew: {body:?}");
    let audit = owner.get("/api/v1/audit?limit=1000").await.1;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["actor"] == me.as_str()
                && a["action"] == "delete"
                && a["entity_id"] == b_id.as_str()
                && a["field"] == "totp"),
        "the removal is in the audit trail: {audit}"
    );
}

/// ASVS 7.5.2 and 7.1.2: an account sees its live sessions and ends one
/// after authenticating again; a session alone (a cookie left on a shared
/// computer) cannot; at most MAX_SESSIONS_PER_ACCOUNT live at once, the
/// least recently used ending first.
#[tokio::test]
async fn own_sessions_are_listed_and_ended_after_authenticating_again() {
    let plane = start().await;
    let (t, mut first) = plane.tenant("Sessions").await;
    let creds = json!({"tenant": t, "email": "owner@sessions.example", "password": GOOD_PASSWORD});
    let (status, _, mut second) = login(&plane.base, creds.clone()).await;
    assert_eq!(status, 200);

    let (status, list) = second.get("/api/v1/auth/sessions").await;
    assert_eq!(status, 200, "{list:?}");
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    for (_, secret) in &second.cookies {
        assert!(
            !list.iter().any(|s| s.to_string().contains(secret.as_str())),
            "a secret is listed"
        );
    }
    let other = list.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let end = format!("/api/v1/auth/sessions/{other}/end");

    // Without the password, or with a wrong one: no.
    assert_eq!(second.post(&end, json!({})).await.0, 400);
    assert_eq!(
        second
            .post(&end, json!({"password": "Not-the-password-1"}))
            .await
            .0,
        401
    );
    assert_eq!(first.get("/api/v1/session").await.0, 200);
    // Another account's session ids mean nothing here.
    let (_, mut globex) = plane.tenant("Globex").await;
    let r = globex.post(&end, json!({"password": GOOD_PASSWORD})).await;
    assert_eq!(r.0, 404, "{:?}", r.1);
    assert_eq!(first.get("/api/v1/session").await.0, 200);

    let r = second.post(&end, json!({"password": GOOD_PASSWORD})).await;
    assert_eq!(r.0, 204, "{:?}", r.1);
    assert_eq!(first.get("/api/v1/session").await.0, 401, "ended");
    assert_eq!(
        second.get("/api/v1/session").await.0,
        200,
        "the caller's stays"
    );
    assert_eq!(
        second
            .get("/api/v1/auth/sessions")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The 21st login ends the least recently used session. Times are kept
    // to the second: the others log in a second later than `second`.
    let limit = strom_control_plane::repo::MAX_SESSIONS_PER_ACCOUNT;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut clients = vec![];
    for _ in 1..limit {
        let (status, _, c) = login(&plane.base, creds.clone()).await;
        assert_eq!(status, 200);
        clients.push(c);
    }
    assert_eq!(
        second
            .get("/api/v1/auth/sessions")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        limit
    );
    // Activity is recorded at most every 30 s, so `second`, the oldest,
    // is the least recently used.
    let (status, _, mut newest) = login(&plane.base, creds.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        newest
            .get("/api/v1/auth/sessions")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        limit
    );
    assert_eq!(
        second.get("/api/v1/session").await.0,
        401,
        "the least recently used ended"
    );
    for c in clients.iter_mut() {
        assert_eq!(c.get("/api/v1/session").await.0, 200);
    }
}

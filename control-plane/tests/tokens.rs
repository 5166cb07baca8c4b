//! Tokens against the revocation log: a credential re-issued within the same
//! second as the revocation of its predecessor works, the predecessor not.

mod common;

use strom_control_plane::{model::Event, repo::now};
use strom_token::{Action, RevocationKind, Verifier};

#[tokio::test]
async fn a_reissued_publish_credential_works_at_once_and_the_old_one_not() {
    let plane = common::start().await;
    let repo = &plane.repo;
    let (tenant, _, _) =
        strom_control_plane::bootstrap(repo, "Acme", "owner@acme.example", "Owner").unwrap();
    let start = now() - time::Duration::minutes(5);
    let event = repo
        .create_event(
            "test",
            Event::open(
                &tenant.id,
                "Town hall",
                start,
                start + time::Duration::hours(2),
            ),
        )
        .unwrap();
    repo.create_stream("test", &tenant.id, &event.id, "main")
        .unwrap();
    let verifier = Verifier::new();
    verifier.set_keys(&repo.key_set().unwrap());
    let parts = [tenant.id.as_str(), event.id.as_str(), "main"];
    let at = time::OffsetDateTime::now_utc();

    // Many re-issues in quick succession, several within one second.
    let mut previous: Option<String> = None;
    for _ in 0..20 {
        let (key, _) = repo
            .issue_publish_credential("test", &tenant.id, &event.id, "main")
            .unwrap();
        verifier
            .revocations_mut()
            .apply(&repo.revocations_after(0, None).unwrap());
        let now = time::OffsetDateTime::now_utc();
        verifier
            .authorize(&key, Action::Publish, &parts, now)
            .expect("the newest credential is valid");
        if let Some(old) = previous {
            assert!(
                verifier
                    .authorize(&old, Action::Publish, &parts, now)
                    .is_err(),
                "the replaced credential is revoked"
            );
        }
        previous = Some(key);
    }
    assert!(time::OffsetDateTime::now_utc() - at < time::Duration::seconds(5));

    // A subject revoked and then granted again in the same second.
    repo.revoke(RevocationKind::Subject, &tenant.id, "p_again")
        .unwrap();
    let (token, _) = repo
        .mint(&strom_token::Grant::play("p_again", &tenant.id, &event.id))
        .unwrap();
    verifier
        .revocations_mut()
        .apply(&repo.revocations_after(0, None).unwrap());
    verifier
        .authorize(
            &token,
            Action::Play,
            &parts,
            time::OffsetDateTime::now_utc(),
        )
        .expect("a token minted after the revocation is valid");
}

/// Ending an event revokes its tokens at once and no new ones are issued
/// (no grace after an explicit end; the grace covers overrunning schedules).
#[tokio::test]
async fn ending_an_event_ends_its_viewers_permissions() {
    let plane = common::start().await;
    let (tenant, mut owner) = plane.tenant("Acme").await;
    let r = owner
        .post("/api/v1/events", common::event_body("Town hall"))
        .await;
    assert_eq!(r.0, 201, "{:?}", r.1);
    let event = r.1["id"].as_str().unwrap().to_owned();
    let r = owner
        .post(
            &format!("/api/v1/events/{event}/playback-token"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    let token = r.1["token"].as_str().unwrap().to_owned();
    let verifier = Verifier::new();
    verifier.set_keys(&plane.repo.key_set().unwrap());
    let parts = [tenant.as_str(), event.as_str(), "main"];
    let t = time::OffsetDateTime::now_utc;
    verifier
        .authorize(&token, Action::Play, &parts, t())
        .expect("valid while the event runs");

    let r = owner
        .post(
            &format!("/api/v1/events/{event}/end"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.0, 200, "{:?}", r.1);
    verifier
        .revocations_mut()
        .apply(&plane.repo.revocations_after(0, None).unwrap());
    assert!(
        verifier
            .authorize(&token, Action::Play, &parts, t())
            .is_err(),
        "the event's tokens are revoked when it ends"
    );
    let r = owner
        .post(
            &format!("/api/v1/events/{event}/playback-token"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.0, 403, "no new playback token after the end: {:?}", r.1);
}

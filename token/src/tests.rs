//! The token rules, table by table: scope, expiry, revocation, key
//! rotation and the outage grace.

use super::*;

fn grant(action: Action) -> Grant {
    Grant {
        subject: "p_7f3a".into(),
        tenant: "t1".into(),
        event: "e1".into(),
        stream: None,
        action,
        lifetime_secs: 300,
        not_after: None,
        role: None,
        via: None,
    }
}

fn verifier(key: &SigningKey) -> Verifier {
    let v = Verifier::new();
    assert!(v
        .set_keys(&KeySet {
            keys: vec![key.public_key()],
            media: Vec::new(),
        })
        .is_empty());
    v
}

#[test]
fn minted_token_verifies_and_covers_its_event() {
    let key = SigningKey::generate();
    let now = OffsetDateTime::now_utc();
    let (token, claims) = key.mint(&grant(Action::Play), now).unwrap();
    let v = verifier(&key);
    assert_eq!(
        v.authorize(&token, Action::Play, &["t1", "e1", "main"], now)
            .unwrap(),
        claims
    );
    assert_eq!(
        v.authorize(&token, Action::Play, &["t1", "e2", "main"], now),
        Err(TokenError::OutOfScope("t1/e2/main".into()))
    );
    assert!(v
        .authorize(&token, Action::Publish, &["t1", "e1", "main"], now)
        .is_err());
    assert!(v
        .authorize(&token, Action::Play, &["t2", "e1", "main"], now)
        .is_err());
}

#[test]
fn stream_scoped_token_covers_only_its_stream() {
    let key = SigningKey::generate();
    let now = OffsetDateTime::now_utc();
    let mut g = grant(Action::Publish);
    g.stream = Some("main".into());
    let (token, _) = key.mint(&g, now).unwrap();
    let v = verifier(&key);
    assert!(v
        .authorize(&token, Action::Publish, &["t1", "e1", "main"], now)
        .is_ok());
    assert!(v
        .authorize(&token, Action::Publish, &["t1", "e1", "backup"], now)
        .is_err());
    assert!(v
        .authorize(&token, Action::Publish, &["t1", "e1"], now)
        .is_err());
}

#[test]
fn expired_future_and_clock_skew() {
    let key = SigningKey::generate();
    let now = OffsetDateTime::now_utc();
    let (token, _) = key.mint(&grant(Action::Play), now).unwrap();
    let v = verifier(&key);
    // A verifier 20 s behind still accepts (nbf is 30 s in the past).
    assert!(v.verify(&token, now - time::Duration::seconds(20)).is_ok());
    assert_eq!(
        v.verify(&token, now - time::Duration::seconds(90)),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(
        v.verify(&token, now + time::Duration::seconds(301)),
        Err(TokenError::Expired)
    );
}

/// The outage rule: who is let in past expiry while the control plane
/// does not answer, and who is not.
#[test]
fn expired_play_tokens_are_extended_only_through_an_outage() {
    let key = SigningKey::generate();
    let t0 = OffsetDateTime::now_utc();
    let s = |n: i64| time::Duration::seconds(n);
    // Control plane last heard at t0 (when `heard` is Some).
    // (what, action, token minted at t0+…, heard at t0+…, unreachable,
    // now t0+…, accepted)
    type Case = (&'static str, Action, i64, Option<i64>, bool, i64, bool);
    let cases: [Case; 10] = [
        (
            "expired after contact was lost",
            Action::Play,
            -100,
            Some(0),
            true,
            400,
            true,
        ),
        (
            "up to the grace's end",
            Action::Play,
            -100,
            Some(0),
            true,
            OUTAGE_GRACE_SECS - 1,
            true,
        ),
        (
            "not beyond it",
            Action::Play,
            -100,
            Some(0),
            true,
            OUTAGE_GRACE_SECS,
            false,
        ),
        (
            "expired before the last contact",
            Action::Play,
            -400,
            Some(0),
            true,
            400,
            false,
        ),
        (
            "the control plane answers again",
            Action::Play,
            -100,
            Some(0),
            false,
            400,
            false,
        ),
        (
            "never heard from it",
            Action::Play,
            -100,
            None,
            true,
            400,
            false,
        ),
        (
            "a publish token is not extended",
            Action::Publish,
            -100,
            Some(0),
            true,
            400,
            false,
        ),
        (
            "a relay token is not extended",
            Action::Relay,
            -100,
            Some(0),
            true,
            400,
            false,
        ),
        (
            "not yet expired: accepted anyway",
            Action::Play,
            0,
            Some(0),
            true,
            100,
            true,
        ),
        (
            "heard after it expired",
            Action::Play,
            -400,
            Some(-50),
            true,
            400,
            false,
        ),
    ];
    for (what, action, minted, heard, unreachable, now, accepted) in cases {
        let (token, _) = key.mint(&grant(action), t0 + s(minted)).unwrap();
        let v = verifier(&key);
        if let Some(h) = heard {
            v.issuer_heard(t0 + s(h));
        }
        if unreachable {
            v.issuer_unreachable();
        }
        let got = v.verify(&token, t0 + s(now));
        assert_eq!(got.is_ok(), accepted, "{what}: {got:?}");
        if !accepted && minted + 300 <= now {
            assert_eq!(got, Err(TokenError::Expired), "{what}");
        }
    }
}

#[test]
fn a_revoked_or_forged_token_gets_no_grace() {
    let key = SigningKey::generate();
    let t0 = OffsetDateTime::now_utc();
    let (token, claims) = key
        .mint(&grant(Action::Play), t0 - time::Duration::seconds(100))
        .unwrap();
    let v = verifier(&key);
    v.issuer_heard(t0);
    assert!(v.issuer_unreachable(), "the outage begins");
    assert!(!v.issuer_unreachable(), "and is not news twice");
    let later = t0 + time::Duration::seconds(400);
    assert!(v.verify(&token, later).is_ok());
    assert_eq!(v.extended_count(), 1);
    v.revocations_mut().apply(&revocation::RevocationFeed {
        seq: 1,
        entries: vec![Revocation {
            seq: 1,
            kind: RevocationKind::Subject,
            tenant: claims.ten.clone(),
            id: claims.sub.clone(),
            issued_before: later,
            keep_until: Some(later + time::Duration::hours(2)),
        }],
        reset: false,
        more: false,
    });
    assert_eq!(v.verify(&token, later), Err(TokenError::Revoked));
    // Signed by another key: no claims are read at all.
    let (forged, _) = SigningKey::generate()
        .mint(&grant(Action::Play), t0 - time::Duration::seconds(100))
        .unwrap();
    assert!(v.verify(&forged, later).is_err());
}

#[test]
fn lifetime_is_clipped_to_the_action_and_the_grant_end() {
    let key = SigningKey::generate();
    let now = OffsetDateTime::now_utc();
    let mut g = grant(Action::Play);
    g.lifetime_secs = 86_400;
    let (_, claims) = key.mint(&g, now).unwrap();
    assert_eq!((claims.exp - claims.iat).whole_seconds(), MAX_PLAY_SECS);
    g.not_after = Some(now + time::Duration::seconds(60));
    let (_, claims) = key.mint(&g, now).unwrap();
    assert!((claims.exp - claims.iat).whole_seconds() <= 60);
    g.not_after = Some(now - time::Duration::seconds(1));
    assert!(key.mint(&g, now).is_err());
}

#[test]
fn forged_and_foreign_tokens_are_refused() {
    let key = SigningKey::generate();
    let other = SigningKey::generate();
    let now = OffsetDateTime::now_utc();
    let v = verifier(&key);
    let (foreign, _) = other.mint(&grant(Action::Play), now).unwrap();
    assert_eq!(v.verify(&foreign, now), Err(TokenError::UnknownKey));

    // Another key's signature under our kid.
    let (token, _) = key.mint(&grant(Action::Play), now).unwrap();
    let ours: Vec<&str> = token.split('.').collect();
    let theirs: Vec<&str> = foreign.split('.').collect();
    let spliced = format!("v4.public.{}.{}", theirs[2], ours[3]);
    assert_eq!(v.verify(&spliced, now), Err(TokenError::BadSignature));

    // A flipped payload byte.
    let mut body = URL_SAFE_NO_PAD.decode(ours[2]).unwrap();
    body[10] ^= 1;
    let tampered = format!("v4.public.{}.{}", URL_SAFE_NO_PAD.encode(body), ours[3]);
    assert!(v.verify(&tampered, now).is_err());

    for junk in [
        "",
        "v4.public.",
        "v2.public.abc",
        "v4.local.AAAA.BBBB",
        &"x".repeat(5000),
    ] {
        assert!(v.verify(junk, now).is_err(), "{junk:.20}");
    }
}

#[test]
fn key_set_entries_must_match_their_id() {
    let key = SigningKey::generate();
    let other = SigningKey::generate();
    let mut swapped = key.public_key();
    swapped.x = other.public_key().x;
    let v = Verifier::new();
    assert_eq!(
        v.set_keys(&KeySet {
            keys: vec![swapped],
            media: Vec::new(),
        }),
        vec![key.kid().to_owned()]
    );
    assert_eq!(v.key_count(), 0);
}

#[test]
fn keys_survive_a_round_trip_through_bytes() {
    let key = SigningKey::generate();
    let again = SigningKey::from_bytes(&key.to_bytes()).unwrap();
    assert_eq!(key.kid(), again.kid());
    assert!(key.kid().starts_with("k4.pid."));
}

#[test]
fn rotation_keeps_old_tokens_valid_while_their_key_is_listed() {
    let old = SigningKey::generate();
    let new = SigningKey::generate();
    let now = OffsetDateTime::now_utc();
    let (old_token, _) = old.mint(&grant(Action::Play), now).unwrap();
    let (new_token, _) = new.mint(&grant(Action::Play), now).unwrap();
    let v = Verifier::new();
    v.set_keys(&KeySet {
        keys: vec![new.public_key(), old.public_key()],
        media: Vec::new(),
    });
    assert!(v.verify(&old_token, now).is_ok());
    assert!(v.verify(&new_token, now).is_ok());
    v.set_keys(&KeySet {
        keys: vec![new.public_key()],
        media: Vec::new(),
    });
    assert_eq!(v.verify(&old_token, now), Err(TokenError::UnknownKey));
}

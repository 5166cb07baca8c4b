use super::*;
use proptest::prelude::*;

const GOOD: &str = "correct-Horse-7-battery";

#[test]
fn common_passwords_are_refused_whatever_their_composition() {
    let p = PasswordPolicy::default();
    for common in [
        "password123",
        "Password123",
        "qwertyuiop",
        "1234567890",
        "aaaaaaaaaaaa",
        "abcdefghijkl",
        "P@ssw0rd123",
        "Welcome123",
        "iloveyou12",
    ] {
        assert_eq!(
            check_password(&p, common, &[]),
            Err(PasswordRejected::Common),
            "{common}"
        );
    }
    // No class rules by default (ASVS 6.2.5): a long passphrase is fine.
    for fine in [
        "correct horse battery staple",
        "ein langer satz ohne ziffern",
        "Own-choice-pass-9",
        "Preset-pass-123",
        "Correct-horse-7",
    ] {
        assert_eq!(check_password(&p, fine, &[]), Ok(()), "{fine}");
    }
    // Tenants may still ask for classes.
    let strict = PasswordPolicy {
        require_classes: true,
        ..PasswordPolicy::default()
    };
    assert_eq!(
        check_password(&strict, "correct horse battery staple", &[]),
        Err(PasswordRejected::MissingClass(CharClass::Digit))
    );
    // Generated passwords are never refused as common.
    for _ in 0..50 {
        assert_eq!(check_password(&p, &generate_password(&p), &[]), Ok(()));
    }
}

/// ASVS 6.2.11: the organisation's name, the account's address and name
/// and the product's words are no stuff for a password.
#[test]
fn passwords_made_of_the_context_are_refused() {
    let p = PasswordPolicy::default();
    let context = context_words(&["Acme Corporation", "vera.viewer@example.com", "Vera Viewer"]);
    for word in [
        "strom",
        "webcast",
        "acme",
        "corporation",
        "acmecorporation",
        "vera",
        "viewer",
        "veraviewer",
        "example",
    ] {
        assert!(context.contains(&word.to_owned()), "{word}: {context:?}");
    }
    assert!(
        !context.iter().any(|w| w.chars().count() < 3),
        "{context:?}"
    );
    for weak in [
        "Acme-Webcast-2026",
        "AcmeCorporation!1",
        "VeraViewer-2026",
        "Vera.Viewer.Example",
        "strom-webcast-12",
    ] {
        assert_eq!(
            check_password_in(&p, weak, &[], &context),
            Err(PasswordRejected::Common),
            "{weak}"
        );
    }
    // The same rules without the context still take a strong password.
    for fine in [
        "correct horse battery staple",
        "Own-choice-pass-9",
        "Quartz-lantern-river-4",
    ] {
        assert_eq!(check_password_in(&p, fine, &[], &context), Ok(()), "{fine}");
    }
    for _ in 0..20 {
        assert_eq!(
            check_password_in(&p, &generate_password(&p), &[], &context),
            Ok(())
        );
    }
}

#[test]
fn bulk_hashing_never_takes_a_login_permit() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    // An import holds the bulk permit (blocked until we say so).
    let (release, held) = mpsc::channel::<()>();
    let (entered, inside) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        BULK.with(BULK_PERMITS, || {
            entered.send(()).unwrap();
            held.recv().unwrap();
        })
    });
    inside.recv().unwrap();
    // A second import waits for it ...
    let second_done = std::sync::Arc::new(AtomicBool::new(false));
    let flag = second_done.clone();
    let second = std::thread::spawn(move || {
        let phc = hash_password_bulk(GOOD);
        flag.store(true, Ordering::SeqCst);
        phc
    });
    // ... while logins hash and verify as usual.
    let phc = hash_password(GOOD);
    assert!(verify_password(GOOD, &phc));
    assert!(
        !second_done.load(Ordering::SeqCst),
        "bulk work ran beside the held bulk permit"
    );
    release.send(()).unwrap();
    holder.join().unwrap();
    assert!(verify_password(GOOD, &second.join().unwrap()));
}

#[test]
fn concurrent_argon2_work_is_bounded_by_the_cores() {
    let phc = hash_password(GOOD);
    let done = std::sync::atomic::AtomicBool::new(false);
    let most = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(INTERACTIVE.running());
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            most
        });
        let workers: Vec<_> = (0..4 * argon2_permits())
            .map(|_| scope.spawn(|| assert!(verify_password(GOOD, &phc))))
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        sampler.join().unwrap()
    });
    assert!(most >= 1 && most <= argon2_permits(), "{most} at once");
    assert_eq!(INTERACTIVE.running(), 0);
}

#[test]
fn default_policy_is_valid_and_has_no_expiry_nor_class_rules() {
    let p = PasswordPolicy::default();
    assert_eq!(p.validate(), Ok(()));
    assert_eq!(
        (p.min_length, p.require_classes, p.expiry_days, p.history),
        (10, false, None, 10)
    );
}

#[test]
fn policy_ranges_are_enforced() {
    let base = PasswordPolicy::default();
    let bad = [
        (
            PasswordPolicy {
                min_length: 9,
                ..base.clone()
            },
            PolicyError::MinLength(9),
        ),
        (
            PasswordPolicy {
                min_length: 33,
                ..base.clone()
            },
            PolicyError::MinLength(33),
        ),
        (
            PasswordPolicy {
                expiry_days: Some(0),
                ..base.clone()
            },
            PolicyError::ExpiryDays(0),
        ),
        (
            PasswordPolicy {
                expiry_days: Some(181),
                ..base.clone()
            },
            PolicyError::ExpiryDays(181),
        ),
        (
            PasswordPolicy {
                history: 11,
                ..base.clone()
            },
            PolicyError::History(11),
        ),
    ];
    for (policy, err) in bad {
        assert_eq!(policy.validate(), Err(err));
    }
    let edges = PasswordPolicy {
        min_length: 32,
        require_classes: false,
        expiry_days: Some(180),
        history: 0,
    };
    assert_eq!(edges.validate(), Ok(()));
    let edges = PasswordPolicy {
        min_length: 10,
        expiry_days: Some(1),
        ..base
    };
    assert_eq!(edges.validate(), Ok(()));
}

#[test]
fn policy_serde_round_trip() {
    let p = PasswordPolicy {
        min_length: 12,
        require_classes: false,
        expiry_days: Some(90),
        history: 3,
    };
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<PasswordPolicy>(&json).unwrap(), p);
}

#[test]
fn length_and_classes() {
    let p = PasswordPolicy::default();
    assert_eq!(
        check_password(&p, "aB3-xyz", &[]),
        Err(PasswordRejected::TooShort { min: 10 })
    );
    let long = format!("aB3-{}", "x".repeat(125));
    assert_eq!(
        check_password(&p, &long, &[]),
        Err(PasswordRejected::TooLong { max: 128 })
    );
    assert_eq!(check_password(&p, &long[..128], &[]), Ok(()));
    let strict = PasswordPolicy {
        require_classes: true,
        ..p.clone()
    };
    assert_eq!(
        check_password(&strict, "kbdlqmzvwr1", &[]),
        Err(PasswordRejected::MissingClass(CharClass::Special))
    );
    assert_eq!(
        check_password(&strict, "kbdlqmzvwr-", &[]),
        Err(PasswordRejected::MissingClass(CharClass::Digit))
    );
    assert_eq!(
        check_password(&strict, "9370154826-", &[]),
        Err(PasswordRejected::MissingClass(CharClass::Letter))
    );
    // Length counts characters, not bytes: ten umlaut-bearing chars pass.
    assert_eq!(check_password(&strict, "äöüÄÖÜß1-x", &[]), Ok(()));
    assert_eq!(check_password(&p, "kbdlqmzvwr", &[]), Ok(()));
    assert_eq!(
        check_password(&p, "abcdefghij", &[]),
        Err(PasswordRejected::Common),
        "a sequence"
    );
}

#[test]
fn hash_verify_and_reject_wrong_password() {
    let phc = hash_password(GOOD);
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert!(verify_password(GOOD, &phc));
    assert!(!verify_password("correct-Horse-7-batterz", &phc));
    // Fresh salt each time.
    assert_ne!(hash_password(GOOD), phc);
}

#[test]
fn malformed_or_hostile_hashes_are_false() {
    for phc in [
        "",
        "$",
        "$argon2id$",
        "$argon2id$v=19$m=19456,t=2,p=1$",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$",
        "$argon2id$v=19$m=19456,t=2,p=1$!!!$!!!",
        "$bcrypt$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaA",
        "$argon2id$v=19$m=4294967295,t=2,p=1$c2FsdHNhbHRzYWx0$qd6adjT9DfWbZBUQqd0UVDU1yEkxcGb5wWuBuwD6jE4",
        "not a hash at all",
    ] {
        assert!(!verify_password(GOOD, phc), "{phc}");
    }
}

#[test]
fn history_refuses_recent_reuse_only() {
    let old = hash_password(GOOD);
    let newer = hash_password("Another-pass-42");
    let history = vec![newer, old];
    let p = PasswordPolicy::default();
    assert_eq!(
        check_password(&p, GOOD, &history),
        Err(PasswordRejected::Reused)
    );
    assert_eq!(check_password(&p, "Fresh-pass-99", &history), Ok(()));
    // With history = 1 only the newest hash counts, so the older password is allowed again.
    let short = PasswordPolicy {
        history: 1,
        ..p.clone()
    };
    assert_eq!(check_password(&short, GOOD, &history), Ok(()));
    let none = PasswordPolicy { history: 0, ..p };
    assert_eq!(check_password(&none, "Another-pass-42", &history), Ok(()));
}

#[test]
fn generated_passwords_meet_policies() {
    for min_length in [10u8, 16, 17, 32] {
        let p = PasswordPolicy {
            min_length,
            ..PasswordPolicy::default()
        };
        for _ in 0..50 {
            let pw = generate_password(&p);
            assert!(pw.chars().count() >= usize::from(min_length));
            assert_eq!(check_password(&p, &pw, &[]), Ok(()), "{pw}");
        }
    }
    let p = PasswordPolicy::default();
    assert_ne!(generate_password(&p), generate_password(&p));
}

#[test]
fn expiry() {
    let set_at = OffsetDateTime::from_unix_timestamp(1_735_689_600).unwrap();
    let off = PasswordPolicy::default();
    assert!(!expired(&off, set_at, set_at + Duration::days(10_000)));
    let p = PasswordPolicy {
        expiry_days: Some(90),
        ..off
    };
    assert!(!expired(
        &p,
        set_at,
        set_at + Duration::days(90) - Duration::seconds(1)
    ));
    assert!(expired(&p, set_at, set_at + Duration::days(90)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn check_and_verify_never_panic(candidate in ".{0,200}", phc in ".{0,120}") {
        let p = PasswordPolicy { history: 10, ..PasswordPolicy::default() };
        let _ = check_password(&p, &candidate, std::slice::from_ref(&phc));
        let forged = format!("$argon2id$v=19${}", phc);
        prop_assert!(!verify_password(&candidate, &forged));
    }
}

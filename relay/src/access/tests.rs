use super::*;
use strom_token::{Grant, KeySet, RevocationKind, SigningKey};

struct Fixture {
    key: SigningKey,
    access: Arc<Access>,
    now: OffsetDateTime,
}

fn fixture(actions: &[Action]) -> Fixture {
    let key = SigningKey::generate();
    let verifier = Arc::new(Verifier::new());
    verifier.set_keys(&KeySet {
        keys: vec![key.public_key()],
        media: Vec::new(),
    });
    Fixture {
        key,
        access: Arc::new(Access::new(verifier, actions)),
        now: OffsetDateTime::now_utc(),
    }
}

impl Fixture {
    fn token(
        &self,
        action: Action,
        tenant: &str,
        event: &str,
        stream: Option<&str>,
    ) -> (String, Claims) {
        self.key
            .mint(
                &Grant {
                    subject: "p_1".into(),
                    tenant: tenant.into(),
                    event: event.into(),
                    stream: stream.map(str::to_owned),
                    action,
                    lifetime_secs: 300,
                    not_after: None,
                    role: None,
                    via: None,
                },
                self.now,
            )
            .unwrap()
    }

    fn play(&self) -> (String, Claims) {
        self.token(Action::Play, "acme", "townhall", None)
    }

    fn revoke_subject(&self, subject: &str) -> Vec<Revocation> {
        self.access.revoke(vec![Revocation {
            seq: 1,
            kind: RevocationKind::Subject,
            tenant: "acme".into(),
            id: subject.into(),
            issued_before: self.now + time::Duration::seconds(1),
            keep_until: None,
        }])
    }
}

const MAIN: &[&str] = &["acme", "townhall", "main"];

#[test]
fn an_origin_admits_only_the_operators_relays_of_its_roles() {
    use strom_token::RelayRole;
    let key = SigningKey::generate();
    let verifier = Arc::new(Verifier::new());
    verifier.set_keys(&KeySet {
        keys: vec![key.public_key()],
        media: Vec::new(),
    });
    let access =
        Access::new(verifier, &[Action::Relay]).only_relays(&[RelayRole::Edge, RelayRole::Origin]);
    let now = OffsetDateTime::now_utc();
    let relay = |tenant: &str, role: Option<RelayRole>, via: Option<&str>| {
        key.mint(
            &Grant {
                subject: "r".into(),
                tenant: tenant.into(),
                event: String::new(),
                stream: None,
                action: Action::Relay,
                lifetime_secs: 300,
                not_after: None,
                role,
                via: via.map(str::to_owned),
            },
            now,
        )
        .unwrap()
        .0
    };
    let platform = strom_token::PLATFORM_TENANT;
    for ok in [
        relay(platform, Some(RelayRole::Edge), None),
        relay(platform, Some(RelayRole::Origin), None),
        relay(platform, None, None),
    ] {
        assert!(access.admit(&[ok], now).is_ok());
    }
    for refused in [relay("acme", None, None), relay("acme", None, Some("ag_x"))] {
        assert_eq!(
            access.admit(&[refused], now),
            Err(Refused::NotOperatorRelay)
        );
    }
    let edges_only =
        Access::new(access.verifier().clone(), &[Action::Relay]).only_relays(&[RelayRole::Edge]);
    assert_eq!(
        edges_only.admit(&[relay(platform, Some(RelayRole::Origin), None)], now),
        Err(Refused::NotOperatorRelay)
    );
}

#[test]
fn a_valid_play_token_opens_a_session_scoped_to_its_event() {
    let f = fixture(EDGE_SESSIONS);
    let (token, claims) = f.play();
    let admitted = f.access.admit(&[token], f.now).unwrap();
    assert_eq!(admitted, claims);
    assert_eq!(f.access.permits(&claims, MAIN), Ok(()));
    assert_eq!(
        f.access.permits(&claims, &["acme", "townhall", "backup"]),
        Ok(())
    );
    let other_event = f.access.permits(&claims, &["acme", "allhands", "main"]);
    assert_eq!(other_event.unwrap_err().label(), "out_of_scope");
    let other_tenant = f.access.permits(&claims, &["globex", "townhall", "main"]);
    assert_eq!(other_tenant.unwrap_err().label(), "out_of_scope");
}

#[test]
fn expired_forged_and_missing_tokens_open_no_session() {
    let f = fixture(EDGE_SESSIONS);
    let (token, _) = f.play();
    let later = f.now + time::Duration::seconds(301);
    let expired = f
        .access
        .admit(std::slice::from_ref(&token), later)
        .unwrap_err();
    assert_eq!(expired, Refused::Token(TokenError::Expired));
    assert_eq!(
        expired.request_error_code(),
        RequestErrorCode::ExpiredAuthToken
    );

    // Signed by a key the relay does not know.
    let stranger = SigningKey::generate();
    let (foreign, _) = stranger
        .mint(
            &Grant {
                lifetime_secs: 300,
                ..Grant::play("p_1", "acme", "townhall")
            },
            f.now,
        )
        .unwrap();
    assert_eq!(
        f.access.admit(&[foreign], f.now),
        Err(Refused::Token(TokenError::UnknownKey))
    );
    // A payload altered after signing.
    let mut forged = token.clone().into_bytes();
    let i = "v4.public.".len() + 20;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(f.access.admit(&[forged], f.now).is_err());
    assert_eq!(f.access.admit(&[], f.now), Err(Refused::Missing));
    assert_eq!(
        f.access.admit(&["garbage".into()], f.now),
        Err(Refused::Token(TokenError::Malformed))
    );
}

#[test]
fn session_kinds_follow_the_relay_role() {
    let origin = fixture(ORIGIN_SESSIONS);
    let (play, _) = origin.play();
    assert_eq!(
        origin.access.admit(&[play], origin.now),
        Err(Refused::WrongAction(Action::Play))
    );
    let (relay, relay_claims) = origin.token(Action::Relay, strom_token::PLATFORM_TENANT, "", None);
    assert!(origin
        .access
        .admit(std::slice::from_ref(&relay), origin.now)
        .is_ok());
    // A platform relay credential pulls every broadcast of every tenant.
    assert_eq!(origin.access.permits(&relay_claims, MAIN), Ok(()));
    assert_eq!(
        origin.access.permits(&relay_claims, &["globex", "x", "y"]),
        Ok(())
    );
    assert_eq!(origin.access.permits_prefix(&relay_claims, &[]), Ok(()));
    // A tenant's relay credential (a peer-agent's) only that tenant's.
    let (_, agent) = origin.token(Action::Relay, "acme", "", None);
    assert_eq!(origin.access.permits(&agent, MAIN), Ok(()));
    assert_eq!(origin.access.permits_prefix(&agent, &[]), Ok(()));
    assert_eq!(origin.access.permits_prefix(&agent, &["acme"]), Ok(()));
    assert!(origin
        .access
        .permits(&agent, &["globex", "townhall", "main"])
        .is_err());
    assert!(origin.access.permits_prefix(&agent, &["globex"]).is_err());

    let edge = fixture(EDGE_SESSIONS);
    let (relay, _) = edge.token(Action::Relay, strom_token::PLATFORM_TENANT, "", None);
    assert!(edge.access.admit(&[relay], edge.now).is_ok());
    let (publish, publish_claims) = edge.token(Action::Publish, "acme", "townhall", Some("main"));
    assert_eq!(
        edge.access.admit(&[publish], edge.now),
        Err(Refused::WrongAction(Action::Publish))
    );
    assert!(edge.access.permits(&publish_claims, MAIN).is_err());
}

#[test]
fn namespace_subscriptions_must_lead_into_the_scope() {
    let f = fixture(EDGE_SESSIONS);
    let (_, claims) = f.play();
    for ok in [&[][..], &["acme"], &["acme", "townhall"], MAIN] {
        assert_eq!(f.access.permits_prefix(&claims, ok), Ok(()), "{ok:?}");
    }
    for refused in [
        &["acme", "allhands"][..],
        &["globex"],
        &["globex", "townhall", "main"],
    ] {
        assert!(
            f.access.permits_prefix(&claims, refused).is_err(),
            "{refused:?}"
        );
    }
    let (_, stream_only) = f.token(Action::Play, "acme", "townhall", Some("main"));
    assert!(f.access.permits(&stream_only, MAIN).is_ok());
    assert!(f
        .access
        .permits(&stream_only, &["acme", "townhall", "backup"])
        .is_err());
    assert!(f
        .access
        .permits_prefix(&stream_only, &["acme", "townhall", "backup"])
        .is_err());
}

#[test]
fn a_revoked_subject_loses_admission_and_every_request() {
    let f = fixture(EDGE_SESSIONS);
    let (token, claims) = f.play();
    assert_eq!(f.revoke_subject("p_1").len(), 1);
    assert_eq!(
        f.access.admit(std::slice::from_ref(&token), f.now),
        Err(Refused::Token(TokenError::Revoked))
    );
    assert_eq!(
        f.access.permits(&claims, MAIN),
        Err(Refused::Token(TokenError::Revoked))
    );
    assert_eq!(
        f.access.authorize_hls([token.as_str()], MAIN, f.now),
        Err(Refused::Token(TokenError::Revoked))
    );
    // The same revocation again is not news.
    assert!(f.revoke_subject("p_1").is_empty());
}

#[tokio::test]
async fn a_watch_resolves_on_the_revocation_of_its_claims_only() {
    let f = fixture(EDGE_SESSIONS);
    let (_, claims) = f.play();
    let mut watch = f.access.watch(claims);
    let mut early = Box::pin(watch.revoked());
    // Another subject's revocation leaves the session alone.
    f.revoke_subject("p_2");
    assert!(tokio::time::timeout(Duration::from_millis(200), &mut early)
        .await
        .is_err());
    f.revoke_subject("p_1");
    tokio::time::timeout(Duration::from_secs(1), early)
        .await
        .expect("the watch resolves once its subject is revoked");
    // A watch made after the revocation resolves at once.
    let (_, claims) = f.play();
    tokio::time::timeout(Duration::from_millis(100), f.access.watch(claims).revoked())
        .await
        .expect("already revoked");
}

#[test]
fn hls_requests_need_a_play_token_for_their_broadcast() {
    let f = fixture(EDGE_SESSIONS);
    let (token, claims) = f.play();
    assert_eq!(
        f.access.authorize_hls([token.as_str()], MAIN, f.now),
        Ok(claims)
    );
    let refused = f
        .access
        .authorize_hls([token.as_str()], &["acme", "allhands", "main"], f.now);
    assert_eq!(refused.unwrap_err().label(), "out_of_scope");
    let refused = f
        .access
        .authorize_hls([token.as_str()], &["globex", "townhall", "main"], f.now);
    assert_eq!(refused.unwrap_err().label(), "out_of_scope");
    let later = f.now + time::Duration::seconds(400);
    assert_eq!(
        f.access.authorize_hls([token.as_str()], MAIN, later),
        Err(Refused::Token(TokenError::Expired))
    );
    assert_eq!(
        f.access.authorize_hls([], MAIN, f.now),
        Err(Refused::Missing)
    );
    // A stale cookie beside a good query token: the good one wins.
    assert!(f
        .access
        .authorize_hls(["v4.public.stale", token.as_str()], MAIN, f.now)
        .is_ok());
    // A publish token is not a ticket to watch.
    let (publish, _) = f.token(Action::Publish, "acme", "townhall", Some("main"));
    assert!(f
        .access
        .authorize_hls([publish.as_str()], MAIN, f.now)
        .is_err());
}

#[test]
fn cookies_are_scoped_to_the_event_and_parsed_back() {
    let f = fixture(EDGE_SESSIONS);
    let (token, claims) = f.play();
    let cookie = hls_cookie(&token, &claims, true, f.now);
    assert!(
        cookie.starts_with(&format!("{TOKEN_COOKIE}={token};")),
        "{cookie}"
    );
    assert!(cookie.contains("Path=/hls/acme/townhall/;"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Secure"),
        "{cookie}"
    );
    // Token times may be whole seconds: 299 or 300 s are left.
    assert!(
        cookie.contains("Max-Age=300;") || cookie.contains("Max-Age=299;"),
        "{cookie}"
    );
    assert!(!hls_cookie(&token, &claims, false, f.now).contains("Secure"));
    let header = format!("theme=dark; {TOKEN_COOKIE}={token}; other=1");
    assert_eq!(
        cookie_values([header.as_str()], TOKEN_COOKIE),
        vec![token.as_str()]
    );
    assert_eq!(
        query_value("_HLS_msn=3&token=v4.public.a%2Eb", TOKEN_PARAM).as_deref(),
        Some("v4.public.a.b")
    );
}

#[test]
fn playlist_uris_carry_the_token() {
    let text = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PART:DURATION=0.5,URI=\"3.0.m4s\",INDEPENDENT=YES\n#EXTINF:1.0,\n3.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"4.1.m4s\"\n";
    let out = tokenize_playlist(text, "v4.public.abc");
    assert!(
        out.contains("URI=\"init.mp4?token=v4.public.abc\""),
        "{out}"
    );
    assert!(
        out.contains("URI=\"3.0.m4s?token=v4.public.abc\",INDEPENDENT=YES"),
        "{out}"
    );
    assert!(out.contains("\n3.m4s?token=v4.public.abc\n"), "{out}");
    assert!(
        out.contains("URI=\"4.1.m4s?token=v4.public.abc\"\n"),
        "{out}"
    );
    assert!(out.contains("#EXTINF:1.0,\n"), "{out}");
    let master = "#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/playlist.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\nvideo/playlist.m3u8";
    let out = tokenize_playlist(master, "t");
    assert!(out.contains("URI=\"audio/playlist.m3u8?token=t\""), "{out}");
    assert!(out.ends_with("\nvideo/playlist.m3u8?token=t"), "{out}");
}

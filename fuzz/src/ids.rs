//! Identity and credentials: the participant CSV import (an organiser's
//! upload), playback and publish tokens (`Verifier::verify` against a real
//! key set), SRT stream ids and stream keys (`srt::parse_stream_id`,
//! `srt::claims_of`, the origin's `PublishTokens` authorizer).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use hmac::{Hmac, Mac};
use pasetors::keys::AsymmetricSecretKey;
use pasetors::version4::{PublicToken, V4};
use sha2::Sha256;
use strom_relay::Access;
use strom_identity::participants_csv::{self, ExportRow, FieldKind, FormField};
use strom_identity::password::PasswordPolicy;
use strom_origin::fuzzing::{PublishAuthorizer, PublishTokens, Transport};
use strom_token::{srt, Action, Grant};

use crate::fixtures;

fn form() -> &'static [FormField] {
    static FORM: OnceLock<Vec<FormField>> = OnceLock::new();
    FORM.get_or_init(|| {
        let field = |name: &str, kind, required| FormField {
            name: name.into(),
            label: name.to_uppercase(),
            kind,
            required,
        };
        vec![
            field("company", FieldKind::Text, true),
            field(
                "role",
                FieldKind::Select(vec!["speaker".into(), "attendee".into()]),
                false,
            ),
            field("consent", FieldKind::Checkbox, false),
            field("assistant", FieldKind::Email, false),
        ]
    })
}

/// An organiser's upload, checked against an event's form with and without
/// a password policy, and what would be exported again from the rows.
pub fn participants_csv(data: &[u8]) {
    let form = form();
    let report = participants_csv::import(data, form);
    let _ = participants_csv::import_with_policy(data, form, &PasswordPolicy::default());
    let rows: Vec<ExportRow> = report
        .rows
        .into_iter()
        .map(|r| ExportRow {
            email: r.email,
            name: r.name,
            fields: r.fields,
            status: "registered".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        })
        .collect();
    let _ = participants_csv::export(&rows, form);
}

/// The MAC over an SRT stream key's body, as `strom_token::srt` computes it
/// (private there): lets the fuzzer reach what is parsed after the MAC check.
fn srt_mac(body: &str) -> String {
    use base64::Engine;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&fixtures::SRT_SECRET).expect("HMAC takes any key length");
    mac.update(b"strom srt stream key v1\0");
    mac.update(body.as_bytes());
    let tag = mac.finalize().into_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..16])
}

struct Fixture {
    verifier: Arc<strom_token::Verifier>,
    secret: AsymmetricSecretKey<V4>,
    footer: Vec<u8>,
    authorizer: PublishTokens,
    /// A publish token and its SRT stream key, minted at start-up (the
    /// authorizer checks them against the real clock).
    publish_token: String,
    stream_key: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = fixtures::signing_key();
        let verifier = fixtures::verifier();
        let access = Arc::new(Access::new(Arc::clone(&verifier), &[Action::Publish]));
        // Tenant t's SRT secret, as the origin holds it after its fetch.
        let slot = strom_relay::SrtSecretSlot::default();
        slot.set(HashMap::from([("t".to_owned(), fixtures::SRT_SECRET)]));
        let (publish_token, claims) = key
            .mint(
                &Grant::publish("s_e_s", "t", "e", "s", 3600),
                time::OffsetDateTime::now_utc(),
            )
            .expect("mints");
        let stream_key = srt::stream_key(&fixtures::SRT_SECRET, &claims).expect("a stream key");
        Fixture {
            verifier,
            secret: AsymmetricSecretKey::<V4>::from(&fixtures::token_key_bytes()).expect("a key"),
            footer: format!("{{\"kid\":\"{}\"}}", key.kid()).into_bytes(),
            authorizer: PublishTokens::new(access).with_srt_secret(slot),
            publish_token,
            stream_key,
        }
    })
}

/// Byte 0 picks:
/// 0. a token as a viewer or encoder presents it: `verify`, then `authorize`;
/// 1. claims (JSON) signed with the trusted key, so that what is checked
///    after the signature (claims, times, revocations, scope) is reached;
/// 2. an SRT stream key: `claims_of`, then `check_claims`, as the origin does;
/// 3. an SRT stream key body with a valid MAC appended;
/// 4. an SRT stream id (`#!::r=live/<key>,m=publish`) through
///    `parse_stream_id` and the origin's `PublishTokens`; `@T@` stands for a
///    fresh publish token and `@S@` for its SRT stream key.
pub fn token_verify(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let now = fixtures::now();
    let text = String::from_utf8_lossy(data);
    match mode % 5 {
        0 => {
            let _ = f.verifier.verify(&text, now);
            let _ = f
                .verifier
                .authorize(&text, Action::Play, &["t", "e", "s"], now);
        }
        1 => {
            let Ok(token) = PublicToken::sign(&f.secret, data, Some(&f.footer), None) else {
                return;
            };
            if let Ok(claims) = f.verifier.verify(&token, now) {
                let _ = claims.covers(Action::Play, &["t", "e", "s"]);
                let _ = claims.namespace_prefix();
                let _ = srt::stream_key(&fixtures::SRT_SECRET, &claims);
            }
        }
        2 => {
            if let Ok(claims) = srt::claims_of(&fixtures::SRT_SECRET, &text) {
                let _ = f.verifier.check_claims(&claims, now);
            }
        }
        3 => {
            let key = format!("{text}.{}", srt_mac(&text));
            if let Ok(claims) = srt::claims_of(&fixtures::SRT_SECRET, &key) {
                let _ = f.verifier.check_claims(&claims, now);
            }
        }
        _ => {
            let id = text
                .replace("@T@", &f.publish_token)
                .replace("@S@", &f.stream_key);
            if let Ok(request) = strom_origin::fuzzing::parse_stream_id(&id) {
                let _ = f
                    .authorizer
                    .admit(&request.app, &request.key, Transport::Srt);
                let _ = f.authorizer.srt_passphrase(
                    &strom_relay::Namespace::parse("t/e/s").expect("a namespace"),
                    &request.key,
                );
            }
        }
    }
}

//! Who may publish what: the one interface the RTMP (and later SRT) ingest
//! asks before accepting a push. Stream keys come from configuration
//! ([`StaticKeys`]) or are publish tokens issued by the control plane
//! ([`PublishTokens`]), which can be revoked while the push runs.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use strom_relay::{Access, Namespace, RevocationWatch, SrtSecretSlot};
use strom_token::{Action, TokenError};

/// The RTMP application publish tokens are pushed to: `rtmp://host/live/<token>`.
/// One fixed name keeps encoder set-up uniform and makes a mistyped server
/// URL fail loudly instead of publishing somewhere unexpected.
pub(crate) const TOKEN_APP: &str = "live";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PublishRefused {
    #[error("unknown stream key")]
    UnknownKey,
    #[error("the stream key does not belong to application {0:?}")]
    WrongApplication(String),
    #[error("publish token refused: {0}")]
    Token(TokenError),
    #[error("a {0:?} token does not allow publishing")]
    NotPublish(Action),
    #[error("the publish token names no stream")]
    NoStream,
    #[error("the publish token's tenant/event/stream is not a valid namespace")]
    BadNamespace,
    #[error("an SRT stream key publishes over SRT only, not over {}", .0.as_str())]
    WrongTransport(Transport),
}

impl PublishRefused {
    /// A short, fixed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            PublishRefused::UnknownKey => "unknown_key",
            PublishRefused::WrongApplication(_) => "wrong_application",
            PublishRefused::Token(TokenError::Expired) => "expired",
            PublishRefused::Token(TokenError::Revoked) => "revoked",
            PublishRefused::Token(_) => "invalid_token",
            PublishRefused::NotPublish(_) => "not_publish",
            PublishRefused::NoStream => "no_stream",
            PublishRefused::BadNamespace => "bad_namespace",
            PublishRefused::WrongTransport(_) => "wrong_transport",
        }
    }
}

/// The ingest listener a push arrived on: what a credential is valid for
/// may depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Rtmp = 0,
    Rtmps = 1,
    Srt = 2,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Rtmp, Transport::Rtmps, Transport::Srt];

    /// The `protocol` label of metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Rtmp => "rtmp",
            Transport::Rtmps => "rtmps",
            Transport::Srt => "srt",
        }
    }
}

/// SRT passphrases cannot be derived yet (the control plane's secret has not
/// arrived).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("the SRT secret has not been fetched from the control plane yet")]
pub struct SrtNotReady;

/// An accepted push: where it publishes, and what ends its right to.
pub struct Publisher {
    pub namespace: Namespace,
    /// Resolves when the credential is revoked (tokens only).
    pub revocation: Option<RevocationWatch>,
}

/// Decides whether a push may publish, and under which namespace.
pub trait PublishAuthorizer: Send + Sync + 'static {
    /// May `key` publish under `app`, pushed over `transport`?
    fn authorize(
        &self,
        app: &str,
        key: &str,
        transport: Transport,
    ) -> Result<Namespace, PublishRefused>;

    /// Like [`authorize`](PublishAuthorizer::authorize), with the watch that
    /// ends the push when its credential is revoked.
    fn admit(
        &self,
        app: &str,
        key: &str,
        transport: Transport,
    ) -> Result<Publisher, PublishRefused> {
        Ok(Publisher {
            namespace: self.authorize(app, key, transport)?,
            revocation: None,
        })
    }

    /// The SRT passphrase of `namespace` pushed with credential `key`, if
    /// its SRT pushes must be encrypted; `Err` when that cannot be known yet.
    fn srt_passphrase(
        &self,
        _namespace: &Namespace,
        _key: &str,
    ) -> Result<Option<String>, SrtNotReady> {
        Ok(None)
    }
}

/// Publish tokens (PASETO, action `publish`, naming tenant, event and
/// stream): the namespace is the token's, the RTMP key is the token. A token
/// is valid on every transport; its SRT stream key (`s1.…`) over SRT only,
/// where the passphrase derived from it is required too: the key travels in
/// clear in the SRT handshake, so over RTMP it would let anyone on the path
/// publish without the passphrase.
pub struct PublishTokens {
    access: Arc<Access>,
    /// The tenants' SRT secrets from the control plane: SRT stream keys are
    /// checked and passphrases derived with them ([`strom_token::srt`]).
    /// Without them, SRT is unencrypted.
    srt_secret: Option<SrtSecretSlot>,
}

impl PublishTokens {
    pub fn new(access: Arc<Access>) -> Self {
        Self {
            access,
            srt_secret: None,
        }
    }

    /// SRT pushes must then be encrypted with the credential's passphrase,
    /// derived from its tenant's secret in `slot` (filled from the control
    /// plane).
    pub fn with_srt_secret(mut self, slot: SrtSecretSlot) -> Self {
        self.srt_secret = Some(slot);
        self
    }
}

impl PublishAuthorizer for PublishTokens {
    fn authorize(
        &self,
        app: &str,
        key: &str,
        transport: Transport,
    ) -> Result<Namespace, PublishRefused> {
        self.admit(app, key, transport).map(|p| p.namespace)
    }

    fn admit(
        &self,
        app: &str,
        key: &str,
        transport: Transport,
    ) -> Result<Publisher, PublishRefused> {
        if app != TOKEN_APP {
            return Err(PublishRefused::WrongApplication(app.to_owned()));
        }
        let now = time::OffsetDateTime::now_utc();
        let srt_key = key.trim().starts_with(strom_token::srt::KEY_PREFIX);
        if srt_key && transport != Transport::Srt {
            return Err(PublishRefused::WrongTransport(transport));
        }
        let claims = if srt_key {
            // An SRT stream key: the claims of its publish token, under the
            // MAC of its tenant's SRT secret; checked like the token itself.
            let secret = strom_token::srt::tenant_of(key)
                .zip(self.srt_secret.as_ref())
                .and_then(|(tenant, slot)| slot.get(tenant).ok().flatten())
                .ok_or(PublishRefused::Token(TokenError::UnknownKey))?;
            let claims =
                strom_token::srt::claims_of(&secret, key).map_err(PublishRefused::Token)?;
            self.access
                .verifier()
                .check_claims(&claims, now)
                .map_err(PublishRefused::Token)?;
            claims
        } else {
            self.access
                .verifier()
                .verify(key, now)
                .map_err(PublishRefused::Token)?
        };
        if claims.act != Action::Publish {
            return Err(PublishRefused::NotPublish(claims.act));
        }
        let stream = claims.str.clone().ok_or(PublishRefused::NoStream)?;
        let namespace = Namespace::new(vec![claims.ten.clone(), claims.evt.clone(), stream])
            .map_err(|_| PublishRefused::BadNamespace)?;
        // The watch checks the held revocations first, so one that arrived
        // since `verify` still ends the push at once.
        let revocation = Some(self.access.watch(claims));
        Ok(Publisher {
            namespace,
            revocation,
        })
    }

    fn srt_passphrase(
        &self,
        namespace: &Namespace,
        key: &str,
    ) -> Result<Option<String>, SrtNotReady> {
        let Some(slot) = &self.srt_secret else {
            return Ok(None);
        };
        let tenant = namespace.fields().first().map(String::as_str).unwrap_or("");
        let secret = slot.get(tenant).ok().flatten().ok_or(SrtNotReady)?;
        Ok(Some(strom_token::srt::passphrase(&secret, key)))
    }
}

/// One configured stream: its key and where it publishes.
#[derive(Clone)]
pub struct StreamKey {
    pub app: String,
    pub key: String,
    pub namespace: Namespace,
    /// SRT pushes of this stream are encrypted with this passphrase.
    pub srt_passphrase: Option<String>,
}

/// Stream keys from the configuration file.
pub struct StaticKeys {
    keys: Vec<StreamKey>,
}

impl StaticKeys {
    pub fn new(keys: Vec<StreamKey>) -> Self {
        Self { keys }
    }
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl PublishAuthorizer for StaticKeys {
    fn authorize(
        &self,
        app: &str,
        key: &str,
        _transport: Transport,
    ) -> Result<Namespace, PublishRefused> {
        let found = self.keys.iter().find(|k| same_secret(&k.key, key));
        match found {
            Some(k) if k.app == app => Ok(k.namespace.clone()),
            Some(_) => Err(PublishRefused::WrongApplication(app.to_owned())),
            None => Err(PublishRefused::UnknownKey),
        }
    }

    fn srt_passphrase(
        &self,
        namespace: &Namespace,
        _key: &str,
    ) -> Result<Option<String>, SrtNotReady> {
        Ok(self
            .keys
            .iter()
            .find(|k| &k.namespace == namespace)
            .and_then(|k| k.srt_passphrase.clone()))
    }
}

/// A short, non-reversible label for a key, safe for logs.
pub(crate) fn key_label(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> StaticKeys {
        StaticKeys::new(vec![StreamKey {
            app: "live".into(),
            key: "s3cret".into(),
            namespace: Namespace::parse("acme/townhall/main").unwrap(),
            srt_passphrase: None,
        }])
    }

    #[test]
    fn known_key_maps_to_namespace() {
        assert_eq!(
            keys()
                .authorize("live", "s3cret", Transport::Rtmp)
                .unwrap()
                .to_string(),
            "acme/townhall/main"
        );
    }

    #[test]
    fn unknown_key_and_wrong_app_are_refused() {
        assert_eq!(
            keys().authorize("live", "nope", Transport::Rtmp),
            Err(PublishRefused::UnknownKey)
        );
        assert_eq!(
            keys().authorize("other", "s3cret", Transport::Rtmp),
            Err(PublishRefused::WrongApplication("other".into()))
        );
    }

    mod tokens {
        use super::super::*;
        use strom_token::{Grant, KeySet, Revocation, RevocationKind, SigningKey, Verifier};
        use time::OffsetDateTime;

        fn setup() -> (SigningKey, Arc<Access>) {
            let key = SigningKey::generate();
            let verifier = Arc::new(Verifier::new());
            verifier.set_keys(&KeySet {
                keys: vec![key.public_key()],
                media: Vec::new(),
            });
            let access = Arc::new(Access::new(verifier, strom_relay::ORIGIN_SESSIONS));
            (key, access)
        }

        fn mint(key: &SigningKey, action: Action, stream: Option<&str>) -> String {
            let grant = Grant {
                subject: "s_main".into(),
                tenant: "acme".into(),
                event: "townhall".into(),
                stream: stream.map(str::to_owned),
                action,
                lifetime_secs: 3600,
                not_after: None,
                role: None,
                via: None,
            };
            key.mint(&grant, OffsetDateTime::now_utc()).unwrap().0
        }

        #[test]
        fn a_publish_token_names_the_namespace() {
            let (key, access) = setup();
            let tokens = PublishTokens::new(access);
            let token = mint(&key, Action::Publish, Some("main"));
            assert_eq!(
                tokens
                    .authorize("live", &token, Transport::Rtmp)
                    .unwrap()
                    .to_string(),
                "acme/townhall/main"
            );
            assert_eq!(
                tokens.authorize("other", &token, Transport::Rtmp),
                Err(PublishRefused::WrongApplication("other".into()))
            );
        }

        #[test]
        fn other_tokens_and_junk_are_refused() {
            let (key, access) = setup();
            let tokens = PublishTokens::new(access);
            let no_stream = mint(&key, Action::Publish, None);
            assert_eq!(
                tokens.authorize("live", &no_stream, Transport::Rtmp),
                Err(PublishRefused::NoStream)
            );
            let play = mint(&key, Action::Play, Some("main"));
            assert_eq!(
                tokens.authorize("live", &play, Transport::Rtmp),
                Err(PublishRefused::NotPublish(Action::Play))
            );
            let foreign = mint(&SigningKey::generate(), Action::Publish, Some("main"));
            assert_eq!(
                tokens.authorize("live", &foreign, Transport::Rtmp),
                Err(PublishRefused::Token(TokenError::UnknownKey))
            );
            assert_eq!(
                tokens.authorize("live", "s3cret-static-key", Transport::Rtmp),
                Err(PublishRefused::Token(TokenError::Malformed))
            );
        }

        #[test]
        fn an_srt_stream_key_publishes_over_srt_only_and_a_token_everywhere() {
            let (key, access) = setup();
            let secret = [7u8; strom_token::srt::SECRET_LEN];
            let slot = strom_relay::SrtSecretSlot::default();
            slot.set([("acme".to_owned(), secret)].into());
            let tokens = PublishTokens::new(access).with_srt_secret(slot);
            let grant = Grant::publish("s_main", "acme", "townhall", "main", 3600);
            let (token, claims) = key.mint(&grant, OffsetDateTime::now_utc()).unwrap();
            let srt_key = strom_token::srt::stream_key(&secret, &claims).unwrap();
            // The SRT key travels in clear in the SRT handshake: over RTMP
            // or RTMPS (no passphrase there) it must not publish.
            for transport in [Transport::Rtmp, Transport::Rtmps] {
                let refused = tokens.admit("live", &srt_key, transport).err();
                assert_eq!(refused, Some(PublishRefused::WrongTransport(transport)));
                assert_eq!(refused.unwrap().label(), "wrong_transport");
                let padded = format!(" {srt_key}");
                assert_eq!(
                    tokens.authorize("live", &padded, transport),
                    Err(PublishRefused::WrongTransport(transport))
                );
            }
            let over_srt = tokens.admit("live", &srt_key, Transport::Srt).unwrap();
            assert_eq!(over_srt.namespace.to_string(), "acme/townhall/main");
            assert!(over_srt.revocation.is_some());
            for transport in Transport::ALL {
                assert_eq!(
                    tokens
                        .authorize("live", &token, transport)
                        .unwrap()
                        .to_string(),
                    "acme/townhall/main"
                );
            }
        }

        #[tokio::test]
        async fn a_revoked_stream_ends_the_push_and_refuses_the_next() {
            let (key, access) = setup();
            let tokens = PublishTokens::new(access.clone());
            let token = mint(&key, Action::Publish, Some("main"));
            let mut publisher = tokens.admit("live", &token, Transport::Rtmp).unwrap();
            let mut watch = publisher.revocation.take().expect("tokens are revocable");
            access.revoke(vec![Revocation {
                seq: 1,
                kind: RevocationKind::Stream,
                tenant: "acme".into(),
                id: "townhall/main".into(),
                issued_before: OffsetDateTime::now_utc() + time::Duration::seconds(1),
                keep_until: None,
            }]);
            tokio::time::timeout(std::time::Duration::from_secs(1), watch.revoked())
                .await
                .expect("revocation ends the push");
            assert_eq!(
                tokens
                    .authorize("live", &token, Transport::Rtmp)
                    .unwrap_err()
                    .label(),
                "revoked"
            );
        }
    }

    #[test]
    fn key_label_hides_the_key() {
        let label = key_label("s3cret");
        assert_eq!(label.len(), 8);
        assert!(!label.contains("s3cret"));
    }
}

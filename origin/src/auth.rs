//! Who may publish what: the one interface the RTMP (and later SRT) ingest
//! asks before accepting a push. Stream keys come from configuration
//! ([`StaticKeys`]) or are publish tokens issued by the control plane
//! ([`PublishTokens`]), which can be revoked while the push runs.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use strom_edge::access::{Access, RevocationWatch};
use strom_edge::broadcast::Namespace;
use strom_token::sync::SrtSecretSlot;
use strom_token::{Action, TokenError};

/// The RTMP application publish tokens are pushed to: `rtmp://host/live/<token>`.
/// One fixed name keeps encoder set-up uniform and makes a mistyped server
/// URL fail loudly instead of publishing somewhere unexpected.
pub const TOKEN_APP: &str = "live";

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
    fn authorize(&self, app: &str, key: &str) -> Result<Namespace, PublishRefused>;

    /// Like [`authorize`](PublishAuthorizer::authorize), with the watch that
    /// ends the push when its credential is revoked.
    fn admit(&self, app: &str, key: &str) -> Result<Publisher, PublishRefused> {
        Ok(Publisher {
            namespace: self.authorize(app, key)?,
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
/// stream): the namespace is the token's, the RTMP key is the token.
pub struct PublishTokens {
    access: Arc<Access>,
    /// Shared with the control plane: SRT passphrases derive from it and
    /// the credential ([`strom_token::srt`]). Without it, SRT is unencrypted.
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
    /// derived from the secret in `slot` (filled from the control plane).
    pub fn with_srt_secret(mut self, slot: SrtSecretSlot) -> Self {
        self.srt_secret = Some(slot);
        self
    }
}

impl PublishAuthorizer for PublishTokens {
    fn authorize(&self, app: &str, key: &str) -> Result<Namespace, PublishRefused> {
        self.admit(app, key).map(|p| p.namespace)
    }

    fn admit(&self, app: &str, key: &str) -> Result<Publisher, PublishRefused> {
        if app != TOKEN_APP {
            return Err(PublishRefused::WrongApplication(app.to_owned()));
        }
        let now = time::OffsetDateTime::now_utc();
        let claims = if key.trim().starts_with(strom_token::srt::KEY_PREFIX) {
            // An SRT stream key: the claims of its publish token, under the
            // control plane's MAC; checked like the token itself.
            let secret = self
                .srt_secret
                .as_ref()
                .and_then(|slot| *slot.read().unwrap_or_else(|p| p.into_inner()))
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
        _namespace: &Namespace,
        key: &str,
    ) -> Result<Option<String>, SrtNotReady> {
        let Some(slot) = &self.srt_secret else {
            return Ok(None);
        };
        let secret = *slot.read().unwrap_or_else(|p| p.into_inner());
        let secret = secret.ok_or(SrtNotReady)?;
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
    fn authorize(&self, app: &str, key: &str) -> Result<Namespace, PublishRefused> {
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
pub fn key_label(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
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
            keys().authorize("live", "s3cret").unwrap().to_string(),
            "acme/townhall/main"
        );
    }

    #[test]
    fn unknown_key_and_wrong_app_are_refused() {
        assert_eq!(
            keys().authorize("live", "nope"),
            Err(PublishRefused::UnknownKey)
        );
        assert_eq!(
            keys().authorize("other", "s3cret"),
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
            let access = Arc::new(Access::new(verifier, strom_edge::access::ORIGIN_SESSIONS));
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
            };
            key.mint(&grant, OffsetDateTime::now_utc()).unwrap().0
        }

        #[test]
        fn a_publish_token_names_the_namespace() {
            let (key, access) = setup();
            let tokens = PublishTokens::new(access);
            let token = mint(&key, Action::Publish, Some("main"));
            assert_eq!(
                tokens.authorize("live", &token).unwrap().to_string(),
                "acme/townhall/main"
            );
            assert_eq!(
                tokens.authorize("other", &token),
                Err(PublishRefused::WrongApplication("other".into()))
            );
        }

        #[test]
        fn other_tokens_and_junk_are_refused() {
            let (key, access) = setup();
            let tokens = PublishTokens::new(access);
            let no_stream = mint(&key, Action::Publish, None);
            assert_eq!(
                tokens.authorize("live", &no_stream),
                Err(PublishRefused::NoStream)
            );
            let play = mint(&key, Action::Play, Some("main"));
            assert_eq!(
                tokens.authorize("live", &play),
                Err(PublishRefused::NotPublish(Action::Play))
            );
            let foreign = mint(&SigningKey::generate(), Action::Publish, Some("main"));
            assert_eq!(
                tokens.authorize("live", &foreign),
                Err(PublishRefused::Token(TokenError::UnknownKey))
            );
            assert_eq!(
                tokens.authorize("live", "s3cret-static-key"),
                Err(PublishRefused::Token(TokenError::Malformed))
            );
        }

        #[tokio::test]
        async fn a_revoked_stream_ends_the_push_and_refuses_the_next() {
            let (key, access) = setup();
            let tokens = PublishTokens::new(access.clone());
            let token = mint(&key, Action::Publish, Some("main"));
            let mut publisher = tokens.admit("live", &token).unwrap();
            let mut watch = publisher.revocation.take().expect("tokens are revocable");
            access.revoke(vec![Revocation {
                seq: 1,
                kind: RevocationKind::Stream,
                tenant: "acme".into(),
                id: "townhall/main".into(),
                issued_before: OffsetDateTime::now_utc() + time::Duration::seconds(1),
            }]);
            tokio::time::timeout(std::time::Duration::from_secs(1), watch.revoked())
                .await
                .expect("revocation ends the push");
            assert_eq!(
                tokens.authorize("live", &token).unwrap_err().label(),
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

//! Who may publish what: the one interface the RTMP (and later SRT) ingest
//! asks before accepting a push. Stream keys come from configuration until the
//! control plane issues publish credentials.

use sha2::{Digest, Sha256};
use strom_edge::broadcast::Namespace;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PublishRefused {
    #[error("unknown stream key")]
    UnknownKey,
    #[error("the stream key does not belong to application {0:?}")]
    WrongApplication(String),
}

/// Decides whether a push may publish, and under which namespace.
pub trait PublishAuthorizer: Send + Sync + 'static {
    fn authorize(&self, app: &str, key: &str) -> Result<Namespace, PublishRefused>;
}

/// One configured stream: its key and where it publishes.
#[derive(Clone)]
pub struct StreamKey {
    pub app: String,
    pub key: String,
    pub namespace: Namespace,
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

    #[test]
    fn key_label_hides_the_key() {
        let label = key_label("s3cret");
        assert_eq!(label.len(), 8);
        assert!(!label.contains("s3cret"));
    }
}

//! What a relay last heard from its control plane, kept on disk: the key
//! set, the revocations held and when a replica last answered. A relay
//! (re)starting while no replica answers takes it up, so it checks tokens
//! as it did before — viewers of a restarted edge keep watching through
//! the outage — and the outage's grace counts from that last answer, not
//! from the restart (`strom_token::Issuer`). Public keys and pseudonymous
//! revocation entries only: nothing in it is secret.

use std::path::Path;

use serde::{Deserialize, Serialize};
use strom_token::revocation::RevocationFeed;
use strom_token::{KeySet, Verifier};
use time::OffsetDateTime;

/// The file's name in the relay's data directory.
pub const FILE: &str = "control-plane-last-word.json";

#[derive(Serialize, Deserialize)]
struct LastWord {
    #[serde(with = "time::serde::rfc3339")]
    heard: OffsetDateTime,
    keys: KeySet,
    revocations: RevocationFeed,
}

/// Keeps `keys` and what `verifier` holds now (written whole, then renamed
/// over the last one). A failure is logged: serving goes on.
pub(crate) fn save(path: &Path, keys: &KeySet, verifier: &Verifier) {
    let Some(heard) = verifier.issuer().heard else {
        return;
    };
    let word = LastWord {
        heard,
        keys: keys.clone(),
        revocations: verifier.revocations().snapshot(),
    };
    let written = serde_json::to_vec(&word)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            let partial = path.with_extension("partial");
            std::fs::write(&partial, bytes)?;
            std::fs::rename(&partial, path)
        });
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %path.display(), "could not keep the control plane's last word");
    }
}

/// Takes up what was kept: the key set (returned, for later saves), the
/// revocations, and an outage that began when the control plane was last
/// heard. None when there is nothing (readable) to take up.
pub(crate) fn restore(path: &Path, verifier: &Verifier) -> Option<KeySet> {
    let bytes = std::fs::read(path).ok()?;
    let word: LastWord = match serde_json::from_slice(&bytes) {
        Ok(word) => word,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "the control plane's last word is unreadable; ignored");
            return None;
        }
    };
    super::apply_keys(verifier, &word.keys);
    verifier.revocations_mut().apply(&word.revocations);
    verifier.resume_outage(word.heard);
    tracing::warn!(
        heard = %word.heard,
        keys = verifier.key_count(),
        revocations = verifier.revocations().len(),
        "no control-plane replica answers at start: checking tokens with what it said last"
    );
    Some(word.keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strom_token::{Action, Grant, RevocationKind, SigningKey};

    #[test]
    fn a_relay_restarting_in_an_outage_takes_up_keys_revocations_and_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let key = SigningKey::generate();
        let keys = KeySet {
            keys: vec![key.public_key()],
            media: Vec::new(),
        };
        let heard = OffsetDateTime::now_utc() - time::Duration::minutes(20);
        let before = Verifier::new();
        super::super::apply_keys(&before, &keys);
        before.revocations_mut().apply(&RevocationFeed {
            seq: 7,
            entries: vec![strom_token::Revocation {
                seq: 7,
                kind: RevocationKind::Subject,
                tenant: "t_acme".into(),
                id: "p_gone".into(),
                issued_before: heard,
                keep_until: None,
            }],
            reset: false,
            more: false,
        });
        // Nothing heard yet: nothing to keep.
        save(&path, &keys, &before);
        assert!(!path.exists());
        before.issuer_heard(heard);
        save(&path, &keys, &before);

        let after = Verifier::new();
        assert_eq!(restore(&path, &after), Some(keys));
        assert_eq!(after.key_count(), 1);
        assert_eq!(after.revocations().seq(), 7);
        let issuer = after.issuer();
        assert_eq!(
            issuer.heard.map(|h| h.unix_timestamp()),
            Some(heard.unix_timestamp())
        );
        assert!(issuer.unreachable);
        // A play token that expired after the last answer is still good; one
        // that expired before it is not; the revoked subject stays out.
        let mint = |subject: &str, minted: OffsetDateTime| {
            let grant = Grant {
                lifetime_secs: 600,
                ..Grant::play(subject, "t_acme", "e_hall")
            };
            key.mint(&grant, minted).unwrap().0
        };
        let now = OffsetDateTime::now_utc();
        let parts = ["t_acme", "e_hall", "main"];
        assert!(after
            .authorize(
                &mint("p_viewer", heard - time::Duration::minutes(5)),
                Action::Play,
                &parts,
                now
            )
            .is_ok());
        assert!(after
            .authorize(
                &mint("p_viewer", heard - time::Duration::minutes(15)),
                Action::Play,
                &parts,
                now
            )
            .is_err());
        assert!(after
            .authorize(
                &mint("p_gone", heard - time::Duration::minutes(5)),
                Action::Play,
                &parts,
                now
            )
            .is_err());
    }

    #[test]
    fn an_unreadable_last_word_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, b"{\"heard\": 12").unwrap();
        let verifier = Verifier::new();
        assert_eq!(restore(&path, &verifier), None);
        assert_eq!(verifier.key_count(), 0);
        assert!(verifier.issuer().heard.is_none());
        assert_eq!(restore(&dir.path().join("missing.json"), &verifier), None);
    }
}

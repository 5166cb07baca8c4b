//! Revocations: tokens that must stop working before they expire. An entry
//! revokes every token of a subject, event, stream or single token id that
//! was issued before a moment, so a participant who is reactivated, or an
//! event that reopens, gets fresh tokens that work again.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Claims, MAX_PUBLISH_SECS, MAX_RELAY_SECS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    /// A participant (or relay) by pseudonymous subject id.
    Subject,
    /// Every token of an event (it ended).
    Event,
    /// Every token of an event, which was deleted: relays also delete what
    /// they keep of it (the origin its recordings, DATA-7).
    #[serde(rename = "event-deleted")]
    EventDeleted,
    /// Every token of one stream, `event/stream` (its credential was rotated).
    Stream,
    /// One token by its `jti`.
    Token,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    /// Position in the control plane's revocation log.
    pub seq: u64,
    pub kind: RevocationKind,
    pub tenant: String,
    pub id: String,
    /// Tokens issued before this moment are revoked.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_before: OffsetDateTime,
}

impl Revocation {
    pub fn revokes(&self, claims: &Claims) -> bool {
        if claims.ten != self.tenant || claims.iat >= self.issued_before {
            return false;
        }
        match self.kind {
            RevocationKind::Subject => claims.sub == self.id,
            RevocationKind::Event | RevocationKind::EventDeleted => claims.evt == self.id,
            RevocationKind::Stream => claims
                .str
                .as_deref()
                .is_some_and(|s| format!("{}/{}", claims.evt, s) == self.id),
            RevocationKind::Token => claims.jti == self.id,
        }
    }

    /// When no token this entry could revoke can still be valid.
    fn obsolete_at(&self) -> OffsetDateTime {
        let keep = match self.kind {
            RevocationKind::Token | RevocationKind::Subject => MAX_RELAY_SECS,
            RevocationKind::Event | RevocationKind::EventDeleted | RevocationKind::Stream => {
                MAX_PUBLISH_SECS
            }
        };
        self.issued_before + time::Duration::seconds(keep + crate::CLOCK_SKEW_SECS)
    }
}

/// One page of the revocation log as the control plane serves it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RevocationFeed {
    /// The newest sequence number the control plane holds.
    pub seq: u64,
    /// Entries after the requested position, oldest first.
    pub entries: Vec<Revocation>,
    /// The requested position is no longer available (pruned or the log was
    /// restored): the entries are the full list, replace what you hold.
    #[serde(default)]
    pub reset: bool,
}

/// The revocations a verifier holds.
#[derive(Debug, Default)]
pub struct Revocations {
    entries: HashMap<(RevocationKind, String, String), Revocation>,
    seq: u64,
}

impl Revocations {
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (tenant, event) of every deleted event still in the list.
    pub fn deleted_events(&self) -> Vec<(String, String)> {
        self.entries
            .values()
            .filter(|r| r.kind == RevocationKind::EventDeleted)
            .map(|r| (r.tenant.clone(), r.id.clone()))
            .collect()
    }

    pub fn revokes(&self, claims: &Claims) -> bool {
        let candidates = [
            (RevocationKind::Subject, claims.sub.clone()),
            (RevocationKind::Event, claims.evt.clone()),
            (RevocationKind::EventDeleted, claims.evt.clone()),
            (RevocationKind::Token, claims.jti.clone()),
            (
                RevocationKind::Stream,
                claims
                    .str
                    .as_ref()
                    .map(|s| format!("{}/{s}", claims.evt))
                    .unwrap_or_default(),
            ),
        ];
        candidates.into_iter().any(|(kind, id)| {
            self.entries
                .get(&(kind, claims.ten.clone(), id))
                .is_some_and(|r| r.revokes(claims))
        })
    }

    /// Applies a feed page; returns the entries that are new to this holder
    /// (callers close sessions they revoke).
    pub fn apply(&mut self, feed: &RevocationFeed) -> Vec<Revocation> {
        if feed.reset {
            self.entries.clear();
        }
        let mut fresh = Vec::new();
        for entry in &feed.entries {
            let key = (entry.kind, entry.tenant.clone(), entry.id.clone());
            let newer = self
                .entries
                .get(&key)
                .is_none_or(|held| held.issued_before < entry.issued_before);
            if newer {
                self.entries.insert(key, entry.clone());
                fresh.push(entry.clone());
            }
        }
        self.seq = if feed.reset {
            feed.seq
        } else {
            self.seq.max(feed.seq)
        };
        fresh
    }

    /// Drops entries that can no longer match a valid token.
    pub fn prune(&mut self, now: OffsetDateTime) {
        self.entries.retain(|_, r| r.obsolete_at() > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Grant, SigningKey};

    fn claims(now: OffsetDateTime) -> Claims {
        let key = SigningKey::generate();
        let grant = Grant {
            subject: "p1".into(),
            tenant: "t1".into(),
            event: "e1".into(),
            stream: Some("main".into()),
            action: Action::Play,
            lifetime_secs: 300,
            not_after: None,
        };
        key.mint(&grant, now).unwrap().1
    }

    fn entry(
        seq: u64,
        kind: RevocationKind,
        tenant: &str,
        id: &str,
        at: OffsetDateTime,
    ) -> Revocation {
        Revocation {
            seq,
            kind,
            tenant: tenant.into(),
            id: id.into(),
            issued_before: at,
        }
    }

    #[test]
    fn each_kind_revokes_only_earlier_tokens_of_its_tenant() {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let c = claims(now);
        let later = now + time::Duration::seconds(1);
        for (kind, id) in [
            (RevocationKind::Subject, "p1"),
            (RevocationKind::Event, "e1"),
            (RevocationKind::Stream, "e1/main"),
            (RevocationKind::Token, c.jti.as_str()),
        ] {
            let mut r = Revocations::default();
            r.apply(&RevocationFeed {
                seq: 1,
                entries: vec![entry(1, kind, "t1", id, later)],
                reset: false,
            });
            assert!(r.revokes(&c), "{kind:?}");
            let mut other_tenant = Revocations::default();
            other_tenant.apply(&RevocationFeed {
                seq: 1,
                entries: vec![entry(1, kind, "t2", id, later)],
                reset: false,
            });
            assert!(!other_tenant.revokes(&c), "{kind:?} other tenant");
            let mut before = Revocations::default();
            before.apply(&RevocationFeed {
                seq: 1,
                entries: vec![entry(1, kind, "t1", id, now)],
                reset: false,
            });
            assert!(
                !before.revokes(&c),
                "{kind:?} token issued after the revocation"
            );
        }
    }

    #[test]
    fn apply_reports_only_new_entries_and_reset_replaces() {
        let now = OffsetDateTime::now_utc();
        let mut r = Revocations::default();
        let e1 = entry(1, RevocationKind::Subject, "t1", "p1", now);
        assert_eq!(
            r.apply(&RevocationFeed {
                seq: 1,
                entries: vec![e1.clone()],
                reset: false
            })
            .len(),
            1
        );
        assert_eq!(
            r.apply(&RevocationFeed {
                seq: 1,
                entries: vec![e1],
                reset: false
            })
            .len(),
            0
        );
        assert_eq!(r.seq(), 1);
        r.apply(&RevocationFeed {
            seq: 5,
            entries: vec![],
            reset: true,
        });
        assert!(r.is_empty());
        assert_eq!(r.seq(), 5);
    }

    #[test]
    fn prune_forgets_entries_older_than_any_valid_token() {
        let now = OffsetDateTime::now_utc();
        let mut r = Revocations::default();
        let old = now - time::Duration::seconds(MAX_PUBLISH_SECS + 3600);
        r.apply(&RevocationFeed {
            seq: 2,
            entries: vec![
                entry(1, RevocationKind::Event, "t1", "e1", old),
                entry(2, RevocationKind::Event, "t1", "e2", now),
            ],
            reset: false,
        });
        r.prune(now);
        assert_eq!(r.len(), 1);
    }
}

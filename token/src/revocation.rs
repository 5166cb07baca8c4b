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
    /// No token this entry revokes is valid after this moment (the longest
    /// lifetime such a token can have); then the entry can be forgotten.
    /// Absent in older entries: the longest lifetime of the kind applies.
    /// (A play token accepted past expiry during a control-plane outage,
    /// [`crate::Issuer`], may outlive it: relays forget entries only after
    /// a poll that answered, when that grace has ended.)
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub keep_until: Option<OffsetDateTime>,
}

/// How long an `event-deleted` entry is kept: relays delete what they keep
/// of the event (an origin its recordings) when they read it, so a relay
/// that was away for years still learns of it.
pub const EVENT_DELETED_KEEP_SECS: i64 = 3660 * 24 * 3600;

impl Revocation {
    pub fn revokes(&self, claims: &Claims) -> bool {
        if claims.ten != self.tenant || claims.iat >= self.issued_before {
            return false;
        }
        match self.kind {
            // A credential's subject, and every token minted on its
            // strength (an agent's tickets name their credential in `via`).
            RevocationKind::Subject => {
                claims.sub == self.id || claims.via.as_deref() == Some(self.id.as_str())
            }
            RevocationKind::Event | RevocationKind::EventDeleted => claims.evt == self.id,
            RevocationKind::Stream => claims
                .str
                .as_deref()
                .is_some_and(|s| format!("{}/{}", claims.evt, s) == self.id),
            RevocationKind::Token => claims.jti == self.id,
        }
    }

    /// When no token this entry could revoke can still be valid.
    pub fn obsolete_at(&self) -> OffsetDateTime {
        if self.kind == RevocationKind::EventDeleted {
            return self.issued_before + time::Duration::seconds(EVENT_DELETED_KEEP_SECS);
        }
        let skew = time::Duration::seconds(crate::CLOCK_SKEW_SECS);
        if let Some(until) = self.keep_until {
            return until + skew;
        }
        let keep = match self.kind {
            RevocationKind::Token | RevocationKind::Subject => MAX_RELAY_SECS,
            RevocationKind::Event | RevocationKind::EventDeleted | RevocationKind::Stream => {
                MAX_PUBLISH_SECS
            }
        };
        self.issued_before + time::Duration::seconds(keep) + skew
    }

    /// Whether `later` makes this entry unnecessary: same target, and it
    /// revokes at least every token this one does.
    pub fn superseded_by(&self, later: &Revocation) -> bool {
        self.kind == later.kind
            && self.tenant == later.tenant
            && self.id == later.id
            && later.issued_before >= self.issued_before
            && later.obsolete_at() >= self.obsolete_at()
    }
}

/// The entries of a revocation log worth keeping at `now`: those that can
/// still match a valid token and that no later entry covers. What a control
/// plane compacts its log to, so a relay starting after a year reads only
/// what still matters.
pub fn compact(entries: &[Revocation], now: OffsetDateTime) -> Vec<&Revocation> {
    let mut newest: HashMap<(RevocationKind, &str, &str), &Revocation> = HashMap::new();
    for e in entries {
        let k = (e.kind, e.tenant.as_str(), e.id.as_str());
        match newest.get(&k) {
            Some(held) if !held.superseded_by(e) => {}
            _ => {
                newest.insert(k, e);
            }
        }
    }
    entries
        .iter()
        .filter(|e| e.obsolete_at() > now)
        .filter(|e| {
            let k = (e.kind, e.tenant.as_str(), e.id.as_str());
            newest
                .get(&k)
                .is_none_or(|n| std::ptr::eq(*n, *e) || !e.superseded_by(n))
        })
        .collect()
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
    /// The page is full: more entries follow after `seq` (which is then the
    /// last entry's position); ask again at once.
    #[serde(default)]
    pub more: bool,
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
            (
                RevocationKind::Subject,
                claims.via.clone().unwrap_or_default(),
            ),
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

    /// Every entry held and the position reached, as one page that
    /// [`Revocations::apply`] takes back (`reset`): what a relay keeps on
    /// disk to start with while its control plane is away.
    pub fn snapshot(&self) -> RevocationFeed {
        let mut entries: Vec<Revocation> = self.entries.values().cloned().collect();
        entries.sort_by_key(|r| r.seq);
        RevocationFeed {
            seq: self.seq,
            entries,
            reset: true,
            more: false,
        }
    }

    /// Drops entries that can no longer match a valid token.
    pub fn prune(&mut self, now: OffsetDateTime) {
        self.entries.retain(|_, r| r.obsolete_at() > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Grant, SigningKey};

    fn claims(now: OffsetDateTime) -> Claims {
        let key = SigningKey::generate();
        let grant = Grant {
            stream: Some("main".into()),
            lifetime_secs: 300,
            ..Grant::play("p1", "t1", "e1")
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
            keep_until: None,
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
                more: false,
            });
            assert!(r.revokes(&c), "{kind:?}");
            let mut other_tenant = Revocations::default();
            other_tenant.apply(&RevocationFeed {
                seq: 1,
                entries: vec![entry(1, kind, "t2", id, later)],
                reset: false,
                more: false,
            });
            assert!(!other_tenant.revokes(&c), "{kind:?} other tenant");
            let mut before = Revocations::default();
            before.apply(&RevocationFeed {
                seq: 1,
                entries: vec![entry(1, kind, "t1", id, now)],
                reset: false,
                more: false,
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
                reset: false,
                more: false,
            })
            .len(),
            1
        );
        assert_eq!(
            r.apply(&RevocationFeed {
                seq: 1,
                entries: vec![e1],
                reset: false,
                more: false,
            })
            .len(),
            0
        );
        assert_eq!(r.seq(), 1);
        r.apply(&RevocationFeed {
            seq: 5,
            entries: vec![],
            reset: true,
            more: false,
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
            more: false,
        });
        r.prune(now);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn revoking_a_credential_revokes_what_was_minted_from_it() {
        let now = OffsetDateTime::now_utc();
        let mut ticket = claims(now);
        ticket.sub = "agent:s_hq:peer".into();
        ticket.via = Some("ag_cred".into());
        let mut r = Revocations::default();
        r.apply(&RevocationFeed {
            seq: 1,
            entries: vec![entry(
                1,
                RevocationKind::Subject,
                "t1",
                "ag_cred",
                now + time::Duration::seconds(1),
            )],
            ..Default::default()
        });
        assert!(r.revokes(&ticket));
        ticket.via = Some("ag_other".into());
        assert!(!r.revokes(&ticket));
    }

    #[test]
    fn compaction_keeps_what_can_still_match_and_drops_what_is_covered() {
        let now = OffsetDateTime::now_utc();
        let year = time::Duration::days(365);
        let mut old = entry(1, RevocationKind::Subject, "t1", "p_old", now - year - year);
        old.keep_until = Some(old.issued_before + time::Duration::seconds(600));
        let mut first = entry(
            2,
            RevocationKind::Subject,
            "t1",
            "p_x",
            now - time::Duration::seconds(5),
        );
        first.keep_until = Some(now + time::Duration::seconds(600));
        let mut second = entry(3, RevocationKind::Subject, "t1", "p_x", now);
        second.keep_until = Some(now + time::Duration::seconds(700));
        let other_tenant = entry(4, RevocationKind::Subject, "t2", "p_x", now);
        let deleted = entry(5, RevocationKind::EventDeleted, "t1", "e1", now - year);
        let ended = entry(6, RevocationKind::Event, "t1", "e2", now - year);
        let all = vec![
            old,
            first,
            second.clone(),
            other_tenant.clone(),
            deleted.clone(),
            ended,
        ];
        let kept: Vec<u64> = compact(&all, now).iter().map(|e| e.seq).collect();
        // The old participant entry outlived its tokens; the first p_x entry
        // is covered by the second; an ended event's entry is obsolete after
        // the longest publish credential; a deletion is kept for years.
        assert_eq!(kept, vec![3, 4, 5]);
    }
}

//! The revocation log relays follow: appended, paged, compacted.

use super::*;

impl Repo {
    pub fn revoke(&self, kind: RevocationKind, tenant: &str, id: &str) -> Result<Revocation> {
        let _g = self.lock()?;
        self.revoke_locked(kind, tenant, id)
    }

    pub(super) fn revoke_locked(
        &self,
        kind: RevocationKind,
        tenant: &str,
        id: &str,
    ) -> Result<Revocation> {
        // Token times carry sub-second precision: tokens minted after this
        // instant stay valid, every earlier one is revoked.
        let at = OffsetDateTime::now_utc();
        Ok(self
            .append_revocations(&[(kind, tenant, id, at)])?
            .remove(0))
    }

    /// Records revocations issued at the given moments, in one write
    /// (a tenant's events together; tests build long logs with it).
    #[doc(hidden)]
    pub fn revoke_all_at(
        &self,
        entries: &[(RevocationKind, &str, &str, OffsetDateTime)],
    ) -> Result<Vec<Revocation>> {
        let _g = self.lock()?;
        self.append_revocations(entries)
    }

    /// Appends to the log (the caller holds the write lock), tells the
    /// control plane's own verifier at once and wakes the relays' polls.
    pub(super) fn append_revocations(
        &self,
        entries: &[(RevocationKind, &str, &str, OffsetDateTime)],
    ) -> Result<Vec<Revocation>> {
        // The log's head as stored: another replica may have appended
        // since this one last looked (its positions must not be reused).
        let mut seq = self.follow_revocations()?;
        let mut b = Batch::default();
        let mut out = Vec::with_capacity(entries.len());
        for (kind, tenant, id, at) in entries {
            seq += 1;
            let r = Revocation {
                seq,
                kind: *kind,
                tenant: (*tenant).into(),
                id: (*id).into(),
                issued_before: *at,
                keep_until: Some(*at + time::Duration::seconds(revocation_lifetime(*kind, id))),
            };
            b.put(Table::Revocations, format!("{seq:016}"), encode(&r));
            out.push(r);
        }
        b.put(Table::Meta, "revocation-seq", encode(&seq));
        self.store.write(b)?;
        self.verifier.revocations_mut().apply(&RevocationFeed {
            seq,
            entries: out.clone(),
            ..Default::default()
        });
        self.revocation_seq.send_if_modified(|head| {
            let newer = seq > *head;
            if newer {
                *head = seq;
            }
            newer
        });
        for r in &out {
            self.metrics.revoked(r.kind);
            tracing::info!(kind = ?r.kind, tenant = %r.tenant, id = %r.id, seq = r.seq, "revocation recorded");
        }
        Ok(out)
    }

    /// One page of the log after `after`, at most [`REVOCATION_PAGE`]
    /// entries; `more` says another page follows (then `seq` is the last
    /// entry's position, else the newest). With `tenant`, only that
    /// tenant's entries (a peer-agent's credential reads no other tenant's
    /// ids), the position still moving over the others.
    pub fn revocations_after(&self, after: u64, tenant: Option<&str>) -> Result<RevocationFeed> {
        let head = *self.revocation_seq.borrow();
        // A relay ahead of us (we were restored from a backup) starts over.
        let reset = after > head;
        let from = if reset { 0 } else { after };
        let rows = self.store.scan_after(
            Table::Revocations,
            b"",
            format!("{from:016}").as_bytes(),
            REVOCATION_PAGE,
        )?;
        let scanned: Vec<Revocation> =
            rows.iter().map(|(_, v)| decode(v)).collect::<Result<_>>()?;
        let more = scanned.len() == REVOCATION_PAGE;
        let seq = match scanned.last() {
            Some(last) if more => last.seq,
            _ => head,
        };
        let entries = scanned
            .into_iter()
            .filter(|r| tenant.is_none_or(|t| r.tenant == t))
            .collect();
        Ok(RevocationFeed {
            seq,
            entries,
            reset,
            more,
        })
    }

    /// Catches up with what other replicas appended to the log (on a
    /// store several share): applies their entries to this replica's own
    /// verifier and wakes the relays' long-polls here. The control plane
    /// calls it every half second; cheap when nothing changed (one read).
    /// Returns the head.
    pub fn follow_revocations(&self) -> Result<u64> {
        let stored: u64 = match self.store.get(Table::Meta, b"revocation-seq")? {
            Some(raw) => decode(&raw)?,
            None => 0,
        };
        let head = *self.revocation_seq.borrow();
        if stored <= head {
            return Ok(head);
        }
        let rows = self.store.scan_after(
            Table::Revocations,
            b"",
            format!("{head:016}").as_bytes(),
            usize::MAX,
        )?;
        let entries: Vec<Revocation> =
            rows.iter().map(|(_, v)| decode(v)).collect::<Result<_>>()?;
        self.verifier.revocations_mut().apply(&RevocationFeed {
            seq: stored,
            entries,
            ..Default::default()
        });
        self.revocation_seq.send_if_modified(|h| {
            let newer = stored > *h;
            if newer {
                *h = stored;
            }
            newer
        });
        Ok(stored)
    }

    pub fn revocation_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revocation_seq.subscribe()
    }

    /// Drops from the log what no relay needs any more (F3): entries that
    /// cannot match a valid token at `at`, and entries a later one covers.
    /// Positions are never reused, so relays simply read on. Returns how
    /// many entries went.
    pub fn compact_revocations(&self, at: OffsetDateTime) -> Result<usize> {
        let _g = self.lock()?;
        let all: Vec<Revocation> = self.scan(Table::Revocations, b"")?;
        let keep: std::collections::HashSet<u64> = strom_token::revocation::compact(&all, at)
            .iter()
            .map(|r| r.seq)
            .collect();
        let mut b = Batch::default();
        let mut dropped = 0;
        for r in &all {
            if !keep.contains(&r.seq) {
                b.delete(Table::Revocations, format!("{:016}", r.seq));
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.store.write(b)?;
            self.verifier.revocations_mut().prune(at);
            tracing::info!(dropped, kept = keep.len(), "revocation log compacted");
        }
        Ok(dropped)
    }

    /// The control plane's own verifier: relay credentials, agent tickets
    /// and tokens are checked against the same keys and revocations relays
    /// hold, updated the moment a revocation is recorded.
    pub fn verifier(&self) -> &Arc<strom_token::Verifier> {
        &self.verifier
    }

    pub(super) fn load_verifier(&self) -> Result<()> {
        self.verifier.set_keys(&self.key_set()?);
        let mut after = 0;
        loop {
            let page = self.revocations_after(after, None)?;
            after = page.seq;
            let more = page.more;
            self.verifier.revocations_mut().apply(&page);
            if !more {
                break;
            }
        }
        self.verifier
            .revocations_mut()
            .prune(OffsetDateTime::now_utc());
        Ok(())
    }
}

/// Entries per page of the revocation feed.
pub const REVOCATION_PAGE: usize = 10_000;

/// How long tokens a revocation can match may live: participants' and
/// staff's (`p_`, `u_`) are playback tokens; other subjects are relay or
/// agent credentials; events and streams carry publish credentials.
pub(super) fn revocation_lifetime(kind: RevocationKind, id: &str) -> i64 {
    match kind {
        RevocationKind::Subject if id.starts_with("p_") || id.starts_with("u_") => {
            strom_token::MAX_PLAY_SECS
        }
        RevocationKind::Subject | RevocationKind::Token => strom_token::MAX_RELAY_SECS,
        RevocationKind::Event | RevocationKind::EventDeleted | RevocationKind::Stream => {
            strom_token::MAX_PUBLISH_SECS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::in_memory;
    use super::*;

    #[test]
    fn the_log_pages_in_order_and_compaction_keeps_what_can_still_match() {
        let repo = in_memory();
        let old = OffsetDateTime::now_utc() - time::Duration::days(400);
        let recent = OffsetDateTime::now_utc();
        let entries: Vec<_> = (0..5)
            .map(|i| {
                (
                    RevocationKind::Subject,
                    "t_a",
                    if i < 3 { "p_old" } else { "p_new" },
                    if i < 3 { old } else { recent },
                )
            })
            .collect();
        repo.revoke_all_at(&entries).unwrap();
        let feed = repo.revocations_after(0, None).unwrap();
        let seqs: Vec<u64> = feed.entries.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(repo.revocations_after(3, None).unwrap().entries.len(), 2);
        // A tenant's relay reads only its tenant.
        assert!(repo
            .revocations_after(0, Some("t_b"))
            .unwrap()
            .entries
            .is_empty());
        // Playback tokens live hours: a year-old entry matches nothing now.
        let dropped = repo.compact_revocations(OffsetDateTime::now_utc()).unwrap();
        assert!(dropped >= 3, "dropped {dropped}");
        let left = repo.revocations_after(0, None).unwrap();
        assert!(left.entries.iter().all(|r| r.id == "p_new"));
        // Positions are never reused.
        let next = repo.revoke(RevocationKind::Subject, "t_a", "p_x").unwrap();
        assert_eq!(next.seq, 6);
    }
}

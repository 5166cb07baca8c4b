//! When a track repairs past its parent, and when the agent gives the
//! parent up (P2P-4), as a state machine without I/O: `media` tells it how
//! late the object a viewer waits for is, when the parent last sent news,
//! and what each repair found; it answers whether to FETCH from the repair
//! source now and whether the parent has fallen behind for good.
//!
//! The rules:
//! - Repair is due when the object a viewer waits for is later than the
//!   repair deadline (beyond the best delivery seen, so clock skew between
//!   origin and agent cancels), or, for tracks without producer times, when
//!   the parent has sent nothing new for as long once it was steady. One
//!   repair at a time; a due track without a repair source waits.
//! - A parent is lagging from the first repair that found objects it had not
//!   sent; a repair that finds nothing means the stream paused (an encoder
//!   pausing must not move the site). A parent no repair has had to replace
//!   for [`CAUGHT_UP`] has caught up.
//! - A steady parent lagging for all of [`SILENCE`] (or, without a repair
//!   source, silent for as long) is reported once. Viewers do not wait for
//!   this: repair fills the gap from the deadline on.
//! - A repair that found objects is followed by another check at once:
//!   the source (often itself repairing, one hop closer to the edge) may
//!   have more by now. One that found nothing waits for the next check.
//! - Repair belongs to the track, not to one subscription: a parent that
//!   dies or is passed over while a repair runs does not end that repair,
//!   and while the track has no parent (the next one is still being
//!   reached) it is repaired like a lagging one. A new parent is judged
//!   afresh ([`Repair::new_parent`]); only a peer is ever passed over.
//! - A track subscribed to the edge (the leader's) is not repaired: its
//!   repair source is the same edge, and a late edge subscription means a
//!   congested WAN that duplicates would only load more. (Repairing an
//!   edge subscription until it had delivered ten objects was tried: in
//!   its one run a killed leader cost viewers 1.4 s, BENCHMARKS.md.)

use std::time::{Duration, Instant};

/// A parent that repair has had to outrun for this long (or, without a
/// repair source, that sent nothing new for this long) while it still
/// answers on the swarm is passed over. A dead peer is noticed sooner, by
/// the swarm's idle timeout. Short lags are left alone on purpose: a parent
/// ramping up its own pull, or a brief stall at the edge, must not send the
/// whole site to other parents at once.
pub(crate) const SILENCE: Duration = Duration::from_secs(2);
/// Objects a subscription must have delivered before silence counts (the
/// catalog track is quiet by nature).
pub(crate) const STEADY_AFTER: u64 = 10;
/// A parent whose objects repair has not had to replace for this long has
/// caught up.
pub(crate) const CAUGHT_UP: Duration = Duration::from_secs(1);

/// How often `media` checks each track against the deadline.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(100);
/// What one repair may take: a FETCH from the agent to its edge across the
/// site's WAN link and back, with a group's worth of objects. `media`
/// enforces it (a repair is cut off at its budget, keeping what arrived),
/// and a source waits at most 250 ms for objects it does not hold yet
/// before it answers (the relay's `FETCH_WAIT`).
pub(crate) const FETCH_BUDGET: Duration = Duration::from_millis(500);

/// How long a viewer's reader waits for a group that is missing while a
/// newer one is here (`CacheLimits::gap_wait`), so that a parent sending the
/// newest group first does not cost a viewer a whole group.
///
/// Why this is enough: from the moment a newer group arrives with the one
/// before it missing, the viewer waits at that group's first object
/// (`TrackCache::frontier`), and the lateness `media` reports is measured from
/// the last object held before it, which had already arrived. So the
/// lateness passes the deadline at most `deadline` after the gap opened,
/// and the next check (within [`CHECK_EVERY`]) asks for a FETCH from exactly
/// that place. One repair runs at a time: in the worst case the one still
/// running (begun at an earlier place, and possibly stopped by the source
/// before the missing group) ends first, then ours; each is answered
/// within [`FETCH_BUDGET`]. The group is in the cache before the reader
/// gives up on it, unless the repair source lacks it too.
pub(crate) fn gap_wait(deadline: Duration) -> Duration {
    deadline + CHECK_EVERY + 2 * FETCH_BUDGET
}

/// What `media` sees of one track at a check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Check {
    pub(crate) now: Instant,
    /// How late the object a viewer waits for is, beyond the best delivery
    /// (`None`: the track's objects carry no producer time).
    pub(crate) lateness: Option<Duration>,
    /// Since the parent last sent an object this agent did not hold.
    pub(crate) since_news: Duration,
    /// Objects the parent has delivered on this subscription.
    pub(crate) delivered: u64,
    /// A repair source is connected.
    pub(crate) source: bool,
    /// What the track is subscribed to now.
    pub(crate) parent: Feeding,
    /// The track has ended.
    pub(crate) closed: bool,
}

/// What a track is subscribed to at a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feeding {
    /// A peer: repaired when late, passed over when it stays behind.
    Peer,
    /// The edge (the leader): neither repaired nor passed over.
    Edge,
    /// Nothing: the parent died or was passed over and the next one has not
    /// answered yet. Repaired when late; nobody to pass over.
    Nobody,
}

/// What to do after a check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// FETCH what follows the newest object from the repair source now.
    pub(crate) fetch: bool,
    /// The parent has fallen behind for good: pass it over (said once).
    pub(crate) parent_behind: bool,
}

/// One track's repair state on one subscription.
#[derive(Debug)]
pub(crate) struct Repair {
    deadline: Duration,
    repairing: bool,
    lagging_since: Option<Instant>,
    last_repaired: Option<Instant>,
    reported: bool,
}

impl Repair {
    /// `deadline`: how late the waited-for object may be before repair.
    pub(crate) fn new(deadline: Duration) -> Repair {
        Repair {
            deadline,
            repairing: false,
            lagging_since: None,
            last_repaired: None,
            reported: false,
        }
    }

    pub(crate) fn check(&mut self, c: Check) -> Verdict {
        let steady = c.delivered >= STEADY_AFTER;
        let late = match c.lateness {
            Some(late) => Some(late),
            None if steady => Some(c.since_news),
            None => None,
        };
        let due = late.is_some_and(|l| l > self.deadline);
        let fetch = due && c.source && !self.repairing && !c.closed && c.parent != Feeding::Edge;
        if fetch {
            self.repairing = true;
        }
        if self
            .last_repaired
            .is_some_and(|t| c.now.duration_since(t) > CAUGHT_UP)
        {
            self.lagging_since = None;
            self.last_repaired = None;
        }
        let behind = if c.source {
            self.lagging_since
                .is_some_and(|t| c.now.duration_since(t) > SILENCE)
        } else {
            c.since_news > SILENCE
        };
        let parent_behind =
            c.parent == Feeding::Peer && steady && behind && !self.reported && !c.closed;
        if parent_behind {
            self.reported = true;
        }
        Verdict {
            fetch,
            parent_behind,
        }
    }

    /// The track subscribed on another parent (or lost its parent): its lag
    /// so far was the old parent's. A repair still running goes on.
    pub(crate) fn new_parent(&mut self) {
        self.lagging_since = None;
        self.last_repaired = None;
        self.reported = false;
    }

    /// A repair ended having stored `stored` objects the parent had not
    /// sent. Returns whether to check again at once rather than at the next
    /// tick: a source that had objects may well have more by now (it is
    /// often repairing itself, one hop closer to the edge), and a viewer
    /// should not wait a check interval for each of its answers.
    pub(crate) fn repaired(&mut self, now: Instant, stored: u64) -> bool {
        self.repairing = false;
        if stored > 0 {
            self.lagging_since.get_or_insert(now);
            self.last_repaired = Some(now);
        }
        stored > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_millis(400);

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// A check at `at` ms after `t0`, steady, with a source, on time.
    fn check(t0: Instant, at: u64) -> Check {
        Check {
            now: t0 + ms(at),
            lateness: Some(ms(0)),
            since_news: ms(0),
            delivered: 100,
            source: true,
            parent: Feeding::Peer,
            closed: false,
        }
    }

    /// What happens to a track, step by step.
    enum Step {
        /// A check at this time with these changes; the expected verdict.
        Check(u64, fn(Check) -> Check, Verdict),
        /// A repair ends at this time having stored this many objects.
        Repaired(u64, u64),
        /// The track subscribes on another parent.
        NewParent,
    }

    const NOTHING: Verdict = Verdict {
        fetch: false,
        parent_behind: false,
    };
    const FETCH: Verdict = Verdict {
        fetch: true,
        parent_behind: false,
    };
    const BEHIND: Verdict = Verdict {
        fetch: false,
        parent_behind: true,
    };
    const FETCH_BEHIND: Verdict = Verdict {
        fetch: true,
        parent_behind: true,
    };

    fn same(c: Check) -> Check {
        c
    }
    fn late(c: Check) -> Check {
        Check {
            lateness: Some(ms(500)),
            ..c
        }
    }
    fn exactly_deadline(c: Check) -> Check {
        Check {
            lateness: Some(DEADLINE),
            ..c
        }
    }
    fn late_no_source(c: Check) -> Check {
        Check {
            lateness: Some(ms(500)),
            source: false,
            ..c
        }
    }
    fn silent_no_source(c: Check) -> Check {
        Check {
            lateness: Some(ms(2500)),
            since_news: ms(2100),
            source: false,
            ..c
        }
    }
    fn late_closed(c: Check) -> Check {
        Check {
            lateness: Some(ms(500)),
            closed: true,
            ..c
        }
    }
    fn quiet_catalog(c: Check) -> Check {
        Check {
            lateness: None,
            since_news: ms(3000),
            delivered: 3,
            source: false,
            ..c
        }
    }
    fn quiet_steady_untimed(c: Check) -> Check {
        Check {
            lateness: None,
            since_news: ms(500),
            ..c
        }
    }
    /// Late between parents (the next one is still being reached).
    fn late_no_parent(c: Check) -> Check {
        Check {
            lateness: Some(ms(2500)),
            since_news: ms(2500),
            parent: Feeding::Nobody,
            ..c
        }
    }
    /// The leader, subscribed to the edge, late.
    fn late_from_the_edge(c: Check) -> Check {
        Check {
            lateness: Some(ms(2500)),
            since_news: ms(2500),
            parent: Feeding::Edge,
            ..c
        }
    }
    fn late_unsteady(c: Check) -> Check {
        Check {
            lateness: Some(ms(3000)),
            delivered: 3,
            ..c
        }
    }

    #[test]
    fn repair_and_passing_over_follow_the_table() {
        use Step::*;
        let cases: Vec<(&str, Vec<Step>)> = vec![
            ("on time: nothing", vec![Check(0, same, NOTHING)]),
            (
                "exactly at the deadline: not yet",
                vec![Check(0, exactly_deadline, NOTHING)],
            ),
            ("late: fetch", vec![Check(0, late, FETCH)]),
            (
                "one repair at a time",
                vec![
                    Check(0, late, FETCH),
                    Check(100, late, NOTHING),
                    Repaired(150, 5),
                    Check(200, late, FETCH),
                ],
            ),
            (
                "a repair that found objects: the next one at once, not a tick later",
                vec![
                    Check(0, late, FETCH),
                    Repaired(40, 2),
                    Check(40, late, FETCH),
                    // Nothing found: the next check comes at its tick.
                    Repaired(45, 0),
                ],
            ),
            (
                "late without a source waits",
                vec![Check(0, late_no_source, NOTHING)],
            ),
            (
                "an ended track is not repaired",
                vec![Check(0, late_closed, NOTHING)],
            ),
            (
                "untimed and steady: silence is lateness",
                vec![Check(0, quiet_steady_untimed, FETCH)],
            ),
            (
                "a quiet catalog is never behind",
                vec![
                    Check(0, quiet_catalog, NOTHING),
                    Check(5000, quiet_catalog, NOTHING),
                ],
            ),
            (
                "repairs that keep finding objects for 2 s: behind, said once",
                vec![
                    Check(0, late, FETCH),
                    Repaired(50, 3),
                    Check(500, late, FETCH),
                    Repaired(550, 3),
                    Check(1000, late, FETCH),
                    Repaired(1050, 3),
                    Check(1500, late, FETCH),
                    Repaired(1550, 3),
                    Check(2000, late, FETCH),
                    Repaired(2040, 3),
                    Check(2100, late, FETCH_BEHIND),
                    Repaired(2140, 3),
                    Check(2200, late, FETCH),
                ],
            ),
            (
                "repairs that find nothing: a pause, not a lagging parent",
                vec![
                    Check(0, late, FETCH),
                    Repaired(50, 0),
                    Check(1000, late, FETCH),
                    Repaired(1050, 0),
                    Check(2500, late, FETCH),
                    Repaired(2550, 0),
                    Check(3000, late, FETCH),
                ],
            ),
            (
                "a parent that catches up is forgiven",
                vec![
                    Check(0, late, FETCH),
                    Repaired(50, 3),
                    Check(1000, same, NOTHING),
                    // Over 1 s without a repair finding anything: caught up.
                    Check(1100, same, NOTHING),
                    Check(1500, late, FETCH),
                    Repaired(1550, 3),
                    Check(2000, late, FETCH),
                    Repaired(2050, 3),
                    // Lagging again since 1550 only (not since 50): not
                    // 2 s yet at 3000.
                    Check(3000, late, FETCH),
                ],
            ),
            (
                "without a source: silent for 2 s is behind",
                vec![
                    Check(0, silent_no_source, BEHIND),
                    Check(100, silent_no_source, NOTHING),
                ],
            ),
            (
                "a parent that never became steady is not judged",
                vec![
                    Check(0, late_unsteady, FETCH),
                    Repaired(10, 3),
                    Check(900, late_unsteady, FETCH),
                    Repaired(910, 3),
                    Check(1800, late_unsteady, FETCH),
                    Repaired(1810, 3),
                    // Lagging for 2.49 s, but never steady: repaired, not judged.
                    Check(2500, late_unsteady, FETCH),
                ],
            ),
            (
                "a repair running when the parent goes on; the next waits for it",
                vec![
                    Check(0, late, FETCH),
                    NewParent,
                    Check(100, late_no_parent, NOTHING),
                    Repaired(150, 5),
                    Check(200, late_no_parent, FETCH),
                ],
            ),
            (
                "between parents: repaired, nobody is passed over",
                vec![
                    Check(0, late_no_parent, FETCH),
                    Repaired(50, 3),
                    Check(1000, late_no_parent, FETCH),
                    Repaired(1050, 3),
                    Check(2500, late_no_parent, FETCH),
                    Repaired(2550, 3),
                    Check(3000, late_no_parent, FETCH),
                ],
            ),
            (
                "subscribed to the edge: neither repaired nor passed over",
                vec![
                    Check(0, late_from_the_edge, NOTHING),
                    Check(2500, late_from_the_edge, NOTHING),
                ],
            ),
            (
                "the standby taking the lead: repaired until the edge answers",
                vec![
                    Check(0, late, FETCH),
                    NewParent,
                    Repaired(50, 3),
                    Check(100, late_no_parent, FETCH),
                    Repaired(150, 3),
                    NewParent,
                    Check(200, late_from_the_edge, NOTHING),
                ],
            ),
            (
                "a new parent is judged afresh: 2 s of its own lag",
                vec![
                    Check(0, late, FETCH),
                    Repaired(50, 3),
                    Check(1000, late, FETCH),
                    Repaired(1050, 3),
                    // The old parent lagged since 50; the new one from 1500.
                    NewParent,
                    Check(1500, late, FETCH),
                    Repaired(1550, 3),
                    Check(2500, late, FETCH),
                    Repaired(2550, 3),
                    Check(3500, late, FETCH),
                    Repaired(3550, 3),
                    Check(3600, late, FETCH_BEHIND),
                ],
            ),
            (
                "a parent passed over once may be judged again after a switch",
                vec![
                    Check(0, silent_no_source, BEHIND),
                    NewParent,
                    Check(100, silent_no_source, BEHIND),
                ],
            ),
        ];
        for (name, steps) in cases {
            let t0 = Instant::now();
            let mut r = Repair::new(DEADLINE);
            for (i, step) in steps.into_iter().enumerate() {
                match step {
                    Step::Check(at, change, want) => {
                        let got = r.check(change(check(t0, at)));
                        assert_eq!(got, want, "{name}: step {i} at {at} ms");
                    }
                    Step::Repaired(at, stored) => {
                        let again = r.repaired(t0 + ms(at), stored);
                        assert_eq!(again, stored > 0, "{name}: step {i}: check again at once");
                    }
                    Step::NewParent => r.new_parent(),
                }
            }
        }
    }

    /// The argument of [`gap_wait`], played out: a group goes missing at
    /// `t0` (a newer one came first), the object a viewer waits for grows
    /// late from then on (worst case: exactly as fast as time), `media`
    /// checks every [`CHECK_EVERY`] at any phase, a repair may already be
    /// running, and every repair takes the whole [`FETCH_BUDGET`]. The
    /// repair that brings the group must end before the reader gives up.
    #[test]
    fn a_missing_group_is_repaired_before_the_reader_gives_up_on_it() {
        for deadline in [50, 300, 1_000, 5_000].map(ms) {
            // When a repair already running ends, after t0 (None: none runs).
            for running_until in [None, Some(ms(0)), Some(ms(1)), Some(FETCH_BUDGET)] {
                for phase in [0, 1, 37, 99].map(ms) {
                    let t0 = Instant::now() + ms(10_000);
                    let mut policy = Repair::new(deadline);
                    if running_until.is_some() {
                        let started = t0 - ms(1);
                        let c = Check {
                            now: started,
                            lateness: Some(deadline + ms(1)),
                            ..check(started, 0)
                        };
                        assert!(policy.check(c).fetch);
                    }
                    let mut pending_end = running_until.map(|d| t0 + d);
                    let mut fetched_at = None;
                    for tick in 0..1_000u32 {
                        let now = t0 + phase + CHECK_EVERY * tick;
                        if let Some(end) = pending_end.filter(|end| *end <= now) {
                            let _ = policy.repaired(end, 0);
                            pending_end = None;
                        }
                        let c = Check {
                            now,
                            lateness: Some(now - t0),
                            ..check(now, 0)
                        };
                        if policy.check(c).fetch {
                            fetched_at = Some(now);
                            break;
                        }
                    }
                    let fetched_at = fetched_at.expect("a repair is asked for");
                    let repaired_by = fetched_at + FETCH_BUDGET - t0;
                    assert!(
                        repaired_by <= gap_wait(deadline),
                        "deadline {deadline:?}, running until {running_until:?}, phase {phase:?}: \
                         repaired {repaired_by:?} after the gap, the reader waits {:?}",
                        gap_wait(deadline)
                    );
                }
            }
        }
    }
}

//! Which of a rendition's encoders feeds the broadcast (OPS-2), as a state
//! machine without I/O: it is told what the encoders do (connect, send a tag,
//! disconnect) and the time, and answers what to do with each tag. The
//! packaging around it (`publish.rs`) only carries out the answers.
//!
//! The rules: the first encoder connected is active. Another one stands by
//! until the active one is gone, or has written nothing for longer than the
//! stall time, and then takes over at its next tag if it holds a keyframe to
//! start from. A recovered encoder stands by in turn: switching back would
//! cost viewers a second glitch.

use std::time::{Duration, Instant};

/// An encoder's session id.
pub(crate) type EncoderId = u64;

#[derive(Debug)]
pub(crate) struct Failover {
    stall: Duration,
    /// The encoder whose tags are packaged; none between encoders.
    active: Option<EncoderId>,
    /// When the active encoder's last tag was packaged (or it took over).
    last_write: Instant,
}

/// What to do with an encoder's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Package it: its encoder is active.
    Publish,
    /// Only keep it (the encoder's current GOP, for a take-over).
    StandBy,
    /// Its encoder takes over now: close the open groups, start a packager
    /// after everything packaged so far, replay the encoder's kept GOP.
    TakeOver(Reason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The active encoder disconnected.
    Lost,
    /// The active encoder wrote nothing for this long.
    Stalled(Duration),
}

impl Failover {
    /// A rendition whose first encoder, `first`, has just connected.
    pub(crate) fn new(first: EncoderId, stall: Duration, now: Instant) -> Self {
        Failover {
            stall,
            active: Some(first),
            last_write: now,
        }
    }

    pub(crate) fn is_active(&self, encoder: EncoderId) -> bool {
        self.active == Some(encoder)
    }

    /// An encoder connected. When no other encoder of the rendition is
    /// connected it becomes active at once (true: start a packager after
    /// everything packaged so far); otherwise it stands by.
    pub(crate) fn connected(&mut self, encoder: EncoderId, alone: bool, now: Instant) -> bool {
        if !alone || self.active == Some(encoder) {
            return false;
        }
        self.take_over(encoder, now);
        true
    }

    /// An encoder sent a tag; `ready` says whether it holds what a viewer
    /// can start from (a configuration and a keyframe).
    pub(crate) fn tag(&mut self, encoder: EncoderId, ready: bool, now: Instant) -> Verdict {
        if self.active == Some(encoder) {
            return Verdict::Publish;
        }
        let reason = match self.active {
            None => Reason::Lost,
            Some(_) => {
                let quiet = now.saturating_duration_since(self.last_write);
                if quiet <= self.stall {
                    return Verdict::StandBy;
                }
                Reason::Stalled(quiet)
            }
        };
        if !ready {
            return Verdict::StandBy;
        }
        self.take_over(encoder, now);
        Verdict::TakeOver(reason)
    }

    /// The active encoder's tag was packaged.
    pub(crate) fn wrote(&mut self, now: Instant) {
        self.last_write = now;
    }

    /// An encoder disconnected; true if it was the active one (close the
    /// groups it was writing).
    pub(crate) fn disconnected(&mut self, encoder: EncoderId) -> bool {
        if self.active != Some(encoder) {
            return false;
        }
        self.active = None;
        true
    }

    fn take_over(&mut self, encoder: EncoderId, now: Instant) {
        self.active = Some(encoder);
        self.last_write = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(1);
    const PRIMARY: EncoderId = 1;
    const BACKUP: EncoderId = 2;

    /// What happens, at a time in milliseconds.
    #[derive(Clone, Copy)]
    enum Step {
        /// An encoder's tag, holding a keyframe to start from or not, and
        /// the answer expected.
        Tag(EncoderId, bool, Verdict),
        /// An encoder connects (alone: no other of the rendition is), and
        /// whether it takes over at once.
        Connect(EncoderId, bool, bool),
        /// An encoder leaves, and whether it was active.
        Leave(EncoderId, bool),
    }
    use Step::*;
    use Verdict::*;

    const fn stalled(ms: u64) -> Verdict {
        TakeOver(Reason::Stalled(Duration::from_millis(ms)))
    }

    /// Each case starts with PRIMARY connected and active at t = 0, BACKUP
    /// connected beside it.
    const CASES: &[(&str, &[(u64, Step)])] = &[
        (
            "the active encoder publishes, the standby keeps its GOP",
            &[
                (0, Tag(PRIMARY, true, Publish)),
                (10, Tag(BACKUP, true, StandBy)),
            ],
        ),
        (
            "a pause of exactly the stall time is not a stall",
            &[
                (0, Tag(PRIMARY, true, Publish)),
                (1_000, Tag(BACKUP, true, StandBy)),
            ],
        ),
        (
            "a stall hands over to a standby holding a keyframe",
            &[
                (0, Tag(PRIMARY, true, Publish)),
                (1_001, Tag(BACKUP, true, stalled(1_001))),
                (1_040, Tag(BACKUP, true, Publish)),
            ],
        ),
        (
            "a standby without a keyframe waits for one, however long the stall",
            &[
                (0, Tag(PRIMARY, true, Publish)),
                (1_500, Tag(BACKUP, false, StandBy)),
                (4_000, Tag(BACKUP, false, StandBy)),
                (4_033, Tag(BACKUP, true, stalled(4_033))),
            ],
        ),
        (
            "a recovered encoder stands by: no switching back",
            &[
                (0, Tag(PRIMARY, true, Publish)),
                (2_000, Tag(BACKUP, true, stalled(2_000))),
                (2_010, Tag(PRIMARY, true, StandBy)),
                (2_500, Tag(BACKUP, true, Publish)),
                (3_000, Tag(PRIMARY, true, StandBy)),
            ],
        ),
        (
            "the recovered encoder takes over again when the other stalls in turn",
            &[
                (2_000, Tag(BACKUP, true, stalled(2_000))),
                (2_100, Tag(BACKUP, true, Publish)),
                (3_101, Tag(PRIMARY, true, stalled(1_001))),
            ],
        ),
        (
            "a disconnect hands over at the standby's next tag, without waiting for a stall",
            &[
                (0, Tag(PRIMARY, true, Publish)),
                (5, Leave(PRIMARY, true)),
                (10, Tag(BACKUP, true, TakeOver(Reason::Lost))),
            ],
        ),
        (
            "after a disconnect, a standby without a keyframe waits for one",
            &[
                (5, Leave(PRIMARY, true)),
                (10, Tag(BACKUP, false, StandBy)),
                (900, Tag(BACKUP, true, TakeOver(Reason::Lost))),
            ],
        ),
        (
            "the standby leaving changes nothing for the active one",
            &[
                (5, Leave(BACKUP, false)),
                (3_000, Tag(PRIMARY, true, Publish)),
            ],
        ),
        (
            "an encoder connecting alone after both left takes over at once",
            &[
                (5, Leave(PRIMARY, true)),
                (6, Leave(BACKUP, false)),
                (7_000, Connect(BACKUP, true, true)),
                (7_001, Tag(BACKUP, false, Publish)),
            ],
        ),
        (
            "the same encoder reconnecting alone keeps its place",
            &[
                (5, Connect(PRIMARY, true, false)),
                (6, Tag(PRIMARY, true, Publish)),
            ],
        ),
        (
            "an encoder joining a live rendition stands by",
            &[
                (5, Connect(3, false, false)),
                (6_000, Tag(PRIMARY, true, Publish)),
            ],
        ),
    ];

    #[test]
    fn the_failover_table() {
        let t0 = Instant::now();
        for (name, steps) in CASES {
            let mut f = Failover::new(PRIMARY, STALL, t0);
            for (i, (ms, step)) in steps.iter().enumerate() {
                let now = t0 + Duration::from_millis(*ms);
                let what = format!("{name}: step {i}");
                match *step {
                    Tag(encoder, ready, want) => {
                        let got = f.tag(encoder, ready, now);
                        assert_eq!(got, want, "{what}");
                        if matches!(got, Publish | TakeOver(_)) {
                            f.wrote(now);
                        }
                        assert_eq!(f.is_active(encoder), got != StandBy, "{what}");
                    }
                    Connect(encoder, alone, want) => {
                        assert_eq!(f.connected(encoder, alone, now), want, "{what}")
                    }
                    Leave(encoder, want) => assert_eq!(f.disconnected(encoder), want, "{what}"),
                }
            }
        }
    }
}

//! Which upstream serves a broadcast, as decisions without I/O. An edge
//! may have several upstreams (origins, parent edges) announcing the same
//! broadcast; it pulls each track from one of them, the first in its
//! configuration that offers it (the operator lists them cheapest first),
//! and moves when that one goes away or a better one comes back. The
//! tokio code in [`super`] tells it what the links saw and does what it
//! says; the tracks follow with MoQT AbsoluteStart ([`super::Lifecycle`]).
//!
//! A broadcast whose last offer ended upstream (the upstream said so) ends
//! at once. One whose last link was lost is kept for [`ORPHAN_GRACE`]:
//! viewers stay attached while the link is dialled again, and the tracks
//! continue where they stopped if it comes back.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// An upstream link, by its place in the configuration (lower: preferred).
pub type Link = usize;

/// How long a broadcast outlives the loss of every link that offered it.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(5);

/// What a link saw of one broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfferEvent {
    /// The upstream announced it.
    Announced(Link),
    /// The upstream said it ended there.
    Ended(Link),
    /// The link's session was lost (the upstream may be down or restarting).
    Lost(Link),
}

/// What to do about the broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Pull its tracks from this link from now on.
    Serve(Link),
    /// Nothing changes.
    Keep,
    /// No link offers it: keep it for its viewers and wait.
    Orphaned,
    /// It is over here: remove it and close its tracks.
    End,
}

/// The offers of one broadcast.
#[derive(Debug, Default)]
pub struct Offers {
    present: BTreeSet<Link>,
    serving: Option<Link>,
    orphaned_at: Option<Instant>,
}

impl Offers {
    pub fn new() -> Self {
        Self::default()
    }

    /// The link the tracks are pulled from now.
    pub fn serving(&self) -> Option<Link> {
        self.serving
    }

    pub fn on(&mut self, event: OfferEvent, now: Instant) -> Decision {
        let ended = match event {
            OfferEvent::Announced(link) => {
                self.present.insert(link);
                false
            }
            OfferEvent::Ended(link) => {
                self.present.remove(&link);
                true
            }
            OfferEvent::Lost(link) => {
                self.present.remove(&link);
                false
            }
        };
        match self.present.first().copied() {
            Some(best) => {
                self.orphaned_at = None;
                if self.serving == Some(best) {
                    Decision::Keep
                } else {
                    self.serving = Some(best);
                    Decision::Serve(best)
                }
            }
            None if ended => {
                self.serving = None;
                Decision::End
            }
            None => {
                self.serving = None;
                self.orphaned_at.get_or_insert(now);
                Decision::Orphaned
            }
        }
    }

    /// Time passed: an orphan whose grace ran out ends.
    pub fn tick(&self, now: Instant) -> Decision {
        match self.orphaned_at {
            Some(at) if now.duration_since(at) >= ORPHAN_GRACE => Decision::End,
            Some(_) => Decision::Orphaned,
            None => Decision::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;
    use OfferEvent::*;

    #[test]
    fn the_first_configured_link_serves_and_a_loss_moves_to_the_next() {
        let s = |secs: f64| Duration::from_secs_f64(secs);
        #[rustfmt::skip]
        let table: &[(&str, &[(f64, OfferEvent)], Decision, Option<Link>)] = &[
            ("one link", &[(0.0, Announced(0))], Serve(0), Some(0)),
            ("a second, worse link changes nothing", &[(0.0, Announced(0)), (0.1, Announced(1))], Keep, Some(0)),
            ("a better link takes over", &[(0.0, Announced(1)), (0.1, Announced(0))], Serve(0), Some(0)),
            ("the serving link lost: the next", &[(0.0, Announced(0)), (0.0, Announced(2)), (1.0, Lost(0))], Serve(2), Some(2)),
            ("a worse link lost: nothing", &[(0.0, Announced(0)), (0.0, Announced(1)), (1.0, Lost(1))], Keep, Some(0)),
            ("it comes back: served from it again", &[(0.0, Announced(0)), (0.0, Announced(1)), (1.0, Lost(0)), (2.0, Announced(0))], Serve(0), Some(0)),
            ("ended where served, still offered elsewhere", &[(0.0, Announced(0)), (0.0, Announced(1)), (1.0, Ended(0))], Serve(1), Some(1)),
            ("ended at the last offer: the end", &[(0.0, Announced(0)), (0.0, Announced(1)), (1.0, Lost(0)), (2.0, Ended(1))], End, None),
            ("the last link lost: orphaned", &[(0.0, Announced(0)), (1.0, Lost(0))], Orphaned, None),
            ("an orphan's link returns", &[(0.0, Announced(0)), (1.0, Lost(0)), (3.0, Announced(0))], Serve(0), Some(0)),
            ("an orphan is found elsewhere", &[(0.0, Announced(0)), (1.0, Lost(0)), (3.0, Announced(1))], Serve(1), Some(1)),
            ("a second loss keeps the first orphan time", &[(0.0, Announced(0)), (0.0, Announced(1)), (1.0, Lost(0)), (1.5, Lost(1)), (2.0, Lost(1))], Orphaned, None),
            ("a link re-announcing what it serves", &[(0.0, Announced(0)), (1.0, Announced(0))], Keep, Some(0)),
        ];
        for (case, events, last, serving) in table {
            let t0 = Instant::now();
            let mut offers = Offers::new();
            let mut decision = Keep;
            for (at, event) in events.iter() {
                decision = offers.on(*event, t0 + s(*at));
            }
            assert_eq!(decision, *last, "{case}");
            assert_eq!(offers.serving(), *serving, "{case}");
        }
    }

    #[test]
    fn an_orphan_ends_after_its_grace_unless_found() {
        let t0 = Instant::now();
        let mut offers = Offers::new();
        assert_eq!(offers.tick(t0), Keep);
        offers.on(Announced(0), t0);
        assert_eq!(offers.tick(t0 + ORPHAN_GRACE * 2), Keep);
        let lost = t0 + Duration::from_secs(1);
        assert_eq!(offers.on(Lost(0), lost), Orphaned);
        assert_eq!(offers.tick(lost + ORPHAN_GRACE / 2), Orphaned);
        // A later loss of another link does not restart the clock.
        assert_eq!(offers.on(Lost(3), lost + ORPHAN_GRACE / 2), Orphaned);
        assert_eq!(offers.tick(lost + ORPHAN_GRACE), End);
        // Found again before the end: no longer an orphan.
        assert_eq!(offers.on(Announced(1), lost + ORPHAN_GRACE), Serve(1));
        assert_eq!(offers.tick(lost + ORPHAN_GRACE * 3), Keep);
    }
}

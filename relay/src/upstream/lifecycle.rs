//! The life of one track's upstream subscription, as decisions without
//! I/O. The tokio code around it (an edge's pull in `upstream`, an agent's
//! in `strom_peer_agent::media`) tells it what happened and does what it
//! says:
//!
//! - where a SUBSCRIBE starts: at the live edge the first time; after a
//!   change of upstream, at the object a viewer reading in order waits for
//!   (MoQT AbsoluteStart), so the switch loses nothing;
//! - how many groups of history to FETCH with the first subscription;
//! - when to let go of a track nobody asks for (idle teardown);
//! - what follows the end of a subscription: subscribe again on the next
//!   session (an edge's next upstream, an agent's next parent), wait for
//!   one, or retire the track — refusing the viewers
//!   still waiting when the upstream that refused has the last word;
//! - how long to wait before dialling a lost upstream again.

use std::time::Duration;

/// A place in a track: group id and object id.
pub type Location = (u64, u64);

/// Groups of history an edge fetches with a track's first subscription, so
/// that a cold edge can serve HLS at once.
pub const HISTORY_GROUPS: u64 = 3;

/// How long an agent waits for a new session after a subscription failed
/// on the current one before it tries the current one again.
pub const RETRY_AFTER: Duration = Duration::from_millis(300);

/// How a relay pulls its tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long a track stays subscribed after its last request.
    pub idle: Duration,
    /// Groups of history fetched with the first subscription.
    pub history: u64,
}

impl Policy {
    /// An edge: history for a cold cache; follows its broadcast from
    /// upstream to upstream ([`super::offers`]).
    pub fn edge(idle: Duration) -> Self {
        Self {
            idle,
            history: HISTORY_GROUPS,
        }
    }

    /// An agent: no history (on a thin WAN a burst of old groups delays
    /// the live objects queued behind it); follows its parent.
    pub fn agent(idle: Duration) -> Self {
        Self { idle, history: 0 }
    }
}

/// Who wants a track now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    /// Readers attached to the track's cache.
    pub readers: usize,
    /// Time since a request last touched the track.
    pub since_request: Duration,
}

/// The SUBSCRIBE to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Where the subscription starts; `None`: at the newest group.
    pub start: Option<Location>,
    /// Groups of history to FETCH before where it starts (0: none).
    pub history: u64,
}

/// How a subscription ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The upstream refused it or closed it, or the session broke.
    Closed,
    /// The relay moved to another upstream session.
    Switched,
    /// The upstream ended the track cleanly: it is over there.
    Finished,
}

/// What the pull does after a subscription ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Subscribe on the current session at once.
    Resubscribe,
    /// Wait up to this long for another session, then subscribe again.
    Wait(Duration),
    /// Give the track up. `refuse`: viewers still waiting for the
    /// upstream's answer get a refusal instead of an empty track.
    Retire { refuse: bool },
}

/// One track's pull: its subscriptions, one after another.
#[derive(Debug)]
pub struct Lifecycle {
    policy: Policy,
    subscriptions: u32,
}

impl Lifecycle {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            subscriptions: 0,
        }
    }

    /// The next SUBSCRIBE. `frontier` is where a viewer reading in order
    /// waits now (the object after the newest held), if anything is held.
    pub fn subscribe(&mut self, frontier: Option<Location>) -> Subscribe {
        self.subscriptions += 1;
        if self.subscriptions == 1 {
            Subscribe {
                start: None,
                history: self.policy.history,
            }
        } else {
            Subscribe {
                start: frontier,
                history: 0,
            }
        }
    }

    /// Whether the track is still wanted; when not, the pull unsubscribes
    /// and retires it.
    pub fn wanted(&self, demand: Demand) -> bool {
        demand.readers > 0 || demand.since_request < self.policy.idle
    }

    /// A subscription ended. `authority`: the upstream that ended it has
    /// the last word on the track (an origin, or an agent's edge; a peer's
    /// refusal is not). `answered`: viewers already had an answer (the
    /// upstream accepted a subscription once).
    pub fn ended(&mut self, how: Ending, authority: bool, answered: bool) -> After {
        match how {
            Ending::Finished => After::Retire { refuse: !answered },
            Ending::Switched => After::Resubscribe,
            Ending::Closed if self.subscriptions <= 1 && authority && !answered => {
                After::Retire { refuse: true }
            }
            Ending::Closed => After::Wait(RETRY_AFTER),
        }
    }
}

/// When to dial a lost upstream again: 250 ms after the first loss,
/// doubling up to 5 s while sessions keep failing; back to 250 ms once a
/// session held for 10 s.
#[derive(Debug)]
pub struct Redial {
    next: Duration,
}

impl Redial {
    pub const FIRST: Duration = Duration::from_millis(250);
    pub const LONGEST: Duration = Duration::from_secs(5);
    pub const HELD: Duration = Duration::from_secs(10);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// A session that lasted `lasted` ended: how long to wait before dialling.
    pub fn after(&mut self, lasted: Duration) -> Duration {
        if lasted > Self::HELD {
            self.next = Self::FIRST;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(Self::LONGEST);
        wait
    }
}

impl Default for Redial {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(5);

    /// A subscription that starts at `start` with `history` groups before it.
    fn at(start: Option<Location>, history: u64) -> Subscribe {
        Subscribe { start, history }
    }

    #[test]
    fn where_each_subscription_starts() {
        let (edge, agent) = (Policy::edge(IDLE), Policy::agent(IDLE));
        // (policy, frontiers offered one subscription after another, expected)
        #[rustfmt::skip]
        let cases: &[(Policy, &[Option<Location>], &[Subscribe])] = &[
            (edge, &[None], &[at(None, 3)]),
            // An edge that moved to another upstream: where its viewers wait.
            (edge, &[None, Some((7, 4))], &[at(None, 3), at(Some((7, 4)), 0)]),
            // The first subscription starts live even when something is
            // held: an edge's cache is fresh, an agent's starts empty.
            (agent, &[Some((7, 4))], &[at(None, 0)]),
            // After a switch: exactly where a viewer waits, no history.
            (agent, &[None, Some((7, 4)), Some((9, 0))], &[at(None, 0), at(Some((7, 4)), 0), at(Some((9, 0)), 0)]),
            // Nothing held yet when the parent changed: start live.
            (agent, &[None, None], &[at(None, 0), at(None, 0)]),
        ];
        for (policy, frontiers, expected) in cases {
            let mut life = Lifecycle::new(*policy);
            let got: Vec<Subscribe> = frontiers.iter().map(|f| life.subscribe(*f)).collect();
            assert_eq!(&got, expected, "{policy:?} {frontiers:?}");
        }
    }

    #[test]
    fn a_track_is_let_go_only_when_nobody_reads_or_asked_within_idle() {
        let life = Lifecycle::new(Policy::edge(IDLE));
        let cases = [
            (1, Duration::from_secs(3600), true),
            (0, Duration::ZERO, true),
            (0, IDLE - Duration::from_millis(1), true),
            (0, IDLE, false),
            (0, Duration::from_secs(3600), false),
        ];
        for (readers, since_request, wanted) in cases {
            let demand = Demand {
                readers,
                since_request,
            };
            assert_eq!(life.wanted(demand), wanted, "{demand:?}");
        }
    }

    #[test]
    fn what_follows_the_end_of_a_subscription() {
        use After::*;
        use Ending::*;
        let (edge, agent) = (Policy::edge(IDLE), Policy::agent(IDLE));
        // (policy, subscriptions sent, how, authority, answered, expected)
        #[rustfmt::skip]
        let cases = [
            // An edge whose upstream refuses the first subscription:
            // viewers still waiting are refused.
            (edge, 1, Closed, true, false, Retire { refuse: true }),
            // A broken subscription: the track stays and follows the
            // broadcast to the next upstream (or the same one again).
            (edge, 1, Closed, true, true, Wait(RETRY_AFTER)),
            (edge, 2, Closed, true, false, Wait(RETRY_AFTER)),
            (edge, 1, Switched, true, true, Resubscribe),
            // The upstream ended the track: it is over, for both.
            (edge, 1, Finished, true, true, Retire { refuse: false }),
            (edge, 3, Finished, true, false, Retire { refuse: true }),
            (agent, 2, Finished, false, true, Retire { refuse: false }),
            // An agent whose edge refuses the first subscription: the
            // edge has the last word (the track does not exist, or the
            // viewer may not see it); waiting viewers are told at once.
            (agent, 1, Closed, true, false, Retire { refuse: true }),
            // A peer's refusal is not the last word: wait for the next
            // parent or try again.
            (agent, 1, Closed, false, false, Wait(RETRY_AFTER)),
            // Viewers already had an answer: keep the track, try again.
            (agent, 1, Closed, true, true, Wait(RETRY_AFTER)),
            // Later subscriptions (after a switch) never refuse viewers.
            (agent, 2, Closed, true, false, Wait(RETRY_AFTER)),
            (agent, 3, Closed, true, true, Wait(RETRY_AFTER)),
            // A switch subscribes on the new session at once.
            (agent, 1, Switched, false, true, Resubscribe),
            (agent, 1, Switched, true, false, Resubscribe),
            (agent, 4, Switched, false, false, Resubscribe),
        ];
        for (policy, sent, how, authority, answered, expected) in cases {
            let mut life = Lifecycle::new(policy);
            for _ in 0..sent {
                life.subscribe(None);
            }
            assert_eq!(
                life.ended(how, authority, answered),
                expected,
                "{policy:?} after {sent} subscriptions: {how:?}, authority {authority}, answered {answered}"
            );
        }
    }

    #[test]
    fn redialling_backs_off_and_recovers_after_a_held_session() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        // (how long each session lasted, expected wait before the next dial)
        let steps = [
            (ms(20), ms(250)),
            (ms(20), ms(500)),
            (ms(20), s(1)),
            (ms(20), s(2)),
            (ms(20), s(4)),
            (ms(20), s(5)),
            (ms(20), s(5)),
            // 10 s is not yet "held".
            (s(10), s(5)),
            (s(11), ms(250)),
            (ms(20), ms(500)),
            (s(3600), ms(250)),
        ];
        let mut redial = Redial::new();
        for (i, (lasted, wait)) in steps.into_iter().enumerate() {
            assert_eq!(
                redial.after(lasted),
                wait,
                "step {i}: session lasted {lasted:?}"
            );
        }
    }
}

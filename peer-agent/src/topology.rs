//! Who pulls from whom inside a site (sans-IO).
//!
//! Every agent orders the site's admitted agents (itself included) by
//! `SHA-256(peer id)`. The first pulls from the edge (the leader); the one at
//! position `i > 0` pulls from position `(i - 1) / fanout`: a tree whose
//! parents always come earlier in the order, so views that differ by a few
//! members (an agent not yet admitted everywhere, a peer suspected only
//! here) can never form a cycle. The second in the order is the standby: it
//! is a child of the leader and takes its place the moment the leader drops
//! out of membership. Peers this agent suspects (silent, refused) are left
//! out of its own view for a while.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Where an agent takes a broadcast from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Parent<P> {
    Edge,
    Peer(P),
}

impl<P: std::fmt::Display> std::fmt::Display for Parent<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Parent::Edge => f.write_str("edge"),
            Parent::Peer(p) => p.fmt(f),
        }
    }
}

/// An agent's place in the site's order: lower pulls earlier.
pub(crate) fn rank(peer_id: &[u8]) -> [u8; 32] {
    Sha256::digest(peer_id).into()
}

/// Where an agent pulls from, and where it repairs from when its parent
/// falls behind (P2P-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place<P> {
    pub parent: Parent<P>,
    /// `None` only where no site is formed (peer-to-peer off).
    pub repair: Option<Parent<P>>,
}

/// This agent's parent and repair source in the site's order.
///
/// Only the leader and the standby repair from the edge, so a site whose
/// leader stalls costs its WAN at most one more copy, never one per agent:
/// the leader's other children repair from the standby, everyone deeper in
/// the tree from the leader (which holds the newest objects of the site).
/// The standby and the leader share their repair source on purpose: when
/// the leader goes, the standby takes its place with its repair session
/// to the edge still open, and repairs from it while its own subscription
/// to the edge is being set up. (A leader subscribed to the edge does not
/// repair from it: on a congested WAN that would only double the load.)
pub(crate) fn place<P: Clone + Ord>(
    me: &P,
    members: &BTreeSet<P>,
    rank_of: impl Fn(&P) -> [u8; 32],
    fanout: usize,
) -> Place<P> {
    let mut order: Vec<(&P, [u8; 32])> = members
        .iter()
        .filter(|p| *p != me)
        .chain(std::iter::once(me))
        .map(|p| (p, rank_of(p)))
        .collect();
    order.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    let position = order
        .iter()
        .position(|(p, _)| *p == me)
        .expect("me is in the order");
    if position == 0 {
        return Place {
            parent: Parent::Edge,
            repair: Some(Parent::Edge),
        };
    }
    let up = (position - 1) / fanout.max(1);
    let repair = match (up, position) {
        (0, 1) => Parent::Edge,
        (0, _) => Parent::Peer(order[1].0.clone()),
        _ => Parent::Peer(order[0].0.clone()),
    };
    Place {
        parent: Parent::Peer(order[up].0.clone()),
        repair: Some(repair),
    }
}

/// This agent's place while it suspects some peers: its parent from its
/// own view (the suspects left out), its repair source from the site's
/// order, so that the standby stays the one agent repairing from the edge
/// after this agent passed over a lagging leader. Never the parent itself,
/// though: once a child has passed over the leader its parent is the
/// standby, and repairing from the parent only races the subscription for
/// the same objects, which would count as the parent lagging and pass over
/// the freshest peer of the site too. Such a child has no repair source;
/// its parent repairs from the edge for it.
pub(crate) fn place_suspecting<P: Clone + Ord>(
    me: &P,
    members: &BTreeSet<P>,
    suspected: impl Fn(&P) -> bool,
    rank_of: impl Fn(&P) -> [u8; 32],
    fanout: usize,
) -> Place<P> {
    let view: BTreeSet<P> = members.iter().filter(|p| !suspected(p)).cloned().collect();
    let mut chosen = place(me, &view, &rank_of, fanout);
    chosen.repair = place(me, members, &rank_of, fanout).repair;
    if matches!(chosen.parent, Parent::Peer(_)) && chosen.repair.as_ref() == Some(&chosen.parent) {
        chosen.repair = None;
    }
    chosen
}

/// Peers suspected locally (silent or misbehaving), each until a deadline.
#[derive(Debug)]
pub(crate) struct Suspicions<P> {
    until: HashMap<P, Instant>,
}

impl<P> Default for Suspicions<P> {
    fn default() -> Self {
        Self {
            until: HashMap::new(),
        }
    }
}

impl<P: Clone + Eq + std::hash::Hash> Suspicions<P> {
    pub(crate) fn suspect(&mut self, peer: P, for_: Duration, now: Instant) {
        let end = now + for_;
        let entry = self.until.entry(peer).or_insert(end);
        if *entry < end {
            *entry = end;
        }
    }

    pub(crate) fn is_suspected(&self, peer: &P, now: Instant) -> bool {
        self.until.get(peer).is_some_and(|t| *t > now)
    }

    /// Forgets expired suspicions; true if any expired.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let before = self.until.len();
        self.until.retain(|_, t| *t > now);
        self.until.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The parent of `me` among `members` (admitted peers, not including `me`).
    /// `fanout` ≥ 1 is the most children one agent feeds.
    fn parent<P: Clone + Ord>(
        me: &P,
        members: &BTreeSet<P>,
        rank_of: impl Fn(&P) -> [u8; 32],
        fanout: usize,
    ) -> Parent<P> {
        place(me, members, rank_of, fanout).parent
    }

    fn r(p: &u32) -> [u8; 32] {
        rank(&p.to_be_bytes())
    }

    fn ordered(ids: &[u32]) -> Vec<u32> {
        let mut v = ids.to_vec();
        v.sort_by_key(r);
        v
    }

    #[test]
    fn the_first_in_order_pulls_from_the_edge_and_the_rest_from_it() {
        let ids: Vec<u32> = (1..=10).collect();
        let order = ordered(&ids);
        let members: BTreeSet<u32> = ids.iter().copied().collect();
        assert_eq!(parent(&order[0], &members, r, 16), Parent::Edge);
        for p in &order[1..] {
            assert_eq!(parent(p, &members, r, 16), Parent::Peer(order[0]));
        }
        // The standby takes over once the leader leaves.
        let without_leader: BTreeSet<u32> =
            members.iter().copied().filter(|p| *p != order[0]).collect();
        assert_eq!(parent(&order[1], &without_leader, r, 16), Parent::Edge);
        assert_eq!(
            parent(&order[2], &without_leader, r, 16),
            Parent::Peer(order[1])
        );
    }

    #[test]
    fn fanout_builds_a_tree() {
        let ids: Vec<u32> = (1..=7).collect();
        let order = ordered(&ids);
        let members: BTreeSet<u32> = ids.iter().copied().collect();
        let parents: Vec<Parent<u32>> = order.iter().map(|p| parent(p, &members, r, 2)).collect();
        assert_eq!(parents[0], Parent::Edge);
        assert_eq!(parents[1], Parent::Peer(order[0]));
        assert_eq!(parents[2], Parent::Peer(order[0]));
        assert_eq!(parents[3], Parent::Peer(order[1]));
        assert_eq!(parents[4], Parent::Peer(order[1]));
        assert_eq!(parents[5], Parent::Peer(order[2]));
        assert_eq!(parents[6], Parent::Peer(order[2]));
    }

    #[test]
    fn only_the_leader_and_the_standby_repair_from_the_edge() {
        let ids: Vec<u32> = (1..=7).collect();
        let order = ordered(&ids);
        let members: BTreeSet<u32> = ids.iter().copied().collect();
        let places: Vec<Place<u32>> = order.iter().map(|p| place(p, &members, r, 2)).collect();
        assert_eq!(places[0].repair, Some(Parent::Edge), "the leader");
        assert_eq!(places[1].repair, Some(Parent::Edge), "the standby");
        assert_eq!(places[2].repair, Some(Parent::Peer(order[1])));
        for p in &places[3..] {
            assert_eq!(p.repair, Some(Parent::Peer(order[0])), "deeper: the leader");
        }
        for (i, p) in places.iter().enumerate() {
            if let Some(Parent::Peer(from)) = &p.repair {
                assert_ne!(
                    Parent::Peer(*from),
                    p.parent,
                    "never the parent itself ({i})"
                );
                assert_ne!(*from, order[i]);
            }
        }
        // A site of two: the standby repairs from the edge.
        let two: BTreeSet<u32> = order[..2].iter().copied().collect();
        assert_eq!(place(&order[1], &two, r, 16).repair, Some(Parent::Edge));
        // The leader goes: the standby's repair source stays where it was.
        let without_leader: BTreeSet<u32> = order[1..].iter().copied().collect();
        assert_eq!(
            place(&order[1], &without_leader, r, 2),
            Place {
                parent: Parent::Edge,
                repair: places[1].repair.clone()
            }
        );
    }

    #[test]
    fn a_child_that_passed_over_the_leader_does_not_repair_from_its_new_parent() {
        let ids: Vec<u32> = (1..=7).collect();
        let order = ordered(&ids);
        let members: BTreeSet<u32> = ids.iter().copied().collect();
        let me = order[3];
        // Suspecting nobody: as `place`.
        assert_eq!(
            place_suspecting(&me, &members, |_| false, r, 16),
            place(&me, &members, r, 16)
        );
        // The leader suspected: the standby feeds it, nobody repairs it.
        assert_eq!(
            place_suspecting(&me, &members, |p| *p == order[0], r, 16),
            Place {
                parent: Parent::Peer(order[1]),
                repair: None
            }
        );
        // The standby suspected: the leader still feeds it, and the standby
        // stays its repair source (the site's order, not its suspicions).
        assert_eq!(
            place_suspecting(&me, &members, |p| *p == order[1], r, 16),
            Place {
                parent: Parent::Peer(order[0]),
                repair: Some(Parent::Peer(order[1]))
            }
        );
        // The standby itself, suspecting the leader, pulls from the edge and
        // keeps repairing from it.
        assert_eq!(
            place_suspecting(&order[1], &members, |p| *p == order[0], r, 16),
            Place {
                parent: Parent::Edge,
                repair: Some(Parent::Edge)
            }
        );
    }

    #[test]
    fn suspicions_expire() {
        let mut s = Suspicions::default();
        let t0 = Instant::now();
        s.suspect(7u32, Duration::from_secs(5), t0);
        assert!(s.is_suspected(&7, t0 + Duration::from_secs(4)));
        assert!(!s.expire(t0 + Duration::from_secs(4)));
        assert!(s.expire(t0 + Duration::from_secs(6)));
        assert!(!s.is_suspected(&7, t0 + Duration::from_secs(6)));
    }

    proptest! {
        /// Whatever each agent's view (the true members minus some it has
        /// not admitted or suspects), following parents never loops: every
        /// chain ends at an agent that pulls from the edge.
        #[test]
        fn differing_views_never_form_a_cycle(
            n in 2usize..40,
            fanout in 1usize..6,
            hidden in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 40), 40),
        ) {
            let ids: Vec<u32> = (0..n as u32).collect();
            let view = |me: u32| -> BTreeSet<u32> {
                ids.iter().copied().filter(|p| *p == me || !hidden[me as usize][*p as usize]).collect()
            };
            for start in &ids {
                let mut at = *start;
                let mut steps = 0;
                loop {
                    match parent(&at, &view(at), r, fanout) {
                        Parent::Edge => break,
                        Parent::Peer(p) => {
                            prop_assert!(r(&p) < r(&at), "a parent always ranks earlier");
                            at = p;
                        }
                    }
                    steps += 1;
                    prop_assert!(steps <= n);
                }
            }
        }
    }
}

//! Choosing this agent's parent and repair source: membership, suspicions
//! and the site's mode in, the upstream targets out (the placement itself is
//! `topology`'s, without I/O).

use super::*;

/// The parent-choice duty, with what it needs named.
pub(crate) struct ParentChoice {
    pub me: PeerId,
    pub fanout: usize,
    pub members: watch::Receiver<Members>,
    pub registration: watch::Receiver<Option<Registration>>,
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
    pub commands: mpsc::UnboundedSender<Command>,
    pub targets: watch::Sender<Option<Target>>,
    pub repair_targets: watch::Sender<Option<RepairTarget>>,
    pub edge: strom_relay::upstream::UpstreamConfig,
    pub counters: Arc<AgentCounters>,
}

impl ParentChoice {
    /// Turns membership, suspicions and the site's mode into the upstream target.
    pub(crate) async fn run(self) {
        let ParentChoice {
            me,
            fanout,
            mut members,
            mut registration,
            mut events,
            commands,
            targets,
            repair_targets,
            edge,
            counters,
        } = self;
        let mut suspicions: Suspicions<PeerId> = Suspicions::default();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let now = Instant::now();
            suspicions.expire(now);
            let (target, repair) = {
                let reg = registration.borrow();
                let current = members.borrow();
                let chosen = reg.as_ref().map(|reg| {
                    let place = if reg.p2p {
                        let all: BTreeSet<PeerId> = current.keys().copied().collect();
                        topology::place_suspecting(
                            &me,
                            &all,
                            |p| suspicions.is_suspected(p, now),
                            |p| topology::rank(&p.to_bytes()),
                            fanout,
                        )
                    } else {
                        topology::Place {
                            parent: Parent::Edge,
                            repair: None,
                        }
                    };
                    let at = |parent: &Parent<PeerId>| -> (url::Url, tls::Trust) {
                        match parent {
                            Parent::Peer(p) => {
                                let m = &current[p];
                                (
                                    format!("moqt://{}", m.moqt)
                                        .parse()
                                        .expect("socket address URL"),
                                    tls::Trust::Pinned(m.cert_sha256),
                                )
                            }
                            Parent::Edge => (edge.url.clone(), edge.trust.clone()),
                        }
                    };
                    let (url, trust) = at(&place.parent);
                    let target = Target {
                        parent: place.parent.clone(),
                        url,
                        trust,
                        token: reg.hello.ticket.clone(),
                        prefix: vec![reg.tenant.clone()],
                    };
                    let repair = place.repair.map(|from| {
                        let (url, trust) = at(&from);
                        RepairTarget {
                            from,
                            url,
                            trust,
                            token: reg.hello.ticket.clone(),
                        }
                    });
                    (target, repair)
                });
                match chosen {
                    Some((t, r)) => (Some(t), r),
                    None => (None, None),
                }
            };
            let repair_moved = repair_targets.borrow().as_ref().map(|r| (&r.from, &r.url))
                != repair.as_ref().map(|r| (&r.from, &r.url));
            if repair_moved {
                repair_targets.send_replace(repair);
            }
            // A renewed ticket alone does not move anyone (sessions keep theirs).
            let moved = targets.borrow().as_ref().map(|t| (&t.parent, &t.url))
                != target.as_ref().map(|t| (&t.parent, &t.url));
            if moved {
                if let Some(t) = &target {
                    tracing::info!(parent = %t.parent, members = members.borrow().len(), "upstream chosen");
                }
                targets.send_replace(target);
            }
            tokio::select! {
                r = members.changed() => if r.is_err() { return },
                r = registration.changed() => if r.is_err() { return },
                Some(event) = events.recv() => match event {
                    PeerEvent::Silent(p) => {
                        counters.stalls.fetch_add(1, Ordering::Relaxed);
                        suspicions.suspect(p, SUSPECT_FOR, Instant::now());
                    }
                    PeerEvent::Tampered(p) => {
                        suspicions.suspect(p, Duration::from_secs(365 * 24 * 3600), Instant::now());
                        let _ = commands.send(Command::Block(p, "sent media whose signature does not hold"));
                    }
                },
                _ = tick.tick() => {}
            }
        }
    }
}

//! Which control-plane replica a relay or agent task talks to. An
//! installation behind one load-balanced name lists one URL; one without
//! a balancer lists its replicas, and each task moves on by itself when the
//! replica it talks to fails. Sans-IO: the caller says what happened.

use url::Url;

/// The replicas' base URLs and the one in use.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoints {
    bases: Vec<Url>,
    current: usize,
    /// Replicas that failed since the last success (the current one
    /// included once it fails).
    failed_in_round: usize,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Another replica is current now and has not failed this round: try
    /// it at once.
    TryNow,
    /// Every replica failed since the last success: wait before the next
    /// round (which starts at the replica after the last one tried).
    Wait,
}

impl Endpoints {
    /// `bases` in order of preference; at least one.
    pub fn new(bases: Vec<Url>) -> Self {
        assert!(!bases.is_empty(), "a control plane needs a URL");
        Self {
            bases,
            current: 0,
            failed_in_round: 0,
        }
    }

    /// The replica in use.
    pub fn base(&self) -> &Url {
        &self.bases[self.current]
    }

    /// `path` at the replica in use.
    pub fn url(&self, path: &str) -> Result<Url, url::ParseError> {
        self.base().join(path)
    }

    /// The replica in use answered (any answer its peers would give too,
    /// a refusal included).
    pub fn succeeded(&mut self) {
        self.failed_in_round = 0;
    }

    /// The replica in use did not answer, or answered that it cannot
    /// serve (5xx): the next one becomes current.
    pub fn failed(&mut self) -> Next {
        self.failed_in_round += 1;
        self.current = (self.current + 1) % self.bases.len();
        if self.failed_in_round < self.bases.len() {
            Next::TryNow
        } else {
            self.failed_in_round = 0;
            Next::Wait
        }
    }
}

/// Whether an HTTP exchange's failure is the replica's (move on) rather
/// than an answer every replica would give (a 4xx: stay).
pub(crate) fn replica_failed(error: &reqwest::Error) -> bool {
    !error.status().is_some_and(|s| s.is_client_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Endpoints {
        Endpoints::new(
            [
                "https://a.example/",
                "https://b.example/",
                "https://c.example/",
            ]
            .iter()
            .map(|u| u.parse().unwrap())
            .collect(),
        )
    }

    /// (events, expected current host after each, expected answer to each
    /// failure)
    #[test]
    fn replicas_are_tried_in_turn_and_a_full_round_waits() {
        use Next::*;
        // 'f' = the current replica failed, 's' = it answered.
        let table: &[(&str, &[&str], &[Next])] = &[
            ("", &[], &[]),
            ("s", &["a"], &[]),
            ("f", &["b"], &[TryNow]),
            ("ff", &["b", "c"], &[TryNow, TryNow]),
            // All three failed: wait, then start again where it stands.
            ("fff", &["b", "c", "a"], &[TryNow, TryNow, Wait]),
            (
                "ffff",
                &["b", "c", "a", "b"],
                &[TryNow, TryNow, Wait, TryNow],
            ),
            // A success in between starts a new round: no wait after two
            // more failures.
            (
                "ffsff",
                &["b", "c", "c", "a", "b"],
                &[TryNow, TryNow, TryNow, TryNow],
            ),
            // It stays on a replica that answers.
            ("fsss", &["b", "b", "b", "b"], &[TryNow]),
        ];
        for (events, hosts, answers) in table {
            let mut e = three();
            let mut seen_hosts = Vec::new();
            let mut seen_answers = Vec::new();
            for ev in events.chars() {
                match ev {
                    'f' => seen_answers.push(e.failed()),
                    _ => e.succeeded(),
                }
                seen_hosts.push(
                    e.base()
                        .host_str()
                        .unwrap()
                        .split('.')
                        .next()
                        .unwrap()
                        .to_owned(),
                );
            }
            assert_eq!(&seen_hosts, hosts, "hosts after {events:?}");
            assert_eq!(&seen_answers, answers, "answers to {events:?}");
        }
    }

    #[test]
    fn one_replica_waits_after_every_failure() {
        let mut e = Endpoints::new(vec!["https://cp.example/".parse().unwrap()]);
        assert_eq!(e.failed(), Next::Wait);
        assert_eq!(e.failed(), Next::Wait);
        assert_eq!(
            e.url("api/v1/relay/status").unwrap().as_str(),
            "https://cp.example/api/v1/relay/status"
        );
    }
}

//! Short-lived state every control-plane replica must see: what relays
//! reported in the last seconds, logins waiting at an identity provider,
//! rate-limit counters. Not backed up, not audited, gone when its time is
//! up. A store that one process opens keeps it in memory
//! ([`MemoryPresence`]); PostgreSQL keeps it in an unlogged relation, so
//! whichever replica a relay reports to, every replica answers from it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::StoreError;

/// One live entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Present {
    pub key: String,
    pub value: Vec<u8>,
    /// How long ago it was put, by the store's clock (the same for every
    /// replica).
    pub age: Duration,
}

/// Keys are ids joined by `/` (tenant first where there is one), so that a
/// tenant's or a site's entries are one prefix.
pub trait Presence: Send + Sync + 'static {
    /// Sets `key` of `kind` to `value` for `ttl`.
    fn put(&self, kind: &str, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    /// The entry at `key`, if its time is not up.
    fn get(&self, kind: &str, key: &str) -> Result<Option<Present>, StoreError>;
    fn remove(&self, kind: &str, key: &str) -> Result<(), StoreError>;
    /// The entries of `kind` whose key starts with `prefix` and whose time
    /// is not up, in key order.
    fn list(&self, kind: &str, prefix: &str) -> Result<Vec<Present>, StoreError>;
    /// Removes the entry at `key` and returns it if its time was not up.
    /// Of several callers taking one key at once, one gets it (single use).
    fn take(&self, kind: &str, key: &str) -> Result<Option<Present>, StoreError>;
    /// Counts one more hit on `key` of `kind` in a fixed window of length
    /// `window` that starts with the first hit after the last window ended.
    /// Atomic: hits from several callers at once are all counted.
    fn count(&self, kind: &str, key: &str, window: Duration) -> Result<Counted, StoreError>;
}

/// A counter after one more hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// Hits in the current window, this one included.
    pub hits: u64,
    /// Until the window ends.
    pub left: Duration,
}

/// The first string after every string that starts with `prefix` (`None`:
/// no bound), for range scans.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// At most this many entries per kind in memory (agents of all tenants
/// are one kind); further keys are dropped, those already held are still
/// updated.
pub const MEMORY_LIMIT: usize = 100_000;
/// Expired entries are swept every this many puts (and when full).
const SWEEP_EVERY: u64 = 1024;

type Entries = BTreeMap<String, (Vec<u8>, Instant, Duration)>;

/// Presence in this process's memory: ordered, so a prefix is a range.
#[derive(Default)]
pub struct MemoryPresence {
    kinds: Mutex<Kinds>,
}

#[derive(Default)]
struct Kinds {
    entries: HashMap<String, Entries>,
    /// Counters by (kind, key): window start, window, hits.
    counters: HashMap<(String, String), (Instant, Duration, u64)>,
    /// When the counters were last swept for being over the limit.
    swept_counters: Option<Instant>,
    puts: u64,
    /// When a full kind was last swept (a flood at the limit must not
    /// sweep on every put).
    swept_full: Option<Instant>,
}

impl Presence for MemoryPresence {
    fn put(&self, kind: &str, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut guard = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let kinds = &mut *guard;
        kinds.puts += 1;
        let now = Instant::now();
        let mut sweep = kinds.puts.is_multiple_of(SWEEP_EVERY);
        let entries = kinds.entries.entry(kind.to_owned()).or_default();
        if entries.len() >= MEMORY_LIMIT
            && kinds
                .swept_full
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            kinds.swept_full = Some(now);
            sweep = true;
        }
        if sweep {
            entries.retain(|_, (_, at, ttl)| now.duration_since(*at) < *ttl);
        }
        if entries.len() < MEMORY_LIMIT || entries.contains_key(key) {
            entries.insert(key.to_owned(), (value.to_vec(), now, ttl));
        }
        Ok(())
    }

    fn get(&self, kind: &str, key: &str) -> Result<Option<Present>, StoreError> {
        let guard = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        Ok(guard
            .entries
            .get(kind)
            .and_then(|entries| entries.get(key))
            .filter(|(_, at, ttl)| now.duration_since(*at) < *ttl)
            .map(|(v, at, _)| Present {
                key: key.to_owned(),
                value: v.clone(),
                age: now.duration_since(*at),
            }))
    }

    fn remove(&self, kind: &str, key: &str) -> Result<(), StoreError> {
        let mut guard = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entries) = guard.entries.get_mut(kind) {
            entries.remove(key);
        }
        Ok(())
    }

    fn list(&self, kind: &str, prefix: &str) -> Result<Vec<Present>, StoreError> {
        let guard = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let Some(entries) = guard.entries.get(kind) else {
            return Ok(Vec::new());
        };
        Ok(entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, (_, at, ttl))| now.duration_since(*at) < *ttl)
            .map(|(k, (v, at, _))| Present {
                key: k.clone(),
                value: v.clone(),
                age: now.duration_since(*at),
            })
            .collect())
    }

    fn take(&self, kind: &str, key: &str) -> Result<Option<Present>, StoreError> {
        let mut guard = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        Ok(guard
            .entries
            .get_mut(kind)
            .and_then(|entries| entries.remove(key))
            .filter(|(_, at, ttl)| now.duration_since(*at) < *ttl)
            .map(|(v, at, _)| Present {
                key: key.to_owned(),
                value: v,
                age: now.duration_since(at),
            }))
    }

    /// Counters are not capped like entries (a full table must neither
    /// stop counting nor refuse everyone): past [`MEMORY_LIMIT`] the ended
    /// windows are swept, at most once a second, so what is held is bounded
    /// by the hits of one window.
    fn count(&self, kind: &str, key: &str, window: Duration) -> Result<Counted, StoreError> {
        let mut guard = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let kinds = &mut *guard;
        let now = Instant::now();
        if kinds.counters.len() >= MEMORY_LIMIT
            && kinds
                .swept_counters
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            kinds.swept_counters = Some(now);
            kinds
                .counters
                .retain(|_, (start, window, _)| now.duration_since(*start) < *window);
        }
        let entry = kinds
            .counters
            .entry((kind.to_owned(), key.to_owned()))
            .or_insert((now, window, 0));
        if now.duration_since(entry.0) >= entry.1 {
            *entry = (now, window, 0);
        }
        entry.2 += 1;
        Ok(Counted {
            hits: entry.2,
            left: entry.1.saturating_sub(now.duration_since(entry.0)),
        })
    }
}

/// The same checks against any [`Presence`]: both backends pass them.
#[doc(hidden)]
pub mod contract {
    use super::*;

    pub fn check(p: &dyn Presence) {
        let long = Duration::from_secs(60);
        p.put("relay", "b", b"1", long).unwrap();
        p.put("relay", "a", b"2", long).unwrap();
        p.put("other", "a", b"3", long).unwrap();
        // A second put replaces the value and starts its time again.
        p.put("relay", "b", b"4", long).unwrap();
        let listed = p.list("relay", "").unwrap();
        let keys: Vec<(&str, &[u8])> = listed
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_slice()))
            .collect();
        assert_eq!(keys, vec![("a", &b"2"[..]), ("b", &b"4"[..])]);
        assert!(listed.iter().all(|e| e.age < Duration::from_secs(5)));
        assert_eq!(p.list("other", "").unwrap().len(), 1);
        assert!(p.list("none", "").unwrap().is_empty());
        // By prefix: a tenant's or a site's entries.
        for key in [
            "t1/s1/a", "t1/s1/b", "t1/s10/c", "t1/s2/d", "t10/s1/e", "t2/s1/f",
        ] {
            p.put("agent", key, key.as_bytes(), long).unwrap();
        }
        let keys = |prefix: &str| -> Vec<String> {
            p.list("agent", prefix)
                .unwrap()
                .into_iter()
                .map(|e| e.key)
                .collect()
        };
        assert_eq!(keys("t1/s1/"), ["t1/s1/a", "t1/s1/b"]);
        assert_eq!(keys("t1/"), ["t1/s1/a", "t1/s1/b", "t1/s10/c", "t1/s2/d"]);
        assert_eq!(keys("t1/s1/b"), ["t1/s1/b"]);
        assert_eq!(keys("t3/"), Vec::<String>::new());
        assert_eq!(keys("").len(), 6);
        // One entry, and removing it.
        let got = p.get("agent", "t1/s2/d").unwrap().unwrap();
        assert_eq!(got.value, b"t1/s2/d");
        assert!(p.get("agent", "t1/s2/x").unwrap().is_none());
        assert!(p.get("relay", "t1/s2/d").unwrap().is_none());
        p.remove("agent", "t1/s2/d").unwrap();
        p.remove("agent", "never-there").unwrap();
        assert!(p.get("agent", "t1/s2/d").unwrap().is_none());
        assert_eq!(keys("t1/s2/"), Vec::<String>::new());
        // Gone when its time is up, and only then.
        p.put("short", "x", b"5", Duration::from_millis(300))
            .unwrap();
        p.put("short", "y", b"6", long).unwrap();
        assert_eq!(p.list("short", "").unwrap().len(), 2);
        std::thread::sleep(Duration::from_millis(400));
        let left: Vec<String> = p
            .list("short", "")
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(left, vec!["y".to_owned()]);
        let y = &p.list("short", "").unwrap()[0];
        assert!(y.age >= Duration::from_millis(300), "age {:?}", y.age);
        take(p);
        count(p);
    }

    fn take(p: &dyn Presence) {
        let long = Duration::from_secs(60);
        p.put("login", "s1", b"a", long).unwrap();
        p.put("login", "s2", b"b", Duration::from_millis(200))
            .unwrap();
        let got = p.take("login", "s1").unwrap().expect("taken");
        assert_eq!((got.key.as_str(), got.value.as_slice()), ("s1", &b"a"[..]));
        assert!(p.take("login", "s1").unwrap().is_none(), "single use");
        assert!(p.get("login", "s1").unwrap().is_none());
        assert!(p.take("other", "s2").unwrap().is_none(), "kinds apart");
        std::thread::sleep(Duration::from_millis(300));
        assert!(p.take("login", "s2").unwrap().is_none(), "expired");
        // Eight callers race for one key: exactly one gets it.
        p.put("login", "race", b"r", long).unwrap();
        let won = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| p.take("login", "race").unwrap().is_some()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|won| *won)
                .count()
        });
        assert_eq!(won, 1);
    }

    fn count(p: &dyn Presence) {
        let w = Duration::from_millis(400);
        let first = p.count("hits", "a", w).unwrap();
        assert_eq!(first.hits, 1);
        assert!(first.left <= w && first.left > Duration::from_millis(200));
        assert_eq!(p.count("hits", "a", w).unwrap().hits, 2);
        assert_eq!(p.count("hits", "b", w).unwrap().hits, 1, "keys apart");
        assert_eq!(p.count("other", "a", w).unwrap().hits, 1, "kinds apart");
        // Hits at once from eight callers are all counted.
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..5 {
                        p.count("hits", "many", Duration::from_secs(60)).unwrap();
                    }
                });
            }
        });
        assert_eq!(
            p.count("hits", "many", Duration::from_secs(60))
                .unwrap()
                .hits,
            41
        );
        // A new window starts after the old one ended.
        std::thread::sleep(Duration::from_millis(500));
        let again = p.count("hits", "a", w).unwrap();
        assert_eq!(again.hits, 1, "{again:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_exactly_the_prefixed_strings() {
        assert_eq!(prefix_end("t1/s1/").as_deref(), Some("t1/s10"));
        assert_eq!(prefix_end("").as_deref(), None);
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        let end = prefix_end("t1/").unwrap();
        for inside in ["t1/", "t1/zzz", "t1/\u{10FFFF}"] {
            assert!(inside.starts_with("t1/") && inside < end.as_str());
        }
        assert!("t10/" >= end.as_str(), "t10/ is not in t1/'s range");
    }

    #[test]
    fn memory_presence_keeps_the_contract() {
        contract::check(&MemoryPresence::default());
    }

    #[test]
    fn memory_presence_is_bounded_but_updates_what_it_holds() {
        let p = MemoryPresence::default();
        let ttl = Duration::from_secs(60);
        for i in 0..MEMORY_LIMIT {
            p.put("relay", &format!("r{i:05}"), b"x", ttl).unwrap();
        }
        p.put("relay", "one-too-many", b"x", ttl).unwrap();
        let listed = p.list("relay", "").unwrap();
        assert_eq!(listed.len(), MEMORY_LIMIT);
        assert!(listed.iter().all(|e| e.key != "one-too-many"));
        p.put("relay", "r00000", b"new", ttl).unwrap();
        assert_eq!(p.list("relay", "").unwrap()[0].value, b"new");
    }
}

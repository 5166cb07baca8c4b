//! Short-lived state every control-plane replica must see: what relays
//! reported in the last seconds. Not backed up, not audited, gone when its
//! time is up. A store that one process opens keeps it in memory
//! ([`MemoryPresence`]); PostgreSQL keeps it in an unlogged relation, so
//! whichever replica a relay reports to, every replica answers from it.

use std::collections::HashMap;
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

pub trait Presence: Send + Sync + 'static {
    /// Sets `key` of `kind` to `value` for `ttl`.
    fn put(&self, kind: &str, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    /// The entries of `kind` whose time is not up, in key order.
    fn list(&self, kind: &str) -> Result<Vec<Present>, StoreError>;
}

/// At most this many entries per kind in memory; further keys are dropped
/// (those already held are still updated).
pub const MEMORY_LIMIT: usize = 10_000;

/// Presence in this process's memory.
#[derive(Default)]
pub struct MemoryPresence {
    #[allow(clippy::type_complexity)]
    kinds: Mutex<HashMap<String, HashMap<String, (Vec<u8>, Instant, Duration)>>>,
}

impl Presence for MemoryPresence {
    fn put(&self, kind: &str, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let entries = kinds.entry(kind.to_owned()).or_default();
        let now = Instant::now();
        entries.retain(|_, (_, at, ttl)| now.duration_since(*at) < *ttl);
        if entries.len() < MEMORY_LIMIT || entries.contains_key(key) {
            entries.insert(key.to_owned(), (value.to_vec(), now, ttl));
        }
        Ok(())
    }

    fn list(&self, kind: &str) -> Result<Vec<Present>, StoreError> {
        let kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut out: Vec<Present> = kinds
            .get(kind)
            .into_iter()
            .flatten()
            .filter(|(_, (_, at, ttl))| now.duration_since(*at) < *ttl)
            .map(|(k, (v, at, _))| Present {
                key: k.clone(),
                value: v.clone(),
                age: now.duration_since(*at),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
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
        let listed = p.list("relay").unwrap();
        let keys: Vec<(&str, &[u8])> = listed
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_slice()))
            .collect();
        assert_eq!(keys, vec![("a", &b"2"[..]), ("b", &b"4"[..])]);
        assert!(listed.iter().all(|e| e.age < Duration::from_secs(5)));
        assert_eq!(p.list("other").unwrap().len(), 1);
        assert!(p.list("none").unwrap().is_empty());
        // Gone when its time is up, and only then.
        p.put("short", "x", b"5", Duration::from_millis(300))
            .unwrap();
        p.put("short", "y", b"6", long).unwrap();
        assert_eq!(p.list("short").unwrap().len(), 2);
        std::thread::sleep(Duration::from_millis(400));
        let left: Vec<String> = p
            .list("short")
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(left, vec!["y".to_owned()]);
        let y = &p.list("short").unwrap()[0];
        assert!(y.age >= Duration::from_millis(300), "age {:?}", y.age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let listed = p.list("relay").unwrap();
        assert_eq!(listed.len(), MEMORY_LIMIT);
        assert!(listed.iter().all(|e| e.key != "one-too-many"));
        p.put("relay", "r00000", b"new", ttl).unwrap();
        assert_eq!(p.list("relay").unwrap()[0].value, b"new");
    }
}

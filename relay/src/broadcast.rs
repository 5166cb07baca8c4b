//! Broadcasts by namespace: each holds its tracks (created locally by the
//! origin, or requested from upstream on first demand), and the registry
//! announces broadcasts as they come and go.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, mpsc};

use crate::cache::{CacheLimits, TrackCache, TrackCounters, UpstreamState};

/// A broadcast's MoQT track namespace: (tenant, event, stream).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Vec<String>);

impl Namespace {
    pub fn new(fields: Vec<String>) -> Result<Self, NamespaceError> {
        if fields.is_empty() || fields.len() > 32 {
            return Err(NamespaceError::FieldCount(fields.len()));
        }
        for field in &fields {
            let valid = !field.is_empty()
                && field.len() <= 128
                && field
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !valid || field == "." || field == ".." {
                return Err(NamespaceError::Field(field.clone()));
            }
        }
        Ok(Self(fields))
    }

    /// Parses `tenant/event/stream`.
    pub fn parse(path: &str) -> Result<Self, NamespaceError> {
        Self::new(path.split('/').map(str::to_owned).collect())
    }

    pub fn fields(&self) -> &[String] {
        &self.0
    }

    pub fn starts_with(&self, prefix: &[String]) -> bool {
        self.0.len() >= prefix.len() && self.0[..prefix.len()] == *prefix
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Namespace({self})")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("a namespace has 1 to 32 fields, not {0}")]
    FieldCount(usize),
    #[error("namespace field {0:?} is not 1-128 characters of [A-Za-z0-9._-]")]
    Field(String),
}

/// Renditions and audio languages of one broadcast stay far below this.
const MAX_TRACKS_PER_BROADCAST: usize = 64;
/// Track names whose counters a broadcast remembers after their release.
const MAX_COUNTED_TRACKS: usize = 256;

/// Where a broadcast's media comes from.
pub enum Source {
    /// Packaged in this process (origin).
    Local,
    /// Pulled from an upstream on demand: a track request is sent on this channel.
    Upstream(mpsc::UnboundedSender<Arc<TrackCache>>),
}

/// One live broadcast: its tracks by name.
pub struct Broadcast {
    pub namespace: Namespace,
    source: Source,
    limits: CacheLimits,
    tracks: Mutex<HashMap<String, Arc<TrackCache>>>,
    /// Per track name, kept when an idle track is released so that its
    /// counters never go backwards while the broadcast lives.
    counters: Mutex<HashMap<String, Arc<TrackCounters>>>,
}

impl Broadcast {
    pub fn new(namespace: Namespace, source: Source, limits: CacheLimits) -> Arc<Self> {
        Arc::new(Self {
            namespace,
            source,
            limits,
            tracks: Mutex::new(HashMap::new()),
            counters: Mutex::new(HashMap::new()),
        })
    }

    fn counters_for(&self, name: &str) -> Arc<TrackCounters> {
        let mut all = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = all.get(name) {
            return c.clone();
        }
        let c = Arc::<TrackCounters>::default();
        if all.len() < MAX_COUNTED_TRACKS {
            all.insert(name.to_owned(), c.clone());
        }
        c
    }

    /// Every track name with its counters and, while it is held, its cache.
    pub fn track_figures(&self) -> Vec<(String, Arc<TrackCounters>, Option<Arc<TrackCache>>)> {
        let tracks = self.tracks();
        let all = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .map(|(name, c)| (name.clone(), c.clone(), tracks.get(name).cloned()))
            .collect()
    }

    fn tracks(&self) -> MutexGuard<'_, HashMap<String, Arc<TrackCache>>> {
        self.tracks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The track with this name; for an upstream broadcast an unknown track is
    /// created and requested upstream (exactly once, however many ask).
    pub fn track(&self, name: &str) -> Option<Arc<TrackCache>> {
        let mut tracks = self.tracks();
        if let Some(t) = tracks.get(name) {
            if !t.is_closed() {
                return Some(t.clone());
            }
        }
        match &self.source {
            Source::Local => None,
            Source::Upstream(requests) => {
                // Every unknown name costs an upstream request: refuse junk
                // names and cap how many a broadcast may have.
                tracks.retain(|_, t| !t.is_closed());
                if !valid_track_name(name) || tracks.len() >= MAX_TRACKS_PER_BROADCAST {
                    return None;
                }
                let track = TrackCache::with_state(
                    name,
                    self.limits,
                    UpstreamState::Pending,
                    self.counters_for(name),
                );
                requests.send(track.clone()).ok()?;
                tracks.insert(name.to_owned(), track.clone());
                Some(track)
            }
        }
    }

    /// Creates (or replaces a closed) local track. Used by the packaging side.
    pub fn create_track(&self, name: &str) -> Arc<TrackCache> {
        let mut tracks = self.tracks();
        if let Some(t) = tracks.get(name) {
            if !t.is_closed() {
                return t.clone();
            }
        }
        let track = TrackCache::with_state(
            name,
            self.limits,
            UpstreamState::Ready { largest: None },
            self.counters_for(name),
        );
        tracks.insert(name.to_owned(), track.clone());
        track
    }

    /// Forgets a track (after its upstream subscription ended).
    pub fn remove_track(&self, track: &Arc<TrackCache>) {
        let mut tracks = self.tracks();
        if tracks
            .get(&track.name)
            .is_some_and(|t| Arc::ptr_eq(t, track))
        {
            tracks.remove(&track.name);
        }
    }

    pub fn track_list(&self) -> Vec<Arc<TrackCache>> {
        self.tracks().values().cloned().collect()
    }

    /// Closes every track (the broadcast ends).
    pub fn close(&self) {
        for t in self.tracks().values() {
            t.close();
        }
    }
}

fn valid_track_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A change in the set of broadcasts.
#[derive(Clone, Debug)]
pub enum Announcement {
    Active(Namespace),
    Ended(Namespace),
}

/// All broadcasts this process knows, announced to whoever listens.
pub struct Broadcasts {
    map: Mutex<HashMap<Namespace, Arc<Broadcast>>>,
    events: broadcast::Sender<Announcement>,
}

impl Default for Broadcasts {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            events: broadcast::channel(1024).0,
        }
    }
}

impl Broadcasts {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Namespace, Arc<Broadcast>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, namespace: &Namespace) -> Option<Arc<Broadcast>> {
        self.map().get(namespace).cloned()
    }

    /// Registers a broadcast unless one with that namespace exists; returns the registered one.
    pub fn insert(&self, broadcast: Arc<Broadcast>) -> Arc<Broadcast> {
        let ns = broadcast.namespace.clone();
        let registered = {
            let mut map = self.map();
            if let Some(existing) = map.get(&ns) {
                return existing.clone();
            }
            map.insert(ns.clone(), broadcast.clone());
            broadcast
        };
        let _ = self.events.send(Announcement::Active(ns));
        registered
    }

    /// Removes this exact broadcast (not a newer one under the same name).
    pub fn remove(&self, broadcast: &Arc<Broadcast>) {
        let removed = {
            let mut map = self.map();
            match map.get(&broadcast.namespace) {
                Some(b) if Arc::ptr_eq(b, broadcast) => map.remove(&broadcast.namespace),
                _ => None,
            }
        };
        if let Some(b) = removed {
            b.close();
            let _ = self.events.send(Announcement::Ended(b.namespace.clone()));
        }
    }

    pub fn list(&self) -> Vec<Arc<Broadcast>> {
        self.map().values().cloned().collect()
    }

    /// The current set and a stream of later changes, consistent with each other.
    pub fn watch(&self) -> (Vec<Namespace>, broadcast::Receiver<Announcement>) {
        let map = self.map();
        let rx = self.events.subscribe();
        (map.keys().cloned().collect(), rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_broadcast_requests_each_track_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let b = Broadcast::new(
            Namespace::parse("t/e/s").unwrap(),
            Source::Upstream(tx),
            CacheLimits::default(),
        );
        let a = b.track("video").unwrap();
        let c = b.track("video").unwrap();
        assert!(Arc::ptr_eq(&a, &c));
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
        assert!(b.track("../etc").is_none());
    }

    #[test]
    fn track_counters_outlive_an_idle_release() {
        use std::sync::atomic::Ordering;
        let (tx, _rx) = mpsc::unbounded_channel();
        let b = Broadcast::new(
            Namespace::parse("t/e/s").unwrap(),
            Source::Upstream(tx),
            CacheLimits::default(),
        );
        let first = b.track("video").unwrap();
        first.counters.bytes_out.fetch_add(100, Ordering::Relaxed);
        b.remove_track(&first);
        first.close();
        let second = b.track("video").unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.counters.bytes_out.load(Ordering::Relaxed), 100);
        let figures = b.track_figures();
        assert_eq!(figures.len(), 1);
        assert!(figures[0].2.is_some());
    }

    #[test]
    fn namespace_validation() {
        assert!(Namespace::parse("acme/town-hall/main").is_ok());
        assert!(Namespace::parse("acme//main").is_err());
        assert!(Namespace::parse("acme/../main").is_err());
        assert!(Namespace::parse("a b").is_err());
    }
}

//! The in-memory model of a live track: it keeps its newest groups, and any
//! number of readers (MoQT subscribers, HLS requests) follow them.
//!
//! One copy of every object lives here, shared by reference (`Bytes`) with all
//! protocols that serve it. Writers are the origin's packager or an upstream
//! subscription; readers never block writers.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moq_transport::data::ExtensionHeaders;
use tokio::sync::watch;

use crate::upstream::Demand;

/// How long and how much a track keeps.
#[derive(Clone, Copy, Debug)]
pub struct CacheLimits {
    /// Groups older than this (since their first object arrived) are dropped.
    pub max_age: Duration,
    /// Bytes kept per track at most; the newest group is always kept.
    pub max_bytes: usize,
    /// How long a reader waits for a group that is missing while a newer
    /// one is already here, before it moves past it. Zero: it moves on at
    /// once. An upstream that sends the newer group first (a parent short of
    /// uplink) may still deliver the missing one, or a repair may: an agent
    /// waits as long as its repair needs (`strom_peer_agent::repair`).
    pub gap_wait: Duration,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30),
            max_bytes: 64 * 1024 * 1024,
            gap_wait: Duration::ZERO,
        }
    }
}

/// One object as stored: its id in the group, its payload, and what the
/// media layer learnt from it (duration in track ticks, producer wall clock).
#[derive(Clone, Debug)]
pub struct Object {
    pub id: u64,
    pub payload: Bytes,
    pub meta: ObjectMeta,
    /// The object's MoQT extension headers, forwarded unchanged (e.g. the
    /// origin's signature); shared by every subscriber.
    pub ext: Option<Arc<ExtensionHeaders>>,
}

impl Object {
    /// The origin's signature (strom_token::media), if the object carries one.
    pub fn signature(&self) -> Option<&[u8]> {
        let kvp = self
            .ext
            .as_deref()?
            .get(strom_token::media::SIGNATURE_EXTENSION)?;
        match &kvp.value {
            moq_transport::coding::Value::BytesValue(b) => Some(b),
            moq_transport::coding::Value::IntValue(_) => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ObjectMeta {
    /// Media duration in the track's timescale (0 when unknown, e.g. catalog).
    pub duration_ticks: u64,
    /// The origin's ingest wall clock (`prft`), Unix microseconds.
    pub producer_time_us: Option<u64>,
}

#[derive(Debug)]
pub struct Group {
    pub id: u64,
    pub objects: Vec<Object>,
    pub complete: bool,
    pub bytes: usize,
    pub first_arrival: Instant,
}

impl Group {
    pub fn duration_ticks(&self) -> u64 {
        self.objects.iter().map(|o| o.meta.duration_ticks).sum()
    }
}

#[derive(Default)]
struct TrackState {
    groups: VecDeque<Group>,
    bytes: usize,
    closed: bool,
}

/// Counters a track keeps about itself.
#[derive(Default, Debug)]
pub struct TrackCounters {
    pub objects_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub objects_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub groups_evicted: AtomicU64,
    /// Downstream MoQT subscriptions accepted for this track.
    pub subscriptions: AtomicU64,
    /// Times a reader fell behind the cache and skipped to the oldest kept group.
    pub objects_skipped: AtomicU64,
    /// Groups a reader moved past because they never arrived (after
    /// waiting [`CacheLimits::gap_wait`] for them): holes upstream.
    pub groups_missed: AtomicU64,
}

/// Whether the source of a track has accepted it. Local tracks are ready at
/// once; a track pulled from upstream is pending until the upstream answers
/// its SUBSCRIBE (a relay must not accept a subscriber before that).
#[derive(Clone, Debug)]
pub enum UpstreamState {
    Pending,
    /// Accepted; the upstream's largest (group, object) when it accepted.
    Ready {
        largest: Option<(u64, u64)>,
    },
    /// Refused or failed, with the error to pass on.
    Refused(moq_transport::serve::ServeError),
}

/// A live track: its newest groups, readers waiting on them, and demand.
pub struct TrackCache {
    pub name: String,
    limits: CacheLimits,
    state: Mutex<TrackState>,
    version: watch::Sender<u64>,
    readers: AtomicUsize,
    last_demand: Mutex<Instant>,
    upstream: watch::Sender<UpstreamState>,
    /// False while history is being fetched from upstream.
    history_done: watch::Sender<bool>,
    /// Shared with the broadcast, so the figures outlive an idle release.
    pub counters: Arc<TrackCounters>,
}

impl fmt::Debug for TrackCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackCache")
            .field("name", &self.name)
            .finish()
    }
}

impl TrackCache {
    /// A track whose source is here (ready at once).
    pub fn new(name: impl Into<String>, limits: CacheLimits) -> Arc<Self> {
        Self::with_state(
            name,
            limits,
            UpstreamState::Ready { largest: None },
            Arc::default(),
        )
    }

    /// A track to be pulled from upstream (pending until the upstream answers).
    pub fn pending(name: impl Into<String>, limits: CacheLimits) -> Arc<Self> {
        Self::with_state(name, limits, UpstreamState::Pending, Arc::default())
    }

    /// Like [`Self::new`] or [`Self::pending`], adding to existing counters.
    pub fn with_state(
        name: impl Into<String>,
        limits: CacheLimits,
        upstream: UpstreamState,
        counters: Arc<TrackCounters>,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            limits,
            state: Mutex::new(TrackState::default()),
            version: watch::channel(0).0,
            readers: AtomicUsize::new(0),
            last_demand: Mutex::new(Instant::now()),
            history_done: watch::channel(!matches!(upstream, UpstreamState::Pending)).0,
            upstream: watch::channel(upstream).0,
            counters,
        })
    }

    /// Marks the history fetch from upstream as finished (or given up).
    pub fn set_history_done(&self) {
        self.history_done.send_replace(true);
    }

    /// Waits (up to `limit`) until history from upstream has arrived, so a
    /// FETCH is answered from a complete cache.
    pub async fn history_settled(&self, limit: Duration) {
        let mut rx = self.history_done.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|done| *done)).await;
    }

    pub fn set_upstream(&self, state: UpstreamState) {
        self.upstream.send_replace(state);
    }

    /// The upstream's answer, waiting up to `limit` while it is pending.
    pub async fn upstream_answer(&self, limit: Duration) -> UpstreamState {
        let mut rx = self.upstream.subscribe();
        let waited =
            tokio::time::timeout(limit, rx.wait_for(|s| !matches!(s, UpstreamState::Pending)))
                .await;
        match waited {
            Ok(Ok(state)) => state.clone(),
            _ => self.upstream.borrow().clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TrackState> {
        // A panic while holding this lock cannot leave the deque half-written
        // in a way readers could misread, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Stores an object. Objects for groups older than the oldest kept group,
    /// or duplicates, are ignored (returns false).
    pub fn insert(&self, group_id: u64, object: Object, now: Instant) -> bool {
        self.insert_inner(group_id, object, now, false)
    }

    /// Stores history fetched after the live subscription began: groups older
    /// than the oldest kept one are accepted. Call [`Self::finish_group`] for
    /// each group once its history is complete.
    pub fn backfill(&self, group_id: u64, object: Object, now: Instant) -> bool {
        self.insert_inner(group_id, object, now, true)
    }

    fn insert_inner(&self, group_id: u64, object: Object, now: Instant, history: bool) -> bool {
        let size = object.payload.len();
        {
            let mut state = self.lock();
            if state.closed {
                return false;
            }
            let position = state.groups.iter().position(|g| g.id >= group_id);
            let index = match position {
                Some(i) if state.groups[i].id == group_id => i,
                Some(0) if !history => {
                    // Older than everything we keep: a late straggler.
                    return false;
                }
                Some(i) => {
                    state.groups.insert(i, new_group(group_id, now));
                    i
                }
                None => {
                    // A new newest group: groups two or more behind it will
                    // receive nothing more worth waiting for.
                    let newest = state.groups.len();
                    for g in state.groups.iter_mut() {
                        if g.id + 1 < group_id {
                            g.complete = true;
                        }
                    }
                    state.groups.push_back(new_group(group_id, now));
                    newest
                }
            };
            let group = &mut state.groups[index];
            if group.complete || group.objects.last().is_some_and(|o| o.id >= object.id) {
                return false;
            }
            group.objects.push(object);
            group.bytes += size;
            state.bytes += size;
            self.evict(&mut state, now);
        }
        self.counters.objects_in.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_in
            .fetch_add(size as u64, Ordering::Relaxed);
        self.bump();
        true
    }

    /// Marks a group as complete: no more objects will be accepted for it.
    /// For a group held whole: the id after its last object (where MoQT's
    /// End of Group status goes). `None` while the group is open or absent.
    pub fn end_of_group(&self, group_id: u64) -> Option<u64> {
        self.with_groups(|groups| {
            let g = groups.iter().find(|g| g.id == group_id && g.complete)?;
            Some(g.objects.last().map_or(0, |o| o.id + 1))
        })
    }

    pub fn finish_group(&self, group_id: u64) {
        {
            let mut state = self.lock();
            match state.groups.iter_mut().find(|g| g.id == group_id) {
                Some(g) if !g.complete => g.complete = true,
                _ => return,
            }
        }
        self.bump();
    }

    /// Closes the track: readers end after draining what is cached.
    pub fn close(&self) {
        {
            let mut state = self.lock();
            state.closed = true;
            for g in state.groups.iter_mut() {
                g.complete = true;
            }
        }
        self.bump();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn evict(&self, state: &mut TrackState, now: Instant) {
        while state.groups.len() > 1 {
            let oldest = &state.groups[0];
            let too_old = now.duration_since(oldest.first_arrival) > self.limits.max_age;
            let too_big = state.bytes > self.limits.max_bytes;
            if !(too_old || too_big) {
                break;
            }
            if let Some(g) = state.groups.pop_front() {
                state.bytes -= g.bytes;
                self.counters.groups_evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The largest (group, object) stored.
    pub fn largest(&self) -> Option<(u64, u64)> {
        let state = self.lock();
        let g = state.groups.back()?;
        Some((g.id, g.objects.last()?.id))
    }

    /// Bytes held in memory for this track.
    /// Where a viewer reading the track in order waits now, for a relay
    /// that resumes elsewhere (MoQT AbsoluteStart). An upstream that falls
    /// behind sends the newest group first, so:
    /// - the group before the newest, while it is still open: at its tail;
    /// - a group missing entirely just before the newest: at its first
    ///   object (the cache's reader waits there, see `CacheLimits::gap_wait`);
    /// - otherwise: after the newest object.
    ///
    /// Returns the group, the next object id, and the producer time of the
    /// last object held before that place.
    pub fn frontier(&self) -> Option<(u64, u64, Option<u64>)> {
        self.with_groups(|groups| {
            let newest = groups.back()?;
            let (group, next, last) = match groups.iter().rev().nth(1) {
                Some(previous) if !previous.complete => {
                    let last = previous.objects.last()?;
                    (previous.id, last.id + 1, last)
                }
                Some(previous) if previous.id + 1 < newest.id => {
                    (previous.id + 1, 0, previous.objects.last()?)
                }
                _ => {
                    let last = newest.objects.last()?;
                    (newest.id, last.id + 1, last)
                }
            };
            Some((group, next, last.meta.producer_time_us))
        })
    }

    pub fn cached_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Runs `f` over the cached groups (oldest first) under the lock.
    pub fn with_groups<R>(&self, f: impl FnOnce(&VecDeque<Group>) -> R) -> R {
        f(&self.lock().groups)
    }

    /// A future that resolves at the next change of this track.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Records demand from a request-driven client (HLS) that holds no reader.
    pub fn touch(&self) {
        *self.last_demand.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Who wants the track now: attached readers, and the time since a
    /// request last touched it (the pull's [`Lifecycle`] decides from it).
    ///
    /// [`Lifecycle`]: crate::upstream::Lifecycle
    pub fn demand(&self, now: Instant) -> Demand {
        let last = *self.last_demand.lock().unwrap_or_else(|p| p.into_inner());
        Demand {
            readers: self.readers.load(Ordering::Relaxed),
            since_request: now.saturating_duration_since(last),
        }
    }

    pub fn reader_count(&self) -> usize {
        self.readers.load(Ordering::Relaxed)
    }

    /// A reader that starts at the first object of the newest group (or of the
    /// first group to arrive, if none has yet).
    pub fn reader_from_newest(self: &Arc<Self>) -> TrackReader {
        let start = self.lock().groups.back().map(|g| g.id);
        self.reader_at(start)
    }

    /// A reader that starts at `group` (or the oldest kept group after it).
    pub fn reader_at(self: &Arc<Self>, group: Option<u64>) -> TrackReader {
        self.readers.fetch_add(1, Ordering::Relaxed);
        self.touch();
        TrackReader {
            track: self.clone(),
            changes: self.version.subscribe(),
            group,
            index: 0,
            skip_before: None,
            gap_since: None,
        }
    }

    /// A reader that starts at object `object` of `group` (MoQT's
    /// AbsoluteStart): earlier objects of that group are not delivered.
    pub fn reader_at_object(self: &Arc<Self>, group: u64, object: u64) -> TrackReader {
        let mut reader = self.reader_at(Some(group));
        reader.skip_before = Some((group, object));
        reader
    }
}

fn new_group(id: u64, now: Instant) -> Group {
    Group {
        id,
        objects: Vec::new(),
        complete: false,
        bytes: 0,
        first_arrival: now,
    }
}

/// What a reader gets next.
#[derive(Debug, Clone)]
pub enum Delivery {
    Object {
        group: u64,
        object: Object,
    },
    /// The group has no more objects.
    GroupEnd {
        group: u64,
    },
}

/// Follows a track in order: objects of one group, then its end, then the next group.
pub struct TrackReader {
    track: Arc<TrackCache>,
    changes: watch::Receiver<u64>,
    /// The group being read; None until the first group exists.
    group: Option<u64>,
    index: usize,
    /// Objects of this group below this id are not delivered.
    skip_before: Option<(u64, u64)>,
    /// Since when the reader waits for its missing group (see
    /// [`CacheLimits::gap_wait`]).
    gap_since: Option<Instant>,
}

impl TrackReader {
    pub fn track(&self) -> &Arc<TrackCache> {
        &self.track
    }

    /// Where a reader made with [`TrackCache::reader_at_object`] starts.
    pub fn starts_at(&self) -> Option<(u64, u64)> {
        self.skip_before
    }

    /// The next delivery, or None once the track is closed and drained.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            self.changes.borrow_and_update();
            if let Some(delivery) = self.poll() {
                return Some(delivery);
            }
            if self.track.is_closed() && self.poll().is_none() {
                return None;
            }
            match self.gap_since {
                // Waiting for a missing group: until it comes or the wait is over.
                Some(since) => {
                    let left = self.track.limits.gap_wait.saturating_sub(since.elapsed());
                    if let Ok(Err(_)) = tokio::time::timeout(left, self.changes.changed()).await {
                        return None;
                    }
                }
                None => {
                    if self.changes.changed().await.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// Takes the next delivery if one is ready.
    pub fn poll(&mut self) -> Option<Delivery> {
        let state = self.track.lock();
        let first = state.groups.front()?;
        let current = match self.group {
            None => {
                // Nothing existed when the reader started: begin at the newest group now.
                let newest = state.groups.back().map_or(first.id, |g| g.id);
                self.group = Some(newest);
                self.index = 0;
                newest
            }
            Some(g) if g < first.id => {
                // Fell behind the cache: skip to the oldest kept group.
                self.track
                    .counters
                    .objects_skipped
                    .fetch_add(1, Ordering::Relaxed);
                self.group = Some(first.id);
                self.index = 0;
                first.id
            }
            Some(g) => g,
        };
        let group = state.groups.iter().find(|x| x.id >= current)?;
        if group.id != current {
            // Our group is missing while a newer one is here: wait for it
            // as long as the limits say (it may still come, late or
            // repaired), then move on.
            let wait = self.track.limits.gap_wait;
            if !wait.is_zero() && !state.closed {
                let since = *self.gap_since.get_or_insert_with(Instant::now);
                if since.elapsed() < wait {
                    return None;
                }
            }
            self.gap_since = None;
            self.missed(group.id - current);
            self.group = Some(group.id);
            self.index = 0;
            return Some(Delivery::GroupEnd { group: current });
        }
        while let Some(object) = group.objects.get(self.index) {
            self.index += 1;
            if self
                .skip_before
                .is_some_and(|(g, o)| g == current && object.id < o)
            {
                continue;
            }
            self.track
                .counters
                .objects_out
                .fetch_add(1, Ordering::Relaxed);
            self.track
                .counters
                .bytes_out
                .fetch_add(object.payload.len() as u64, Ordering::Relaxed);
            return Some(Delivery::Object {
                group: current,
                object: object.clone(),
            });
        }
        if group.complete {
            let next = state.groups.iter().find(|x| x.id > current).map(|x| x.id);
            match next {
                // The next group is missing: wait for it (above).
                Some(n) if n > current + 1 && !self.track.limits.gap_wait.is_zero() => {
                    self.group = Some(current + 1);
                    self.index = 0;
                }
                Some(n) => {
                    self.missed(n - current - 1);
                    self.group = Some(n);
                    self.index = 0;
                }
                None => {
                    // Wait for the next group to exist; remember we ended this one.
                    self.group = Some(current + 1);
                    self.index = 0;
                }
            }
            return Some(Delivery::GroupEnd { group: current });
        }
        None
    }

    fn missed(&self, groups: u64) {
        if groups > 0 {
            let counters = &self.track.counters;
            counters.groups_missed.fetch_add(groups, Ordering::Relaxed);
        }
    }
}

impl Drop for TrackReader {
    fn drop(&mut self) {
        self.track.readers.fetch_sub(1, Ordering::Relaxed);
        self.track.touch();
    }
}

#[cfg(test)]
mod tests;

//! Publications: what the origin publishes per namespace. A broadcast outlives
//! its broadcaster's connection so that a reconnect with the same key
//! continues it (same tracks, increasing group ids and media times) and
//! viewers keep their subscriptions.
//!
//! Redundant encoders (OPS-2): a primary and a backup may push the same stream
//! at once. The first one connected is active and feeds the one packager of
//! the broadcast; the other stands by, keeping its latest configuration and
//! current GOP. When the active encoder disconnects, or has written nothing
//! for [`STALL`], the standby takes over at its next tag: a new packager
//! continues from the old one's resume point (next group id, media time after
//! everything packaged) and the standby's GOP is replayed from its keyframe,
//! so viewers get a decodable group at once. The roles are symmetric: a
//! recovered encoder stands by and takes over only if the other one fails in
//! turn (switching back would cost viewers a second glitch). The decision
//! is `failover.rs`'s; this file packages and replays.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moq_transport::data::ExtensionHeaders;
use strom_media::{AudioTag, Output, Packager, PackagerError, VideoTag};
use strom_relay::{
    metrics::Scrape, Broadcast, Broadcasts, CacheLimits, Namespace, Object, Source, TrackCache,
};
use strom_token::media::{self, MediaSigner, ObjectPlace};

use crate::failover::{Failover, Reason, Verdict};

mod standby;
use standby::{Recent, Tag};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("malformed media: {0}")]
    Malformed(#[from] strom_media::FlvError),
    #[error(transparent)]
    Packager(#[from] PackagerError),
}

/// Which encoder of a redundant pair a push is. Both push the same stream
/// with the same credential; the backup says so with `?backup=1` on its key
/// or app (RTMP, as OBS and YouTube's backup URLs do) or in its SRT stream id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Backup,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
        }
    }
}

/// What a push asks for in the query of its RTMP key or app, or of its SRT
/// resource: `?backup=1` (the backup encoder) and `?rendition=360p` (one
/// rendition of the stream, MEDIA-8: its tracks are `video-360p` and
/// `audio-360p` beside the main push's `video` and `audio`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOptions {
    pub backup: bool,
    pub rendition: Option<String>,
}

impl PushOptions {
    pub fn role(&self) -> Role {
        if self.backup {
            Role::Backup
        } else {
            Role::Primary
        }
    }

    /// Splits a `?query` off `text`: the part before it and the options.
    /// Unknown parameters are ignored; a malformed rendition name is refused.
    pub fn split(text: &str) -> Result<(&str, PushOptions), String> {
        let Some((base, query)) = text.split_once('?') else {
            return Ok((text, PushOptions::default()));
        };
        let mut options = PushOptions::default();
        for kv in query.split('&') {
            match kv.split_once('=') {
                Some(("backup", v)) => options.backup |= matches!(v, "1" | "true"),
                Some(("rendition", v)) => options.rendition = Some(rendition_name(v)?),
                _ => {}
            }
        }
        Ok((base, options))
    }

    /// The options of two places (an RTMP app and key) together.
    pub fn merge(self, other: PushOptions) -> PushOptions {
        PushOptions {
            backup: self.backup || other.backup,
            rendition: self.rendition.or(other.rendition),
        }
    }
}

/// A rendition name: 1 to 16 of `a-z`, `0-9`, `-`, `_`, starting with a
/// letter or digit (it becomes part of track names and file names).
pub(crate) fn rendition_name(v: &str) -> Result<String, String> {
    let ok = (1..=16).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "rendition {:?} must be 1 to 16 of a-z, 0-9, '-', '_'",
            v.chars().take(20).collect::<String>()
        ))
    }
}

/// A track's name within the broadcast: `video` for the main push,
/// `video-<rendition>` for a rendition.
fn track_name(base: &str, rendition: Option<&str>) -> String {
    match rendition {
        None => base.to_owned(),
        Some(r) => format!("{base}-{r}"),
    }
}

/// The active encoder has written nothing for this long: a standby with a
/// keyframe takes over.
pub(crate) const STALL: Duration = Duration::from_secs(1);

/// What all renditions of a publication share: its tracks, the merged
/// catalog and the recording.
struct Shared {
    tracks: HashMap<String, Arc<TrackCache>>,
    next_catalog_group: u64,
    /// Each rendition's catalog (track names already qualified); `None` is
    /// the main push.
    catalogs: std::collections::BTreeMap<Option<String>, strom_media::Catalog>,
    /// Where the broadcast is recorded, when recording is on.
    recording: Option<crate::record::Recording>,
}

impl Shared {
    /// One catalog of every rendition's tracks, the main push's first.
    fn merged(&self) -> Option<strom_media::Catalog> {
        let mut all = self.catalogs.values();
        let mut merged = all.next()?.clone();
        for c in all {
            merged.generated_at = merged.generated_at.max(c.generated_at);
            merged.tracks.extend(c.tracks.iter().cloned());
        }
        Some(merged)
    }
}

/// What writes one rendition's tracks: one packager, fed by whichever of
/// its encoders is active.
struct Writer {
    rendition: Option<String>,
    packager: Packager,
    shared: Arc<Mutex<Shared>>,
    /// The group currently being written per track.
    open_groups: HashMap<String, u64>,
    /// Which session's tags are packaged.
    failover: Failover,
    /// Figures of the packagers this writer replaced (counters stay
    /// monotonic across failovers and reconnects).
    earlier: strom_media::PackagerStats,
}

/// Adds `b`'s counters to `a`.
fn add_stats(a: &mut strom_media::PackagerStats, b: &strom_media::PackagerStats) {
    a.video_frames += b.video_frames;
    a.audio_frames += b.audio_frames;
    a.keyframes += b.keyframes;
    a.groups += b.groups;
    a.video_bytes += b.video_bytes;
    a.audio_bytes += b.audio_bytes;
    a.dropped_video_frames += b.dropped_video_frames;
    a.dropped_audio_frames += b.dropped_audio_frames;
    if b.last_keyframe_interval_ms.is_some() {
        a.last_keyframe_interval_ms = b.last_keyframe_interval_ms;
    }
}

impl Writer {
    /// Everything this writer packaged so far.
    fn stats(&self) -> strom_media::PackagerStats {
        let mut total = self.earlier.clone();
        add_stats(&mut total, self.packager.stats());
        total
    }

    /// Closes the groups being written: the next tags come from another
    /// session, which starts a new group at its keyframe.
    fn close_groups(&mut self) {
        let shared = lock(&self.shared);
        for (name, group) in self.open_groups.drain() {
            if let Some(t) = shared.tracks.get(&name) {
                t.finish_group(group);
            }
        }
    }

    /// Another session took over: a fresh packager continues after
    /// everything packaged so far (same groups, increasing media time).
    fn restart(&mut self) {
        self.close_groups();
        let stats = self.packager.stats().clone();
        add_stats(&mut self.earlier, &stats);
        self.packager = Packager::new(Some(self.packager.resume_point()));
    }
}

struct Publication {
    broadcast: Arc<Broadcast>,
    shared: Arc<Mutex<Shared>>,
    /// One writer per rendition (`None`: the main push).
    writers: HashMap<Option<String>, Arc<Mutex<Writer>>>,
    /// Connected sessions by rendition and role.
    sessions: HashMap<(Option<String>, Role), u64>,
    offline_since: Option<Instant>,
}

/// Every namespace this origin publishes or recently published.
pub struct Publications {
    broadcasts: Arc<Broadcasts>,
    limits: CacheLimits,
    /// Signs every object published (P2P-5), when set.
    signer: Option<Arc<MediaSigner>>,
    map: Mutex<HashMap<Namespace, Publication>>,
    recorder: Option<Arc<crate::record::Recorder>>,
    next_session: AtomicU64,
    /// Times a standby encoder took over from a stalled or lost active one.
    pub failovers: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
#[error("{namespace}{} is already being published by a {} encoder", rendition.as_deref().map(|r| format!(" (rendition {r})")).unwrap_or_default(), role.as_str())]
pub struct AlreadyLive {
    pub namespace: Namespace,
    pub rendition: Option<String>,
    pub role: Role,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Publications {
    pub fn new(
        broadcasts: Arc<Broadcasts>,
        limits: CacheLimits,
        signer: Option<Arc<MediaSigner>>,
        recorder: Option<Arc<crate::record::Recorder>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            broadcasts,
            limits,
            signer,
            recorder,
            map: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            failovers: AtomicU64::new(0),
        })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Namespace, Publication>> {
        lock(&self.map)
    }

    /// Starts (or resumes) publishing `namespace` (the rendition and role
    /// `options` name); refused while another encoder of that rendition and
    /// role is connected. The first encoder of a rendition is active; the
    /// other waits as a standby.
    pub fn claim(
        self: &Arc<Self>,
        namespace: Namespace,
        options: &PushOptions,
    ) -> Result<PublishSession, AlreadyLive> {
        let role = options.role();
        let rendition = options.rendition.clone();
        let mut map = self.map();
        let publication = map.entry(namespace.clone()).or_insert_with(|| Publication {
            broadcast: Broadcast::new(namespace.clone(), Source::Local, self.limits),
            shared: Arc::new(Mutex::new(Shared {
                tracks: HashMap::new(),
                next_catalog_group: 0,
                catalogs: Default::default(),
                recording: self.recorder.as_ref().and_then(|r| r.start(&namespace)),
            })),
            writers: HashMap::new(),
            sessions: HashMap::new(),
            offline_since: None,
        });
        let slot = (rendition.clone(), role);
        if publication.sessions.contains_key(&slot) {
            return Err(AlreadyLive {
                namespace,
                rendition,
                role,
            });
        }
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        if publication.sessions.is_empty() {
            // (Re)publish the broadcast; the tracks are the broadcast's and
            // outlive a broadcaster's reconnect.
            let broadcast = self.broadcasts.insert(publication.broadcast.clone());
            let mut shared = lock(&publication.shared);
            let mut names: Vec<String> = shared.tracks.keys().cloned().collect();
            names.push("catalog".into());
            shared.tracks = names
                .into_iter()
                .map(|name| {
                    let track = broadcast.create_track(&name);
                    (name, track)
                })
                .collect();
        }
        let rendition_live = publication.sessions.keys().any(|(r, _)| *r == rendition);
        publication.sessions.insert(slot, id);
        publication.offline_since = None;
        {
            let mut shared = lock(&publication.shared);
            for base in ["video", "audio"] {
                let name = track_name(base, rendition.as_deref());
                if let std::collections::hash_map::Entry::Vacant(slot) = shared.tracks.entry(name) {
                    let track = self
                        .broadcasts
                        .insert(publication.broadcast.clone())
                        .create_track(slot.key());
                    slot.insert(track);
                }
            }
        }
        let shared = publication.shared.clone();
        let writer = publication
            .writers
            .entry(rendition.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Writer {
                    rendition: rendition.clone(),
                    // A new rendition keeps the encoder's own timestamps.
                    packager: Packager::new(None),
                    shared,
                    open_groups: HashMap::new(),
                    failover: Failover::new(id, STALL, Instant::now()),
                    earlier: Default::default(),
                }))
            })
            .clone();
        {
            let mut w = lock(&writer);
            if w.failover.connected(id, !rendition_live, Instant::now()) {
                w.restart();
            }
        }
        Ok(PublishSession {
            publications: self.clone(),
            writer,
            namespace,
            role,
            rendition,
            id,
            recent: Recent::default(),
            bitrates: (None, None),
        })
    }

    /// Ends broadcasts whose broadcaster has been gone longer than `linger`.
    pub fn expire(&self, linger: Duration, now: Instant) {
        let mut map = self.map();
        let expired: Vec<Namespace> = map
            .iter()
            .filter(|(_, p)| {
                p.sessions.is_empty()
                    && p.offline_since
                        .is_some_and(|t| now.duration_since(t) > linger)
            })
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in expired {
            if let Some(p) = map.remove(&ns) {
                tracing::info!(namespace = %ns, "broadcast ended: broadcaster did not return");
                self.broadcasts.remove(&p.broadcast);
            }
        }
    }

    /// The origin is stopping: every broadcast ends and its recording gets
    /// its `end` line (what encoders still send is no longer recorded).
    pub fn end_all(&self) {
        let ended: Vec<Publication> = self.map().drain().map(|(_, p)| p).collect();
        for p in ended {
            lock(&p.shared).recording.take();
            self.broadcasts.remove(&p.broadcast);
        }
    }

    /// True while an encoder of that rendition and role is connected to
    /// `namespace`.
    pub fn is_connected(&self, namespace: &Namespace, options: &PushOptions) -> bool {
        self.map().get(namespace).is_some_and(|p| {
            p.sessions
                .contains_key(&(options.rendition.clone(), options.role()))
        })
    }

    /// Adds to the page what each stream's encoders deliver (frames, bytes,
    /// keyframe interval per rendition), the encoders connected per role
    /// (1 for the one feeding the broadcast, 0 for a standby), failovers.
    pub fn collect(&self, scrape: &Scrape) {
        let stream = ["tenant", "event", "stream", "rendition"];
        let track = ["tenant", "event", "stream", "rendition", "track"];
        let encoder = ["tenant", "event", "stream", "rendition", "encoder"];
        let per_track = [
            (
                "strom_ingest_frames_total",
                "Frames packaged per stream, rendition and track (rate: frames per second).",
            ),
            (
                "strom_ingest_media_bytes_total",
                "Media bytes packaged per stream, rendition and track (rate × 8: bitrate).",
            ),
            (
                "strom_ingest_dropped_frames_total",
                "Frames dropped (before the first keyframe or configuration, or empty).",
            ),
        ]
        .map(|(name, help)| scrape.counter(name, help, &track));
        let keyframes = scrape.counter(
            "strom_ingest_keyframes_total",
            "Keyframes (group starts) per stream and rendition.",
            &stream,
        );
        let interval = scrape.gauge(
            "strom_ingest_keyframe_interval_seconds",
            "The last interval between keyframes.",
            &stream,
        );
        let active = scrape.gauge(
            "strom_ingest_encoder_active",
            "Encoders connected per stream, rendition and role: 1 feeds the broadcast, 0 stands by.",
            &encoder,
        );
        for (ns, p) in self.map().iter() {
            let [tenant, event, name] = strom_relay::metrics::namespace_values(ns);
            let at = |rendition: &Option<String>| {
                [
                    tenant.clone(),
                    event.clone(),
                    name.clone(),
                    rendition.clone().unwrap_or_else(|| "main".into()),
                ]
            };
            for ((rendition, role), id) in &p.sessions {
                let feeds = p
                    .writers
                    .get(rendition)
                    .is_some_and(|w| lock(w).failover.is_active(*id));
                let [t, e, n, r] = at(rendition);
                active
                    .with_label_values(&[&t, &e, &n, &r, role.as_str()])
                    .set(f64::from(u8::from(feeds)));
            }
            for (rendition, w) in &p.writers {
                let s = lock(w).stats();
                let [t, e, n, r] = at(rendition);
                let figures = [
                    (s.video_frames, s.audio_frames),
                    (s.video_bytes, s.audio_bytes),
                    (s.dropped_video_frames, s.dropped_audio_frames),
                ];
                for (family, (video, audio)) in per_track.iter().zip(figures) {
                    for (track, v) in [("video", video), ("audio", audio)] {
                        family
                            .with_label_values(&[&t, &e, &n, &r, track])
                            .inc_by(v as f64);
                    }
                }
                keyframes
                    .with_label_values(&[&t, &e, &n, &r])
                    .inc_by(s.keyframes as f64);
                if let Some(ms) = s.last_keyframe_interval_ms {
                    interval
                        .with_label_values(&[&t, &e, &n, &r])
                        .set(ms as f64 / 1000.0);
                }
            }
        }
        scrape.count(
            "strom_ingest_failovers_total",
            "Times a standby encoder took over from a stalled or disconnected one.",
            self.failovers.load(Ordering::Relaxed),
        );
    }

    pub fn is_live(&self, namespace: &Namespace) -> bool {
        self.map()
            .get(namespace)
            .is_some_and(|p| !p.sessions.is_empty())
    }
}

/// One encoder's push: packages its tags into the broadcast's tracks while
/// it is the active encoder, and keeps its current GOP while it stands by.
pub struct PublishSession {
    publications: Arc<Publications>,
    writer: Arc<Mutex<Writer>>,
    pub namespace: Namespace,
    pub role: Role,
    pub rendition: Option<String>,
    id: u64,
    recent: Recent,
    bitrates: (Option<u64>, Option<u64>),
}

fn wall_clock_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl PublishSession {
    pub fn push_video(&mut self, timestamp_ms: u32, body: &Bytes) -> Result<(), IngestError> {
        let tag = VideoTag::parse(body)?;
        self.push(timestamp_ms, Tag::Video(tag))
    }

    pub fn push_audio(&mut self, timestamp_ms: u32, body: &Bytes) -> Result<(), IngestError> {
        let tag = AudioTag::parse(body)?;
        self.push(timestamp_ms, Tag::Audio(tag))
    }

    /// A video tag already parsed (SRT's MPEG-TS demux yields these).
    pub fn push_video_tag(&mut self, timestamp_ms: u32, tag: &VideoTag) -> Result<(), IngestError> {
        self.push(timestamp_ms, Tag::Video(tag.clone()))
    }

    /// An audio tag already parsed.
    pub fn push_audio_tag(&mut self, timestamp_ms: u32, tag: &AudioTag) -> Result<(), IngestError> {
        self.push(timestamp_ms, Tag::Audio(tag.clone()))
    }

    /// True while this session's tags are the ones published.
    pub fn is_active(&self) -> bool {
        lock(&self.writer).failover.is_active(self.id)
    }

    fn push(&mut self, timestamp_ms: u32, tag: Tag) -> Result<(), IngestError> {
        // Kept while active too: demoted after a stall, this session must be
        // able to take over again at once.
        self.recent.keep(timestamp_ms, tag.clone());
        let writer = self.writer.clone();
        let mut writer = lock(&writer);
        let reason = match writer
            .failover
            .tag(self.id, self.recent.ready(), Instant::now())
        {
            Verdict::StandBy => return Ok(()),
            Verdict::Publish => return self.package(&mut writer, timestamp_ms, &tag),
            Verdict::TakeOver(reason) => reason,
        };
        writer.restart();
        self.publications.failovers.fetch_add(1, Ordering::Relaxed);
        let (reason, stalled_ms) = match reason {
            Reason::Lost => ("active encoder disconnected", None),
            Reason::Stalled(quiet) => ("active encoder stalled", Some(quiet.as_millis() as u64)),
        };
        tracing::warn!(
            namespace = %self.namespace,
            role = self.role.as_str(),
            reason,
            stalled_ms,
            "encoder failover: this encoder now feeds the broadcast"
        );
        writer
            .packager
            .set_bitrates(self.bitrates.0, self.bitrates.1);
        // Replayed from its keyframe (this tag included): viewers get a
        // decodable group at once.
        for (t, tag) in self.recent.replay() {
            self.package(&mut writer, t, &tag)?;
        }
        Ok(())
    }

    fn package(
        &self,
        writer: &mut Writer,
        timestamp_ms: u32,
        tag: &Tag,
    ) -> Result<(), IngestError> {
        let now = wall_clock_micros();
        let outputs = match tag {
            Tag::Video(v) => writer.packager.push_video(timestamp_ms, v, now)?,
            Tag::Audio(a) => writer.packager.push_audio(timestamp_ms, a, now)?,
        };
        writer.failover.wrote(Instant::now());
        self.apply(writer, outputs);
        Ok(())
    }

    /// Bitrate hints from the encoder's metadata, for the catalog.
    pub fn set_bitrates(&mut self, video_bps: Option<u64>, audio_bps: Option<u64>) {
        self.bitrates = (video_bps, audio_bps);
        let mut writer = lock(&self.writer);
        if writer.failover.is_active(self.id) {
            writer.packager.set_bitrates(video_bps, audio_bps);
        }
    }

    /// The origin's signature over an object, as its MoQT extension header.
    fn signature(
        &self,
        track: &str,
        group: u64,
        object: u64,
        payload: &[u8],
    ) -> Option<Arc<ExtensionHeaders>> {
        let signer = self.publications.signer.as_ref()?;
        let place = ObjectPlace {
            namespace: self.namespace.fields(),
            track,
            group,
            object,
        };
        let mut ext = ExtensionHeaders::new();
        ext.set_bytesvalue(
            media::SIGNATURE_EXTENSION,
            signer.sign(&place, payload).to_vec(),
        );
        Some(Arc::new(ext))
    }

    fn apply(&self, writer: &mut Writer, outputs: Vec<Output>) {
        let now = std::time::Instant::now();
        let rendition = writer.rendition.clone();
        let mut shared = lock(&writer.shared);
        for output in outputs {
            match output {
                Output::Catalog(mut catalog) => {
                    for t in &mut catalog.tracks {
                        t.name = track_name(&t.name, rendition.as_deref());
                    }
                    shared.catalogs.insert(rendition.clone(), catalog);
                    let Some(merged) = shared.merged() else {
                        continue;
                    };
                    let Some(track) = shared.tracks.get("catalog").cloned() else {
                        continue;
                    };
                    let group = shared.next_catalog_group;
                    shared.next_catalog_group += 1;
                    let payload = match merged.to_json() {
                        Ok(json) => Bytes::from(json),
                        Err(err) => {
                            tracing::error!(error = %err, "catalog does not serialise");
                            continue;
                        }
                    };
                    track.insert(
                        group,
                        Object {
                            id: 0,
                            ext: self.signature("catalog", group, 0, &payload),
                            payload,
                            meta: Default::default(),
                        },
                        now,
                    );
                    track.finish_group(group);
                    if group > 0 {
                        track.finish_group(group - 1);
                    }
                    if let Some(r) = &shared.recording {
                        r.catalog(&merged);
                    }
                }
                Output::Object {
                    track: base,
                    group,
                    object,
                    payload,
                    ..
                } => {
                    let name = track_name(base.as_str(), rendition.as_deref());
                    let Some(track) = shared.tracks.get(&name) else {
                        continue;
                    };
                    if let Some(open) = writer.open_groups.insert(name.clone(), group) {
                        if open != group {
                            track.finish_group(open);
                        }
                    }
                    let meta = strom_relay::object_meta(base.as_str(), &payload);
                    if let Some(r) = &shared.recording {
                        r.object(&name, group, payload.clone(), meta.duration_ticks);
                    }
                    track.insert(
                        group,
                        Object {
                            id: object,
                            ext: self.signature(&name, group, object, &payload),
                            payload,
                            meta,
                        },
                        now,
                    );
                }
            }
        }
    }
}

impl Drop for PublishSession {
    fn drop(&mut self) {
        {
            let mut writer = lock(&self.writer);
            if writer.failover.disconnected(self.id) {
                writer.close_groups();
            }
        }
        let mut map = self.publications.map();
        if let Some(p) = map.get_mut(&self.namespace) {
            let slot = (self.rendition.clone(), self.role);
            if p.sessions.get(&slot) == Some(&self.id) {
                p.sessions.remove(&slot);
            }
            if p.sessions.is_empty() {
                p.offline_since = Some(Instant::now());
                if let Some(r) = &lock(&p.shared).recording {
                    r.pause();
                }
            }
        }
    }
}

//! Publications: what the origin publishes per namespace. A broadcast outlives
//! its broadcaster's connection so that a reconnect with the same key
//! continues it (same tracks, increasing group ids and media times) and
//! viewers keep their subscriptions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moq_transport::data::ExtensionHeaders;
use strom_edge::broadcast::{Broadcast, Broadcasts, Namespace, Source};
use strom_edge::cache::{CacheLimits, Object, TrackCache};
use strom_media::{AudioTag, Output, Packager, PackagerError, Resume, VideoTag};
use strom_token::media::{self, MediaSigner, ObjectPlace};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("malformed media: {0}")]
    Malformed(#[from] strom_media::FlvError),
    #[error(transparent)]
    Packager(#[from] PackagerError),
}

struct Publication {
    broadcast: Arc<Broadcast>,
    live: bool,
    resume: Option<Resume>,
    next_catalog_group: u64,
    offline_since: Option<Instant>,
}

/// Every namespace this origin publishes or recently published.
pub struct Publications {
    broadcasts: Arc<Broadcasts>,
    limits: CacheLimits,
    /// Signs every object published (P2P-5), when set.
    signer: Option<Arc<MediaSigner>>,
    map: Mutex<HashMap<Namespace, Publication>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0} is already being published")]
pub struct AlreadyLive(pub Namespace);

impl Publications {
    pub fn new(
        broadcasts: Arc<Broadcasts>,
        limits: CacheLimits,
        signer: Option<Arc<MediaSigner>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            broadcasts,
            limits,
            signer,
            map: Mutex::new(HashMap::new()),
        })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Namespace, Publication>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts (or resumes) publishing `namespace`; refused while another
    /// broadcaster is live on it.
    pub fn claim(self: &Arc<Self>, namespace: Namespace) -> Result<PublishSession, AlreadyLive> {
        let mut map = self.map();
        let publication = map.entry(namespace.clone()).or_insert_with(|| {
            let broadcast = Broadcast::new(namespace.clone(), Source::Local, self.limits);
            Publication {
                broadcast,
                live: false,
                resume: None,
                next_catalog_group: 0,
                offline_since: None,
            }
        });
        if publication.live {
            return Err(AlreadyLive(namespace));
        }
        publication.live = true;
        publication.offline_since = None;
        let broadcast = self.broadcasts.insert(publication.broadcast.clone());
        let tracks = ["catalog", "video", "audio"]
            .into_iter()
            .map(|name| (name, broadcast.create_track(name)))
            .collect();
        Ok(PublishSession {
            publications: self.clone(),
            namespace,
            packager: Packager::new(publication.resume),
            next_catalog_group: publication.next_catalog_group,
            tracks,
            open_groups: HashMap::new(),
        })
    }

    /// Ends broadcasts whose broadcaster has been gone longer than `linger`.
    pub fn expire(&self, linger: Duration, now: Instant) {
        let mut map = self.map();
        let expired: Vec<Namespace> = map
            .iter()
            .filter(|(_, p)| {
                !p.live
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

    pub fn is_live(&self, namespace: &Namespace) -> bool {
        self.map().get(namespace).is_some_and(|p| p.live)
    }
}

/// One broadcaster's push: packages its tags into the broadcast's tracks.
pub struct PublishSession {
    publications: Arc<Publications>,
    pub namespace: Namespace,
    packager: Packager,
    next_catalog_group: u64,
    tracks: HashMap<&'static str, Arc<TrackCache>>,
    /// The group currently being written per track.
    open_groups: HashMap<&'static str, u64>,
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
        let outputs = self
            .packager
            .push_video(timestamp_ms, &tag, wall_clock_micros())?;
        self.apply(outputs);
        Ok(())
    }

    pub fn push_audio(&mut self, timestamp_ms: u32, body: &Bytes) -> Result<(), IngestError> {
        let tag = AudioTag::parse(body)?;
        let outputs = self
            .packager
            .push_audio(timestamp_ms, &tag, wall_clock_micros())?;
        self.apply(outputs);
        Ok(())
    }

    /// A video tag already parsed (SRT's MPEG-TS demux yields these).
    pub fn push_video_tag(&mut self, timestamp_ms: u32, tag: &VideoTag) -> Result<(), IngestError> {
        let outputs = self
            .packager
            .push_video(timestamp_ms, tag, wall_clock_micros())?;
        self.apply(outputs);
        Ok(())
    }

    /// An audio tag already parsed.
    pub fn push_audio_tag(&mut self, timestamp_ms: u32, tag: &AudioTag) -> Result<(), IngestError> {
        let outputs = self
            .packager
            .push_audio(timestamp_ms, tag, wall_clock_micros())?;
        self.apply(outputs);
        Ok(())
    }

    /// Bitrate hints from the encoder's metadata, for the catalog.
    pub fn set_bitrates(&mut self, video_bps: Option<u64>, audio_bps: Option<u64>) {
        self.packager.set_bitrates(video_bps, audio_bps);
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

    fn apply(&mut self, outputs: Vec<Output>) {
        let now = std::time::Instant::now();
        for output in outputs {
            match output {
                Output::Catalog(catalog) => {
                    let Some(track) = self.tracks.get("catalog") else {
                        continue;
                    };
                    let group = self.next_catalog_group;
                    self.next_catalog_group += 1;
                    let payload = match catalog.to_json() {
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
                }
                Output::Object {
                    track: name,
                    group,
                    object,
                    payload,
                    ..
                } => {
                    let name = name.as_str();
                    let Some(track) = self.tracks.get(name) else {
                        continue;
                    };
                    if let Some(open) = self.open_groups.insert(name, group) {
                        if open != group {
                            track.finish_group(open);
                        }
                    }
                    let meta = strom_edge::object_meta(name, &payload);
                    track.insert(
                        group,
                        Object {
                            id: object,
                            ext: self.signature(name, group, object, &payload),
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
        for (name, group) in self.open_groups.drain() {
            if let Some(t) = self.tracks.get(name) {
                t.finish_group(group);
            }
        }
        let mut map = self.publications.map();
        if let Some(p) = map.get_mut(&self.namespace) {
            p.live = false;
            p.offline_since = Some(Instant::now());
            p.resume = Some(self.packager.resume_point());
            p.next_catalog_group = self.next_catalog_group;
        }
    }
}

//! Recording (MEDIA-6): every broadcast's CMAF objects are written to disk as
//! they are published, and served afterwards as HLS VOD (see [`crate::vod`]).
//!
//! Layout under the data directory, one directory per broadcast session:
//!
//! ```text
//! recordings/<tenant>/<event>/<stream>/<started unix ms>/
//!     index.log            one line per event, appended (see below)
//!     catalog.json         the broadcast's latest catalog
//!     <track>/init-<n>.mp4 each init segment the track had
//!     <track>/<group>.m4s  one file per group (GOP), complete
//!     <track>/<group>.part the group being written
//! ```
//!
//! `index.log` lines: `init <track> <file> <timescale>`,
//! `seg <track> <group> <init file> <duration ticks>`, `pause` (no encoder
//! connected; what is recorded so far plays as a finished VOD), `end`. A line
//! is appended only after the file it names is complete and synced, so a
//! crash loses at most the groups being written; at the next start
//! [`Recorder::open`] keeps the whole chunks of those `.part` files, indexes
//! them and ends the recording. A torn last line is ignored.
//!
//! Writing happens on one thread fed by a channel: the publishing path never
//! waits for a disk.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strom_media::Catalog;
use strom_relay::Namespace;

/// Recording settings (`[origin.recording]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    pub enabled: bool,
    /// Recordings older than this are deleted (DATA-7); 0 keeps them until
    /// deleted by hand.
    pub retention_days: u32,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: 30,
        }
    }
}

pub(crate) const INDEX: &str = "index.log";
pub(crate) const CATALOG: &str = "catalog.json";

enum Command {
    Start {
        id: u64,
        dir: PathBuf,
    },
    Catalog {
        id: u64,
        catalog: Box<Catalog>,
    },
    Object {
        id: u64,
        track: String,
        group: u64,
        payload: Bytes,
        duration_ticks: u64,
    },
    Pause {
        id: u64,
    },
    Stop {
        id: u64,
    },
    DeleteEvent {
        dir: PathBuf,
    },
    /// Answers once everything sent before it is written.
    Flush(mpsc::Sender<()>),
}

/// Writes recordings on its own thread.
pub struct Recorder {
    root: PathBuf,
    tx: Option<mpsc::Sender<Command>>,
    next_id: std::sync::atomic::AtomicU64,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One broadcast's recording; dropping it ends the recording.
pub struct Recording {
    id: u64,
    tx: mpsc::Sender<Command>,
}

impl Recording {
    pub fn catalog(&self, catalog: &Catalog) {
        let _ = self.tx.send(Command::Catalog {
            id: self.id,
            catalog: Box::new(catalog.clone()),
        });
    }

    pub fn object(&self, track: &str, group: u64, payload: Bytes, duration_ticks: u64) {
        let _ = self.tx.send(Command::Object {
            id: self.id,
            track: track.to_owned(),
            group,
            payload,
            duration_ticks,
        });
    }

    /// No encoder is connected: close the groups being written, so that
    /// what is recorded plays as a finished VOD until an encoder returns.
    pub fn pause(&self) {
        let _ = self.tx.send(Command::Pause { id: self.id });
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop { id: self.id });
    }
}

/// The recordings directory of `namespace`.
pub(crate) fn stream_dir(root: &Path, namespace: &Namespace) -> PathBuf {
    let mut dir = root.to_path_buf();
    for field in namespace.fields() {
        dir.push(field);
    }
    dir
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Recorder {
    /// The recorder writing under `root` (`<data dir>/recordings`); first
    /// finishes recordings a crash or stop left open.
    pub fn open(root: PathBuf) -> io::Result<Recorder> {
        fs::create_dir_all(&root)?;
        for dir in recording_dirs(&root) {
            match recover(&dir) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(recording = %dir.display(), groups = n, "recording left open by an earlier run: kept its complete chunks and ended it")
                }
                Err(e) => {
                    tracing::error!(recording = %dir.display(), error = %e, "recording could not be recovered")
                }
            }
        }
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || write_loop(rx))?;
        Ok(Recorder {
            root,
            tx: Some(tx),
            next_id: std::sync::atomic::AtomicU64::new(1),
            thread: Some(thread),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts recording a broadcast of `namespace`.
    pub fn start(&self, namespace: &Namespace) -> Option<Recording> {
        let tx = self.tx.as_ref()?.clone();
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut started = unix_ms(SystemTime::now());
        let base = stream_dir(&self.root, namespace);
        // Two sessions within one millisecond must not share a directory.
        while base.join(started.to_string()).exists() {
            started += 1;
        }
        let dir = base.join(started.to_string());
        tx.send(Command::Start { id, dir }).ok()?;
        Some(Recording { id, tx })
    }

    /// Deletes every recording of an event (DATA-7: the event was deleted),
    /// after what is queued for it has been written; recordings still
    /// running for it stop.
    pub fn delete_event(&self, tenant: &str, event: &str) {
        let valid = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !(valid(tenant) && valid(event)) {
            return;
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Command::DeleteEvent {
                dir: self.root.join(tenant).join(event),
            });
        }
    }

    /// Waits (blocking, up to `within`) until everything sent so far is
    /// written: recordings ended before it have their `end` line and are
    /// synced. True when it got that far.
    pub fn flush(&self, within: Duration) -> bool {
        let Some(tx) = &self.tx else {
            return true;
        };
        let (done_tx, done) = mpsc::channel();
        if tx.send(Command::Flush(done_tx)).is_err() {
            return false;
        }
        done.recv_timeout(within).is_ok()
    }

    /// Deletes recordings older than `retention` (by start time); returns
    /// how many were deleted.
    pub fn expire(&self, retention: Duration, now: SystemTime) -> usize {
        let cutoff = unix_ms(now).saturating_sub(retention.as_millis() as u64);
        let mut deleted = 0;
        for dir in recording_dirs(&self.root) {
            let started = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u64>().ok());
            if started.is_some_and(|s| s < cutoff) {
                match fs::remove_dir_all(&dir) {
                    Ok(()) => {
                        deleted += 1;
                        tracing::info!(recording = %dir.display(), "recording deleted: retention period ended");
                        remove_empty_parents(&dir, &self.root);
                    }
                    Err(e) => {
                        tracing::error!(recording = %dir.display(), error = %e, "recording could not be deleted")
                    }
                }
            }
        }
        deleted
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn remove_empty_parents(dir: &Path, root: &Path) {
    let mut parent = dir.parent();
    while let Some(p) = parent {
        if p == root || !p.starts_with(root) || fs::remove_dir(p).is_err() {
            break;
        }
        parent = p.parent();
    }
}

/// Every `<tenant>/<event>/<stream>/<started>` directory under `root`.
pub(crate) fn recording_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut level = vec![root.to_path_buf()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for dir in &level {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    next.push(e.path());
                }
            }
        }
        level = next;
    }
    out.extend(level);
    out.sort();
    out
}

struct Track {
    init: Option<String>,
    /// Group being written, its file and duration so far.
    open: Option<(u64, File, u64)>,
}

struct Active {
    dir: PathBuf,
    index: File,
    tracks: HashMap<String, Track>,
    catalogs: u64,
    /// Init segments already written, by content.
    inits: HashMap<(String, Bytes), String>,
    failed: bool,
}

fn append_line(index: &mut File, line: &str) -> io::Result<()> {
    index.write_all(format!("{line}\n").as_bytes())?;
    index.sync_data()
}

fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data)?;
    fs::rename(tmp, path)
}

impl Active {
    fn start(dir: PathBuf) -> io::Result<Active> {
        fs::create_dir_all(&dir)?;
        let index = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(INDEX))?;
        Ok(Active {
            dir,
            index,
            tracks: HashMap::new(),
            catalogs: 0,
            inits: HashMap::new(),
            failed: false,
        })
    }

    fn catalog(&mut self, catalog: &Catalog) -> io::Result<()> {
        use base64::Engine as _;
        let json = catalog
            .to_json()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        for t in &catalog.tracks {
            let Some(init) = &t.init_data else { continue };
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(init) else {
                continue;
            };
            let Some(name) = track_name(&t.name) else {
                continue;
            };
            let key = (t.name.clone(), Bytes::from(bytes));
            let file = match self.inits.get(&key) {
                Some(file) => file.clone(),
                None => {
                    let file = format!("init-{}.mp4", self.catalogs);
                    let dir = self.dir.join(name);
                    fs::create_dir_all(&dir)?;
                    write_atomic(&dir.join(&file), &key.1)?;
                    append_line(
                        &mut self.index,
                        &format!("init {name} {file} {}", t.timescale.unwrap_or(1000)),
                    )?;
                    self.inits.insert(key, file.clone());
                    file
                }
            };
            let track = self.tracks.entry(name.to_owned()).or_insert(Track {
                init: None,
                open: None,
            });
            if track.init.as_deref() != Some(file.as_str()) {
                // A new configuration starts with a new group; close the old one.
                close_group(&self.dir, &mut self.index, name, track)?;
                track.init = Some(file);
            }
        }
        self.catalogs += 1;
        write_atomic(&self.dir.join(CATALOG), json.as_bytes())
    }

    fn object(&mut self, name: &str, group: u64, payload: &[u8], duration: u64) -> io::Result<()> {
        let Some(track) = self.tracks.get_mut(name) else {
            return Ok(());
        };
        if track.init.is_none() {
            return Ok(());
        }
        if track.open.as_ref().is_some_and(|(g, _, _)| *g != group) {
            close_group(&self.dir, &mut self.index, name, track)?;
        }
        if track.open.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(name).join(format!("{group}.part")))?;
            track.open = Some((group, file, 0));
        }
        let (_, file, total) = track.open.as_mut().expect("opened above");
        file.write_all(payload)?;
        *total += duration;
        Ok(())
    }

    fn pause(&mut self, line: &str) -> io::Result<()> {
        let names: Vec<String> = self.tracks.keys().cloned().collect();
        for name in names {
            if let Some(track) = self.tracks.get_mut(&name) {
                close_group(&self.dir, &mut self.index, &name, track)?;
            }
        }
        append_line(&mut self.index, line)
    }
}

/// Completes the group being written: synced, renamed, indexed.
fn close_group(dir: &Path, index: &mut File, name: &str, track: &mut Track) -> io::Result<()> {
    let Some((group, file, duration)) = track.open.take() else {
        return Ok(());
    };
    file.sync_data()?;
    drop(file);
    let tdir = dir.join(name);
    fs::rename(
        tdir.join(format!("{group}.part")),
        tdir.join(format!("{group}.m4s")),
    )?;
    let init = track.init.as_deref().unwrap_or("init-0.mp4");
    append_line(index, &format!("seg {name} {group} {init} {duration}"))
}

/// Track names as they appear on disk: `video`, `audio`, or those with a
/// rendition (`video-360p`; checked at ingest).
fn track_name(name: &str) -> Option<&str> {
    let ok = (name.starts_with("video") || name.starts_with("audio"))
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
    ok.then_some(name)
}

fn write_loop(rx: mpsc::Receiver<Command>) {
    let mut active: HashMap<u64, Active> = HashMap::new();
    while let Ok(cmd) = rx.recv() {
        let (id, result) = match cmd {
            Command::Start { id, dir } => match Active::start(dir.clone()) {
                Ok(a) => {
                    tracing::info!(recording = %dir.display(), "recording started");
                    active.insert(id, a);
                    (id, Ok(()))
                }
                Err(e) => (id, Err(e)),
            },
            Command::Catalog { id, catalog } => match active.get_mut(&id) {
                Some(a) if !a.failed => (id, a.catalog(&catalog)),
                _ => continue,
            },
            Command::Object {
                id,
                track,
                group,
                payload,
                duration_ticks,
            } => match active.get_mut(&id) {
                Some(a) if !a.failed => (id, a.object(&track, group, &payload, duration_ticks)),
                _ => continue,
            },
            Command::Pause { id } => match active.get_mut(&id) {
                Some(a) if !a.failed => (id, a.pause("pause")),
                _ => continue,
            },
            Command::DeleteEvent { dir } => {
                for a in active.values_mut().filter(|a| a.dir.starts_with(&dir)) {
                    a.failed = true;
                }
                match fs::remove_dir_all(&dir) {
                    Ok(()) => {
                        tracing::info!(recordings = %dir.display(), "recordings deleted: their event was deleted")
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::error!(recordings = %dir.display(), error = %e, "recordings of a deleted event could not be deleted")
                    }
                }
                continue;
            }
            Command::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Command::Stop { id } => match active.remove(&id) {
                Some(mut a) if !a.failed => {
                    let r = a.pause("end");
                    tracing::info!(recording = %a.dir.display(), "recording ended");
                    (id, r)
                }
                _ => continue,
            },
        };
        if let Err(e) = result {
            // A full or failing disk stops this recording, never the broadcast.
            tracing::error!(error = %e, "recording stopped: write failed");
            if let Some(a) = active.get_mut(&id) {
                a.failed = true;
            }
        }
    }
    for (_, mut a) in active {
        let _ = a.pause("end");
    }
}

/// One line of `index.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IndexLine {
    Init {
        track: String,
        file: String,
        timescale: u64,
    },
    Segment {
        track: String,
        group: u64,
        init: String,
        duration: u64,
    },
    Pause,
    End,
}

/// The complete lines of an index (a torn or unknown line is skipped).
pub(crate) fn read_index(text: &str) -> Vec<IndexLine> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                ["init", track, file, ts] => Some(IndexLine::Init {
                    track: track.to_string(),
                    file: file.to_string(),
                    timescale: ts.parse().ok()?,
                }),
                ["seg", track, group, init, duration] => Some(IndexLine::Segment {
                    track: track.to_string(),
                    group: group.parse().ok()?,
                    init: init.to_string(),
                    duration: duration.parse().ok()?,
                }),
                ["pause"] => Some(IndexLine::Pause),
                ["end"] => Some(IndexLine::End),
                _ => None,
            }
        })
        .collect()
}

/// Whole chunks (moof + mdat pairs) at the start of `data`: their length
/// and total duration.
fn whole_chunks(data: &[u8]) -> (usize, u64) {
    let mut at = 0;
    let mut duration = 0;
    loop {
        let Some(len) = chunk_len(&data[at..]) else {
            return (at, duration);
        };
        match strom_media::cmaf::parse_chunk(&data[at..at + len]) {
            Ok(info) => duration += info.duration,
            Err(_) => return (at, duration),
        }
        at += len;
    }
}

/// The length of the leading boxes up to and including the first mdat.
fn chunk_len(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let header = data.get(at..at + 8)?;
        let size = u32::from_be_bytes(header[..4].try_into().ok()?) as usize;
        if size < 8 || at + size > data.len() {
            return None;
        }
        at += size;
        if &header[4..8] == b"mdat" {
            return Some(at);
        }
    }
}

/// Ends a recording left open: keeps the whole chunks of each `.part` file
/// and indexes them. Returns how many groups were recovered.
pub(crate) fn recover(dir: &Path) -> io::Result<usize> {
    let index_path = dir.join(INDEX);
    let text = fs::read_to_string(&index_path).unwrap_or_default();
    let lines = read_index(&text);
    if matches!(lines.last(), Some(IndexLine::End)) {
        return Ok(0);
    }
    let mut index = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&index_path)?;
    if !text.is_empty() && !text.ends_with('\n') {
        // A torn last line: finish it so the next line stands alone.
        index.write_all(b"\n")?;
    }
    let mut recovered = 0;
    let mut names: Vec<String> = lines
        .iter()
        .filter_map(|l| match l {
            IndexLine::Init { track, .. } => Some(track.clone()),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    for name in names.iter().map(String::as_str) {
        let init = lines.iter().rev().find_map(|l| match l {
            IndexLine::Init { track, file, .. } if track == name => Some(file.clone()),
            _ => None,
        });
        let Some(init) = init else { continue };
        let tdir = dir.join(name);
        let Ok(entries) = fs::read_dir(&tdir) else {
            continue;
        };
        let mut parts: Vec<(u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                let group = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".part")?
                    .parse()
                    .ok()?;
                Some((group, path))
            })
            .collect();
        parts.sort();
        for (group, path) in parts {
            let data = fs::read(&path)?;
            let (len, duration) = whole_chunks(&data);
            if len == 0 {
                fs::remove_file(&path)?;
                continue;
            }
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(len as u64)?;
            file.sync_data()?;
            fs::rename(&path, tdir.join(format!("{group}.m4s")))?;
            append_line(&mut index, &format!("seg {name} {group} {init} {duration}"))?;
            recovered += 1;
        }
    }
    append_line(&mut index, "end")?;
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_ignored() {
        let lines =
            read_index("init video init-0.mp4 90000\nseg video 0 init-0.mp4 90000\nseg vid");
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1],
            IndexLine::Segment {
                track: "video".into(),
                group: 0,
                init: "init-0.mp4".into(),
                duration: 90000
            }
        );
        assert!(read_index("garbage line\nseg video x y z\n").is_empty());
    }

    #[test]
    fn retention_deletes_old_recordings_only() {
        let root = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let old = unix_ms(now - 40 * day);
        let new = unix_ms(now - day);
        for started in [old, new] {
            let d = root.path().join(format!("acme/e1/main/{started}/video"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("0.m4s"), b"x").unwrap();
        }
        let recorder = Recorder::open(root.path().to_path_buf()).unwrap();
        assert_eq!(recorder.expire(30 * day, now), 1);
        assert!(!root.path().join(format!("acme/e1/main/{old}")).exists());
        assert!(root.path().join(format!("acme/e1/main/{new}")).exists());
    }
}

//! Peers that never authenticate, against a running origin's ingest
//! listeners, while the origin's resident memory is sampled from /proc
//! (BENCHMARKS.md, "Ingest peers that never authenticate"). Each scenario
//! opens N connections (from up to `--sources` loopback addresses,
//! 127.1.x.y, so that per-address limits can be told from per-origin ones):
//!
//! - `rtmp-idle`: TCP connect, then nothing.
//! - `rtmp-partial`: RTMP handshake, a chunk size of `--chunk-size`, then the
//!   chunks of messages that declare 16 MiB and never finish, spread over
//!   `--chunk-streams` chunk stream ids, up to `--bytes` per connection.
//! - `rtmp-no-publish`: handshake, `connect`, then a `createStream` every
//!   5 s (something the session must answer), never `publish`.
//! - `srt-induction`: an SRT caller's induction handshake, never the
//!   conclusion.
//! - `srt-refused`: induction and conclusion naming an unknown stream key.
//! - `srt-no-passphrase`: induction and conclusion naming `--key`, a stream
//!   whose pushes must be encrypted, without encryption: the origin admits
//!   the key, libsrt then refuses the caller.
//!
//! The report: RSS before, the highest sample while the peers held on, RSS
//! at the end of the hold and after the peers left (`--settle` s later),
//! and what the peers saw (connections the origin closed, after how long,
//! bytes they could write, bytes the origin read).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

#[derive(Clone, Copy, Debug, ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    RtmpIdle,
    RtmpPartial,
    RtmpNoPublish,
    SrtInduction,
    SrtRefused,
    SrtNoPassphrase,
}

#[derive(Parser)]
struct Args {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// The origin's RTMP (TCP) or SRT (UDP) address, by scenario.
    #[arg(long)]
    target: SocketAddr,
    /// The origin's process id, for its RSS (/proc/<pid>/status).
    #[arg(long)]
    pid: u32,
    /// The origin's /metrics, for `strom_ingest_unauthenticated_connections`.
    #[arg(long)]
    metrics: Option<String>,
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Loopback source addresses to spread the connections over.
    #[arg(long, default_value_t = 1)]
    sources: usize,
    /// Seconds over which the connections are opened.
    #[arg(long, default_value_t = 2.0)]
    ramp: f64,
    /// Seconds the peers hold on after the ramp.
    #[arg(long, default_value_t = 20.0)]
    hold: f64,
    /// Seconds after the peers left before the last RSS sample.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// rtmp-partial: bytes each peer tries to send after the handshake.
    #[arg(long, default_value_t = 1 << 20)]
    bytes: u64,
    /// rtmp-partial: RTMP chunk size announced (Set Chunk Size) first.
    #[arg(long, default_value_t = 4096)]
    chunk_size: u32,
    /// rtmp-partial: chunk stream ids the unfinished messages are spread over.
    #[arg(long, default_value_t = 8)]
    chunk_streams: u32,
    /// srt-no-passphrase: the stream key (app `live`).
    #[arg(long)]
    key: Option<String>,
    /// srt-*: handshakes per caller (one after another, same socket).
    #[arg(long, default_value_t = 1)]
    attempts: u32,
    /// Print the report as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
}

/// What the peers saw, shared by their tasks.
#[derive(Default)]
struct Seen {
    opened: AtomicUsize,
    connect_failed: AtomicUsize,
    closed_by_origin: AtomicUsize,
    close_after_ms: Mutex<Vec<u64>>,
    bytes_written: Mutex<Vec<u64>>,
    srt_answers: Mutex<std::collections::BTreeMap<String, u64>>,
    srt_unanswered: AtomicUsize,
}

#[derive(Serialize)]
struct Report {
    scenario: Scenario,
    connections: usize,
    sources: usize,
    opened: usize,
    connect_failed: usize,
    closed_by_origin: usize,
    close_after_ms_p50: Option<u64>,
    close_after_ms_max: Option<u64>,
    /// What the peers got written into their sockets before the origin
    /// closed them (kernel buffers included).
    bytes_written_max: Option<u64>,
    bytes_written_total: u64,
    /// What the origin says it read from RTMP peers
    /// (`strom_ingest_bytes_total{protocol="rtmp"}`, after the handshake).
    origin_read_bytes: Option<f64>,
    srt_answers: std::collections::BTreeMap<String, u64>,
    srt_unanswered: usize,
    rss_before_mib: f64,
    rss_peak_mib: f64,
    rss_end_of_hold_mib: f64,
    rss_after_mib: f64,
    unauthenticated_gauge_max: Option<f64>,
    rss_samples_mib: Vec<(f64, f64)>,
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// The sum of the series of `name` whose labels contain `label` (all when
/// empty) in the origin's /metrics.
async fn metric(client: &reqwest::Client, url: &str, name: &str, label: &str) -> Option<f64> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

const UNAUTHENTICATED: &str = "strom_ingest_unauthenticated_connections";
const RTMP_BYTES: (&str, &str) = ("strom_ingest_bytes_total", "protocol=\"rtmp\"");

fn source(i: usize, sources: usize) -> IpAddr {
    let n = i % sources.max(1);
    IpAddr::V4(Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250) as u8 + 1))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    if args.scenario == Scenario::SrtNoPassphrase && args.key.is_none() {
        anyhow::bail!("srt-no-passphrase needs --key");
    }
    let seen = Arc::new(Seen::default());
    let start = Instant::now();
    let rss_before = rss_kib(args.pid)?;
    let client = reqwest::Client::new();
    let read_before = match &args.metrics {
        Some(url) => metric(&client, url, RTMP_BYTES.0, RTMP_BYTES.1).await,
        None => None,
    };
    let samples = Arc::new(Mutex::new(vec![(0.0, mib(rss_before))]));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let gauge_max = Arc::new(Mutex::new(None::<f64>));
    let stop_sampling = Arc::new(tokio::sync::Notify::new());
    let sampler = {
        let (args, samples, peak, gauge_max, stop) = (
            args.clone(),
            samples.clone(),
            peak.clone(),
            gauge_max.clone(),
            stop_sampling.clone(),
        );
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.notified() => return,
                }
                if let Ok(kib) = rss_kib(args.pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                    samples
                        .lock()
                        .unwrap()
                        .push((start.elapsed().as_secs_f64(), mib(kib)));
                }
                if let Some(url) = &args.metrics {
                    if let Some(g) = metric(&client, url, UNAUTHENTICATED, "").await {
                        let mut max = gauge_max.lock().unwrap();
                        *max = Some(max.map_or(g, |m: f64| m.max(g)));
                    }
                }
            }
        })
    };

    let hold_until = start + Duration::from_secs_f64(args.ramp + args.hold);
    let mut peers = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let at = start + Duration::from_secs_f64(args.ramp * i as f64 / args.connections as f64);
        let (args, seen) = (args.clone(), seen.clone());
        peers.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let from = source(i, args.sources);
            let result = match args.scenario {
                Scenario::RtmpIdle | Scenario::RtmpPartial | Scenario::RtmpNoPublish => {
                    rtmp_peer(&args, from, i, hold_until, &seen).await
                }
                _ => srt_peer(&args, from, i, hold_until, &seen).await,
            };
            if let Err(e) = result {
                if std::env::var_os("FLOOD_DEBUG").is_some() {
                    eprintln!("peer {i}: {e:#}");
                }
            }
        }));
    }
    tokio::time::sleep_until(hold_until.into()).await;
    let rss_end = rss_kib(args.pid)?;
    for p in peers {
        let _ = p.await;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    stop_sampling.notify_one();
    let _ = sampler.await;
    let rss_after = rss_kib(args.pid)?;
    let read_after = match &args.metrics {
        Some(url) => metric(&client, url, RTMP_BYTES.0, RTMP_BYTES.1).await,
        None => None,
    };

    let mut closes = seen.close_after_ms.lock().unwrap().clone();
    closes.sort_unstable();
    let written = seen.bytes_written.lock().unwrap().clone();
    let report = Report {
        scenario: args.scenario,
        connections: args.connections,
        sources: args.sources,
        opened: seen.opened.load(Ordering::Relaxed),
        connect_failed: seen.connect_failed.load(Ordering::Relaxed),
        closed_by_origin: seen.closed_by_origin.load(Ordering::Relaxed),
        close_after_ms_p50: closes.get(closes.len() / 2).copied(),
        close_after_ms_max: closes.last().copied(),
        bytes_written_max: written.iter().max().copied(),
        bytes_written_total: written.iter().sum(),
        origin_read_bytes: read_after.zip(read_before).map(|(a, b)| a - b),
        srt_answers: seen.srt_answers.lock().unwrap().clone(),
        srt_unanswered: seen.srt_unanswered.load(Ordering::Relaxed),
        rss_before_mib: mib(rss_before),
        rss_peak_mib: mib(peak.load(Ordering::Relaxed).max(rss_end)),
        rss_end_of_hold_mib: mib(rss_end),
        rss_after_mib: mib(rss_after),
        unauthenticated_gauge_max: *gauge_max.lock().unwrap(),
        rss_samples_mib: samples.lock().unwrap().clone(),
    };
    eprintln!(
        "{:?}: {} connections from {} addresses: opened {}, connect failed {}, closed by the origin {} (after p50 {:?} ms, max {:?} ms), bytes written max {:?} / total {}, read by the origin {:?}",
        report.scenario,
        report.connections,
        report.sources,
        report.opened,
        report.connect_failed,
        report.closed_by_origin,
        report.close_after_ms_p50,
        report.close_after_ms_max,
        report.bytes_written_max,
        report.bytes_written_total,
        report.origin_read_bytes
    );
    if !report.srt_answers.is_empty() || report.srt_unanswered > 0 {
        eprintln!(
            "SRT answers: {:?}, unanswered {}",
            report.srt_answers, report.srt_unanswered
        );
    }
    eprintln!(
        "origin RSS MiB: before {}, peak {}, end of hold {}, after {} s {}; unauthenticated gauge max {:?}",
        report.rss_before_mib,
        report.rss_peak_mib,
        report.rss_end_of_hold_mib,
        args.settle,
        report.rss_after_mib,
        report.unauthenticated_gauge_max
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

// ---------------------------------------------------------------- RTMP

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Whether the origin has closed `stream` (EOF or reset); waits up to `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn rtmp_peer(
    args: &Args,
    from: IpAddr,
    i: usize,
    hold_until: Instant,
    seen: &Seen,
) -> anyhow::Result<()> {
    let opened_at = Instant::now();
    let mut stream = match connect_from(from, args.target).await {
        Ok(s) => s,
        Err(e) => {
            seen.connect_failed.fetch_add(1, Ordering::Relaxed);
            return Err(e.into());
        }
    };
    seen.opened.fetch_add(1, Ordering::Relaxed);
    let closed = |seen: &Seen| {
        seen.closed_by_origin.fetch_add(1, Ordering::Relaxed);
        seen.close_after_ms
            .lock()
            .unwrap()
            .push(opened_at.elapsed().as_millis() as u64);
    };
    let hold = || hold_until.saturating_duration_since(Instant::now());
    if args.scenario == Scenario::RtmpIdle {
        if closed_within(&mut stream, hold()).await {
            closed(seen);
        }
        return Ok(());
    }
    if handshake(&mut stream).await.is_err() {
        closed(seen);
        return Ok(());
    }
    match args.scenario {
        Scenario::RtmpPartial => {
            let mut sent = 0u64;
            let (mut rx, tx) = stream.into_split();
            // The origin answers nothing here; a read ending means it closed.
            let reader = tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match rx.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
            let mut tx = tx;
            let mut chunks = PartialMessages::new(args.chunk_size, args.chunk_streams, i);
            let mut cut_off = false;
            tx.write_all(&chunks.set_chunk_size()).await?;
            while sent < args.bytes {
                let piece = chunks.next_chunks(16 * 1024);
                if reader.is_finished() || tx.write_all(&piece).await.is_err() {
                    cut_off = true;
                    break;
                }
                sent += piece.len() as u64;
                // Spread the load a little: 1,000 peers write in turns.
                tokio::task::yield_now().await;
            }
            if !cut_off {
                let left = hold();
                cut_off = tokio::time::timeout(left, reader).await.is_ok();
            }
            seen.bytes_written.lock().unwrap().push(sent);
            if cut_off {
                closed(seen);
            }
        }
        Scenario::RtmpNoPublish => {
            stream.write_all(&connect_command()).await?;
            let mut transaction = 2.0;
            loop {
                stream.write_all(&create_stream(transaction)).await?;
                transaction += 1.0;
                let left = hold();
                if left.is_zero() {
                    return Ok(());
                }
                if closed_within(&mut stream, left.min(Duration::from_secs(5))).await {
                    closed(seen);
                    return Ok(());
                }
            }
        }
        _ => unreachable!("RTMP scenarios only"),
    }
    Ok(())
}

/// The RTMP handshake as in the original specification (C1 random, C2 =
/// S1), which servers accept from any client.
async fn handshake(stream: &mut TcpStream) -> anyhow::Result<()> {
    let mut c0c1 = vec![3u8];
    c0c1.extend((0..1536).map(|_| rand::random::<u8>()));
    c0c1[5..9].fill(0);
    stream.write_all(&c0c1).await?;
    let mut s = vec![0u8; 1 + 1536 + 1536];
    stream.read_exact(&mut s).await?;
    stream.write_all(&s[1..1537]).await?;
    Ok(())
}

/// One chunk with a type-0 header on chunk stream 3 (or `csid`).
fn chunk(csid: u8, type_id: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() <= 128 && (2..64).contains(&csid));
    let len = body.len() as u32;
    let mut out = vec![csid, 0, 0, 0];
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(body);
    out
}

fn amf_string(s: &str) -> Vec<u8> {
    let mut out = vec![0x02];
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

fn amf_number(n: f64) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend_from_slice(&n.to_be_bytes());
    out
}

/// `connect` to app `live` (AMF0 command message).
fn connect_command() -> Vec<u8> {
    let mut body = amf_string("connect");
    body.extend(amf_number(1.0));
    body.push(0x03);
    body.extend_from_slice(&3u16.to_be_bytes());
    body.extend_from_slice(b"app");
    body.extend(amf_string("live"));
    body.extend_from_slice(&[0, 0, 9]);
    chunk(3, 20, &body)
}

fn create_stream(transaction: f64) -> Vec<u8> {
    let mut body = amf_string("createStream");
    body.extend(amf_number(transaction));
    body.push(0x05);
    chunk(3, 20, &body)
}

/// The chunks of AMF0 command messages declaring 16 MiB − 1 that never
/// finish, over several chunk stream ids (type-0 header first, then type-3
/// continuation headers).
struct PartialMessages {
    chunk_size: u32,
    csids: Vec<u32>,
    started: Vec<bool>,
    next: usize,
    fill: u8,
}

impl PartialMessages {
    fn new(chunk_size: u32, streams: u32, seed: usize) -> Self {
        let csids: Vec<u32> = (0..streams.max(1)).map(|k| 4 + k).collect();
        Self {
            chunk_size: chunk_size.max(128),
            started: vec![false; csids.len()],
            csids,
            next: 0,
            fill: seed as u8,
        }
    }

    fn set_chunk_size(&self) -> Vec<u8> {
        chunk(2, 1, &self.chunk_size.to_be_bytes())
    }

    fn basic_header(fmt: u8, csid: u32) -> Vec<u8> {
        match csid {
            2..=63 => vec![(fmt << 6) | csid as u8],
            64..=319 => vec![fmt << 6, (csid - 64) as u8],
            _ => {
                let v = csid - 64;
                vec![(fmt << 6) | 1, (v & 0xff) as u8, (v >> 8) as u8]
            }
        }
    }

    /// At least `bytes` of chunks.
    fn next_chunks(&mut self, bytes: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes + 64);
        while out.len() < bytes {
            let k = self.next;
            self.next = (self.next + 1) % self.csids.len();
            let csid = self.csids[k];
            if self.started[k] {
                out.extend(Self::basic_header(3, csid));
            } else {
                self.started[k] = true;
                out.extend(Self::basic_header(0, csid));
                out.extend_from_slice(&[0, 0, 0]); // timestamp
                out.extend_from_slice(&[0xff, 0xff, 0xff]); // 16 MiB − 1
                out.push(20); // AMF0 command
                out.extend_from_slice(&[0, 0, 0, 0]);
            }
            out.extend(std::iter::repeat_n(self.fill, self.chunk_size as usize));
        }
        out
    }
}

// ---------------------------------------------------------------- SRT

const SRT_INDUCTION: u32 = 1;
const SRT_CONCLUSION: u32 = 0xFFFF_FFFF;

/// An SRT handshake control packet (header + CIF + extensions).
fn srt_handshake(
    version: u32,
    type_field: u32,
    kind: u32,
    socket_id: u32,
    cookie: u32,
    isn: u32,
    extensions: &[u8],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(64 + extensions.len());
    p.extend_from_slice(&0x8000_0000u32.to_be_bytes()); // control, handshake
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes()); // timestamp
    p.extend_from_slice(&0u32.to_be_bytes()); // to the listener
    for word in [
        version, type_field, isn, 1500, 8192, kind, socket_id, cookie,
    ] {
        p.extend_from_slice(&word.to_be_bytes());
    }
    p.extend_from_slice(&[127, 0, 0, 1]);
    p.extend_from_slice(&[0; 12]);
    p.extend_from_slice(extensions);
    p
}

/// HSREQ (SRT 1.5.1, TSBPD both ways, 120 ms) and the stream id, as a
/// caller's conclusion carries them.
fn srt_extensions(stream_id: &str) -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(&((1u32 << 16) | 3).to_be_bytes());
    e.extend_from_slice(&0x0001_0501u32.to_be_bytes());
    e.extend_from_slice(&0x0000_00BFu32.to_be_bytes());
    e.extend_from_slice(&((120u32 << 16) | 120).to_be_bytes());
    let mut sid = stream_id.as_bytes().to_vec();
    while sid.len() % 4 != 0 {
        sid.push(0);
    }
    e.extend_from_slice(&((5u32 << 16) | (sid.len() / 4) as u32).to_be_bytes());
    // libsrt packs the string into 32-bit words in host order, then sends
    // each word in network order: each group of four bytes reversed.
    for word in sid.chunks(4) {
        e.extend(word.iter().rev());
    }
    e
}

fn word(p: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]])
}

async fn srt_peer(
    args: &Args,
    from: IpAddr,
    i: usize,
    hold_until: Instant,
    seen: &Seen,
) -> anyhow::Result<()> {
    let socket = match UdpSocket::bind(SocketAddr::new(from, 0)).await {
        Ok(s) => s,
        Err(e) => {
            seen.connect_failed.fetch_add(1, Ordering::Relaxed);
            return Err(e.into());
        }
    };
    socket.connect(args.target).await?;
    seen.opened.fetch_add(1, Ordering::Relaxed);
    let answer = |what: String| {
        *seen.srt_answers.lock().unwrap().entry(what).or_default() += 1;
    };
    let mut buf = vec![0u8; 1500];
    for attempt in 0..args.attempts {
        let id = 0x1000_0000 | ((i as u32) << 8) | (attempt & 0xff);
        let isn = rand::random::<u32>() & 0x7fff_ffff;
        socket
            .send(&srt_handshake(4, 2, SRT_INDUCTION, id, 0, isn, &[]))
            .await?;
        let n = match tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf)).await {
            Ok(n) => n?,
            Err(_) => {
                seen.srt_unanswered.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        if n < 64 || word(&buf, 16) != 5 {
            answer("bad induction answer".into());
            return Ok(());
        }
        let cookie = word(&buf, 44);
        if args.scenario == Scenario::SrtInduction {
            answer("induction answered".into());
            continue;
        }
        let stream_id = match args.scenario {
            Scenario::SrtRefused => format!("#!::r=live/no-such-key-{i:06}-{attempt},m=publish"),
            _ => format!(
                "#!::r=live/{},m=publish",
                args.key.as_deref().unwrap_or_default()
            ),
        };
        // HSREQ | CONFIG (stream id); no KMREQ: the caller does not encrypt.
        let conclusion = srt_handshake(
            5,
            0x0005,
            SRT_CONCLUSION,
            id,
            cookie,
            isn,
            &srt_extensions(&stream_id),
        );
        socket.send(&conclusion).await?;
        match tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf)).await {
            Ok(Ok(n)) if n >= 64 => {
                let kind = word(&buf, 36);
                answer(if kind == SRT_CONCLUSION {
                    "conclusion accepted".into()
                } else {
                    format!("rejected {kind}")
                });
            }
            Ok(_) => answer("short answer".into()),
            Err(_) => {
                seen.srt_unanswered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // Hold the socket (and the address) until the end, sending nothing.
    tokio::time::sleep_until(hold_until.into()).await;
    Ok(())
}

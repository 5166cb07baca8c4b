//! Harness for end-to-end tests: starts real `strom` processes, real ffmpeg
//! pushers and players, and reads what they produce. Nothing here is mocked.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub mod agents;
pub mod balancer;
pub mod control_plane;
pub mod mail;
pub mod netns;
pub mod postgres;
pub mod prometheus;
pub mod rtmp_client;

/// End-to-end tests share two cores; run them one at a time so that an
/// encoder starved by another test does not look like a strom failure.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `strom` binary built next to the test executable (or `STROM_BIN`).
pub fn strom_bin() -> PathBuf {
    if let Ok(p) = std::env::var("STROM_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/strom
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join("strom");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` before the end-to-end tests",
        bin.display()
    );
    bin
}

/// A child process whose stderr goes to a file; killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        command.stderr(Stdio::from(file)).stdin(Stdio::null());
        if command.get_program() == strom_bin().as_os_str() {
            command.env(
                "STROM_LOG",
                "info,strom_relay=debug,quinn=warn,moq_transport=warn",
            );
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.into(),
            child,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` ("STOP", "CONT", "KILL", ...) with kill(1): a stopped
    /// encoder keeps its connection open but sends nothing (a stall).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {}", self.name);
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn stdout_to_string(&mut self) -> String {
        let mut s = String::new();
        if let Some(out) = self.child.stdout.as_mut() {
            let _ = out.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ----\n{}",
                self.name,
                tail(&self.log_text(), 60)
            );
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `f` until it returns Some or `limit` passes.
pub fn wait_until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `strom dev` on free ports in a fresh data directory.
pub struct Dev {
    pub dir: tempfile::TempDir,
    pub proc: Proc,
    pub endpoints: serde_json::Value,
}

impl Dev {
    pub fn start() -> Dev {
        Self::start_with(&[])
    }

    /// `strom dev --random-ports` with more options (`--postgres <url>`).
    pub fn start_with(args: &[&str]) -> Dev {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(strom_bin());
        cmd.arg("--data-dir")
            .arg(dir.path())
            .arg("dev")
            .arg("--random-ports")
            .args(args);
        cmd.stdout(Stdio::null());
        let proc = Proc::spawn("strom-dev", cmd, dir.path());
        let path = dir.path().join("endpoints.json");
        let endpoints = wait_until(Duration::from_secs(30), "endpoints.json", || {
            let text = std::fs::read_to_string(&path).ok()?;
            serde_json::from_str::<serde_json::Value>(&text).ok()
        });
        Dev {
            dir,
            proc,
            endpoints,
        }
    }

    pub fn get(&self, key: &str) -> String {
        self.endpoints[key]
            .as_str()
            .unwrap_or_else(|| panic!("endpoints.json has no {key}"))
            .to_owned()
    }
}

/// ffmpeg pushing a 720p30 H.264 + AAC test pattern with a 1 s GOP.
pub fn push(url: &str, seconds: u32, dir: &Path, name: &str) -> Proc {
    push_with(
        url,
        seconds,
        dir,
        name,
        &["-c:a", "aac", "-b:a", "128k"],
        "h264",
    )
}

/// Like [`push`] with other audio arguments or video codec (e.g. "flv1").
pub fn push_with(
    url: &str,
    seconds: u32,
    dir: &Path,
    name: &str,
    audio: &[&str],
    video: &str,
) -> Proc {
    let mut cmd = encoder(seconds, audio, video);
    cmd.args(["-f", "flv"]).arg(url);
    cmd.stdout(Stdio::null());
    Proc::spawn(name, cmd, dir)
}

/// ffmpeg pushing the test pattern of [`push`] as MPEG-TS over SRT to `url`
/// (an `srt://` caller URL, see [`srt_url`]). ffmpeg's default mux delay
/// (TS timestamps starting at 1.4 s) is kept: the origin must cope with it.
pub fn push_srt(url: &str, seconds: u32, dir: &Path, name: &str) -> Proc {
    let mut cmd = encoder(seconds, &["-c:a", "aac", "-b:a", "128k"], "h264");
    cmd.args(["-f", "mpegts"]).arg(url);
    cmd.stdout(Stdio::null());
    Proc::spawn(name, cmd, dir)
}

/// An ffmpeg SRT caller URL: `resource` in the standard stream id, and an
/// AES key of `key_bytes` (16, 24, 32) derived from `passphrase`, if any.
pub fn srt_url(port: u16, resource: &str, passphrase: Option<&str>, key_bytes: u8) -> String {
    let mut url = format!(
        "srt://127.0.0.1:{port}?mode=caller&latency=120000&pkt_size=1316&connect_timeout=3000&streamid=#!::r={resource},m=publish"
    );
    if let Some(p) = passphrase {
        url.push_str(&format!("&passphrase={p}&pbkeylen={key_bytes}"));
    }
    url
}

/// The ffmpeg command for the test pattern, up to the output format.
fn encoder(seconds: u32, audio: &[&str], video: &str) -> Command {
    let mut cmd = test_source("1280x720", Some(seconds));
    if video == "h264" {
        x264(&mut cmd, "2500k");
    } else {
        cmd.args(["-c:v", video, "-g", "30"]);
    }
    cmd.args(audio).args(["-ar", "48000", "-ac", "2"]);
    cmd
}

/// ffmpeg reading the test pattern (testsrc2 at `size`, 30 fps, and a
/// 1 kHz tone) in real time, for `seconds` or for ever.
pub fn test_source(size: &str, seconds: Option<u32>) -> Command {
    let duration = seconds
        .map(|s| format!(":duration={s}"))
        .unwrap_or_default();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "warning", "-re"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=30{duration}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=1000:sample_rate=48000{duration}"));
    cmd
}

/// H.264 as a live encoder sends it: a keyframe every second (30 frames),
/// no scene cuts, constant `bitrate`.
pub fn x264(cmd: &mut Command, bitrate: &str) {
    cmd.args([
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
    ])
    .args(["-profile:v", "main", "-pix_fmt", "yuv420p"])
    .args(["-g", "30", "-keyint_min", "30", "-sc_threshold", "0"])
    .args(["-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate]);
}

pub fn http_get(url: &str) -> Result<(u16, Vec<u8>), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(15))
        .build();
    match agent.get(url).call() {
        Ok(r) => {
            let status = r.status();
            let mut body = Vec::new();
            r.into_reader()
                .take(64 * 1024 * 1024)
                .read_to_end(&mut body)
                .map_err(|e| e.to_string())?;
            Ok((status, body))
        }
        Err(ureq::Error::Status(code, r)) => {
            Ok((code, r.into_string().unwrap_or_default().into_bytes()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Status, response headers (name, value) and body of an HTTP exchange.
pub type HttpResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// A GET with extra request headers; returns status, response headers and body.
pub fn http_request(url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(15))
        .build();
    let mut request = agent.get(url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = response.status();
    let names = response.headers_names();
    let headers = names
        .iter()
        .flat_map(|n| {
            response
                .all(n)
                .into_iter()
                .map(move |v| (n.clone(), v.to_owned()))
        })
        .collect();
    let mut body = Vec::new();
    response
        .into_reader()
        .take(64 * 1024 * 1024)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    Ok((status, headers, body))
}

pub fn http_text(url: &str) -> Option<String> {
    match http_get(url) {
        Ok((200, body)) => String::from_utf8(body).ok(),
        _ => None,
    }
}

pub use strom_relay::metrics::sum as metric;

/// One stream as ffprobe reports it.
#[derive(Debug, Clone)]
pub struct ProbedStream {
    pub codec_type: String,
    pub codec_name: String,
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub frame_rate: Option<f64>,
    pub frames: u64,
}

/// ffprobe with frame counting of a file or URL.
pub fn probe(input: &str) -> Vec<ProbedStream> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-print_format",
            "json",
            "-show_streams",
        ])
        .arg(input)
        .output()
        .expect("running ffprobe");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "ffprobe output is not JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    json["streams"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| ProbedStream {
            codec_type: s["codec_type"].as_str().unwrap_or("").into(),
            codec_name: s["codec_name"].as_str().unwrap_or("").into(),
            width: s["width"].as_u64(),
            height: s["height"].as_u64(),
            frame_rate: s["avg_frame_rate"].as_str().and_then(parse_rate),
            frames: s["nb_read_frames"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
        .collect()
}

fn parse_rate(text: &str) -> Option<f64> {
    let (n, d) = text.split_once('/')?;
    let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
    (d > 0.0).then_some(n / d)
}

/// Decodes every stream of `input` fully; returns ffmpeg's error output (empty when clean).
pub fn decode_errors(input: &str) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(input)
        .args(["-map", "0", "-f", "null", "-"])
        .output()
        .expect("running ffmpeg");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Copies `seconds` of an HLS or other URL into a local MP4 (what a player received).
pub fn record(url: &str, seconds: u32, file: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y", "-i"])
        .arg(url)
        .args(["-t", &seconds.to_string(), "-map", "0", "-c", "copy"])
        .arg(file)
        .output()
        .expect("running ffmpeg");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `strom watch` for `seconds`, writing to `file`.
pub fn watch(
    url: &str,
    namespace: &str,
    cert_sha256: &str,
    seconds: f64,
    file: &Path,
    dir: &Path,
    name: &str,
) -> Proc {
    watch_with_token(url, namespace, cert_sha256, seconds, file, dir, name, None)
}

/// Like [`watch`], presenting `token` (passed as `STROM_TOKEN`, so it does
/// not show in the process list).
#[allow(clippy::too_many_arguments)]
pub fn watch_with_token(
    url: &str,
    namespace: &str,
    cert_sha256: &str,
    seconds: f64,
    file: &Path,
    dir: &Path,
    name: &str,
    token: Option<&str>,
) -> Proc {
    watch_verifying(
        url,
        namespace,
        cert_sha256,
        seconds,
        file,
        dir,
        name,
        token,
        None,
    )
}

/// Like [`watch_with_token`], checking every object's origin signature
/// against `media_key` (the counts end up in the statistics it prints).
#[allow(clippy::too_many_arguments)]
pub fn watch_verifying(
    url: &str,
    namespace: &str,
    cert_sha256: &str,
    seconds: f64,
    file: &Path,
    dir: &Path,
    name: &str,
    token: Option<&str>,
    media_key: Option<&str>,
) -> Proc {
    let mut cmd = Command::new(strom_bin());
    if let Some(token) = token {
        cmd.env("STROM_TOKEN", token);
    }
    if let Some(key) = media_key {
        cmd.env("STROM_MEDIA_KEY", key);
    }
    cmd.args([
        "watch",
        url,
        namespace,
        "--cert-sha256",
        cert_sha256,
        "--duration",
    ])
    .arg(seconds.to_string())
    .arg("-o")
    .arg(file);
    cmd.stdout(Stdio::null());
    Proc::spawn(name, cmd, dir)
}

/// A free TCP port and a free UDP port on 127.0.0.1 (released before use;
/// good enough for tests on one machine).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free TCP port")
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free UDP port")
}

/// Reads `key=value` from the first log line that contains `marker`.
pub fn log_field(log: &str, marker: &str, key: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(marker))?;
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    Some(
        line[start..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_owned(),
    )
}

/// A `strom origin` or `strom edge` started from a generated TOML file.
pub struct Service {
    pub proc: Proc,
    pub cert_sha256: String,
    pub moqt_port: u16,
    pub http_port: u16,
    /// An edge's `metrics_listen` (an origin serves its metrics on `http_port`).
    pub metrics_port: Option<u16>,
    pub rtmp_port: Option<u16>,
    pub srt_port: Option<u16>,
    pub rtmps_port: Option<u16>,
    pub vod_port: Option<u16>,
}

impl Service {
    /// Starts `strom <role>` from `toml` (written to `<dir>/<name>.toml`) and
    /// waits for its "<role> ready" line.
    pub fn start(role: &str, name: &str, toml: &str, dir: &Path) -> Service {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).expect("writing config");
        let mut cmd = Command::new(strom_bin());
        cmd.arg("--config")
            .arg(&config)
            .arg(role)
            .stdout(Stdio::null());
        let proc = Proc::spawn(name, cmd, dir);
        let marker = format!("{role} ready");
        let log = wait_until(Duration::from_secs(20), &marker, || {
            let text = proc.log_text();
            text.contains(&marker).then_some(text)
        });
        let port = |key: &str| {
            log_field(&log, &marker, key)
                .and_then(|a| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()))
        };
        Service {
            cert_sha256: log_field(&log, &marker, "cert_sha256").expect("cert_sha256 in log"),
            moqt_port: port("moqt").expect("moqt port"),
            http_port: port("http").expect("http port"),
            metrics_port: port("metrics"),
            rtmp_port: port("rtmp"),
            srt_port: port("srt"),
            rtmps_port: port("rtmps"),
            vod_port: port("vod"),
            proc,
        }
    }

    /// An origin accepting the given (key, namespace) streams under app "live".
    pub fn origin(name: &str, dir: &Path, streams: &[(&str, &str)]) -> Service {
        Self::origin_with(name, dir, streams, "")
    }

    /// Like [`Service::origin`] with more TOML appended (tables under `origin`,
    /// e.g. `[origin.control_plane]`).
    pub fn origin_with(name: &str, dir: &Path, streams: &[(&str, &str)], extra: &str) -> Service {
        let data = dir.join(name);
        // Port 0 everywhere: the origin binds what the system gives it and
        // logs it (a port picked here and freed could be taken by another
        // test before the origin binds it).
        let mut toml = format!(
            "data_dir = {data:?}\n[origin]\nrtmp_listen = \"127.0.0.1:0\"\nrtmps_listen = \"127.0.0.1:0\"\nsrt_listen = \"127.0.0.1:0\"\nmoqt_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nvod_listen = \"127.0.0.1:0\"\nlinger_secs = 60\n"
        );
        for (key, ns) in streams {
            toml.push_str(&format!(
                "[[origin.streams]]\napp = \"live\"\nkey = \"{key}\"\nnamespace = \"{ns}\"\n"
            ));
        }
        toml.push_str(extra);
        Self::start("origin", name, &toml, dir)
    }

    /// An edge pulling from `upstream`, its metrics on a loopback port of their own.
    pub fn edge(name: &str, dir: &Path, upstream: &Service) -> Service {
        Self::edge_with(name, dir, upstream, "")
    }

    /// Like [`Service::edge`] with more TOML appended (tables under `edge`,
    /// e.g. `[edge.control_plane]`).
    pub fn edge_with(name: &str, dir: &Path, upstream: &Service, extra: &str) -> Service {
        let data = dir.join(name);
        // Port 0, as for the origin: the edge logs what it bound.
        let mut toml = format!(
            "data_dir = {data:?}\n[edge]\nmoqt_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n[[edge.upstream]]\nurl = \"moqt://127.0.0.1:{}\"\ncert_sha256 = \"{}\"\n",
            upstream.moqt_port,
            upstream.cert_sha256
        );
        if let Some(port) = upstream.vod_port {
            toml.push_str(&format!("vod_url = \"https://127.0.0.1:{port}/\"\n"));
        }
        toml.push_str(extra);
        Self::start("edge", name, &toml, dir)
    }

    pub fn moq_url(&self) -> String {
        format!("moqt://127.0.0.1:{}", self.moqt_port)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!(
            "rtmp://127.0.0.1:{}/live/{key}",
            self.rtmp_port.expect("an origin")
        )
    }

    /// `/metrics`: an edge's `metrics_listen`, an origin's `http_listen`.
    pub fn metrics_url(&self) -> String {
        let port = self.metrics_port.unwrap_or(self.http_port);
        format!("http://127.0.0.1:{port}/metrics")
    }

    pub fn metrics(&self) -> String {
        http_text(&self.metrics_url()).unwrap_or_default()
    }
}

/// Asserts `file` holds `min_seconds` of the 720p30 H.264 + AAC test pattern
/// and decodes without an error.
pub fn assert_decodes_720p30(file: &Path, min_seconds: f64) {
    let streams = probe(file.to_str().unwrap());
    let video = streams
        .iter()
        .find(|s| s.codec_type == "video")
        .unwrap_or_else(|| panic!("no video stream in {}: {streams:?}", file.display()));
    let audio = streams
        .iter()
        .find(|s| s.codec_type == "audio")
        .unwrap_or_else(|| panic!("no audio stream in {}: {streams:?}", file.display()));
    assert_eq!(video.codec_name, "h264");
    assert_eq!((video.width, video.height), (Some(1280), Some(720)));
    let fps = video.frame_rate.unwrap_or(0.0);
    assert!((fps - 30.0).abs() < 0.5, "frame rate {fps}");
    assert!(
        video.frames as f64 >= min_seconds * 30.0,
        "{} video frames, wanted {} s",
        video.frames,
        min_seconds
    );
    assert_eq!(audio.codec_name, "aac");
    // AAC at 48 kHz: 46.875 frames per second.
    assert!(
        audio.frames as f64 >= min_seconds * 46.0,
        "{} audio frames, wanted {} s",
        audio.frames,
        min_seconds
    );
    let errors = decode_errors(file.to_str().unwrap());
    assert!(errors.trim().is_empty(), "decode errors: {errors}");
}

/// ffmpeg pushing the 720p30 test pattern as H.265 (libx265, closed 1 s GOPs,
/// B-frames) + AAC in MPEG-TS over SRT to `url` (see [`srt_url`]).
pub fn push_srt_hevc(url: &str, seconds: u32, dir: &Path, name: &str) -> Proc {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "warning", "-re"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=1280x720:rate=30:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=1000:sample_rate=48000:duration={seconds}"
        ))
        .args(HEVC_720P30_ARGS)
        .args(["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"])
        .args(["-f", "mpegts"])
        .arg(url);
    cmd.stdout(Stdio::null());
    Proc::spawn(name, cmd, dir)
}

/// ffmpeg video arguments for H.265 with libx265: 1 s closed GOPs without
/// scene cuts, B-frames as the preset has them, 2.5 Mbit/s.
pub const HEVC_720P30_ARGS: &[&str] = &[
    "-c:v",
    "libx265",
    "-preset",
    "ultrafast",
    "-pix_fmt",
    "yuv420p",
    "-x265-params",
    "keyint=30:min-keyint=30:scenecut=0:open-gop=0:log-level=error",
    "-b:v",
    "2500k",
];

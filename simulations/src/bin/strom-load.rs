//! `strom-load`: puts N MoQT subscribers (each its own QUIC connection) and
//! M LL-HLS players on one edge for a while, then reports what they received
//! (objects, bytes, latency against the origin's `prft` clock, loss) next to
//! the edge's own egress, CPU and memory counters. See simulations/README.md.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use strom_relay::tls::{self, Trust};
use strom_relay::{to_track_namespace, Namespace};
use strom_simulations::edge_metrics::{Sample, Scraper};
use strom_simulations::hls::{self, HlsShared};
use strom_simulations::http::Target;
use strom_simulations::moq::{self, MoqConfig, MoqShared};
use strom_simulations::report::{self, Delivery, EdgeReport, HlsReport, MoqtReport, Report};
use strom_simulations::stats::{TrackSnapshot, TrackStats};
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "strom-load",
    about = "Load an edge with MoQT and LL-HLS viewers and report delivery, latency, loss and edge cost"
)]
struct Cli {
    /// `strom dev`'s endpoints.json: fills in --edge-moq, --cert-sha256,
    /// --edge-http, --edge-metrics and --namespace where they are not given.
    #[arg(long)]
    endpoints: Option<PathBuf>,
    /// The edge's MoQT endpoint, moqt://host:port (raw QUIC) or https://host:port/ (WebTransport).
    #[arg(long)]
    edge_moq: Option<url::Url>,
    /// Trust exactly the edge certificate with this SHA-256 (hex).
    #[arg(long)]
    cert_sha256: Option<String>,
    /// Trust certificates issued by the CAs in this PEM file instead.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The edge's plain-HTTP endpoint for viewers (LL-HLS), http://host:port.
    #[arg(long)]
    edge_http: Option<url::Url>,
    /// The edge's metrics listener (`edge.metrics_listen`, /metrics), http://host:port.
    #[arg(long)]
    edge_metrics: Option<url::Url>,
    /// Broadcast namespace, tenant/event/stream.
    #[arg(long)]
    namespace: Option<String>,
    /// Media tracks every viewer follows.
    #[arg(long, value_delimiter = ',', default_value = "video,audio")]
    tracks: Vec<String>,
    /// MoQT subscribers, each on its own QUIC connection.
    #[arg(long, default_value_t = 0)]
    moq_subscribers: usize,
    /// LL-HLS players (one connection per media playlist each).
    #[arg(long, default_value_t = 0)]
    hls_clients: usize,
    /// Length of the run, seconds (the ramp included).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Spread session starts evenly over this many seconds.
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    /// MoQT subscribers leave and rejoin: each session lives a random
    /// --churn-min..--churn-max seconds, then reconnects.
    #[arg(long)]
    churn: bool,
    #[arg(long, default_value_t = 10.0)]
    churn_min: f64,
    #[arg(long, default_value_t = 60.0)]
    churn_max: f64,
    /// Scrape the edge's /metrics this often during the run, seconds.
    #[arg(long, default_value_t = 10.0)]
    sample_every: f64,
    /// Print the report as JSON on stdout (the table still goes to stderr).
    #[arg(long)]
    json: bool,
    /// No progress lines during the run.
    #[arg(long)]
    quiet: bool,
}

/// Endpoints after merging the flags with endpoints.json.
struct Endpoints {
    moq: Option<url::Url>,
    http: url::Url,
    metrics: url::Url,
    trust: Trust,
    namespace: String,
}

fn resolve(cli: &Cli) -> anyhow::Result<Endpoints> {
    let file: Option<serde_json::Value> = match &cli.endpoints {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?)
        }
        None => None,
    };
    let from_file =
        |key: &str| -> Option<String> { file.as_ref()?.get(key)?.as_str().map(str::to_owned) };
    let moq = match &cli.edge_moq {
        Some(u) => Some(u.clone()),
        None => from_file("moq_url")
            .map(|u| url::Url::parse(&u))
            .transpose()
            .context("moq_url in endpoints.json")?,
    };
    let http = match &cli.edge_http {
        Some(u) => u.clone(),
        None => {
            let base = from_file("edge_http_url")
                .context("give --edge-http (or --endpoints with edge_http_url)")?;
            url::Url::parse(&base).context("edge_http_url in endpoints.json")?
        }
    };
    let metrics = match &cli.edge_metrics {
        Some(u) => u.clone(),
        None => {
            let metrics = from_file("edge_metrics_url")
                .context("give --edge-metrics (or --endpoints with edge_metrics_url)")?;
            let base = metrics.trim_end_matches("/metrics");
            url::Url::parse(base).context("edge_metrics_url in endpoints.json")?
        }
    };
    let cert = cli.cert_sha256.clone().or_else(|| from_file("cert_sha256"));
    let trust = match (cert, &cli.ca) {
        (Some(h), _) => Trust::Pinned(tls::parse_hex32(&h).context("--cert-sha256")?),
        (None, Some(ca)) => Trust::CaFile(ca.clone()),
        (None, None) if cli.moq_subscribers == 0 => Trust::None,
        (None, None) => bail!("give --cert-sha256 (development certificate) or --ca"),
    };
    let namespace = cli
        .namespace
        .clone()
        .or_else(|| from_file("namespace"))
        .unwrap_or_else(|| "dev/demo/main".to_owned());
    Ok(Endpoints {
        moq,
        http,
        metrics,
        trust,
        namespace,
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STROM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,moq_transport=off,quinn=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Start time of session `i` of `n` spread over `ramp`.
fn start_of(t0: Instant, i: usize, n: usize, ramp: Duration) -> Instant {
    if n == 0 {
        return t0;
    }
    t0 + ramp.mul_f64(i as f64 / n as f64)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    let ep = resolve(&cli)?;
    if !cli.duration.is_finite()
        || cli.duration <= 0.0
        || cli.ramp.is_nan()
        || cli.ramp < 0.0
        || cli.ramp >= cli.duration
    {
        bail!("need --duration > 0 and 0 <= --ramp < --duration");
    }
    if cli.churn
        && (cli.churn_min.is_nan()
            || cli.churn_min <= 0.0
            || cli.churn_max.is_nan()
            || cli.churn_min > cli.churn_max
            || !cli.churn_max.is_finite())
    {
        bail!("need 0 < --churn-min <= --churn-max");
    }
    if cli.tracks.is_empty() {
        bail!("--tracks lists no track");
    }
    let namespace = Namespace::parse(&ep.namespace).context("--namespace")?;
    let target = Target::parse(&ep.http).context("--edge-http")?;
    let metrics_target = Target::parse(&ep.metrics).context("--edge-metrics")?;
    let duration = Duration::from_secs_f64(cli.duration);
    let ramp = Duration::from_secs_f64(cli.ramp);

    let t0 = Instant::now();
    let mut scraper = Scraper::new(metrics_target.clone(), &ep.namespace, t0.into_std());
    let before = scraper
        .scrape()
        .await
        .context("the edge's /metrics does not answer: is --edge-metrics right?")?;
    let end = t0 + duration;

    let moq_config = match (&ep.moq, cli.moq_subscribers) {
        (_, 0) => None,
        (None, _) => bail!("give --edge-moq for MoQT subscribers"),
        (Some(url), _) => Some(Arc::new(MoqConfig {
            url: url.clone(),
            trust: ep.trust.clone(),
            namespace: to_track_namespace(&namespace),
            tracks: cli.tracks.clone(),
            churn: cli.churn.then(|| {
                (
                    Duration::from_secs_f64(cli.churn_min),
                    Duration::from_secs_f64(cli.churn_max),
                )
            }),
        })),
    };
    let moq_shared = Arc::new(MoqShared::new(cli.tracks.len()));
    let hls_stats: Arc<Vec<TrackStats>> =
        Arc::new(cli.tracks.iter().map(|_| TrackStats::default()).collect());
    let hls_shared = Arc::new(HlsShared::default());
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(config) = &moq_config {
        for i in 0..cli.moq_subscribers {
            let start = start_of(t0, i, cli.moq_subscribers, ramp);
            tasks.spawn(moq::viewer(config.clone(), moq_shared.clone(), start, end));
        }
    }
    let hls_tracks: Arc<Vec<(String, usize)>> =
        Arc::new(cli.tracks.iter().cloned().zip(0..).collect());
    for i in 0..cli.hls_clients {
        let start = start_of(t0, i, cli.hls_clients, ramp);
        tasks.spawn(hls::viewer(
            target.clone(),
            ep.namespace.clone(),
            hls_tracks.clone(),
            hls_stats.clone(),
            hls_shared.clone(),
            start,
            end,
        ));
    }
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let sampler = Scraper::new(metrics_target, &ep.namespace, t0.into_std());
    tasks.spawn(sampler.sample_until(
        Duration::from_secs_f64(cli.sample_every.max(1.0)),
        end,
        samples.clone(),
    ));

    let mut progress =
        tokio::time::interval_at(t0 + Duration::from_secs(5), Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = progress.tick() => {
                if !cli.quiet {
                    print_progress(t0, &moq_shared, &hls_stats);
                }
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: reporting what was measured so far");
                break;
            }
        }
    }
    // Sessions stop by themselves at the end; give teardown a moment.
    let grace = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut grace => {
                tasks.abort_all();
                break;
            }
        }
    }
    let after = scraper
        .scrape()
        .await
        .context("the edge's /metrics stopped answering")?;
    let measured = after.at_secs - before.at_secs;
    let secs = duration.as_secs_f64().min(measured.max(1e-3));
    let during = samples.lock().map(|v| v.clone()).unwrap_or_default();

    let moq_tracks: Vec<TrackSnapshot> = moq_shared.tracks.iter().map(|t| t.snapshot()).collect();
    let hls_tracks_s: Vec<TrackSnapshot> = hls_stats.iter().map(|t| t.snapshot()).collect();
    let per_track = |snaps: &[TrackSnapshot], hls: bool| {
        cli.tracks
            .iter()
            .cloned()
            .zip(snaps.iter().map(|s| Delivery::new(s, secs, hls)))
            .collect()
    };
    let report = Report {
        edge_moq: ep.moq.as_ref().map_or(String::new(), |u| u.to_string()),
        edge_http: ep.http.to_string(),
        namespace: ep.namespace.clone(),
        duration_secs: cli.duration,
        ramp_secs: cli.ramp,
        churn: cli.churn,
        measured_secs: measured,
        moqt: MoqtReport {
            subscribers: cli.moq_subscribers,
            sessions: load(&moq_shared.sessions),
            connect_failures: load(&moq_shared.connect_failures),
            subscribe_failures: load(&moq_shared.subscribe_failures),
            session_errors: load(&moq_shared.session_errors),
            rejoins: load(&moq_shared.rejoins),
            join_time: (&moq_shared.join_time.snapshot()).into(),
            total: Delivery::total(&moq_tracks, secs, false),
            tracks: per_track(&moq_tracks, false),
        },
        hls: HlsReport {
            clients: cli.hls_clients,
            playlist_requests: load(&hls_shared.playlist_requests),
            part_requests: load(&hls_shared.part_requests),
            http_errors: load(&hls_shared.http_errors),
            resyncs: load(&hls_shared.resyncs),
            total: Delivery::total(&hls_tracks_s, secs, true),
            tracks: per_track(&hls_tracks_s, true),
        },
        edge: EdgeReport::new(&before, &during, &after, measured.max(1e-3)),
        load_generator: report::self_usage(),
    };
    eprint!("{}", report::human(&report));
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn print_progress(t0: Instant, moq: &MoqShared, hls: &[TrackStats]) {
    let sum =
        |tracks: &[TrackStats], f: fn(&TrackStats) -> u64| -> u64 { tracks.iter().map(f).sum() };
    eprintln!(
        "[{:>5.0} s] MoQT: {} sessions open, {} objects, {} lost in groups, {} group gaps | HLS: {} parts",
        t0.elapsed().as_secs_f64(),
        load(&moq.sessions_active),
        sum(&moq.tracks, |t| load(&t.objects)),
        sum(&moq.tracks, |t| load(&t.lost_objects)),
        sum(&moq.tracks, |t| load(&t.group_gaps)),
        sum(hls, |t| load(&t.objects)),
    );
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

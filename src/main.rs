//! The `strom` command: wiring only; every service starts through its library.

mod config;
mod control_plane;
mod dev;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "strom",
    version,
    about = "Enterprise webcasts: ingest, MoQT distribution, playback"
)]
struct Cli {
    /// Configuration file (TOML); `strom config default` prints every option.
    #[arg(long, global = true, env = "STROM_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `data_dir`.
    #[arg(long, global = true, env = "STROM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Overrides `log_format`.
    #[arg(long, global = true, env = "STROM_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Control plane, origin and edge in one process on 127.0.0.1, ready to push to and watch.
    Dev {
        /// Bind every listener to a free port (endpoints.json tells which).
        #[arg(long)]
        random_ports: bool,
        /// Keep the control plane's records in this PostgreSQL database
        /// (libpq form, e.g. `host=/run/postgresql dbname=strom`) instead of
        /// the embedded RocksDB: the backend several replicas share.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
    },
    /// Run the origin (ingest and MoQT publishing) from the configuration.
    Origin,
    /// Run an edge (MoQT relay and HLS) from the configuration.
    Edge,
    /// Run a peer-agent inside a LAN site (peer-assisted eCDN) from the configuration.
    PeerAgent,
    /// The control plane: `serve`, and the operator's tools (init, backup,
    /// restore, audit verify, master key rotation, relay credentials).
    ControlPlane {
        #[command(subcommand)]
        command: control_plane::CpCommand,
    },
    /// Subscribe to a broadcast over MoQT and write fragmented MP4.
    Watch {
        /// moqt://host:port (raw QUIC) or https://host:port/ (WebTransport).
        url: url::Url,
        /// tenant/event/stream
        namespace: String,
        /// Output file ("-" or absent: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Trust exactly the certificate with this SHA-256 (hex).
        #[arg(long)]
        cert_sha256: Option<String>,
        /// Trust certificates issued by the CAs in this PEM file.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Another relay of the broadcast (repeatable, in order): when the
        /// current one goes away, watching continues there at the object
        /// it lacks, with the same token.
        #[arg(long = "fallback", value_name = "URL")]
        fallbacks: Vec<url::Url>,
        /// The certificate SHA-256 of each --fallback, in the same order
        /// (without it they are trusted as the first relay is).
        #[arg(long = "fallback-cert-sha256", value_name = "HEX")]
        fallback_certs: Vec<String>,
        /// Playback token, sent as the MoQT AUTHORIZATION TOKEN.
        #[arg(long, env = "STROM_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Verify every object's signature against this origin media key
        /// (hex; the origin logs it as `media_key`) and count the results.
        #[arg(long, env = "STROM_MEDIA_KEY")]
        media_key: Option<String>,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the configuration with every option, its default and a comment.
    Default,
    /// Check a configuration file and print it resolved.
    Check,
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STROM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// How long tasks still running after a command returned (connections
/// being dropped, a blocking SRT accept) may take before the process exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| {
            let result = runtime.block_on(run(cli));
            // Waiting for every blocking task would hang on a thread blocked in a
            // socket call: what has not ended within the grace period is dropped.
            runtime.shutdown_timeout(SHUTDOWN_GRACE);
            result
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The message and its causes on one line, for an operator: no
            // backtrace (with RUST_BACKTRACE set, writing one out of a debug
            // build takes seconds, and an edge that stopped is no bug).
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    if let Some(format) = cli.log_format {
        config.log_format = format;
    }
    match cli.command {
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", config::DEFAULT_CONFIG);
            return Ok(());
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            config.origin.validate()?;
            config.edge.validate()?;
            config.control_plane.validate()?;
            // A peer-agent's section means something only with its control
            // plane (the shipped file leaves it out).
            if config.peer_agent.control_plane.is_some() {
                config.peer_agent.validate()?;
            }
            print!("{}", toml::to_string_pretty(&config)?);
            return Ok(());
        }
        _ => {}
    }
    // A viewer tool: the transport's teardown chatter is not the user's concern.
    let default_filter = match cli.command {
        Command::Watch { .. } => "warn,moq_transport=off",
        _ => "info,quinn=warn,moq_transport=warn",
    };
    init_logging(config.log_format, default_filter);
    match cli.command {
        Command::Dev {
            random_ports,
            postgres,
        } => {
            if cli.config.is_some() {
                tracing::warn!(
                    "strom dev runs on its embedded defaults: the configuration file is not used"
                );
            }
            dev::run(dev::DevOptions {
                data_dir: config.data_dir,
                random_ports,
                postgres,
            })
            .await
        }
        Command::Origin => {
            std::fs::create_dir_all(&config.data_dir).context("creating data_dir")?;
            strom_origin::Origin::load(config.origin, &config.data_dir)
                .await?
                .run_until(strom_service::stop_requested())
                .await
        }
        Command::Edge => {
            std::fs::create_dir_all(&config.data_dir).context("creating data_dir")?;
            strom_edge::Edge::load(config.edge, &config.data_dir)
                .await?
                .run_until(strom_service::stop_requested())
                .await
        }
        Command::PeerAgent => {
            std::fs::create_dir_all(&config.data_dir).context("creating data_dir")?;
            strom_peer_agent::PeerAgent::load(config.peer_agent, &config.data_dir)
                .await?
                .run_until(strom_service::stop_requested())
                .await
        }
        Command::ControlPlane { command } => {
            control_plane::run(command, config.control_plane, &config.data_dir).await
        }
        Command::Watch {
            url,
            namespace,
            output,
            cert_sha256,
            ca,
            duration,
            fallbacks,
            fallback_certs,
            token,
            media_key,
        } => {
            let trust = watch::trust_from(cert_sha256.as_deref(), ca)?;
            let fallbacks = watch::fallbacks(fallbacks, &fallback_certs, &trust)?;
            let media_keys = media_key.as_deref().map(watch::media_keys).transpose()?;
            watch::run(watch::WatchOptions {
                url,
                fallbacks,
                namespace,
                output,
                trust,
                duration: duration.map(Duration::from_secs_f64),
                token,
                media_keys,
            })
            .await
        }
        Command::Config { .. } => unreachable!("handled above"),
    }
}

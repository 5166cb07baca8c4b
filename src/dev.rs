//! `strom dev`: origin and edge in one process on 127.0.0.1 with generated
//! certificates and a generated stream key, for a laptop or a test.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::json;
use strom_edge::{Edge, EdgeConfig, UpstreamSettings};
use strom_origin::{Origin, OriginConfig, StreamSettings};

pub const DEV_NAMESPACE: &str = "dev/demo/main";
pub const DEV_APP: &str = "live";

pub struct DevOptions {
    pub data_dir: PathBuf,
    /// Bind every listener to a free port instead of the defaults.
    pub random_ports: bool,
}

fn stream_key(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("dev-stream-key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        let key = key.trim().to_owned();
        if key.len() >= 16 {
            return Ok(key);
        }
    }
    let key: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    std::fs::write(&path, &key).with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

fn write_atomically(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    let data_dir = options.data_dir;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let key = stream_key(&data_dir)?;

    let mut origin_config = OriginConfig {
        streams: vec![StreamSettings {
            app: DEV_APP.into(),
            key: key.clone(),
            namespace: DEV_NAMESPACE.into(),
        }],
        ..OriginConfig::default()
    };
    let mut edge_config = EdgeConfig::default();
    if options.random_ports {
        origin_config.rtmp_listen.set_port(0);
        origin_config.moqt_listen.set_port(0);
        origin_config.http_listen.set_port(0);
        edge_config.moqt_listen.set_port(0);
        edge_config.http_listen.set_port(0);
    }
    let origin = Origin::load(origin_config, &data_dir).await?;
    edge_config.upstream = vec![UpstreamSettings {
        url: format!("moqt://127.0.0.1:{}", origin.moqt_addr()?.port()),
        cert_sha256: Some(origin.cert_sha256.clone()),
        ..UpstreamSettings::default()
    }];
    let edge = Edge::load(edge_config, &data_dir).await?;

    let rtmp = origin.rtmp_addr()?;
    let edge_moqt = edge.moqt_addr()?;
    let edge_http = edge.http_addr()?;
    let rtmp_publish_url = format!("rtmp://127.0.0.1:{}/{DEV_APP}/{key}", rtmp.port());
    let hls_url = format!(
        "http://127.0.0.1:{}/hls/{DEV_NAMESPACE}/master.m3u8",
        edge_http.port()
    );
    let moq_url = format!("moqt://127.0.0.1:{}", edge_moqt.port());
    let webtransport_url = format!("https://127.0.0.1:{}/", edge_moqt.port());
    let watch_command = format!(
        "strom watch {moq_url} {DEV_NAMESPACE} --cert-sha256 {} -o watch.mp4",
        edge.cert_sha256
    );
    let endpoints = json!({
        "rtmp_publish_url": rtmp_publish_url,
        "rtmp_server_url": format!("rtmp://127.0.0.1:{}/{DEV_APP}", rtmp.port()),
        "stream_key": key,
        "hls_url": hls_url,
        "moq_url": moq_url,
        "webtransport_url": webtransport_url,
        "namespace": DEV_NAMESPACE,
        "cert_sha256": edge.cert_sha256,
        "watch_command": watch_command,
        "origin_moq_url": format!("moqt://127.0.0.1:{}", origin.moqt_addr()?.port()),
        "origin_metrics_url": format!("http://127.0.0.1:{}/metrics", origin.http_addr()?.port()),
        "edge_metrics_url": format!("http://127.0.0.1:{}/metrics", edge_http.port()),
    });
    write_atomically(
        &data_dir.join("endpoints.json"),
        serde_json::to_string_pretty(&endpoints)?.as_bytes(),
    )?;
    println!(
        "\nstrom dev is running (data in {dir})\n\n\
         Push with ffmpeg:\n  ffmpeg -re -i input.mp4 -c:v libx264 -g 30 -c:a aac -f flv {rtmp_publish_url}\n\
         Push with OBS: Settings → Stream → Service \"Custom\", Server rtmp://127.0.0.1:{port}/{DEV_APP}, Stream Key {key}\n\n\
         Watch over HLS:   {hls_url}\n\
         Watch over MoQT:  {watch_command}\n\
         WebTransport:     {webtransport_url} (certificate SHA-256 {hash})\n\
         Endpoints:        {dir}/endpoints.json\n",
        dir = data_dir.display(),
        port = rtmp.port(),
        hash = edge.cert_sha256,
    );
    tokio::select! {
        res = origin.run() => res,
        res = edge.run() => res,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("stopping");
            Ok(())
        }
    }
}

//! `strom dev`: control plane, origin and edge in one process on 127.0.0.1
//! with generated certificates and keys, a development tenant with a demo
//! event and stream, for a laptop or a test. Publishing needs the stream's
//! publish credential and watching needs a playback token, as in production.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;
use strom_control_plane::model::{EdgeRegistration, Event};
use strom_control_plane::repo::{now, Repo};
use strom_control_plane::{ControlPlane, ControlPlaneConfig, StoreConfig};
use strom_edge::{Edge, EdgeConfig};
use strom_origin::{Origin, OriginConfig};
use strom_relay::{ControlPlaneLink, UpstreamSettings};
use strom_token::Grant;

pub const DEV_APP: &str = "live";
pub const DEV_OWNER: &str = "owner@dev.strom.invalid";

pub struct DevOptions {
    pub data_dir: PathBuf,
    /// Bind every listener to a free port instead of the defaults.
    pub random_ports: bool,
    /// The control plane's records in PostgreSQL (libpq url) instead of
    /// RocksDB under the data directory.
    pub postgres: Option<String>,
}

/// What `strom dev` created in the data directory, kept across runs.
#[derive(Serialize, Deserialize)]
struct DevState {
    tenant: String,
    event: String,
}

fn write_atomically(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The development tenant and a demo event that is on now (created once,
/// renewed when it has ended).
fn ensure_demo(repo: &Repo, data_dir: &Path) -> anyhow::Result<DevState> {
    let path = data_dir.join("dev-tenant.json");
    let mut state: Option<DevState> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if state
        .as_ref()
        .is_some_and(|s| repo.tenant(&s.tenant).is_err())
    {
        state = None;
    }
    let tenant = match &state {
        Some(s) => s.tenant.clone(),
        None => {
            strom_control_plane::bootstrap(repo, "Development", DEV_OWNER, "Development Owner")?
                .0
                .id
        }
    };
    let live = state
        .as_ref()
        .and_then(|s| repo.event(&tenant, &s.event).ok())
        .filter(|e| e.access_until() > now() + time::Duration::hours(1));
    let event = match live {
        Some(e) => e.id,
        None => {
            let start = now() - time::Duration::hours(1);
            let event = Event {
                form: vec![strom_identity::participants_csv::FormField {
                    name: "company".into(),
                    label: "Company".into(),
                    kind: strom_identity::participants_csv::FieldKind::Text,
                    required: false,
                }],
                attendance: true,
                privacy_notice: "Development privacy notice v1".into(),
                ..Event::open(
                    &tenant,
                    "Demo webcast",
                    start,
                    start + time::Duration::days(13),
                )
            };
            let e = repo.create_event("dev", event)?;
            repo.create_stream("dev", &tenant, &e.id, "main")?;
            e.id
        }
    };
    let state = DevState { tenant, event };
    write_atomically(&path, &serde_json::to_vec_pretty(&state)?)?;
    Ok(state)
}

pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    let data_dir = options.data_dir;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;

    let mut cp_config = ControlPlaneConfig {
        generate_master_key: true,
        // A provider on this laptop (e.g. a local Keycloak) is fine here.
        oidc_allow_private_addresses: true,
        metrics_listen: Some(if options.random_ports {
            "127.0.0.1:0".parse()?
        } else {
            "127.0.0.1:8091".parse()?
        }),
        store: match options.postgres {
            Some(url) => StoreConfig::Postgres {
                url,
                keys_url: None,
                ca_file: None,
            },
            None => StoreConfig::Rocksdb,
        },
        ..ControlPlaneConfig::default()
    };
    let mut origin_config = OriginConfig::default();
    let mut edge_config = EdgeConfig {
        metrics_listen: Some(if options.random_ports {
            "127.0.0.1:0".parse()?
        } else {
            "127.0.0.1:8082".parse()?
        }),
        ..EdgeConfig::default()
    };
    if options.random_ports {
        cp_config.listen.set_port(0);
        origin_config.rtmp_listen.set_port(0);
        origin_config.srt_listen.set_port(0);
        if let Some(a) = origin_config.rtmps_listen.as_mut() {
            a.set_port(0);
        }
        if let Some(a) = origin_config.vod_listen.as_mut() {
            a.set_port(0);
        }
        origin_config.moqt_listen.set_port(0);
        origin_config.http_listen.set_port(0);
        edge_config.moqt_listen.set_port(0);
        edge_config.http_listen.set_port(0);
    }
    let mut cp = ControlPlane::load(cp_config, &data_dir).await?;
    let cp_metrics = cp.metrics_addr();
    let cp_url: url::Url = format!("http://127.0.0.1:{}/", cp.local_addr()?.port()).parse()?;
    cp.set_public_url(cp_url.clone())?;
    let portal = cp_url.to_string();
    let repo = cp.repo.clone();
    let state = cp.state.clone();
    let origin_link = ControlPlaneLink {
        url: cp_url.clone(),
        fallback_urls: Vec::new(),
        credential: cp.relay_credential(strom_control_plane::RelayRole::Origin, "dev-origin")?,
        ca_file: None,
    };
    let edge_link = ControlPlaneLink {
        url: cp_url.clone(),
        fallback_urls: Vec::new(),
        credential: cp.relay_credential(strom_control_plane::RelayRole::Edge, "dev-edge")?,
        ca_file: None,
    };
    let (stopping, stop) = strom_service::stop_pair();
    let control_plane = tokio::spawn(cp.run_until(stop.clone().wait()));

    origin_config.control_plane = Some(origin_link);
    let origin = Origin::load(origin_config, &data_dir).await?;
    edge_config.upstream = vec![UpstreamSettings {
        url: format!("moqt://127.0.0.1:{}", origin.moqt_addr()?.port()),
        cert_sha256: Some(origin.cert_sha256.clone()),
        vod_url: origin
            .vod_addr()
            .map(|a| format!("https://127.0.0.1:{}/", a.port())),
        ..UpstreamSettings::default()
    }];
    edge_config.control_plane = Some(edge_link);
    let edge = Edge::load(edge_config, &data_dir).await?;

    let rtmp = origin.rtmp_addr()?;
    let edge_moqt = edge.moqt_addr()?;
    let edge_http = edge.http_addr()?;
    let rtmp_server_url = format!("rtmp://127.0.0.1:{}/{DEV_APP}", rtmp.port());
    *state.rtmp_url.write().expect("rtmp url lock") = rtmp_server_url.clone();
    let edge_base = format!("http://127.0.0.1:{}/", edge_http.port());
    repo.put_edge(&EdgeRegistration {
        id: "dev-edge".into(),
        region: "local".into(),
        url: edge_base,
        load: 0.0,
        registered_at: now(),
        last_seen: Some(now()),
    })?;

    let demo = ensure_demo(&repo, &data_dir)?;
    let (stream_key, stream_claims) =
        repo.issue_publish_credential("dev", &demo.tenant, &demo.event, "main")?;
    let owner = repo.user_by_email(&demo.tenant, DEV_OWNER)?;
    let (playback_token, _) = repo.mint(&Grant::play(&owner.id, &demo.tenant, &demo.event))?;
    let (admin_login_link, admin_login_code) = admin_login_link(&state, &demo.tenant).await?;
    // The terminal is the owner's own: the link carries its code, so it opens
    // in any browser (a link asked for in a browser needs no code there).
    let admin_login_url = format!("{admin_login_link}&code={admin_login_code}");
    let player_url = cp_url.join(&format!("e/{}/{}", demo.tenant, demo.event))?;
    let embed_url = cp_url.join(&format!("embed/{}/{}", demo.tenant, demo.event))?;

    let namespace = format!("{}/{}/main", demo.tenant, demo.event);
    let rtmp_publish_url = format!("{rtmp_server_url}/{stream_key}");
    // SRT callers name the stream in the standard stream id and encrypt with
    // the passphrase that goes with the credential.
    let srt_server_url = format!("srt://127.0.0.1:{}", origin.srt_addr().port());
    *state.srt_url.write().expect("srt url lock") = srt_server_url.clone();
    let srt_secret = repo.srt_tenant_secret(&demo.tenant)?;
    let srt_stream_key = strom_token::srt::stream_key(&srt_secret, &stream_claims)
        .context("the demo stream has no SRT stream key")?;
    let srt_passphrase = strom_token::srt::passphrase(&srt_secret, &srt_stream_key);
    let srt_publish_url = format!(
        "{srt_server_url}?streamid=#!::r={DEV_APP}/{srt_stream_key},m=publish&passphrase={srt_passphrase}&pbkeylen=16"
    );
    let hls_url = format!(
        "http://127.0.0.1:{}/hls/{namespace}/master.m3u8?token={playback_token}",
        edge_http.port()
    );
    let moq_url = format!("moqt://127.0.0.1:{}", edge_moqt.port());
    let webtransport_url = format!("https://127.0.0.1:{}/", edge_moqt.port());
    let watch_command = format!(
        "strom watch {moq_url} {namespace} --cert-sha256 {} --token {playback_token} -o watch.mp4",
        edge.cert_sha256
    );
    let endpoints = json!({
        "rtmp_publish_url": rtmp_publish_url,
        "rtmp_server_url": rtmp_server_url,
        "srt_publish_url": srt_publish_url,
        "srt_stream_key": srt_stream_key,
        "srt_passphrase": srt_passphrase,
        "stream_key": stream_key,
        "hls_url": hls_url,
        "recordings_url": format!(
            "http://127.0.0.1:{}/vod/{namespace}/index.json?token={playback_token}",
            edge_http.port()
        ),
        "moq_url": moq_url,
        "webtransport_url": webtransport_url,
        "namespace": namespace,
        "cert_sha256": edge.cert_sha256,
        "media_key": origin.media_key,
        "watch_command": watch_command,
        "playback_token": playback_token,
        "origin_moq_url": format!("moqt://127.0.0.1:{}", origin.moqt_addr()?.port()),
        "origin_metrics_url": format!("http://127.0.0.1:{}/metrics", origin.http_addr()?.port()),
        "edge_http_url": format!("http://127.0.0.1:{}/", edge_http.port()),
        "edge_metrics_url": edge.metrics_addr().map(|a| format!("http://127.0.0.1:{}/metrics", a.port())),
        "control_plane_metrics_url": cp_metrics.map(|a| format!("http://127.0.0.1:{}/metrics", a.port())),
        "control_plane_url": cp_url.as_str(),
        "portal_url": portal,
        "player_url": player_url.as_str(),
        "embed_url": embed_url.as_str(),
        "tenant": demo.tenant,
        "event": demo.event,
        "owner_email": DEV_OWNER,
        "admin_login_url": admin_login_url,
        "admin_login_code": admin_login_code,
        "outbox": data_dir.join("control-plane/outbox"),
    });
    write_atomically(
        &data_dir.join("endpoints.json"),
        serde_json::to_string_pretty(&endpoints)?.as_bytes(),
    )?;
    println!(
        "\nstrom dev is running (data in {dir})\n\n\
         Push with ffmpeg:\n  ffmpeg -re -i input.mp4 -c:v libx264 -g 30 -c:a aac -f flv '{rtmp_publish_url}'\n\
         Push with OBS: Settings → Stream → Service \"Custom\", Server {rtmp_server_url}, Stream Key: the stream_key in endpoints.json\n\
         Push over SRT:  the srt_publish_url in endpoints.json (MPEG-TS; ffmpeg: -f mpegts \"<url>&latency=120000\")\n\n\
         Watch over HLS:   {hls_url}\n\
         Watch over MoQT:  {watch_command}\n\
         WebTransport:     {webtransport_url} (certificate SHA-256 {hash})\n\
         Playback tokens last 10 minutes; POST {cp_url}api/v1/events/{event}/playback-token gives new ones.\n\n\
         Control plane:    {cp_url} (API, OpenAPI at {cp_url}api/openapi.json)\n\
         Watch in a browser: {player_url}  (log in first: open the admin link, or register there)\n\
         Admin login link: {admin_login_url}  (10 minutes, once; code {admin_login_code})\n\
         Mails (dev outbox): {dir}/control-plane/outbox\n\
         Endpoints:        {dir}/endpoints.json\n",
        dir = data_dir.display(),
        hash = edge.cert_sha256,
        event = demo.event,
    );
    // One stop for all three: each ends its own sessions, and the command
    // returns when all have. A part that fails ends the command with it.
    let relays = async {
        tokio::try_join!(
            origin.run_until(stop.clone().wait()),
            edge.run_until(stop.wait())
        )
    };
    tokio::pin!(relays);
    let mut control_plane = control_plane;
    tokio::select! {
        res = &mut relays => res.map(|_| ()),
        res = &mut control_plane => res.context("control plane task")?,
        () = strom_service::stop_requested() => {
            stopping.stop();
            let relays = relays.await;
            let control_plane = control_plane.await.context("control plane task")?;
            relays.map(|_| ()).and(control_plane)
        }
    }
}

/// Sends the owner a magic link through the dev outbox and returns it with
/// its code (the outbox is where `strom dev` users read their mail).
async fn admin_login_link(
    state: &strom_control_plane::Shared,
    tenant: &str,
) -> anyhow::Result<(String, String)> {
    let req = strom_control_plane::LinkRequest {
        tenant: tenant.into(),
        event: None,
        email: DEV_OWNER.into(),
    };
    let mail = strom_control_plane::issue_link(
        state,
        strom_control_plane::model::LinkPurpose::MagicLogin,
        &req,
        None,
    )
    .await
    .map_err(|e| anyhow::anyhow!("admin login link: {}", e.detail))?
    .context("the development owner has no account")?;
    state.mailer.send(mail).await?;
    let outbox = state.outbox.clone().context("dev mails go to the outbox")?;
    let mut files: Vec<_> = std::fs::read_dir(&outbox)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    files.sort();
    let text = std::fs::read_to_string(files.last().context("no mail in the outbox")?)?;
    let text = text
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let link = strom_identity::mail::links_in(&text)
        .into_iter()
        .next()
        .context("no link in the mail")?;
    let code = text
        .split("enter this code instead: ")
        .nth(1)
        .map(|s| s.chars().take(8).collect())
        .unwrap_or_default();
    Ok((link, code))
}

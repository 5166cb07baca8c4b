//! What an edge answers on which listener: viewers get media, never the
//! operators' `/metrics` (its series list every tenant's live events), and
//! HTTPS answers carry HSTS and `nosniff`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use strom_edge::{Edge, EdgeConfig};
use strom_relay::Access;

struct Running {
    http: SocketAddr,
    metrics: Option<SocketAddr>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An edge that wants playback tokens (none will be given), on free
/// loopback ports.
async fn edge(name: &str, config: EdgeConfig) -> Running {
    let dir = std::env::temp_dir().join(format!("strom-edge-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let verifier = Arc::new(strom_token::Verifier::new());
    let access = Arc::new(Access::new(verifier, strom_relay::EDGE_SESSIONS));
    let edge = Edge::load_with_access(config, &dir, access).await.unwrap();
    Running {
        http: edge.http_addr().unwrap(),
        metrics: edge.metrics_addr(),
        task: tokio::spawn(edge.run()),
        dir,
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .build()
        .unwrap()
}

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

#[tokio::test]
async fn metrics_are_served_on_the_metrics_listener_only() {
    let e = edge(
        "metrics",
        EdgeConfig {
            moqt_listen: loopback(),
            http_listen: loopback(),
            metrics_listen: Some(loopback()),
            ..EdgeConfig::default()
        },
    )
    .await;
    // A viewer without a token: nothing about anyone's events.
    let (status, _, body) = get(&format!("http://{}/metrics", e.http)).await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("strom_"), "{body}");
    // Load balancers still probe the viewers' port.
    let (status, _, body) = get(&format!("http://{}/healthz", e.http)).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    let metrics = e.metrics.expect("metrics_listen is bound");
    let (status, headers, body) = get(&format!("http://{metrics}/metrics")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "text/plain; version=0.0.4");
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "web pages may not read the metrics"
    );
    assert!(
        strom_relay::metrics::sum(&body, "strom_moqt_sessions_active", &[("role", "edge")])
            .is_some(),
        "{body}"
    );
    let (status, _, _) = get(&format!("http://{metrics}/healthz")).await;
    assert_eq!(status, 200);
    // No upstream: not ready, on both listeners.
    assert_eq!(get(&format!("http://{metrics}/readyz")).await.0, 503);
    assert_eq!(get(&format!("http://{}/readyz", e.http)).await.0, 503);
    // The metrics listener serves nothing else.
    assert_eq!(
        get(&format!("http://{metrics}/hls/a/b/c/master.m3u8"))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn without_metrics_listen_there_are_no_metrics() {
    let e = edge(
        "nometrics",
        EdgeConfig {
            moqt_listen: loopback(),
            http_listen: loopback(),
            ..EdgeConfig::default()
        },
    )
    .await;
    assert!(e.metrics.is_none());
    assert_eq!(get(&format!("http://{}/metrics", e.http)).await.0, 404);
}

#[test]
fn a_metrics_listener_off_loopback_needs_saying_so() {
    let public = EdgeConfig {
        metrics_listen: Some("0.0.0.0:8082".parse().unwrap()),
        ..EdgeConfig::default()
    };
    let err = public.validate().unwrap_err().to_string();
    assert!(err.contains("edge.metrics_listen = 0.0.0.0:8082"), "{err}");
    let allowed = EdgeConfig {
        metrics_allow_non_loopback: true,
        ..public
    };
    allowed.validate().unwrap();
}

#[tokio::test]
async fn https_answers_carry_hsts_and_nosniff_plain_http_no_hsts() {
    let tls = edge(
        "https",
        EdgeConfig {
            moqt_listen: loopback(),
            http_listen: loopback(),
            http_tls: true,
            ..EdgeConfig::default()
        },
    )
    .await;
    for path in [
        "/healthz",
        "/hls/acme/town-hall/main/master.m3u8",
        "/nothing",
    ] {
        let (status, headers, _) = get(&format!("https://{}{path}", tls.http)).await;
        assert!(status == 200 || status >= 400, "{path}: {status}");
        assert_eq!(
            headers
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            Some("max-age=31536000"),
            "{path}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    }

    let plain = edge(
        "plain",
        EdgeConfig {
            moqt_listen: loopback(),
            http_listen: loopback(),
            ..EdgeConfig::default()
        },
    )
    .await;
    let (_, headers, _) = get(&format!("http://{}/healthz", plain.http)).await;
    assert!(headers.get("strict-transport-security").is_none());
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

//! The operators' listener: `/metrics` (Prometheus text), `/healthz` and
//! `/readyz` on plain HTTP, apart from every port viewers reach. The series
//! carry tenant, event and stream ids — a list of every tenant's live
//! events — so, like the control plane's `metrics_listen`, this listener is
//! loopback-only unless the operator says otherwise ([`validate_listen`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::broadcast::Broadcasts;
use crate::http;
use crate::metrics::{self, ServerCounters};

/// What the listener reports on.
#[derive(Clone)]
pub struct Monitoring {
    /// `origin`, `edge` or `agent` (the `role` label, and what `/readyz` asks).
    pub role: crate::Role,
    pub broadcasts: Arc<Broadcasts>,
    pub counters: Arc<ServerCounters>,
    /// More metric families appended to `/metrics` (the origin's ingest,
    /// the agent's offload).
    pub extra_metrics: Option<Arc<dyn Fn(&metrics::Scrape) + Send + Sync>>,
}

impl Monitoring {
    /// The whole `/metrics` page.
    pub fn render(&self) -> String {
        metrics::page(&self.counters, &self.broadcasts, |scrape| {
            if let Some(extra) = &self.extra_metrics {
                extra(scrape);
            }
        })
    }
}

/// Checks `<section>.metrics_listen` at start-up: loopback, unless
/// `<section>.metrics_allow_non_loopback` says the operator means it.
pub fn validate_listen(
    role: crate::Role,
    listen: Option<SocketAddr>,
    allow_non_loopback: bool,
) -> anyhow::Result<()> {
    let section = role.section();
    match listen {
        Some(addr) if !addr.ip().is_loopback() && !allow_non_loopback => anyhow::bail!(
            "{section}.metrics_listen = {addr} is not loopback: /metrics lists every tenant's live events without authentication; \
             bind it to 127.0.0.1 (and scrape from this host), or set {section}.metrics_allow_non_loopback = true for a network only your monitoring reaches"
        ),
        _ => Ok(()),
    }
}

/// Binds `<section>.metrics_listen`, if set.
pub async fn bind(
    role: crate::Role,
    listen: Option<SocketAddr>,
) -> anyhow::Result<Option<TcpListener>> {
    let section = role.section();
    match listen {
        Some(addr) => Ok(Some(TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("binding {section}.metrics_listen on {addr}: {e}")
        })?)),
        None => Ok(None),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task
/// is dropped.
pub async fn serve(listener: TcpListener, monitoring: Monitoring) {
    http::accept(listener, None, router(monitoring)).await
}

fn router(monitoring: Monitoring) -> Router {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Monitoring>>| async move {
                http::response(StatusCode::OK, "text/plain; version=0.0.4", m.render())
            }),
        )
        .route("/healthz", get(|| async { http::healthz() }))
        .route(
            "/readyz",
            get(
                |State(m): State<Arc<Monitoring>>| async move { http::readyz(m.role, &m.counters) },
            ),
        )
        .fallback(|| async { http::error(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async {
            http::error(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD")
        })
        // Not for web pages: a page in a browser on this host must not read it.
        .layer(axum::middleware::map_response(
            |mut r: axum::response::Response| async move {
                r.headers_mut().remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
                r
            },
        ));
    http::hardened(app, false).with_state(Arc::new(monitoring))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn answers_operators_only_and_never_to_web_pages() {
        #[rustfmt::skip]
        let table = [
            ("GET", "/metrics", 200),
            ("HEAD", "/metrics", 200),
            ("GET", "/healthz", 200),
            ("GET", "/readyz", 503),
            ("POST", "/metrics", 405),
            ("OPTIONS", "/metrics", 405),
            ("GET", "/hls/t/e/s/master.m3u8", 404),
        ];
        for (method, path, status) in table {
            let monitoring = Monitoring {
                role: crate::Role::Edge,
                broadcasts: Broadcasts::new(),
                counters: Arc::new(ServerCounters::new(crate::Role::Edge)),
                extra_metrics: None,
            };
            let req = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let r = router(monitoring).oneshot(req).await.unwrap();
            let case = format!("{method} {path}");
            assert_eq!(r.status().as_u16(), status, "{case}");
            let h = r.headers();
            assert_eq!(
                h.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
                "nosniff",
                "{case}"
            );
            assert!(
                !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
                "{case}"
            );
            assert!(!h.contains_key(header::STRICT_TRANSPORT_SECURITY), "{case}");
        }
    }

    #[test]
    fn metrics_stay_on_loopback_unless_allowed() {
        let lo: SocketAddr = "127.0.0.1:8082".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8082".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8082".parse().unwrap();
        let lan: SocketAddr = "10.1.2.3:8082".parse().unwrap();
        assert!(validate_listen(crate::Role::Edge, None, false).is_ok());
        assert!(validate_listen(crate::Role::Edge, Some(lo), false).is_ok());
        assert!(validate_listen(crate::Role::Edge, Some(lo6), false).is_ok());
        for addr in [any, lan] {
            let err = validate_listen(crate::Role::Edge, Some(addr), false).unwrap_err();
            assert!(
                err.to_string().contains("edge.metrics_listen")
                    && err.to_string().contains("metrics_allow_non_loopback"),
                "{err}"
            );
            assert!(validate_listen(crate::Role::Edge, Some(addr), true).is_ok());
        }
    }
}

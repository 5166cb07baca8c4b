//! HTTP(S) serving of the cache for viewers: LL-HLS playlists and media,
//! recordings (`/vod/`), QoE beacons, `/webtransport.json`, and `/healthz`
//! and `/readyz` for load balancers. `/metrics` is not served here: its
//! series name tenants' live events, so it has its own listener
//! ([`crate::monitoring`]).
//!
//! URLs: `/hls/<tenant>/<event>/<stream>/master.m3u8`, then per track
//! `<track>/playlist.m3u8`, `<track>/init.mp4`, `<track>/<N>.m4s` (segment N =
//! group N) and `<track>/<N>.<P>.m4s` (part P of segment N).
//!
//! With access control every HLS request carries a playback token, as a
//! `token` query parameter or the `strom_token` cookie that the master
//! playlist sets when fetched with `?token=`; each request is verified
//! (offline, so a revocation applies to the very next request). Playlists
//! fetched with `?token=` carry it on every URI, for players without cookies.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::access::{self, Access, Refused, TOKEN_COOKIE, TOKEN_PARAM};
use crate::broadcast::{Broadcast, Broadcasts, Namespace};
use crate::cache::TrackCache;
use crate::catalog_view::CatalogView;
use crate::hls::{self, PlaylistParams};
use crate::metrics::ServerCounters;

/// How long a blocking playlist reload or a not-yet-complete segment may wait.
const BLOCK_LIMIT: Duration = Duration::from_secs(6);

mod playlists;
pub use playlists::{admit_hls, blocking_reload, hls_path, HlsPath, TrackFile};
use playlists::{find, hls_request, playlist_text};

#[derive(Clone)]
pub struct HttpState {
    pub role: crate::Role,
    pub broadcasts: Arc<Broadcasts>,
    pub counters: Arc<ServerCounters>,
    pub part_target: f64,
    pub window: usize,
    /// When set, every HLS request needs a playback token.
    pub access: Option<Arc<Access>>,
    /// Mark token cookies `Secure` (the server speaks HTTPS).
    pub secure_cookies: bool,
    /// Where browsers reach this server's WebTransport (served as
    /// `/webtransport.json`); `None` where there is none (the origin).
    pub webtransport: Option<WebTransportInfo>,
    /// HLS players seen per broadcast (for the viewer count reported upstream).
    pub hls_viewers: Arc<crate::status::HlsViewers>,
    /// Recordings served under `/vod/` (none: 404).
    pub vod: Option<Arc<dyn crate::vod::VodSource>>,
}

/// What a browser needs to open WebTransport to this edge: the UDP port (the
/// host is the one the browser used for HTTP) and the SHA-256 of the
/// short-lived certificate for `serverCertificateHashes`.
#[derive(Clone, Debug)]
pub struct WebTransportInfo {
    pub port: u16,
    pub cert_sha256: String,
}

/// A request's standing after the token check.
pub struct Admitted {
    /// The token came as a query parameter: playlists carry it on their URIs
    /// and the master playlist sets the cookie.
    pub query_token: Option<String>,
    pub claims: Option<strom_token::Claims>,
}

/// Serves HTTP (or HTTPS when `tls` is set) on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: HttpState,
) {
    let https = tls.is_some();
    accept(listener, tls, router(Arc::new(state), https)).await
}

/// The routes: health for every role; recordings where a VOD source is
/// set (404 otherwise); LL-HLS, QoE beacons and `/webtransport.json` only
/// where viewers are served (edges and agents, not the origin).
fn router(state: Arc<HttpState>, https: bool) -> Router {
    let mut routes = Router::new()
        .route("/healthz", get(|| async { healthz() }))
        .route(
            "/readyz",
            get(|State(s): State<Arc<HttpState>>| async move { readyz(s.role, &s.counters) }),
        )
        .route("/vod/{*rest}", get(vod_request));
    if state.role.serves_viewers() {
        routes = routes
            .route("/webtransport.json", get(webtransport_json))
            .route("/hls/{*rest}", get(hls))
            .route("/qoe", post(qoe_beacon));
    }
    // Preflights are answered by the fallbacks (no route takes OPTIONS),
    // and the headers by `SetResponseHeader`, not by `from_fn` or
    // `map_response` middleware: those box a future per request, which cost
    // edges measurably on LL-HLS (BENCHMARKS.md, issue 17).
    let routes = routes
        .fallback(|method: Method| async move {
            match method {
                Method::OPTIONS => preflight(),
                _ => error(StatusCode::NOT_FOUND, "not found"),
            }
        })
        .method_not_allowed_fallback(|method: Method| async move {
            match method {
                Method::OPTIONS => preflight(),
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD"),
            }
        });
    hardened(routes, https).with_state(state)
}

/// A CORS preflight, on any path: players on the portal's origin may GET
/// and POST here.
fn preflight() -> Response<Full<Bytes>> {
    let mut r = response(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
    );
    r
}

/// Headers on every answer to viewers: no MIME sniffing and, over HTTPS
/// only, HSTS (a plain-HTTP answer cannot vouch for HTTPS, and browsers
/// ignore it there anyway).
pub(crate) fn hardened<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    https: bool,
) -> Router<S> {
    let routes = routes.layer(SetResponseHeaderLayer::overriding(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ));
    if !https {
        return routes;
    }
    routes.layer(SetResponseHeaderLayer::overriding(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    ))
}

/// Accepts connections on `listener` (TLS when `tls` is set) until the task
/// is dropped, answering with `app`. Not `axum::serve`: it has no TLS, and
/// edges serve LL-HLS over HTTPS with a bounded handshake.
pub(crate) async fn accept(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(err) => {
                tracing::warn!(error = %err, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => builder
                            .serve_connection(TokioIo::new(tls), service)
                            .await
                            .map_err(|e| anyhow::anyhow!(e)),
                        Ok(Err(err)) => Err(anyhow::Error::from(err).context("TLS handshake")),
                        Err(_) => Err(anyhow::anyhow!("TLS handshake timed out")),
                    }
                }
                None => builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                    .map_err(|e| anyhow::anyhow!(e)),
            };
            if let Err(err) = result {
                tracing::debug!(remote = %crate::pseudonym::addr(remote), error = %format!("{err:#}"), "HTTP connection ended");
            }
        });
    }
}

pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding HTTP on {addr}"))
}

pub(crate) fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("text/plain")),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut r = response(status, "text/plain; charset=utf-8", format!("{message}\n"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `{"url", "cert_sha256", "protocols"}` for the player; the URL's host is the
/// one this request was addressed to, so it works behind any name or address.
async fn webtransport_json(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Full<Bytes>> {
    let Some(wt) = &state.webtransport else {
        return error(StatusCode::NOT_FOUND, "no WebTransport here");
    };
    let host = uri
        .host()
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
                .map(|a| a.host().to_owned())
        })
        .unwrap_or_else(|| "127.0.0.1".into());
    let body = serde_json::json!({
        "url": format!("https://{host}:{}/", wt.port),
        "cert_sha256": wt.cert_sha256,
        "protocols": ["moqt-18"],
    });
    // The certificate is rotated with the edge; a short cache keeps players current.
    cache_control(
        response(StatusCode::OK, "application/json", body.to_string()),
        "max-age=60",
    )
}

fn cache_control(mut r: Response<Full<Bytes>>, value: &'static str) -> Response<Full<Bytes>> {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    r
}

/// `/healthz`: the process serves.
pub(crate) fn healthz() -> Response<Full<Bytes>> {
    response(StatusCode::OK, "text/plain", "ok\n")
}

/// `/readyz`: an edge is ready once it has an upstream to pull from.
pub(crate) fn readyz(role: crate::Role, counters: &ServerCounters) -> Response<Full<Bytes>> {
    let connected = counters.upstream_sessions_active.load(Ordering::Relaxed);
    if role.needs_upstream() && connected == 0 {
        error(StatusCode::SERVICE_UNAVAILABLE, "no upstream connected")
    } else {
        response(StatusCode::OK, "text/plain", "ready\n")
    }
}

/// `/hls/<tenant>/<event>/<stream>/...`: the token checked, then the
/// playlist or media from the cache. The raw path is used (not decoded):
/// names in it are ids, never percent-encoded.
async fn hls(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Full<Bytes>> {
    let rest = uri.path().strip_prefix("/hls/").unwrap_or_default();
    let query = uri.query().unwrap_or("");
    state.counters.hls_requests.fetch_add(1, Ordering::Relaxed);
    let admitted = match &state.access {
        None => Admitted {
            query_token: None,
            claims: None,
        },
        Some(access) => match admit_hls(access, rest, query, &headers) {
            Ok(a) => a,
            Err(refused) => {
                state.counters.hls_refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(reason = refused.label(), "HLS request refused");
                let status = match refused {
                    Refused::Missing => StatusCode::UNAUTHORIZED,
                    _ => StatusCode::FORBIDDEN,
                };
                return error(status, &refused.to_string());
            }
        },
    };
    let mut r = hls_request(&state, rest, query, admitted.query_token.as_deref()).await;
    if let Some(claims) = &admitted.claims {
        if rest.ends_with("/playlist.m3u8") && r.status() == StatusCode::OK {
            let namespace: Vec<&str> = rest.split('/').take(3).collect();
            state.hls_viewers.saw(&namespace.join("/"), &claims.sub);
        }
    }
    if state.access.is_some() {
        // Authorised media must not be served from a shared cache to others.
        let cacheable = r
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.starts_with("max-age"))
            .map(|v| format!("private, {v}"));
        if let Some(value) = cacheable.and_then(|v| HeaderValue::from_str(&v).ok()) {
            r.headers_mut().insert(header::CACHE_CONTROL, value);
        }
    }
    if let (Some(token), Some(claims)) = (&admitted.query_token, &admitted.claims) {
        if rest.ends_with("/master.m3u8") && r.status() == StatusCode::OK {
            let cookie = access::hls_cookie(
                token,
                claims,
                state.secure_cookies,
                time::OffsetDateTime::now_utc(),
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, value);
            }
        }
    }
    let len = http_body::Body::size_hint(r.body()).exact().unwrap_or(0);
    state.counters.hls_bytes.fetch_add(len, Ordering::Relaxed);
    r
}

/// `POST /qoe`: a player's QoE beacon ([`crate::qoe`]). Accepted only for a
/// broadcast this relay serves and, with access control, with a playback
/// token for it; answered 204 without a body.
async fn qoe_beacon(
    State(state): State<Arc<HttpState>>,
    body: axum::body::Body,
) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, crate::qoe::MAX_BEACON_BYTES);
    let body = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "beacon too large"),
    };
    let beacon = match crate::qoe::Beacon::parse(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let fields = match beacon.namespace() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    if find(&state, &fields).is_none() {
        return error(StatusCode::NOT_FOUND, "no such broadcast here");
    }
    if let Some(access) = &state.access {
        let token = beacon.token.as_deref().unwrap_or("");
        if let Err(refused) =
            access.authorize_hls([token], &fields, time::OffsetDateTime::now_utc())
        {
            state.counters.hls_refused.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::FORBIDDEN, &refused.to_string());
        }
    }
    state.counters.qoe.add(&beacon);
    response(StatusCode::NO_CONTENT, "text/plain", Bytes::new())
}

/// `/vod/<tenant>/<event>/<stream>/...`: checked like HLS (a playback token
/// for the stream, or a relay's bearer credential), then answered by the
/// VOD source.
async fn vod_request(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Full<Bytes>> {
    let rest = uri.path().strip_prefix("/vod/").unwrap_or_default();
    let query = uri.query().unwrap_or("");
    let Some(vod) = &state.vod else {
        return error(StatusCode::NOT_FOUND, "recordings are not served here");
    };
    let Some(parts) = crate::vod::safe_path(rest) else {
        return error(StatusCode::BAD_REQUEST, "bad recording path");
    };
    if parts.len() < 4 {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    let mut query_token = None;
    if let Some(access) = &state.access {
        let namespace = &parts[..3];
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let outcome = match bearer {
            Some(token) => access
                .admit(&[token.to_owned()], time::OffsetDateTime::now_utc())
                .and_then(|claims| access.permits(&claims, namespace)),
            None => admit_hls(access, rest, query, &headers).map(|a| {
                query_token = a.query_token;
            }),
        };
        if let Err(refused) = outcome {
            state.counters.hls_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(reason = refused.label(), "VOD request refused");
            let status = match refused {
                Refused::Missing => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            return error(status, &refused.to_string());
        }
    }
    let answer = vod.get(rest).await;
    let body = if rest.ends_with(".m3u8") && answer.status == 200 {
        match std::str::from_utf8(&answer.body) {
            Ok(text) => Bytes::from(playlist_text(text.to_owned(), query_token.as_deref())),
            Err(_) => answer.body,
        }
    } else {
        answer.body
    };
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    state
        .counters
        .hls_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let mut r = response(status, "application/octet-stream", body);
    if let Ok(v) = HeaderValue::from_str(&answer.content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    let cache = if state.access.is_some() && answer.cache.starts_with("max-age") {
        "private, max-age=86400"
    } else {
        answer.cache
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn state(role: crate::Role) -> Arc<HttpState> {
        Arc::new(HttpState {
            role,
            broadcasts: Broadcasts::new(),
            counters: Arc::new(ServerCounters::new(role)),
            part_target: 0.5,
            window: 6,
            access: None,
            secure_cookies: false,
            webtransport: Some(WebTransportInfo {
                port: 4443,
                cert_sha256: "ab".into(),
            }),
            hls_viewers: Arc::default(),
            vod: None,
        })
    }

    /// What each role's router answers, before any broadcast exists.
    #[tokio::test]
    async fn routes_answer_by_role_method_and_scheme() {
        use crate::Role::{Agent, Edge, Origin};
        #[rustfmt::skip]
        let table = [
            // role, https, method, path, status, allow-methods header
            (Edge, false, "GET", "/healthz", 200, None),
            (Edge, false, "HEAD", "/healthz", 200, None),
            (Edge, false, "GET", "/readyz", 503, None),
            (Agent, false, "GET", "/readyz", 200, None),
            (Origin, false, "GET", "/readyz", 200, None),
            (Edge, false, "GET", "/webtransport.json", 200, None),
            (Origin, false, "GET", "/webtransport.json", 404, None),
            (Edge, false, "GET", "/hls/t/e/s/master.m3u8", 404, None),
            (Origin, false, "GET", "/hls/t/e/s/master.m3u8", 404, None),
            (Edge, false, "POST", "/hls/t/e/s/master.m3u8", 405, None),
            (Edge, false, "DELETE", "/healthz", 405, None),
            (Edge, false, "POST", "/qoe", 400, None),
            (Origin, false, "POST", "/qoe", 404, None),
            (Edge, false, "GET", "/vod/t/e/s/rec/index.m3u8", 404, None),
            (Edge, false, "GET", "/nothing", 404, None),
            (Edge, false, "OPTIONS", "/hls/t/e/s/master.m3u8", 204, Some("GET, HEAD, POST, OPTIONS")),
            (Origin, true, "OPTIONS", "/anything", 204, Some("GET, HEAD, POST, OPTIONS")),
            (Edge, false, "OPTIONS", "/qoe", 204, Some("GET, HEAD, POST, OPTIONS")),
            (Agent, true, "OPTIONS", "/healthz", 204, Some("GET, HEAD, POST, OPTIONS")),
            (Edge, true, "GET", "/healthz", 200, None),
        ];
        for (role, https, method, path, status, allow) in table {
            let req = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, "edge.example:8443")
                .body(axum::body::Body::empty())
                .unwrap();
            let r = router(state(role), https).oneshot(req).await.unwrap();
            let case = format!("{role:?} {method} {path} https={https}");
            assert_eq!(r.status().as_u16(), status, "{case}");
            let h = r.headers();
            assert_eq!(
                h.get(header::X_CONTENT_TYPE_OPTIONS)
                    .map(|v| v.to_str().unwrap()),
                Some("nosniff"),
                "{case}"
            );
            assert_eq!(
                h.contains_key(header::STRICT_TRANSPORT_SECURITY),
                https,
                "{case}"
            );
            assert_eq!(
                h.get(header::ACCESS_CONTROL_ALLOW_METHODS)
                    .map(|v| v.to_str().unwrap()),
                allow,
                "{case}"
            );
        }
    }

    #[tokio::test]
    async fn webtransport_json_names_the_host_the_browser_used() {
        let req = axum::http::Request::builder()
            .uri("/webtransport.json")
            .header(header::HOST, "edge.example:8443")
            .body(axum::body::Body::empty())
            .unwrap();
        let r = router(state(crate::Role::Edge), false)
            .oneshot(req)
            .await
            .unwrap();
        use http_body_util::BodyExt;
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["url"], "https://edge.example:4443/");
        assert_eq!(json["cert_sha256"], "ab");
    }

    #[test]
    fn hls_paths_name_a_broadcast_a_track_and_a_file() {
        assert_eq!(
            hls_path("t/e/s/master.m3u8"),
            HlsPath::Master {
                namespace: vec!["t", "e", "s"]
            }
        );
        let track = |file| HlsPath::Track {
            namespace: vec!["t", "e", "s"],
            track: "video",
            file,
        };
        assert_eq!(hls_path("t/e/s/video/init.mp4"), track(TrackFile::Init));
        assert_eq!(
            hls_path("t/e/s/video/playlist.m3u8"),
            track(TrackFile::Playlist)
        );
        assert_eq!(
            hls_path("t/e/s/video/12.m4s"),
            track(TrackFile::Media {
                msn: 12,
                part: None
            })
        );
        assert_eq!(
            hls_path("t/e/s/video/12.3.m4s"),
            track(TrackFile::Media {
                msn: 12,
                part: Some(3)
            })
        );
        for other in ["12.3.4.m4s", "x.m4s", "12.x.m4s", "-1.m4s", "12.ts", ""] {
            assert_eq!(
                hls_path(&format!("t/e/s/video/{other}")),
                track(TrackFile::Other)
            );
        }
        assert_eq!(hls_path("playlist.m3u8"), HlsPath::NotFound);
    }

    #[test]
    fn blocking_reload_reads_msn_and_part() {
        assert_eq!(
            blocking_reload("_HLS_msn=5&_HLS_part=2"),
            (Some(5), Some(2))
        );
        assert_eq!(blocking_reload("token=x&_HLS_msn=5"), (Some(5), None));
        assert_eq!(blocking_reload("_HLS_msn=-1&_HLS_part=x"), (None, None));
        assert_eq!(blocking_reload(""), (None, None));
    }
}

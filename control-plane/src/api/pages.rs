//! The browser pages, served from the control plane's origin so they share
//! its session cookie and CSRF rules: `/login` (magic links, passwords;
//! `/reset` completes a password reset),
//! `/admin` (event managers), `/e/{tenant}/{event}` (viewer portal) and
//! `/embed/{tenant}/{event}` (the player alone, for iframes). The bundles
//! are built with the binary (strom-web) and served from `/assets/`.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/admin") }))
        .route(
            "/login",
            get(|| async { page("Log in", "login", Framing::Deny) }),
        )
        .route(
            "/reset",
            get(|| async { page("New password", "login", Framing::Deny) }),
        )
        .route(
            "/admin",
            get(|| async { page("strom admin", "admin", Framing::Deny) }),
        )
        .route(
            "/e/{tenant}/{event}",
            get(|_: Path<(String, String)>| async { page("Event", "portal", Framing::Deny) }),
        )
        .route(
            "/embed/{tenant}/{event}",
            get(|_: Path<(String, String)>| async { page("Live", "player", Framing::Any) }),
        )
        .route("/assets/{name}", get(asset))
}

/// Whether other sites may frame the page: only the player is embeddable.
enum Framing {
    Deny,
    Any,
}

/// Scripts only from here; media from blob: (MSE) and the edges (HLS over
/// http(s), WebTransport over https).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
media-src 'self' blob: http: https:; connect-src 'self' http: https:; worker-src 'self' blob:; \
object-src 'none'; base-uri 'none'; form-action 'self'";

fn page(title: &str, script: &str, framing: Framing) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><link rel=\"stylesheet\" href=\"/assets/strom.css\"></head>\
<body class=\"page-{script}\"><main id=\"app\"><noscript>This page needs JavaScript.</noscript></main>\
<script type=\"module\" src=\"/assets/{script}.js\"></script></body></html>\n"
    );
    let frame_ancestors = match framing {
        Framing::Deny => "frame-ancestors 'none'",
        Framing::Any => "frame-ancestors *",
    };
    let mut res = (StatusCode::OK, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("{CSP}; {frame_ancestors}")) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    if matches!(framing, Framing::Deny) {
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    }
    res
}

async fn asset(Path(name): Path<String>) -> Response {
    match strom_web::asset(&name) {
        Some((body, kind)) => {
            let mut res = (StatusCode::OK, body).into_response();
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            res
        }
        None => super::ApiError::not_found().into_response(),
    }
}

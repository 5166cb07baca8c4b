//! The browser pages, served from the control plane's origin so they share
//! its session cookie and CSRF rules: `/login` (magic links, passwords;
//! `/reset` completes a password reset),
//! `/admin` (event managers), `/e/{tenant}/{event}` (viewer portal) and
//! `/embed/{tenant}/{event}` (the player alone, for iframes). The bundles
//! are built with the binary (strom-web) and served from `/assets/`.
//!
//! Also the headers that guard them: a Content-Security-Policy per page
//! that lets players reach only the edges and agents they may be sent to,
//! framing rules and `Cross-Origin-Opener-Policy`; and those of every
//! response ([`security_headers`]): HSTS when the public URL is https,
//! `nosniff`, `no-referrer`, and a policy that loads nothing on answers
//! that are not pages.

use std::net::IpAddr;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::{cookie_value, AppState, ClientIp, Shared, SESSION_COOKIE};
use crate::model::P2pMode;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/",
            get(|State(st): State<Shared>| async move {
                with_hsts(&st, Redirect::to("/admin").into_response())
            }),
        )
        .route(
            "/login",
            get(|State(st): State<Shared>| async move { page(&st, &LOGIN, &[]) }),
        )
        .route(
            "/reset",
            get(|State(st): State<Shared>| async move { page(&st, &RESET, &[]) }),
        )
        .route("/admin", get(admin))
        .route("/e/{tenant}/{event}", get(portal))
        .route("/embed/{tenant}/{event}", get(embed))
        .route("/assets/{name}", get(asset))
}

/// A page: its title, its script, and whether other sites may frame it.
struct Page {
    title: &'static str,
    script: &'static str,
    framing: Framing,
}

const LOGIN: Page = Page {
    title: "Log in",
    script: "login",
    framing: Framing::Deny,
};
const RESET: Page = Page {
    title: "New password",
    script: "login",
    framing: Framing::Deny,
};
const ADMIN: Page = Page {
    title: "strom admin",
    script: "admin",
    framing: Framing::Deny,
};
const PORTAL: Page = Page {
    title: "Event",
    script: "portal",
    framing: Framing::Deny,
};
const EMBED: Page = Page {
    title: "Live",
    script: "player",
    framing: Framing::Any,
};

/// Whether other sites may frame the page: only the player is embeddable.
enum Framing {
    Deny,
    Any,
}

/// The admin page previews events: players for the caller's tenant.
async fn admin(State(st): State<Shared>, ClientIp(ip): ClientIp, headers: HeaderMap) -> Response {
    let name = if st.secure_cookies {
        SESSION_COOKIE
    } else {
        SESSION_COOKIE.trim_start_matches("__Host-")
    };
    let secret = cookie_value(&headers, name);
    let media = media_sources_for(&st, secret.map(TenantOf::Session), ip).await;
    page(&st, &ADMIN, &media)
}

async fn portal(
    State(st): State<Shared>,
    ClientIp(ip): ClientIp,
    Path((tenant, _event)): Path<(String, String)>,
) -> Response {
    let media = media_sources_for(&st, Some(TenantOf::Path(tenant)), ip).await;
    page(&st, &PORTAL, &media)
}

async fn embed(
    State(st): State<Shared>,
    ClientIp(ip): ClientIp,
    Path((tenant, _event)): Path<(String, String)>,
) -> Response {
    let media = media_sources_for(&st, Some(TenantOf::Path(tenant)), ip).await;
    page(&st, &EMBED, &media)
}

/// Where a page's tenant comes from.
enum TenantOf {
    Path(String),
    /// The session cookie's secret (the admin page's URL names no tenant).
    Session(String),
}

/// The sources players on this page may fetch from and connect to: what
/// the playback-token answer can list as `edges`, looked up now because
/// edges and agents register at run time. That is the configured edges,
/// the registered ones (whatever their load: a player keeps its list for
/// the whole session), and, for a viewer inside a site with peer-assist,
/// that site's agents heard from recently.
///
/// Agents are LAN addresses that cannot be known in advance; listing them
/// per response, and only to clients inside their site, keeps them out of
/// every other page's policy. An agent that registers after the page was
/// served is refused by this page's policy: its player falls back to the
/// next entry of its list (the edges), as it does for an agent that is
/// down, and a reload picks the agent up.
async fn media_sources_for(state: &Shared, tenant: Option<TenantOf>, ip: IpAddr) -> Vec<String> {
    let st = state.clone();
    let urls = tokio::task::spawn_blocking(move || {
        let mut urls = st.edges.clone();
        match st.repo.edges() {
            Ok(edges) => urls.extend(edges.into_iter().map(|e| e.url)),
            Err(e) => tracing::warn!(error = %e, "edges not read for the page's policy"),
        }
        let tenant = match tenant {
            // From the URL, unauthenticated: only a well-formed id is looked up.
            Some(TenantOf::Path(t)) => crate::model::valid_id("t", &t).then_some(t),
            Some(TenantOf::Session(secret)) => st.repo.session(&secret).ok().map(|s| s.tenant),
            None => None,
        };
        if let Some(tenant) = tenant {
            if let Ok(Some(site)) = st.repo.site_of(&tenant, ip) {
                if site.p2p == P2pMode::On {
                    // The page's CSP names the agents it may reach; without
                    // the roster the player simply uses the edges.
                    let agents = st.agents.site_agents(&tenant, &site.id).unwrap_or_default();
                    urls.extend(agents.iter().map(|a| a.base_url()));
                }
            }
        }
        urls
    })
    .await
    .unwrap_or_default();
    media_sources(urls.iter().map(String::as_str))
}

/// CSP sources for players' destinations given as base URLs: each one's
/// origin (HLS, `webtransport.json`, QoE beacons; media elements playing
/// HLS natively) and `https://<host>:*` for its WebTransport session, which
/// the same host serves at a UDP port of its choosing (`webtransport.json`
/// names it). URLs that are not http(s), or whose host could not stand in a
/// policy as it is, are left out.
pub(crate) fn media_sources<'a>(urls: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    for u in urls {
        let Ok(url) = url::Url::parse(u) else {
            continue;
        };
        if !matches!(url.scheme(), "http" | "https") {
            continue;
        }
        let host = match url.host() {
            Some(url::Host::Domain(d))
                if !d.is_empty()
                    && d.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
            {
                d.to_owned()
            }
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            _ => continue,
        };
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        add(format!("{}://{host}{port}", url.scheme()));
        add(format!("https://{host}:*"));
    }
    out
}

/// The policy of a page whose players may reach `media` (see
/// [`media_sources`]): scripts, styles and everything else only from here;
/// media also from `blob:` (MSE). No `http:`/`https:` wildcards: a script
/// slipped into a page could not send data anywhere else.
pub(crate) fn content_security_policy(media: &[String], embeddable: bool) -> String {
    let media: String = media.iter().map(|s| format!(" {s}")).collect();
    let frame_ancestors = if embeddable { "*" } else { "'none'" };
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
media-src 'self' blob:{media}; connect-src 'self'{media}; worker-src 'self' blob:; \
object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors {frame_ancestors}"
    )
}

const HSTS: &str = "max-age=31536000; includeSubDomains";

/// `Strict-Transport-Security` when the public URL is https: a TLS proxy
/// terminates in front of the control plane, but browsers see the public
/// URL. Never over plain http (it would pin a name to https that has none).
pub(crate) fn strict_transport_security(state: &AppState) -> Option<HeaderValue> {
    (state.public_url.scheme() == "https").then(|| HeaderValue::from_static(HSTS))
}

fn with_hsts(state: &AppState, mut res: Response) -> Response {
    if let Some(v) = strict_transport_security(state) {
        res.headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
    res
}

/// The policy of answers that are not pages (JSON, problems, redirects):
/// nothing to load, nothing to frame, should one be opened as a document.
const NOT_A_PAGE_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Headers for every response of the control plane, to be layered outermost
/// over the whole router (`from_fn_with_state`), so that answers made before
/// any handler (a refused cross-site request) get them too: `nosniff`,
/// `no-referrer`, HSTS when the public URL is https, and a locked-down
/// policy on answers that carry none. Assets go without: a policy on a
/// script would bind a worker started from it.
pub(crate) async fn security_headers(
    State(state): State<Shared>,
    req: Request,
    next: Next,
) -> Response {
    let asset = req.uri().path().starts_with("/assets/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !asset && !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(NOT_A_PAGE_CSP),
        );
    }
    with_hsts(&state, res)
}

fn page(state: &AppState, page: &Page, media: &[String]) -> Response {
    let (title, script) = (page.title, page.script);
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><link rel=\"stylesheet\" href=\"/assets/strom.css\"></head>\
<body class=\"page-{script}\"><main id=\"app\"><noscript>This page needs JavaScript.</noscript></main>\
<script type=\"module\" src=\"/assets/{script}.js\"></script></body></html>\n"
    );
    let embeddable = matches!(page.framing, Framing::Any);
    let mut res = (StatusCode::OK, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(media, embeddable)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    if !embeddable {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        // A page it opens (a privacy notice, a link in a mail) gets no handle
        // on this window. The embed stays without: its opener is the host page.
        h.insert(
            "cross-origin-opener-policy",
            HeaderValue::from_static("same-origin"),
        );
    }
    with_hsts(state, res)
}

async fn asset(State(st): State<Shared>, Path(name): Path<String>) -> Response {
    let res = match strom_web::asset(&name) {
        Some((body, kind)) => {
            let mut res = (StatusCode::OK, body).into_response();
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            res
        }
        None => super::ApiError::not_found().into_response(),
    };
    with_hsts(&st, res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_origins_and_their_webtransport_hosts() {
        let s = media_sources([
            "http://127.0.0.1:8082/",
            "https://edge-1.example.com/strom/",
            "https://edge-1.example.com:443/other/",
            "https://[fd00::5]:8443/",
        ]);
        assert_eq!(
            s,
            [
                "http://127.0.0.1:8082",
                "https://127.0.0.1:*",
                "https://edge-1.example.com",
                "https://edge-1.example.com:*",
                "https://[fd00::5]:8443",
                "https://[fd00::5]:*",
            ]
        );
    }

    #[test]
    fn sources_leave_out_what_cannot_stand_in_a_policy() {
        let s = media_sources([
            "moqt://edge.example:4443",
            "not a url",
            "https://edge.example;script-src:443/",
            "https://edge,example/",
            "https://ed'ge.example/",
            "file:///etc/passwd",
        ]);
        assert!(s.is_empty(), "{s:?}");
    }

    #[test]
    fn policy_has_no_scheme_wildcards() {
        let media = media_sources(["https://edge.example/"]);
        for embeddable in [false, true] {
            let csp = content_security_policy(&media, embeddable);
            for directive in csp.split(';').map(str::trim) {
                let mut words = directive.split_whitespace();
                let name = words.next().unwrap_or_default();
                for source in words {
                    assert!(
                        !matches!(source, "http:" | "https:" | "*" | "ws:" | "wss:")
                            || (name == "frame-ancestors" && embeddable),
                        "{name} allows {source}"
                    );
                }
            }
        }
        assert!(content_security_policy(&media, false).contains("frame-ancestors 'none'"));
        assert!(content_security_policy(&media, true).contains("frame-ancestors *"));
    }
}

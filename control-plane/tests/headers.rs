//! The response headers that guard the browser pages and the API (ASVS V3,
//! V12): a Content-Security-Policy that lets players reach only the edges
//! and agents they may be sent to (registered at run time), framing rules
//! per page, `Cross-Origin-Opener-Policy`, `nosniff`, a policy that loads
//! nothing on answers that are not pages, and HSTS exactly when the public
//! URL is https.

mod common;

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use strom_control_plane::{model::EdgeRegistration, ControlPlaneConfig};

const PEER: &str = "12D3KooWLdvg7ZbBHnyFeY4kU7VZ5U3T8fM6o6x4o3HVYxBXYxKn";

/// GETs `path` (not following redirects): status and headers.
async fn head(base: &str, path: &str) -> (u16, HeaderMap) {
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.headers().clone())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

/// The sources of one directive of a policy.
fn directive<'a>(csp: &'a str, name: &str) -> Vec<&'a str> {
    csp.split(';')
        .map(str::trim)
        .find_map(|d| {
            let mut words = d.split_whitespace();
            (words.next() == Some(name)).then(|| words.collect())
        })
        .unwrap_or_else(|| panic!("no {name} in {csp}"))
}

fn assert_no_wildcards(csp: &str) {
    for name in ["connect-src", "media-src", "default-src", "script-src"] {
        for source in directive(csp, name) {
            assert!(
                !matches!(source, "http:" | "https:" | "*" | "ws:" | "wss:")
                    && !source.starts_with("*."),
                "{name} allows {source}: {csp}"
            );
        }
    }
}

fn edge(id: &str, url: &str) -> EdgeRegistration {
    let now = time::OffsetDateTime::now_utc();
    EdgeRegistration {
        id: id.into(),
        region: "eu".into(),
        url: url.into(),
        load: 0.2,
        registered_at: now,
        last_seen: Some(now),
    }
}

#[tokio::test]
async fn players_may_reach_the_edges_and_nothing_else() {
    let plane = common::start_with(ControlPlaneConfig {
        edges: vec!["https://edge-a.example:8443/".into()],
        ..common::config()
    })
    .await;
    let page = "/e/t_x/e_y";

    let (status, h) = head(&plane.base, page).await;
    assert_eq!(status, 200);
    let csp = header(&h, "content-security-policy").expect("a policy");
    assert_no_wildcards(csp);
    let connect = directive(csp, "connect-src");
    assert!(connect.contains(&"'self'"), "{csp}");
    assert!(connect.contains(&"https://edge-a.example:8443"), "{csp}");
    assert!(
        connect.contains(&"https://edge-a.example:*"),
        "WebTransport: {csp}"
    );
    assert!(!csp.contains("edge-b.example"), "{csp}");

    // An edge that registers later is in the next page's policy.
    plane
        .repo
        .put_edge(&edge("edge-b", "http://edge-b.example:8082/"))
        .unwrap();
    for page in [page, "/embed/t_x/e_y", "/admin"] {
        let (status, h) = head(&plane.base, page).await;
        assert_eq!(status, 200);
        let csp = header(&h, "content-security-policy").unwrap();
        assert_no_wildcards(csp);
        for name in ["connect-src", "media-src"] {
            let sources = directive(csp, name);
            assert!(
                sources.contains(&"http://edge-b.example:8082"),
                "{page}: {csp}"
            );
            assert!(
                sources.contains(&"https://edge-b.example:*"),
                "{page}: {csp}"
            );
            assert!(
                sources.contains(&"https://edge-a.example:8443"),
                "{page}: {csp}"
            );
        }
        assert!(directive(csp, "media-src").contains(&"blob:"), "MSE: {csp}");
    }

    // Pages without a player reach only their own origin.
    for page in ["/login", "/reset"] {
        let (_, h) = head(&plane.base, page).await;
        let csp = header(&h, "content-security-policy").unwrap();
        assert_eq!(directive(csp, "connect-src"), ["'self'"], "{page}: {csp}");
        assert_no_wildcards(csp);
    }

    // An edge URL that would smuggle a directive in is left out.
    plane
        .repo
        .put_edge(&edge("edge-c", "https://edge-c.example;script-src/"))
        .unwrap();
    let (_, h) = head(&plane.base, page).await;
    let csp = header(&h, "content-security-policy").unwrap();
    assert!(!csp.contains("edge-c"), "{csp}");
    assert_eq!(directive(csp, "script-src"), ["'self'"]);
}

#[tokio::test]
async fn viewers_inside_a_site_may_reach_its_agents() {
    let plane = common::start().await;
    let (tenant, mut owner) = plane.tenant("Acme").await;
    // The test's client is at 127.0.0.1: inside this site.
    let (status, site) = owner
        .post(
            "/api/v1/sites",
            json!({"name": "HQ", "cidrs": ["127.0.0.0/8"], "p2p": "on"}),
        )
        .await;
    assert_eq!(status, 201, "{site:?}");
    let page = format!("/e/{tenant}/e_y");
    let (_, h) = head(&plane.base, &page).await;
    assert!(!header(&h, "content-security-policy")
        .unwrap()
        .contains("127.0.0.9"));

    let (status, cred) = owner.post("/api/v1/agent-credentials", json!({})).await;
    assert_eq!(status, 201, "{cred:?}");
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/agents/register", plane.base))
        .bearer_auth(cred["credential"].as_str().unwrap())
        .json(&json!({
            "peer_id": PEER,
            "addrs": ["127.0.0.9"],
            "listen": ["/ip4/127.0.0.9/udp/4001/quic-v1"],
            "moqt_port": 4443,
            "http_port": 8443,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status().as_u16(),
        200,
        "{:?}",
        res.json::<Value>().await
    );

    for page in [page.clone(), format!("/embed/{tenant}/e_y")] {
        let (_, h) = head(&plane.base, &page).await;
        let csp = header(&h, "content-security-policy").unwrap();
        assert_no_wildcards(csp);
        let connect = directive(csp, "connect-src");
        assert!(
            connect.contains(&"https://127.0.0.9:8443"),
            "HLS from the agent: {csp}"
        );
        assert!(
            connect.contains(&"https://127.0.0.9:*"),
            "WebTransport to the agent: {csp}"
        );
    }
    // Another tenant's pages do not name this tenant's agents.
    let (_, h) = head(&plane.base, "/e/t_other/e_y").await;
    assert!(!header(&h, "content-security-policy")
        .unwrap()
        .contains("127.0.0.9"));
}

#[tokio::test]
async fn only_the_player_may_be_framed() {
    let plane = common::start().await;
    for page in ["/login", "/reset", "/admin", "/e/t_x/e_y"] {
        let (status, h) = head(&plane.base, page).await;
        assert_eq!(status, 200, "{page}");
        let csp = header(&h, "content-security-policy").unwrap();
        assert_eq!(directive(csp, "frame-ancestors"), ["'none'"], "{page}");
        assert_eq!(header(&h, "x-frame-options"), Some("DENY"), "{page}");
        assert_eq!(
            header(&h, "cross-origin-opener-policy"),
            Some("same-origin"),
            "{page}"
        );
        assert_eq!(
            header(&h, "x-content-type-options"),
            Some("nosniff"),
            "{page}"
        );
        assert_eq!(header(&h, "referrer-policy"), Some("no-referrer"), "{page}");
    }
    let (status, h) = head(&plane.base, "/embed/t_x/e_y").await;
    assert_eq!(status, 200);
    let csp = header(&h, "content-security-policy").unwrap();
    assert_eq!(directive(csp, "frame-ancestors"), ["*"]);
    assert_eq!(header(&h, "x-frame-options"), None);
    assert_eq!(header(&h, "cross-origin-opener-policy"), None);
}

#[tokio::test]
async fn api_answers_are_not_sniffed() {
    let plane = common::start().await;
    for path in [
        "/healthz",
        "/api/openapi.json",
        "/api/v1/session",
        "/api/v1/nothing-here",
        "/assets/strom.css",
        "/assets/missing.js",
    ] {
        let (_, h) = head(&plane.base, path).await;
        assert_eq!(
            header(&h, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(header(&h, "referrer-policy"), Some("no-referrer"), "{path}");
    }
}

#[tokio::test]
async fn answers_that_are_not_pages_load_nothing_and_cannot_be_framed() {
    let plane = common::start().await;
    for path in [
        "/healthz",
        "/api/openapi.json",
        "/api/v1/session",
        "/api/v1/nothing-here",
        "/",
    ] {
        let (_, h) = head(&plane.base, path).await;
        assert_eq!(
            header(&h, "content-security-policy"),
            Some("default-src 'none'; frame-ancestors 'none'"),
            "{path} (from pages::security_headers layered in api::router)"
        );
    }
    // Refused before any handler ran: still not to be sniffed.
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/logout", plane.base))
        .header("origin", "https://elsewhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    assert_eq!(
        header(res.headers(), "x-content-type-options"),
        Some("nosniff")
    );
}

/// Pages, assets, API answers and errors.
const EVERY_KIND: &[&str] = &[
    "/",
    "/login",
    "/admin",
    "/embed/t_x/e_y",
    "/assets/strom.css",
    "/healthz",
    "/api/v1/session",
    "/api/v1/nothing-here",
];

#[tokio::test]
async fn hsts_when_the_public_url_is_https() {
    let plane = common::start_with(ControlPlaneConfig {
        public_url: "https://webcasts.example.com/".parse().unwrap(),
        ..common::config()
    })
    .await;
    for path in EVERY_KIND {
        let (_, h) = head(&plane.base, path).await;
        assert_eq!(
            header(&h, "strict-transport-security"),
            Some("max-age=31536000; includeSubDomains"),
            "{path} (API answers get it from pages::security_headers layered in api::router)"
        );
    }
}

#[tokio::test]
async fn no_hsts_when_the_public_url_is_http() {
    let plane = common::start_with(ControlPlaneConfig {
        public_url: "http://webcasts.example.com/".parse().unwrap(),
        ..common::config()
    })
    .await;
    for path in EVERY_KIND {
        let (_, h) = head(&plane.base, path).await;
        assert_eq!(header(&h, "strict-transport-security"), None, "{path}");
    }
}

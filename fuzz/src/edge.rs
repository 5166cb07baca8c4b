//! HLS and VOD requests as the edge's HTTP handler parses them, with access
//! control on: the path after `/hls/` or `/vod/` (`http::hls_path`,
//! `safe_path`), the query (`http::blocking_reload`, the `token`
//! parameter), the `Cookie` and `Authorization` headers, the token check
//! (`http::admit_hls`, `Access::admit`/`permits`), and the playlist rewrite
//! that puts the token on every URI (`tokenize_playlist`, also run on
//! VOD playlists that come from the upstream).
//!
//! The input is lines: `path[?query]`, `Cookie` value, `Authorization`
//! value, then a playlist text. `@T@` anywhere stands for a play token for
//! `t/e/s` minted when the target starts (a pre-made one would expire).

use std::sync::{Arc, OnceLock};

use hyper::header::{HeaderValue, AUTHORIZATION, COOKIE};
use hyper::HeaderMap;
use strom_relay::fuzzing::{hls_cookie, immutable, tokenize_playlist};
use strom_relay::http::{admit_hls, blocking_reload, hls_path, HlsPath, TrackFile};
use strom_relay::{safe_path, Access, EDGE_SESSIONS};
use strom_token::Grant;

use crate::fixtures;

struct Fixture {
    access: Access,
    token: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (token, _) = fixtures::signing_key()
            .mint(
                &Grant::play("p_fuzz", "t", "e"),
                time::OffsetDateTime::now_utc(),
            )
            .expect("mints");
        Fixture {
            access: Access::new(Arc::clone(&fixtures::verifier()), EDGE_SESSIONS),
            token,
        }
    })
}

pub fn hls_request(data: &[u8]) {
    let f = fixture();
    let text = String::from_utf8_lossy(data).replace("@T@", &f.token);
    let mut lines = text.splitn(4, '\n');
    let target = lines.next().unwrap_or("");
    let cookie = lines.next().unwrap_or("");
    let authorization = lines.next().unwrap_or("");
    let playlist = lines.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HeaderMap::new();
    for (name, value) in [(COOKIE, cookie), (AUTHORIZATION, authorization)] {
        if let Ok(v) = HeaderValue::from_str(value) {
            if !value.is_empty() {
                headers.insert(name, v);
            }
        }
    }
    let now = time::OffsetDateTime::now_utc();
    if let Some(rest) = path.strip_prefix("/vod/") {
        // vod_request: the path is checked first, then the viewer.
        let Some(parts) = safe_path(rest) else { return };
        let _ = immutable(rest);
        if parts.len() < 4 {
            return;
        }
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let token = match bearer {
            Some(token) => {
                let _ = f
                    .access
                    .admit(&[token.to_owned()], now)
                    .and_then(|claims| f.access.permits(&claims, &parts[..3]));
                None
            }
            None => admit_hls(&f.access, rest, query, &headers)
                .ok()
                .and_then(|a| a.query_token),
        };
        if let Some(token) = token {
            let _ = tokenize_playlist(playlist, &token);
        }
        return;
    }
    let Some(rest) = path.strip_prefix("/hls/") else {
        return;
    };
    // The handler parses the path only for an admitted request; parsed here
    // for every one, so that the fuzzer need not keep a valid token to
    // reach it.
    let admitted = admit_hls(&f.access, rest, query, &headers).ok();
    match hls_path(rest) {
        HlsPath::Master { namespace } => {
            let _ = strom_relay::Namespace::new(
                namespace.iter().map(|s| s.to_string()).collect(),
            );
        }
        HlsPath::Track {
            file: TrackFile::Playlist,
            ..
        } => {
            let _ = blocking_reload(query);
        }
        _ => {}
    }
    let Some(admitted) = admitted else { return };
    if let (Some(token), Some(claims)) = (&admitted.query_token, &admitted.claims) {
        let _ = hls_cookie(token, claims, true, now);
        let _ = tokenize_playlist(playlist, token);
    }
}

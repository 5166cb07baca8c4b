//! LL-HLS over HTTP: which broadcast, track and file a path names, the
//! token check before anything about the broadcast is revealed, blocking
//! playlist reloads, and the multivariant playlist, media playlists, init
//! segments and parts served from the group cache.

use super::*;

/// Checks the token of an HLS request for `/hls/<rest>`: the broadcast is
/// the first three path segments (tenant/event/stream), checked before
/// anything about it is revealed.
pub fn admit_hls(
    access: &Access,
    rest: &str,
    query: &str,
    headers: &HeaderMap,
) -> Result<Admitted, Refused> {
    let namespace: Vec<&str> = rest.split('/').take(3).collect();
    let query_token = access::query_value(query, TOKEN_PARAM);
    let cookies = access::cookie_values(
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        TOKEN_COOKIE,
    );
    let now = time::OffsetDateTime::now_utc();
    // A token in the URL is the player's current one; cookies may be stale.
    let mut refused = None;
    if let Some(token) = query_token {
        match access.authorize_hls([token.as_str()], &namespace, now) {
            Ok(claims) => {
                return Ok(Admitted {
                    query_token: Some(token),
                    claims: Some(claims),
                })
            }
            Err(e) => refused = Some(e),
        }
    }
    match access.authorize_hls(cookies, &namespace, now) {
        Ok(claims) => Ok(Admitted {
            query_token: None,
            claims: Some(claims),
        }),
        Err(e) => Err(refused.unwrap_or(e)),
    }
}

/// What `/hls/<rest>` names, parsed before anything is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HlsPath<'a> {
    /// `<namespace…>/master.m3u8`
    Master { namespace: Vec<&'a str> },
    /// `<namespace…>/<track>/<file>`
    Track {
        namespace: Vec<&'a str>,
        track: &'a str,
        file: TrackFile,
    },
    /// Too few segments to name a track.
    NotFound,
}

/// The file of a track that an HLS request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackFile {
    Init,
    Playlist,
    /// `<msn>.m4s` (a segment) or `<msn>.<part>.m4s` (a part).
    Media {
        msn: u64,
        part: Option<usize>,
    },
    /// Anything else (answered 404 once the track is known to exist).
    Other,
}

/// Parses the path of an HLS request (after `/hls/`). Pure: the handler and
/// the fuzz target `hls_request` (`fuzz/`) call it.
pub fn hls_path(rest: &str) -> HlsPath<'_> {
    let mut dirs: Vec<&str> = rest.split('/').collect();
    let Some(file) = dirs.pop() else {
        return HlsPath::NotFound;
    };
    if file == "master.m3u8" {
        return HlsPath::Master { namespace: dirs };
    }
    let Some(track) = dirs.pop() else {
        return HlsPath::NotFound;
    };
    let file = match file {
        "init.mp4" => TrackFile::Init,
        "playlist.m3u8" => TrackFile::Playlist,
        _ => match file.strip_suffix(".m4s") {
            None => TrackFile::Other,
            Some(name) => {
                let mut numbers = name.split('.');
                let msn = numbers.next().and_then(|n| n.parse::<u64>().ok());
                let part = numbers.next().map(|p| p.parse::<usize>().ok());
                match (msn, part, numbers.next()) {
                    (Some(msn), None, None) => TrackFile::Media { msn, part: None },
                    (Some(msn), Some(Some(part)), None) => TrackFile::Media {
                        msn,
                        part: Some(part),
                    },
                    _ => TrackFile::Other,
                }
            }
        },
    };
    HlsPath::Track {
        namespace: dirs,
        track,
        file,
    }
}

/// The blocking-reload parameters of a playlist request's query
/// (`_HLS_msn`, `_HLS_part`); a value that does not parse counts as absent.
pub fn blocking_reload(query: &str) -> (Option<u64>, Option<usize>) {
    let mut msn = None;
    let mut part = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("_HLS_msn", v)) => msn = v.parse::<u64>().ok(),
            Some(("_HLS_part", v)) => part = v.parse::<usize>().ok(),
            _ => {}
        }
    }
    (msn, part)
}

pub(super) async fn hls_request(
    state: &HttpState,
    rest: &str,
    query: &str,
    token: Option<&str>,
) -> Response<Full<Bytes>> {
    let (ns, track_name, file) = match hls_path(rest) {
        HlsPath::Master { namespace } => {
            let Some(broadcast) = find(state, &namespace) else {
                return error(StatusCode::NOT_FOUND, "no such broadcast");
            };
            return master(&broadcast, token).await;
        }
        HlsPath::Track {
            namespace,
            track,
            file,
        } => (namespace, track, file),
        HlsPath::NotFound => return error(StatusCode::NOT_FOUND, "not found"),
    };
    let Some(broadcast) = find(state, &ns) else {
        return error(StatusCode::NOT_FOUND, "no such broadcast");
    };
    let Some(catalog) = catalog(&broadcast).await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "broadcast has no catalog yet",
        );
    };
    let Some(info) = catalog.track(track_name) else {
        return error(StatusCode::NOT_FOUND, "no such track");
    };
    if file == TrackFile::Init {
        return match catalog.init_segment(track_name) {
            Some(init) => cache_control(response(StatusCode::OK, "video/mp4", init), "max-age=60"),
            None => error(StatusCode::NOT_FOUND, "no init segment"),
        };
    }
    let Some(track) = broadcast.track(track_name) else {
        return error(StatusCode::NOT_FOUND, "no such track");
    };
    track.touch();
    let params = PlaylistParams {
        timescale: info.timescale,
        part_target: state.part_target,
        window: state.window,
        nominal_segment: info.group_duration_secs,
    };
    match file {
        TrackFile::Playlist => playlist(&track, &params, query, token).await,
        TrackFile::Media { msn, part } => media(&track, &params, msn, part).await,
        TrackFile::Init | TrackFile::Other => error(StatusCode::NOT_FOUND, "not found"),
    }
}

pub(super) fn find(state: &HttpState, fields: &[&str]) -> Option<Arc<Broadcast>> {
    let ns = Namespace::new(fields.iter().map(|s| s.to_string()).collect()).ok()?;
    state.broadcasts.get(&ns)
}

/// Waits until `ready` holds for the track (or the limit passes); returns whether it held.
async fn wait_for(
    track: &Arc<TrackCache>,
    limit: Duration,
    ready: impl Fn(&TrackCache) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    let mut changes = track.changes();
    loop {
        changes.borrow_and_update();
        if ready(track) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || track.is_closed() {
            return false;
        }
        match tokio::time::timeout(left, changes.changed()).await {
            Ok(Ok(())) => {}
            _ => return ready(track),
        }
    }
}

async fn catalog(broadcast: &Arc<Broadcast>) -> Option<CatalogView> {
    let track = broadcast.track("catalog")?;
    track.touch();
    wait_for(&track, Duration::from_secs(5), |t| t.largest().is_some()).await;
    CatalogView::latest(&track)
}

/// The playlist text, with `token` on every URI when the request carried one.
pub(super) fn playlist_text(text: String, token: Option<&str>) -> String {
    match token {
        Some(token) => access::tokenize_playlist(&text, token),
        None => text,
    }
}

async fn master(broadcast: &Arc<Broadcast>, token: Option<&str>) -> Response<Full<Bytes>> {
    let Some(catalog) = catalog(broadcast).await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "broadcast has no catalog yet",
        );
    };
    // Encoders that announce no bitrate still get an honest BANDWIDTH: what
    // the cached whole groups of each track carried.
    let measured = catalog
        .media_tracks()
        .into_iter()
        .filter_map(|name| {
            let timescale = catalog.track(&name)?.timescale;
            let track = broadcast
                .track_list()
                .into_iter()
                .find(|t| t.name == name)?;
            let (bytes, ticks) = track.with_groups(|groups| {
                groups
                    .iter()
                    .filter(|g| g.complete)
                    .fold((0u64, 0u64), |(b, d), g| {
                        (b + g.bytes as u64, d + g.duration_ticks())
                    })
            });
            (ticks > 0).then(|| (name, bytes * 8 * timescale / ticks))
        })
        .collect();
    let catalog = catalog.with_measured(measured);
    cache_control(
        response(
            StatusCode::OK,
            "application/vnd.apple.mpegurl",
            playlist_text(catalog.multivariant(), token),
        ),
        "no-cache",
    )
}

async fn playlist(
    track: &Arc<TrackCache>,
    params: &PlaylistParams,
    query: &str,
    token: Option<&str>,
) -> Response<Full<Bytes>> {
    let (msn, part) = blocking_reload(query);
    if part.is_some() && msn.is_none() {
        return error(StatusCode::BAD_REQUEST, "_HLS_part needs _HLS_msn");
    }
    if let Some(msn) = msn {
        let newest = track.largest().map_or(0, |(g, _)| g);
        if msn > newest + 2 {
            return error(StatusCode::BAD_REQUEST, "_HLS_msn is too far in the future");
        }
        wait_for(track, BLOCK_LIMIT, |t| {
            t.with_groups(|g| hls::has(g, params, msn, part))
        })
        .await;
    } else {
        // A first request on a cold edge: give the upstream's history (joining
        // FETCH) a moment so the playlist starts with whole segments.
        let decodable = |g: &crate::cache::Group| g.objects.first().is_some_and(|o| o.id == 0);
        wait_for(track, Duration::from_secs(5), |t| {
            t.with_groups(|g| g.iter().any(decodable))
        })
        .await;
        wait_for(track, Duration::from_secs(2), |t| {
            t.with_groups(|g| g.iter().any(|g| g.complete && decodable(g)))
        })
        .await;
    }
    match track.with_groups(|g| hls::media_playlist(g, params)) {
        Some(text) => cache_control(
            response(
                StatusCode::OK,
                "application/vnd.apple.mpegurl",
                playlist_text(text, token),
            ),
            "no-cache",
        ),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "no media yet"),
    }
}

async fn media(
    track: &Arc<TrackCache>,
    params: &PlaylistParams,
    msn: u64,
    part: Option<usize>,
) -> Response<Full<Bytes>> {
    let newest = track.largest().map_or(0, |(g, _)| g);
    if msn > newest + 2 {
        return error(StatusCode::NOT_FOUND, "segment is too far in the future");
    }
    let target = (params.part_target * params.timescale as f64).round() as u64;
    wait_for(track, BLOCK_LIMIT, |t| {
        t.with_groups(|g| hls::has(g, params, msn, part))
    })
    .await;
    let body = track.with_groups(|groups| {
        let g = groups.iter().find(|g| g.id == msn)?;
        if g.objects.first().map(|o| o.id) != Some(0) {
            return None;
        }
        match part {
            None if g.complete => Some(hls::concat(g, 0, g.objects.len())),
            None => None,
            Some(p) => hls::parts_of(g, target)
                .get(p)
                .map(|x| hls::concat(g, x.first, x.end)),
        }
    });
    match body {
        Some(bytes) => cache_control(response(StatusCode::OK, "video/mp4", bytes), "max-age=30"),
        None => error(StatusCode::NOT_FOUND, "segment not available"),
    }
}

//! What relays (origins, edges, peer-agents) read: the token key set, the
//! revocation log by long poll, and their own registration and load.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use strom_token::revocation::RevocationFeed;
use strom_token::{Action, Claims, KeySet, RelayRole};
use utoipa::{IntoParams, ToSchema};

use super::problem::{blocking, Body, QueryOf};
use super::*;
use crate::model::EdgeRegistration;
use crate::store::{Presence, StoreError};
pub(crate) use strom_protocol::{
    EventFigures, QoeSums, RelayKind, RelayStatus, SrtSecrets, StreamStatus,
};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/relay/keys", get(keys))
        .route("/api/v1/relay/revocations", get(revocations))
        .route("/api/v1/relay/heartbeat", post(heartbeat))
        .route("/api/v1/relay/status", post(status))
        .route("/api/v1/relay/media-key", post(media_key))
        .route("/api/v1/relay/srt-secrets", get(srt_secrets))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MediaKeyRequest {
    /// The origin's Ed25519 public key for object signatures, 64 hex digits.
    pub key: String,
}

/// An origin registers the key it signs media objects with; the key set
/// (`GET /api/v1/relay/keys`, field `media`) hands it to peer-agents.
#[utoipa::path(post, path = "/api/v1/relay/media-key", tag = "relay", request_body = MediaKeyRequest, security(("relay" = [])),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn media_key(
    State(state): State<Shared>,
    headers: HeaderMap,
    Body(req): Body<MediaKeyRequest>,
) -> ApiResult<StatusCode> {
    let claims = relay_role_claims(&state, &headers, RelayRole::Origin)?;
    // 64 hex digits; anything else (odd lengths, non-ASCII) is refused.
    let bytes: Option<Vec<u8>> = (req.key.len() == 64)
        .then(|| hex::decode(&req.key).ok())
        .flatten();
    let valid = bytes.is_some_and(|b| strom_token::media::MediaKeys::default().insert(&b));
    if !valid {
        return Err(ApiError::bad_request(
            "key must be an Ed25519 public key in 64 hex digits",
        ));
    }
    let repo = state.repo.clone();
    blocking(move || {
        tracing::info!(origin = %claims.sub, "media signing key registered");
        repo.put_media_key(&crate::model::MediaKeyRegistration {
            origin: claims.sub,
            key: req.key.to_ascii_lowercase(),
            registered_at: crate::repo::now(),
        })?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct SrtSecretsQuery {
    /// The version held: the answer waits until the tenants change.
    #[serde(default)]
    pub version: Option<u64>,
    /// Hold the request open up to this many seconds (0 to 30).
    #[serde(default)]
    pub wait: u8,
}

/// The operator's origins fetch every tenant's SRT secret, so they can check
/// an encrypted SRT push without a call per handshake. Origin credentials
/// only: an edge has no business with them (F9); the root they derive from
/// never leaves the control plane.
#[utoipa::path(get, path = "/api/v1/relay/srt-secrets", tag = "relay", params(SrtSecretsQuery), security(("relay" = [])),
    responses((status = 200, body = SrtSecrets), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn srt_secrets(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryOf(q): QueryOf<SrtSecretsQuery>,
) -> ApiResult<Json<SrtSecrets>> {
    let claims = relay_role_claims(&state, &headers, RelayRole::Origin)?;
    let mut watch = state.repo.tenants_watch();
    if q.wait > 0 && q.version == Some(*watch.borrow()) {
        let _ =
            tokio::time::timeout(Duration::from_secs(q.wait.min(30) as u64), watch.changed()).await;
    }
    let version = *watch.borrow();
    let repo = state.repo.clone();
    blocking(move || {
        let secrets = repo.srt_tenant_secrets()?;
        tracing::debug!(relay = %claims.sub, tenants = secrets.len(), "SRT secrets handed to an origin");
        Ok(Json(SrtSecrets { secrets, version }))
    })
    .await
}

/// A report older than this is ignored (relays report every 2 s).
const STATUS_STALE: Duration = Duration::from_secs(10);
/// Bounds one report (streams); the board is bounded by the relay
/// credentials issued (one entry per credential and role).
const MAX_REPORTED_STREAMS: usize = 10_000;

/// At most this many events per report.
pub(crate) const MAX_REPORTED_EVENTS: usize = 10_000;

/// Checks reported events: `tenant/event` names (of `tenant` when given),
/// finite non-negative figures that fit the interval.
pub(crate) fn check_events(events: &[EventFigures], tenant: Option<&str>) -> ApiResult<()> {
    if events.len() > MAX_REPORTED_EVENTS {
        return Err(ApiError::bad_request("at most 10000 events per report"));
    }
    for e in events {
        let mut parts = e.event.split('/');
        let (Some(t), Some(ev), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ApiError::bad_request("event must be tenant/event"));
        };
        if t.is_empty() || ev.is_empty() || e.event.len() > 512 {
            return Err(ApiError::bad_request("event must be tenant/event"));
        }
        if tenant.is_some_and(|tenant| tenant != t) {
            return Err(ApiError::forbidden("events of another tenant"));
        }
        if !e.plausible() {
            return Err(ApiError::bad_request("implausible QoE figures"));
        }
    }
    Ok(())
}

/// A relay's last report: when, whether it is an origin, what it carries.
#[derive(Clone)]
pub struct Report {
    pub at: std::time::Instant,
    pub origin: bool,
    pub streams: Vec<StreamStatus>,
    pub events: Vec<EventFigures>,
    pub egress_bps: u64,
    pub cpu_cores: f64,
}

/// What relays last reported, by relay id and role (an origin and an edge
/// may share a credential). Kept in the store's presence, so every
/// control-plane replica sees every report, whichever one received it.
pub struct StatusBoard {
    presence: Arc<dyn Presence>,
    stale: Duration,
}

/// The presence kind of relay reports.
const REPORTS: &str = "relay-status";

/// A report as kept in presence.
#[derive(Serialize, Deserialize)]
struct Kept {
    origin: bool,
    streams: Vec<StreamStatus>,
    events: Vec<EventFigures>,
    egress_bps: u64,
    cpu_cores: f64,
}

/// One stream as the relays see it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StreamLive {
    /// An origin carries the broadcast: the encoder is pushing.
    pub live: bool,
    pub ingest_bps: u64,
    /// Viewers summed over the edges.
    pub viewers: u64,
}

impl StatusBoard {
    pub fn new(presence: Arc<dyn Presence>) -> Self {
        Self {
            presence,
            stale: STATUS_STALE,
        }
    }

    fn put(&self, relay: &str, report: Report) -> Result<(), StoreError> {
        let key = format!("{}/{relay}", if report.origin { 'o' } else { 'e' });
        let kept = Kept {
            origin: report.origin,
            streams: report.streams,
            events: report.events,
            egress_bps: report.egress_bps,
            cpu_cores: report.cpu_cores,
        };
        let value = serde_json::to_vec(&kept).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.presence.put(REPORTS, &key, &value, self.stale)
    }

    /// The reports of the last seconds, by relay id (edges and origins).
    pub fn current(&self, now: std::time::Instant) -> Result<Vec<(String, Report)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.presence.list(REPORTS, "")? {
            let Some((_, relay)) = entry.key.split_once('/') else {
                continue;
            };
            // A report this version cannot read (another replica's newer
            // format) is skipped, not fatal.
            let Ok(kept) = serde_json::from_slice::<Kept>(&entry.value) else {
                continue;
            };
            out.push((
                relay.to_owned(),
                Report {
                    at: now.checked_sub(entry.age).unwrap_or(now),
                    origin: kept.origin,
                    streams: kept.streams,
                    events: kept.events,
                    egress_bps: kept.egress_bps,
                    cpu_cores: kept.cpu_cores,
                },
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The current figures of `namespace` (tenant/event/stream).
    pub fn stream(&self, namespace: &str) -> Result<StreamLive, StoreError> {
        let mut out = StreamLive::default();
        for (_, r) in self.current(std::time::Instant::now())? {
            for s in r.streams.iter().filter(|s| s.namespace == namespace) {
                if r.origin {
                    out.live = true;
                    out.ingest_bps = out.ingest_bps.max(s.ingest_bps);
                } else {
                    out.viewers += s.viewers;
                }
            }
        }
        Ok(out)
    }
}

/// A relay reports what it carries (every 2 s): origins the broadcasts being
/// pushed and their bitrate, edges their viewers. No personal data.
#[utoipa::path(post, path = "/api/v1/relay/status", tag = "relay", request_body = RelayStatus, security(("relay" = [])),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn status(
    State(state): State<Shared>,
    headers: HeaderMap,
    Body(req): Body<RelayStatus>,
) -> ApiResult<StatusCode> {
    let (origin, role) = match req.role {
        RelayKind::Origin => (true, RelayRole::Origin),
        RelayKind::Edge => (false, RelayRole::Edge),
    };
    // An edge's credential cannot report as an origin (and so claim a
    // broadcast is live), nor the other way round.
    let claims = relay_role_claims(&state, &headers, role)?;
    if req.streams.len() > MAX_REPORTED_STREAMS
        || req
            .streams
            .iter()
            .any(|s| s.namespace.is_empty() || s.namespace.len() > 4096)
    {
        return Err(ApiError::bad_request(
            "at most 10000 streams, each with a namespace of 1 to 4096 bytes",
        ));
    }
    check_events(&req.events, None)?;
    if !(req.cpu_cores.is_finite() && (0.0..=4096.0).contains(&req.cpu_cores)) {
        return Err(ApiError::bad_request("cpu_cores must be 0 to 4096"));
    }
    let now = std::time::Instant::now();
    let report = Report {
        at: now,
        origin,
        streams: req.streams,
        events: req.events,
        egress_bps: req.egress_bps,
        cpu_cores: req.cpu_cores,
    };
    let st = state.clone();
    blocking(move || {
        st.relay_status
            .put(&claims.sub, report)
            .map_err(crate::repo::RepoError::from)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// A relay credential of the operator's own relays with `role` (not a
/// tenant's peer-agent credential, nor another role's).
fn relay_role_claims(state: &AppState, headers: &HeaderMap, role: RelayRole) -> ApiResult<Claims> {
    let claims = relay_claims(state, headers)?;
    match claims.relay_role() {
        Some(r) if r == role => Ok(claims),
        Some(_) => Err(ApiError::forbidden(match role {
            RelayRole::Origin => "an origin's credential is needed here",
            RelayRole::Edge => "an edge's credential is needed here",
        })),
        None => Err(ApiError::forbidden(
            "only the operator's origins and edges report here",
        )),
    }
}

pub(crate) fn relay_claims(state: &AppState, headers: &HeaderMap) -> ApiResult<Claims> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthenticated)?;
    let claims = state
        .verifier
        .verify(token, crate::repo::now())
        .map_err(|_| ApiError::unauthenticated())?;
    if claims.act != Action::Relay {
        return Err(ApiError::forbidden("a relay credential is needed"));
    }
    Ok(claims)
}

/// Public keys that sign strom tokens (PASETO v4.public, Ed25519), by key id.
#[utoipa::path(get, path = "/api/v1/relay/keys", tag = "relay", responses((status = 200, description = "key set", body = Object)))]
pub(crate) async fn keys(State(state): State<Shared>) -> ApiResult<Json<KeySet>> {
    let repo = state.repo.clone();
    blocking(move || Ok(Json(repo.key_set()?))).await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevocationQuery {
    /// Entries after this sequence number.
    #[serde(default)]
    pub after: u64,
    /// Hold the request open up to this many seconds (0 to 30) until there is news.
    #[serde(default)]
    pub wait: u8,
}

/// The revocation log after `after`; long-polls when there is nothing new.
#[utoipa::path(get, path = "/api/v1/relay/revocations", tag = "relay", params(RevocationQuery),
    security(("relay" = [])),
    responses((status = 200, description = "revocation feed", body = Object), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn revocations(
    State(state): State<Shared>,
    headers: HeaderMap,
    QueryOf(q): QueryOf<RevocationQuery>,
) -> ApiResult<Json<RevocationFeed>> {
    let claims = relay_claims(&state, &headers)?;
    // The operator's relays carry every tenant; a tenant's peer-agent
    // credential reads only its own tenant's entries (F15).
    let tenant = (!claims.is_platform_relay()).then_some(claims.ten);
    let mut watch = state.repo.revocation_watch();
    if q.wait > 0 && *watch.borrow() == q.after {
        let _ =
            tokio::time::timeout(Duration::from_secs(q.wait.min(30) as u64), watch.changed()).await;
    }
    let repo = state.repo.clone();
    blocking(move || Ok(Json(repo.revocations_after(q.after, tenant.as_deref())?))).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Heartbeat {
    pub region: String,
    /// Base URL viewers use (HLS and WebTransport).
    pub url: String,
    /// Share of capacity in use, 0 to 1.
    pub load: f32,
}

/// An edge registers itself and reports its load (every few seconds).
#[utoipa::path(post, path = "/api/v1/relay/heartbeat", tag = "relay", request_body = Heartbeat, security(("relay" = [])),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn heartbeat(
    State(state): State<Shared>,
    headers: HeaderMap,
    Body(req): Body<Heartbeat>,
) -> ApiResult<StatusCode> {
    let claims = relay_role_claims(&state, &headers, RelayRole::Edge)?;
    if !(0.0..=1.0).contains(&req.load)
        || url::Url::parse(&req.url).is_err()
        || req.region.is_empty()
        || req.region.len() > 64
    {
        return Err(ApiError::bad_request(
            "region 1 to 64 characters, url a URL, load 0 to 1",
        ));
    }
    let repo = state.repo.clone();
    blocking(move || {
        let now = crate::repo::now();
        let registered_at = repo
            .edges()?
            .into_iter()
            .find(|e| e.id == claims.sub)
            .map(|e| e.registered_at)
            .unwrap_or(now);
        repo.put_edge(&EdgeRegistration {
            id: claims.sub,
            region: req.region,
            url: req.url,
            load: req.load,
            registered_at,
            last_seen: Some(now),
        })?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(namespace: &str, ingest_bps: u64, viewers: u64) -> StreamStatus {
        StreamStatus {
            namespace: namespace.into(),
            ingest_bps,
            viewers,
        }
    }

    fn put(board: &StatusBoard, relay: &str, origin: bool, streams: Vec<StreamStatus>) {
        board
            .put(
                relay,
                Report {
                    at: std::time::Instant::now(),
                    origin,
                    streams,
                    events: vec![],
                    egress_bps: 0,
                    cpu_cores: 0.0,
                },
            )
            .unwrap();
    }

    /// The board's rules over any presence (`memory` here; the PostgreSQL
    /// suite runs them against a real server through two boards).
    pub(crate) fn board_rules(a: &StatusBoard, b: &StatusBoard) {
        assert_eq!(a.stream("t/e/main").unwrap(), StreamLive::default());
        put(a, "origin-1", true, vec![stream("t/e/main", 2_500_000, 3)]);
        put(b, "edge-a", false, vec![stream("t/e/main", 2_400_000, 40)]);
        put(
            a,
            "edge-b",
            false,
            vec![stream("t/e/main", 2_400_000, 2), stream("t/e/other", 1, 7)],
        );
        let main = StreamLive {
            live: true,
            ingest_bps: 2_500_000,
            viewers: 42,
        };
        assert_eq!(a.stream("t/e/main").unwrap(), main);
        assert_eq!(b.stream("t/e/main").unwrap(), main);
        // An edge's newer report replaces its older one, whichever board
        // took it.
        put(a, "edge-a", false, vec![stream("t/e/main", 2_400_000, 10)]);
        assert_eq!(b.stream("t/e/main").unwrap().viewers, 12);
        // An origin and an edge sharing a credential do not replace each other.
        put(a, "relay-1", true, vec![stream("t/e/x", 1_000, 0)]);
        put(b, "relay-1", false, vec![stream("t/e/x", 1_000, 5)]);
        assert_eq!(
            a.stream("t/e/x").unwrap(),
            StreamLive {
                live: true,
                ingest_bps: 1_000,
                viewers: 5
            }
        );
        let relays: Vec<String> = b
            .current(std::time::Instant::now())
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            relays,
            ["edge-a", "edge-b", "origin-1", "relay-1", "relay-1"]
        );
        // A relay gone quiet stops counting: the origin's report ages out,
        // the edges report again.
        std::thread::sleep(a.stale / 2);
        put(a, "edge-a", false, vec![stream("t/e/main", 2_400_000, 10)]);
        put(b, "edge-b", false, vec![stream("t/e/main", 2_400_000, 2)]);
        std::thread::sleep(a.stale / 2 + Duration::from_millis(50));
        let figures = b.stream("t/e/main").unwrap();
        assert!(!figures.live);
        assert_eq!(figures.ingest_bps, 0);
        assert_eq!(figures.viewers, 12);
    }

    #[test]
    fn live_from_origins_viewers_summed_over_edges_stale_reports_ignored() {
        let presence: Arc<dyn Presence> = Arc::new(crate::store::MemoryPresence::default());
        let board = |p: &Arc<dyn Presence>| StatusBoard {
            presence: p.clone(),
            stale: Duration::from_millis(600),
        };
        board_rules(&board(&presence), &board(&presence));
    }

    #[test]
    fn reported_events_are_checked() {
        let ok = EventFigures {
            event: "t/e".into(),
            viewers: 3,
            qoe: QoeSums {
                beacons: 2,
                watch_seconds: 20.0,
                stall_seconds: 0.5,
                stalls: 1,
                latency_seconds_sum: 1.0,
                latency_samples: 2,
            },
        };
        assert!(check_events(std::slice::from_ref(&ok), Some("t")).is_ok());
        assert!(check_events(std::slice::from_ref(&ok), None).is_ok());
        let bad = |f: fn(&mut EventFigures)| {
            let mut e = ok.clone();
            f(&mut e);
            check_events(&[e], Some("t")).is_err()
        };
        assert!(bad(|e| e.event = "u/e".into()), "another tenant's event");
        assert!(bad(|e| e.event = "t".into()));
        assert!(bad(|e| e.event = "t/e/s".into()));
        assert!(bad(|e| e.event = "/e".into()));
        assert!(bad(|e| e.qoe.watch_seconds = f64::NAN));
        assert!(bad(|e| e.qoe.stall_seconds = -1.0));
        assert!(
            bad(|e| e.qoe.stall_seconds = 30.0),
            "stalled longer than watched"
        );
        assert!(
            bad(|e| e.qoe.watch_seconds = 1e9),
            "more than a day per beacon"
        );
        assert!(bad(|e| e.qoe.latency_seconds_sum = 1e9));
    }
}

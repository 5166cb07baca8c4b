//! Events and their streams: schedule, retention, access policy and
//! registration form; publish credentials for encoders.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use strom_identity::participants_csv::{FieldKind, FormField};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::problem::{blocking, Body, PathOf};
use super::*;
use crate::model::{AccessMode, Event, Stream};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/events", get(list_events).post(create_event))
        .route(
            "/api/v1/events/{event}",
            get(get_event).patch(update_event).delete(delete_event),
        )
        .route("/api/v1/events/{event}/end", post(end_event))
        .route(
            "/api/v1/events/{event}/streams",
            get(list_streams).post(create_stream),
        )
        .route(
            "/api/v1/events/{event}/streams/{stream}",
            axum::routing::delete(delete_stream),
        )
        .route(
            "/api/v1/events/{event}/streams/{stream}/credential",
            post(issue_credential),
        )
        .route("/api/v1/events/{event}/live", get(live))
        .route("/api/v1/public/{tenant}/events/{event}", get(public_event))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct LiveStream {
    pub name: String,
    /// The encoder is pushing (an origin carries the stream).
    pub live: bool,
    /// Bits per second arriving from the encoder.
    pub ingest_bitrate_bps: u64,
    /// Viewers over all edges (MoQT and HLS).
    pub viewers: u64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct LiveStatus {
    pub streams: Vec<LiveStream>,
    /// Viewers of the event now: play sessions and HLS players at edges and
    /// peer-agents (as the dashboard counts them).
    pub viewers: u64,
}

/// Whether each stream of the event is live, its ingest bitrate and viewers,
/// as the origins and edges reported in the last seconds.
#[utoipa::path(get, path = "/api/v1/events/{event}/live", tag = "events", params(("event" = String, Path)),
    responses((status = 200, body = LiveStatus), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn live(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(event): PathOf<String>,
) -> ApiResult<Json<LiveStatus>> {
    caller.require(ALL_STAFF)?;
    let st = state.clone();
    blocking(move || {
        st.repo.event(caller.tenant(), &event)?;
        let mut streams = Vec::new();
        for s in st.repo.streams(caller.tenant(), &event)? {
            let figures = st
                .relay_status
                .stream(&format!("{}/{}/{}", caller.tenant(), event, s.name))
                .map_err(crate::repo::RepoError::from)?;
            streams.push(LiveStream {
                name: s.name,
                live: figures.live,
                ingest_bitrate_bps: figures.ingest_bps,
                viewers: figures.viewers,
            });
        }
        // Viewers as the dashboard counts them (play sessions and HLS
        // players at edges and peer-agents) while its sample is fresh; the
        // streams' figures are subscribers at edges (a site's agents count
        // once there).
        let subscribers = streams.iter().map(|s| s.viewers).sum();
        let fresh_after = crate::repo::now().unix_timestamp() - 15;
        let viewers = st
            .dashboard
            .latest(&format!("{}/{}", caller.tenant(), event))
            .map_err(crate::repo::RepoError::Store)?
            .filter(|s| s.at >= fresh_after)
            .map_or(subscribers, |s| s.viewers);
        Ok(Json(LiveStatus { streams, viewers }))
    })
    .await
}

#[derive(Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct FieldDto {
    /// Machine name, a-z 0-9 _.
    pub name: String,
    pub label: String,
    /// text, email, select or checkbox.
    pub kind: String,
    /// Options of a select field.
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    pub required: bool,
}

pub(crate) fn to_field(d: &FieldDto) -> ApiResult<FormField> {
    let kind = match d.kind.as_str() {
        "text" => FieldKind::Text,
        "email" => FieldKind::Email,
        "checkbox" => FieldKind::Checkbox,
        "select" if !d.options.is_empty() && d.options.len() <= 100 => {
            FieldKind::Select(d.options.clone())
        }
        _ => {
            return Err(ApiError::bad_request(
                "field kind must be text, email, checkbox or select (with 1 to 100 options)",
            ))
        }
    };
    Ok(FormField {
        name: d.name.clone(),
        label: d.label.clone(),
        kind,
        required: d.required,
    })
}

pub(crate) fn from_field(f: &FormField) -> FieldDto {
    let (kind, options) = match &f.kind {
        FieldKind::Text => ("text", vec![]),
        FieldKind::Email => ("email", vec![]),
        FieldKind::Checkbox => ("checkbox", vec![]),
        FieldKind::Select(o) => ("select", o.clone()),
    };
    FieldDto {
        name: f.name.clone(),
        label: f.label.clone(),
        kind: kind.into(),
        options,
        required: f.required,
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct EventDto {
    pub id: String,
    pub title: String,
    #[schema(format = DateTime)]
    pub starts_at: String,
    #[schema(format = DateTime)]
    pub ends_at: String,
    pub retention_days: u16,
    pub legal_hold_until: Option<String>,
    pub access: AccessMode,
    pub domains: Vec<String>,
    pub form: Vec<FieldDto>,
    pub attendance: bool,
    pub privacy_notice: String,
    pub ended_at: Option<String>,
    /// Media namespace prefix of the event's streams.
    pub namespace: String,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn event_dto(e: &Event) -> EventDto {
    EventDto {
        id: e.id.clone(),
        title: e.title.clone(),
        starts_at: rfc3339(e.starts_at),
        ends_at: rfc3339(e.ends_at),
        retention_days: e.retention_days,
        legal_hold_until: e.legal_hold_until.map(rfc3339),
        access: e.access,
        domains: e.domains.clone(),
        form: e.form.iter().map(from_field).collect(),
        attendance: e.attendance,
        privacy_notice: e.privacy_notice.clone(),
        ended_at: e.ended_at.map(rfc3339),
        namespace: format!("{}/{}", e.tenant, e.id),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventRequest {
    pub title: String,
    #[schema(format = DateTime)]
    pub starts_at: String,
    #[schema(format = DateTime)]
    pub ends_at: String,
    /// Days after the end until the event and its data are deleted (1 to 3650).
    #[serde(default = "default_retention")]
    pub retention_days: u16,
    #[serde(default)]
    pub legal_hold_until: Option<String>,
    #[serde(default = "default_access")]
    pub access: AccessMode,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub form: Vec<FieldDto>,
    #[serde(default)]
    pub attendance: bool,
    #[serde(default)]
    pub privacy_notice: String,
}

fn default_retention() -> u16 {
    30
}

fn default_access() -> AccessMode {
    AccessMode::List
}

fn parse_time(field: &str, s: &str) -> ApiResult<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::bad_request(format!("{field} must be an RFC 3339 date-time")))
}

fn build_event(tenant: &str, id: &str, req: EventRequest) -> ApiResult<Event> {
    Ok(Event {
        id: id.into(),
        tenant: tenant.into(),
        title: req.title,
        starts_at: parse_time("starts_at", &req.starts_at)?,
        ends_at: parse_time("ends_at", &req.ends_at)?,
        retention_days: req.retention_days,
        legal_hold_until: req
            .legal_hold_until
            .as_deref()
            .map(|s| parse_time("legal_hold_until", s))
            .transpose()?,
        access: req.access,
        domains: req
            .domains
            .iter()
            .map(|d| d.trim().to_lowercase())
            .collect(),
        form: req.form.iter().map(to_field).collect::<ApiResult<_>>()?,
        attendance: req.attendance,
        privacy_notice: req.privacy_notice,
        ended_at: None,
        created_at: crate::repo::now(),
    })
}

/// Events of the tenant.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", responses((status = 200, body = Vec<EventDto>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn list_events(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<Vec<EventDto>>> {
    caller
        .in_role(&state, ALL_STAFF, move |repo, caller| {
            Ok(Json(
                repo.events(caller.tenant())?
                    .iter()
                    .map(event_dto)
                    .collect(),
            ))
        })
        .await
}

/// Creates an event.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", request_body = EventRequest,
    responses((status = 201, body = EventDto), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn create_event(
    State(state): State<Shared>,
    caller: Caller,
    Body(req): Body<EventRequest>,
) -> ApiResult<(StatusCode, Json<EventDto>)> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            let e = repo.create_event(caller.actor(), build_event(caller.tenant(), "", req)?)?;
            Ok((StatusCode::CREATED, Json(event_dto(&e))))
        })
        .await
}

/// One event.
#[utoipa::path(get, path = "/api/v1/events/{event}", tag = "events", params(("event" = String, Path)),
    responses((status = 200, body = EventDto), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_event(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(event): PathOf<String>,
) -> ApiResult<Json<EventDto>> {
    caller
        .in_role(&state, ALL_STAFF, move |repo, caller| {
            Ok(Json(event_dto(&repo.event(caller.tenant(), &event)?)))
        })
        .await
}

/// Replaces an event's settings.
#[utoipa::path(patch, path = "/api/v1/events/{event}", tag = "events", params(("event" = String, Path)), request_body = EventRequest,
    responses((status = 200, body = EventDto), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn update_event(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(event): PathOf<String>,
    Body(req): Body<EventRequest>,
) -> ApiResult<Json<EventDto>> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            let old = repo.event(caller.tenant(), &event)?;
            let mut e = build_event(caller.tenant(), &event, req)?;
            e.created_at = old.created_at;
            e.ended_at = old.ended_at;
            repo.update_event(caller.actor(), &e)?;
            Ok(Json(event_dto(&e)))
        })
        .await
}

/// Deletes an event with its participants, streams, recordings and keys.
#[utoipa::path(delete, path = "/api/v1/events/{event}", tag = "events", params(("event" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn delete_event(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(event): PathOf<String>,
) -> ApiResult<StatusCode> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            repo.delete_event(caller.actor(), caller.tenant(), &event)?;
            Ok(StatusCode::NO_CONTENT)
        })
        .await
}

/// Ends an event now: viewers' permissions lapse and their sessions close.
#[utoipa::path(post, path = "/api/v1/events/{event}/end", tag = "events", params(("event" = String, Path)),
    responses((status = 200, body = EventDto), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn end_event(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(event): PathOf<String>,
) -> ApiResult<Json<EventDto>> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            Ok(Json(event_dto(&repo.end_event(
                caller.actor(),
                caller.tenant(),
                &event,
            )?)))
        })
        .await
}

#[derive(Serialize, ToSchema)]
pub(crate) struct StreamDto {
    pub name: String,
    /// Media namespace: tenant/event/stream.
    pub namespace: String,
    pub credential_issued_at: Option<String>,
}

fn stream_dto(s: &Stream) -> StreamDto {
    StreamDto {
        name: s.name.clone(),
        namespace: format!("{}/{}/{}", s.tenant, s.event, s.name),
        credential_issued_at: s.credential_issued_at.map(rfc3339),
    }
}

/// Streams of an event.
#[utoipa::path(get, path = "/api/v1/events/{event}/streams", tag = "events", params(("event" = String, Path)),
    responses((status = 200, body = Vec<StreamDto>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_streams(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(event): PathOf<String>,
) -> ApiResult<Json<Vec<StreamDto>>> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            Ok(Json(
                repo.streams(caller.tenant(), &event)?
                    .iter()
                    .map(stream_dto)
                    .collect(),
            ))
        })
        .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamRequest {
    /// 1 to 32 of a-z, 0-9 and -.
    pub name: String,
}

/// Adds a stream to an event.
#[utoipa::path(post, path = "/api/v1/events/{event}/streams", tag = "events", params(("event" = String, Path)), request_body = StreamRequest,
    responses((status = 201, body = StreamDto), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn create_stream(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(event): PathOf<String>,
    Body(req): Body<StreamRequest>,
) -> ApiResult<(StatusCode, Json<StreamDto>)> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            Ok((
                StatusCode::CREATED,
                Json(stream_dto(&repo.create_stream(
                    caller.actor(),
                    caller.tenant(),
                    &event,
                    &req.name,
                )?)),
            ))
        })
        .await
}

/// Deletes a stream; its publish credential stops working.
#[utoipa::path(delete, path = "/api/v1/events/{event}/streams/{stream}", tag = "events", params(("event" = String, Path), ("stream" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn delete_stream(
    State(state): State<Shared>,
    caller: Caller,
    PathOf((event, stream)): PathOf<(String, String)>,
) -> ApiResult<StatusCode> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            repo.delete_stream(caller.actor(), caller.tenant(), &event, &stream)?;
            Ok(StatusCode::NO_CONTENT)
        })
        .await
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PublishCredential {
    /// RTMP server URL for the encoder (OBS: Server).
    pub rtmp_url: String,
    /// The publish credential (OBS: Stream Key). Shown once; issuing a new one revokes it.
    pub stream_key: String,
    /// SRT caller URL with the SRT stream key in the stream id
    /// (`#!::r=live/<srt_stream_key>,m=publish`).
    pub srt_url: String,
    /// The credential in a form short enough for SRT's stream id; revoked
    /// and expiring together with `stream_key`.
    pub srt_stream_key: String,
    /// The SRT passphrase (AES-128, 192 or 256, the encoder's choice); it
    /// changes with each new credential.
    pub srt_passphrase: String,
    pub namespace: String,
    pub expires_at: String,
}

/// Issues a new publish credential for a stream (and revokes the previous one).
#[utoipa::path(post, path = "/api/v1/events/{event}/streams/{stream}/credential", tag = "events", params(("event" = String, Path), ("stream" = String, Path)),
    responses((status = 200, body = PublishCredential), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn issue_credential(
    State(state): State<Shared>,
    caller: Caller,
    PathOf((event, stream)): PathOf<(String, String)>,
) -> ApiResult<Json<PublishCredential>> {
    caller.require(MANAGERS)?;
    let st = state.clone();
    blocking(move || {
        let (token, claims) =
            st.repo
                .issue_publish_credential(caller.actor(), caller.tenant(), &event, &stream)?;
        let secret = st.repo.srt_tenant_secret(caller.tenant())?;
        let srt_stream_key = strom_token::srt::stream_key(&secret, &claims)
            .ok_or_else(|| ApiError::bad_request("this stream cannot have an SRT key"))?;
        let srt_passphrase = strom_token::srt::passphrase(&secret, &srt_stream_key);
        let srt_url = format!(
            "{}?streamid=#!::r=live/{srt_stream_key},m=publish",
            st.srt_url.read().expect("srt url lock")
        );
        Ok(Json(PublishCredential {
            rtmp_url: st.rtmp_url.read().expect("rtmp url lock").clone(),
            srt_url,
            srt_stream_key,
            srt_passphrase,
            stream_key: token,
            namespace: format!("{}/{}/{}", caller.tenant(), event, stream),
            expires_at: rfc3339(claims.exp),
        }))
    })
    .await
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PublicEvent {
    pub tenant: String,
    pub id: String,
    pub title: String,
    pub starts_at: String,
    pub ends_at: String,
    /// open, domains, list or approval.
    pub access: AccessMode,
    pub form: Vec<FieldDto>,
    pub privacy_notice: String,
    pub ended: bool,
}

/// What the event's landing page shows (no login needed).
#[utoipa::path(get, path = "/api/v1/public/{tenant}/events/{event}", tag = "events", params(("tenant" = String, Path), ("event" = String, Path)),
    responses((status = 200, body = PublicEvent), (status = 404, body = Problem)))]
pub(crate) async fn public_event(
    State(state): State<Shared>,
    PathOf((tenant, event)): PathOf<(String, String)>,
) -> ApiResult<Json<PublicEvent>> {
    let repo = state.repo.clone();
    blocking(move || {
        if !crate::model::valid_id("t", &tenant) {
            return Err(ApiError::not_found());
        }
        let e = repo.event(&tenant, &event)?;
        Ok(Json(PublicEvent {
            tenant,
            id: e.id.clone(),
            title: e.title.clone(),
            starts_at: rfc3339(e.starts_at),
            ends_at: rfc3339(e.ends_at),
            access: e.access,
            form: e.form.iter().map(from_field).collect(),
            privacy_notice: e.privacy_notice.clone(),
            ended: e.access_until() <= crate::repo::now(),
        }))
    })
    .await
}

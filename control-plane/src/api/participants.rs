//! Participants: invitation, self-registration with the event's form and
//! consent, CSV import (all or nothing, errors per row) and export, status
//! changes that revoke tokens, data subject rights (export, rectification,
//! erasure or blocking, consent withdrawal) and playback tokens.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use strom_identity::participants_csv::{self, ExportRow};
use strom_identity::password;
use strom_token::Grant;
use utoipa::{IntoParams, ToSchema};

use super::auth::{send_link, LinkRequest};
use super::problem::{blocking, Body, PathOf, QueryOf};
use super::*;
use crate::model::{AccessMode, LinkPurpose, ParticipantSource, ParticipantStatus, Principal};
use crate::repo::{ConsentRecord, NewParticipant, ParticipantView, Rectification};

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/api/v1/events/{event}/participants",
            get(list_participants).post(create_participant),
        )
        .route(
            "/api/v1/events/{event}/participants/import",
            post(import_participants),
        )
        .route(
            "/api/v1/events/{event}/participants/export",
            get(export_participants),
        )
        .route(
            "/api/v1/events/{event}/participants/{id}",
            get(get_participant)
                .patch(update_participant)
                .delete(erase_participant),
        )
        .route(
            "/api/v1/events/{event}/participants/{id}/status",
            post(set_status),
        )
        .route(
            "/api/v1/events/{event}/participants/{id}/unlock",
            post(unlock_participant),
        )
        .route(
            "/api/v1/events/{event}/participants/{id}/export",
            get(export_participant),
        )
        .route(
            "/api/v1/public/{tenant}/events/{event}/register",
            post(register),
        )
        .route(
            "/api/v1/events/{event}/playback-token",
            post(playback_token),
        )
        .route("/api/v1/events/{event}/attendance", post(attendance))
        .route(
            "/api/v1/me",
            get(me_export).patch(me_update).delete(me_erase),
        )
        .route("/api/v1/me/consent", post(me_consent))
}

/// Participants of an event.
#[utoipa::path(get, path = "/api/v1/events/{event}/participants", tag = "participants", params(("event" = String, Path)),
    responses((status = 200, body = Vec<ParticipantView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn list_participants(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(event): PathOf<String>,
) -> ApiResult<Json<Vec<ParticipantView>>> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            Ok(Json(
                repo.participants(caller.tenant(), &event)?
                    .iter()
                    .map(|p| repo.participant_view(p))
                    .collect::<Result<_, _>>()?,
            ))
        })
        .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Invitation {
    pub email: String,
    pub name: String,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Send the invitation (a login link) by e-mail now.
    #[serde(default = "yes")]
    pub send_mail: bool,
}

fn yes() -> bool {
    true
}

/// Invites a participant (status `invited` until their first login).
#[utoipa::path(post, path = "/api/v1/events/{event}/participants", tag = "participants", params(("event" = String, Path)), request_body = Invitation,
    responses((status = 201, body = ParticipantView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn create_participant(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(event): PathOf<String>,
    Body(req): Body<Invitation>,
) -> ApiResult<(StatusCode, Json<ParticipantView>)> {
    caller.require(MANAGERS)?;
    let repo = state.repo.clone();
    let tenant = caller.tenant().to_owned();
    let (ev, email) = (event.clone(), req.email.clone());
    let view = blocking(move || {
        let row = NewParticipant {
            email: req.email,
            name: req.name,
            fields: req.fields,
            password: None,
            status: ParticipantStatus::Invited,
            source: ParticipantSource::Invited,
            consent: None,
        };
        Ok(repo
            .create_participants(caller.actor(), caller.tenant(), &event, vec![row])?
            .remove(0))
    })
    .await?;
    if req.send_mail {
        send_link(
            &state,
            LinkPurpose::MagicLogin,
            &LinkRequest {
                tenant,
                event: Some(ev),
                email,
            },
            None,
        )
        .await?;
    }
    Ok((StatusCode::CREATED, Json(view)))
}

/// One participant.
#[utoipa::path(get, path = "/api/v1/events/{event}/participants/{id}", tag = "participants", params(("event" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = ParticipantView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_participant(
    State(state): State<Shared>,
    caller: Caller,
    PathOf((event, id)): PathOf<(String, String)>,
) -> ApiResult<Json<ParticipantView>> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            Ok(Json(repo.participant_view(&repo.participant(
                caller.tenant(),
                &event,
                &id,
            )?)?))
        })
        .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParticipantPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub fields: Option<BTreeMap<String, String>>,
}

/// Rectifies a participant's data.
#[utoipa::path(patch, path = "/api/v1/events/{event}/participants/{id}", tag = "participants", params(("event" = String, Path), ("id" = String, Path)), request_body = ParticipantPatch,
    responses((status = 200, body = ParticipantView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn update_participant(
    State(state): State<Shared>,
    caller: Caller,
    PathOf((event, id)): PathOf<(String, String)>,
    Body(req): Body<ParticipantPatch>,
) -> ApiResult<Json<ParticipantView>> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            Ok(Json(repo.update_participant(
                caller.actor(),
                caller.tenant(),
                &event,
                &id,
                Rectification {
                    name: req.name.as_deref(),
                    email: req.email.as_deref(),
                    fields: req.fields.as_ref(),
                },
            )?))
        })
        .await
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Erasure {
    /// true: deleted; false: blocked because the event is under a retention hold.
    pub deleted: bool,
}

/// Erases a participant (or blocks them under a retention hold); their tokens are revoked.
#[utoipa::path(delete, path = "/api/v1/events/{event}/participants/{id}", tag = "participants", params(("event" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Erasure), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn erase_participant(
    State(state): State<Shared>,
    caller: Caller,
    PathOf((event, id)): PathOf<(String, String)>,
) -> ApiResult<Json<Erasure>> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            Ok(Json(Erasure {
                deleted: repo.erase_participant(caller.actor(), caller.tenant(), &event, &id)?,
            }))
        })
        .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusChange {
    /// active (approve or reactivate), deactivated or blocked.
    pub status: ParticipantStatus,
}

/// Approves, deactivates, reactivates or blocks a participant.
#[utoipa::path(post, path = "/api/v1/events/{event}/participants/{id}/status", tag = "participants", params(("event" = String, Path), ("id" = String, Path)), request_body = StatusChange,
    responses((status = 200, body = ParticipantView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn set_status(
    State(state): State<Shared>,
    caller: Caller,
    PathOf((event, id)): PathOf<(String, String)>,
    Body(req): Body<StatusChange>,
) -> ApiResult<Json<ParticipantView>> {
    caller.require(MANAGERS)?;
    if matches!(
        req.status,
        ParticipantStatus::Invited | ParticipantStatus::Pending
    ) {
        return Err(ApiError::bad_request(
            "status must be active, deactivated or blocked",
        ));
    }
    let repo = state.repo.clone();
    blocking(move || {
        Ok(Json(repo.set_participant_status(
            caller.actor(),
            caller.tenant(),
            &event,
            &id,
            req.status,
        )?))
    })
    .await
}

/// Unlocks a participant locked out by failed password attempts.
#[utoipa::path(post, path = "/api/v1/events/{event}/participants/{id}/unlock", tag = "participants", params(("event" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn unlock_participant(
    State(state): State<Shared>,
    caller: Caller,
    PathOf((event, id)): PathOf<(String, String)>,
) -> ApiResult<StatusCode> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            repo.participant(caller.tenant(), &event, &id)?;
            repo.unlock(
                caller.actor(),
                caller.tenant(),
                &Principal::Participant {
                    event,
                    participant: id,
                },
            )?;
            Ok(StatusCode::NO_CONTENT)
        })
        .await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportQuery {
    /// Generate a password for rows without one (returned once, must be changed).
    #[serde(default)]
    pub generate_passwords: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ImportResult {
    pub created: usize,
    /// Row errors; when there are any, nobody was created.
    pub errors: Vec<ImportError>,
    /// Generated passwords by participant id, shown once.
    pub passwords: BTreeMap<String, String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ImportError {
    pub line: u64,
    pub column: Option<String>,
    pub message: String,
}

/// Imports participants from CSV (`email,name[,password][,form fields…]`): all rows or none.
#[utoipa::path(post, path = "/api/v1/events/{event}/participants/import", tag = "participants", params(("event" = String, Path), ImportQuery),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 201, body = ImportResult), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = ImportResult)))]
pub(crate) async fn import_participants(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(event): PathOf<String>,
    QueryOf(q): QueryOf<ImportQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    caller.in_role(&state, MANAGERS, move |repo, caller| {
        let ev = repo.event(caller.tenant(), &event)?;
        let policy = repo.tenant(caller.tenant())?.settings.password_policy;
        let report = participants_csv::import_with_policy(&body, &ev.form, &policy);
        if !report.is_clean() {
            let errors = report.errors.into_iter().map(|e| ImportError { line: e.line, column: e.column, message: e.message }).collect();
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(ImportResult { created: 0, errors, passwords: BTreeMap::new() })).into_response());
        }
        let mut generated = Vec::new();
        let rows: Vec<NewParticipant> = report
            .rows
            .into_iter()
            .map(|r| {
                let password = r.password.or_else(|| q.generate_passwords.then(|| password::generate_password(&policy)));
                generated.push(password.clone());
                NewParticipant {
                    email: r.email,
                    name: r.name,
                    fields: r.fields,
                    password,
                    status: ParticipantStatus::Active,
                    source: ParticipantSource::Imported,
                    consent: None,
                }
            })
            .collect();
        let preset: Vec<bool> = rows.iter().map(|r| r.password.is_some()).collect();
        let views = repo.create_participants(caller.actor(), caller.tenant(), &event, rows)?;
        let mut passwords = BTreeMap::new();
        if q.generate_passwords {
            for ((v, p), _) in views.iter().zip(generated).zip(preset) {
                if let Some(p) = p {
                    passwords.insert(v.id.clone(), p);
                }
            }
        }
        tracing::info!(tenant = caller.tenant(), event = %event, created = views.len(), "participants imported");
        Ok((StatusCode::CREATED, Json(ImportResult { created: views.len(), errors: vec![], passwords })).into_response())
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportQuery {
    /// csv (default) or json.
    #[serde(default)]
    pub format: Option<String>,
}

/// Exports an event's participants as CSV or JSON.
#[utoipa::path(get, path = "/api/v1/events/{event}/participants/export", tag = "participants", params(("event" = String, Path), ExportQuery),
    responses((status = 200, description = "text/csv or application/json", body = Vec<ParticipantView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn export_participants(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(event): PathOf<String>,
    QueryOf(q): QueryOf<ExportQuery>,
) -> ApiResult<Response> {
    caller.in_role(&state, MANAGERS, move |repo, caller| {
        let ev = repo.event(caller.tenant(), &event)?;
        let views: Vec<ParticipantView> = repo.participants(caller.tenant(), &event)?.iter().map(|p| repo.participant_view(p)).collect::<Result<_, _>>()?;
        tracing::info!(tenant = caller.tenant(), event = %event, actor = caller.actor(), rows = views.len(), "participants exported");
        match q.format.as_deref().unwrap_or("csv") {
            "json" => Ok(Json(views).into_response()),
            "csv" => {
                let rows: Vec<ExportRow> = views
                    .iter()
                    .map(|v| ExportRow {
                        email: v.email.clone(),
                        name: v.name.clone(),
                        fields: v.fields.clone(),
                        status: serde_json::to_value(v.status).ok().and_then(|s| s.as_str().map(str::to_owned)).unwrap_or_default(),
                        created_at: v.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                    })
                    .collect();
                let body = participants_csv::export(&rows, &ev.form);
                Ok((
                    [
                        (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"participants-{event}.csv\"")),
                    ],
                    body,
                )
                    .into_response())
            }
            _ => Err(ApiError::bad_request("format must be csv or json")),
        }
    })
    .await
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SubjectExport {
    pub participant: ParticipantView,
    pub consents: Vec<ConsentRecord>,
    pub event_title: String,
}

fn subject_export(repo: &Repo, tenant: &str, event: &str, id: &str) -> ApiResult<SubjectExport> {
    let p = repo.participant(tenant, event, id)?;
    Ok(SubjectExport {
        participant: repo.participant_view(&p)?,
        consents: repo.consents(tenant, event, id)?,
        event_title: repo.event(tenant, event)?.title,
    })
}

/// Data subject access export (JSON) of one participant, for staff.
#[utoipa::path(get, path = "/api/v1/events/{event}/participants/{id}/export", tag = "participants", params(("event" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = SubjectExport), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn export_participant(
    State(state): State<Shared>,
    caller: Caller,
    PathOf((event, id)): PathOf<(String, String)>,
) -> ApiResult<Json<SubjectExport>> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            Ok(Json(subject_export(&repo, caller.tenant(), &event, &id)?))
        })
        .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Registration {
    pub email: String,
    pub name: String,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// The registrant has read and agrees to the privacy notice.
    pub consent: bool,
}

/// Self-registration with the event's form; a login link is mailed. Always 202
/// for valid input, whether or not the address was registered before.
#[utoipa::path(post, path = "/api/v1/public/{tenant}/events/{event}/register", tag = "participants", params(("tenant" = String, Path), ("event" = String, Path)), request_body = Registration,
    responses((status = 202, body = super::auth::Accepted), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 429, body = Problem)))]
pub(crate) async fn register(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    PathOf((tenant, event)): PathOf<(String, String)>,
    Body(req): Body<Registration>,
) -> ApiResult<Response> {
    super::auth::limit(&state, ip, &super::auth::account_key(&tenant, &req.email)).await?;
    if !crate::model::valid_id("t", &tenant) {
        return Err(ApiError::not_found());
    }
    let repo = state.repo.clone();
    let (t, e, email) = (tenant.clone(), event.clone(), req.email.clone());
    blocking(move || {
        let ev = repo.event(&tenant, &event)?;
        if ev.access_until() <= crate::repo::now() {
            return Err(ApiError::forbidden("the event has ended"));
        }
        if !req.consent {
            return Err(ApiError::bad_request("registration needs consent to the privacy notice"));
        }
        let email = crate::repo::normalise_email(&req.email)?;
        let status = match ev.access {
            AccessMode::Open => ParticipantStatus::Active,
            AccessMode::Approval => ParticipantStatus::Pending,
            AccessMode::List => return Err(ApiError::forbidden("this event is by invitation only")),
            AccessMode::Domains => {
                let domain = email.rsplit('@').next().unwrap_or("");
                if !ev.domains.iter().any(|d| d == domain) {
                    return Err(ApiError::forbidden("registration is limited to certain e-mail domains"));
                }
                ParticipantStatus::Active
            }
        };
        if repo.participant_by_email(&tenant, &event, &email).is_ok() {
            return Ok(());
        }
        let row = NewParticipant {
            email,
            name: req.name,
            fields: req.fields,
            password: None,
            status,
            source: ParticipantSource::Registered,
            consent: Some(if ev.privacy_notice.is_empty() { "default privacy notice".into() } else { ev.privacy_notice.clone() }),
        };
        let created = repo.create_participants("self", &tenant, &event, vec![row])?;
        tracing::info!(tenant = %tenant, event = %event, participant = %created[0].id, "registered");
        Ok(())
    })
    .await?;
    let preauth = crate::repo::random_secret();
    send_link(
        &state,
        LinkPurpose::MagicLogin,
        &LinkRequest {
            tenant: t,
            event: Some(e),
            email,
        },
        Some(&preauth),
    )
    .await?;
    let mut res = (
        StatusCode::ACCEPTED,
        Json(super::auth::Accepted {
            status: "registered; a login link is on its way".into(),
        }),
    )
        .into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        session_cookie(&state, PREAUTH_COOKIE, &preauth, 20 * 60),
    );
    Ok(res)
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PlaybackToken {
    /// Present as MoQT AUTHORIZATION TOKEN, `?token=` or the HLS cookie.
    pub token: String,
    pub expires_at: String,
    /// Refresh the token this many seconds from now.
    pub refresh_in_secs: i64,
    /// tenant/event: the namespace prefix this token covers.
    pub namespace: String,
    /// Edges to watch from, best first (HTTP base URLs; each serves
    /// `webtransport.json` with its WebTransport URL and certificate hash).
    pub edges: Vec<String>,
    /// The event's streams: watch `namespace/<stream>`.
    pub streams: Vec<String>,
}

/// A short-lived playback token for the caller (participant, or staff previewing).
#[utoipa::path(post, path = "/api/v1/events/{event}/playback-token", tag = "participants", params(("event" = String, Path)),
    responses((status = 200, body = PlaybackToken), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn playback_token(
    State(state): State<Shared>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    PathOf(event): PathOf<String>,
) -> ApiResult<Json<PlaybackToken>> {
    let st = state.clone();
    blocking(move || {
        let ev = st.repo.event(caller.tenant(), &event)?;
        let subject = match &caller.session.principal {
            Principal::Participant {
                event: e,
                participant,
            } => {
                caller.participant()?;
                if *e != event {
                    return Err(ApiError::not_found());
                }
                let p = st.repo.participant(caller.tenant(), &event, participant)?;
                if p.status != ParticipantStatus::Active {
                    return Err(ApiError::forbidden(
                        "your access to this event is not active",
                    ));
                }
                if p.consent_withdrawn {
                    return Err(ApiError::forbidden(
                        "you withdrew your consent to the privacy notice; give it again to watch",
                    ));
                }
                p.id
            }
            Principal::Staff { .. } => {
                caller.require(ALL_STAFF)?;
                caller.actor().to_owned()
            }
        };
        let until = ev.access_until();
        if until <= crate::repo::now() {
            return Err(ApiError::forbidden("the event has ended"));
        }
        let grant = Grant {
            not_after: Some(until),
            ..Grant::play(&subject, caller.tenant(), &event)
        };
        let (token, claims) = st.repo.mint(&grant)?;
        let lifetime = (claims.exp - claims.iat).whole_seconds();
        let mut edges: Vec<String> = st
            .repo
            .edges()?
            .into_iter()
            .filter(|e| e.load < 0.9)
            .map(|e| e.url)
            .collect();
        edges.extend(st.edges.iter().cloned());
        // A viewer inside a site with peer-assist watches from its agents
        // first (spread by subject), the edges stay as the fallback.
        if let Some(site) = st.repo.site_of(caller.tenant(), ip)? {
            if site.p2p == crate::model::P2pMode::On {
                let mut agents = st
                    .agents
                    .site_agents(caller.tenant(), &site.id)
                    .map_err(crate::repo::RepoError::from)?;
                if !agents.is_empty() {
                    let spread = claims
                        .sub
                        .bytes()
                        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
                    let start = spread % agents.len();
                    agents.rotate_left(start);
                    let urls = agents.iter().take(3).map(|a| a.base_url());
                    edges = urls.chain(edges).collect();
                }
            }
        }
        edges.dedup();
        let streams = st
            .repo
            .streams(caller.tenant(), &event)?
            .into_iter()
            .map(|s| s.name)
            .collect();
        Ok(Json(PlaybackToken {
            token,
            expires_at: claims
                .exp
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            refresh_in_secs: (lifetime * 3 / 4).max(1),
            namespace: format!("{}/{}", caller.tenant(), event),
            edges,
            streams,
        }))
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttendanceReport {
    /// Seconds watched since the last report (at most 600).
    pub seconds: u32,
}

/// Reports viewing time, for events that track attendance (TENANT-7).
#[utoipa::path(post, path = "/api/v1/events/{event}/attendance", tag = "participants", params(("event" = String, Path)), request_body = AttendanceReport,
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn attendance(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(event): PathOf<String>,
    Body(req): Body<AttendanceReport>,
) -> ApiResult<StatusCode> {
    let repo = state.repo.clone();
    blocking(move || {
        let (e, p) = caller.participant()?;
        if e != event {
            return Err(ApiError::not_found());
        }
        if !repo.event(caller.tenant(), &event)?.attendance {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "this event does not track attendance",
            ));
        }
        repo.add_attendance(caller.tenant(), &event, p, req.seconds as u64)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Everything stored about the calling participant (GDPR access, portability).
#[utoipa::path(get, path = "/api/v1/me", tag = "participants", responses((status = 200, body = SubjectExport), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn me_export(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<SubjectExport>> {
    let repo = state.repo.clone();
    blocking(move || {
        let (event, id) = caller.participant()?;
        Ok(Json(subject_export(&repo, caller.tenant(), event, id)?))
    })
    .await
}

/// Rectification by the participant.
#[utoipa::path(patch, path = "/api/v1/me", tag = "participants", request_body = ParticipantPatch,
    responses((status = 200, body = ParticipantView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn me_update(
    State(state): State<Shared>,
    caller: Caller,
    Body(req): Body<ParticipantPatch>,
) -> ApiResult<Json<ParticipantView>> {
    // Where login links go is not changed by a session alone (a stolen
    // cookie would keep the account for good): the organisers correct an
    // address.
    if req.email.is_some() {
        return Err(ApiError::forbidden(
            "ask the event's organisers to correct your e-mail address",
        ));
    }
    let repo = state.repo.clone();
    blocking(move || {
        let (event, id) = caller.participant()?;
        Ok(Json(repo.update_participant(
            id,
            caller.tenant(),
            event,
            id,
            Rectification {
                name: req.name.as_deref(),
                email: None,
                fields: req.fields.as_ref(),
            },
        )?))
    })
    .await
}

/// Erasure at the participant's request (blocked instead under a retention hold).
#[utoipa::path(delete, path = "/api/v1/me", tag = "participants", responses((status = 200, body = Erasure), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn me_erase(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<Erasure>> {
    let repo = state.repo.clone();
    blocking(move || {
        let (event, id) = caller.participant()?;
        let deleted = repo.erase_participant(id, caller.tenant(), event, id)?;
        repo.delete_session(&caller.secret)?;
        Ok(Json(Erasure { deleted }))
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsentChange {
    /// false withdraws consent (access ends); true gives it again.
    pub given: bool,
}

/// Gives or withdraws consent to the event's privacy notice (a new immutable record).
#[utoipa::path(post, path = "/api/v1/me/consent", tag = "participants", request_body = ConsentChange,
    responses((status = 200, body = ConsentRecord), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn me_consent(
    State(state): State<Shared>,
    caller: Caller,
    Body(req): Body<ConsentChange>,
) -> ApiResult<Json<ConsentRecord>> {
    let repo = state.repo.clone();
    blocking(move || {
        let (event, id) = caller.participant()?;
        let ev = repo.event(caller.tenant(), event)?;
        Ok(Json(repo.record_consent(
            caller.tenant(),
            event,
            id,
            &ev.privacy_notice,
            req.given,
        )?))
    })
    .await
}

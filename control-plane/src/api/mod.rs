//! The JSON API (axum): sessions by `__Host-` cookie with CSRF tokens,
//! need-to-know checks per role, errors as `application/problem+json`, and an
//! OpenAPI document at `/api/openapi.json`.

pub(crate) mod agents;
pub(crate) mod auth;
pub(crate) mod dashboard;
pub(crate) mod events;
pub(crate) mod oidc;
pub(crate) mod pages;
pub(crate) mod participants;
pub(crate) mod problem;
pub(crate) mod relay;
pub(crate) mod tenant;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use strom_identity::mail::Mailer;
use utoipa::OpenApi;

pub(crate) use problem::{blocking, ApiError, ApiResult, Problem};

use crate::limits::RateLimits;
use crate::model::{Principal, Role, Session};
use crate::repo::Repo;

pub(crate) const SESSION_COOKIE: &str = "__Host-strom_session";
pub(crate) const PREAUTH_COOKIE: &str = "__Host-strom_preauth";
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// What every handler can reach.
pub struct AppState {
    pub repo: Arc<Repo>,
    pub mailer: Arc<dyn Mailer>,
    pub limits: RateLimits,
    /// Short-lived state shared by every replica on the store (pending
    /// single sign-on logins; the boards and limits hold their own handle).
    pub presence: std::sync::Arc<dyn crate::store::Presence>,
    /// Public base URL of the portal (links in mails point here).
    pub public_url: url::Url,
    /// Where encoders push (shown with publish credentials).
    pub rtmp_url: std::sync::RwLock<String>,
    /// Where SRT encoders call in (`srt://host:port`).
    pub srt_url: std::sync::RwLock<String>,
    /// The dev outbox, when mail is not sent by SMTP.
    pub outbox: Option<std::path::PathBuf>,
    /// Edges viewers are sent to (base URLs), until edges register.
    pub edges: Vec<String>,
    /// Cookies get `Secure` (always true outside tests over plain HTTP).
    pub secure_cookies: bool,
    pub verifier: Arc<strom_token::Verifier>,
    /// The latest status report of each relay (live data, in the store's
    /// presence: every replica sees every report).
    pub relay_status: relay::StatusBoard,
    /// Events' live dashboards: timelines of viewers, QoE, load, offload.
    pub dashboard: dashboard::Dashboard,
    /// The peer-agents of each site heard from recently (in presence too).
    pub agents: agents::AgentBoard,
    /// Single sign-on may reach identity providers at loopback and internal
    /// addresses (`control_plane.oidc_allow_private_addresses`).
    pub oidc_allow_private_addresses: bool,
    /// Mails handed to the mailer and not sent yet (they go out in the
    /// background so answers do not reveal whether an address exists).
    pub mails_in_flight: std::sync::atomic::AtomicUsize,
    /// Reverse proxies whose forwarding headers name the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

pub type Shared = Arc<AppState>;

/// The caller's session, loaded from the cookie.
pub(crate) struct Caller {
    pub session: Session,
    pub secret: String,
}

impl Caller {
    pub(crate) fn tenant(&self) -> &str {
        &self.session.tenant
    }

    /// Pseudonymous id of the caller, for the audit trail.
    pub(crate) fn actor(&self) -> &str {
        crate::repo::principal_id(&self.session.principal)
    }

    pub(crate) fn role(&self) -> Option<Role> {
        match &self.session.principal {
            Principal::Staff { role, .. } => Some(*role),
            Principal::Participant { .. } => None,
        }
    }

    /// Need-to-know: the caller must be staff with one of `roles`, and must
    /// have completed any due password change or TOTP enrolment.
    pub(crate) fn require(&self, roles: &[Role]) -> ApiResult<()> {
        if self.session.must_change_password || self.session.must_enrol_totp {
            return Err(ApiError::forbidden(
                "finish the password change or TOTP enrolment first",
            ));
        }
        match self.role() {
            Some(r) if roles.contains(&r) => Ok(()),
            _ => Err(ApiError::forbidden("your role does not allow this")),
        }
    }

    /// Need-to-know first, then the work: checks that the caller is staff
    /// with one of `roles` (as [`Caller::require`]) and runs `work` on the
    /// repository off the async workers. The one idiom for a staff
    /// handler, so no handler reaches the repository before its check.
    pub(crate) async fn in_role<T: Send + 'static>(
        self,
        state: &AppState,
        roles: &[Role],
        work: impl FnOnce(&Repo, &Caller) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        self.require(roles)?;
        let repo = state.repo.clone();
        blocking(move || work(&repo, &self)).await
    }

    pub(crate) fn participant(&self) -> ApiResult<(&str, &str)> {
        match &self.session.principal {
            Principal::Participant { event, participant } if !self.session.must_change_password => {
                Ok((event, participant))
            }
            Principal::Participant { .. } => {
                Err(ApiError::forbidden("finish the password change first"))
            }
            _ => Err(ApiError::forbidden("only participants can do this")),
        }
    }
}

pub(crate) const ALL_STAFF: &[Role] = &[Role::Owner, Role::EventManager, Role::Moderator];
pub(crate) const MANAGERS: &[Role] = &[Role::Owner, Role::EventManager];
pub(crate) const OWNERS: &[Role] = &[Role::Owner];

pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .find_map(|v| {
            v.to_str().ok()?.split(';').find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then(|| v.to_owned())
            })
        })
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let name = if state.secure_cookies {
            SESSION_COOKIE
        } else {
            SESSION_COOKIE.trim_start_matches("__Host-")
        };
        let secret = cookie_value(&parts.headers, name).ok_or_else(ApiError::unauthenticated)?;
        let repo = state.repo.clone();
        let s2 = secret.clone();
        let session = tokio::task::spawn_blocking(move || repo.session(&s2))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| match e {
                // The database unreachable is not a logout: the browser
                // keeps its session and tries again.
                crate::repo::RepoError::Store(_)
                | crate::repo::RepoError::Key(crate::keys::KeyError::Store(_)) => ApiError::from(e),
                _ => ApiError::unauthenticated(),
            })?;
        let seen = parts.extensions.get::<SeenCaller>().cloned();
        let csrf_ok = parts.method == Method::GET
            || parts.method == Method::HEAD
            || crate::repo::constant_time_eq(
                parts
                    .headers
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .as_bytes(),
                session.csrf.as_bytes(),
            );
        if let Some(seen) = seen {
            seen.note(&session, !csrf_ok);
        }
        if !csrf_ok {
            return Err(ApiError::forbidden("missing or wrong x-csrf-token header"));
        }
        Ok(Caller { session, secret })
    }
}

/// Who a request turned out to be (filled by the [`Caller`] extractor), so
/// that a refusal can be recorded as a security event after the handler.
#[derive(Clone, Default)]
pub(crate) struct SeenCaller(Arc<std::sync::Mutex<Option<(String, String, bool)>>>);

impl SeenCaller {
    fn note(&self, session: &Session, csrf_refused: bool) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((
            session.tenant.clone(),
            crate::repo::principal_id(&session.principal).to_owned(),
            csrf_refused,
        ));
    }
}

/// Records refusals as security events (V16): a 403 for a known session
/// goes into its tenant's audit trail (`access-refused` or
/// `csrf-refused`, with the route asked for), at most
/// [`SECURITY_EVENTS_PER_MINUTE`] per session holder, beyond that only the
/// counters; cross-site state changes are refused and counted before any
/// session is looked at.
async fn security_events(
    State(state): State<Shared>,
    mut req: axum::extract::Request,
    next: Next,
) -> Response {
    let seen = SeenCaller::default();
    req.extensions_mut().insert(seen.clone());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let res = next.run(req).await;
    if res.status() == StatusCode::FORBIDDEN {
        let who = seen.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        let metrics = &state.repo.metrics;
        let csrf = who.as_ref().is_some_and(|(_, _, csrf)| *csrf);
        let counter = if csrf {
            &metrics.refused_csrf
        } else {
            &metrics.refused_forbidden
        };
        counter.inc();
        if let Some((tenant, subject, _)) = who {
            let action = if csrf {
                "csrf-refused"
            } else {
                "access-refused"
            };
            tracing::warn!(%tenant, %subject, %route, %method, action, "request refused");
            let st = state.clone();
            let what = format!("{method} {route}");
            tokio::task::spawn_blocking(move || {
                if st.limits.security_events.check(&subject).is_ok() {
                    if let Err(e) = st.repo.security_event(&tenant, &subject, action, &what) {
                        tracing::warn!(error = %e, "security event not recorded");
                    }
                }
            });
        }
    }
    res
}

/// Security events one session holder may add to the audit trail per
/// minute (a session calling forbidden routes in a loop fills no disk).
pub const SECURITY_EVENTS_PER_MINUTE: u32 = 10;

/// The client's address (for rate limits; never logged): the TCP peer, or
/// the client a trusted reverse proxy names ([`crate::forwarded`]).
pub(crate) struct ClientIp(pub std::net::IpAddr);

impl FromRequestParts<Shared> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        Ok(ClientIp(crate::forwarded::client_address(
            peer,
            &parts.headers,
            &state.trusted_proxies,
        )))
    }
}

pub(crate) fn session_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    max_age_secs: i64,
) -> HeaderValue {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    let cookie_name = if state.secure_cookies {
        name.to_owned()
    } else {
        name.trim_start_matches("__Host-").to_owned()
    };
    HeaderValue::from_str(&format!(
        "{cookie_name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
    ))
    .expect("cookie is ASCII")
}

/// Refuses cross-site state changes (CSRF defence in depth beside the token).
async fn same_origin(
    State(state): State<Shared>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let mut res = refuse_cross_site(&state, req, next).await;
    let h = res.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    res
}

async fn refuse_cross_site(state: &Shared, req: axum::extract::Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let cross_site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            == Some("cross-site");
        let origin_ok = match req
            .headers()
            .get(axum::http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
        {
            None => true,
            Some(o) => url::Url::parse(o)
                .map(|u| u.origin() == state.public_url.origin())
                .unwrap_or(false),
        };
        if cross_site || !origin_ok {
            state.repo.metrics.refused_cross_site.inc();
            tracing::warn!(method = %req.method(), "cross-site state change refused");
            return ApiError::forbidden("cross-site request refused").into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// Health check.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "serving", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// The OpenAPI document, with every error response under the media type
/// the server sends (`application/problem+json`, RFC 9457).
pub fn openapi_document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let problem_ref = "#/components/schemas/Problem";
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for operation in paths
            .values_mut()
            .filter_map(|p| p.as_object_mut())
            .flat_map(|p| p.values_mut())
        {
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(|r| r.as_object_mut())
            else {
                continue;
            };
            for response in responses.values_mut() {
                let Some(content) = response.get_mut("content").and_then(|c| c.as_object_mut())
                else {
                    continue;
                };
                let is_problem = content
                    .get("application/json")
                    .and_then(|m| m.pointer("/schema/$ref"))
                    .is_some_and(|r| r == problem_ref);
                if is_problem {
                    if let Some(media) = content.remove("application/json") {
                        content.insert("application/problem+json".into(), media);
                    }
                }
            }
        }
    }
    doc
}

async fn openapi_json() -> impl IntoResponse {
    axum::Json(openapi_document())
}

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/openapi.json", get(openapi_json))
        .merge(auth::routes())
        .merge(tenant::routes())
        .merge(events::routes())
        .merge(participants::routes())
        .merge(relay::routes())
        .merge(agents::routes())
        .route(
            "/api/v1/events/{event}/dashboard",
            get(dashboard::event_dashboard),
        )
        .merge(oidc::routes())
        .merge(pages::routes())
        .route(
            "/api/v1/{*rest}",
            get(not_found)
                .post(not_found)
                .patch(not_found)
                .delete(not_found)
                .put(not_found),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security_events,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            same_origin,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(12 * 1024 * 1024))
        // Outermost: answers made before any handler get the headers too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            pages::security_headers,
        ))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "strom control plane", description = "Tenants, events, participants, roles, identity and tokens. Errors are application/problem+json (RFC 9457). Authenticated calls use the session cookie; state-changing calls also need the x-csrf-token header from GET /api/v1/session."),
    paths(
        healthz,
        auth::login, auth::logout, auth::session_info, auth::magic_link, auth::consume_magic_link,
        auth::password_reset, auth::complete_password_reset, auth::change_password, auth::totp_enrol, auth::totp_confirm, auth::list_sessions, auth::end_session,
        tenant::get_tenant, tenant::update_tenant, tenant::list_users, tenant::create_user, tenant::get_user, tenant::update_user,
        tenant::delete_user, tenant::unlock_user, tenant::reset_user_totp, tenant::list_sites, tenant::create_site, tenant::update_site, tenant::delete_site,
        tenant::audit, tenant::audit_verify, tenant::access_review, tenant::retention_due, tenant::list_edges,
        events::list_events, events::create_event, events::get_event, events::update_event, events::delete_event, events::end_event,
        events::list_streams, events::create_stream, events::delete_stream, events::issue_credential, events::public_event,
        participants::list_participants, participants::create_participant, participants::get_participant,
        participants::update_participant, participants::erase_participant, participants::set_status, participants::unlock_participant,
        participants::import_participants, participants::export_participants, participants::export_participant,
        participants::register, participants::playback_token, participants::attendance,
        participants::me_export, participants::me_update, participants::me_erase, participants::me_consent,
        relay::keys, relay::revocations, relay::heartbeat, relay::status, relay::media_key, relay::srt_secrets, events::live, dashboard::event_dashboard,
        agents::create_agent_credential, agents::list_agent_credentials, agents::revoke_agent_credential, agents::register, agents::list_agents,
        oidc::start, oidc::callback,
    ),
    components(schemas(problem::Problem)),
    tags((name = "auth"), (name = "tenant"), (name = "events"), (name = "participants"), (name = "relay"), (name = "agents"))
)]
pub(crate) struct ApiDoc;

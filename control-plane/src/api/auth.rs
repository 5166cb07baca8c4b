//! Logging in and out: password (+ TOTP) with lockout, magic links that
//! survive mail scanners (the link's page POSTs the secret from the URL
//! fragment together with a pre-auth cookie, or the 8-digit code from the
//! same mail), password reset links, password change and TOTP enrolment.
//! Answers never tell whether an account exists.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use strom_identity::mail::Mail;
use strom_identity::{password, secret_link, totp};
use utoipa::ToSchema;

use super::problem::{blocking, Body, PathOf};
use super::*;
use crate::model::{Link, LinkPurpose, ParticipantStatus, Principal, Session};
use crate::repo::{now, sha256_hex, RepoError};

mod links;
mod second_factor;
mod sessions;

pub use links::*;
pub(crate) use second_factor::*;
pub(crate) use sessions::*;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/session", get(session_info))
        .route("/api/v1/auth/magic-link", post(magic_link))
        .route("/api/v1/auth/magic-link/consume", post(consume_magic_link))
        .route("/api/v1/auth/password-reset", post(password_reset))
        .route(
            "/api/v1/auth/password-reset/complete",
            post(complete_password_reset),
        )
        .route("/api/v1/auth/password", post(change_password))
        .route("/api/v1/auth/totp/enrol", post(totp_enrol))
        .route("/api/v1/auth/totp/confirm", post(totp_confirm))
        .route("/api/v1/auth/sessions", get(list_sessions))
        .route("/api/v1/auth/sessions/{id}/end", post(end_session))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    pub tenant: String,
    /// Set for a participant's login to an event; absent for staff.
    #[serde(default)]
    pub event: Option<String>,
    pub email: String,
    pub password: String,
    /// Six-digit TOTP code, where the account has a second factor.
    #[serde(default)]
    pub totp: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SessionInfo {
    pub tenant: String,
    /// `staff` or `participant`.
    pub kind: String,
    /// Pseudonymous id of the account.
    pub id: String,
    pub role: Option<Role>,
    pub event: Option<String>,
    /// Send this as `x-csrf-token` on state-changing calls.
    pub csrf: String,
    pub must_change_password: bool,
    pub must_enrol_totp: bool,
}

fn info(s: &Session) -> SessionInfo {
    let (kind, id, role, event) = match &s.principal {
        Principal::Staff { user, role } => ("staff", user.clone(), Some(*role), None),
        Principal::Participant { event, participant } => (
            "participant",
            participant.clone(),
            None,
            Some(event.clone()),
        ),
    };
    SessionInfo {
        tenant: s.tenant.clone(),
        kind: kind.into(),
        id,
        role,
        event,
        csrf: s.csrf.clone(),
        must_change_password: s.must_change_password,
        must_enrol_totp: s.must_enrol_totp,
    }
}

pub(crate) async fn limit(state: &Shared, ip: std::net::IpAddr, account: &str) -> ApiResult<()> {
    let (st, account) = (state.clone(), account.to_owned());
    blocking(move || {
        let limits = &st.limits;
        let checks = [
            ("address", &limits.per_ip, crate::limits::address_key(ip)),
            ("account", &limits.per_account, sha256_hex(&account)),
        ];
        for (which, limiter, key) in checks {
            limiter.check(&key).map_err(|r| refusal(&st, which, r))?;
        }
        Ok(())
    })
    .await
}

/// The answer for a request a rate limit did not let through.
pub(crate) fn refusal(
    state: &AppState,
    which: &'static str,
    r: crate::limits::Refusal,
) -> ApiError {
    match r {
        crate::limits::Refusal::Wait(seconds) => {
            state.repo.metrics.refused_rate_limited.inc();
            tracing::info!(limit = which, "request refused: rate limit");
            ApiError::too_many(seconds)
        }
        crate::limits::Refusal::Unavailable(e) => ApiError::from(RepoError::Store(e)),
    }
}

/// A tenant id as the login forms send it: anything else is refused before
/// it reaches a lookup or a log line.
pub(crate) fn check_tenant(tenant: &str) -> ApiResult<()> {
    if crate::model::valid_id("t", tenant) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "tenant must be an organisation id (t_ and 12 letters or digits)",
        ))
    }
}

/// Ends the session the browser presented before logging in anew (a
/// session planted in it beforehand does not live on beside the new one).
pub(crate) fn end_previous_session(state: &AppState, headers: &HeaderMap) {
    let name = if state.secure_cookies {
        SESSION_COOKIE
    } else {
        SESSION_COOKIE.trim_start_matches("__Host-")
    };
    if let Some(old) = cookie_value(headers, name) {
        if let Err(e) = state.repo.delete_session(&old) {
            tracing::warn!(error = %e, "previous session not ended");
        }
    }
}

/// The per-account rate-limit key of a login or link request: the same
/// for every spelling of one address (case, surrounding white space), so
/// variants do not each get a fresh allowance.
pub(crate) fn account_key(tenant: &str, email: &str) -> String {
    let email = crate::repo::normalise_email(email).unwrap_or_else(|_| email.trim().to_lowercase());
    format!("{}|{email}", tenant.trim())
}

/// Finds the account an e-mail address names, staff or participant.
pub(crate) fn principal_for(
    repo: &Repo,
    tenant: &str,
    event: Option<&str>,
    email: &str,
) -> Option<(Principal, Option<Role>)> {
    match event {
        None => {
            let u = repo.user_by_email(tenant, email).ok()?;
            u.active.then_some((
                Principal::Staff {
                    user: u.id,
                    role: u.role,
                },
                Some(u.role),
            ))
        }
        Some(event) => {
            let p = repo.participant_by_email(tenant, event, email).ok()?;
            matches!(
                p.status,
                ParticipantStatus::Active | ParticipantStatus::Invited
            )
            .then_some((
                Principal::Participant {
                    event: event.into(),
                    participant: p.id,
                },
                None,
            ))
        }
    }
}

pub(crate) fn start_session(
    state: &AppState,
    tenant: &str,
    principal: Principal,
    role: Option<Role>,
) -> ApiResult<(String, Session)> {
    let t = state.repo.tenant(tenant)?;
    let cred = state.repo.credential(tenant, &principal)?;
    let expired = cred.password_set_at.is_some_and(|at| {
        cred.password.is_some() && password::expired(&t.settings.password_policy, at, now())
    });
    let session = Session {
        tenant: tenant.into(),
        principal,
        csrf: crate::repo::random_secret(),
        created_at: now(),
        last_seen: now(),
        idle_minutes: t.settings.session_idle_minutes,
        must_change_password: cred.password.is_some() && (cred.must_change || expired),
        must_enrol_totp: role == Some(Role::Owner)
            && t.settings.totp_required_for_owners
            && cred.totp.is_none(),
    };
    let secret = state.repo.create_session(&session)?;
    // Staff logins are security events in the audit trail (V16);
    // participants' (thousands at an event's start) go to the log only.
    if let Principal::Staff { user, .. } = &session.principal {
        state
            .repo
            .security_event(tenant, user, "login", "session")?;
    }
    Ok((secret, session))
}

pub(crate) fn with_session_cookie(state: &AppState, secret: &str, session: &Session) -> Response {
    let cookie = session_cookie(state, SESSION_COOKIE, secret, 12 * 3600);
    let mut res = Json(info(session)).into_response();
    res.headers_mut().append(header::SET_COOKIE, cookie);
    res
}

/// Password login for staff (and participants with a password).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = SessionInfo), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 423, body = Problem), (status = 429, body = Problem)))]
pub(crate) async fn login(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Response> {
    limit(&state, ip, &account_key(&req.tenant, &req.email)).await?;
    check_tenant(&req.tenant)?;
    let st = state.clone();
    blocking(move || {
        let repo = &st.repo;
        let Some((principal, role)) = principal_for(repo, &req.tenant, req.event.as_deref(), &req.email) else {
            // Answer as for a real account: locked after three failures
            // (before any hashing, as a real lock is), and otherwise after
            // as much work as a real check, so neither status nor timing
            // tells which addresses have accounts.
            let minutes = repo
                .tenant(&req.tenant)
                .map(|t| t.settings.lockout_minutes.for_role(req.event.is_none().then_some(Role::EventManager)))
                .unwrap_or(15);
            let phantom = sha256_hex(&account_key(&req.tenant, &req.email));
            st.limits.phantom.attempt(&phantom, minutes, now()).map_err(RepoError::Store)?.map_err(|l| RepoError::Locked(l.until))?;
            password::verify_password(&req.password, DUMMY_HASH.get_or_init(|| password::hash_password("not a password 1!")));
            tracing::info!(tenant = %req.tenant, "login refused: unknown account");
            return Err(ApiError::from(RepoError::WrongCredentials));
        };
        let tenant = repo.tenant(&req.tenant)?;
        let cred = repo.reserve_attempt(&req.tenant, &principal).map_err(|e| {
            if matches!(e, RepoError::Locked(_)) {
                tracing::info!(tenant = %req.tenant, subject = crate::repo::principal_id(&principal), "login refused: locked");
            }
            ApiError::from(e)
        })?;
        let mut ok = cred.password.as_deref().is_some_and(|h| password::verify_password(&req.password, h));
        let mut totp_step = None;
        if ok {
            match check_totp(repo, &req.tenant, &principal, &cred, req.totp.as_deref())? {
                TotpCheck::NotEnrolled => {}
                TotpCheck::Valid(step) => totp_step = Some(step),
                TotpCheck::Invalid => ok = false,
            }
        }
        let minutes = tenant.settings.lockout_minutes.for_role(role);
        if !repo.finish_attempt(&req.tenant, &principal, ok, minutes, totp_step)? {
            return Err(RepoError::WrongCredentials.into());
        }
        end_previous_session(&st, &headers);
        let (secret, session) = start_session(&st, &req.tenant, principal, role)?;
        tracing::info!(tenant = %req.tenant, subject = %info(&session).id, "login");
        Ok(with_session_cookie(&st, &secret, &session))
    })
    .await
}

static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The outcome of checking a TOTP code against an account's second factor.
pub(crate) enum TotpCheck {
    /// The account has no second factor.
    NotEnrolled,
    /// The code matched this time step (not used before).
    Valid(u64),
    /// Missing, wrong or replayed.
    Invalid,
}

/// Checks `code` against the account's enrolled factor. The step is only
/// stored (and a concurrent replay refused) by `Repo::finish_attempt`.
pub(crate) fn check_totp(
    repo: &Repo,
    tenant: &str,
    principal: &Principal,
    cred: &crate::model::Credential,
    code: Option<&str>,
) -> ApiResult<TotpCheck> {
    let Some(sealed) = &cred.totp else {
        return Ok(TotpCheck::NotEnrolled);
    };
    let secret = repo.open_totp(tenant, principal, sealed)?;
    Ok(
        match totp::verify(
            &secret,
            code.unwrap_or(""),
            now().unix_timestamp() as u64,
            cred.totp_last_step,
        ) {
            Ok(step) => TotpCheck::Valid(step),
            Err(_) => TotpCheck::Invalid,
        },
    )
}

/// Ends the session.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn logout(State(state): State<Shared>, caller: Caller) -> ApiResult<Response> {
    let repo = state.repo.clone();
    blocking(move || Ok(repo.delete_session(&caller.secret)?)).await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        session_cookie(&state, SESSION_COOKIE, "", 0),
    );
    Ok(res)
}

/// The caller's session and CSRF token.
#[utoipa::path(get, path = "/api/v1/session", tag = "auth", responses((status = 200, body = SessionInfo), (status = 401, body = Problem)))]
pub(crate) async fn session_info(caller: Caller) -> Json<SessionInfo> {
    Json(info(&caller.session))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

/// Changes the caller's password (policy and history apply).
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", request_body = ChangePasswordRequest,
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 423, body = Problem)))]
pub(crate) async fn change_password(
    State(state): State<Shared>,
    caller: Caller,
    Body(req): Body<ChangePasswordRequest>,
) -> ApiResult<StatusCode> {
    let st = state.clone();
    blocking(move || {
        let tenant = caller.tenant().to_owned();
        let principal = caller.session.principal.clone();
        let t = st.repo.tenant(&tenant)?;
        let cred = st.repo.reserve_attempt(&tenant, &principal)?;
        let ok = cred
            .password
            .as_deref()
            .is_some_and(|h| password::verify_password(&req.current_password, h));
        let minutes = t.settings.lockout_minutes.for_role(caller.role());
        if !st
            .repo
            .finish_attempt(&tenant, &principal, ok, minutes, None)?
        {
            return Err(RepoError::WrongCredentials.into());
        }
        st.repo.set_password(
            &tenant,
            &principal,
            &req.new_password,
            &t.settings.password_policy,
            Some(&caller.secret),
        )?;
        st.repo
            .update_session(&caller.secret, |s| s.must_change_password = false)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

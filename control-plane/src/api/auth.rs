//! Logging in and out: password (+ TOTP) with lockout, magic links that
//! survive mail scanners (the link's page POSTs the secret from the URL
//! fragment together with a pre-auth cookie, or the 8-digit code from the
//! same mail), password reset links, password change and TOTP enrolment.
//! Answers never tell whether an account exists.

use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use strom_identity::mail::Mail;
use strom_identity::{password, secret_link, totp};
use utoipa::ToSchema;

use super::problem::{blocking, Body};
use super::*;
use crate::model::{Link, LinkPurpose, ParticipantStatus, Principal, Session};
use crate::repo::{now, sha256_hex, RepoError};

pub fn routes() -> Router<Shared> {
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
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
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
pub struct SessionInfo {
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

fn limit(state: &AppState, ip: std::net::IpAddr, account: &str) -> ApiResult<()> {
    let now = Instant::now();
    state
        .limits
        .per_ip
        .check(&ip.to_string(), now)
        .map_err(ApiError::too_many)?;
    state
        .limits
        .per_account
        .check(&sha256_hex(account), now)
        .map_err(ApiError::too_many)?;
    Ok(())
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
pub async fn login(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Response> {
    limit(
        &state,
        ip,
        &format!("{}|{}", req.tenant, req.email.to_lowercase()),
    )?;
    let st = state.clone();
    blocking(move || {
        let repo = &st.repo;
        let Some((principal, role)) = principal_for(repo, &req.tenant, req.event.as_deref(), &req.email) else {
            // Spend the same time as a real check so timing does not tell.
            password::verify_password(&req.password, DUMMY_HASH.get_or_init(|| password::hash_password("not a password 1!")));
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
            if let Some(sealed) = &cred.totp {
                let secret = repo.open_totp(&req.tenant, &principal, sealed)?;
                let code = req.totp.as_deref().unwrap_or("");
                match totp::verify(&secret, code, now().unix_timestamp() as u64, cred.totp_last_step) {
                    Ok(step) => totp_step = Some(step),
                    Err(_) => ok = false,
                }
            }
        }
        let minutes = tenant.settings.lockout_minutes.for_role(role);
        repo.finish_attempt(&req.tenant, &principal, ok, minutes)?;
        if !ok {
            return Err(RepoError::WrongCredentials.into());
        }
        if let Some(step) = totp_step {
            repo.update_credential(&req.tenant, &principal, |c| {
                c.totp_last_step = Some(step);
                Ok(())
            })?;
        }
        let (secret, session) = start_session(&st, &req.tenant, principal, role)?;
        tracing::info!(tenant = %req.tenant, subject = %info(&session).id, "login");
        Ok(with_session_cookie(&st, &secret, &session))
    })
    .await
}

static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Ends the session.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn logout(State(state): State<Shared>, caller: Caller) -> ApiResult<Response> {
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
pub async fn session_info(caller: Caller) -> Json<SessionInfo> {
    Json(info(&caller.session))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    pub tenant: String,
    #[serde(default)]
    pub event: Option<String>,
    pub email: String,
}

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub status: String,
}

fn accepted_with_preauth(state: &AppState, preauth: Option<&str>) -> Response {
    let mut res = (
        StatusCode::ACCEPTED,
        Json(Accepted {
            status: "if the address is known, a mail is on its way".into(),
        }),
    )
        .into_response();
    if let Some(p) = preauth {
        res.headers_mut().append(
            header::SET_COOKIE,
            session_cookie(state, PREAUTH_COOKIE, p, 20 * 60),
        );
    }
    res
}

/// Sends a magic login link (15 minutes, single use). Always 202.
#[utoipa::path(post, path = "/api/v1/auth/magic-link", tag = "auth", request_body = LinkRequest,
    responses((status = 202, body = Accepted), (status = 400, body = Problem), (status = 403, body = Problem), (status = 429, body = Problem)))]
pub async fn magic_link(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    Body(req): Body<LinkRequest>,
) -> ApiResult<Response> {
    limit(
        &state,
        ip,
        &format!("{}|{}", req.tenant, req.email.to_lowercase()),
    )?;
    let preauth = crate::repo::random_secret();
    send_link(&state, LinkPurpose::MagicLogin, &req, Some(&preauth)).await?;
    Ok(accepted_with_preauth(&state, Some(&preauth)))
}

/// Creates and mails a link; does nothing (silently) for unknown addresses.
pub async fn send_link(
    state: &Shared,
    purpose: LinkPurpose,
    req: &LinkRequest,
    preauth: Option<&str>,
) -> ApiResult<()> {
    let st = state.clone();
    let (tenant, event, email) = (req.tenant.clone(), req.event.clone(), req.email.clone());
    let preauth = preauth.map(sha256_hex);
    let mail = blocking(move || {
        let Some((principal, _)) = principal_for(&st.repo, &tenant, event.as_deref(), &email) else {
            return Ok(None);
        };
        let (secret, hash) = secret_link::new_link_secret();
        let code = secret_link::new_code();
        let ttl = match purpose {
            LinkPurpose::MagicLogin => secret_link::MAGIC_LINK_TTL,
            LinkPurpose::PasswordReset => secret_link::RESET_LINK_TTL,
        };
        let link = Link {
            purpose,
            tenant: tenant.clone(),
            principal: principal.clone(),
            expires_at: now() + ttl,
            used: false,
            browser: preauth,
            code: Some(sha256_hex(&code)),
        };
        st.repo.create_link(&link, &hash)?;
        let page = match purpose {
            LinkPurpose::MagicLogin => "login",
            LinkPurpose::PasswordReset => "reset",
        };
        let url = st.public_url.join(&format!("{page}#token={secret}")).map_err(ApiError::internal)?;
        let (subject, what, minutes) = match purpose {
            LinkPurpose::MagicLogin => ("Your login link", "log in", 15),
            LinkPurpose::PasswordReset => ("Reset your password", "choose a new password", 20),
        };
        let text = format!(
            "Open this link to {what}:\n\n{url}\n\nOn another device, enter this code instead: {code}\n\nThe link works once, for {minutes} minutes. If you did not ask for it, ignore this mail.\n"
        );
        tracing::info!(tenant = %tenant, subject = crate::repo::principal_id(&principal), purpose = ?purpose, "link issued");
        Ok(Some(Mail { to: email.trim().to_lowercase(), subject: subject.into(), text }))
    })
    .await?;
    if let Some(mail) = mail {
        if let Err(e) = state.mailer.send(mail).await {
            tracing::warn!(error = %e, "mail not sent");
        }
    }
    Ok(())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeRequest {
    /// The secret from the link's fragment.
    pub token: String,
    /// The 8-digit code from the mail, when the link is opened on a device
    /// that did not ask for it.
    #[serde(default)]
    pub code: Option<String>,
}

/// Logs in with a magic link (from the browser that asked, or with the code).
#[utoipa::path(post, path = "/api/v1/auth/magic-link/consume", tag = "auth", request_body = ConsumeRequest,
    responses((status = 200, body = SessionInfo), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 429, body = Problem)))]
pub async fn consume_magic_link(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Body(req): Body<ConsumeRequest>,
) -> ApiResult<Response> {
    limit(&state, ip, &format!("link|{}", sha256_hex(&req.token)))?;
    let preauth = cookie_value(&headers, PREAUTH_COOKIE)
        .or_else(|| cookie_value(&headers, PREAUTH_COOKIE.trim_start_matches("__Host-")));
    let st = state.clone();
    blocking(move || {
        let hash = secret_link::hash_link_secret(&req.token).ok_or_else(ApiError::not_found)?;
        let link = st.repo.consume_link(&hash, LinkPurpose::MagicLogin, |l| {
            let by_browser = matches!((&l.browser, &preauth), (Some(b), Some(p)) if crate::repo::constant_time_eq(b.as_bytes(), sha256_hex(p).as_bytes()));
            let by_code = matches!((&l.code, &req.code), (Some(c), Some(given)) if crate::repo::constant_time_eq(c.as_bytes(), sha256_hex(given.trim()).as_bytes()));
            by_browser || by_code
        })?;
        let role = match &link.principal {
            Principal::Staff { user, .. } => {
                let u = st.repo.user(&link.tenant, user)?;
                if !u.active {
                    return Err(ApiError::not_found());
                }
                Some(u.role)
            }
            Principal::Participant { event, participant } => {
                let p = st.repo.participant(&link.tenant, event, participant)?;
                match p.status {
                    ParticipantStatus::Invited => {
                        st.repo.set_participant_status(participant, &link.tenant, event, participant, ParticipantStatus::Active)?;
                    }
                    ParticipantStatus::Active => {}
                    _ => return Err(ApiError::not_found()),
                }
                None
            }
        };
        let principal = match (&link.principal, role) {
            (Principal::Staff { user, .. }, Some(r)) => Principal::Staff { user: user.clone(), role: r },
            (p, _) => p.clone(),
        };
        let (secret, mut session) = start_session(&st, &link.tenant, principal, role)?;
        // A magic link proves the mailbox, not the password: no change forced here.
        session.must_change_password = false;
        st.repo.update_session(&secret, |s| s.must_change_password = false)?;
        tracing::info!(tenant = %link.tenant, subject = %info(&session).id, "login by magic link");
        Ok(with_session_cookie(&st, &secret, &session))
    })
    .await
}

/// Sends a password reset link (20 minutes, single use). Always 202.
#[utoipa::path(post, path = "/api/v1/auth/password-reset", tag = "auth", request_body = LinkRequest,
    responses((status = 202, body = Accepted), (status = 400, body = Problem), (status = 403, body = Problem), (status = 429, body = Problem)))]
pub async fn password_reset(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    Body(req): Body<LinkRequest>,
) -> ApiResult<Response> {
    limit(
        &state,
        ip,
        &format!("{}|{}", req.tenant, req.email.to_lowercase()),
    )?;
    send_link(&state, LinkPurpose::PasswordReset, &req, None).await?;
    Ok(accepted_with_preauth(&state, None))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteResetRequest {
    pub token: String,
    pub new_password: String,
}

/// Sets a new password with a reset link.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/complete", tag = "auth", request_body = CompleteResetRequest,
    responses((status = 204), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 429, body = Problem)))]
pub async fn complete_password_reset(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    Body(req): Body<CompleteResetRequest>,
) -> ApiResult<StatusCode> {
    limit(&state, ip, &format!("link|{}", sha256_hex(&req.token)))?;
    let st = state.clone();
    blocking(move || {
        let hash = secret_link::hash_link_secret(&req.token).ok_or_else(ApiError::not_found)?;
        // Check the password before using the link up, so a weak choice can be retried.
        let link = st.repo.peek_link(&hash, LinkPurpose::PasswordReset)?;
        let policy = st.repo.tenant(&link.tenant)?.settings.password_policy;
        let cred = st.repo.credential(&link.tenant, &link.principal)?;
        let history: Vec<String> = cred
            .password
            .iter()
            .chain(cred.history.iter())
            .cloned()
            .collect();
        password::check_password(&policy, &req.new_password, &history)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let link = st
            .repo
            .consume_link(&hash, LinkPurpose::PasswordReset, |_| true)?;
        st.repo
            .set_password(&link.tenant, &link.principal, &req.new_password, &policy)?;
        st.repo.revoke(
            strom_token::RevocationKind::Subject,
            &link.tenant,
            crate::repo::principal_id(&link.principal),
        )?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

/// Changes the caller's password (policy and history apply).
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", request_body = ChangePasswordRequest,
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 423, body = Problem)))]
pub async fn change_password(
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
        st.repo.finish_attempt(
            &tenant,
            &principal,
            ok,
            t.settings.lockout_minutes.for_role(caller.role()),
        )?;
        if !ok {
            return Err(RepoError::WrongCredentials.into());
        }
        st.repo.set_password(
            &tenant,
            &principal,
            &req.new_password,
            &t.settings.password_policy,
        )?;
        st.repo
            .update_session(&caller.secret, |s| s.must_change_password = false)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// Base32 secret, for manual entry.
    pub secret: String,
    /// otpauth:// URI for a QR code.
    pub uri: String,
}

/// Starts TOTP enrolment (staff).
#[utoipa::path(post, path = "/api/v1/auth/totp/enrol", tag = "auth",
    responses((status = 200, body = TotpEnrolment), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn totp_enrol(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<TotpEnrolment>> {
    if caller.role().is_none() {
        return Err(ApiError::forbidden(
            "only staff accounts enrol a second factor",
        ));
    }
    let st = state.clone();
    blocking(move || {
        let secret = totp::new_secret();
        let uri =
            totp::provisioning_uri(&secret, "strom", caller.actor()).map_err(ApiError::internal)?;
        let sealed = st
            .repo
            .seal_totp(caller.tenant(), &caller.session.principal, &secret)?;
        st.repo
            .update_credential(caller.tenant(), &caller.session.principal, |c| {
                c.totp_pending = Some(sealed);
                Ok(())
            })?;
        Ok(Json(TotpEnrolment { secret, uri }))
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirm {
    pub code: String,
}

/// Confirms TOTP enrolment with a first code.
#[utoipa::path(post, path = "/api/v1/auth/totp/confirm", tag = "auth", request_body = TotpConfirm,
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn totp_confirm(
    State(state): State<Shared>,
    caller: Caller,
    Body(req): Body<TotpConfirm>,
) -> ApiResult<StatusCode> {
    let st = state.clone();
    blocking(move || {
        let (tenant, principal) = (caller.tenant().to_owned(), caller.session.principal.clone());
        let cred = st.repo.credential(&tenant, &principal)?;
        let pending = cred
            .totp_pending
            .clone()
            .ok_or_else(|| ApiError::bad_request("start enrolment first"))?;
        let secret = st.repo.open_totp(&tenant, &principal, &pending)?;
        let step = totp::verify(&secret, &req.code, now().unix_timestamp() as u64, None)
            .map_err(|_| ApiError::bad_request("wrong code"))?;
        st.repo.update_credential(&tenant, &principal, |c| {
            c.totp = c.totp_pending.take();
            c.totp_last_step = Some(step);
            Ok(())
        })?;
        st.repo
            .update_session(&caller.secret, |s| s.must_enrol_totp = false)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

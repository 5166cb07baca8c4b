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

use super::problem::{blocking, Body, PathOf};
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
        .route("/api/v1/auth/sessions", get(list_sessions))
        .route("/api/v1/auth/sessions/{id}/end", post(end_session))
}

/// One of the caller's live sessions (a browser that is logged in).
#[derive(Serialize, ToSchema)]
pub struct SessionItem {
    /// Public id of the session (not its secret).
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: time::OffsetDateTime,
    /// The session this request came with.
    pub current: bool,
}

/// The caller's own live sessions, most recently used first (ASVS 7.5.2).
#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "auth",
    responses((status = 200, body = Vec<SessionItem>), (status = 401, body = Problem)))]
pub async fn list_sessions(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<Vec<SessionItem>>> {
    let st = state.clone();
    blocking(move || {
        let mine = sha256_hex(&caller.secret);
        let sessions = st.repo.sessions_of(caller.tenant(), caller.actor())?;
        Ok(Json(
            sessions
                .into_iter()
                .map(|(id, hash, s)| SessionItem {
                    id,
                    created_at: s.created_at,
                    last_seen: s.last_seen,
                    current: hash == mine,
                })
                .collect(),
        ))
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndSessionRequest {
    /// The account's password, where it has one: a cookie alone (left on a
    /// shared computer) does not end the owner's other sessions. Accounts
    /// without a password (magic link, single sign-on) need a session
    /// started in the last 10 minutes instead.
    #[serde(default)]
    pub password: Option<String>,
}

/// How recent a login must be to stand in for the password.
const FRESH_LOGIN: time::Duration = time::Duration::minutes(10);

/// Ends one of the caller's own sessions, after authenticating again
/// (ASVS 7.5.2): the password counts as a login attempt (lockout).
#[utoipa::path(post, path = "/api/v1/auth/sessions/{id}/end", tag = "auth", params(("id" = String, Path)),
    request_body = EndSessionRequest,
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 423, body = Problem)))]
pub async fn end_session(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(id): PathOf<String>,
    Body(req): Body<EndSessionRequest>,
) -> ApiResult<StatusCode> {
    let st = state.clone();
    blocking(move || {
        let tenant = caller.tenant().to_owned();
        let principal = caller.session.principal.clone();
        let cred = st.repo.credential(&tenant, &principal)?;
        if cred.password.is_some() {
            let given = req
                .password
                .as_deref()
                .ok_or_else(|| ApiError::bad_request("give your password to end a session"))?;
            let t = st.repo.tenant(&tenant)?;
            let cred = st.repo.reserve_attempt(&tenant, &principal)?;
            let ok = cred
                .password
                .as_deref()
                .is_some_and(|h| password::verify_password(given, h));
            let minutes = t.settings.lockout_minutes.for_role(caller.role());
            if !st
                .repo
                .finish_attempt(&tenant, &principal, ok, minutes, None)?
            {
                return Err(RepoError::WrongCredentials.into());
            }
        } else if now() - caller.session.created_at > FRESH_LOGIN {
            return Err(
                ApiError::forbidden("log in again (within 10 minutes) to end a session")
                    .with_reason("reauthenticate"),
            );
        }
        st.repo.end_own_session(&tenant, caller.actor(), &id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
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

pub(crate) fn limit(state: &AppState, ip: std::net::IpAddr, account: &str) -> ApiResult<()> {
    let now = Instant::now();
    let refused = |which: &'static str| {
        let metrics = &state.repo.metrics;
        metrics
            .refused_rate_limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(limit = which, "request refused: rate limit");
    };
    state
        .limits
        .per_ip
        .check(&crate::limits::address_key(ip), now)
        .map_err(|s| {
            refused("address");
            ApiError::too_many(s)
        })?;
    state
        .limits
        .per_account
        .check(&sha256_hex(account), now)
        .map_err(|s| {
            refused("account");
            ApiError::too_many(s)
        })?;
    Ok(())
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
pub async fn login(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Response> {
    limit(&state, ip, &account_key(&req.tenant, &req.email))?;
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
            st.limits.phantom.attempt(&phantom, minutes, now()).map_err(|l| RepoError::Locked(l.until))?;
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

/// Sends a magic login link (10 minutes, single use). Always 202.
#[utoipa::path(post, path = "/api/v1/auth/magic-link", tag = "auth", request_body = LinkRequest,
    responses((status = 202, body = Accepted), (status = 400, body = Problem), (status = 403, body = Problem), (status = 429, body = Problem)))]
pub async fn magic_link(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    Body(req): Body<LinkRequest>,
) -> ApiResult<Response> {
    limit(&state, ip, &account_key(&req.tenant, &req.email))?;
    check_tenant(&req.tenant)?;
    let preauth = crate::repo::random_secret();
    send_link(&state, LinkPurpose::MagicLogin, &req, Some(&preauth)).await?;
    Ok(accepted_with_preauth(&state, Some(&preauth)))
}

/// Creates and mails a link; does nothing (silently) for unknown addresses.
/// The mail goes out in the background: the answer must not wait for the
/// mail server only when the address exists (that timing would tell).
pub async fn send_link(
    state: &Shared,
    purpose: LinkPurpose,
    req: &LinkRequest,
    preauth: Option<&str>,
) -> ApiResult<()> {
    if let Some(mail) = issue_link(state, purpose, req, preauth).await? {
        let st = state.clone();
        st.mails_in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            if let Err(e) = st.mailer.send(mail).await {
                tracing::warn!(error = %e, "mail not sent");
            }
            st.mails_in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
    Ok(())
}

/// Creates a link and the mail that carries it (`None` for an unknown
/// address); sending it is the caller's.
pub async fn issue_link(
    state: &Shared,
    purpose: LinkPurpose,
    req: &LinkRequest,
    preauth: Option<&str>,
) -> ApiResult<Option<Mail>> {
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
    Ok(mail)
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
    /// The authenticator code, for staff accounts with a second factor: a
    /// link proves the mailbox, not the second factor. Without it such a
    /// link is answered 401 with reason `totp_required` and stays unused.
    #[serde(default)]
    pub totp: Option<String>,
}

/// Logs in with a magic link (from the browser that asked, or with the code).
/// Staff with a second factor present it too (`totp`).
#[utoipa::path(post, path = "/api/v1/auth/magic-link/consume", tag = "auth", request_body = ConsumeRequest,
    responses((status = 200, body = SessionInfo), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 423, body = Problem), (status = 429, body = Problem)))]
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
        let bound = |l: &Link| {
            let by_browser = matches!((&l.browser, &preauth), (Some(b), Some(p)) if crate::repo::constant_time_eq(b.as_bytes(), sha256_hex(p).as_bytes()));
            let by_code = matches!((&l.code, &req.code), (Some(c), Some(given)) if crate::repo::constant_time_eq(c.as_bytes(), sha256_hex(given.trim()).as_bytes()));
            by_browser || by_code
        };
        // Looked at first, used up only once every factor is in.
        let link = st.repo.peek_link(&hash, LinkPurpose::MagicLogin)?;
        if !bound(&link) {
            return Err(ApiError::not_found());
        }
        if let Principal::Staff { user, .. } = &link.principal {
            let u = st.repo.user(&link.tenant, user)?;
            if !u.active {
                return Err(ApiError::not_found());
            }
            if u.credential.totp.is_some() {
                let Some(code) = req.totp.as_deref() else {
                    return Err(ApiError::new(StatusCode::UNAUTHORIZED, "enter the code from your authenticator app")
                        .with_reason("totp_required"));
                };
                // Guessing codes counts like guessing passwords (lockout).
                let tenant = st.repo.tenant(&link.tenant)?;
                let cred = st.repo.reserve_attempt(&link.tenant, &link.principal)?;
                let step = match check_totp(&st.repo, &link.tenant, &link.principal, &cred, Some(code))? {
                    TotpCheck::Valid(step) => Some(step),
                    _ => None,
                };
                let minutes = tenant.settings.lockout_minutes.for_role(Some(u.role));
                if !st.repo.finish_attempt(&link.tenant, &link.principal, step.is_some(), minutes, step)? {
                    return Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong authenticator code")
                        .with_reason("totp_required"));
                }
            }
        }
        let link = st.repo.consume_link(&hash, LinkPurpose::MagicLogin, bound)?;
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
        end_previous_session(&st, &headers);
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
    limit(&state, ip, &account_key(&req.tenant, &req.email))?;
    check_tenant(&req.tenant)?;
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
        let context = st.repo.password_context(&link.tenant, &link.principal)?;
        password::check_password_in(&policy, &req.new_password, &history, &context)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let link = st
            .repo
            .consume_link(&hash, LinkPurpose::PasswordReset, |_| true)?;
        st.repo.set_password(
            &link.tenant,
            &link.principal,
            &req.new_password,
            &policy,
            None,
        )?;
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

#[derive(Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// Base32 secret, for manual entry.
    pub secret: String,
    /// otpauth:// URI for a QR code.
    pub uri: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpEnrolRequest {
    /// The account's password: a session alone (a cookie left on a shared
    /// computer) cannot add or replace a second factor.
    pub password: String,
    /// The code of the second factor being replaced, when there is one.
    #[serde(default)]
    pub current_code: Option<String>,
}

/// Starts TOTP enrolment or replacement (staff). Needs the password, and
/// the current factor's code when one is enrolled; both count as login
/// attempts (lockout).
#[utoipa::path(post, path = "/api/v1/auth/totp/enrol", tag = "auth", request_body = TotpEnrolRequest,
    responses((status = 200, body = TotpEnrolment), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 423, body = Problem)))]
pub async fn totp_enrol(
    State(state): State<Shared>,
    caller: Caller,
    Body(req): Body<TotpEnrolRequest>,
) -> ApiResult<Json<TotpEnrolment>> {
    if caller.role().is_none() {
        return Err(ApiError::forbidden(
            "only staff accounts enrol a second factor",
        ));
    }
    let st = state.clone();
    blocking(move || {
        let (tenant, principal) = (caller.tenant().to_owned(), caller.session.principal.clone());
        let t = st.repo.tenant(&tenant)?;
        let cred = st.repo.reserve_attempt(&tenant, &principal)?;
        let mut ok = cred
            .password
            .as_deref()
            .is_some_and(|h| password::verify_password(&req.password, h));
        let mut step = None;
        if ok {
            match check_totp(
                &st.repo,
                &tenant,
                &principal,
                &cred,
                req.current_code.as_deref(),
            )? {
                TotpCheck::NotEnrolled => {}
                TotpCheck::Valid(s) => step = Some(s),
                TotpCheck::Invalid => ok = false,
            }
        }
        let minutes = t.settings.lockout_minutes.for_role(caller.role());
        if !st
            .repo
            .finish_attempt(&tenant, &principal, ok, minutes, step)?
        {
            let detail = if cred.totp.is_some() {
                "wrong password or current authenticator code"
            } else {
                "wrong password"
            };
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, detail));
        }
        let secret = totp::new_secret();
        let uri =
            totp::provisioning_uri(&secret, "strom", caller.actor()).map_err(ApiError::internal)?;
        let sealed = st.repo.seal_totp(&tenant, &principal, &secret)?;
        st.repo.update_credential(&tenant, &principal, |c| {
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
        st.repo
            .confirm_totp(&tenant, &principal, step, &caller.secret)?;
        st.repo
            .update_session(&caller.secret, |s| s.must_enrol_totp = false)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

//! The caller's own sessions: which browsers are logged in, and ending one.

use super::*;

/// One of the caller's live sessions (a browser that is logged in).
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionItem {
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
pub(crate) async fn list_sessions(
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
pub(crate) struct EndSessionRequest {
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
pub(crate) async fn end_session(
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

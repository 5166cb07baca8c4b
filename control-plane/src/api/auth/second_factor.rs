//! Enrolling a second factor (TOTP): a pending secret, confirmed with a
//! code from the authenticator.

use super::*;

#[derive(Serialize, ToSchema)]
pub(crate) struct TotpEnrolment {
    /// Base32 secret, for manual entry.
    pub secret: String,
    /// otpauth:// URI for a QR code.
    pub uri: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TotpEnrolRequest {
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
pub(crate) async fn totp_enrol(
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
pub(crate) struct TotpConfirm {
    pub code: String,
}

/// Confirms TOTP enrolment with a first code.
#[utoipa::path(post, path = "/api/v1/auth/totp/confirm", tag = "auth", request_body = TotpConfirm,
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn totp_confirm(
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

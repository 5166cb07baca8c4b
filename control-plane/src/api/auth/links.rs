//! Magic links and password reset links: asked for by e-mail address (the
//! answer never tells whether an account exists), consumed from the link's
//! page with the secret from the URL fragment and a pre-auth cookie, or the
//! 8-digit code from the same mail.

use super::*;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    pub tenant: String,
    #[serde(default)]
    pub event: Option<String>,
    pub email: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Accepted {
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
pub(crate) async fn magic_link(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    Body(req): Body<LinkRequest>,
) -> ApiResult<Response> {
    limit(&state, ip, &account_key(&req.tenant, &req.email)).await?;
    check_tenant(&req.tenant)?;
    let preauth = crate::repo::random_secret();
    send_link(&state, LinkPurpose::MagicLogin, &req, Some(&preauth)).await?;
    Ok(accepted_with_preauth(&state, Some(&preauth)))
}

/// Creates and mails a link; does nothing (silently) for unknown addresses.
/// The mail goes out in the background: the answer must not wait for the
/// mail server only when the address exists (that timing would tell).
pub(crate) async fn send_link(
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
pub(crate) struct ConsumeRequest {
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
pub(crate) async fn consume_magic_link(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Body(req): Body<ConsumeRequest>,
) -> ApiResult<Response> {
    limit(&state, ip, &format!("link|{}", sha256_hex(&req.token))).await?;
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
pub(crate) async fn password_reset(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    Body(req): Body<LinkRequest>,
) -> ApiResult<Response> {
    limit(&state, ip, &account_key(&req.tenant, &req.email)).await?;
    check_tenant(&req.tenant)?;
    send_link(&state, LinkPurpose::PasswordReset, &req, None).await?;
    Ok(accepted_with_preauth(&state, None))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteResetRequest {
    pub token: String,
    pub new_password: String,
}

/// Sets a new password with a reset link.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/complete", tag = "auth", request_body = CompleteResetRequest,
    responses((status = 204), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 429, body = Problem)))]
pub(crate) async fn complete_password_reset(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    Body(req): Body<CompleteResetRequest>,
) -> ApiResult<StatusCode> {
    limit(&state, ip, &format!("link|{}", sha256_hex(&req.token))).await?;
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

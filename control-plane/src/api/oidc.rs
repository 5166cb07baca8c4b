//! Single sign-on by OpenID Connect (AUTH-6): the authorization code flow
//! with PKCE (S256), `state` and `nonce` against the issuer a tenant
//! configures. `GET /api/v1/auth/oidc/start` sends the browser to the
//! provider; `GET /api/v1/auth/oidc/callback` exchanges the code, verifies
//! the ID token (signature by the provider's JWKS, issuer, audience, nonce,
//! expiry), maps the verified e-mail address to a staff account or an
//! event's participant, and starts a session.
//!
//! Pending logins live in the store's presence ([`crate::store::Presence`]:
//! memory for RocksDB, an unlogged table on PostgreSQL), keyed by a hash of
//! `state` and bound to the browser by a pre-auth cookie, so a login started
//! on one replica finishes on whichever replica the provider's redirect
//! reaches. They hold no personal data, live ten minutes and are taken
//! once (an atomic delete); unauthenticated `start` calls are bounded by the
//! per-address limit and a cap per tenant and ten minutes.
//!
//! Every request to the provider (discovery, JWKS, token, UserInfo) goes
//! through [`provider_http`]: https to public addresses only, unless
//! `control_plane.oidc_allow_private_addresses` lets in loopback and
//! internal ones (development, an on-premises provider).

pub(crate) mod provider_http;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::store::{Presence, StoreError};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::{principal_for, start_session};
use super::problem::{blocking, Problem, QueryOf};
use super::*;
use crate::model::{ParticipantStatus, Principal};
use crate::repo::{random_secret, sha256_hex};
use provider_http::{AddressPolicy, ProviderHttp, ProviderHttpError, Refusal};

/// Name of the cookie that binds a pending login to the browser that started it.
pub(crate) const OIDC_COOKIE: &str = "__Host-strom_oidc";
/// How long a started login may take at the provider.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Logins one tenant may start per [`PENDING_TTL`] (unauthenticated
/// callers create them; 20,000 participants of a town hall logging in
/// within its last ten minutes stay well inside).
const PENDING_MAX: u64 = 100_000;
/// How long discovered provider metadata (with its JWKS) is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/auth/oidc/start", get(start))
        .route("/api/v1/auth/oidc/callback", get(callback))
}

/// The redirect URI to register at the identity provider.
pub(crate) fn redirect_uri(state: &AppState) -> String {
    format!("{}api/v1/auth/oidc/callback", state.public_url)
}

// ---- pending logins --------------------------------------------------------

/// A login sent to the provider and not yet back.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub(crate) struct PendingLogin {
    pub tenant: String,
    pub event: Option<String>,
    pub pkce_verifier: String,
    pub nonce: String,
    /// SHA-256 (hex) of the pre-auth cookie's value.
    pub browser: String,
}

/// Why a callback's `state` was not accepted.
#[derive(Debug, PartialEq)]
pub(crate) enum PendingRefusal {
    /// Unknown, expired or already used.
    Unknown,
    /// Started in another browser (the pre-auth cookie does not match);
    /// carries the login's tenant for the log.
    OtherBrowser(String),
    /// The store cannot be reached.
    Unavailable(String),
}

/// Presence kind of pending logins, keyed by the SHA-256 of `state`.
const PENDING_KIND: &str = "oidc-login";
/// Presence kind of the per-tenant count of logins started.
const STARTS_KIND: &str = "oidc-starts";

/// Keeps `login` under the hash of `oauth_state`; `Ok(false)` when its
/// tenant started [`PENDING_MAX`] logins in the last [`PENDING_TTL`].
pub(crate) fn keep_pending(
    presence: &dyn Presence,
    oauth_state: &str,
    login: &PendingLogin,
) -> Result<bool, StoreError> {
    if presence
        .count(STARTS_KIND, &login.tenant, PENDING_TTL)?
        .hits
        > PENDING_MAX
    {
        return Ok(false);
    }
    let value = serde_json::to_vec(login).map_err(|e| StoreError::Backend(e.to_string()))?;
    presence.put(PENDING_KIND, &sha256_hex(oauth_state), &value, PENDING_TTL)?;
    Ok(true)
}

/// Takes the login for `oauth_state` if it is live and was started by the
/// browser whose cookie hashes to `browser`. A wrong browser does not use
/// it up, so whoever learns the callback URL cannot spoil the real login;
/// of two callbacks with the right cookie at once (on two replicas), one
/// gets it.
pub(crate) fn take_pending(
    presence: &dyn Presence,
    oauth_state: &str,
    browser: Option<&str>,
) -> Result<PendingLogin, PendingRefusal> {
    let unavailable = |e: StoreError| PendingRefusal::Unavailable(e.to_string());
    let key = sha256_hex(oauth_state);
    let decode = |v: &[u8]| serde_json::from_slice::<PendingLogin>(v).ok();
    let login = presence
        .get(PENDING_KIND, &key)
        .map_err(unavailable)?
        .and_then(|p| decode(&p.value))
        .ok_or(PendingRefusal::Unknown)?;
    let same_browser = browser
        .is_some_and(|b| crate::repo::constant_time_eq(b.as_bytes(), login.browser.as_bytes()));
    if !same_browser {
        return Err(PendingRefusal::OtherBrowser(login.tenant));
    }
    presence
        .take(PENDING_KIND, &key)
        .map_err(unavailable)?
        .and_then(|p| decode(&p.value))
        .ok_or(PendingRefusal::Unknown)
}

// ---- provider discovery ----------------------------------------------------

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What this control plane may reach for single sign-on.
pub(crate) fn address_policy(state: &AppState) -> AddressPolicy {
    AddressPolicy {
        allow_private: state.oidc_allow_private_addresses,
    }
}

/// The HTTP client for provider calls under `policy` (one per policy).
fn http(policy: AddressPolicy) -> Result<&'static ProviderHttp, ApiError> {
    type Built = LazyLock<Result<ProviderHttp, String>>;
    static PUBLIC: Built = LazyLock::new(|| {
        ProviderHttp::new(AddressPolicy {
            allow_private: false,
        })
        .map_err(|e| e.to_string())
    });
    static ANY: Built = LazyLock::new(|| {
        ProviderHttp::new(AddressPolicy {
            allow_private: true,
        })
        .map_err(|e| e.to_string())
    });
    let built = if policy.allow_private { &ANY } else { &PUBLIC };
    built.as_ref().map_err(ApiError::internal)
}

/// Checks an issuer a tenant owner sets (or that is about to be used):
/// https and a public host, by the URL alone (names are checked again,
/// resolved, when fetched). `field` names it in the answer.
pub(crate) fn check_issuer(policy: AddressPolicy, issuer: &url::Url, field: &str) -> ApiResult<()> {
    policy.check_url(issuer).map_err(|refusal| {
        ApiError::bad_request(match refusal {
            Refusal::NotHttps => format!("{field} must be https"),
            other => format!(
                "{field} {other}: single sign-on reaches identity providers only at public addresses"
            ),
        })
    })
}

/// The answer when the policy stopped a request to the provider (the
/// metadata named an endpoint at a refused address, or the issuer's name
/// resolved to one).
fn refused(tenant: &str, what: &str, refusal: &Refusal) -> ApiError {
    tracing::warn!(tenant = %tenant, what, reason = %refusal, "oidc request refused: not a public https address");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!(
            "the identity provider's {what} URL {refusal}: single sign-on reaches identity providers only at public https addresses"
        ),
    )
}

static DISCOVERED: LazyLock<Mutex<HashMap<String, (Instant, CoreProviderMetadata)>>> =
    LazyLock::new(Default::default);

fn bad_gateway(detail: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, detail)
}

/// The issuer's metadata and keys, from a cache of a few minutes.
async fn discover(
    tenant: &str,
    issuer: &str,
    policy: AddressPolicy,
) -> ApiResult<CoreProviderMetadata> {
    let url = url::Url::parse(issuer)
        .map_err(|_| ApiError::bad_request("the tenant's OIDC issuer is not a URL"))?;
    // Also for issuers stored before the check, or under another policy.
    check_issuer(policy, &url, "the tenant's OIDC issuer")?;
    let key = format!("{}|{issuer}", policy.allow_private);
    let now = Instant::now();
    if let Some((at, meta)) = DISCOVERED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
    {
        if now.duration_since(*at) < DISCOVERY_TTL {
            return Ok(meta.clone());
        }
    }
    let issuer_url = IssuerUrl::new(issuer.to_owned())
        .map_err(|_| ApiError::bad_request("the tenant's OIDC issuer is not a URL"))?;
    let meta = CoreProviderMetadata::discover_async(issuer_url, http(policy)?)
        .await
        .map_err(|e| {
            let reason = match &e {
                openidconnect::DiscoveryError::Request(ProviderHttpError::Refused(r)) => {
                    return refused(tenant, "discovery or JWKS", r);
                }
                openidconnect::DiscoveryError::Request(_) => "unreachable",
                openidconnect::DiscoveryError::Response(..) => "error response",
                openidconnect::DiscoveryError::Parse(_) => "unparsable metadata",
                openidconnect::DiscoveryError::Validation(_) => "issuer mismatch",
                _ => "failed",
            };
            tracing::warn!(tenant = %tenant, reason, "oidc discovery failed");
            bad_gateway("the identity provider could not be reached or sent invalid metadata")
        })?;
    let mut cache = DISCOVERED.lock().unwrap_or_else(|p| p.into_inner());
    cache.retain(|_, (at, _)| now.duration_since(*at) < DISCOVERY_TTL);
    cache.insert(key, (now, meta.clone()));
    Ok(meta)
}

/// The tenant's OIDC client: settings, opened client secret and discovered provider.
async fn client_for(state: &Shared, tenant: &str) -> ApiResult<(Client, String)> {
    let st = state.clone();
    let t = tenant.to_owned();
    let (settings, secret) = blocking(move || {
        let tenant = st.repo.tenant(&t)?;
        let settings = tenant.settings.oidc.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "single sign-on is not set up for this tenant",
            )
        })?;
        let secret = match &settings.client_secret {
            Some(sealed) => Some(
                st.repo
                    .open_tenant_secret(&t, "oidc-client-secret", sealed)?,
            ),
            None => None,
        };
        Ok((settings, secret))
    })
    .await?;
    let meta = discover(tenant, &settings.issuer, address_policy(state)).await?;
    let redirect = RedirectUrl::new(redirect_uri(state)).map_err(ApiError::internal)?;
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new(settings.client_id),
        secret.map(ClientSecret::new),
    )
    .set_redirect_uri(redirect);
    Ok((client, settings.issuer))
}

// ---- handlers --------------------------------------------------------------

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StartQuery {
    /// The tenant whose identity provider to use (`t_…`).
    pub tenant: String,
    /// For a participant's login to an event (`e_…`); absent for staff.
    #[serde(default)]
    pub event: Option<String>,
}

async fn rate_limit(state: &Shared, ip: std::net::IpAddr) -> ApiResult<()> {
    let st = state.clone();
    blocking(move || {
        st.limits
            .per_ip
            .check(&crate::limits::address_key(ip))
            .map_err(|r| super::auth::refusal(&st, "address", r))
    })
    .await
}

/// Starts single sign-on: redirects to the tenant's identity provider.
#[utoipa::path(get, path = "/api/v1/auth/oidc/start", tag = "auth", params(StartQuery),
    responses((status = 303, description = "to the identity provider's authorization endpoint"), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 429, body = Problem), (status = 502, body = Problem), (status = 503, body = Problem)))]
pub(crate) async fn start(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    QueryOf(q): QueryOf<StartQuery>,
) -> ApiResult<Response> {
    rate_limit(&state, ip).await?;
    if let Some(event) = &q.event {
        let (st, tenant, event) = (state.clone(), q.tenant.clone(), event.clone());
        blocking(move || Ok(st.repo.event(&tenant, &event).map(|_| ())?)).await?;
    }
    let (client, _) = client_for(&state, &q.tenant).await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    let browser = random_secret();
    let login = PendingLogin {
        tenant: q.tenant.clone(),
        event: q.event.clone(),
        pkce_verifier: verifier.secret().clone(),
        nonce: nonce.secret().clone(),
        browser: sha256_hex(&browser),
    };
    let (st, oauth_state) = (state.clone(), csrf.secret().clone());
    let kept = blocking(move || {
        keep_pending(st.presence.as_ref(), &oauth_state, &login)
            .map_err(|e| ApiError::from(crate::repo::RepoError::Store(e)))
    })
    .await?;
    if !kept {
        tracing::warn!(tenant = %q.tenant, "oidc start refused: too many pending logins");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many logins in progress; try again in a few minutes",
        ));
    }
    tracing::info!(tenant = %q.tenant, event = q.event.as_deref().unwrap_or(""), "oidc login started");
    let mut res = see_other(url.as_str())?;
    res.headers_mut().append(
        header::SET_COOKIE,
        session_cookie(&state, OIDC_COOKIE, &browser, PENDING_TTL.as_secs() as i64),
    );
    Ok(res)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by the provider instead of `code` when the login failed.
    pub error: Option<String>,
    /// The issuer (RFC 9207), where the provider sends it.
    pub iss: Option<String>,
}

fn see_other(location: &str) -> ApiResult<Response> {
    let mut res = StatusCode::SEE_OTHER.into_response();
    res.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(location).map_err(ApiError::internal)?,
    );
    Ok(res)
}

/// A refusal, logged with the tenant id and the reason only.
fn refuse(tenant: &str, status: StatusCode, reason: &str, detail: &str) -> ApiError {
    tracing::info!(tenant = %tenant, reason, "oidc login refused");
    ApiError::new(status, detail)
}

/// The provider's error code, if it is one of the plain tokens RFC 6749 uses.
fn provider_error(e: &str) -> &str {
    if !e.is_empty() && e.len() <= 64 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        e
    } else {
        "unknown"
    }
}

/// Where the provider sends the browser back: finishes the login.
#[utoipa::path(get, path = "/api/v1/auth/oidc/callback", tag = "auth", params(CallbackQuery),
    responses((status = 303, description = "logged in: to the portal, or to the event's page for participants"), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 429, body = Problem), (status = 502, body = Problem)))]
pub(crate) async fn callback(
    State(state): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    QueryOf(q): QueryOf<CallbackQuery>,
) -> ApiResult<Response> {
    rate_limit(&state, ip).await?;
    let oauth_state = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("the callback lacks state"))?;
    let browser = cookie_value(&headers, OIDC_COOKIE)
        .or_else(|| cookie_value(&headers, OIDC_COOKIE.trim_start_matches("__Host-")))
        .map(|c| sha256_hex(&c));
    let (st, oauth_state) = (state.clone(), oauth_state.to_owned());
    let login = blocking(move || {
        Ok(take_pending(
            st.presence.as_ref(),
            &oauth_state,
            browser.as_deref(),
        ))
    })
    .await?
    .map_err(|r| match r {
        PendingRefusal::Unknown => {
            tracing::info!(
                reason = "unknown, expired or used state",
                "oidc login refused"
            );
            ApiError::bad_request("this login is unknown, expired or already used; start again")
        }
        PendingRefusal::Unavailable(e) => {
            tracing::warn!(error = %e, "oidc callback: the store is away");
            ApiError::from(crate::repo::RepoError::Store(StoreError::Backend(e)))
        }
        PendingRefusal::OtherBrowser(tenant) => refuse(
            &tenant,
            StatusCode::FORBIDDEN,
            "other browser",
            "this login was started in another browser; start again here",
        ),
    })?;
    let tenant = login.tenant.clone();
    let mut res = finish(&state, &login, &q).await?;
    // A session the browser held before (planted or stale) does not live on.
    super::auth::end_previous_session(&state, &headers);
    // The pre-auth cookie has done its work.
    res.headers_mut().append(
        header::SET_COOKIE,
        session_cookie(&state, OIDC_COOKIE, "", 0),
    );
    tracing::info!(tenant = %tenant, "oidc login finished");
    Ok(res)
}

async fn finish(state: &Shared, login: &PendingLogin, q: &CallbackQuery) -> ApiResult<Response> {
    let tenant = login.tenant.as_str();
    if let Some(e) = &q.error {
        let code = provider_error(e);
        tracing::info!(tenant = %tenant, reason = "provider error", error = code, "oidc login refused");
        return Err(ApiError::forbidden(&format!(
            "the identity provider ended the login: {code}"
        )));
    }
    let code = q.code.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| {
        refuse(
            tenant,
            StatusCode::BAD_REQUEST,
            "no code",
            "the callback lacks code",
        )
    })?;
    let (client, issuer) = client_for(state, tenant).await?;
    if q.iss.as_deref().is_some_and(|iss| iss != issuer) {
        return Err(refuse(
            tenant,
            StatusCode::BAD_REQUEST,
            "iss mismatch",
            "the callback names another issuer",
        ));
    }
    let http = http(address_policy(state))?;
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|_| refuse(tenant, StatusCode::BAD_GATEWAY, "no token endpoint", "the identity provider has no token endpoint"))?
        .set_pkce_verifier(PkceCodeVerifier::new(login.pkce_verifier.clone()))
        .request_async(http)
        .await
        .map_err(|e| match e {
            openidconnect::RequestTokenError::ServerResponse(r) => {
                let code = provider_error(r.error().as_ref()).to_owned();
                tracing::info!(tenant = %tenant, reason = "code refused", error = %code, "oidc login refused");
                ApiError::bad_request(format!("the identity provider refused the code: {code}"))
            }
            openidconnect::RequestTokenError::Request(ProviderHttpError::Refused(r)) => refused(tenant, "token endpoint", &r),
            openidconnect::RequestTokenError::Request(_) => refuse(tenant, StatusCode::BAD_GATEWAY, "token endpoint unreachable", "the identity provider could not be reached"),
            _ => refuse(tenant, StatusCode::BAD_GATEWAY, "token response invalid", "the identity provider sent an invalid token response"),
        })?;
    let id_token = token.id_token().ok_or_else(|| {
        refuse(
            tenant,
            StatusCode::BAD_REQUEST,
            "no id token",
            "the identity provider sent no ID token",
        )
    })?;
    let verifier = client.id_token_verifier();
    let bad_token = |reason: &str| {
        refuse(
            tenant,
            StatusCode::BAD_REQUEST,
            reason,
            "the ID token did not verify",
        )
    };
    let claims = id_token
        .claims(&verifier, &Nonce::new(login.nonce.clone()))
        .map_err(|e| {
            bad_token(match e {
                openidconnect::ClaimsVerificationError::Expired(_) => "id token expired",
                openidconnect::ClaimsVerificationError::InvalidAudience(_) => "id token audience",
                openidconnect::ClaimsVerificationError::InvalidIssuer(_) => "id token issuer",
                openidconnect::ClaimsVerificationError::InvalidNonce(_) => "id token nonce",
                openidconnect::ClaimsVerificationError::SignatureVerification(_) => {
                    "id token signature"
                }
                _ => "id token invalid",
            })
        })?;
    // The access token must be the one the ID token was issued with.
    if let Some(expected) = claims.access_token_hash() {
        let alg = id_token
            .signing_alg()
            .map_err(|_| bad_token("id token alg"))?;
        let key = id_token
            .signing_key(&verifier)
            .map_err(|_| bad_token("id token key"))?;
        let actual = AccessTokenHash::from_token(token.access_token(), alg, key)
            .map_err(|_| bad_token("at_hash"))?;
        if actual != *expected {
            return Err(bad_token("at_hash mismatch"));
        }
    }
    // The e-mail claims come in the ID token, or (the spec's default for the
    // code flow) from the UserInfo endpoint for the same subject.
    let (email, verified) = match claims.email() {
        Some(email) => (email.as_str().to_owned(), claims.email_verified()),
        None => {
            let request = client
                .user_info(token.access_token().clone(), Some(claims.subject().clone()))
                .map_err(|_| {
                    refuse(
                        tenant,
                        StatusCode::FORBIDDEN,
                        "no email claim",
                        "the identity provider did not assert an e-mail address",
                    )
                })?;
            let info: CoreUserInfoClaims =
                request.request_async(http).await.map_err(|e| match e {
                    openidconnect::UserInfoError::Request(ProviderHttpError::Refused(r)) => {
                        refused(tenant, "UserInfo endpoint", &r)
                    }
                    openidconnect::UserInfoError::ClaimsVerification(_) => refuse(
                        tenant,
                        StatusCode::BAD_REQUEST,
                        "userinfo subject",
                        "the identity provider's user info did not verify",
                    ),
                    _ => refuse(
                        tenant,
                        StatusCode::BAD_GATEWAY,
                        "userinfo failed",
                        "the identity provider's user info could not be read",
                    ),
                })?;
            let email = info.email().map(|e| e.as_str().to_owned()).ok_or_else(|| {
                refuse(
                    tenant,
                    StatusCode::FORBIDDEN,
                    "no email claim",
                    "the identity provider did not assert an e-mail address",
                )
            })?;
            (email, info.email_verified())
        }
    };
    if verified != Some(true) {
        return Err(refuse(
            tenant,
            StatusCode::FORBIDDEN,
            "email not verified",
            "the identity provider has not verified this e-mail address",
        ));
    }
    let (st, login) = (state.clone(), login.clone());
    blocking(move || {
        let tenant = login.tenant.as_str();
        let Some((principal, role)) = principal_for(&st.repo, tenant, login.event.as_deref(), &email) else {
            return Err(refuse(tenant, StatusCode::FORBIDDEN, "no active account", "no active account matches this identity here"));
        };
        if let Principal::Participant { event, participant } = &principal {
            // A verified address proves the mailbox, as a magic link does.
            if st.repo.participant(tenant, event, participant)?.status == ParticipantStatus::Invited {
                st.repo.set_participant_status(participant, tenant, event, participant, ParticipantStatus::Active)?;
            }
        }
        let (secret, session) = start_session(&st, tenant, principal, role)?;
        // Single sign-on does not use the local password: no change forced here.
        if session.must_change_password {
            st.repo.update_session(&secret, |s| s.must_change_password = false)?;
        }
        tracing::info!(tenant = %tenant, subject = crate::repo::principal_id(&session.principal), "login by oidc");
        let to = match &login.event {
            Some(event) => st.public_url.join(&format!("e/{tenant}/{event}")).map_err(ApiError::internal)?,
            None => st.public_url.clone(),
        };
        let mut res = see_other(to.as_str())?;
        res.headers_mut().append(header::SET_COOKIE, session_cookie(&st, SESSION_COOKIE, &secret, 12 * 3600));
        Ok(res)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::MemoryPresence;

    fn login(browser: &str) -> PendingLogin {
        PendingLogin {
            tenant: "t_1".into(),
            event: None,
            pkce_verifier: "v".into(),
            nonce: "n".into(),
            browser: sha256_hex(browser),
        }
    }

    #[test]
    fn a_pending_login_is_used_once() {
        let p = MemoryPresence::default();
        assert!(keep_pending(&p, "s", &login("b")).unwrap());
        let b = sha256_hex("b");
        assert_eq!(take_pending(&p, "s", Some(&b)).unwrap().tenant, "t_1");
        assert_eq!(
            take_pending(&p, "s", Some(&b)),
            Err(PendingRefusal::Unknown)
        );
        assert_eq!(
            take_pending(&p, "never", Some(&b)),
            Err(PendingRefusal::Unknown)
        );
    }

    #[test]
    fn another_browser_is_refused_without_using_the_login_up() {
        let p = MemoryPresence::default();
        keep_pending(&p, "s", &login("b")).unwrap();
        let other = Err(PendingRefusal::OtherBrowser("t_1".into()));
        assert_eq!(take_pending(&p, "s", None), other);
        assert_eq!(take_pending(&p, "s", Some(&sha256_hex("other"))), other);
        assert!(take_pending(&p, "s", Some(&sha256_hex("b"))).is_ok());
    }

    #[test]
    fn the_state_is_stored_only_as_its_hash() {
        let p = MemoryPresence::default();
        keep_pending(&p, "the-secret-state", &login("b")).unwrap();
        let held = p.list(PENDING_KIND, "").unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].key, sha256_hex("the-secret-state"));
    }

    #[test]
    fn one_tenant_starts_at_most_pending_max_logins_per_ten_minutes() {
        let p = MemoryPresence::default();
        // Count the tenant up to its cap without keeping that many logins.
        for _ in 0..PENDING_MAX {
            p.count(STARTS_KIND, "t_1", PENDING_TTL).unwrap();
        }
        assert!(!keep_pending(&p, "over", &login("b")).unwrap());
        assert_eq!(
            take_pending(&p, "over", Some(&sha256_hex("b"))),
            Err(PendingRefusal::Unknown),
            "a refused start keeps nothing"
        );
        let other = PendingLogin {
            tenant: "t_2".into(),
            ..login("b")
        };
        assert!(keep_pending(&p, "other", &other).unwrap(), "tenants apart");
    }

    #[test]
    fn provider_error_codes_are_passed_on_only_when_plain() {
        assert_eq!(provider_error("access_denied"), "access_denied");
        assert_eq!(provider_error("<script>"), "unknown");
        assert_eq!(provider_error("alice@example.com"), "unknown");
        assert_eq!(provider_error(""), "unknown");
    }
}

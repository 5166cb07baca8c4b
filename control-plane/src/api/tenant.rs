//! The tenant's own administration (owners): settings, staff accounts and
//! roles, sites for the eCDN, the audit trail and its verification, the
//! access review and what falls due for deletion.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use strom_identity::password::PasswordPolicy;
use utoipa::{IntoParams, ToSchema};

use super::problem::{blocking, Body, PathOf, QueryOf};
use super::*;
use crate::audit::AuditRecord;
use crate::model::{new_id, EdgeRegistration, LockoutMinutes, P2pMode, Site};
use crate::repo::UserView;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/tenant", get(get_tenant).patch(update_tenant))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route(
            "/api/v1/users/{id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route("/api/v1/users/{id}/unlock", post(unlock_user))
        .route(
            "/api/v1/users/{id}/totp",
            axum::routing::delete(reset_user_totp),
        )
        .route("/api/v1/sites", get(list_sites).post(create_site))
        .route(
            "/api/v1/sites/{id}",
            axum::routing::patch(update_site).delete(delete_site),
        )
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/audit/verify", get(audit_verify))
        .route("/api/v1/access-review", get(access_review))
        .route("/api/v1/retention", get(retention_due))
        .route("/api/v1/edges", get(list_edges))
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct PolicyDto {
    /// 10 to 32.
    pub min_length: u8,
    pub require_classes: bool,
    /// 1 to 180, or null for no expiry.
    pub expiry_days: Option<u16>,
    /// 0 to 10.
    pub history: u8,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct TenantDto {
    pub id: String,
    pub name: String,
    pub password_policy: PolicyDto,
    pub totp_required_for_owners: bool,
    pub lockout_minutes: LockoutMinutes,
    pub session_idle_minutes: u32,
    pub oidc: Option<OidcDto>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub password_policy: Option<PolicyDto>,
    #[serde(default)]
    pub totp_required_for_owners: Option<bool>,
    #[serde(default)]
    pub lockout_minutes: Option<LockoutMinutes>,
    #[serde(default)]
    pub session_idle_minutes: Option<u32>,
    /// Single sign-on by OpenID Connect; `null` turns it off.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<OidcRequest>)]
    pub oidc: Option<Option<OidcRequest>>,
}

/// Tells a field sent as `null` (Some(None)) from one left out (None).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// OIDC settings as an owner sends them.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OidcRequest {
    /// Issuer URL (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    /// Stored sealed; never returned.
    #[serde(default)]
    pub client_secret: Option<String>,
}

/// OIDC settings as shown (without the secret).
#[derive(Serialize, ToSchema)]
pub(crate) struct OidcDto {
    pub issuer: String,
    pub client_id: String,
    pub has_client_secret: bool,
    /// Redirect URI to register at the identity provider.
    pub redirect_uri: String,
}

fn tenant_dto(state: &AppState, t: &crate::model::Tenant) -> TenantDto {
    let p = &t.settings.password_policy;
    TenantDto {
        id: t.id.clone(),
        name: t.name.clone(),
        password_policy: PolicyDto {
            min_length: p.min_length,
            require_classes: p.require_classes,
            expiry_days: p.expiry_days,
            history: p.history,
        },
        totp_required_for_owners: t.settings.totp_required_for_owners,
        lockout_minutes: t.settings.lockout_minutes.clone(),
        session_idle_minutes: t.settings.session_idle_minutes,
        oidc: t.settings.oidc.as_ref().map(|o| OidcDto {
            issuer: o.issuer.clone(),
            client_id: o.client_id.clone(),
            has_client_secret: o.client_secret.is_some(),
            redirect_uri: super::oidc::redirect_uri(state),
        }),
    }
}

/// The tenant's settings.
#[utoipa::path(get, path = "/api/v1/tenant", tag = "tenant", responses((status = 200, body = TenantDto), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn get_tenant(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<TenantDto>> {
    caller.require(OWNERS)?;
    let st = state.clone();
    blocking(move || Ok(Json(tenant_dto(&st, &st.repo.tenant(caller.tenant())?)))).await
}

/// Changes the tenant's settings (password policy, TOTP, lockout, sessions).
#[utoipa::path(patch, path = "/api/v1/tenant", tag = "tenant", request_body = TenantPatch,
    responses((status = 200, body = TenantDto), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn update_tenant(
    State(state): State<Shared>,
    caller: Caller,
    Body(patch): Body<TenantPatch>,
) -> ApiResult<Json<TenantDto>> {
    caller.require(OWNERS)?;
    let st = state.clone();
    blocking(move || {
        let repo = &st.repo;
        let mut t = repo.tenant(caller.tenant())?;
        if let Some(n) = patch.name {
            t.name = crate::repo::clean_text("name", &n, 120)?;
        }
        if let Some(p) = patch.password_policy {
            t.settings.password_policy = PasswordPolicy {
                min_length: p.min_length,
                require_classes: p.require_classes,
                expiry_days: p.expiry_days,
                history: p.history,
            };
        }
        if let Some(v) = patch.totp_required_for_owners {
            t.settings.totp_required_for_owners = v;
        }
        if let Some(v) = patch.lockout_minutes {
            t.settings.lockout_minutes = v;
        }
        if let Some(v) = patch.session_idle_minutes {
            t.settings.session_idle_minutes = v;
        }
        if let Some(oidc) = patch.oidc {
            t.settings.oidc = match oidc {
                None => None,
                Some(o) => {
                    let issuer = url::Url::parse(&o.issuer)
                        .map_err(|_| ApiError::bad_request("oidc.issuer must be a URL"))?;
                    // https to a public host (loopback and internal hosts
                    // with control_plane.oidc_allow_private_addresses).
                    super::oidc::check_issuer(
                        super::oidc::address_policy(&st),
                        &issuer,
                        "oidc.issuer",
                    )?;
                    let client_id = crate::repo::clean_text("oidc.client_id", &o.client_id, 200)?;
                    let client_secret = match o.client_secret {
                        Some(s) => {
                            Some(repo.seal_tenant_secret(&t.id, "oidc-client-secret", &s)?)
                        }
                        None => t
                            .settings
                            .oidc
                            .as_ref()
                            .and_then(|old| old.client_secret.clone()),
                    };
                    Some(crate::model::OidcSettings {
                        issuer: o.issuer,
                        client_id,
                        client_secret,
                    })
                }
            };
        }
        repo.update_tenant(caller.actor(), &t)?;
        Ok(Json(tenant_dto(&st, &t)))
    })
    .await
}

/// Staff accounts of the tenant.
#[utoipa::path(get, path = "/api/v1/users", tag = "tenant", responses((status = 200, body = Vec<UserView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn list_users(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<Vec<UserView>>> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            Ok(Json(
                repo.users(caller.tenant())?
                    .iter()
                    .map(|u| repo.user_view(u))
                    .collect::<Result<_, _>>()?,
            ))
        })
        .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    pub email: String,
    pub name: String,
    pub role: Role,
    /// A preset password (must be changed at first login); absent: one is generated.
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedUser {
    pub user: UserView,
    /// The generated initial password, shown once.
    pub initial_password: Option<String>,
}

/// Creates a staff account (higher roles are granted by owners only).
#[utoipa::path(post, path = "/api/v1/users", tag = "tenant", request_body = NewUser,
    responses((status = 201, body = CreatedUser), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn create_user(
    State(state): State<Shared>,
    caller: Caller,
    Body(req): Body<NewUser>,
) -> ApiResult<(StatusCode, Json<CreatedUser>)> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            let (user, initial_password) = repo.create_user(
                caller.actor(),
                caller.tenant(),
                &req.email,
                &req.name,
                req.role,
                req.password.as_deref(),
            )?;
            Ok((
                StatusCode::CREATED,
                Json(CreatedUser {
                    user,
                    initial_password,
                }),
            ))
        })
        .await
}

/// One staff account.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "tenant", params(("id" = String, Path)),
    responses((status = 200, body = UserView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn get_user(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(id): PathOf<String>,
) -> ApiResult<Json<UserView>> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            Ok(Json(repo.user_view(&repo.user(caller.tenant(), &id)?)?))
        })
        .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub active: Option<bool>,
}

/// Changes a staff account's name, role or active state.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "tenant", params(("id" = String, Path)), request_body = UserPatch,
    responses((status = 200, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn update_user(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(id): PathOf<String>,
    Body(req): Body<UserPatch>,
) -> ApiResult<Json<UserView>> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            Ok(Json(repo.update_user(
                caller.actor(),
                caller.tenant(),
                &id,
                req.name.as_deref(),
                req.role,
                req.active,
            )?))
        })
        .await
}

/// Deletes a staff account.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "tenant", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn delete_user(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(id): PathOf<String>,
) -> ApiResult<StatusCode> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            repo.delete_user(caller.actor(), caller.tenant(), &id)?;
            Ok(StatusCode::NO_CONTENT)
        })
        .await
}

/// Unlocks a locked staff account.
#[utoipa::path(post, path = "/api/v1/users/{id}/unlock", tag = "tenant", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn unlock_user(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(id): PathOf<String>,
) -> ApiResult<StatusCode> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            let u = repo.user(caller.tenant(), &id)?;
            repo.unlock(
                caller.actor(),
                caller.tenant(),
                &crate::model::Principal::Staff {
                    user: u.id,
                    role: u.role,
                },
            )?;
            Ok(StatusCode::NO_CONTENT)
        })
        .await
}

/// Removes another staff member's second factor (a lost authenticator):
/// their sessions end and they enrol anew at the next login where the
/// tenant requires it. One's own factor is replaced on the Security page,
/// with the password and the current code.
#[utoipa::path(delete, path = "/api/v1/users/{id}/totp", tag = "tenant", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn reset_user_totp(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(id): PathOf<String>,
) -> ApiResult<StatusCode> {
    caller.require(OWNERS)?;
    if caller.actor() == id {
        return Err(ApiError::forbidden(
            "your own second factor is replaced on the Security page, with your password and current code",
        ));
    }
    let repo = state.repo.clone();
    blocking(move || {
        let u = repo.user(caller.tenant(), &id)?;
        repo.reset_totp(
            caller.actor(),
            caller.tenant(),
            &crate::model::Principal::Staff {
                user: u.id,
                role: u.role,
            },
        )?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Sites (LAN locations) for the peer-assisted eCDN.
#[utoipa::path(get, path = "/api/v1/sites", tag = "tenant", responses((status = 200, body = Vec<Site>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn list_sites(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<Vec<Site>>> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            Ok(Json(repo.sites(caller.tenant())?))
        })
        .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SiteRequest {
    pub name: String,
    pub cidrs: Vec<String>,
    pub p2p: P2pMode,
}

/// Creates a site.
#[utoipa::path(post, path = "/api/v1/sites", tag = "tenant", request_body = SiteRequest,
    responses((status = 201, body = Site), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn create_site(
    State(state): State<Shared>,
    caller: Caller,
    Body(req): Body<SiteRequest>,
) -> ApiResult<(StatusCode, Json<Site>)> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            let site = Site {
                id: new_id("s"),
                tenant: caller.tenant().into(),
                name: req.name.trim().into(),
                cidrs: req.cidrs,
                p2p: req.p2p,
            };
            repo.put_site(caller.actor(), &site, true)?;
            Ok((StatusCode::CREATED, Json(site)))
        })
        .await
}

/// Replaces a site's name, CIDRs and p2p mode.
#[utoipa::path(patch, path = "/api/v1/sites/{id}", tag = "tenant", params(("id" = String, Path)), request_body = SiteRequest,
    responses((status = 200, body = Site), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn update_site(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(id): PathOf<String>,
    Body(req): Body<SiteRequest>,
) -> ApiResult<Json<Site>> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            repo.site(caller.tenant(), &id)?;
            let site = Site {
                id,
                tenant: caller.tenant().into(),
                name: req.name.trim().into(),
                cidrs: req.cidrs,
                p2p: req.p2p,
            };
            repo.put_site(caller.actor(), &site, false)?;
            Ok(Json(site))
        })
        .await
}

/// Deletes a site.
#[utoipa::path(delete, path = "/api/v1/sites/{id}", tag = "tenant", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn delete_site(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(id): PathOf<String>,
) -> ApiResult<StatusCode> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            repo.delete_site(caller.actor(), caller.tenant(), &id)?;
            Ok(StatusCode::NO_CONTENT)
        })
        .await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Records after this sequence number.
    #[serde(default)]
    pub after: u64,
    /// At most this many (1 to 1000).
    #[serde(default = "default_limit")]
    pub limit: u16,
}

fn default_limit() -> u16 {
    200
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AuditEntry {
    #[serde(flatten)]
    pub record: AuditRecord,
    /// Opened old value (administrators may read it).
    pub old_value: Option<String>,
    pub new_value: Option<String>,
}

/// The tenant's audit trail, oldest first, with values opened.
#[utoipa::path(get, path = "/api/v1/audit", tag = "tenant", params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn audit(
    State(state): State<Shared>,
    caller: Caller,
    QueryOf(q): QueryOf<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            let limit = q.limit.clamp(1, 1000) as usize;
            let records = crate::audit::list(repo.store.as_ref(), caller.tenant(), q.after, limit)
                .map_err(crate::repo::RepoError::from)?;
            Ok(Json(
                records
                    .into_iter()
                    .map(|r| {
                        let (old_value, new_value) = repo.open_audit_value(&r);
                        AuditEntry {
                            record: r,
                            old_value,
                            new_value,
                        }
                    })
                    .collect(),
            ))
        })
        .await
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AuditVerification {
    pub records: u64,
    pub intact: bool,
    /// What is broken, where.
    pub findings: Vec<String>,
}

/// Verifies the tenant's audit hash chain.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "tenant", responses((status = 200, body = AuditVerification), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn audit_verify(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<AuditVerification>> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            let (records, broken) = crate::audit::verify(repo.store.as_ref(), caller.tenant())
                .map_err(crate::repo::RepoError::from)?;
            Ok(Json(AuditVerification {
                records,
                intact: broken.is_empty(),
                findings: broken.iter().map(|b| format!("{b:?}")).collect(),
            }))
        })
        .await
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RoleHolder {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub since: String,
    pub active: bool,
    pub totp: bool,
}

/// Access review: who holds which role since when (TENANT-6).
#[utoipa::path(get, path = "/api/v1/access-review", tag = "tenant", responses((status = 200, body = Vec<RoleHolder>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn access_review(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<Vec<RoleHolder>>> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            let mut out = Vec::new();
            for u in repo.users(caller.tenant())? {
                let v = repo.user_view(&u)?;
                out.push(RoleHolder {
                    id: v.id,
                    name: v.name,
                    role: v.role,
                    since: v
                        .role_since
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                    active: v.active,
                    totp: v.totp,
                });
            }
            out.sort_by(|a, b| a.role.cmp(&b.role).then(a.since.cmp(&b.since)));
            Ok(Json(out))
        })
        .await
}

#[derive(Serialize, ToSchema)]
pub(crate) struct DueItem {
    pub event: String,
    pub title: String,
    pub due: String,
    pub participants: usize,
}

/// The deletion assistant: events whose retention period ends within 30 days.
#[utoipa::path(get, path = "/api/v1/retention", tag = "tenant", responses((status = 200, body = Vec<DueItem>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn retention_due(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<Vec<DueItem>>> {
    caller
        .in_role(&state, MANAGERS, move |repo, caller| {
            let horizon = crate::repo::now() + time::Duration::days(30);
            let mut out = Vec::new();
            for e in repo.retention_due(Some(caller.tenant()), horizon)? {
                out.push(DueItem {
                    participants: repo.participants(caller.tenant(), &e.id)?.len(),
                    due: e
                        .retention_due()
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                    event: e.id,
                    title: e.title,
                });
            }
            Ok(Json(out))
        })
        .await
}

/// Edges registered with the platform and their load.
#[utoipa::path(get, path = "/api/v1/edges", tag = "tenant", responses((status = 200, body = Vec<EdgeRegistration>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn list_edges(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<Vec<EdgeRegistration>>> {
    caller
        .in_role(&state, OWNERS, move |repo, _| Ok(Json(repo.edges()?)))
        .await
}

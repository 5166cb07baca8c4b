//! The operator's interface to a running control plane: a Unix socket in
//! the data directory (`control-plane/admin.sock`, mode 0600), so only the
//! account that runs the control plane (or root) reaches it — no password,
//! no network port. `strom control-plane relay-credential …` and
//! `signing-key …` talk to it while the control plane runs, because the
//! database then allows no second writer; when the control plane is
//! stopped, they open the database themselves.
//!
//! What it does: issue, list and revoke the operator's relay credentials
//! (origins, edges), and rotate the token signing key with a bounded
//! overlap. Tenant owners manage their agents' credentials through the API.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
pub use axum::http::Method;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use strom_token::RelayRole;

use crate::api::{ApiError, ApiResult};
use crate::repo::{CredentialRecord, Repo, SigningKeyInfo, PLATFORM};

/// Where the socket lives under the data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    crate::Paths::new(data_dir).root.join("admin.sock")
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IssueRequest {
    pub role: RelayRole,
    pub subject: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Issued {
    /// The credential, shown once: into the relay's `control_plane.credential`.
    pub credential: String,
    pub record: CredentialRecord,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RotateRequest {
    /// Seconds the replaced keys keep verifying (0: at once).
    pub overlap_secs: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Rotated {
    pub kid: String,
    pub keys: Vec<SigningKeyInfo>,
    /// Credentials signed by a key that is being retired: issue them again
    /// before it stops verifying.
    pub reissue: Vec<CredentialRecord>,
}

/// The operator's routes (served on the socket only).
pub fn router(repo: Arc<Repo>) -> Router {
    Router::new()
        .route(
            "/v1/relay-credentials",
            get(list_credentials).post(issue_credential),
        )
        .route("/v1/relay-credentials/{subject}", delete(revoke_credential))
        .route("/v1/signing-keys", get(signing_keys))
        .route("/v1/signing-keys/rotate", post(rotate))
        .route("/v1/tenants/{id}", delete(delete_tenant))
        .with_state(repo)
}

/// What a tenant deletion removed.
#[derive(Debug, Serialize, Deserialize)]
pub struct TenantDeleted {
    pub tenant: String,
}

/// The operator deletes a tenant for good (its contract ended): keys
/// shredded, data purged, tokens and agent credentials revoked; journalled,
/// so a restored backup does not bring it back.
async fn delete_tenant(
    State(repo): State<Arc<Repo>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<TenantDeleted>> {
    blocking(move || {
        repo.delete_tenant(&id)?;
        tracing::warn!(tenant = %id, "tenant deleted by the operator");
        Ok(Json(TenantDeleted { tenant: id }))
    })
    .await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await?
}

async fn list_credentials(State(repo): State<Arc<Repo>>) -> ApiResult<Json<Vec<CredentialRecord>>> {
    blocking(move || Ok(Json(repo.credentials(PLATFORM)?))).await
}

async fn issue_credential(
    State(repo): State<Arc<Repo>>,
    Json(req): Json<IssueRequest>,
) -> ApiResult<(StatusCode, Json<Issued>)> {
    blocking(move || {
        let (credential, record) =
            repo.issue_relay_credential("operator", req.role, &req.subject)?;
        Ok((StatusCode::CREATED, Json(Issued { credential, record })))
    })
    .await
}

async fn revoke_credential(
    State(repo): State<Arc<Repo>>,
    UrlPath(subject): UrlPath<String>,
) -> ApiResult<Json<CredentialRecord>> {
    blocking(move || {
        Ok(Json(
            repo.revoke_credential("operator", PLATFORM, &subject)?,
        ))
    })
    .await
}

async fn signing_keys(State(repo): State<Arc<Repo>>) -> Json<Vec<SigningKeyInfo>> {
    Json(repo.signing_keys())
}

async fn rotate(
    State(repo): State<Arc<Repo>>,
    Json(req): Json<RotateRequest>,
) -> ApiResult<Json<Rotated>> {
    if !(0..=strom_token::MAX_RELAY_SECS).contains(&req.overlap_secs) {
        return Err(ApiError::bad_request(
            "the overlap is 0 to 366 days (in seconds)",
        ));
    }
    blocking(move || Ok(Json(rotate_now(&repo, req.overlap_secs)?))).await
}

/// Rotates and reports what must be issued again (also used offline).
pub fn rotate_now(repo: &Repo, overlap_secs: i64) -> crate::repo::Result<Rotated> {
    let kid = repo.rotate_signing_key(time::Duration::seconds(overlap_secs))?;
    let keys = repo.signing_keys();
    let mut reissue = Vec::new();
    for tenant in
        std::iter::once(PLATFORM.to_owned()).chain(repo.tenants()?.into_iter().map(|t| t.id))
    {
        reissue.extend(
            repo.credentials(&tenant)?
                .into_iter()
                .filter(|c| c.revoked_at.is_none() && c.kid != kid),
        );
    }
    Ok(Rotated { kid, keys, reissue })
}

/// Binds the socket (replacing a stale one from a previous run). Its
/// directory (which also holds the database and keys) is made private to
/// the control plane's account first, so nobody else can reach the socket
/// even before its own mode is set to 0600.
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// A request to the running control plane's socket. `Ok(None)` when no
/// control plane answers there (it is stopped: work on the database).
pub async fn call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<Option<(u16, serde_json::Value)>> {
    use http_body_util::BodyExt;
    let stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", socket.display())),
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(bytes)))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok(Some((status, value)))
}

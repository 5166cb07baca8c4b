//! Errors as `application/problem+json` (RFC 9457). Details never echo
//! personal data back; internal errors are logged with an id, not shown.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::repo::RepoError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// A machine-readable reason where a client acts on it, e.g.
    /// `totp_required` (ask for the authenticator code and send it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    pub retry_after: Option<u64>,
    pub reason: Option<&'static str>,
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            retry_after: None,
            reason: None,
        }
    }
    /// The same error with a machine-readable reason ([`Problem::reason`]).
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found")
    }
    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "log in first")
    }
    pub fn forbidden(detail: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    pub fn too_many(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests; try again later",
            )
        }
    }
    /// The store cannot be reached (a database restarting or failing
    /// over): the client tries again shortly, on this replica or another.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        let id = crate::model::new_id("err");
        tracing::warn!(error_id = %id, error = %detail, "storage unavailable");
        Self {
            retry_after: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("storage unavailable; try again shortly ({id})"),
            )
        }
    }
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let id = crate::model::new_id("err");
        tracing::error!(error_id = %id, error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error {id}"),
        )
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::NotFound => Self::not_found(),
            RepoError::Invalid(d) => Self::bad_request(d),
            RepoError::Conflict(d) => Self::new(StatusCode::CONFLICT, d),
            RepoError::Locked(_) => Self::new(
                StatusCode::LOCKED,
                "account locked; try again later or ask an administrator",
            ),
            RepoError::WrongCredentials => Self::new(StatusCode::UNAUTHORIZED, "wrong credentials"),
            RepoError::Key(crate::keys::KeyError::Shredded(_)) => Self::not_found(),
            RepoError::Store(crate::store::StoreError::Backend(e))
            | RepoError::Key(crate::keys::KeyError::Store(crate::store::StoreError::Backend(e))) => {
                Self::unavailable(e)
            }
            other => Self::internal(other),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: "about:blank".into(),
            title: self.status.canonical_reason().unwrap_or("error").into(),
            status: self.status.as_u16(),
            detail: self.detail,
            reason: self.reason.map(str::to_owned),
        };
        let mut res = (
            self.status,
            serde_json::to_string(&body).unwrap_or_default(),
        )
            .into_response();
        let h = res.headers_mut();
        h.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            h.insert(axum::http::header::RETRY_AFTER, s.into());
        }
        res
    }
}

/// JSON bodies whose rejections are problems too.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct Body<T>(pub T);

/// Path parameters whose rejections are problems.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct PathOf<T>(pub T);

/// Query parameters whose rejections are problems.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct QueryOf<T>(pub T);

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        Self::bad_request(format!("request body: {}", e.body_text()))
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(_: axum::extract::rejection::PathRejection) -> Self {
        Self::not_found()
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request(format!("query: {}", e.body_text()))
    }
}

/// Runs blocking repository work (RocksDB, argon2) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await?
}

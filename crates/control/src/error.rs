//! Errors of the crate, and the one place where they become HTTP answers.
//!
//! Handlers return [`AppError`]; its [`IntoResponse`] picks the status and writes the body
//! `{"error": "<message>"}`. Client mistakes are 4xx with a message naming the field; only
//! faults of the switch itself are 500, and their text goes to the log, not to the client.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tables::TableError;

/// Result alias of the crate (server side).
pub type Result<T, E = ControlError> = std::result::Result<T, E>;

/// Why the API server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("API server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The server thread or its runtime could not be started.
    #[error("cannot start the API server thread: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A refused or failed API request; becomes a JSON error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// Unknown table, port or entry: 404.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what is installed (duplicate key): 409.
    #[error("{0}")]
    Conflict(String),
    /// Anything else the client got wrong (bad value, width, action, full table): 400.
    #[error("{0}")]
    BadRequest(String),
    /// The path exists but not with this method: 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Required body members absent (p4containerflow wording): 400.
    #[error("Missing parameters: {}", .0.join(", "))]
    MissingParams(Vec<String>),
    /// A compound write failed half way and could not be undone: 500, with the message
    /// (the client must know what state it left).
    #[error("{0}")]
    Partial(String),
    /// An upstream endpoint that needs a stage this switch does not have: 501.
    #[error("{0}")]
    Unsupported(String),
    /// A fault of the switch, not of the request: 500, details only in the log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::BadRequest(_) | AppError::MissingParams(_) => StatusCode::BAD_REQUEST,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Partial(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The same error for the p4containerflow endpoints, which (like the Flask controller)
    /// answer every client mistake with 400.
    pub fn into_compat(self) -> AppError {
        match self {
            AppError::NotFound(m) | AppError::Conflict(m) => AppError::BadRequest(m),
            other => other,
        }
    }

    /// Prefixes the message with `ctx` (e.g. "batch op #3"), keeping the kind.
    pub fn context(self, ctx: &str) -> AppError {
        match self {
            AppError::NotFound(m) => AppError::NotFound(format!("{ctx}: {m}")),
            AppError::Conflict(m) => AppError::Conflict(format!("{ctx}: {m}")),
            AppError::BadRequest(m) => AppError::BadRequest(format!("{ctx}: {m}")),
            AppError::Internal(m) => AppError::Internal(format!("{ctx}: {m}")),
            AppError::Partial(m) => AppError::Partial(format!("{ctx}: {m}")),
            AppError::Unsupported(m) => AppError::Unsupported(format!("{ctx}: {m}")),
            AppError::MethodNotAllowed(m) => AppError::MethodNotAllowed(format!("{ctx}: {m}")),
            m @ AppError::MissingParams(_) => AppError::BadRequest(format!("{ctx}: {m}")),
        }
    }
}

/// Unknown table, entry, member or group -> 404; duplicate key, member or group, and a member
/// or group still in use -> 409; everything else -> 400: a table
/// refuses only what it was asked to do, so none of its errors is a server fault.
impl From<TableError> for AppError {
    fn from(e: TableError) -> Self {
        let msg = e.to_string();
        let root = match &e {
            TableError::Batch { source, .. } => source.as_ref(),
            other => other,
        };
        match root {
            TableError::UnknownTable { .. }
            | TableError::NoSuchEntry { .. }
            | TableError::NoSuchMember { .. }
            | TableError::NoSuchGroup { .. } => AppError::NotFound(msg),
            TableError::DuplicateKey { .. }
            | TableError::DuplicateMember { .. }
            | TableError::DuplicateGroup { .. }
            | TableError::MemberInUse { .. }
            | TableError::GroupInUse { .. } => AppError::Conflict(msg),
            _ => AppError::BadRequest(msg),
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        // `body_text` includes serde's path to the offending member ("ops[0].op: unknown
        // variant ..."), which is what names the field for the client.
        AppError::BadRequest(format!("invalid JSON body: {}", r.body_text()))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            AppError::Internal(detail) => {
                tracing::error!(error = %detail, "API request failed inside the switch");
                "internal error (see the switch log)".to_owned()
            }
            AppError::Partial(m) => {
                tracing::error!(error = %m, "API request partly applied");
                m.clone()
            }
            other => {
                tracing::debug!(status = status.as_u16(), error = %other, "API request refused");
                other.to_string()
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

/// JSON body extractor whose refusals (empty, malformed, wrong member types) answer in our
/// error shape instead of axum's plain text. It does not insist on a JSON content type, so
/// `curl -d '{...}'` without `-H` works as it does against the Flask controller.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            AppError::BadRequest(format!("cannot read request body: {}", e.body_text()))
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(AppError::BadRequest(
                "request body is empty; expected a JSON object".into(),
            ));
        }
        let Json(v) = Json::<T>::from_bytes(&bytes)?;
        Ok(AppJson(v))
    }
}

impl<T: serde::Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

//! API errors, rendered as OpenAI-style JSON; every HTTP status the server answers with is
//! decided here.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use engine::EngineError;
use serde::Serialize;

/// Seconds a client is asked to wait before retrying an overloaded or draining server.
const RETRY_AFTER_SECS: &str = "1";

/// An API error: status, OpenAI error type, message and the offending parameter.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<&'static str>,
    /// A request over the context: (prompt tokens, the most one request may have).
    overflow: Option<(usize, usize)>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

/// The `error` object of OpenAI's error responses.
#[derive(Serialize)]
pub struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: u16,
    /// With `exceed_context_size_error` (llama-server's fields): the prompt's tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    n_prompt_tokens: Option<usize>,
    /// With `exceed_context_size_error`: the most tokens one request may have.
    #[serde(skip_serializing_if = "Option::is_none")]
    n_ctx: Option<usize>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            param: None,
            overflow: None,
        }
    }

    /// 400: the request is malformed or cannot be served.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400: the prompt (plus the output asked for) does not fit the context. Typed as
    /// llama-server types it (`exceed_context_size_error`, with `n_prompt_tokens` and `n_ctx`),
    /// which OpenAI clients read as any 400.
    pub fn too_long(message: impl Into<String>, prompt_tokens: usize, limit: usize) -> Self {
        ApiError {
            overflow: Some((prompt_tokens, limit)),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "exceed_context_size_error",
                message,
            )
        }
    }

    /// Names the request field at fault.
    pub fn param(mut self, p: &'static str) -> Self {
        self.param = Some(p);
        self
    }

    /// 401: no valid API key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    }

    /// 403: a valid key without the right to this route.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", message)
    }

    /// 404: no such route or model.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    /// 405: the route exists but not for this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "this endpoint does not accept this HTTP method",
        )
    }

    /// 408: the client did not send its request in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "timeout_error", message)
    }

    /// 413: the body is over `--max-request-bytes`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body exceeds {limit} bytes (--max-request-bytes)"),
        )
    }

    /// 415: a body that is not JSON.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "the request body must be JSON (Content-Type: application/json)",
        )
    }

    /// 503: overloaded, draining or without a working engine; the client may retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable_error",
            message,
        )
    }

    /// 500: the server's own failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error object alone, for an error event inside a stream.
    pub fn detail(&self) -> ErrorDetail<'_> {
        ErrorDetail {
            message: &self.message,
            kind: self.kind,
            param: self.param,
            code: self.status.as_u16(),
            n_prompt_tokens: self.overflow.map(|o| o.0),
            n_ctx: self.overflow.map(|o| o.1),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidRequest(m) => ApiError::bad(m),
            EngineError::TooLong {
                message,
                prompt_tokens,
                limit,
            } => ApiError::too_long(message, prompt_tokens, limit),
            EngineError::Busy(_) => ApiError::bad(e.to_string()),
            EngineError::Overloaded { .. } | EngineError::Closed => {
                ApiError::unavailable(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.detail(),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

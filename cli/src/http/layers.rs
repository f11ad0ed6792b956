//! What every request passes before a handler sees it, outermost first: the concurrency limit
//! (503 + `Retry-After` past `--max-concurrent-requests`), the drain guard (503 while shutting
//! down), the declared body size (413 before anything is read), then, per route, the API key
//! (401/403), and in the handler the [`JsonBody`] extractor (415, 408, 413, 400).

use super::auth::Scope;
use super::error::ApiError;
use super::Shared;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use std::sync::atomic::Ordering;
use tower::ServiceBuilder;

/// Wraps the application in tower's load-shedding concurrency limit: at most `max` requests are
/// handled at once; one more is answered 503 at once instead of waiting.
pub fn concurrency_limit(
    app: axum::Router,
    max: usize,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
            ApiError::unavailable(
                "the server is handling as many requests as it accepts; retry later",
            )
        }))
        .load_shed()
        .concurrency_limit(max.max(1))
        .service(app)
}

/// 503 for every request once the server drains (shutting down), with `Connection: close`.
pub async fn refuse_while_draining(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if st.draining.load(Ordering::Acquire) {
        let mut r = ApiError::unavailable("the server is shutting down").into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    next.run(req).await
}

/// Oversized bodies up to this many times `--max-request-bytes` are read and discarded before
/// the 413, so that a client still writing its body reads the answer instead of a connection
/// reset; larger ones are answered at once, unread.
const DISCARD_FACTOR: u64 = 4;

/// 413 for a body declared larger than `--max-request-bytes`, before authentication and without
/// keeping it. Undeclared (chunked) bodies are bounded while read, by [`JsonBody`].
pub async fn check_declared_length(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let limit = st.limits.max_request_bytes as u64;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(declared) = declared.filter(|&n| n > limit) else {
        return next.run(req).await;
    };
    if declared <= limit.saturating_mul(DISCARD_FACTOR) {
        discard(req.into_body(), st.limits.request_timeout).await;
    }
    let mut r = ApiError::too_large(st.limits.max_request_bytes).into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Reads a body to its end (or until `limit` passes), keeping none of it.
async fn discard(body: Body, limit: std::time::Duration) {
    use http_body_util::BodyExt;
    let mut body = body;
    let drained = tokio::time::timeout(limit, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            "an oversized body was still arriving at the read deadline; not read further"
        );
    }
}

/// Requires a tenant (or admin) key when keys are configured; hands the caller to the handler.
pub async fn require_key(
    State(st): State<Shared>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = st.keys.check(req.headers(), Scope::Tenant)?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Requires the admin key when keys are configured.
pub async fn require_admin(
    State(st): State<Shared>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = st.keys.check(req.headers(), Scope::Admin)?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// A JSON request body: `Content-Type: application/json` required (415), read within
/// `--request-timeout` (408) and `--max-request-bytes` (413), parsed into `T` (400).
pub struct JsonBody<T>(pub T);

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

impl<T: DeserializeOwned> FromRequest<Shared> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &Shared) -> Result<Self, ApiError> {
        if !is_json(&req) {
            return Err(ApiError::unsupported_media_type());
        }
        let limit = st.limits.max_request_bytes;
        let body: Body = req.into_body();
        let read =
            tokio::time::timeout(st.limits.request_timeout, axum::body::to_bytes(body, limit))
                .await
                .map_err(|_| {
                    ApiError::timeout(format!(
                        "the request body did not arrive within {:?} (--request-timeout)",
                        st.limits.request_timeout
                    ))
                })?;
        let bytes = read.map_err(|e| {
            if is_length_limit(&e) {
                ApiError::too_large(limit)
            } else {
                ApiError::bad(format!("reading the request body failed: {e}"))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
    }
}

/// Counts the requests a limit refused (413, 408, 415, 503) for `/metrics`.
pub async fn count_refusals(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status().as_u16();
    if matches!(status, 408 | 413 | 415 | 503) {
        st.metrics.refused();
    }
    response
}

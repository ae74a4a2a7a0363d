//! The checks every JSON endpoint of the pages makes: a live session, and for POSTs the
//! session's CSRF token in `X-CSRF-Token` (pages read it from `<meta name="csrf-token">`) and a
//! JSON body. Every refusal is `{"error": "..."}` with a 4xx status, worded for the user.

// The Err of these checks is the HTTP answer itself, returned at once: no point boxing it.
#![allow(clippy::result_large_err)]

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{HeaderMap, Request, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::http::{json_error, read_body, Body, BodyError};
use crate::random::constant_time_eq;
use crate::session::{self, LoggedIn};

/// The header that carries the CSRF token of JSON POSTs.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session of a JSON request, or the refusal to send.
pub async fn signed_in(app: &App, headers: &HeaderMap) -> Result<LoggedIn, Response<Body>> {
    match session::current(&app.store, headers).await {
        Ok(Some(current)) => Ok(current),
        Ok(None) => {
            Err(json_error(StatusCode::UNAUTHORIZED, "you are not signed in (or your session ended); sign in again"))
        }
        Err(e) => {
            tracing::warn!("api session: {e}");
            Err(json_error(StatusCode::SERVICE_UNAVAILABLE, "the session store is unavailable; try again shortly"))
        }
    }
}

/// The session and body of a JSON POST: signed in, the session's CSRF token in
/// `X-CSRF-Token`, and a JSON content type when there is a body.
pub async fn signed_in_post(app: &App, req: Request<Incoming>) -> Result<(LoggedIn, Bytes), Response<Body>> {
    let current = signed_in(app, req.headers()).await?;
    let sent = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if sent.is_empty() || !constant_time_eq(sent.as_bytes(), current.record.csrf.as_bytes()) {
        return Err(json_error(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token (X-CSRF-Token); reload the page and try again",
        ));
    }
    let json_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    let body = match read_body(req, app.config.max_body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return Err(json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {} bytes", app.config.max_body),
            ))
        }
        Err(BodyError::Broken) => {
            return Err(json_error(StatusCode::BAD_REQUEST, "the request body could not be read"))
        }
    };
    if !body.is_empty() && !json_type {
        return Err(json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send JSON with Content-Type: application/json"));
    }
    Ok((current, body))
}

/// Parses a JSON body, or the 400 that says what is wrong with it.
pub fn parse_json<T: DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, Response<Body>> {
    serde_json::from_slice(body)
        .map_err(|e| json_error(StatusCode::BAD_REQUEST, format!("expected a JSON body like {expected}: {e}")))
}

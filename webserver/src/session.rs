//! The login session of a request: the `sessionid` cookie resolved through Redis, and the cookies
//! that set and clear it.

use std::time::Duration;

use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Response};
use protocol::{SessionKey, SessionRecord, SESSION_COOKIE};

use crate::http::{cookie, is_https, Body};
use crate::store::{Store, StoreError};

/// Cookie holding the CSRF token of anonymous forms (login), double-submit style.
pub const CSRF_COOKIE: &str = "crier_csrf";

/// A logged-in request.
pub struct LoggedIn {
    pub key: SessionKey,
    pub record: SessionRecord,
}

/// Looks the request's session up; `None` when there is no live one.
pub async fn current(store: &Store, headers: &HeaderMap) -> Result<Option<LoggedIn>, StoreError> {
    let Some(key) = cookie(headers, SESSION_COOKIE).and_then(|v| SessionKey::parse(v).ok()) else {
        return Ok(None);
    };
    Ok(store.session(&key).await?.map(|record| LoggedIn { key, record }))
}

/// `Set-Cookie` for a new session: HttpOnly, SameSite=Lax, Secure behind TLS.
pub fn set_session_cookie(response: &mut Response<Body>, key: &SessionKey, ttl: Duration, request: &HeaderMap) {
    let secure = if is_https(request) { "; Secure" } else { "" };
    let value = format!("{SESSION_COOKIE}={key}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}", ttl.as_secs());
    append_cookie(response, &value);
}

pub fn clear_session_cookie(response: &mut Response<Body>, request: &HeaderMap) {
    let secure = if is_https(request) { "; Secure" } else { "" };
    append_cookie(response, &format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}"));
}

/// `Set-Cookie` for the anonymous CSRF token (readable by nobody else: HttpOnly, SameSite=Strict).
pub fn set_csrf_cookie(response: &mut Response<Body>, token: &str, request: &HeaderMap) {
    let secure = if is_https(request) { "; Secure" } else { "" };
    append_cookie(response, &format!("{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}"));
}

fn append_cookie(response: &mut Response<Body>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

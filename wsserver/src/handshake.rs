//! Checks on an upgrade request before anything is upgraded; each failure is an HTTP answer
//! with a status and a plain-text reason, never a crash.

use hyper::{header, Method, Request, StatusCode, Version};
use protocol::{Facility, Flags};

use crate::metrics::Refusal;

/// A refused upgrade: status, reason for the body, and the metrics label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub reason: String,
    pub kind: Refusal,
}

impl Refused {
    pub fn new(status: StatusCode, kind: Refusal, reason: impl Into<String>) -> Refused {
        Refused { status, reason: reason.into(), kind }
    }

    pub fn bad_request(reason: impl Into<String>) -> Refused {
        Refused::new(StatusCode::BAD_REQUEST, Refusal::BadRequest, reason)
    }
}

/// What a valid upgrade request asks for.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    pub facility: Facility,
    pub flags: Flags,
    /// Present when the client opted in to recovery (`recover`).
    pub recover: Option<protocol::Recover>,
}

/// Validates method, version, upgrade headers, key, version and the facility; the Origin and
/// identity are checked by the caller.
pub fn check<B>(req: &Request<B>, url_prefix: &str) -> Result<UpgradeRequest, Refused> {
    if req.method() != Method::GET {
        return Err(Refused::bad_request("HTTP method must be a GET"));
    }
    if req.version() != Version::HTTP_11 {
        return Err(Refused::bad_request("HTTP server protocol must be 1.1"));
    }
    let upgrade = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !upgrade.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket")) {
        return Err(Refused::bad_request("Client does not wish to upgrade to a websocket"));
    }
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).map(|v| v.as_bytes()).unwrap_or(b"");
    if key.is_empty() {
        return Err(Refused::bad_request("Sec-WebSocket-Key header is missing/empty"));
    }
    if !valid_key(key) {
        return Err(Refused::bad_request("Invalid key: Sec-WebSocket-Key must be 16 base64-encoded bytes"));
    }
    match req.headers().get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) {
        Some(b"13") => {}
        None => {
            return Err(Refused::new(
                StatusCode::UPGRADE_REQUIRED,
                Refusal::BadRequest,
                "Sec-WebSocket-Version header is missing; use 13",
            ))
        }
        Some(_) => {
            return Err(Refused::new(
                StatusCode::UPGRADE_REQUIRED,
                Refusal::BadRequest,
                "Unsupported WebSocket Version; use 13",
            ))
        }
    }
    let facility =
        Facility::from_path(req.uri().path(), url_prefix).map_err(|e| Refused::bad_request(e.to_string()))?;
    let query = req.uri().query().unwrap_or("");
    let flags = Flags::from_query(query);
    let recover = protocol::Recover::from_query(query);
    Ok(UpgradeRequest { facility, flags, recover })
}

/// A key is 24 base64 characters ending in `==` (16 bytes).
fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// Checks the Origin header against the allow-list; an empty list allows all.
pub fn check_origin<B>(req: &Request<B>, allowed: &[String]) -> Result<(), Refused> {
    if allowed.is_empty() {
        return Ok(());
    }
    match req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) => Ok(()),
        // Non-browser clients send no Origin; browsers always do, so this cannot be abused
        // for cross-site hijacking.
        None => Ok(()),
        Some(_) => Err(Refused::new(StatusCode::FORBIDDEN, Refusal::Origin, "Origin not allowed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str) -> hyper::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
    }

    #[test]
    fn answers_for_bad_upgrades() {
        let ok = check(&req("GET", "/ws/chat?subscribe-broadcast").body(()).unwrap(), "/ws/").unwrap();
        assert_eq!(ok.facility.as_str(), "chat");
        let status = |r: Request<()>| check(&r, "/ws/").unwrap_err().status;
        assert_eq!(status(req("POST", "/ws/chat").body(()).unwrap()), StatusCode::BAD_REQUEST);
        assert_eq!(status(req("GET", "/ws/a%01").body(()).unwrap()), StatusCode::BAD_REQUEST);
        let mut r = req("GET", "/ws/c").body(()).unwrap();
        r.headers_mut().insert("sec-websocket-version", "8".parse().unwrap());
        assert_eq!(status(r), StatusCode::UPGRADE_REQUIRED);
        let mut r = req("GET", "/ws/c").body(()).unwrap();
        r.headers_mut().remove("sec-websocket-version");
        assert_eq!(status(r), StatusCode::UPGRADE_REQUIRED);
        let mut r = req("GET", "/ws/c").body(()).unwrap();
        r.headers_mut().insert("sec-websocket-key", "short".parse().unwrap());
        assert_eq!(status(r), StatusCode::BAD_REQUEST);
        let mut r = req("GET", "/ws/c").body(()).unwrap();
        r.headers_mut().remove("upgrade");
        assert_eq!(check(&r, "/ws/").unwrap_err().reason, "Client does not wish to upgrade to a websocket");
    }

    #[test]
    fn origin_allow_list() {
        let allowed = vec!["https://example.com".to_owned()];
        let with = |o: &str| req("GET", "/ws/c").header("origin", o).body(()).unwrap();
        assert!(check_origin(&with("https://example.com"), &allowed).is_ok());
        assert_eq!(check_origin(&with("https://evil.example"), &allowed).unwrap_err().status, StatusCode::FORBIDDEN);
        assert!(check_origin(&with("https://evil.example"), &[]).is_ok());
    }
}

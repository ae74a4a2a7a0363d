//! Small HTTP helpers: response builders (JSON errors, HTML, redirects), body reading with a
//! size limit, cookies and the request's scheme.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Request, Response, StatusCode};

pub type Body = Full<Bytes>;

fn with_type(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    // Room for this header and one more (WWW-Authenticate, Set-Cookie): a default map reserves
    // space for six, an allocation per response on the publish API's hot path.
    *response.headers_mut() = HeaderMap::with_capacity(2);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `{"error": "<message>"}` with `status`.
pub fn json_error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_text(status, value.to_string())
}

/// A body that is already JSON text.
pub fn json_text(status: StatusCode, body: String) -> Response<Body> {
    with_type(status, "application/json", body)
}

pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", body.into())
}

pub fn html(status: StatusCode, body: String) -> Response<Body> {
    with_type(status, "text/html; charset=utf-8", body)
}

/// 303 See Other to `location`.
pub fn see_other(location: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Why a body could not be read.
pub enum BodyError {
    TooLarge,
    Broken,
}

/// Reads the whole body, refusing more than `limit` bytes (by Content-Length or while reading).
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, BodyError> {
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

pub use service::http::cookie;

/// True when the client reached us over TLS, as a trusted proxy reports it in
/// `X-Forwarded-Proto` ([`crate::routes::route`] drops the header from any other peer).
pub fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")))
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let key = url_decode(it.next().unwrap_or(b""));
            let value = url_decode(it.next().unwrap_or(b""));
            (key, value)
        })
        .collect()
}

/// The first value of `name` in decoded form fields.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn url_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
                match (hex(raw.get(i + 1)), hex(raw.get(i + 2))) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        let f = form_fields(b"username=ann+b&password=p%26w%3D&x");
        assert_eq!(field(&f, "username"), Some("ann b"));
        assert_eq!(field(&f, "password"), Some("p&w="));
        assert_eq!(field(&f, "x"), Some(""));
        assert_eq!(form_fields(b"a=%zz%")[0].1, "%zz%");
    }

    #[test]
    fn html_escaping() {
        assert_eq!(escape_html("<a href=\"x\">'&"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;");
    }
}

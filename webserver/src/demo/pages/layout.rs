//! The page shell and the security headers every page carries.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::http::{escape_html, html, Body};

/// Content-Security-Policy of every page: scripts and styles only from our own origin,
/// websockets to our own host.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// A whole HTML document. `title` is escaped; `body` must already be safe HTML. `scripts` are
/// paths under /static.
pub fn page(status: StatusCode, title: &str, body: &str, scripts: &[&str]) -> Response<Body> {
    page_with_meta(status, title, body, scripts, &[])
}

/// Like [`page`], with `<meta name=.. content=..>` elements (values escaped) through which the
/// scripts get their settings, since no inline script runs. Every page has the toast region
/// (`#toasts`, a polite live region) that site notices and messages appear in.
pub fn page_with_meta(
    status: StatusCode,
    title: &str,
    body: &str,
    scripts: &[&str],
    meta: &[(&str, &str)],
) -> Response<Body> {
    let scripts: String = scripts.iter().map(|s| format!("<script src=\"/static/{s}\" defer></script>\n")).collect();
    let meta: String = meta
        .iter()
        .map(|(name, content)| format!("<meta name=\"{}\" content=\"{}\">\n", escape_html(name), escape_html(content)))
        .collect();
    let document = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n{meta}<title>{title} · Crier</title>\n\
<link rel=\"icon\" href=\"data:,\">\n<link rel=\"stylesheet\" href=\"/static/crier.css\">\n{scripts}</head>\n<body>\n{body}\n\
<div id=\"toasts\" class=\"toasts\" aria-live=\"polite\" aria-label=\"Notifications\"></div>\n</body>\n</html>\n",
        title = escape_html(title),
    );
    secure(html(status, document))
}

/// Adds the security headers of HTML answers.
pub fn secure(mut response: Response<Body>) -> Response<Body> {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

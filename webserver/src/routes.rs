//! Maps method and path to a handler: the product's API ([`crate::api`]) and the ws4redis
//! client script here, everything else to the demo ([`crate::demo::routes`]).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::api;
use crate::app::App;
use crate::http::{json_error, text, Body};

/// The ws4redis-compatible JS client.
const WS4REDIS_JS: &str = include_str!("../static/ws4redis.js");
/// Content type of the scripts.
pub const JS: &str = "text/javascript; charset=utf-8";

/// Answers one request from `peer`. Forwarded headers count only from trusted proxies.
pub async fn route(
    app: Arc<App>,
    peer: service::listen::Peer,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    service::proxy::drop_untrusted_forwarding(&app.config.trusted_proxies, peer, req.headers_mut());
    let metrics = app.metrics.clone();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => api::health::healthz(),
        (&Method::GET, "/readyz") => api::health::readiness(&app).await,
        (&Method::POST, "/api/publish") => api::publish::publish(app, req).await,
        (_, "/api/publish") => method_not_allowed("POST"),
        (&Method::GET, p) if p.starts_with("/api/presence/") => {
            let facility = p["/api/presence/".len()..].to_owned();
            api::presence::presence(app, req, &facility).await
        }
        (&Method::GET, "/static/ws4redis.js") => asset(WS4REDIS_JS, JS),
        _ => match crate::demo::routes::route(app, req).await {
            Some(response) => response,
            None if path.starts_with("/api/") => not_found_api(&method, &path),
            None => text(StatusCode::NOT_FOUND, "not found"),
        },
    };
    metrics.answered(response.status());
    Ok(response)
}

/// The 404 of an unknown `/api/` path, in JSON like every API answer.
pub fn not_found_api(method: &Method, path: &str) -> Response<Body> {
    json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {method} {}", service::Escaped(path)))
}

/// The 405 of a known path asked with the wrong method.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = json_error(StatusCode::METHOD_NOT_ALLOWED, format!("use {allow}"));
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// A static file, cacheable for five minutes.
pub fn asset(content: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::OK, content);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

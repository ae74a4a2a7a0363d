//! Health and metrics: `/healthz` (the process answers), `/readyz` (Redis answers) and
//! `/metrics` (Prometheus text). `/healthz` and `/readyz` are also on the main listener;
//! `/metrics` only on the admin listener (`--admin-listen`).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::app::App;
use crate::http::{text, Body};

/// The admin listener: `/metrics`, `/healthz`, `/readyz`.
pub async fn admin(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let response = match req.uri().path() {
        "/metrics" => {
            let mut r = text(StatusCode::OK, app.metrics.render());
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            r
        }
        "/healthz" => healthz(),
        "/readyz" => readiness(&app).await,
        _ => text(StatusCode::NOT_FOUND, "not found: /metrics, /healthz, /readyz"),
    };
    Ok(response)
}

/// `/healthz`: the process runs and answers.
pub fn healthz() -> Response<Body> {
    text(StatusCode::OK, "ok")
}

/// `/readyz`: 200 while Redis answers a PING, 503 otherwise.
pub async fn readiness(app: &App) -> Response<Body> {
    if app.store.ping().await {
        text(StatusCode::OK, "ready")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable")
    }
}

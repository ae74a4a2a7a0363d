//! The admin endpoint: `/healthz` (the process runs), `/readyz` (Redis reachable, on a cluster
//! every subscribed channel's shard with a master, and not draining) and `/metrics` (Prometheus text).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};

use crate::app::App;
use crate::upgrade::{plain, Body};

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let response = match req.uri().path() {
        "/healthz" => plain(StatusCode::OK, "ok"),
        "/readyz" => {
            if app.draining.load(Ordering::Relaxed) {
                plain(StatusCode::SERVICE_UNAVAILABLE, "draining")
            } else if app.metrics.redis_up.load(Ordering::Relaxed) != 1 {
                plain(StatusCode::SERVICE_UNAVAILABLE, "redis pub/sub not connected")
            } else if app.metrics.redis_unplaced_channels.load(Ordering::Relaxed) > 0 {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "a subscribed channel's redis cluster shard has no reachable master",
                )
            } else {
                plain(StatusCode::OK, "ready")
            }
        }
        "/metrics" => {
            let mut r = plain(StatusCode::OK, app.metrics.render());
            r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; version=0.0.4"));
            r
        }
        _ => plain(StatusCode::NOT_FOUND, "not found: /healthz, /readyz, /metrics"),
    };
    Ok(response)
}

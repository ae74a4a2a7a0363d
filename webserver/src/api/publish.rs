//! `POST /api/publish`: bearer-token authenticated publishing to any audience.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use protocol::{PublishError, PublishRequest};

use crate::app::App;
use crate::http::{json_error, json_text, read_body, Body, BodyError};
use crate::random::constant_time_eq;

pub async fn publish(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let Some(expected) = app.config.publish_token.as_deref() else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "publishing is disabled: no publish token is configured");
    };
    if let Err(problem) = check_bearer(&req, expected) {
        let mut response = json_error(StatusCode::UNAUTHORIZED, problem);
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return response;
    }
    let body = match read_body(req, app.config.max_body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return json_error(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {} bytes", app.config.max_body))
        }
        Err(BodyError::Broken) => return json_error(StatusCode::BAD_REQUEST, "request body could not be read"),
    };
    let publication =
        match PublishRequest::from_json(&body).and_then(|r| r.into_publication(&app.store.prefix, app.config.expire)) {
            Ok(p) => p,
            Err(e @ PublishError::TooManyChannels { .. }) => return json_error(StatusCode::PAYLOAD_TOO_LARGE, e),
            Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
        };
    let published = app
        .store
        .publish(&publication.facility, &publication.channels, publication.message.as_bytes(), publication.expire)
        .await;
    match published {
        Ok(crate::store::Published { receivers, .. }) => {
            app.metrics.publishes.fetch_add(1, Ordering::Relaxed);
            app.metrics.publish_channels.fetch_add(publication.channels.len() as u64, Ordering::Relaxed);
            app.metrics.publish_receivers.fetch_add(receivers, Ordering::Relaxed);
            // Two numbers: formatted directly (this is the hot path of the publish API).
            let body = format!("{{\"channels\":{},\"receivers\":{receivers}}}", publication.channels.len());
            json_text(StatusCode::OK, body)
        }
        Err(e) => {
            tracing::warn!("publish failed: {e}");
            app.metrics.publish_failures.fetch_add(1, Ordering::Relaxed);
            json_error(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable, message not published; retry later")
        }
    }
}

/// Checks `Authorization: Bearer <token>` in constant time.
fn check_bearer<B>(req: &Request<B>, expected: &str) -> Result<(), String> {
    let token = service::http::bearer_token(req.headers()).map_err(|e| e.to_string())?;
    if constant_time_eq(token.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err("wrong publish token".to_owned())
    }
}

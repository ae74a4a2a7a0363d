//! `GET /api/presence/<facility>`: the users online on a facility, for logged-in users or the
//! publish token. Reads the sorted set wsserver maintains (see `protocol::presence`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use protocol::Facility;

use crate::app::App;
use crate::http::{json, json_error, Body};
use crate::random::constant_time_eq;
use crate::session;

pub async fn presence(app: Arc<App>, req: Request<Incoming>, raw_facility: &str) -> Response<Body> {
    let facility = match Facility::parse_encoded(raw_facility) {
        Ok(f) => f,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("facility: {e}")),
    };
    if !allowed(&app, &req).await {
        return json_error(StatusCode::UNAUTHORIZED, "sign in or send the publish token as a bearer token");
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    match app.store.live_members(&app.store.prefix.presence(&facility), now).await {
        Ok(members) => json(
            StatusCode::OK,
            &serde_json::json!({ "facility": facility.as_str(), "users": protocol::presence::users_of(&members) }),
        ),
        Err(e) => {
            tracing::warn!("presence: {e}");
            json_error(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable; retry later")
        }
    }
}

async fn allowed(app: &App, req: &Request<Incoming>) -> bool {
    let bearer =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if let (Some(sent), Some(token)) = (bearer, app.config.publish_token.as_deref()) {
        return constant_time_eq(sent.trim().as_bytes(), token.as_bytes());
    }
    matches!(session::current(&app.store, req.headers()).await, Ok(Some(_)))
}

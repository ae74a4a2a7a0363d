//! `GET /api/presence/<facility>`: the users online on a facility, for logged-in users or the
//! publish token. Reads the sorted set wsserver maintains (see `protocol::presence`).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
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
    match app.store.live_members(&app.store.prefix.presence(&facility), service::clock::now_ms()).await {
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
    let bearer = service::http::bearer_token(req.headers()).ok();
    if let (Some(sent), Some(token)) = (bearer, app.config.publish_token.as_deref()) {
        return constant_time_eq(sent.as_bytes(), token.as_bytes());
    }
    matches!(session::current(&app.store, req.headers()).await, Ok(Some(_)))
}

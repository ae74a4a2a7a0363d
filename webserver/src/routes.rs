//! Maps method and path to a handler.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::app::App;
use crate::http::{json_error, text, Body};
use crate::pages;

const CSS: &str = include_str!("../static/crier.css");
/// The ws4redis-compatible JS client, and the scripts of the pages.
const WS4REDIS_JS: &str = include_str!("../static/ws4redis.js");
const CRIER_JS: &str = include_str!("../static/crier.js");
const LOBBY_JS: &str = include_str!("../static/lobby.js");
const GAME_JS: &str = include_str!("../static/game.js");
const JS: &str = "text/javascript; charset=utf-8";

pub async fn route(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let metrics_handle = app.metrics.clone();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => readiness(&app).await,
        (&Method::POST, "/api/publish") => crate::publish_api::publish(app, req).await,
        (_, "/api/publish") => method_not_allowed("POST"),
        (&Method::GET, p) if p.starts_with("/api/presence/") => {
            let facility = p["/api/presence/".len()..].to_owned();
            crate::presence_api::presence(app, req, &facility).await
        }
        (&Method::GET, "/login") => pages::login::form(&app, StatusCode::OK, None, req.headers()),
        (&Method::POST, "/login") => pages::login::login(app, req).await,
        (&Method::POST, "/logout") => pages::login::logout(app, req).await,
        (&Method::GET, "/") => pages::lobby::lobby(app, req.headers()).await,
        (&Method::GET, p) if p.starts_with("/game/") => {
            let id = p["/game/".len()..].to_owned();
            pages::game::game(app, req.headers(), &id).await
        }
        (&Method::GET, "/admin") => pages::admin::page(app, &req).await,
        (&Method::POST, "/admin/notices") => pages::admin::send_notice(app, req).await,
        (&Method::POST, "/api/invite") => crate::lobby_api::invite(app, req).await,
        (_, "/api/invite") => method_not_allowed("POST"),
        (&Method::GET, "/api/invitations") => crate::lobby_api::list(app, req).await,
        (_, "/api/invitations") => method_not_allowed("GET"),
        (_, p) if p.starts_with("/api/invitations/") => {
            let rest = p["/api/invitations/".len()..].to_owned();
            match (rest.split_once('/'), &method) {
                (Some((id, "accept")), &Method::POST) => crate::lobby_api::answer(app, req, id, true).await,
                (Some((id, "decline")), &Method::POST) => crate::lobby_api::answer(app, req, id, false).await,
                (Some((_, "accept" | "decline")), _) => method_not_allowed("POST"),
                _ => not_found_api(&method, &path),
            }
        }
        (_, p) if p.starts_with("/api/games/") => {
            let rest = p["/api/games/".len()..].to_owned();
            match (rest.split_once('/'), &method) {
                (None, &Method::GET) => crate::game_api::state(app, req, &rest).await,
                (None, _) => method_not_allowed("GET"),
                (Some((id, "moves")), &Method::POST) => crate::game_api::play(app, req, id).await,
                (Some((_, "moves")), _) => method_not_allowed("POST"),
                _ => not_found_api(&method, &path),
            }
        }
        (&Method::GET, "/static/crier.css") => asset(CSS, "text/css; charset=utf-8"),
        (&Method::GET, "/static/ws4redis.js") => asset(WS4REDIS_JS, JS),
        (&Method::GET, "/static/crier.js") => asset(CRIER_JS, JS),
        (&Method::GET, "/static/lobby.js") => asset(LOBBY_JS, JS),
        (&Method::GET, "/static/game.js") => asset(GAME_JS, JS),
        _ if path.starts_with("/api/") => {
            json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {method} {}", service::Escaped(&path)))
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    };
    app_metrics(&response, &metrics_handle);
    Ok(response)
}

fn app_metrics(response: &Response<Body>, metrics: &crate::metrics::Metrics) {
    metrics.answered(response.status());
}

/// The admin listener: `/metrics`, `/healthz`, `/readyz`.
pub async fn admin(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let response = match req.uri().path() {
        "/metrics" => {
            let mut r = text(StatusCode::OK, app.metrics.render());
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            r
        }
        "/healthz" => text(StatusCode::OK, "ok"),
        "/readyz" => readiness(&app).await,
        _ => text(StatusCode::NOT_FOUND, "not found: /metrics, /healthz, /readyz"),
    };
    Ok(response)
}

async fn readiness(app: &App) -> Response<Body> {
    if app.store.ping().await {
        text(StatusCode::OK, "ready")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable")
    }
}

fn not_found_api(method: &Method, path: &str) -> Response<Body> {
    json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {method} {}", service::Escaped(path)))
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = json_error(StatusCode::METHOD_NOT_ALLOWED, format!("use {allow}"));
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn asset(content: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::OK, content);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

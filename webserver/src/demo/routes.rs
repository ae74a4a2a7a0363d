//! The demo's routes: its pages, their JSON endpoints and scripts. Static URLs stay
//! `/static/<name>` whatever folder the file lives in.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::app::App;
use crate::demo::{game_api, lobby_api, pages};
use crate::http::Body;
use crate::routes::{asset, method_not_allowed, not_found_api, JS};

const CSS: &str = include_str!("../../static/demo/crier.css");
const CRIER_JS: &str = include_str!("../../static/demo/crier.js");
const LOBBY_JS: &str = include_str!("../../static/demo/lobby.js");
const GAME_JS: &str = include_str!("../../static/demo/game.js");

/// The demo's answer to `req`, or `None` when the path is none of the demo's.
pub async fn route(app: Arc<App>, req: Request<Incoming>) -> Option<Response<Body>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = match (&method, path.as_str()) {
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
        (&Method::POST, "/api/invite") => lobby_api::invite(app, req).await,
        (_, "/api/invite") => method_not_allowed("POST"),
        (&Method::GET, "/api/invitations") => lobby_api::list(app, req).await,
        (_, "/api/invitations") => method_not_allowed("GET"),
        (_, p) if p.starts_with("/api/invitations/") => {
            let rest = p["/api/invitations/".len()..].to_owned();
            match (rest.split_once('/'), &method) {
                (Some((id, "accept")), &Method::POST) => lobby_api::answer(app, req, id, true).await,
                (Some((id, "decline")), &Method::POST) => lobby_api::answer(app, req, id, false).await,
                (Some((_, "accept" | "decline")), _) => method_not_allowed("POST"),
                _ => not_found_api(&method, &path),
            }
        }
        (_, p) if p.starts_with("/api/games/") => {
            let rest = p["/api/games/".len()..].to_owned();
            match (rest.split_once('/'), &method) {
                (None, &Method::GET) => game_api::state(app, req, &rest).await,
                (None, _) => method_not_allowed("GET"),
                (Some((id, "moves")), &Method::POST) => game_api::play(app, req, id).await,
                (Some((_, "moves")), _) => method_not_allowed("POST"),
                _ => not_found_api(&method, &path),
            }
        }
        (&Method::GET, "/static/crier.css") => asset(CSS, "text/css; charset=utf-8"),
        (&Method::GET, "/static/crier.js") => asset(CRIER_JS, JS),
        (&Method::GET, "/static/lobby.js") => asset(LOBBY_JS, JS),
        (&Method::GET, "/static/game.js") => asset(GAME_JS, JS),
        _ => return None,
    };
    Some(response)
}

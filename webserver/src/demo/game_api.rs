//! A game's JSON endpoints, for its two players only.
//!
//! - `GET /api/games/<id>`: `{"game": {...}}`, the state the game page renders from (so a
//!   reload restores the board).
//! - `POST /api/games/<id>/moves` `{"square": 0..8}`: validated here (player of this game, game
//!   not over, square on the board, turn order, square free); 200 `{"game": {...}}`, or
//!   `{"error": ...}` with 400/403/404/409 saying why not.
//!
//! Each accepted move is sent as `{"type": "game", "game": {...}, "by": "<player>", "square": n}`
//! to the two players' user channels on the facility `game/<id>`, never broadcast, and kept
//! there as the channel's last message for the game's lifetime: a page that (re)connects gets
//! the current state first. Messages carry the whole state, so replays are harmless.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::app::App;
use crate::demo::checks::{parse_json, signed_in, signed_in_post};
use crate::demo::game::{Game, GameId, MoveError};
use crate::demo::lobby_api::unavailable;
use crate::http::{json, json_error, Body};
use service::clock::now_ms;

const EXPIRED: &str = "there is no such game: it never existed, or it expired after a long time without moves";

pub async fn state(app: Arc<App>, req: Request<Incoming>, raw_id: &str) -> Response<Body> {
    let current = match signed_in(&app, req.headers()).await {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    let Some(id) = GameId::parse(raw_id) else {
        return json_error(StatusCode::NOT_FOUND, EXPIRED);
    };
    match app.store.game(&id).await {
        Ok(Some((_, game))) if game.is_player(&current.record.user) => {
            json(StatusCode::OK, &serde_json::json!({ "game": game.view() }))
        }
        Ok(Some(_)) => json_error(StatusCode::FORBIDDEN, "you are not a player of this game"),
        Ok(None) => json_error(StatusCode::NOT_FOUND, EXPIRED),
        Err(e) => unavailable("game", e),
    }
}

#[derive(serde::Deserialize)]
struct MoveRequest {
    square: serde_json::Value,
}

pub async fn play(app: Arc<App>, req: Request<Incoming>, raw_id: &str) -> Response<Body> {
    let (current, body) = match signed_in_post(&app, req).await {
        Ok(x) => x,
        Err(refusal) => return refusal,
    };
    let me = &current.record.user;
    let request: MoveRequest = match parse_json(&body, r#"{"square": 4}"#) {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    let Some(square) = request.square.as_i64() else {
        return json_error(StatusCode::BAD_REQUEST, "square must be a number from 0 to 8 (row by row)");
    };
    let Some(id) = GameId::parse(raw_id) else {
        return json_error(StatusCode::NOT_FOUND, EXPIRED);
    };
    // Optimistic concurrency: if the other player's move lands between our read and write, the
    // move is checked again against the new state (and is then usually not our turn).
    for _ in 0..3 {
        let (raw, mut game) = match app.store.game(&id).await {
            Ok(Some(found)) => found,
            Ok(None) => return json_error(StatusCode::NOT_FOUND, EXPIRED),
            Err(e) => return unavailable("move", e),
        };
        if let Err(refusal) = game.play(me, square, now_ms()) {
            return json_error(move_status(&refusal), refusal);
        }
        match app.store.replace_game(&raw, &game, app.config.game_ttl).await {
            Ok(true) => {
                publish(&app, &game, me.as_str(), square).await;
                return json(StatusCode::OK, &serde_json::json!({ "game": game.view() }));
            }
            Ok(false) => continue,
            Err(e) => return unavailable("move", e),
        }
    }
    json_error(StatusCode::CONFLICT, "the game changed meanwhile; reload the page")
}

/// Sends the new state to both players. A failure is logged only: the move is stored, and a
/// page fetches the state when it loads and when its socket cannot recover after a reconnect.
async fn publish(app: &App, game: &Game, by: &str, square: i64) {
    let facility = game.id.facility();
    let channels = [app.store.prefix.user(&game.x, &facility), app.store.prefix.user(&game.o, &facility)];
    let message = serde_json::json!({ "type": "game", "game": game.view(), "by": by, "square": square }).to_string();
    if let Err(e) = app.store.publish(&facility, &channels, message.as_bytes(), app.config.game_ttl.as_secs()).await {
        tracing::warn!(game = %game.id, "move not published: {e}");
    }
}

/// The HTTP status of a refused move.
fn move_status(refusal: &MoveError) -> StatusCode {
    match refusal {
        MoveError::NotAPlayer => StatusCode::FORBIDDEN,
        MoveError::NoSuchSquare(_) => StatusCode::BAD_REQUEST,
        MoveError::GameOver(_) | MoveError::NotYourTurn(_) | MoveError::Taken { .. } => StatusCode::CONFLICT,
    }
}

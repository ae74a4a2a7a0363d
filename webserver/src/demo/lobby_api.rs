//! The lobby's JSON endpoints: invite a player, list one's invitations, accept or decline.
//!
//! - `POST /api/invite` `{"to": "bob"}`: the invitee must exist, be in the lobby (presence) and
//!   not be oneself; one open invitation per pair. 201 `{"invitation": {...}}`.
//! - `GET /api/invitations`: `{"invitations": [...]}`, sent and received, still alive.
//! - `POST /api/invitations/<id>/accept` | `/decline`: only the invitee, only once. Accepting
//!   creates the game; 200 `{"invitation": {...}, "url": "/game/<id>"}`.
//!
//! Every change is sent as `{"type": "invitation", "invitation": {...}}` to both players' user
//! channels on the `lobby` facility (never stored: the lobby asks `GET /api/invitations` on
//! every (re)connect), so the inviter's page learns of the answer and, on accept, opens the game.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use protocol::Name;

use crate::app::App;
use crate::demo::checks::{parse_json, signed_in, signed_in_post};
use crate::demo::game::{Game, GameId};
use crate::demo::lobby::{lobby_facility, AnswerError, Invitation, InvitationId, InvitationStatus};
use crate::http::{json, json_error, Body};
use service::clock::now_ms;

/// Open invitations one player may have sent at a time.
pub const MAX_OPEN_INVITATIONS: usize = 10;

#[derive(serde::Deserialize)]
struct InviteRequest {
    to: String,
}

pub async fn invite(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let (current, body) = match signed_in_post(&app, req).await {
        Ok(x) => x,
        Err(refusal) => return refusal,
    };
    let request: InviteRequest = match parse_json(&body, r#"{"to": "<player>"}"#) {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    let me = &current.record.user;
    let Ok(to) = Name::parse(request.to.trim()) else {
        return json_error(StatusCode::BAD_REQUEST, "\"to\" must be a player's name");
    };
    if &to == me {
        return json_error(StatusCode::BAD_REQUEST, "you cannot invite yourself; pick another player");
    }
    match app.store.account(&to).await {
        Ok(Some(_)) => {}
        Ok(None) => return json_error(StatusCode::NOT_FOUND, format!("there is no player called {to}")),
        Err(e) => return unavailable("invite", e),
    }
    let now = now_ms();
    match app.store.live_members(&app.store.prefix.presence(&lobby_facility()), now).await {
        Ok(members) if protocol::presence::users_of(&members).iter().any(|u| u == to.as_str()) => {}
        Ok(_) => return json_error(StatusCode::CONFLICT, format!("{to} is not in the lobby right now")),
        Err(e) => return unavailable("invite", e),
    }
    let existing = match app.store.invitations_of(me, now).await {
        Ok(list) => list,
        Err(e) => return unavailable("invite", e),
    };
    let open: Vec<&Invitation> = existing.iter().filter(|i| i.is_pending()).collect();
    if open.iter().any(|i| &i.from == me && i.to == to) {
        return json_error(StatusCode::CONFLICT, format!("you already invited {to}; wait for their answer"));
    }
    if open.iter().any(|i| i.from == to && &i.to == me) {
        return json_error(StatusCode::CONFLICT, format!("{to} already invited you: accept their invitation instead"));
    }
    if open.iter().filter(|i| &i.from == me).count() >= MAX_OPEN_INVITATIONS {
        return json_error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("you have {MAX_OPEN_INVITATIONS} unanswered invitations; wait for answers first"),
        );
    }
    let invitation = Invitation::new(me.clone(), to, now, app.config.invitation_ttl.as_millis() as u64);
    if let Err(e) = app.store.create_invitation(&invitation, app.config.invitation_ttl).await {
        return unavailable("invite", e);
    }
    tracing::info!(from = %invitation.from, to = %invitation.to, "invitation sent");
    notify(&app, &invitation, now).await;
    json(StatusCode::CREATED, &serde_json::json!({ "invitation": invitation.view(now) }))
}

pub async fn list(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let current = match signed_in(&app, req.headers()).await {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    let now = now_ms();
    match app.store.invitations_of(&current.record.user, now).await {
        Ok(list) => json(
            StatusCode::OK,
            &serde_json::json!({ "invitations": list.iter().map(|i| i.view(now)).collect::<Vec<_>>() }),
        ),
        Err(e) => unavailable("invitations", e),
    }
}

/// Accepts (creating the game) or declines an invitation.
pub async fn answer(app: Arc<App>, req: Request<Incoming>, raw_id: &str, accept: bool) -> Response<Body> {
    let (current, _body) = match signed_in_post(&app, req).await {
        Ok(x) => x,
        Err(refusal) => return refusal,
    };
    let me = &current.record.user;
    let Some(id) = InvitationId::parse(raw_id) else {
        return json_error(StatusCode::NOT_FOUND, "there is no such invitation");
    };
    // Optimistic concurrency: a second click, or the other tab, loses cleanly.
    for _ in 0..3 {
        let (raw, invitation) = match app.store.invitation(&id).await {
            Ok(Some(found)) => found,
            Ok(None) => return json_error(StatusCode::NOT_FOUND, "this invitation has expired; ask for a new one"),
            Err(e) => return unavailable("answer", e),
        };
        if let Err(refusal) = invitation.check_answer(me) {
            return json_error(answer_status(&refusal), refusal);
        }
        let now = now_ms();
        let mut answered = invitation.clone();
        if accept {
            let game = Game::new(GameId::random(), invitation.from.clone(), invitation.to.clone(), now);
            match app.store.create_game(&game, app.config.game_ttl).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return unavailable("accept", e),
            }
            answered.status = InvitationStatus::Accepted;
            answered.game = Some(game.id);
        } else {
            answered.status = InvitationStatus::Declined;
        }
        match app.store.replace_invitation(&raw, &answered).await {
            Ok(true) => {
                tracing::info!(from = %answered.from, to = %answered.to, accept, "invitation answered");
                notify(&app, &answered, now).await;
                let url = answered.game.as_ref().map(GameId::url);
                return json(StatusCode::OK, &serde_json::json!({ "invitation": answered.view(now), "url": url }));
            }
            Ok(false) => {
                if let Some(game) = &answered.game {
                    let _ = app.store.delete_game(game).await;
                }
            }
            Err(e) => return unavailable("answer", e),
        }
    }
    json_error(StatusCode::CONFLICT, "this invitation changed meanwhile; reload the page")
}

/// Sends the invitation's new state to both players' lobby pages. A failure is logged only:
/// the change is stored, and pages fetch the list again when they reconnect.
async fn notify(app: &App, invitation: &Invitation, now: u64) {
    let facility = lobby_facility();
    let channels =
        [app.store.prefix.user(&invitation.from, &facility), app.store.prefix.user(&invitation.to, &facility)];
    let message = serde_json::json!({ "type": "invitation", "invitation": invitation.view(now) }).to_string();
    if let Err(e) = app.store.publish(&facility, &channels, message.as_bytes(), 0).await {
        tracing::warn!("invitation notice not published: {e}");
    }
}

pub(crate) fn unavailable(what: &str, e: crate::store::StoreError) -> Response<Body> {
    tracing::warn!("{what}: {e}");
    json_error(StatusCode::SERVICE_UNAVAILABLE, "the game store is unavailable; try again shortly")
}

/// The HTTP status of a refused answer.
fn answer_status(refusal: &AnswerError) -> StatusCode {
    match refusal {
        AnswerError::NotYours(_) => StatusCode::FORBIDDEN,
        AnswerError::AlreadyAnswered(_) => StatusCode::CONFLICT,
    }
}

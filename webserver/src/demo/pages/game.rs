//! `GET /game/<id>`: a tic-tac-toe game, for its two players. The board is rendered from the
//! stored state (so a reload restores it, even without JavaScript); `static/demo/game.js` then
//! keeps it live from `GET /api/games/<id>` and the game's websocket, and posts the moves.

use std::sync::Arc;

use hyper::{HeaderMap, Response, StatusCode};
use protocol::Name;

use crate::app::App;
use crate::demo::game::{Game, GameId, Status};
use crate::demo::pages::chrome::{header, store_unavailable, Live, Nav};
use crate::http::{escape_html, see_other, Body};
use crate::session;

pub async fn game(app: Arc<App>, headers: &HeaderMap, raw_id: &str) -> Response<Body> {
    let current = match session::current(&app.store, headers).await {
        Ok(Some(c)) => c,
        Ok(None) => return see_other("/login"),
        Err(e) => return store_unavailable("game page", &e),
    };
    let live = Live { app: &app, headers, current: Some(&current) };
    let missing = || {
        live.error(
            StatusCode::NOT_FOUND,
            "No such game",
            "This game does not exist, or it expired after a long time without moves.",
        )
    };
    let Some(id) = GameId::parse(raw_id) else {
        return missing();
    };
    let game = match app.store.game(&id).await {
        Ok(Some((_, game))) => game,
        Ok(None) => return missing(),
        Err(e) => return store_unavailable("game page", &e),
    };
    let me = &current.record.user;
    if !game.is_player(me) {
        return live.error(StatusCode::FORBIDDEN, "Not your game", "Only the two players of this game can open it.");
    }
    let squares: String = (0..9)
        .map(|i| {
            let mark = game.board[i].map_or("", |m| m.as_str());
            let winning = game.line.is_some_and(|l| l.contains(&i));
            format!(
                "<button type=\"button\" class=\"square{win}\" data-square=\"{i}\" aria-label=\"{label}\">{mark}</button>\n",
                win = if winning { " win" } else { "" },
                label = square_label(i, mark),
            )
        })
        .collect();
    let body = format!(
        "{header}\n<main class=\"game\">\n<h1>Tic-tac-toe</h1>\n\
<p class=\"versus\"><span class=\"mark-x\">X</span> <strong>{x}</strong> <span class=\"muted\">vs</span> <span class=\"mark-o\">O</span> <strong>{o}</strong></p>\n\
<p id=\"turn\" class=\"turn\" role=\"status\" aria-live=\"polite\" data-status=\"{status}\">{turn}</p>\n\
<div id=\"board\" class=\"board\" role=\"group\" aria-label=\"Board, 3 by 3; arrow keys move between squares\">\n{squares}</div>\n\
<p id=\"game-message\" class=\"message\" role=\"alert\"></p>\n\
<p><a href=\"/\">Back to the lobby</a></p>\n\
<noscript><p class=\"error\">Playing needs JavaScript; without it this page only shows the board.</p></noscript>\n</main>",
        header = header(&current, Nav::Game),
        x = escape_html(game.x.as_str()),
        o = escape_html(game.o.as_str()),
        status = match game.status {
            Status::Playing => "playing",
            Status::Won => "won",
            Status::Draw => "draw",
        },
        turn = escape_html(&turn_text(&game, me)),
    );
    live.page(StatusCode::OK, "Tic-tac-toe", &body, Some("game.js"), &[("crier-game", id.as_str())])
}

/// "Row 2, column 3: X", the accessible name of a square (game.js builds the same).
fn square_label(square: usize, mark: &str) -> String {
    let what = if mark.is_empty() { "empty" } else { mark };
    format!("Row {}, column {}: {what}", square / 3 + 1, square % 3 + 1)
}

/// Whose turn it is or how it ended, from `me`'s side (game.js builds the same).
pub fn turn_text(game: &Game, me: &Name) -> String {
    match (game.status, game.turn(), &game.winner) {
        (Status::Playing, Some(turn), _) if game.player(turn) == me => {
            format!("Your turn: you play {}.", turn.as_str())
        }
        (Status::Playing, Some(turn), _) => format!("Waiting for {} ({}) to move.", game.player(turn), turn.as_str()),
        (Status::Won, _, Some(winner)) if winner == me => "You won!".to_owned(),
        (Status::Won, _, Some(winner)) => format!("{winner} won."),
        _ => "It's a draw.".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        let (ann, bob) = (Name::parse("ann").unwrap(), Name::parse("bob").unwrap());
        let mut g = Game::new(GameId::random(), ann.clone(), bob.clone(), 0);
        assert_eq!(turn_text(&g, &ann), "Your turn: you play X.");
        assert_eq!(turn_text(&g, &bob), "Waiting for ann (X) to move.");
        for (who, sq) in [(&ann, 0), (&bob, 3), (&ann, 1), (&bob, 4), (&ann, 2)] {
            g.play(who, sq, 1).unwrap();
        }
        assert_eq!(turn_text(&g, &ann), "You won!");
        assert_eq!(turn_text(&g, &bob), "ann won.");
        assert_eq!(square_label(5, ""), "Row 2, column 3: empty");
    }
}

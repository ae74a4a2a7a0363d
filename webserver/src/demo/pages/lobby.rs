//! `GET /`: the lobby. Who is online (from presence, live), invitations sent and received
//! (live), and the buttons to invite, accept and decline. `static/demo/lobby.js` does the live part.

use std::sync::Arc;

use hyper::{HeaderMap, Response, StatusCode};

use crate::app::App;
use crate::demo::pages::chrome::{header, store_unavailable, Live, Nav};
use crate::http::{see_other, Body};
use crate::session;

pub async fn lobby(app: Arc<App>, headers: &HeaderMap) -> Response<Body> {
    let current = match session::current(&app.store, headers).await {
        Ok(Some(c)) => c,
        Ok(None) => return see_other("/login"),
        Err(e) => return store_unavailable("lobby", &e),
    };
    let body = format!(
        "{header}\n<main class=\"lobby\">\n<h1>Lobby</h1>\n\
<p class=\"intro\">Invite a player who is online to a game of tic-tac-toe. Whoever invites plays X and moves first.</p>\n\
<div class=\"columns\">\n\
<section class=\"card\" aria-labelledby=\"players-title\">\n\
<h2 id=\"players-title\">Players online <span id=\"online-count\" class=\"count\"></span></h2>\n\
<ul id=\"players\" class=\"players\"></ul>\n\
<p id=\"players-empty\" class=\"muted\">Looking for players…</p>\n\
</section>\n\
<section class=\"card\" aria-labelledby=\"invitations-title\">\n\
<h2 id=\"invitations-title\">Invitations</h2>\n\
<ul id=\"invitations\" class=\"invitations\"></ul>\n\
<p id=\"invitations-empty\" class=\"muted\">No invitations yet.</p>\n\
</section>\n\
</div>\n\
<p id=\"lobby-live\" class=\"visually-hidden\" aria-live=\"polite\"></p>\n\
<noscript><p class=\"error\">The lobby needs JavaScript to show who is online and to deliver invitations.</p></noscript>\n\
</main>",
        header = header(&current, Nav::Lobby),
    );
    Live { app: &app, headers, current: Some(&current) }.page(StatusCode::OK, "Lobby", &body, Some("lobby.js"), &[])
}

//! `GET /`: who is signed in, and the sign-out form.

use std::sync::Arc;

use hyper::{HeaderMap, Response, StatusCode};

use crate::app::App;
use crate::http::{escape_html, see_other, text, Body};
use crate::pages::layout::page;
use crate::pages::session;

pub async fn home(app: Arc<App>, headers: &HeaderMap) -> Response<Body> {
    let current = match session::current(&app.store, headers).await {
        Ok(Some(c)) => c,
        Ok(None) => return see_other("/login"),
        Err(e) => {
            tracing::warn!("home: {e}");
            return text(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable; try again shortly");
        }
    };
    let groups: Vec<&str> = current.record.groups.iter().map(|g| g.as_str()).collect();
    let body = format!(
        "<header class=\"bar\"><span>Signed in as <strong id=\"me\">{user}</strong></span>\n\
<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\">Sign out</button></form></header>\n\
<main><h1>Crier</h1><p>Groups: {groups}</p></main>",
        user = escape_html(current.record.user.as_str()),
        csrf = escape_html(&current.record.csrf),
        groups = escape_html(&if groups.is_empty() { "none".to_owned() } else { groups.join(", ") }),
    );
    page(StatusCode::OK, "Home", &body, &[])
}

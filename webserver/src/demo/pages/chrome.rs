//! What the live pages share: the settings their scripts read from `<meta>` elements (websocket
//! URL, heartbeat, CSRF token, user), the scripts every page loads (the ws4redis client and
//! `crier.js`, which shows site notices as toasts), the header bar, and error pages.

use hyper::header::HOST;
use hyper::{HeaderMap, Response, StatusCode};

use crate::app::App;
use crate::config::Config;
use crate::demo::pages::layout::page_with_meta;
use crate::http::{escape_html, is_https, Body};
use crate::session::LoggedIn;

/// The group whose members may open the admin page.
pub const ADMINS: &str = "admins";

/// Scripts of every page, in order, before the page's own.
pub const SCRIPTS: [&str; 2] = ["ws4redis.js", "crier.js"];

/// Which header link is the current page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Lobby,
    Game,
    Admin,
    None,
}

pub fn is_admin(current: &LoggedIn) -> bool {
    current.record.groups.iter().any(|g| g.as_str() == ADMINS)
}

/// The URL prefix the pages' websockets use: `--websocket-url` when set, else `ws[s]://<Host>/ws/`
/// from the request (wss when nginx says the client came over TLS), else the relative `/ws/`,
/// which the JS client resolves against the page (wss on an https page).
pub fn websocket_base(config: &Config, headers: &HeaderMap) -> String {
    if !config.websocket_url.is_empty() {
        return config.websocket_url.clone();
    }
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).filter(|h| {
        !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    });
    match host {
        Some(host) => format!("{}://{host}/ws/", if is_https(headers) { "wss" } else { "ws" }),
        None => "/ws/".to_owned(),
    }
}

/// The request a live page answers: the app, the request's headers and its session.
#[derive(Clone, Copy)]
pub struct Live<'a> {
    pub app: &'a App,
    pub headers: &'a HeaderMap,
    pub current: Option<&'a LoggedIn>,
}

impl Live<'_> {
    /// A page with the shared scripts and settings, plus `script` (the page's own, if any) and
    /// `meta` (the page's own settings).
    pub fn page(
        &self,
        status: StatusCode,
        title: &str,
        body: &str,
        script: Option<&str>,
        meta: &[(&str, &str)],
    ) -> Response<Body> {
        let websocket = websocket_base(&self.app.config, self.headers);
        let mut all_meta: Vec<(&str, &str)> = vec![("crier-websocket", &websocket)];
        if let Some(heartbeat) = self.app.config.heartbeat.as_deref() {
            all_meta.push(("crier-heartbeat", heartbeat));
        }
        if let Some(current) = self.current {
            all_meta.push(("csrf-token", &current.record.csrf));
            all_meta.push(("crier-user", current.record.user.as_str()));
        }
        all_meta.extend_from_slice(meta);
        let mut scripts: Vec<&str> = SCRIPTS.to_vec();
        scripts.extend(script);
        page_with_meta(status, title, body, &scripts, &all_meta)
    }

    /// An error page (403, 404, ...) that says what happened and where to go next.
    pub fn error(&self, status: StatusCode, title: &str, message: &str) -> Response<Body> {
        let header = self.current.map_or_else(anonymous_header, |c| header(c, Nav::None));
        let body = format!(
            "{header}\n<main class=\"narrow\">\n<h1>{title}</h1>\n<p class=\"error\" role=\"alert\">{message}</p>\n\
<p><a href=\"/\">Back to the lobby</a></p>\n</main>",
            title = escape_html(title),
            message = escape_html(message),
        );
        self.page(status, title, &body, None, &[])
    }
}

/// The header bar of a signed-in page: site name, navigation, live-connection state, the user
/// and the sign-out form.
pub fn header(current: &LoggedIn, active: Nav) -> String {
    let link = |nav: Nav, href: &str, label: &str| {
        let current = if nav == active { " aria-current=\"page\"" } else { "" };
        format!("<a href=\"{href}\"{current}>{label}</a>")
    };
    let admin = if is_admin(current) { link(Nav::Admin, "/admin", "Admin") } else { String::new() };
    format!(
        "<header class=\"bar\">\n<a class=\"brand\" href=\"/\">Crier</a>\n\
<nav aria-label=\"Main\">{lobby}{admin}</nav>\n\
<span id=\"conn\" class=\"conn\" data-state=\"connecting\" role=\"status\">Connecting…</span>\n\
<span class=\"who\">Signed in as <strong id=\"me\">{user}</strong></span>\n\
<form method=\"post\" action=\"/logout\" class=\"logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" class=\"secondary\">Sign out</button></form>\n</header>",
        lobby = link(Nav::Lobby, "/", "Lobby"),
        user = escape_html(current.record.user.as_str()),
        csrf = escape_html(&current.record.csrf),
    )
}

/// The header of pages for signed-out visitors.
pub fn anonymous_header() -> String {
    "<header class=\"bar\">\n<a class=\"brand\" href=\"/\">Crier</a>\n\
<span id=\"conn\" class=\"conn\" data-state=\"connecting\" role=\"status\">Connecting…</span>\n</header>"
        .to_owned()
}

/// The answer when Redis cannot be reached while rendering a page.
pub fn store_unavailable(what: &str, error: &dyn std::fmt::Display) -> Response<Body> {
    tracing::warn!("{what}: {error}");
    crate::http::text(StatusCode::SERVICE_UNAVAILABLE, "the session store is unavailable; try again shortly")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn websocket_base_from_config_or_request() {
        let config = Config::parse_from(["webserver"]);
        let mut headers = HeaderMap::new();
        assert_eq!(websocket_base(&config, &headers), "/ws/");
        headers.insert(HOST, "example.com:8080".parse().unwrap());
        assert_eq!(websocket_base(&config, &headers), "ws://example.com:8080/ws/");
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(websocket_base(&config, &headers), "wss://example.com:8080/ws/");
        headers.insert(HOST, "evil\"host".parse().unwrap());
        assert_eq!(websocket_base(&config, &headers), "/ws/");
        let config = Config::parse_from(["webserver", "--websocket-url", "wss://push.example.com/ws/"]);
        assert_eq!(websocket_base(&config, &headers), "wss://push.example.com/ws/");
    }
}

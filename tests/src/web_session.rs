//! A signed-in user of the pages, over plain HTTP: logs in through the real `/login` form and
//! then sends the session cookie, and on JSON POSTs the session's CSRF token in `X-CSRF-Token`
//! (read from the lobby's `<meta name="csrf-token">`), as the pages' scripts do.

use bytes::Bytes;
use hyper::Method;

use crate::http::{self, HttpResponse};
use crate::ws::{HandshakeFailure, WsClient};

pub struct WebSession {
    /// `http://<nginx>`.
    pub base: String,
    pub user: String,
    /// The `sessionid` cookie's value.
    pub session: String,
    /// The session's CSRF token.
    pub csrf: String,
}

/// The value of `Set-Cookie: <name>=<value>; ...` in `response`.
fn set_cookie_value(response: &HttpResponse, name: &str) -> Option<String> {
    response
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|line| line.split(';').next()?.trim().strip_prefix(&format!("{name}=")).map(str::to_owned))
}

/// The `content` of `<meta name="<name>" content="...">` in an HTML page.
pub fn meta_content(html: &str, name: &str) -> Option<String> {
    let pattern = format!("<meta name=\"{name}\" content=\"");
    let rest = &html[html.find(&pattern)? + pattern.len()..];
    Some(rest[..rest.find('"')?].to_owned())
}

impl WebSession {
    /// Signs in through `GET` and `POST /login` at `base` (panics unless it works).
    pub async fn login(base: &str, user: &str, password: &str) -> WebSession {
        let form = http::get(&format!("{base}/login")).await;
        let csrf = set_cookie_value(&form, "crier_csrf").expect("GET /login sets crier_csrf");
        let body = crate::login::form_encode(&[("csrf", &csrf), ("username", user), ("password", password)]);
        let answer = http::request(
            Method::POST,
            &format!("{base}/login"),
            &[("content-type", "application/x-www-form-urlencoded"), ("cookie", &format!("crier_csrf={csrf}"))],
            body,
        )
        .await;
        assert_eq!(answer.status, 303, "login as {user}: {}", answer.body);
        let session = set_cookie_value(&answer, "sessionid").expect("login sets sessionid");
        let mut me = WebSession { base: base.to_owned(), user: user.to_owned(), session, csrf: String::new() };
        let lobby = me.get("/").await;
        assert_eq!(lobby.status, 200, "GET / as {user}: {}", lobby.body);
        me.csrf = meta_content(&lobby.body, "csrf-token").expect("the lobby carries the CSRF token");
        me
    }

    fn cookie(&self) -> String {
        format!("sessionid={}", self.session)
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        http::request(Method::GET, &format!("{}{path}", self.base), &[("cookie", &self.cookie())], Bytes::new()).await
    }

    /// POSTs JSON with the session's CSRF token (an empty `body` string sends no body).
    pub async fn post_json(&self, path: &str, body: &str) -> HttpResponse {
        self.post_json_with(path, body, Some(&self.csrf.clone()), "application/json").await
    }

    /// POSTs with a chosen CSRF token (or none) and content type.
    pub async fn post_json_with(&self, path: &str, body: &str, csrf: Option<&str>, content_type: &str) -> HttpResponse {
        let cookie = self.cookie();
        let mut headers = vec![("cookie", cookie.as_str()), ("content-type", content_type)];
        if let Some(csrf) = csrf {
            headers.push(("x-csrf-token", csrf));
        }
        http::request(Method::POST, &format!("{}{path}", self.base), &headers, body.to_owned()).await
    }

    /// POSTs a form (the `csrf` field is the caller's to add).
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> HttpResponse {
        http::request(
            Method::POST,
            &format!("{}{path}", self.base),
            &[("cookie", &self.cookie()), ("content-type", "application/x-www-form-urlencoded")],
            crate::login::form_encode(fields),
        )
        .await
    }

    /// Opens a websocket at `url` with this session's cookie.
    pub async fn connect(&self, url: &str) -> Result<WsClient, HandshakeFailure> {
        WsClient::connect_with_headers(url, &[("cookie", &self.cookie())]).await
    }

    /// Like [`WebSession::connect`], panicking unless it upgrades.
    pub async fn open(&self, url: &str) -> WsClient {
        self.connect(url).await.unwrap_or_else(|e| panic!("websocket {url} as {}: {e}", self.user))
    }
}

//! `GET/POST /login` and `POST /logout`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use protocol::{Name, SessionRecord};

use crate::accounts::{dummy_hash, verify_password};
use crate::app::App;
use crate::demo::pages::chrome::{anonymous_header, Live};
use crate::http::{cookie, escape_html, field, form_fields, read_body, see_other, text, Body};
use crate::random::{constant_time_eq, token};
use crate::session::{self, CSRF_COOKIE};

/// The login form. A fresh anonymous CSRF token goes into a cookie and a hidden field.
pub fn form(app: &App, status: StatusCode, message: Option<&str>, request: &hyper::HeaderMap) -> Response<Body> {
    let csrf = cookie(request, CSRF_COOKIE).map(str::to_owned).filter(|t| t.len() == 64).unwrap_or_else(token);
    let message =
        message.map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape_html(m))).unwrap_or_default();
    let body = format!(
        "{header}\n<main class=\"narrow\">\n<h1>Sign in</h1>\n{message}\n\
<form method=\"post\" action=\"/login\">\n<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
<label for=\"username\">User name</label>\n<input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus>\n\
<label for=\"password\">Password</label>\n<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\n\
<button type=\"submit\">Sign in</button>\n</form>\n</main>",
        header = anonymous_header(),
    );
    let mut response = Live { app, headers: request, current: None }.page(status, "Sign in", &body, None, &[]);
    session::set_csrf_cookie(&mut response, &csrf, request);
    response
}

/// Checks the credentials; 303 to `/` with a new session cookie, or 401 with the form again.
pub async fn login(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let headers = req.headers().clone();
    let Ok(body) = read_body(req, app.config.max_body).await else {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "form too large");
    };
    let fields = form_fields(&body);
    let sent = field(&fields, "csrf").unwrap_or("");
    let expected = cookie(&headers, CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || !constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        return form(&app, StatusCode::FORBIDDEN, Some("Your form expired. Please sign in again."), &headers);
    }
    let username = field(&fields, "username").unwrap_or("").trim();
    let password = field(&fields, "password").unwrap_or("");
    let account = match Name::parse(username) {
        Ok(name) => match app.store.account(&name).await {
            Ok(account) => account,
            Err(e) => {
                tracing::warn!("login: {e}");
                return form(
                    &app,
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some("Sign-in is unavailable right now. Try again shortly."),
                    &headers,
                );
            }
        },
        Err(_) => None,
    };
    // argon2 takes tens of milliseconds of CPU: off the request threads, so one login does not
    // hold up the requests sharing its thread.
    let hash = account.as_ref().map_or(dummy_hash(), |a| a.password_hash.as_str()).to_owned();
    let attempt = password.to_owned();
    let verified = tokio::task::spawn_blocking(move || verify_password(&attempt, &hash)).await.unwrap_or(false);
    let account = match account {
        Some(account) if verified => account,
        refused => {
            // The name as typed is often a password typed into the wrong field: only an
            // account's own name, or a keyed tag of the text, is logged.
            match refused {
                Some(known) => tracing::info!(user = %known.name, "login refused: wrong password"),
                None => tracing::info!(typed = %service::redact::tag(username), "login refused: no such account"),
            }
            app.metrics.login_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return form(&app, StatusCode::UNAUTHORIZED, Some("Wrong user name or password."), &headers);
        }
    };
    let record = SessionRecord { user: account.name.clone(), groups: account.groups.clone(), csrf: token() };
    match app.store.create_session(&record, app.config.session_ttl).await {
        Ok(key) => {
            tracing::info!(user = %account.name, "logged in");
            app.metrics.logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut response = see_other("/");
            session::set_session_cookie(&mut response, &key, app.config.session_ttl, &headers);
            response
        }
        Err(e) => {
            tracing::warn!("login: cannot create session: {e}");
            form(
                &app,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("Sign-in is unavailable right now. Try again shortly."),
                &headers,
            )
        }
    }
}

/// Ends the session (its CSRF token must be posted) and clears the cookie.
pub async fn logout(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let headers = req.headers().clone();
    let current = match session::current(&app.store, &headers).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("logout: {e}");
            return text(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable; try again");
        }
    };
    let Ok(body) = read_body(req, app.config.max_body).await else {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "form too large");
    };
    let mut response = see_other("/login");
    if let Some(current) = current {
        let fields = form_fields(&body);
        if !constant_time_eq(field(&fields, "csrf").unwrap_or("").as_bytes(), current.record.csrf.as_bytes()) {
            return text(StatusCode::FORBIDDEN, "logout refused: missing or wrong CSRF token; reload the page");
        }
        if let Err(e) = app.store.delete_session(&current.key, Some(&current.record.user)).await {
            tracing::warn!("logout: {e}");
            return text(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable; try again");
        }
        tracing::info!(user = %current.record.user, "logged out");
    }
    session::clear_session_cookie(&mut response, &headers);
    response
}

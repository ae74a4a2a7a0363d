//! `GET /admin` and `POST /admin/notices`: members of the `admins` group broadcast a site notice,
//! which every open page shows as a toast (`crier.js` subscribes every page to the broadcast of
//! the `notices` facility). Everyone else gets a 403 page.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};

use crate::app::App;
use crate::demo::lobby::notices_facility;
use crate::demo::pages::chrome::{header, is_admin, store_unavailable, Live, Nav};
use crate::http::{escape_html, field, form_fields, read_body, see_other, Body};
use crate::random::constant_time_eq;
use crate::session::{self, LoggedIn};

/// Longest notice, in characters.
pub const MAX_NOTICE: usize = 500;

const NOT_ADMIN: &str = "The admin page is for members of the admins group only.";

pub async fn page(app: Arc<App>, req: &Request<Incoming>) -> Response<Body> {
    let headers = req.headers();
    let current = match session::current(&app.store, headers).await {
        Ok(Some(c)) => c,
        Ok(None) => return see_other("/login"),
        Err(e) => return store_unavailable("admin", &e),
    };
    let live = Live { app: &app, headers, current: Some(&current) };
    if !is_admin(&current) {
        return live.error(StatusCode::FORBIDDEN, "Forbidden", NOT_ADMIN);
    }
    let sent = req.uri().query().is_some_and(|q| q.split('&').any(|p| p == "sent=1"));
    render(live, &current, StatusCode::OK, sent.then_some(Ok("Notice sent to every open page.")), "")
}

fn render(
    live: Live<'_>,
    current: &LoggedIn,
    status: StatusCode,
    outcome: Option<Result<&str, &str>>,
    text: &str,
) -> Response<Body> {
    let outcome = match outcome {
        Some(Ok(message)) => format!("<p class=\"success\" role=\"status\">{}</p>\n", escape_html(message)),
        Some(Err(message)) => format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape_html(message)),
        None => String::new(),
    };
    let body = format!(
        "{header}\n<main class=\"narrow wide\">\n<h1>Site notices</h1>\n\
<p>A notice appears at once, as a message, on every open page of the site.</p>\n{outcome}\
<form method=\"post\" action=\"/admin/notices\" class=\"card\">\n\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
<label for=\"notice\">Notice</label>\n\
<textarea id=\"notice\" name=\"text\" rows=\"3\" maxlength=\"{MAX_NOTICE}\" required aria-describedby=\"notice-help\">{text}</textarea>\n\
<p id=\"notice-help\" class=\"muted\">Up to {MAX_NOTICE} characters.</p>\n\
<button type=\"submit\">Send to everyone</button>\n</form>\n</main>",
        header = header(current, Nav::Admin),
        csrf = escape_html(&current.record.csrf),
        text = escape_html(text),
    );
    live.page(status, "Admin", &body, None, &[])
}

pub async fn send_notice(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let headers: HeaderMap = req.headers().clone();
    let current = match session::current(&app.store, &headers).await {
        Ok(Some(c)) => c,
        Ok(None) => return see_other("/login"),
        Err(e) => return store_unavailable("admin", &e),
    };
    let live = Live { app: &app, headers: &headers, current: Some(&current) };
    let Ok(body) = read_body(req, app.config.max_body).await else {
        return render(live, &current, StatusCode::PAYLOAD_TOO_LARGE, Some(Err("The notice is too long.")), "");
    };
    let fields = form_fields(&body);
    if !constant_time_eq(field(&fields, "csrf").unwrap_or("").as_bytes(), current.record.csrf.as_bytes()) {
        return live.error(
            StatusCode::FORBIDDEN,
            "Form expired",
            "This form expired or did not come from this site. Reload the admin page and send the notice again.",
        );
    }
    if !is_admin(&current) {
        return live.error(StatusCode::FORBIDDEN, "Forbidden", NOT_ADMIN);
    }
    let text = field(&fields, "text").unwrap_or("").trim();
    if text.is_empty() {
        return render(live, &current, StatusCode::BAD_REQUEST, Some(Err("Write a notice first: it is empty.")), text);
    }
    if text.chars().count() > MAX_NOTICE {
        let message = format!("The notice has {} characters; the limit is {MAX_NOTICE}.", text.chars().count());
        return render(live, &current, StatusCode::BAD_REQUEST, Some(Err(&message)), text);
    }
    let facility = notices_facility();
    let channels = [app.store.prefix.broadcast(&facility)];
    let message =
        serde_json::json!({ "type": "notice", "text": text, "from": current.record.user.as_str() }).to_string();
    match app.store.publish(&facility, &channels, message.as_bytes(), 0).await {
        Ok(_) => {
            tracing::info!(by = %current.record.user, "site notice sent");
            see_other("/admin?sent=1")
        }
        Err(e) => {
            tracing::warn!("notice: {e}");
            render(
                live,
                &current,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(Err("The notice could not be sent (Redis is unavailable). Try again shortly.")),
                text,
            )
        }
    }
}

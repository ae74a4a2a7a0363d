//! Identities for end-to-end tests: session records written straight into Redis (as webserver
//! writes them at login), accounts, real logins through webserver's `/login` form, and the
//! `webserver users` command line (the real binary).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use bytes::Bytes;
use hyper::Method;
use protocol::{KeyPrefix, Name, SessionKey, SessionRecord};

use crate::http::{self, HttpResponse};
use crate::redis_server::Redis;
use crate::topology::Topology;
use crate::ws::{HandshakeFailure, WsClient};

/// Lifetime of the session records [`put_session`] writes.
pub const SESSION_TTL_SECS: u64 = 3600;

/// Writes a live login session `key` for `user` with `groups`, exactly where webserver keeps
/// it (`{p}crier:sessions:<key>`, plus the user's session index), on any [`Topology`].
pub async fn put_session(redis: &impl Topology, prefix: &KeyPrefix, key: &str, user: &str, groups: &[&str]) {
    let key = SessionKey::parse(key).expect("valid session key");
    let record = SessionRecord {
        user: Name::parse(user).expect("valid user name"),
        groups: groups.iter().map(|g| Name::parse(g).expect("valid group")).collect(),
        csrf: format!("csrf-of-{}", key.as_str()),
    };
    let _: () = redis
        .query(redis::cmd("SET").arg(prefix.session_record(&key)).arg(record.to_json()).arg("EX").arg(SESSION_TTL_SECS))
        .await;
    let _: i64 = redis.query(redis::cmd("SADD").arg(prefix.user_sessions(&record.user)).arg(key.as_str())).await;
}

/// `sessionid=<key>`, the Cookie header value of a session.
pub fn session_cookie(key: &str) -> String {
    format!("sessionid={key}")
}

/// Opens a websocket at `url`, sending `Cookie: sessionid=<key>` when a key is given.
pub async fn connect_with_session(url: &str, session: Option<&str>) -> Result<WsClient, HandshakeFailure> {
    match session {
        Some(key) => WsClient::connect_with_headers(url, &[("cookie", &session_cookie(key))]).await,
        None => WsClient::connect(url).await,
    }
}

/// Like [`connect_with_session`], panicking unless the socket upgrades.
pub async fn open_with_session(url: &str, session: Option<&str>) -> WsClient {
    connect_with_session(url, session).await.unwrap_or_else(|e| panic!("websocket {url} with session {session:?}: {e}"))
}

/// Creates an account directly in Redis, as `webserver users add` does.
pub async fn put_account(redis: &Redis, prefix: &str, name: &str, password: &str, groups: &[&str]) {
    let prefix = KeyPrefix::new(prefix).expect("valid prefix");
    crate::browser::add_account(redis, &prefix, name, password, groups).await;
}

// --- the login form ---------------------------------------------------------------------------

/// The `Set-Cookie` line that sets cookie `name`, if any.
pub fn set_cookie<'a>(response: &'a HttpResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .get_all(hyper::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|line| line.split_once('=').is_some_and(|(n, _)| n.trim() == name))
}

/// The value part of a `Set-Cookie` line (`name=value; attributes` → `value`).
pub fn cookie_value(set_cookie_line: &str) -> &str {
    let pair = set_cookie_line.split(';').next().unwrap_or("");
    pair.split_once('=').map_or("", |(_, v)| v.trim())
}

/// The attributes of a `Set-Cookie` line, trimmed (`["Path=/", "HttpOnly", ...]`).
pub fn cookie_attributes(set_cookie_line: &str) -> Vec<&str> {
    set_cookie_line.split(';').skip(1).map(str::trim).filter(|a| !a.is_empty()).collect()
}

/// The value of the hidden form input `name="csrf"` of an HTML page.
pub fn hidden_csrf(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\"")?;
    let rest = &html[at..];
    let value = rest.find("value=\"")? + "value=\"".len();
    let end = rest[value..].find('"')?;
    Some(rest[value..value + end].to_owned())
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    fn encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// `GET <base>/login`: the answer and its anonymous CSRF token (cookie `crier_csrf`, which the
/// form's hidden field repeats).
pub async fn login_form(base: &str) -> (HttpResponse, String) {
    let response = http::get(&format!("{base}/login")).await;
    assert_eq!(response.status, 200, "GET /login: {}", response.body);
    let line = set_cookie(&response, "crier_csrf").expect("GET /login sets crier_csrf");
    let token = cookie_value(line).to_owned();
    (response, token)
}

/// `POST <base>/login` with the given cookie header (if any), form fields and extra headers.
pub async fn post_form(
    url: &str,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
    extra_headers: &[(&str, &str)],
) -> HttpResponse {
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(cookie) = cookie {
        headers.push(("cookie", cookie));
    }
    headers.extend_from_slice(extra_headers);
    http::request(Method::POST, url, &headers, Bytes::from(form_encode(fields))).await
}

/// Signs in through the real form (GET /login for the CSRF token, POST /login) and returns the
/// new session key; panics unless webserver answers 303 with a session cookie.
pub async fn login(base: &str, user: &str, password: &str) -> String {
    let (_, csrf) = login_form(base).await;
    let response = post_form(
        &format!("{base}/login"),
        Some(&format!("crier_csrf={csrf}")),
        &[("csrf", &csrf), ("username", user), ("password", password)],
        &[],
    )
    .await;
    assert_eq!(response.status, 303, "login as {user}: {}", response.body);
    let line = set_cookie(&response, "sessionid").expect("login sets sessionid");
    let key = cookie_value(line).to_owned();
    assert!(!key.is_empty(), "empty session key in {line:?}");
    key
}

/// `GET <base>/` with the session cookie.
pub async fn home(base: &str, session: &str) -> HttpResponse {
    http::request(Method::GET, &format!("{base}/"), &[("cookie", &session_cookie(session))], Bytes::new()).await
}

// --- the `webserver users` command line -------------------------------------------------------

/// What one run of the command line printed.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Path of the `webserver` binary, built once per test process so that it matches the sources
/// (see [`crate::server_process::bin_dir`]).
pub fn webserver_binary() -> PathBuf {
    crate::server_process::bin_dir().join("webserver")
}

/// Runs `webserver --redis-url <url> --prefix <prefix> users <args…>` with `stdin` as standard
/// input (the password line).
pub async fn users_cli(redis_url: &str, prefix: &str, args: &[&str], stdin: &str) -> CliOutput {
    let binary = webserver_binary();
    let mut argv: Vec<String> =
        vec!["--redis-url".into(), redis_url.into(), "--prefix".into(), prefix.into(), "users".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(&binary)
            .args(&argv)
            .env_remove("CRIER_REDIS_URL")
            .env_remove("CRIER_PREFIX")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let mut pipe = child.stdin.take().expect("stdin");
        let _ = pipe.write_all(stdin.as_bytes());
        drop(pipe);
        let output = child.wait_with_output().expect("wait for webserver users");
        CliOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .expect("users cli task")
}

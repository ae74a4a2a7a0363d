//! Accounts and sessions: the `webserver users` subcommands (the real binary), the login form
//! (303 and cookie attributes, 401 page, CSRF), the home page, and logout, which closes the
//! session's open sockets with 1008.

use std::time::Duration;

use bytes::Bytes;
use crier_tests::http;
use crier_tests::login::{
    cookie_attributes, cookie_value, hidden_csrf, home, login, login_form, open_with_session, post_form, put_account,
    put_session, set_cookie, users_cli,
};
use crier_tests::{Stack, StackOptions};
use hyper::Method;
use protocol::SessionRecord;
use serde_json::json;

const RECV: Duration = Duration::from_secs(5);
const PREFIX: &str = "px";

/// `name → groups` from `users list` output. Every line is `name<TAB>g1,g2`, the tab present
/// even when the user has no groups (so that `cut -f2` and `IFS=$'\t' read` work on any line).
fn parse_list(stdout: &str) -> Vec<(String, Vec<String>)> {
    stdout
        .lines()
        .map(|line| {
            let (name, groups) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("users list line {line:?} is not name<TAB>groups; output {stdout:?}"));
            let groups = groups.split(',').filter(|g| !g.is_empty()).map(str::to_owned).collect();
            (name.to_owned(), groups)
        })
        .collect()
}

fn list(entries: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    entries.iter().map(|(n, g)| (n.to_string(), g.iter().map(|g| g.to_string()).collect())).collect()
}

async fn stored_hash(stack: &Stack, user: &str) -> Option<(String, String)> {
    let raw = stack.redis.get(&format!("{PREFIX}:crier:accounts:{user}")).await?;
    let account: serde_json::Value = serde_json::from_str(&raw).expect("account JSON");
    Some((account["password_hash"].as_str().expect("password_hash").to_owned(), raw))
}

async fn session_count(stack: &Stack) -> usize {
    let keys: Vec<String> = stack.redis.query(redis::cmd("KEYS").arg("px:crier:sessions:*")).await;
    keys.len()
}

/// POST /login through nginx with a fresh CSRF token; the status.
async fn try_login(stack: &Stack, user: &str, password: &str) -> u16 {
    let base = stack.front_url("");
    let (_, csrf) = login_form(&base).await;
    let response = post_form(
        &format!("{base}/login"),
        Some(&format!("crier_csrf={csrf}")),
        &[("csrf", &csrf), ("username", user), ("password", password)],
        &[],
    )
    .await;
    response.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_subcommands_manage_accounts_with_argon2_hashes() {
    let stack = Stack::start(StackOptions::default().prefix(PREFIX)).await;
    let url = stack.redis.url();
    assert!(url.starts_with("unix://"), "{url}");
    let users = |args: &'static [&'static str], stdin: &'static str| users_cli(&url, PREFIX, args, stdin);

    let out = users(&["add", "alice", "--group", "g1", "--group", "g2"], "first-password\n").await;
    assert!(out.success, "add alice: {out:?}");
    assert!(out.stdout.contains("alice"), "{out:?}");
    let out = users(&["add", "bob"], "bob-password\n").await;
    assert!(out.success, "add bob: {out:?}");
    let out = users(&["add", "zed", "--group", "g3"], "zed-password\n").await;
    assert!(out.success, "add zed: {out:?}");

    // Refusals: existing name, short password, no password, a name with ':'.
    for (args, stdin, why) in [
        (&["add", "alice"][..], "another-password\n", "exists"),
        (&["add", "carol"][..], "short\n", "8"),
        (&["add", "carol"][..], "", "password"),
        (&["add", "a:b"][..], "long-enough-password\n", ":"),
        (&["passwd", "nobody"][..], "long-enough-password\n", "nobody"),
        (&["del", "nobody"][..], "", "nobody"),
    ] {
        let out = users_cli(&url, PREFIX, args, stdin).await;
        assert!(!out.success, "{args:?} must fail: {out:?}");
        assert!(out.stderr.contains(why), "{args:?}: stderr should say {why:?}: {out:?}");
    }

    let out = users(&["list"], "").await;
    assert!(out.success, "{out:?}");
    assert_eq!(
        parse_list(&out.stdout),
        list(&[("alice", &["g1", "g2"]), ("bob", &[]), ("zed", &["g3"])]),
        "{:?}",
        out.stdout
    );

    // Stored under {p}crier:accounts:<name> with an argon2id hash, never in clear.
    let (hash, raw) = stored_hash(&stack, "alice").await.expect("alice's account");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!raw.contains("first-password"), "password stored in clear: {raw}");
    let mut index: Vec<String> = stack.redis.query(redis::cmd("SMEMBERS").arg("px:crier:accounts")).await;
    index.sort();
    assert_eq!(index, ["alice", "bob", "zed"]);
    assert_eq!(try_login(&stack, "alice", "first-password").await, 303);

    // passwd: new hash, groups kept unless given.
    let out = users(&["passwd", "alice"], "second-password\n").await;
    assert!(out.success, "passwd: {out:?}");
    let (new_hash, raw) = stored_hash(&stack, "alice").await.expect("alice");
    assert!(new_hash.starts_with("$argon2id$") && new_hash != hash, "{new_hash}");
    assert!(!raw.contains("second-password"));
    assert_eq!(try_login(&stack, "alice", "first-password").await, 401);
    assert_eq!(try_login(&stack, "alice", "second-password").await, 303);
    let out = users(&["passwd", "alice", "--group", "g9"], "third-password\n").await;
    assert!(out.success, "passwd --group: {out:?}");
    let out = users(&["list"], "").await;
    assert_eq!(parse_list(&out.stdout), list(&[("alice", &["g9"]), ("bob", &[]), ("zed", &["g3"])]));

    // del: the account goes, and so do the sessions of the user, whose sockets are closed.
    let key = "zed-session";
    put_session(&stack.redis, stack.prefix(), key, "zed", &["g3"]).await;
    let mut socket = [open_with_session(&stack.ws_url("/ws/f?subscribe-user"), Some(key)).await];
    stack.sync("px:user:zed:f", &mut socket).await;
    let out = users(&["del", "zed"], "").await;
    assert!(out.success, "del: {out:?}");
    let (code, reason) = socket[0].expect_close(RECV).await;
    assert_eq!((code, reason.as_str()), (1008, "session ended"));
    assert!(stored_hash(&stack, "zed").await.is_none());
    assert!(!stack.redis.exists(&format!("px:crier:sessions:{key}")).await);
    assert_eq!(home(&stack.front_url(""), key).await.status, 303);
    let out = users(&["list"], "").await;
    assert_eq!(parse_list(&out.stdout), list(&[("alice", &["g9"]), ("bob", &[])]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_the_session_cookie_and_home_names_the_user() {
    let stack = Stack::start(StackOptions::default().prefix(PREFIX)).await;
    put_account(&stack.redis, PREFIX, "alice", "alice-password", &["g1"]).await;
    let base = stack.front_url("");

    // Not signed in: home sends to the login page.
    let response = http::get(&format!("{base}/")).await;
    assert_eq!(response.status, 303);
    assert_eq!(response.header("location"), Some("/login"));

    // The form: a CSRF token in a cookie and in a hidden field.
    let (form, csrf) = login_form(&base).await;
    assert_eq!(hidden_csrf(&form.body).as_deref(), Some(csrf.as_str()), "{}", form.body);
    assert!(form.body.contains("name=\"username\"") && form.body.contains("name=\"password\""));
    let attributes = cookie_attributes(set_cookie(&form, "crier_csrf").unwrap());
    assert!(attributes.contains(&"HttpOnly") && !attributes.contains(&"Secure"), "{attributes:?}");

    // Good credentials: 303 to / with the session cookie.
    let response = post_form(
        &format!("{base}/login"),
        Some(&format!("crier_csrf={csrf}")),
        &[("csrf", &csrf), ("username", "alice"), ("password", "alice-password")],
        &[],
    )
    .await;
    assert_eq!(response.status, 303, "{}", response.body);
    assert_eq!(response.header("location"), Some("/"));
    let line = set_cookie(&response, "sessionid").expect("session cookie").to_owned();
    let key = cookie_value(&line).to_owned();
    assert!(key.len() >= 32, "a session key with enough entropy: {line}");
    let attributes = cookie_attributes(&line);
    for wanted in ["Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(attributes.contains(&wanted), "{wanted} missing: {line}");
    }
    assert!(!attributes.contains(&"Secure"), "no Secure over plain http: {line}");
    let max_age: u64 = attributes
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Max-Age: {line}"));
    assert!(max_age > 0);

    // The session record, where wsserver reads it.
    let record_key = format!("px:crier:sessions:{key}");
    let raw = stack.redis.get(&record_key).await.expect("session record");
    let record = SessionRecord::from_json(raw.as_bytes()).expect("session record JSON");
    assert_eq!(record.user.as_str(), "alice");
    assert_eq!(record.groups.iter().map(|g| g.as_str()).collect::<Vec<_>>(), ["g1"]);
    let ttl = stack.redis.ttl(&record_key).await;
    assert!(ttl > 0 && ttl as u64 <= max_age, "TTL {ttl}, Max-Age {max_age}");

    let page = home(&base, &key).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Signed in as <strong id=\"me\">alice</strong>"), "{}", page.body);
    assert_eq!(hidden_csrf(&page.body).as_deref(), Some(record.csrf.as_str()));

    // Behind TLS (X-Forwarded-Proto: https, straight to webserver) the cookie is Secure.
    let direct = stack.web_url("");
    let tls = [("x-forwarded-proto", "https")];
    let form = http::request(Method::GET, &format!("{direct}/login"), &tls, Bytes::new()).await;
    let csrf = cookie_value(set_cookie(&form, "crier_csrf").expect("csrf cookie")).to_owned();
    assert!(cookie_attributes(set_cookie(&form, "crier_csrf").unwrap()).contains(&"Secure"));
    let response = post_form(
        &format!("{direct}/login"),
        Some(&format!("crier_csrf={csrf}")),
        &[("csrf", &csrf), ("username", "alice"), ("password", "alice-password")],
        &tls,
    )
    .await;
    assert_eq!(response.status, 303, "{}", response.body);
    let line = set_cookie(&response, "sessionid").expect("session cookie");
    assert!(cookie_attributes(line).contains(&"Secure"), "{line}");

    assert_eq!(session_count(&stack).await, 2);

    // Wrong password, unknown user: 401 with the form again.
    let (_, csrf) = login_form(&base).await;
    let cookie = format!("crier_csrf={csrf}");
    for (user, password) in [("alice", "wrong-password"), ("nobody", "alice-password")] {
        let response = post_form(
            &format!("{base}/login"),
            Some(&cookie),
            &[("csrf", &csrf), ("username", user), ("password", password)],
            &[],
        )
        .await;
        assert_eq!(response.status, 401, "{user}/{password}");
        assert!(response.body.contains("Wrong user name or password."), "{}", response.body);
        assert!(response.body.contains("action=\"/login\""), "the form again: {}", response.body);
        assert!(set_cookie(&response, "sessionid").is_none());
    }

    // Missing or wrong CSRF token: 403, even with the right password.
    let good = [("username", "alice"), ("password", "alice-password")];
    let wrong = "0".repeat(64);
    let wrong_field = [("csrf", wrong.as_str()), good[0], good[1]];
    let right_field = [("csrf", csrf.as_str()), good[0], good[1]];
    let empty_field = [("csrf", ""), good[0], good[1]];
    for (what, cookie, fields) in [
        ("no csrf field", Some(cookie.as_str()), &good[..]),
        ("wrong csrf field", Some(cookie.as_str()), &wrong_field[..]),
        ("no csrf cookie", None, &right_field[..]),
        ("empty csrf", Some("crier_csrf="), &empty_field[..]),
    ] {
        let response = post_form(&format!("{base}/login"), cookie, fields, &[]).await;
        assert_eq!(response.status, 403, "{what}: {}", response.body);
        assert!(set_cookie(&response, "sessionid").is_none(), "{what}");
    }
    assert_eq!(session_count(&stack).await, 2, "failed logins create no session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_and_closes_its_sockets_with_1008() {
    let stack = Stack::start(StackOptions::default().prefix(PREFIX)).await;
    put_account(&stack.redis, PREFIX, "alice", "alice-password", &["g1"]).await;
    let base = stack.front_url("");
    let alice = login(&base, "alice", "alice-password").await;
    // bob's session is written straight into Redis (argon2 is slow in debug builds).
    let bob = "bob-session";
    put_session(&stack.redis, stack.prefix(), bob, "bob", &["g1"]).await;

    let url = stack.ws_url("/ws/f?subscribe-broadcast&subscribe-user&subscribe-group&subscribe-session");
    // [alice, alice in another tab, bob]
    let mut sockets = vec![
        open_with_session(&url, Some(&alice)).await,
        open_with_session(&url, Some(&alice)).await,
        open_with_session(&url, Some(bob)).await,
    ];
    stack.sync("px:group:g1:f", &mut sockets).await;
    stack.sync(&format!("px:session:{alice}:f"), &mut sockets[0..2]).await;
    stack.sync("px:user:alice:f", &mut sockets[0..2]).await;

    // The logged-in identity is what the sockets subscribe as.
    let answer = stack.publish(&json!({"facility": "f", "users": ["alice"], "message": "for alice"})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = stack.publish(&json!({"facility": "f", "sessions": [alice], "message": "for alice's session"})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    for socket in sockets[0..2].iter_mut() {
        assert_eq!(socket.expect_text(RECV).await, "for alice");
        assert_eq!(socket.expect_text(RECV).await, "for alice's session");
    }

    let page = home(&base, &alice).await;
    let csrf = hidden_csrf(&page.body).expect("logout form csrf");
    let session_cookie = format!("sessionid={alice}");

    // Without the session's CSRF token nothing happens.
    for wrong in ["", "not-the-token"] {
        let response = post_form(&format!("{base}/logout"), Some(&session_cookie), &[("csrf", wrong)], &[]).await;
        assert_eq!(response.status, 403, "{}", response.body);
    }
    stack.sync("px:user:alice:f", &mut sockets[0..2]).await;

    let response = post_form(&format!("{base}/logout"), Some(&session_cookie), &[("csrf", &csrf)], &[]).await;
    assert_eq!(response.status, 303, "{}", response.body);
    assert_eq!(response.header("location"), Some("/login"));
    let cleared = set_cookie(&response, "sessionid").expect("cookie cleared");
    assert_eq!(cookie_value(cleared), "");
    assert!(cookie_attributes(cleared).contains(&"Max-Age=0"), "{cleared}");

    for socket in sockets[0..2].iter_mut() {
        let (code, reason) = socket.expect_close(RECV).await;
        assert_eq!((code, reason.as_str()), (1008, "session ended"));
    }
    assert!(!stack.redis.exists(&format!("px:crier:sessions:{alice}")).await);
    let response = home(&base, &alice).await;
    assert_eq!(response.status, 303);
    assert_eq!(response.header("location"), Some("/login"));

    // bob's session is untouched.
    stack.publish_broadcast("f", "bob is still here", 0).await;
    assert_eq!(sockets[2].expect_text(RECV).await, "bob is still here");
    assert_eq!(home(&base, bob).await.status, 200);

    // The ended session's cookie is now only an anonymous session key.
    let refused = crier_tests::login::connect_with_session(&stack.ws_url("/ws/f?publish-broadcast"), Some(&alice))
        .await
        .err()
        .expect("anonymous publish");
    assert_eq!(refused.status, 403, "{refused}");
}

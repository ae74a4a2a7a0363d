//! Identities from an HTTP auth callback (`--auth-url`), against a small HTTP server started by
//! the test: forwarded Cookie and Authorization, the identity's audiences, 401/403 → 403,
//! timeout/5xx → 503, and the answer cache.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crier_tests::login::put_session;
use crier_tests::{wait_until, Stack, StackOptions, WsClient};

const RECV: Duration = Duration::from_secs(5);

/// One request the callback server received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    path_and_query: String,
    cookie: Option<String>,
    authorization: Option<String>,
}

/// The application's auth endpoint, answering by the Authorization header (or, without one,
/// by the cookie).
struct AuthServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// When set, "Bearer flaky" is answered 200 instead of 502.
    flaky_recovered: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    response
}

const ANN: &str = r#"{"user":"ann","groups":["g1","g2"],"session":"s-ann"}"#;

impl AuthServer {
    async fn start() -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind auth server");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let flaky_recovered = Arc::new(AtomicBool::new(false));
        let (seen2, flaky2) = (seen.clone(), flaky_recovered.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, flaky) = (seen2.clone(), flaky2.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (seen, flaky) = (seen.clone(), flaky.clone());
                        async move { Ok::<_, Infallible>(respond(req, &seen, &flaky).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        AuthServer { addr, seen, flaky_recovered, task }
    }

    fn url(&self) -> String {
        format!("http://{}/auth/whoami?app=1", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn respond(
    req: Request<Incoming>,
    seen: &Mutex<Vec<Seen>>,
    flaky_recovered: &AtomicBool,
) -> Response<Full<Bytes>> {
    let header = |name: &str| req.headers().get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let request = Seen {
        path_and_query: req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        cookie: header("cookie"),
        authorization: header("authorization"),
    };
    seen.lock().unwrap().push(request.clone());
    match request.authorization.as_deref() {
        Some("Bearer ann") => answer(StatusCode::OK, ANN),
        Some("Bearer bob") => answer(StatusCode::OK, r#"{"user":"bob","session":"s-bob"}"#),
        Some("Bearer anon") => answer(StatusCode::OK, r#"{"session":"s-anon"}"#),
        Some("Bearer unauthorized") => answer(StatusCode::UNAUTHORIZED, r#"{"error":"log in"}"#),
        Some("Bearer forbidden") => answer(StatusCode::FORBIDDEN, r#"{"error":"banned"}"#),
        Some("Bearer colon") => answer(StatusCode::OK, r#"{"user":"a:b","session":"s"}"#),
        Some("Bearer control") => answer(StatusCode::OK, r#"{"user":"ann","groups":["g\u0001"]}"#),
        Some("Bearer broken") => answer(StatusCode::INTERNAL_SERVER_ERROR, "oops"),
        Some("Bearer garbage") => answer(StatusCode::OK, "<html>not json</html>"),
        Some("Bearer slow") => {
            // A callback slower than `--auth-timeout`: the behaviour under test.
            tokio::time::sleep(Duration::from_secs(3)).await;
            answer(StatusCode::OK, ANN)
        }
        Some("Bearer flaky") if flaky_recovered.load(Ordering::SeqCst) => answer(StatusCode::OK, ANN),
        Some("Bearer flaky") => answer(StatusCode::BAD_GATEWAY, "upstream down"),
        None if request.cookie.as_deref() == Some("sessionid=cookie-bob") => {
            answer(StatusCode::OK, r#"{"user":"bob","groups":["g1"],"session":"cookie-bob"}"#)
        }
        _ => answer(StatusCode::UNAUTHORIZED, r#"{"error":"who are you"}"#),
    }
}

async fn connect(
    stack: &Stack,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient, crier_tests::HandshakeFailure> {
    WsClient::connect_with_headers(&stack.ws_url(&format!("/ws/f?{query}")), headers).await
}

async fn start(auth: &AuthServer, extra: &[&str]) -> Stack {
    let url = auth.url();
    let mut args = vec!["--auth-url", url.as_str()];
    args.extend_from_slice(extra);
    Stack::start(StackOptions::default().ws_args(&args)).await
}

/// A good client still connects and is told who it is.
async fn assert_still_serving(stack: &Stack, after: &str) {
    let mut socket = [connect(stack, "subscribe-user", &[("authorization", "Bearer ann")])
        .await
        .unwrap_or_else(|e| panic!("after {after}: {e}"))];
    stack.sync("user:ann:f", &mut socket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_identity_gives_the_audiences_and_gets_cookie_and_authorization() {
    let auth = AuthServer::start().await;
    let stack = start(&auth, &["--auth-cache-ttl", "0"]).await;
    let all = "subscribe-broadcast&subscribe-user&subscribe-group&subscribe-session&publish-broadcast";

    let mut ann =
        [connect(&stack, all, &[("cookie", "sessionid=ignored; theme=dark"), ("authorization", "Bearer ann")])
            .await
            .expect("ann")];
    assert_eq!(
        auth.seen(),
        [Seen {
            path_and_query: "/auth/whoami?app=1".into(),
            cookie: Some("sessionid=ignored; theme=dark".into()),
            authorization: Some("Bearer ann".into()),
        }]
    );
    // The identity's user, groups and session (not the cookie's value) are subscribed.
    for channel in ["broadcast:f", "user:ann:f", "group:g1:f", "group:g2:f", "session:s-ann:f"] {
        stack.sync(channel, &mut ann).await;
    }
    assert_eq!(stack.redis.numsub("session:ignored:f").await, 0);
    // Logged in, so publish-broadcast was allowed: its frames are published.
    ann[0].send_text("hello from ann").await.expect("send");
    let mut bob =
        [connect(&stack, "subscribe-user&subscribe-group", &[("cookie", "sessionid=cookie-bob")]).await.expect("bob")];
    assert_eq!(auth.seen().last().map(|s| s.authorization.clone()), Some(None), "no Authorization to forward");
    stack.sync("user:bob:f", &mut bob).await;
    stack.sync("group:g1:f", &mut bob).await;
    stack.publish(&serde_json::json!({"facility": "f", "groups": ["g1"], "message": "to g1"})).await;
    assert_eq!(bob[0].expect_text(RECV).await, "to g1");
    assert_eq!(stack.redis.get("broadcast:f").await.as_deref(), Some("hello from ann"));

    // An anonymous identity keeps its session but may not publish (the access rules apply).
    let mut anon = [connect(&stack, "subscribe-session", &[("authorization", "Bearer anon")]).await.expect("anon")];
    stack.sync("session:s-anon:f", &mut anon).await;
    let refused = connect(&stack, "publish-broadcast", &[("authorization", "Bearer anon")])
        .await
        .err()
        .expect("anonymous publish");
    assert_eq!(refused.status, 403, "{refused}");

    // Crier's own session records are not consulted: the callback decides.
    put_session(&stack.redis, stack.prefix(), "crier-session", "mallory", &[]).await;
    let refused =
        connect(&stack, "subscribe-user", &[("cookie", "sessionid=crier-session")]).await.err().expect("refused");
    assert_eq!(refused.status, 403, "{refused}");
    let last = auth.seen().last().cloned().expect("asked");
    assert_eq!((last.cookie.as_deref(), last.authorization.as_deref()), (Some("sessionid=crier-session"), None));

    // Without a cache every upgrade asks again.
    let before = auth.count();
    for _ in 0..3 {
        connect(&stack, "subscribe-user", &[("authorization", "Bearer ann")]).await.expect("ann again");
    }
    assert_eq!(auth.count(), before + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_refusals_answer_403_and_failures_503() {
    let auth = AuthServer::start().await;
    let stack = start(&auth, &["--auth-timeout", "300ms", "--auth-cache-ttl", "0"]).await;
    // (Authorization, status, body)
    let cases = [
        ("Bearer unauthorized", 403, "not allowed by the authentication service"),
        ("Bearer forbidden", 403, "not allowed by the authentication service"),
        ("Bearer colon", 403, "identity refused"),
        ("Bearer control", 403, "identity refused"),
        ("Bearer broken", 503, "authentication service unavailable, try again later"),
        ("Bearer garbage", 503, "authentication service unavailable, try again later"),
        ("Bearer slow", 503, "authentication service unavailable, try again later"),
    ];
    for (authorization, status, body) in cases {
        let started = Instant::now();
        let refused = connect(&stack, "subscribe-broadcast", &[("authorization", authorization)])
            .await
            .err()
            .unwrap_or_else(|| panic!("{authorization} was upgraded"));
        let took = started.elapsed();
        assert_eq!(refused.status, status, "{authorization}: {refused}");
        assert!(refused.body.trim().starts_with(body), "{authorization}: {refused}");
        assert!(took < Duration::from_secs(2), "{authorization}: answered after {took:?} (--auth-timeout 300ms)");
        assert_still_serving(&stack, authorization).await;
    }
    assert!(stack.redis.client_count().await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_down_answers_503() {
    // Nothing listens at the auth URL.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let url = format!("http://{addr}/auth");
    let stack = Stack::start(StackOptions::default().ws_args(&["--auth-url", &url, "--auth-timeout", "300ms"])).await;
    for _ in 0..2 {
        let refused =
            connect(&stack, "subscribe-broadcast", &[("authorization", "Bearer ann")]).await.err().expect("refused");
        assert_eq!(refused.status, 503, "{refused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_answers_are_cached_per_cookie_and_authorization() {
    let auth = AuthServer::start().await;
    let stack = start(&auth, &["--auth-cache-ttl", "2s"]).await;
    let ok = |headers: &'static [(&'static str, &'static str)]| {
        let stack = &stack;
        async move { connect(stack, "subscribe-user", headers).await.unwrap_or_else(|e| panic!("{headers:?}: {e}")) }
    };
    let refused = |headers: &'static [(&'static str, &'static str)]| {
        let stack = &stack;
        async move {
            connect(stack, "subscribe-user", headers)
                .await
                .err()
                .unwrap_or_else(|| panic!("{headers:?} was upgraded"))
                .status
        }
    };

    let cached_at = Instant::now();
    ok(&[("authorization", "Bearer ann")]).await;
    let mut again = [ok(&[("authorization", "Bearer ann")]).await];
    assert_eq!(auth.count(), 1, "the second upgrade used the cached answer");
    stack.sync("user:ann:f", &mut again).await; // with the cached identity

    // The key is the pair (Cookie, Authorization).
    ok(&[("authorization", "Bearer ann"), ("cookie", "a=1")]).await;
    ok(&[("authorization", "Bearer ann"), ("cookie", "a=1")]).await;
    assert_eq!(auth.count(), 2);
    ok(&[("authorization", "Bearer bob")]).await;
    assert_eq!(auth.count(), 3);

    // Refusals are cached too; unavailability is not.
    assert_eq!(refused(&[("authorization", "Bearer forbidden")]).await, 403);
    assert_eq!(refused(&[("authorization", "Bearer forbidden")]).await, 403);
    assert_eq!(auth.count(), 4);
    assert_eq!(refused(&[("authorization", "Bearer flaky")]).await, 503);
    assert_eq!(refused(&[("authorization", "Bearer flaky")]).await, 503);
    assert_eq!(auth.count(), 6, "503s are not cached");
    auth.flaky_recovered.store(true, Ordering::SeqCst);
    ok(&[("authorization", "Bearer flaky")]).await;
    ok(&[("authorization", "Bearer flaky")]).await;
    assert_eq!(auth.count(), 7);
    assert!(cached_at.elapsed() < Duration::from_secs(2), "the steps above took over the 2 s TTL");

    // After the TTL the callback is asked again: upgrade until one is not answered from the cache.
    wait_until(Duration::from_secs(10), "the cached answer for ann expires", || {
        let (ok, auth) = (&ok, &auth);
        async move {
            ok(&[("authorization", "Bearer ann")]).await;
            auth.count() >= 8
        }
    })
    .await;
    assert_eq!(auth.count(), 8, "one callback request once the answer expired");
    assert!(cached_at.elapsed() >= Duration::from_secs(2), "expired before --auth-cache-ttl");
}

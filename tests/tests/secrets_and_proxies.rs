//! What the real binaries print and log never contains a secret (session keys, typed-in names
//! that may be passwords, credentials in `--auth-url` or the Redis URL), and forwarded headers
//! count only from trusted proxies.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use crier_tests::http;
use crier_tests::login::{cookie_attributes, login_form, post_form, set_cookie};
use crier_tests::server_process::{bin_dir, ServerProcess};
use crier_tests::{wait_until, Redis};
use hyper::Method;
use protocol::{KeyPrefix, SessionKey};

const LOG_WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_session_record_is_logged_without_its_key() {
    let redis = Redis::start().await;
    let web = ServerProcess::webserver(&redis.url(), &["--admin-listen="]).await;
    let secret = "zq7corruptsessionkey0123456789ab";
    let key = KeyPrefix::new("").expect("empty prefix").session_record(&SessionKey::parse(secret).expect("key"));
    let _: () = redis.query(redis::cmd("SET").arg(&key).arg("{not json")).await;

    let answer = http::request(
        Method::GET,
        &format!("http://{}/", web.addr),
        &[("cookie", &format!("sessionid={secret}"))],
        Bytes::new(),
    )
    .await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    wait_until(LOG_WAIT, "the corrupt record is logged", || async { web.output().contains("corrupt session record") })
        .await;
    let output = web.output();
    assert!(!output.contains(secret), "session key in the log:\n{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_does_not_log_the_name_as_typed() {
    let redis = Redis::start().await;
    let web = ServerProcess::webserver(&redis.url(), &["--admin-listen="]).await;
    let base = format!("http://{}", web.addr);
    let typed = "correct-horse-battery-staple";
    let (_, csrf) = login_form(&base).await;
    let answer = post_form(
        &format!("{base}/login"),
        Some(&format!("crier_csrf={csrf}")),
        &[("csrf", &csrf), ("username", typed), ("password", "whatever")],
        &[],
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    wait_until(LOG_WAIT, "the refusal is logged", || async { web.output().contains("login refused") }).await;
    let output = web.output();
    assert!(!output.contains(typed), "typed name in the log:\n{output}");
}

#[test]
fn check_masks_credentials_in_urls() {
    let ws = Command::new(bin_dir().join("wsserver"))
        .args([
            "--check",
            "--redis-url",
            "redis://:redis-pass-1@127.0.0.1:6379/0",
            "--auth-url",
            "http://app:cb-pass-2@127.0.0.1:8080/check?token=cb-token-3",
        ])
        .output()
        .expect("run wsserver --check");
    let web = Command::new(bin_dir().join("webserver"))
        .args(["--check", "--redis-url", "redis://user:redis-pass-4@127.0.0.1:6379/0"])
        .output()
        .expect("run webserver --check");
    for (name, output) in [("wsserver", ws), ("webserver", web)] {
        assert!(output.status.success(), "{name} --check: {output:?}");
        let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        for secret in ["redis-pass-1", "cb-pass-2", "cb-token-3", "redis-pass-4"] {
            assert!(!printed.contains(secret), "{name} printed {secret}:\n{printed}");
        }
        assert!(printed.contains(":****@127.0.0.1"), "{name} shows the masked URL:\n{printed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_proto_counts_only_from_trusted_proxies() {
    let redis = Redis::start().await;
    let tls = [("x-forwarded-proto", "https")];
    // Loopback is trusted by default: nginx on the same host says the client came over TLS.
    let trusting = ServerProcess::webserver(&redis.url(), &["--admin-listen="]).await;
    let form = http::request(Method::GET, &format!("http://{}/login", trusting.addr), &tls, Bytes::new()).await;
    let line = set_cookie(&form, "crier_csrf").expect("csrf cookie");
    assert!(cookie_attributes(line).contains(&"Secure"), "{line}");
    // A peer outside --trusted-proxies cannot claim TLS.
    let strict = ServerProcess::webserver(&redis.url(), &["--admin-listen=", "--trusted-proxies", "192.0.2.1"]).await;
    let form = http::request(Method::GET, &format!("http://{}/login", strict.addr), &tls, Bytes::new()).await;
    let line = set_cookie(&form, "crier_csrf").expect("csrf cookie");
    assert!(!cookie_attributes(line).contains(&"Secure"), "{line}");
    assert!(!form.body.contains("wss://"), "websocket URL derived from an untrusted header:\n{}", form.body);
}

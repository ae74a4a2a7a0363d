//! webserver's admin listener: /metrics in Prometheus text, whose counters move with publishes,
//! refusals and logins, and /readyz following Redis.

use std::time::Duration;

use clap::Parser;
use crier_tests::{http, prometheus, Redis};

const TOKEN: &str = "metrics-test-token-0123456789";

async fn metric(admin: &str, name: &str) -> f64 {
    let text = http::get(&format!("http://{admin}/metrics")).await.body;
    prometheus::sample(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_serves_metrics_that_move() {
    let mut redis = Redis::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web = listener.local_addr().unwrap().to_string();
    let admin_addr = admin.local_addr().unwrap().to_string();
    let config = webserver::Config::parse_from(["webserver", "--redis-url", &redis.url(), "--publish-token", TOKEN]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(webserver::run_with_admin(config, vec![listener.into()], vec![admin.into()], async {
        let _ = stopped.await;
    }));

    let response = http::get(&format!("http://{admin_addr}/metrics")).await;
    assert_eq!(response.status, 200);
    assert!(response.header("content-type").is_some_and(|c| c.starts_with("text/plain")));
    for name in [
        "crier_web_requests_total",
        "crier_web_publishes_total",
        "crier_web_publish_failures_total",
        "crier_web_logins_total",
        "crier_web_login_failures_total",
    ] {
        assert_eq!(prometheus::metric_type(&response.body, name), Some("counter"), "{name}");
    }
    assert_eq!(http::get(&format!("http://{admin_addr}/readyz")).await.status, 200);

    let publishes = metric(&admin_addr, "crier_web_publishes_total").await;
    let client_errors = metric(&admin_addr, "crier_web_responses_4xx_total").await;
    let body = r#"{"facility":"f","broadcast":true,"message":"m","expire":0}"#;
    let ok = http::post_json(&format!("http://{web}/api/publish"), Some(TOKEN), body).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let refused = http::post_json(&format!("http://{web}/api/publish"), Some("wrong"), body).await;
    assert_eq!(refused.status, 401);
    assert_eq!(metric(&admin_addr, "crier_web_publishes_total").await, publishes + 1.0);
    assert_eq!(metric(&admin_addr, "crier_web_responses_4xx_total").await, client_errors + 1.0);

    // Redis away: publishing fails with 503 and is counted; readiness follows.
    redis.stop().await;
    let failed = http::post_json(&format!("http://{web}/api/publish"), Some(TOKEN), body).await;
    assert_eq!(failed.status, 503, "{}", failed.body);
    assert_eq!(metric(&admin_addr, "crier_web_publish_failures_total").await, 1.0);
    assert_eq!(http::get(&format!("http://{admin_addr}/readyz")).await.status, 503);
    redis.restart().await;
    crier_tests::wait_until(Duration::from_secs(10), "webserver ready again", || async {
        http::get(&format!("http://{admin_addr}/readyz")).await.status == 200
    })
    .await;

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

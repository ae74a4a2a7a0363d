//! webserver's counters and their Prometheus text; every metric name is written here only.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub publishes: AtomicU64,
    pub publish_channels: AtomicU64,
    pub publish_receivers: AtomicU64,
    pub publish_failures: AtomicU64,
    pub logins: AtomicU64,
    pub login_failures: AtomicU64,
    /// History appends of every publish (API and pages), shared with the store.
    pub history: Arc<service::history_metrics::HistoryMetrics>,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Relaxed));
        };
        counter("crier_web_requests_total", "HTTP requests answered.", &self.requests);
        counter("crier_web_responses_4xx_total", "Answers with a 4xx status.", &self.responses_4xx);
        counter("crier_web_responses_5xx_total", "Answers with a 5xx status.", &self.responses_5xx);
        counter("crier_web_publishes_total", "Successful POST /api/publish requests.", &self.publishes);
        counter("crier_web_publish_channels_total", "Channels published to through the API.", &self.publish_channels);
        counter(
            "crier_web_publish_receivers_total",
            "Subscriptions reached by API publishes (PUBLISH replies).",
            &self.publish_receivers,
        );
        counter(
            "crier_web_publish_failures_total",
            "API publishes refused because Redis was unavailable.",
            &self.publish_failures,
        );
        counter("crier_web_logins_total", "Successful logins.", &self.logins);
        counter("crier_web_login_failures_total", "Refused logins (wrong name or password).", &self.login_failures);
        self.history.render(&mut out);
        out
    }

    /// Counts one answered request by status class.
    pub fn answered(&self, status: hyper::StatusCode) {
        self.requests.fetch_add(1, Relaxed);
        if status.is_client_error() {
            self.responses_4xx.fetch_add(1, Relaxed);
        } else if status.is_server_error() {
            self.responses_5xx.fetch_add(1, Relaxed);
        }
    }
}

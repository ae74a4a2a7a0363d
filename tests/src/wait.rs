//! Polling a condition until it holds: for readiness and for effects that have no event to wait
//! on (e.g. "PUBSUB NUMSUB becomes 0"). Intervals start at 5 ms and grow to 100 ms.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `condition` until it returns true; false when `timeout` passes first.
pub async fn try_wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(5);
    loop {
        if condition().await {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(Duration::from_millis(100));
    }
}

/// Polls `condition` until it returns true; panics naming `what` when `timeout` passes first.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if !try_wait_until(timeout, condition).await {
        panic!("timed out after {timeout:?} waiting until {what}");
    }
}

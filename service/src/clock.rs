//! The wall clock as both binaries stamp Redis records (presence scores, invitations, games):
//! milliseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 if the clock is set before 1970.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_milliseconds_since_the_epoch() {
        let before = super::now_ms();
        // 2020-01-01 in ms: any sane clock is past it.
        assert!(before > 1_577_836_800_000);
        assert!(super::now_ms() >= before);
    }
}

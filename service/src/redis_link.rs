//! The command connection to Redis both binaries use (multiplexed, reconnecting, with a response
//! timeout so callers get an error instead of hanging during an outage), and the one place the
//! ws4redis publish sequence (PUBLISH, then SET .. EX when expire > 0) is written.

use std::time::Duration;

use protocol::ChannelName;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Longest a command may take before the caller gets an error.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client for `url` whose TCP connections send every command at once (`TCP_NODELAY`): with
/// Nagle's algorithm a command written while an earlier one is unanswered would wait for that
/// answer, one more round trip for pipelined publishes.
pub fn client(url: &str) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info()?.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info)
}

/// A command connection that connects lazily, so a process starts while Redis is down. It
/// reconnects with the delays of [`crate::reconnect`], one retry per failed command.
pub fn command_connection(client: redis::Client) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(crate::reconnect::MIN_DELAY)
        .set_exponent_base(crate::reconnect::FACTOR as f32)
        .set_max_delay(crate::reconnect::MAX_DELAY);
    ConnectionManager::new_lazy_with_config(client, config)
}

/// PUBLISH `payload` to each channel and, when `expire` > 0, store it as the channel's last
/// message with SET .. EX, in one round trip. Returns the sum of PUBLISH receiver counts.
pub async fn publish(
    conn: &mut ConnectionManager,
    channels: &[ChannelName],
    payload: &[u8],
    expire: u64,
) -> redis::RedisResult<u64> {
    if let ([channel], 0) = (channels, expire) {
        // The publish API's usual request: one command, without a pipeline's allocations.
        return redis::cmd("PUBLISH").arg(channel.as_str()).arg(payload).query_async(conn).await;
    }
    let mut pipe = redis::pipe();
    for c in channels {
        pipe.cmd("PUBLISH").arg(c.as_str()).arg(payload);
        if expire > 0 {
            pipe.cmd("SET").arg(c.as_str()).arg(payload).arg("EX").arg(expire).ignore();
        }
    }
    let receivers: Vec<u64> = pipe.query_async(conn).await?;
    Ok(receivers.iter().sum())
}

#[cfg(test)]
mod tests {
    #[test]
    fn clients_send_commands_without_nagle_delay() {
        let client = super::client("redis://127.0.0.1:6379/0").expect("a valid URL");
        assert!(client.get_connection_info().tcp_settings().nodelay());
        assert!(super::client("http://not-redis").is_err());
    }
}

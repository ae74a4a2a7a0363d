//! A channel's history in Redis (a stream plus a meta hash, see `protocol::keys`): the atomic
//! append-and-publish both binaries use on history facilities, and the read a connecting
//! opted-in socket makes between subscribing and going live.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use protocol::{ChannelName, Epoch, GapReason, HistorySettings, KeyPrefix, Position, Recover, Status};
use redis::aio::ConnectionLike;
use redis::Value;

use crate::history_script::{self, Call, Script};

static APPEND: Script = Script::new(history_script::APPEND);
static READ: Script = Script::new(history_script::READ);

/// Why a history operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected answer from the history script: {0}")]
    Answer(String),
}

/// One message as the history holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub offset: u64,
    pub payload: Vec<u8>,
}

/// What one append-and-publish did on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub position: Position,
    /// PUBLISH's receiver count (Redis connections subscribed, not sockets).
    pub receivers: u64,
}

/// What the history holds for one channel, read for one connecting socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelHistory {
    /// The current epoch and the offset of the last message published in it.
    pub top: Position,
    /// The client's offset in the current epoch, if it sent one.
    pub client_offset: Option<u64>,
    /// The messages after the client's offset, when the history could hold all of them.
    pub entries: Option<Vec<Entry>>,
}

/// What a connecting socket gets for one channel: its status, the missed messages, and the
/// position after which live messages are new to it (older ones are dropped by the merge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub status: Status,
    pub missed: Vec<Entry>,
    pub live_after: Option<Position>,
}

impl ChannelHistory {
    /// Decides the status for a socket that sent `recover`.
    pub fn recovery(self, recover: &Recover) -> Recovery {
        let top = self.top;
        let gap = |reason| Recovery {
            status: Status::Gap { reason, continue_from: Some(top) },
            missed: Vec::new(),
            live_after: Some(top),
        };
        let Some(offset) = self.client_offset else {
            if recover.is_reconnect() {
                return gap(GapReason::EpochChanged);
            }
            return Recovery { status: Status::Position(Some(top)), missed: Vec::new(), live_after: Some(top) };
        };
        if offset > top.offset {
            return gap(GapReason::Unavailable);
        }
        let entries = self.entries.unwrap_or_default();
        let complete = entries.len() as u64 == top.offset - offset
            && entries.iter().zip(offset + 1..).all(|(e, expected)| e.offset == expected);
        if !complete {
            return gap(GapReason::TooOld);
        }
        Recovery {
            status: Status::Recovered { position: Position { epoch: top.epoch, offset }, missed: entries.len() as u64 },
            missed: entries,
            live_after: Some(top),
        }
    }
}

/// The status for a socket that sent `recover` on a facility without history.
pub fn without_history(recover: &Recover) -> Recovery {
    let status = if recover.is_reconnect() {
        Status::Gap { reason: GapReason::NoHistory, continue_from: None }
    } else {
        Status::Position(None)
    };
    Recovery { status, missed: Vec::new(), live_after: None }
}

/// The status for a channel whose history could not be read.
pub fn unavailable() -> Recovery {
    Recovery {
        status: Status::Gap { reason: GapReason::Unavailable, continue_from: None },
        missed: Vec::new(),
        live_after: None,
    }
}

/// The history of the channels of one deployment: settings, key prefix and epoch source.
pub struct History {
    settings: HistorySettings,
    prefix: KeyPrefix,
    /// The settings as the scripts' arguments, formatted once rather than on every publish.
    size_arg: String,
    ttl_arg: String,
    meta_ttl_arg: String,
    publish: crate::redis_target::PublishCommand,
}

impl History {
    pub fn new(settings: HistorySettings, prefix: KeyPrefix) -> History {
        History {
            size_arg: settings.size.to_string(),
            ttl_arg: settings.ttl.as_secs().to_string(),
            meta_ttl_arg: HistorySettings::META_TTL.as_secs().to_string(),
            settings,
            prefix,
            publish: crate::redis_target::PublishCommand::Publish,
        }
    }

    /// Publishes with `publish` (`SPUBLISH` on a cluster) instead of `PUBLISH`.
    pub fn publishing_with(self, publish: crate::redis_target::PublishCommand) -> History {
        History { publish, ..self }
    }

    pub fn settings(&self) -> &HistorySettings {
        &self.settings
    }

    /// Appends `payload` to each channel's history and publishes it there with its position,
    /// one script per channel (pipelined), and stores it as the ws4redis last message when
    /// `expire` > 0. Fails on the first channel Redis refused.
    pub async fn append_and_publish<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        channels: &[ChannelName],
        payload: &[u8],
        expire: u64,
    ) -> Result<Vec<Appended>, HistoryError> {
        let expire = expire.to_string();
        let keys: Vec<[String; 2]> =
            channels.iter().map(|c| [self.prefix.history_stream(c), self.prefix.history_meta(c)]).collect();
        let epochs: Vec<String> = channels.iter().map(|_| new_epoch().to_string()).collect();
        let calls: Vec<Call<'_>> = channels
            .iter()
            .zip(&keys)
            .zip(&epochs)
            .map(|((channel, [stream, meta]), epoch)| {
                let keys = vec![stream.as_bytes(), meta.as_bytes(), channel.as_str().as_bytes()];
                let args = vec![
                    payload,
                    self.size_arg.as_bytes(),
                    self.ttl_arg.as_bytes(),
                    self.meta_ttl_arg.as_bytes(),
                    epoch.as_bytes(),
                    expire.as_bytes(),
                    protocol::positioned::MAGIC,
                    self.publish.as_str().as_bytes(),
                ];
                (keys, args)
            })
            .collect();
        let answers = APPEND.run(conn, &calls).await?;
        answers.into_iter().map(|a| parse_appended(a?)).collect()
    }

    /// Reads each channel's position and, where the client sent a position in the channel's
    /// current epoch, the messages after it (one script per channel, pipelined). A channel
    /// without an epoch gets one (offset 0), so every answer has a position.
    pub async fn read<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        channels: &[ChannelName],
        recover: &Recover,
    ) -> Result<Vec<ChannelHistory>, HistoryError> {
        let tokens: Vec<[String; 2]> =
            recover.positions.iter().map(|p| [p.epoch.to_string(), p.offset.to_string()]).collect();
        let keys: Vec<[String; 2]> =
            channels.iter().map(|c| [self.prefix.history_stream(c), self.prefix.history_meta(c)]).collect();
        let epochs: Vec<String> = channels.iter().map(|_| new_epoch().to_string()).collect();
        let calls: Vec<Call<'_>> = keys
            .iter()
            .zip(&epochs)
            .map(|([stream, meta], epoch)| {
                let mut args = vec![epoch.as_bytes(), self.meta_ttl_arg.as_bytes(), self.size_arg.as_bytes()];
                for [e, o] in &tokens {
                    args.push(e.as_bytes());
                    args.push(o.as_bytes());
                }
                (vec![stream.as_bytes(), meta.as_bytes()], args)
            })
            .collect();
        let answers = READ.run(conn, &calls).await?;
        answers.into_iter().map(|a| parse_read(a?)).collect()
    }
}

/// A fresh random epoch: a per-process random seed (from the OS) mixed with a counter
/// (splitmix64), so epochs are unpredictable across processes and distinct within one.
pub fn new_epoch() -> Epoch {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        u64::from_le_bytes(bytes)
    });
    let mut z = seed.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Epoch::from_u64(z ^ (z >> 31))
}

fn bad(what: &str, value: &Value) -> HistoryError {
    HistoryError::Answer(format!("{what}: {value:?}"))
}

fn parse_epoch(value: &Value) -> Result<Epoch, HistoryError> {
    match value {
        Value::BulkString(b) => Epoch::parse_bytes(b).map_err(|_| bad("epoch", value)),
        _ => Err(bad("epoch", value)),
    }
}

fn parse_u64(value: &Value) -> Result<u64, HistoryError> {
    match value {
        Value::Int(n) => u64::try_from(*n).map_err(|_| bad("number", value)),
        Value::BulkString(b) => {
            std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or_else(|| bad("number", value))
        }
        _ => Err(bad("number", value)),
    }
}

fn parse_appended(value: Value) -> Result<Appended, HistoryError> {
    let Value::Array(items) = &value else { return Err(bad("append", &value)) };
    let [epoch, offset, receivers] = items.as_slice() else { return Err(bad("append", &value)) };
    Ok(Appended {
        position: Position { epoch: parse_epoch(epoch)?, offset: parse_u64(offset)? },
        receivers: parse_u64(receivers)?,
    })
}

fn parse_read(value: Value) -> Result<ChannelHistory, HistoryError> {
    let Value::Array(items) = &value else { return Err(bad("read", &value)) };
    let [epoch, top, client, entries] = items.as_slice() else { return Err(bad("read", &value)) };
    let top = Position { epoch: parse_epoch(epoch)?, offset: parse_u64(top)? };
    let client_offset = match client {
        Value::Nil | Value::Boolean(false) => None,
        v => Some(parse_u64(v)?),
    };
    let entries = match entries {
        Value::Nil | Value::Boolean(false) => None,
        Value::Array(list) => Some(list.iter().map(parse_entry).collect::<Result<_, _>>()?),
        v => return Err(bad("entries", v)),
    };
    Ok(ChannelHistory { top, client_offset, entries })
}

/// One XRANGE entry: `[id "<offset>-0", ["d", payload]]`.
fn parse_entry(value: &Value) -> Result<Entry, HistoryError> {
    let Value::Array(parts) = value else { return Err(bad("entry", value)) };
    let [Value::BulkString(id), Value::Array(fields)] = parts.as_slice() else { return Err(bad("entry", value)) };
    let offset = std::str::from_utf8(id)
        .ok()
        .and_then(|id| id.strip_suffix("-0"))
        .and_then(|o| o.parse().ok())
        .ok_or_else(|| bad("entry id", value))?;
    let payload = fields
        .chunks(2)
        .find_map(|kv| match kv {
            [Value::BulkString(k), Value::BulkString(v)] if k == b"d" => Some(v.clone()),
            _ => None,
        })
        .ok_or_else(|| bad("entry fields", value))?;
    Ok(Entry { offset, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(offset: u64) -> Position {
        Position { epoch: Epoch::from_u64(7), offset }
    }

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        range.map(|offset| Entry { offset, payload: offset.to_string().into_bytes() }).collect()
    }

    fn reconnect() -> Recover {
        Recover { positions: vec![Position { epoch: Epoch::from_u64(7), offset: 3 }] }
    }

    #[test]
    fn first_connection_gets_the_top() {
        let h = ChannelHistory { top: top(5), client_offset: None, entries: None };
        let r = h.recovery(&Recover::default());
        assert_eq!(r.status, Status::Position(Some(top(5))));
        assert_eq!(r.live_after, Some(top(5)));
    }

    #[test]
    fn complete_entries_are_recovered() {
        let h = ChannelHistory { top: top(5), client_offset: Some(3), entries: Some(entries(4..=5)) };
        let r = h.recovery(&reconnect());
        assert_eq!(r.status, Status::Recovered { position: top(3), missed: 2 });
        assert_eq!(r.missed, entries(4..=5));
        let h = ChannelHistory { top: top(3), client_offset: Some(3), entries: None };
        assert_eq!(h.recovery(&reconnect()).status, Status::Recovered { position: top(3), missed: 0 });
    }

    #[test]
    fn missing_entries_are_a_gap() {
        let too_old = Status::Gap { reason: GapReason::TooOld, continue_from: Some(top(9)) };
        for kept in [None, Some(entries(5..=9)), Some(Vec::new())] {
            let h = ChannelHistory { top: top(9), client_offset: Some(3), entries: kept };
            let r = h.recovery(&reconnect());
            assert_eq!(r.status, too_old);
            assert!(r.missed.is_empty());
        }
        let other_epoch = ChannelHistory { top: top(9), client_offset: None, entries: None };
        let r = other_epoch.recovery(&reconnect());
        assert_eq!(r.status, Status::Gap { reason: GapReason::EpochChanged, continue_from: Some(top(9)) });
        let ahead = ChannelHistory { top: top(2), client_offset: Some(3), entries: None };
        assert!(matches!(ahead.recovery(&reconnect()).status, Status::Gap { reason: GapReason::Unavailable, .. }));
    }

    #[test]
    fn no_history_facilities() {
        assert_eq!(without_history(&Recover::default()).status, Status::Position(None));
        assert_eq!(
            without_history(&reconnect()).status,
            Status::Gap { reason: GapReason::NoHistory, continue_from: None }
        );
    }

    #[test]
    fn epochs_differ() {
        let a = new_epoch();
        let b = new_epoch();
        assert_ne!(a, b);
    }
}

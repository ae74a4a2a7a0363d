//! The JSON objects an opted-in (`recover`) socket receives: one status object per channel on
//! connect (`position`, `recovered` or `gap`), then `message` objects. The README's protocol
//! section is the normative description; this module is its one implementation.

use serde::Serialize;

use crate::audience::Audience;
use crate::position::{Epoch, Position};

/// Which audience a channel addresses, as an opted-in client is told it: the group's name for a
/// group channel, nothing else (user names and session keys never appear).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelAudience {
    pub audience: Audience,
    pub group: Option<String>,
}

/// Why a position could not be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GapReason {
    /// The facility keeps no history (only sent to a socket that sent positions).
    NoHistory,
    /// No token for the channel's current epoch: the history was lost, expired or is new.
    EpochChanged,
    /// The history no longer holds the messages after the client's offset.
    TooOld,
    /// The history could not be read (Redis unavailable) or the position is not one the history
    /// ever handed out.
    Unavailable,
}

impl GapReason {
    pub const ALL: [GapReason; 4] =
        [GapReason::NoHistory, GapReason::EpochChanged, GapReason::TooOld, GapReason::Unavailable];

    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::NoHistory => "no-history",
            GapReason::EpochChanged => "epoch-changed",
            GapReason::TooOld => "too-old",
            GapReason::Unavailable => "unavailable",
        }
    }
}

/// The status object sent once per channel before any live message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// First connection: where the client starts (`None` when the facility has no history).
    Position(Option<Position>),
    /// The client's position was served: `missed` messages follow.
    Recovered { position: Position, missed: u64 },
    /// The position could not be served; `continue_from` is the position live messages follow
    /// (`None` when the facility has no history).
    Gap { reason: GapReason, continue_from: Option<Position> },
}

#[derive(Serialize)]
struct StatusObject<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    audience: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    epoch: Option<Epoch>,
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    missed: Option<u64>,
}

#[derive(Serialize)]
struct MessageObject<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    audience: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<Epoch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    data: &'a str,
}

impl Status {
    /// The status object's JSON text for one channel.
    pub fn to_json(&self, channel: &ChannelAudience) -> String {
        let (kind, reason, position, missed) = match self {
            Status::Position(p) => ("position", None, *p, None),
            Status::Recovered { position, missed } => ("recovered", None, Some(*position), Some(*missed)),
            Status::Gap { reason, continue_from } => ("gap", Some(reason.as_str()), *continue_from, None),
        };
        let object = StatusObject {
            kind,
            audience: channel.audience.as_str(),
            group: channel.group.as_deref(),
            reason,
            epoch: position.map(|p| p.epoch),
            offset: position.map(|p| p.offset),
            missed,
        };
        serde_json::to_string(&object).expect("a status object always serializes")
    }
}

/// The `message` object's JSON text: `position` is absent for messages published without
/// history. A payload that is not UTF-8 is sent with U+FFFD in place of its bad bytes.
pub fn message_json(channel: &ChannelAudience, position: Option<Position>, payload: &[u8]) -> String {
    let data = String::from_utf8_lossy(payload);
    let object = MessageObject {
        kind: "message",
        audience: channel.audience.as_str(),
        group: channel.group.as_deref(),
        epoch: position.map(|p| p.epoch),
        offset: position.map(|p| p.offset),
        data: &data,
    };
    serde_json::to_string(&object).expect("a message object always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn broadcast() -> ChannelAudience {
        ChannelAudience { audience: Audience::Broadcast, group: None }
    }

    fn pos(offset: u64) -> Position {
        Position { epoch: Epoch::parse("3f9a1c07b2e4d611").unwrap(), offset }
    }

    fn parsed(text: String) -> Value {
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn status_objects_match_the_contract() {
        let b = broadcast();
        assert_eq!(
            parsed(Status::Position(Some(pos(42))).to_json(&b)),
            json!({"type":"position","audience":"broadcast","epoch":"3f9a1c07b2e4d611","offset":42})
        );
        assert_eq!(
            parsed(Status::Position(None).to_json(&b)),
            json!({"type":"position","audience":"broadcast","epoch":null,"offset":null})
        );
        assert_eq!(
            parsed(Status::Recovered { position: pos(40), missed: 2 }.to_json(&b)),
            json!({"type":"recovered","audience":"broadcast","epoch":"3f9a1c07b2e4d611","offset":40,"missed":2})
        );
        let g = ChannelAudience { audience: Audience::Group, group: Some("chatters".into()) };
        assert_eq!(
            parsed(Status::Gap { reason: GapReason::TooOld, continue_from: Some(pos(9)) }.to_json(&g)),
            json!({"type":"gap","audience":"group","group":"chatters","reason":"too-old",
                   "epoch":"3f9a1c07b2e4d611","offset":9})
        );
        assert_eq!(
            parsed(Status::Gap { reason: GapReason::NoHistory, continue_from: None }.to_json(&b)),
            json!({"type":"gap","audience":"broadcast","reason":"no-history","epoch":null,"offset":null})
        );
    }

    #[test]
    fn message_objects_match_the_contract() {
        let b = broadcast();
        assert_eq!(
            parsed(message_json(&b, Some(pos(43)), b"hi \"there\"")),
            json!({"type":"message","audience":"broadcast","epoch":"3f9a1c07b2e4d611","offset":43,"data":"hi \"there\""})
        );
        let u = ChannelAudience { audience: Audience::User, group: None };
        assert_eq!(
            parsed(message_json(&u, None, b"x\xff")),
            json!({"type":"message","audience":"user","data":"x\u{fffd}"})
        );
    }
}

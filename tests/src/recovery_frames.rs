//! The frames an opted-in (`recover`) socket receives, as a client reads them (status and
//! message objects, the README's recovery contract), and the positions it sends back on
//! reconnecting. Shared by the strict checker ([`crate::recovering`]) and the ws4redis.js-like
//! client ([`crate::recovering_client`]).

use std::collections::BTreeMap;

use serde_json::Value;

/// One frame of an opted-in socket, as the contract defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryFrame {
    /// A status object: `position`, `recovered` or `gap`.
    Status { kind: String, epoch: Option<String>, offset: Option<u64> },
    /// A message object: its payload and position (none for plain PUBLISH messages).
    Message { data: String, epoch: Option<String>, offset: Option<u64> },
    /// Anything else (a server that ignored `recover`, a heartbeat).
    Raw(String),
}

impl RecoveryFrame {
    pub fn parse(text: &str) -> RecoveryFrame {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|value| RecoveryFrame::of_value(&value))
            .unwrap_or_else(|| RecoveryFrame::Raw(text.to_owned()))
    }

    /// The status or message object `value` is; `None` when it is neither (not an object, an
    /// unknown `type`, a message without `data`).
    pub fn of_value(value: &Value) -> Option<RecoveryFrame> {
        let object = value.as_object()?;
        let epoch = object.get("epoch").and_then(Value::as_str).map(str::to_owned);
        let offset = object.get("offset").and_then(Value::as_u64);
        match (object.get("type").and_then(Value::as_str), object.get("data").and_then(Value::as_str)) {
            (Some("message"), Some(data)) => Some(RecoveryFrame::Message { data: data.to_owned(), epoch, offset }),
            (Some(kind @ ("position" | "recovered" | "gap")), _) => {
                Some(RecoveryFrame::Status { kind: kind.to_owned(), epoch, offset })
            }
            _ => None,
        }
    }
}

/// The highest offset seen per epoch; what a reconnection sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions(BTreeMap<String, u64>);

impl Positions {
    pub fn advance(&mut self, epoch: &str, offset: u64) {
        let seen = self.0.entry(epoch.to_owned()).or_insert(offset);
        *seen = (*seen).max(offset);
    }

    /// The highest offset seen in `epoch`.
    pub fn get(&self, epoch: &str) -> Option<u64> {
        self.0.get(epoch).copied()
    }

    /// `url` with the `recover` key: empty without positions, else `<epoch>:<offset>` tokens.
    pub fn recover_url(&self, url: &str) -> String {
        let separator = if url.contains('?') { '&' } else { '?' };
        let tokens: Vec<String> = self.0.iter().map(|(e, o)| format!("{e}:{o}")).collect();
        if tokens.is_empty() {
            format!("{url}{separator}recover")
        } else {
            format!("{url}{separator}recover={}", tokens.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_the_contract() {
        assert_eq!(
            RecoveryFrame::parse(
                r#"{"type":"message","audience":"broadcast","epoch":"3f9a1c07b2e4d611","offset":43,"data":"7"}"#
            ),
            RecoveryFrame::Message { data: "7".into(), epoch: Some("3f9a1c07b2e4d611".into()), offset: Some(43) }
        );
        assert_eq!(
            RecoveryFrame::parse(r#"{"type":"message","audience":"broadcast","data":"plain"}"#),
            RecoveryFrame::Message { data: "plain".into(), epoch: None, offset: None }
        );
        assert_eq!(
            RecoveryFrame::parse(
                r#"{"type":"gap","audience":"broadcast","reason":"too-old","epoch":null,"offset":null}"#
            ),
            RecoveryFrame::Status { kind: "gap".into(), epoch: None, offset: None }
        );
        assert_eq!(RecoveryFrame::parse("12"), RecoveryFrame::Raw("12".into()));
        assert_eq!(RecoveryFrame::parse(r#"{"type":"game"}"#), RecoveryFrame::Raw(r#"{"type":"game"}"#.into()));
    }

    #[test]
    fn recover_url_empty_then_one_token_per_epoch() {
        let mut p = Positions::default();
        assert_eq!(p.recover_url("ws://h/ws/a?subscribe-broadcast"), "ws://h/ws/a?subscribe-broadcast&recover");
        assert_eq!(p.recover_url("ws://h/ws/a"), "ws://h/ws/a?recover");
        p.advance("8be0aa13c9f2d470", 7);
        p.advance("3f9a1c07b2e4d611", 42);
        p.advance("3f9a1c07b2e4d611", 41);
        assert_eq!(p.recover_url("ws://h/ws/a?x"), "ws://h/ws/a?x&recover=3f9a1c07b2e4d611:42,8be0aa13c9f2d470:7");
    }

    #[test]
    fn a_message_without_data_or_an_unknown_type_is_no_frame_of_the_contract() {
        assert_eq!(RecoveryFrame::of_value(&serde_json::json!({"type": "message"})), None);
        assert_eq!(RecoveryFrame::of_value(&serde_json::json!({"type": "hello"})), None);
        assert_eq!(RecoveryFrame::of_value(&serde_json::json!([1])), None);
    }
}

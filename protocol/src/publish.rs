//! The publish API's request body and its validation into a list of channels.

use crate::facility::{Facility, FacilityError};
use crate::keys::{ChannelName, KeyPrefix};
use crate::name::{Name, SessionKey};

/// `POST /api/publish` body. Every audience field is optional; at least one must address
/// somebody.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub facility: String,
    #[serde(default)]
    pub broadcast: bool,
    #[serde(default)]
    pub users: Vec<Name>,
    #[serde(default)]
    pub groups: Vec<Name>,
    #[serde(default)]
    pub sessions: Vec<SessionKey>,
    pub message: String,
    /// Seconds to keep the message as the channel's last message; 0 publishes only. Absent:
    /// the server's configured default.
    #[serde(default)]
    pub expire: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("facility: {0}")]
    Facility(#[from] FacilityError),
    #[error("no audience: set broadcast, users, groups or sessions")]
    NoAudience,
    #[error("too many recipients: {count} channels, at most {max}")]
    TooManyChannels { count: usize, max: usize },
    #[error("expire must be at most {max} seconds")]
    ExpireTooLong { max: u64 },
}

/// A validated publish: the channels to reach, the payload and the expiry to store it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The facility, which decides whether the message goes through the history.
    pub facility: Facility,
    pub channels: Vec<ChannelName>,
    pub message: String,
    pub expire: u64,
}

impl PublishRequest {
    /// Most channels one request may address.
    pub const MAX_CHANNELS: usize = 10_000;
    /// Longest expire accepted: 30 days.
    pub const MAX_EXPIRE: u64 = 30 * 24 * 3600;

    pub fn from_json(body: &[u8]) -> Result<PublishRequest, PublishError> {
        serde_json::from_slice(body).map_err(|e| PublishError::Json(e.to_string()))
    }

    /// Resolves the request into channels under `prefix`, with `default_expire` when the
    /// request gives none. Duplicates are removed; broadcast comes first, as in ws4redis.
    pub fn into_publication(self, prefix: &KeyPrefix, default_expire: u64) -> Result<Publication, PublishError> {
        let facility = Facility::parse_non_empty(&self.facility)?;
        let expire = self.expire.unwrap_or(default_expire);
        if expire > Self::MAX_EXPIRE {
            return Err(PublishError::ExpireTooLong { max: Self::MAX_EXPIRE });
        }
        let count = usize::from(self.broadcast) + self.users.len() + self.groups.len() + self.sessions.len();
        if count == 0 {
            return Err(PublishError::NoAudience);
        }
        if count > Self::MAX_CHANNELS {
            return Err(PublishError::TooManyChannels { count, max: Self::MAX_CHANNELS });
        }
        let mut channels = Vec::with_capacity(count);
        if self.broadcast {
            channels.push(prefix.broadcast(&facility));
        }
        channels.extend(self.groups.iter().map(|g| prefix.group(g, &facility)));
        channels.extend(self.users.iter().map(|u| prefix.user(u, &facility)));
        channels.extend(self.sessions.iter().map(|s| prefix.session(s, &facility)));
        if channels.len() > 1 {
            let mut seen = std::collections::HashSet::with_capacity(channels.len());
            channels.retain(|c| seen.insert(c.clone()));
        }
        Ok(Publication { facility, channels, message: self.message, expire })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(body: &str) -> Result<Publication, PublishError> {
        PublishRequest::from_json(body.as_bytes())?.into_publication(&KeyPrefix::default(), 3600)
    }

    #[test]
    fn resolves_every_audience() {
        let p = publication(
            r#"{"facility":"chat","broadcast":true,"users":["ann","ann"],"groups":["admins"],"sessions":["k"],"message":"m","expire":60}"#,
        )
        .unwrap();
        let names: Vec<_> = p.channels.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["broadcast:chat", "group:admins:chat", "user:ann:chat", "session:k:chat"]);
        assert_eq!(p.expire, 60);
        assert_eq!(publication(r#"{"facility":"c","users":["a"],"message":"m"}"#).unwrap().expire, 3600);
    }

    #[test]
    fn refuses_bad_requests() {
        assert!(matches!(publication("{"), Err(PublishError::Json(_))));
        assert!(matches!(publication(r#"{"facility":"c","message":"m"}"#), Err(PublishError::NoAudience)));
        assert!(matches!(
            publication(r#"{"facility":"","broadcast":true,"message":"m"}"#),
            Err(PublishError::Facility(FacilityError::Empty))
        ));
        assert!(matches!(publication(r#"{"facility":"c","users":["a:b"],"message":"m"}"#), Err(PublishError::Json(_))));
        assert!(matches!(
            publication(r#"{"facility":"c","broadcast":true,"message":"m","expire":99999999}"#),
            Err(PublishError::ExpireTooLong { .. })
        ));
    }
}

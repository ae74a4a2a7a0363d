//! The session record webserver writes to Redis at login and wsserver reads to resolve a cookie.

use crate::identity::Identity;
use crate::name::{Name, SessionKey};

/// Name of the cookie carrying the session key: Django's default, which ws4redis reads, so a
/// Django site and Crier share sessions. webserver sets it, wsserver reads it.
pub const SESSION_COOKIE: &str = "sessionid";

/// Stored as JSON under [`crate::KeyPrefix::session_record`], with a TTL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    pub user: Name,
    #[serde(default)]
    pub groups: Vec<Name>,
    /// Token for CSRF protection of the session's form posts.
    #[serde(default)]
    pub csrf: String,
}

impl SessionRecord {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a session record always serialises")
    }

    pub fn from_json(raw: &[u8]) -> Result<SessionRecord, serde_json::Error> {
        serde_json::from_slice(raw)
    }

    pub fn identity(&self, session: SessionKey) -> Identity {
        Identity { user: Some(self.user.clone()), groups: self.groups.clone(), session: Some(session) }
    }
}

//! Who a websocket client is: `{ user, groups, session }`, any part may be absent.

use crate::name::{Name, SessionKey};

/// The identity a connection resolves to. `groups` only count when `user` is present, as in
/// ws4redis (groups come from the logged-in user's session).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    #[serde(default)]
    pub user: Option<Name>,
    #[serde(default)]
    pub groups: Vec<Name>,
    #[serde(default)]
    pub session: Option<SessionKey>,
}

impl Identity {
    pub fn anonymous(session: Option<SessionKey>) -> Identity {
        Identity { user: None, groups: Vec::new(), session }
    }

    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// Decodes the JSON answer of an auth callback: `{"user": .., "groups": [..], "session": ..}`.
    /// Every name is validated; a name with `:` or control characters fails the whole identity.
    pub fn from_json(body: &[u8]) -> Result<Identity, serde_json::Error> {
        let mut identity: Identity = serde_json::from_slice(body)?;
        if identity.user.is_none() {
            identity.groups.clear();
        }
        identity.groups.sort();
        identity.groups.dedup();
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_callback_answers() {
        let id = Identity::from_json(br#"{"user":"ann","groups":["b","a","a"],"session":"k1"}"#).unwrap();
        assert_eq!(id.user.unwrap().as_str(), "ann");
        assert_eq!(id.groups.len(), 2);
        let anon = Identity::from_json(br#"{"groups":["a"]}"#).unwrap();
        assert!(anon.groups.is_empty() && anon.user.is_none());
        assert!(Identity::from_json(br#"{"user":"a:b"}"#).is_err());
        assert!(Identity::from_json(br#"{"user":"a\u0000"}"#).is_err());
        assert!(Identity::from_json(b"nope").is_err());
    }
}

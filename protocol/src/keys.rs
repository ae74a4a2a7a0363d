//! Every Redis name Crier reads or writes is built here and nowhere else: the ws4redis channel
//! names (which are also the keys of the persisted last message) and Crier's own keys for
//! sessions, accounts and presence.
//!
//! Channel layout (`{p}` is the prefix followed by `:`, or empty):
//! `{p}broadcast:{facility}`, `{p}user:{user}:{facility}`, `{p}group:{group}:{facility}`,
//! `{p}session:{session key}:{facility}`.
//! Crier's own keys live under `{p}crier:`, whose second segment (`sessions`, `accounts`, ...) is
//! never one of the four audience words, so they cannot collide with a channel.

use std::fmt;

use crate::audience::Audience;
use crate::facility::Facility;
use crate::identity::Identity;
use crate::name::{Name, SessionKey};

/// The configured ws4redis prefix (`WS4REDIS_PREFIX`), stored with its trailing `:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// An empty prefix gives ws4redis' unprefixed names; anything else gets `:` appended.
    pub fn new(prefix: &str) -> Result<KeyPrefix, crate::name::NameError> {
        if prefix.is_empty() {
            return Ok(KeyPrefix(String::new()));
        }
        if prefix.chars().any(char::is_control) {
            return Err(crate::name::NameError::ControlCharacter);
        }
        Ok(KeyPrefix(format!("{prefix}:")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn broadcast(&self, facility: &Facility) -> ChannelName {
        ChannelName(format!("{}broadcast:{}", self.0, facility))
    }

    pub fn user(&self, user: &Name, facility: &Facility) -> ChannelName {
        ChannelName(format!("{}user:{}:{}", self.0, user, facility))
    }

    pub fn group(&self, group: &Name, facility: &Facility) -> ChannelName {
        ChannelName(format!("{}group:{}:{}", self.0, group, facility))
    }

    pub fn session(&self, session: &SessionKey, facility: &Facility) -> ChannelName {
        ChannelName(format!("{}session:{}:{}", self.0, session, facility))
    }

    /// The channels of one audience for an identity ("SELF" in ws4redis): broadcast always,
    /// user and groups only when logged in, session only with a session key. Anything missing
    /// yields no channel, never a junk name.
    pub fn channels_for(&self, audience: Audience, identity: &Identity, facility: &Facility) -> Vec<ChannelName> {
        match audience {
            Audience::Broadcast => vec![self.broadcast(facility)],
            Audience::User => identity.user.iter().map(|u| self.user(u, facility)).collect(),
            Audience::Group => match identity.user {
                Some(_) => identity.groups.iter().map(|g| self.group(g, facility)).collect(),
                None => Vec::new(),
            },
            Audience::Session => identity.session.iter().map(|s| self.session(s, facility)).collect(),
        }
    }

    /// Where webserver keeps a login session record.
    pub fn session_record(&self, session: &SessionKey) -> String {
        format!("{}crier:sessions:{}", self.0, session)
    }

    /// Where an account (password hash and groups) is kept.
    pub fn account(&self, user: &Name) -> String {
        format!("{}crier:accounts:{}", self.0, user)
    }

    /// The set of all account names.
    pub fn account_index(&self) -> String {
        format!("{}crier:accounts", self.0)
    }

    /// The set of live session keys of one user (for logout-everywhere and socket revocation).
    pub fn user_sessions(&self, user: &Name) -> String {
        format!("{}crier:user-sessions:{}", self.0, user)
    }

    /// The sorted set of users present on a facility (score: expiry time in ms).
    pub fn presence(&self, facility: &Facility) -> String {
        format!("{}crier:presence:{}", self.0, facility)
    }

    /// The channel on which join/leave events of a facility are published: the broadcast
    /// channel of the facility `presence/<facility>`, so that any ws4redis client can subscribe
    /// with `/ws/presence/<facility>?subscribe-broadcast`.
    pub fn presence_events(&self, facility: &Facility) -> ChannelName {
        ChannelName(format!("{}broadcast:{}{}", self.0, crate::presence::EVENTS_FACILITY_PREFIX, facility))
    }

    /// Where webserver keeps one game's state (`id` is a token webserver generated: letters,
    /// digits and `-` only).
    pub fn game(&self, id: &str) -> String {
        debug_assert!(is_token(id), "game id {id:?}");
        format!("{}crier:games:{}", self.0, id)
    }

    /// Where webserver keeps one game invitation (`id` as for [`KeyPrefix::game`]).
    pub fn invitation(&self, id: &str) -> String {
        debug_assert!(is_token(id), "invitation id {id:?}");
        format!("{}crier:invitations:{}", self.0, id)
    }

    /// The sorted set of the invitations a user sent or received (score: expiry time in ms).
    pub fn user_invitations(&self, user: &Name) -> String {
        format!("{}crier:user-invitations:{}", self.0, user)
    }

    /// Channel that tells wsservers a session ended (logout), so its sockets can be closed.
    pub fn session_revocations(&self) -> ChannelName {
        ChannelName(format!("{}crier:session-revocations", self.0))
    }
}

fn is_token(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A Redis pub/sub channel name, which is also the key holding the channel's last message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);

impl ChannelName {
    /// Wraps a name received from Redis (a pub/sub message's channel).
    pub fn from_redis(name: &str) -> ChannelName {
        ChannelName(name.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws4redis_layout_with_and_without_prefix() {
        let f = Facility::parse("unittest").unwrap();
        let p = KeyPrefix::new("ws4redis").unwrap();
        assert_eq!(p.broadcast(&f).as_str(), "ws4redis:broadcast:unittest");
        assert_eq!(p.user(&Name::parse("john").unwrap(), &f).as_str(), "ws4redis:user:john:unittest");
        let none = KeyPrefix::new("").unwrap();
        assert_eq!(none.group(&Name::parse("chatters").unwrap(), &f).as_str(), "group:chatters:unittest");
        let s = SessionKey::parse("wnqd0gbw5obpnj50zwh6yaq2yz4o8g9x").unwrap();
        assert_eq!(none.session(&s, &f).as_str(), "session:wnqd0gbw5obpnj50zwh6yaq2yz4o8g9x:unittest");
    }

    #[test]
    fn anonymous_identity_gets_no_user_or_group_channels() {
        let f = Facility::parse("f").unwrap();
        let p = KeyPrefix::default();
        let anon = Identity::anonymous(None);
        assert!(p.channels_for(Audience::User, &anon, &f).is_empty());
        assert!(p.channels_for(Audience::Group, &anon, &f).is_empty());
        assert!(p.channels_for(Audience::Session, &anon, &f).is_empty());
        assert_eq!(p.channels_for(Audience::Broadcast, &anon, &f).len(), 1);
    }

    #[test]
    fn own_keys_never_collide_with_channels() {
        let p = KeyPrefix::default();
        let s = SessionKey::parse("k").unwrap();
        let ann = Name::parse("ann").unwrap();
        for key in
            [p.session_record(&s), p.account_index(), p.game("ab12"), p.invitation("cd34"), p.user_invitations(&ann)]
        {
            for a in Audience::ALL {
                assert!(!key.starts_with(&format!("{a}:")));
            }
        }
    }
}

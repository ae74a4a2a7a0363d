//! Every Redis name Crier reads or writes is built here and nowhere else: the ws4redis channel
//! names (which are also the keys of the persisted last message) and Crier's own keys for
//! sessions, accounts and presence.
//!
//! Channel layout (`{p}` is the prefix followed by `:`, or empty):
//! `{p}broadcast:{facility}`, `{p}user:{user}:{facility}`, `{p}group:{group}:{facility}`,
//! `{p}session:{session key}:{facility}`.
//! Crier's own keys live under `{p}crier:`, whose second segment (`sessions`, `accounts`, ...) is
//! never one of the four audience words, so they cannot collide with a channel.
//!
//! A channel's history is two keys, a stream and a meta hash (epoch and last offset):
//! `{p}crier:history:{<channel>}` and `{p}crier:history-meta:{<channel>}` (and a facility's
//! presence set is `{p}crier:presence:{<its events channel>}`). The braces are a
//! Redis Cluster hash tag: both keys hash like the channel name itself, which is the channel's
//! pub/sub slot and its last-message key, so one script can touch all three on one node. When the
//! channel name has a hash tag of its own (a `{...}` in a facility or prefix), the history keys
//! use that tag and append the full name: `{p}crier:history:{<tag>}:<channel>`. A channel name
//! containing `}` without a tag before it cannot be matched by any tag; its history keys are
//! `{p}crier:history:<channel>` (fine on a single Redis, not slot-aligned on a cluster).

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

    /// The sorted set of users present on a facility (score: expiry time in ms). Hash-tagged
    /// like the facility's events channel ([`KeyPrefix::presence_events`]), so the presence
    /// scripts that update it and publish there touch one Redis Cluster slot.
    pub fn presence(&self, facility: &Facility) -> String {
        self.tagged_key("presence", &self.presence_events(facility))
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

    /// The stream holding a channel's recent messages (entry id `<offset>-0`, field `d`).
    pub fn history_stream(&self, channel: &ChannelName) -> String {
        self.tagged_key("history", channel)
    }

    /// The hash holding a channel's history epoch (`e`) and last offset (`s`).
    pub fn history_meta(&self, channel: &ChannelName) -> String {
        self.tagged_key("history-meta", channel)
    }

    /// `{p}crier:<kind>:` and `channel` hash-tagged so the key shares the channel's slot.
    fn tagged_key(&self, kind: &str, channel: &ChannelName) -> String {
        let name = channel.as_str();
        let tag = cluster_hash_tag(name);
        if tag.len() == name.len() && !name.contains('}') {
            format!("{}crier:{kind}:{{{name}}}", self.0)
        } else if tag.len() != name.len() {
            format!("{}crier:{kind}:{{{tag}}}:{name}", self.0)
        } else {
            format!("{}crier:{kind}:{name}", self.0)
        }
    }

    /// The audience (and group name) a channel of this prefix addresses, as an opted-in socket
    /// is told it; `None` for a name that is not a ws4redis channel under this prefix.
    pub fn channel_audience(&self, channel: &ChannelName) -> Option<crate::recovery_frames::ChannelAudience> {
        let rest = channel.as_str().strip_prefix(self.0.as_str())?;
        let (word, rest) = rest.split_once(':')?;
        let audience = Audience::ALL.into_iter().find(|a| a.as_str() == word)?;
        let group = match audience {
            Audience::Group => Some(rest.split_once(':')?.0.to_owned()),
            _ => None,
        };
        Some(crate::recovery_frames::ChannelAudience { audience, group })
    }

    /// Channel that tells wsservers a session ended (logout), so its sockets can be closed.
    pub fn session_revocations(&self) -> ChannelName {
        ChannelName(format!("{}crier:session-revocations", self.0))
    }

    /// Private channel of one live hand-off between two wsserver processes (`nonce` is random
    /// per hand-off): its cut markers, see wsserver's `handoff` module.
    pub fn handoff_markers(&self, nonce: &str) -> ChannelName {
        ChannelName(format!("{}crier:handoff:{nonce}", self.0))
    }
}

/// The part of a key Redis Cluster hashes to find its slot: the text between the first `{` and
/// the first `}` after it when that is not empty, else the whole key.
pub fn cluster_hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
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
    fn history_keys_share_the_channel_slot() {
        let n = |s| Name::parse(s).unwrap();
        for prefix in ["", "ws4redis", "{app}"] {
            let p = KeyPrefix::new(prefix).unwrap();
            for facility in ["chat", "", "a{b", "x{tag}y", "{x}y"] {
                let f = Facility::parse(facility).unwrap();
                for c in [p.broadcast(&f), p.group(&n("g"), &f), p.user(&n("u"), &f)] {
                    for key in [p.history_stream(&c), p.history_meta(&c)] {
                        assert!(key.starts_with(&format!("{}crier:history", p.as_str())), "{key}");
                        assert_eq!(cluster_hash_tag(&key), cluster_hash_tag(c.as_str()), "{key} vs {c}");
                    }
                }
            }
        }
        let p = KeyPrefix::new("ws4redis").unwrap();
        let c = p.broadcast(&Facility::parse("chat").unwrap());
        assert_eq!(p.history_stream(&c), "ws4redis:crier:history:{ws4redis:broadcast:chat}");
        assert_eq!(p.history_meta(&c), "ws4redis:crier:history-meta:{ws4redis:broadcast:chat}");
        // No tag can match a name with a lone `}`: plain keys, still distinct per channel.
        let lobby = Facility::parse("lobby").unwrap();
        assert_eq!(p.presence(&lobby), "ws4redis:crier:presence:{ws4redis:broadcast:presence/lobby}");
        assert_eq!(
            crate::cluster_slot::cluster_slot(&p.presence(&lobby)),
            crate::cluster_slot::cluster_slot(p.presence_events(&lobby).as_str())
        );
        let odd = p.broadcast(&Facility::parse("a}b").unwrap());
        assert_eq!(p.history_stream(&odd), "ws4redis:crier:history:ws4redis:broadcast:a}b");
    }

    #[test]
    fn history_keys_are_distinct_per_channel() {
        let p = KeyPrefix::new("{app}").unwrap();
        let mut seen = std::collections::HashSet::new();
        for facility in ["chat", "chat2", "", "a}b", "a}b{c", "{x}", "x{tag}y"] {
            let c = p.broadcast(&Facility::parse(facility).unwrap());
            assert!(seen.insert(p.history_stream(&c)));
            assert!(seen.insert(p.history_meta(&c)));
        }
    }

    #[test]
    fn channel_audience_is_read_back_from_the_name() {
        use crate::recovery_frames::ChannelAudience;
        let p = KeyPrefix::new("ws4redis").unwrap();
        let f = Facility::parse("a:b").unwrap();
        let g = p.group(&Name::parse("chatters").unwrap(), &f);
        assert_eq!(
            p.channel_audience(&g),
            Some(ChannelAudience { audience: Audience::Group, group: Some("chatters".into()) })
        );
        let u = p.user(&Name::parse("ann").unwrap(), &f);
        assert_eq!(p.channel_audience(&u), Some(ChannelAudience { audience: Audience::User, group: None }));
        assert_eq!(p.channel_audience(&ChannelName::from_redis("other:broadcast:x")), None);
        assert_eq!(p.channel_audience(&ChannelName::from_redis("ws4redis:crier:x")), None);
    }

    #[test]
    fn own_keys_never_collide_with_channels() {
        let p = KeyPrefix::default();
        let s = SessionKey::parse("k").unwrap();
        let ann = Name::parse("ann").unwrap();
        let c = p.broadcast(&Facility::parse("f").unwrap());
        for key in [
            p.session_record(&s),
            p.account_index(),
            p.game("ab12"),
            p.invitation("cd34"),
            p.user_invitations(&ann),
            p.history_stream(&c),
            p.history_meta(&c),
        ] {
            for a in Audience::ALL {
                assert!(!key.starts_with(&format!("{a}:")));
            }
        }
    }
}

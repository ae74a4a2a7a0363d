//! Presence: who is connected to a facility. Entries live in a Redis sorted set per facility
//! ([`crate::KeyPrefix::presence`]) whose members are `<user>|<instance>` and whose scores are
//! expiry times in milliseconds, so every wsserver instance keeps its own entries and a crashed
//! instance's entries expire. Join and leave events are JSON [`PresenceEvent`]s on
//! [`crate::KeyPrefix::presence_events`].

use crate::name::Name;

/// Facilities starting with this carry presence events; clients may not publish to them.
pub const EVENTS_FACILITY_PREFIX: &str = "presence/";

/// Separates the user from the instance in a sorted-set member (`|` never occurs in either:
/// instance ids are hex, and a user name containing `|` is refused by presence).
pub const MEMBER_SEPARATOR: char = '|';

/// The sorted-set member of `user` held by one wsserver instance.
pub fn member(user: &Name, instance: &str) -> String {
    format!("{user}{MEMBER_SEPARATOR}{instance}")
}

/// The user of a sorted-set member.
pub fn member_user(member: &str) -> &str {
    member.split_once(MEMBER_SEPARATOR).map_or(member, |(user, _)| user)
}

/// Distinct users of a list of live members, sorted.
pub fn users_of(members: &[String]) -> Vec<String> {
    let mut users: Vec<String> = members.iter().map(|m| member_user(m).to_owned()).collect();
    users.sort();
    users.dedup();
    users
}

/// A join or leave, as published on the presence channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PresenceEvent {
    /// `"join"` or `"leave"`.
    pub event: String,
    pub user: String,
    pub facility: String,
}

impl PresenceEvent {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("presence events serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip() {
        let ann = Name::parse("ann").unwrap();
        let m = member(&ann, "ab12");
        assert_eq!(member_user(&m), "ann");
        assert_eq!(users_of(&[m.clone(), member(&ann, "cd"), "bob|x".into()]), ["ann", "bob"]);
        let e = PresenceEvent { event: "join".into(), user: "ann".into(), facility: "lobby".into() };
        assert_eq!(e.to_json(), r#"{"event":"join","user":"ann","facility":"lobby"}"#);
    }
}

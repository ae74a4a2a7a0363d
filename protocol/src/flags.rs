//! Query flags, parsed exactly as ws4redis does: keys only, trimmed, case-insensitive, values and
//! unknown keys ignored.

use crate::audience::{Audience, AudienceSet};

/// What a socket asked for in its query string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub subscribe: AudienceSet,
    pub publish: AudienceSet,
    pub echo: bool,
}

/// One recognised flag, for access rules and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    Subscribe(Audience),
    Publish(Audience),
    Echo,
}

impl Flag {
    pub fn parse(key: &str) -> Option<Flag> {
        let key = key.trim().to_ascii_lowercase();
        if key == "echo" {
            return Some(Flag::Echo);
        }
        let (verb, audience) = key.split_once('-')?;
        let audience = Audience::ALL.into_iter().find(|a| a.as_str() == audience)?;
        match verb {
            "subscribe" => Some(Flag::Subscribe(audience)),
            "publish" => Some(Flag::Publish(audience)),
            _ => None,
        }
    }

    pub fn name(self) -> String {
        match self {
            Flag::Subscribe(a) => format!("subscribe-{a}"),
            Flag::Publish(a) => format!("publish-{a}"),
            Flag::Echo => "echo".to_owned(),
        }
    }
}

impl Flags {
    /// Parses a raw (still percent-encoded) query string.
    pub fn from_query(query: &str) -> Flags {
        let mut flags = Flags::default();
        for pair in query.split('&') {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            let key = decode_query_key(key);
            if let Some(flag) = Flag::parse(&key) {
                flags.insert(flag);
            }
        }
        flags
    }

    pub fn insert(&mut self, flag: Flag) {
        match flag {
            Flag::Subscribe(a) => self.subscribe.insert(a),
            Flag::Publish(a) => self.publish.insert(a),
            Flag::Echo => self.echo = true,
        }
    }

    pub fn remove(&mut self, flag: Flag) {
        match flag {
            Flag::Subscribe(a) => self.subscribe.remove(a),
            Flag::Publish(a) => self.publish.remove(a),
            Flag::Echo => self.echo = false,
        }
    }

    /// Every flag that is set, subscriptions first.
    pub fn iter(self) -> impl Iterator<Item = Flag> {
        self.subscribe
            .iter()
            .map(Flag::Subscribe)
            .chain(self.publish.iter().map(Flag::Publish))
            .chain(self.echo.then_some(Flag::Echo))
    }
}

/// Decodes `+` and `%XX` in a query key or value; undecodable input is kept as it is (it will not match a
/// flag name anyway).
pub(crate) fn decode_query_key(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(i + 1).and_then(hex), bytes.get(i + 2).and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_only_trimmed_case_insensitive_values_ignored() {
        let f = Flags::from_query("Subscribe-Broadcast=1&bogus");
        assert_eq!(f, Flags::from_query("subscribe-broadcast"));
        assert!(f.subscribe.contains(Audience::Broadcast));
        assert!(!f.echo);
        let f = Flags::from_query("echo=0&%20publish-user%20=yes&subscribe-group&subscribe-group");
        assert!(f.echo);
        assert!(f.publish.contains(Audience::User));
        assert!(f.subscribe.contains(Audience::Group));
        assert_eq!(f.iter().count(), 3);
    }

    #[test]
    fn garbage_is_ignored() {
        for q in ["", "&&&", "=", "%", "%4", "%zz", "subscribe-", "-broadcast", "subscribe-everyone"] {
            assert_eq!(Flags::from_query(q), Flags::default(), "{q}");
        }
    }
}

//! Identity names (users, groups) and session keys that are safe inside channel names.

use std::fmt;

/// A user or group name. Refuses `:` (so `user:a:b` cannot alias another key), control
/// characters, the empty string and anything over [`Name::MAX_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Name(String);

/// A session key (the value of the `sessionid` cookie), with the same rules as [`Name`]. It is
/// a bearer secret: its `Debug` form is masked so a stray `{:?}` cannot log it; `Display` and
/// [`SessionKey::as_str`] give the value where it must go (cookies, Redis keys).
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct SessionKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("name must not contain ':'")]
    Colon,
    #[error("name must not contain control characters")]
    ControlCharacter,
}

fn check(value: &str, max: usize) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty);
    }
    if value.len() > max {
        return Err(NameError::TooLong { max });
    }
    if value.contains(':') {
        return Err(NameError::Colon);
    }
    if value.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    Ok(())
}

impl Name {
    pub const MAX_LEN: usize = 150;

    pub fn parse(value: &str) -> Result<Name, NameError> {
        check(value, Self::MAX_LEN)?;
        Ok(Name(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl SessionKey {
    pub const MAX_LEN: usize = 128;

    pub fn parse(value: &str) -> Result<SessionKey, NameError> {
        check(value, Self::MAX_LEN)?;
        if value.contains([' ', ';', ',', '"', '\\']) {
            return Err(NameError::ControlCharacter);
        }
        Ok(SessionKey(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(****)")
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::parse(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

impl<'de> serde::Deserialize<'de> for SessionKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SessionKey::parse(&s).map_err(|e| serde::de::Error::custom(format!("session key: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_alias_are_refused() {
        assert_eq!(Name::parse("ann"), Ok(Name("ann".into())));
        assert_eq!(Name::parse("a:b"), Err(NameError::Colon));
        assert_eq!(Name::parse("a\nb"), Err(NameError::ControlCharacter));
        assert_eq!(Name::parse("\u{1b}[31m"), Err(NameError::ControlCharacter));
        assert_eq!(Name::parse(""), Err(NameError::Empty));
        assert!(Name::parse(&"x".repeat(151)).is_err());
        assert!(SessionKey::parse("abc;def").is_err());
        let key = SessionKey::parse("wnqd0gbw5obpnj50zwh6yaq2yz4o8g9x").unwrap();
        assert_eq!(format!("{key:?}"), "SessionKey(****)", "a bearer secret is never debug-printed");
    }
}

//! The facility: the part of the websocket path after the first `/ws/`, kept verbatim.

use std::fmt;

/// A validated facility. Empty is allowed (ws4redis maps `/ws/` to channels like `broadcast:`);
/// control characters are refused and the length is capped at [`Facility::MAX_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Facility(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FacilityError {
    #[error("path must start with {0}")]
    NotUnderPrefix(String),
    #[error("facility is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("facility contains a control character")]
    ControlCharacter,
    #[error("facility is not valid percent-encoded UTF-8")]
    BadEncoding,
    #[error("facility must not be empty")]
    Empty,
}

impl Facility {
    /// Longest facility accepted, in bytes after percent-decoding.
    pub const MAX_LEN: usize = 200;

    /// Takes the facility from a request path: everything after the first occurrence of
    /// `url_prefix` (normally `/ws/`), percent-decoded as a WSGI server would, nothing trimmed.
    pub fn from_path(path: &str, url_prefix: &str) -> Result<Facility, FacilityError> {
        let start = path.find(url_prefix).ok_or_else(|| FacilityError::NotUnderPrefix(url_prefix.to_owned()))?;
        let raw = &path[start + url_prefix.len()..];
        Facility::parse(&percent_decode(raw)?)
    }

    /// Validates a percent-encoded facility (a URL path segment, as in `/api/presence/<f>`);
    /// the empty facility is refused.
    pub fn parse_encoded(raw: &str) -> Result<Facility, FacilityError> {
        Facility::parse_non_empty(&percent_decode(raw)?)
    }

    /// Validates an already decoded facility (the publish API's `facility` field).
    pub fn parse(value: &str) -> Result<Facility, FacilityError> {
        if value.len() > Self::MAX_LEN {
            return Err(FacilityError::TooLong { max: Self::MAX_LEN });
        }
        if value.chars().any(char::is_control) {
            return Err(FacilityError::ControlCharacter);
        }
        Ok(Facility(value.to_owned()))
    }

    /// Like [`Facility::parse`], but refuses the empty facility (the publish API requires one).
    pub fn parse_non_empty(value: &str) -> Result<Facility, FacilityError> {
        if value.is_empty() {
            return Err(FacilityError::Empty);
        }
        Facility::parse(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn percent_decode(raw: &str) -> Result<String, FacilityError> {
    let bytes = raw.as_bytes();
    if raw.len() > Facility::MAX_LEN * 3 {
        return Err(FacilityError::TooLong { max: Facility::MAX_LEN });
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(FacilityError::BadEncoding)?;
            let hex = std::str::from_utf8(hex).map_err(|_| FacilityError::BadEncoding)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| FacilityError::BadEncoding)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| FacilityError::BadEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facility_is_the_rest_of_the_path_verbatim() {
        let f = |p| Facility::from_path(p, "/ws/").unwrap().as_str().to_owned();
        assert_eq!(f("/ws/foobar"), "foobar");
        assert_eq!(f("/ws/foobar/"), "foobar/");
        assert_eq!(f("/ws/a/b/"), "a/b/");
        assert_eq!(f("/ws/"), "");
        assert_eq!(f("/ws/a%20b"), "a b");
        assert_eq!(f("/ws/x/ws/y"), "x/ws/y");
    }

    #[test]
    fn bad_facilities_are_refused() {
        assert_eq!(Facility::from_path("/ws/a%0Ab", "/ws/"), Err(FacilityError::ControlCharacter));
        assert_eq!(Facility::from_path("/ws/%zz", "/ws/"), Err(FacilityError::BadEncoding));
        assert_eq!(Facility::from_path("/ws/%ff", "/ws/"), Err(FacilityError::BadEncoding));
        let long = format!("/ws/{}", "a".repeat(Facility::MAX_LEN + 1));
        assert!(matches!(Facility::from_path(&long, "/ws/"), Err(FacilityError::TooLong { .. })));
        assert!(matches!(Facility::from_path("/other", "/ws/"), Err(FacilityError::NotUnderPrefix(_))));
        assert_eq!(Facility::parse_non_empty(""), Err(FacilityError::Empty));
    }
}

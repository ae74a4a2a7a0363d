//! HTTP pieces both binaries share: cookie lookup and the bearer token.

use hyper::{header, HeaderMap};

/// The value of cookie `name` in the request's `Cookie` headers (quotes stripped; empty values
/// count as absent).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// Why a request carries no usable bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("missing Authorization: Bearer <token> header")]
    Missing,
    #[error("Authorization header must be 'Bearer <token>'")]
    NotBearer,
}

/// The token of the request's `Authorization: Bearer <token>` header. The scheme is matched
/// case-insensitively (RFC 7235 §2.1) and the token trimmed; an empty token is `NotBearer`.
/// Compare the result in constant time.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, BearerError> {
    let value = headers.get(header::AUTHORIZATION).ok_or(BearerError::Missing)?;
    let value = value.to_str().map_err(|_| BearerError::NotBearer)?.trim_start();
    let (scheme, token) = value.split_once(' ').ok_or(BearerError::NotBearer)?;
    let token = token.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
        Ok(token)
    } else {
        Err(BearerError::NotBearer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorization(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR   s3cret  "] {
            assert_eq!(bearer_token(&authorization(value)), Ok("s3cret"), "{value}");
        }
        assert_eq!(bearer_token(&HeaderMap::new()), Err(BearerError::Missing));
        for value in ["Basic czNjcmV0", "Bearer", "Bearer   ", "Bearers3cret", "s3cret"] {
            assert_eq!(bearer_token(&authorization(value)), Err(BearerError::NotBearer), "{value}");
        }
    }

    #[test]
    fn finds_cookies() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; sessionid=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, "sessionid"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "xsessionid=abc; e=".parse().unwrap());
        assert_eq!(cookie(&h, "sessionid"), None);
        assert_eq!(cookie(&h, "e"), None);
    }
}

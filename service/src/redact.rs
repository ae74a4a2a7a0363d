//! Masking of secrets in what is printed or logged: URLs (`--check`, the auth callback's
//! failures) and typed-in text that may be a password (refused logins).

use std::hash::BuildHasher;
use std::sync::OnceLock;

const MASK: &str = "****";
/// Query parameters shown as they are: they select, they do not authenticate.
const PLAIN_PARAMETERS: [&str; 2] = ["db", "protocol"];

/// `url` with its userinfo's password (or a userinfo without `:`, which may be a bare token)
/// and every query value but `db` and `protocol` replaced by `****`. Scheme, user name, host,
/// path and parameter names stay, so the operator still sees where it points.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:{MASK}@{host}"),
            None => format!("{MASK}@{host}"),
        },
        None => authority.to_owned(),
    };
    let (path, query, fragment) = match tail.split_once('?') {
        Some((path, after)) => match after.split_once('#') {
            Some((query, fragment)) => (path, Some(query), Some(fragment)),
            None => (path, Some(after), None),
        },
        None => (tail, None, None),
    };
    let mut shown = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        shown.push_str(scheme);
        shown.push_str("://");
    }
    shown.push_str(&authority);
    shown.push_str(path);
    if let Some(query) = query {
        shown.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) if PLAIN_PARAMETERS.contains(&name) => format!("{name}={value}"),
                Some((name, _)) => format!("{name}={MASK}"),
                None if pair.is_empty() => String::new(),
                None => MASK.to_owned(),
            })
            .collect();
        shown.push_str(&pairs.join("&"));
    }
    if fragment.is_some() {
        shown.push('#');
        shown.push_str(MASK);
    }
    shown
}

/// A short tag of `text` for logs: equal texts get equal tags within one process (repeated
/// attempts show as such), but the tag is keyed with a random per-process key, so it cannot be
/// reversed by hashing guesses, even of a password typed into the wrong field.
pub fn tag(text: &str) -> String {
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    format!("{:08x}", KEY.get_or_init(Default::default).hash_one(text) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_and_query_values_are_masked() {
        assert_eq!(mask_url("redis://:s3cret@127.0.0.1:6379/0"), "redis://:****@127.0.0.1:6379/0");
        assert_eq!(mask_url("redis://alice:s3cret@h:1"), "redis://alice:****@h:1");
        assert_eq!(mask_url("redis://t0ken@h:1"), "redis://****@h:1");
        assert_eq!(mask_url("redis://127.0.0.1:6379/2"), "redis://127.0.0.1:6379/2");
        assert_eq!(
            mask_url("http://app:pa@ss@auth.local:8080/check?token=abc&db=3&flag#frag"),
            "http://app:****@auth.local:8080/check?token=****&db=3&****#****"
        );
        assert_eq!(mask_url("unix:///run/redis.sock?pass=s3cret&db=1"), "unix:///run/redis.sock?pass=****&db=1");
        assert_eq!(mask_url("http://auth.local/"), "http://auth.local/");
    }

    #[test]
    fn tags_are_stable_short_and_hide_the_text() {
        assert_eq!(tag("hunter2"), tag("hunter2"));
        assert_ne!(tag("hunter2"), tag("hunter3"));
        assert_eq!(tag("hunter2").len(), 8);
        assert!(!tag("hunter2").contains("hunter2"));
    }
}

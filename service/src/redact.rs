//! Masking of secrets in configuration dumps (`--check`).

/// The password part of a Redis URL (`redis://user:password@host`), if any.
pub fn redis_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    (!password.is_empty()).then(|| password.to_owned())
}

/// `text` with every occurrence of the Redis URL's password replaced by `****`.
pub fn mask_redis_password(text: String, url: &str) -> String {
    match redis_password(url) {
        Some(password) => text.replace(&password, "****"),
        None => text,
    }
}

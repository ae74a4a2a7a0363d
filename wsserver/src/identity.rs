//! Who is connecting: resolved from the upgrade request, either from Crier's own sessions (the
//! `sessionid` cookie looked up in Redis) or from an HTTP auth callback.

use hyper::{HeaderMap, StatusCode};
use protocol::{Identity, KeyPrefix, SessionKey, SessionRecord, SESSION_COOKIE};

use crate::handshake::Refused;
use crate::metrics::Refusal;
use crate::store::Store;

/// The value of the `sessionid` cookie, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    service::http::cookie(headers, SESSION_COOKIE)
}

/// Where identities come from: Crier's sessions, or an application's auth callback.
#[derive(Clone)]
pub enum IdentitySource {
    Sessions(SessionIdentities),
    Callback(Box<crate::auth_callback::AuthCallback>),
}

impl IdentitySource {
    pub async fn resolve(&self, headers: &HeaderMap) -> Result<Identity, Refused> {
        match self {
            IdentitySource::Sessions(s) => s.resolve(headers).await,
            IdentitySource::Callback(c) => c.resolve(headers).await,
        }
    }
}

/// Resolves identities from Crier's session records.
#[derive(Clone)]
pub struct SessionIdentities {
    pub store: Store,
    pub prefix: KeyPrefix,
}

impl SessionIdentities {
    /// A live session gives `{user, groups, session}`; an unknown cookie gives an anonymous
    /// identity that keeps the cookie value as its session key; no cookie, anonymous.
    pub async fn resolve(&self, headers: &HeaderMap) -> Result<Identity, Refused> {
        let Some(cookie) = session_cookie(headers) else { return Ok(Identity::anonymous(None)) };
        let key = SessionKey::parse(cookie).map_err(|e| {
            Refused::new(StatusCode::FORBIDDEN, Refusal::Forbidden, format!("session cookie refused: {e}"))
        })?;
        let raw = self.store.get(&self.prefix.session_record(&key)).await.map_err(|e| {
            tracing::warn!("session lookup failed: {e}");
            Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Refusal::Unavailable,
                "session store unavailable, try again later",
            )
        })?;
        match raw.map(|r| SessionRecord::from_json(&r)) {
            Some(Ok(record)) => Ok(record.identity(key)),
            Some(Err(e)) => {
                tracing::warn!("unreadable session record: {e}");
                Ok(Identity::anonymous(Some(key)))
            }
            None => Ok(Identity::anonymous(Some(key))),
        }
    }
}

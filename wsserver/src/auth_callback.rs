//! Identity from an HTTP auth callback (`--auth-url`), which is how Django or any other
//! application plugs in its own login: wsserver forwards the upgrade request's Cookie and
//! Authorization headers and reads `{"user": .., "groups": [..], "session": ..}` from a 200.
//! 401/403 refuse the upgrade with 403; a timeout, 5xx or unreadable answer refuses it with 503.
//! Answers (including refusals) are cached for `--auth-cache-ttl`, keyed by those two headers,
//! at most [`CACHE_CAPACITY`] of them, the least recently used evicted first ([`cache`]).

mod cache;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{header, HeaderMap, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use protocol::Identity;

use crate::handshake::Refused;
use crate::metrics::Refusal;

/// Most cached answers; when full, expired ones are dropped, then the least recently used.
pub const CACHE_CAPACITY: usize = 10_000;
/// Largest callback answer read.
const MAX_ANSWER: usize = 16 * 1024;

/// The outcome of one callback, as cached.
#[derive(Clone)]
enum Answer {
    Identity(Identity),
    Refused(Refused),
}

#[derive(Clone)]
pub struct AuthCallback {
    url: Uri,
    /// The URL as logged: password and query values masked.
    shown_url: String,
    timeout: Duration,
    cache_ttl: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
    cache: Arc<Mutex<cache::AnswerCache<CacheKey, Answer>>>,
}

/// The forwarded Cookie and Authorization values.
type CacheKey = (Option<Bytes>, Option<Bytes>);

impl AuthCallback {
    pub fn new(url: Uri, timeout: Duration, cache_ttl: Duration) -> AuthCallback {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        AuthCallback {
            shown_url: service::redact::mask_url(&url.to_string()),
            url,
            timeout,
            cache_ttl,
            client: Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector),
            cache: Arc::new(Mutex::new(cache::AnswerCache::new(CACHE_CAPACITY, cache_ttl))),
        }
    }

    /// Resolves the identity of an upgrade request through the callback (or the cache).
    pub async fn resolve(&self, headers: &HeaderMap) -> Result<Identity, Refused> {
        let forwarded = |name| headers.get(name).map(|v: &header::HeaderValue| Bytes::copy_from_slice(v.as_bytes()));
        let key = (forwarded(header::COOKIE), forwarded(header::AUTHORIZATION));
        if !self.cache_ttl.is_zero() {
            let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key);
            if let Some(answer) = cached {
                return answer.into_result();
            }
        }
        let answer = self.ask(&key.0, &key.1).await;
        if !self.cache_ttl.is_zero() && !matches!(&answer, Answer::Refused(r) if r.kind == Refusal::Unavailable) {
            self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, answer.clone());
        }
        answer.into_result()
    }

    async fn ask(&self, cookie: &Option<Bytes>, authorization: &Option<Bytes>) -> Answer {
        let mut request = Request::get(self.url.clone());
        if let Some(v) = cookie {
            request = request.header(header::COOKIE, v.as_ref());
        }
        if let Some(v) = authorization {
            request = request.header(header::AUTHORIZATION, v.as_ref());
        }
        let request = match request.header(header::ACCEPT, "application/json").body(Empty::new()) {
            Ok(r) => r,
            Err(_) => {
                return Answer::Refused(Refused::bad_request("Cookie or Authorization header cannot be forwarded"))
            }
        };
        let unavailable = |why: String| {
            tracing::warn!(url = %self.shown_url, "auth callback failed: {why}");
            Answer::Refused(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Refusal::Unavailable,
                "authentication service unavailable, try again later",
            ))
        };
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER).collect().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body.to_bytes()))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => unavailable(format!("no answer within {:?}", self.timeout)),
            Ok(Err(e)) => unavailable(e),
            Ok(Ok((status, body))) => match status {
                StatusCode::OK => match Identity::from_json(&body) {
                    Ok(identity) => Answer::Identity(identity),
                    Err(e) => {
                        if e.is_data() {
                            Answer::Refused(Refused::new(
                                StatusCode::FORBIDDEN,
                                Refusal::Forbidden,
                                format!("identity refused: {e}"),
                            ))
                        } else {
                            unavailable(format!("answer is not identity JSON: {e}"))
                        }
                    }
                },
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Answer::Refused(Refused::new(
                    StatusCode::FORBIDDEN,
                    Refusal::Forbidden,
                    "not allowed by the authentication service",
                )),
                other => unavailable(format!("answered {other}")),
            },
        }
    }
}

impl Answer {
    fn into_result(self) -> Result<Identity, Refused> {
        match self {
            Answer::Identity(i) => Ok(i),
            Answer::Refused(r) => Err(r),
        }
    }
}

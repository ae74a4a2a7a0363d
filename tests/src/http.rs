//! Minimal HTTP client helpers (hyper-util's legacy client, plain HTTP/1.1).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl HttpResponse {
    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}); status {}: {:?}", self.status, self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request; panics on transport errors and after 10 s.
pub async fn request(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> HttpResponse {
    match try_request(method.clone(), url, headers, body).await {
        Ok(response) => response,
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// Sends one request; transport errors and the 10 s timeout are returned as text (for polling
/// a server that is still starting).
pub async fn try_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<HttpResponse, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url).body(Full::new(body.into())).map_err(|e| e.to_string())?;
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?,
            HeaderValue::from_str(value).map_err(|e| e.to_string())?,
        );
    }
    let exchange = async {
        let response = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>(HttpResponse { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| format!("timed out after {REQUEST_TIMEOUT:?}"))?
}

pub async fn get(url: &str) -> HttpResponse {
    request(Method::GET, url, &[], Bytes::new()).await
}

pub async fn try_get(url: &str) -> Result<HttpResponse, String> {
    try_request(Method::GET, url, &[], Bytes::new()).await
}

/// POSTs `body` as `application/json`, with `Authorization: Bearer <token>` when given.
pub async fn post_json(url: &str, token: Option<&str>, body: impl Into<Bytes>) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    request(Method::POST, url, &headers, body).await
}

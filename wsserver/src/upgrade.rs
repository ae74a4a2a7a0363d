//! The HTTP side of `/ws/`: every request is checked (method, headers, facility, Origin,
//! identity, limits) and either answered with an error or upgraded into a socket task.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use service::listen::{Peer, Stream};
use service::Escaped;

use crate::app::App;
use crate::connection::{self, Socket};
use crate::handshake::{self, Refused};
use crate::metrics::Refusal;

pub type Body = Full<Bytes>;

/// Answers one HTTP request on the websocket listener.
pub async fn handle(
    app: Arc<App>,
    peer: Peer,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    if !req.uri().path().starts_with(&app.config.url_prefix) {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: websockets are served under ".to_owned() + &app.config.url_prefix,
        ));
    }
    match accept(&app, peer, &mut req).await {
        Ok(response) => Ok(response),
        Err(refused) => {
            app.metrics.refused(refused.kind);
            tracing::debug!(
                %peer,
                path = %Escaped(req.uri().path()),
                status = refused.status.as_u16(),
                reason = %refused.reason,
                "upgrade refused"
            );
            let mut response = plain(refused.status, refused.reason);
            if refused.status == StatusCode::UPGRADE_REQUIRED {
                response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, header::HeaderValue::from_static("13"));
            }
            Ok(response)
        }
    }
}

async fn accept(app: &Arc<App>, peer: Peer, req: &mut Request<Incoming>) -> Result<Response<Body>, Refused> {
    if app.draining.load(Ordering::Relaxed) {
        return Err(Refused::new(StatusCode::SERVICE_UNAVAILABLE, Refusal::Draining, "server is shutting down"));
    }
    let wanted = handshake::check(req, &app.config.url_prefix)?;
    handshake::check_origin(req, &app.allowed_origins)?;
    let identity = app.identities.resolve(req.headers()).await?;
    app.access.check(wanted.flags, &identity)?;
    if !wanted.flags.publish.is_empty()
        && wanted.facility.as_str().starts_with(protocol::presence::EVENTS_FACILITY_PREFIX)
    {
        return Err(Refused::new(StatusCode::FORBIDDEN, Refusal::Forbidden, "presence facilities are read-only"));
    }
    let permit = app.permits.clone().try_acquire_owned().map_err(|_| {
        Refused::new(StatusCode::SERVICE_UNAVAILABLE, Refusal::Full, "server is at its connection limit")
    })?;
    let slot = app.per_ip.acquire(client_ip(peer, req.headers(), &app.config.trusted_proxies)).ok_or_else(|| {
        Refused::new(StatusCode::SERVICE_UNAVAILABLE, Refusal::Full, "too many connections from this address")
    })?;
    let (response, upgrade) = fastwebsockets::upgrade::upgrade(&mut *req)
        .map_err(|e| Refused::bad_request(format!("bad websocket upgrade: {e}")))?;
    app.metrics.upgrades_accepted.fetch_add(1, Ordering::Relaxed);
    let socket = Socket { facility: wanted.facility, flags: wanted.flags, identity, recover: wanted.recover };
    let task_app = app.clone();
    app.tracker.spawn(async move {
        let upgraded = match upgrade.await {
            Ok(ws) => ws.into_inner().into_inner(),
            Err(e) => return tracing::debug!(%peer, "upgrade did not complete: {e}"),
        };
        // The fan-out writes to the socket itself, so take it back from hyper.
        match upgraded.downcast::<TokioIo<Stream>>() {
            Ok(parts) => {
                connection::serve(task_app, parts.io.into_inner(), parts.read_buf, socket, (permit, slot)).await
            }
            Err(_) => tracing::error!(%peer, "upgraded connection is not a service::listen::Stream; dropped"),
        }
    });
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, Full::new(Bytes::new())))
}

/// A plain-text answer.
pub fn plain(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(text.into() + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The client's address: the X-Real-IP a trusted proxy (a trusted address, or any peer on the
/// unix socket) reports, else the peer's address; `None` for a unix-socket peer that names none.
pub fn client_ip(peer: Peer, headers: &hyper::HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    if service::proxy::trusts(trusted, peer) {
        if let Some(ip) = headers.get("x-real-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()) {
            return Some(ip);
        }
    }
    peer.ip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_ip_only_from_trusted_proxies() {
        let mut h = hyper::HeaderMap::new();
        h.insert("x-real-ip", "203.0.113.9".parse().unwrap());
        let trusted = ["127.0.0.1".parse().unwrap()];
        let tcp = |addr: &str| Peer::Tcp(addr.parse().unwrap());
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(tcp("127.0.0.1:5000"), &h, &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(tcp("198.51.100.1:5000"), &h, &trusted), ip("198.51.100.1"));
        // nginx on the unix socket: its X-Real-IP names the client; without one, no address.
        assert_eq!(client_ip(Peer::Unix, &h, &[]), ip("203.0.113.9"));
        assert_eq!(client_ip(Peer::Unix, &hyper::HeaderMap::new(), &trusted), None);
    }
}

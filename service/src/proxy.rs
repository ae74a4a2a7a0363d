//! Trusted proxies: the peers whose forwarded headers (`X-Forwarded-Proto`, `X-Real-IP`, ...)
//! are believed. Any other peer could claim TLS (and get cookies marked for it) or another
//! client address (and dodge a per-address limit), so its forwarded headers are dropped. A peer
//! on a unix socket is a process on this host let in by the socket file's permissions (nginx):
//! always trusted.

use std::net::IpAddr;

use hyper::HeaderMap;

use crate::listen::Peer;

/// The setting's default: nginx on the same host.
pub const DEFAULT_TRUSTED_PROXIES: &str = "127.0.0.1,::1";

/// The headers a proxy sets about the client; dropped from untrusted peers.
pub const FORWARDED_HEADERS: [&str; 5] =
    ["forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"];

/// True when `peer` is on a unix socket or its address is one of `trusted`. An IPv4 peer seen
/// on a dual-stack socket (`::ffff:127.0.0.1`) matches its IPv4 form.
pub fn trusts(trusted: &[IpAddr], peer: Peer) -> bool {
    match peer {
        Peer::Unix => true,
        Peer::Tcp(addr) => {
            let ip = addr.ip().to_canonical();
            trusted.iter().any(|t| t.to_canonical() == ip)
        }
    }
}

/// Removes [`FORWARDED_HEADERS`] from a request unless `peer` is trusted.
pub fn drop_untrusted_forwarding(trusted: &[IpAddr], peer: Peer, headers: &mut HeaderMap) {
    if !trusts(trusted, peer) {
        for name in FORWARDED_HEADERS {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> Vec<IpAddr> {
        DEFAULT_TRUSTED_PROXIES.split(',').map(|ip| ip.parse().unwrap()).collect()
    }

    fn tcp(ip: &str) -> Peer {
        Peer::Tcp(std::net::SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    #[test]
    fn loopback_and_unix_peers_are_trusted_by_default_and_others_are_not() {
        let trusted = loopback();
        assert!(trusts(&trusted, tcp("127.0.0.1")));
        assert!(trusts(&trusted, tcp("::1")));
        assert!(trusts(&trusted, tcp("::ffff:127.0.0.1")));
        assert!(!trusts(&trusted, tcp("203.0.113.7")));
        assert!(!trusts(&[], tcp("127.0.0.1")));
        assert!(trusts(&[], Peer::Unix), "a unix-socket peer is on this host");
    }

    #[test]
    fn forwarded_headers_of_untrusted_peers_are_dropped() {
        let mut headers = HeaderMap::new();
        for name in FORWARDED_HEADERS {
            headers.insert(name, "https".parse().unwrap());
        }
        headers.insert("host", "example.com".parse().unwrap());
        let mut from_proxy = headers.clone();
        drop_untrusted_forwarding(&loopback(), tcp("127.0.0.1"), &mut from_proxy);
        assert_eq!(from_proxy, headers);
        let mut from_unix = headers.clone();
        drop_untrusted_forwarding(&[], Peer::Unix, &mut from_unix);
        assert_eq!(from_unix, headers);
        drop_untrusted_forwarding(&loopback(), tcp("198.51.100.4"), &mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("host"));
    }
}

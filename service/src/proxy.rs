//! Trusted proxies: the peers whose forwarded headers (`X-Forwarded-Proto`, `X-Real-IP`, ...)
//! are believed. Any other peer could claim TLS (and get cookies marked for it) or another
//! client address (and dodge a per-address limit), so its forwarded headers are dropped.

use std::net::IpAddr;

use hyper::HeaderMap;

/// The setting's default: nginx on the same host.
pub const DEFAULT_TRUSTED_PROXIES: &str = "127.0.0.1,::1";

/// The headers a proxy sets about the client; dropped from untrusted peers.
pub const FORWARDED_HEADERS: [&str; 5] =
    ["forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"];

/// True when `peer` is one of `trusted`. An IPv4 peer seen on a dual-stack socket
/// (`::ffff:127.0.0.1`) matches its IPv4 form.
pub fn trusts(trusted: &[IpAddr], peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|t| t.to_canonical() == peer)
}

/// Removes [`FORWARDED_HEADERS`] from a request unless `peer` is trusted.
pub fn drop_untrusted_forwarding(trusted: &[IpAddr], peer: IpAddr, headers: &mut HeaderMap) {
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

    #[test]
    fn loopback_is_trusted_by_default_and_others_are_not() {
        let trusted = loopback();
        assert!(trusts(&trusted, "127.0.0.1".parse().unwrap()));
        assert!(trusts(&trusted, "::1".parse().unwrap()));
        assert!(trusts(&trusted, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!trusts(&trusted, "203.0.113.7".parse().unwrap()));
        assert!(!trusts(&[], "127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn forwarded_headers_of_untrusted_peers_are_dropped() {
        let mut headers = HeaderMap::new();
        for name in FORWARDED_HEADERS {
            headers.insert(name, "https".parse().unwrap());
        }
        headers.insert("host", "example.com".parse().unwrap());
        let mut from_proxy = headers.clone();
        drop_untrusted_forwarding(&loopback(), "127.0.0.1".parse().unwrap(), &mut from_proxy);
        assert_eq!(from_proxy, headers);
        drop_untrusted_forwarding(&loopback(), "198.51.100.4".parse().unwrap(), &mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("host"));
    }
}

//! The listen address setting: `host:port` or `unix:/path/to/socket`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// The longest socket path the kernel takes (`sun_path` is 108 bytes with its NUL).
const MAX_UNIX_PATH: usize = 107;

/// Where a listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `127.0.0.1:8081`, `[::1]:8081`, `0.0.0.0:8081`.
    Tcp(SocketAddr),
    /// `unix:/run/crier/wsserver.sock`.
    Unix(PathBuf),
}

#[derive(Debug, thiserror::Error)]
#[error("{0} (like 127.0.0.1:8081 or unix:/run/crier/wsserver.sock)")]
pub struct ParseListenAddrError(String);

impl FromStr for ListenAddr {
    type Err = ParseListenAddrError;

    fn from_str(text: &str) -> Result<ListenAddr, ParseListenAddrError> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ParseListenAddrError("unix: needs a socket path".into()));
            }
            if path.len() > MAX_UNIX_PATH {
                return Err(ParseListenAddrError(format!("socket path longer than {MAX_UNIX_PATH} bytes")));
            }
            if path.contains('\0') {
                return Err(ParseListenAddrError("socket path contains a NUL byte".into()));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        text.parse().map(ListenAddr::Tcp).map_err(|e| ParseListenAddrError(format!("{text:?}: {e}")))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> ListenAddr {
        ListenAddr::Tcp(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_unix_and_says_what_is_wrong() {
        assert_eq!("127.0.0.1:8081".parse::<ListenAddr>().unwrap(), ListenAddr::Tcp("127.0.0.1:8081".parse().unwrap()));
        let unix = "unix:/run/crier/wsserver.sock".parse::<ListenAddr>().unwrap();
        assert_eq!(unix, ListenAddr::Unix("/run/crier/wsserver.sock".into()));
        assert_eq!(unix.to_string(), "unix:/run/crier/wsserver.sock");
        assert!("unix:".parse::<ListenAddr>().unwrap_err().to_string().contains("needs a socket path"));
        let long = format!("unix:/{}", "x".repeat(120));
        assert!(long.parse::<ListenAddr>().unwrap_err().to_string().contains("longer than 107"));
        let err = "localhost".parse::<ListenAddr>().unwrap_err().to_string();
        assert!(err.contains("\"localhost\"") && err.contains("unix:/run/crier"), "{err}");
    }
}

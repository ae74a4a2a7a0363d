//! TLS to Redis with rustls: the CA and client-identity files read and checked at startup, and
//! connection failures caused by certificates told in words an operator can act on.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The PEM contents redis-rs needs for a `rediss://` connection, read once at startup.
#[derive(Clone)]
pub struct TlsFiles {
    certificates: redis::TlsCertificates,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsFiles")
    }
}

/// A TLS file that is missing, unreadable or not what its flag needs.
#[derive(Debug, thiserror::Error)]
#[error("--{flag} {}: {problem}", path.display())]
pub struct TlsFilesError {
    pub(crate) flag: &'static str,
    path: PathBuf,
    problem: String,
}

impl TlsFilesError {
    pub(crate) fn problem_with_path(&self) -> String {
        format!("{}: {}", self.path.display(), self.problem)
    }
}

impl TlsFiles {
    /// Reads the CA file (if any) and the client certificate and key (if any), checking that
    /// each parses: at least one certificate in each certificate file, one private key in the
    /// key file.
    pub fn load(ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Result<TlsFiles, TlsFilesError> {
        let root_cert = ca.map(|path| certificates("redis-ca", path)).transpose()?;
        let client_tls = match client {
            Some((cert, key)) => {
                let client_cert = certificates("redis-client-cert", cert)?;
                let client_key = read("redis-client-key", key)?;
                PrivateKeyDer::from_pem_slice(&client_key).map_err(|e| TlsFilesError {
                    flag: "redis-client-key",
                    path: key.to_owned(),
                    problem: format!("no PEM private key ({e})"),
                })?;
                Some(redis::ClientTlsConfig { client_cert, client_key })
            }
            None => None,
        };
        Ok(TlsFiles { certificates: redis::TlsCertificates { client_tls, root_cert } })
    }

    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        self.certificates.clone()
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsFilesError> {
    std::fs::read(path).map_err(|e| TlsFilesError { flag, path: path.to_owned(), problem: e.to_string() })
}

fn certificates(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsFilesError> {
    let pem = read(flag, path)?;
    let fail = |problem: String| TlsFilesError { flag, path: path.to_owned(), problem };
    let parsed = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>();
    match parsed {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        Ok(_) => Err(fail("no PEM certificate in it".into())),
        Err(e) => Err(fail(format!("not a PEM certificate file ({e})"))),
    }
}

/// When `error` comes from TLS certificate verification (or the TLS handshake), what the
/// operator should check, else `None`. Such failures do not heal by retrying.
pub fn certificate_problem(error: &redis::RedisError) -> Option<String> {
    let tls = tls_error(error)?;
    use rustls::CertificateError as C;
    let advice = match &tls {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "the Redis server's certificate is not signed by a CA in --redis-ca (or the system's trust store)"
        }
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the Redis server's certificate does not name the host Crier connects to (the host of --redis-url, or the address the Sentinels announce)"
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. } | C::NotValidYet) => {
            "the Redis server's certificate is outside its validity period"
        }
        rustls::Error::AlertReceived(_) => {
            "the Redis server refused the TLS handshake (does it require a client certificate, --redis-client-cert?)"
        }
        _ => "TLS to Redis failed",
    };
    Some(format!("{advice}: {tls}"))
}

/// The rustls error somewhere in `error`'s chain.
fn tls_error(error: &redis::RedisError) -> Option<rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        let io = e
            .downcast_ref::<std::io::Error>()
            .or_else(|| e.downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()?.downcast_ref());
        if let Some(inner) = io.and_then(|io| io.get_ref()) {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls.clone());
            }
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("crier-tls-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn missing_and_malformed_files_are_named() {
        let err = TlsFiles::load(Some(Path::new("/nonexistent/ca.pem")), None).unwrap_err().to_string();
        assert!(err.starts_with("--redis-ca /nonexistent/ca.pem:"), "{err}");
        let junk = scratch("junk.pem", "not a certificate\n");
        let err = TlsFiles::load(Some(&junk), None).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = TlsFiles::load(None, Some((&junk, &junk))).unwrap_err().to_string();
        assert!(err.starts_with("--redis-client-cert"), "{err}");
    }

    #[test]
    fn certificate_failures_are_explained_and_others_are_not() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let explained = certificate_problem(&redis::RedisError::from(io)).expect("a TLS problem");
        assert!(explained.contains("--redis-ca"), "{explained}");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(certificate_problem(&redis::RedisError::from(refused)), None);
    }
}

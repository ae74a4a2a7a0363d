//! Certificates for TLS tests, made with the `openssl` command (Debian's openssl package): a CA,
//! a server certificate for `localhost` (not 127.0.0.1) signed by it, a client certificate signed
//! by it, and an unrelated CA that signed nothing here.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::find_program;

/// The PEM files of one test PKI, in a directory the caller owns.
#[derive(Debug, Clone)]
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// Generates every file into `dir` (P-256 keys, valid for two days); the server
    /// certificate names `localhost` only.
    pub fn generate(dir: &Path) -> TestCa {
        TestCa::generate_naming(dir, "DNS:localhost")
    }

    /// Like [`TestCa::generate`], with a server certificate for `server_names` (a
    /// subjectAltName value, e.g. `DNS:localhost,IP:127.0.0.1` for servers that Sentinels name
    /// by address).
    pub fn generate_naming(dir: &Path, server_names: &str) -> TestCa {
        let ca = TestCa { dir: dir.to_owned() };
        ca.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
        ca.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Crier test CA",
        ]);
        ca.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "other-ca.key"]);
        ca.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "other-ca.key",
            "-out",
            "other-ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Some other CA",
        ]);
        ca.leaf("server", "localhost", &format!("subjectAltName={server_names}\nextendedKeyUsage=serverAuth\n"));
        ca.leaf("client", "crier-client", "extendedKeyUsage=clientAuth\n");
        ca
    }

    fn leaf(&self, name: &str, cn: &str, extensions: &str) {
        let ext = format!("{name}.ext");
        std::fs::write(self.dir.join(&ext), extensions).expect("write extensions");
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        self.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key]);
        self.openssl(&["req", "-new", "-key", &key, "-out", &csr, "-subj", &format!("/CN={cn}")]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let bin = find_program("CRIER_TEST_OPENSSL", "openssl", &["/usr/bin/openssl"]);
        let out = Command::new(&bin)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} (install Debian's openssl package): {e}", bin.display()));
        assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A CA that signed none of these certificates.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// The flags that make a Crier binary trust this CA and present the client certificate.
    pub fn crier_args(&self) -> Vec<String> {
        let path = |p: PathBuf| p.display().to_string();
        vec![
            "--redis-ca".into(),
            path(self.ca()),
            "--redis-client-cert".into(),
            path(self.client_cert()),
            "--redis-client-key".into(),
            path(self.client_key()),
        ]
    }
}

//! A certificate authority of the test's own, as Azure Database for PostgreSQL has a public
//! one: the server's certificate is issued by it for the host name clients connect to, and
//! clients verify it against their usual roots, to which the test adds this CA (daprd
//! through `SSL_CERT_FILE`, its system roots; sqlx through `PGSSLROOTCERT`). Keys are
//! ECDSA P-256, made with rcgen on the workspace's one crypto provider (aws-lc-rs).

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The CA: its certificate is in a file of its own, removed when this is dropped.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

/// A server's certificate and private key, both PEM.
#[derive(Debug, Clone)]
pub struct ServerCertificate {
    /// The certificate, issued by the CA.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl TestCa {
    /// Makes a new CA and writes its certificate to a file.
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "dapr-rust-aca test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params
            .self_signed(&key)
            .expect("self-signed CA certificate");
        let dir = tempfile::Builder::new()
            .prefix("dapr-rust-aca-ca-")
            .tempdir()
            .expect("CA dir");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write the CA certificate");
        Self {
            issuer: Issuer::new(params, key),
            dir,
        }
    }

    /// The file that holds the CA's certificate (PEM).
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `host` (its only subject alternative name).
    pub fn server_certificate(&self, host: &str) -> ServerCertificate {
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec![host.to_owned()]).expect("server name");
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        ServerCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

//! A test certificate authority made at test time (rcgen): a CA, a server
//! certificate for 127.0.0.1, ::1 and localhost, and a client certificate,
//! all written as PEM files into a directory. For the collector's HTTPS
//! tests, and the agent's uploads to it later.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};
use std::path::{Path, PathBuf};

/// The files of a test CA.
#[derive(Clone, Debug)]
pub struct TestCa {
    pub dir: PathBuf,
    /// The CA's certificate: what clients trust.
    pub ca_cert: PathBuf,
    /// The server's certificate chain (its certificate, then the CA's) and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate (CN `cbt-agent-test`) and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestCa {
    /// Makes the CA and the certificates in `dir` (created).
    pub fn new(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).expect("TLS directory");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.distinguished_name.push(DnType::CommonName, "cbt test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

        let server_key = KeyPair::generate().expect("server key");
        let mut sp = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        sp.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        sp.subject_alt_names.push(SanType::IpAddress("::1".parse().expect("ip")));
        sp.distinguished_name.push(DnType::CommonName, "cbt-collector test server");
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        sp.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let server = sp.signed_by(&server_key, &ca, &ca_key).expect("server certificate");

        let client_key = KeyPair::generate().expect("client key");
        let mut cp = CertificateParams::new(Vec::<String>::new()).expect("client params");
        cp.distinguished_name.push(DnType::CommonName, "cbt-agent-test");
        cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        cp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let client = cp.signed_by(&client_key, &ca, &ca_key).expect("client certificate");

        let t = TestCa {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        };
        let write = |p: &Path, s: String| std::fs::write(p, s).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        write(&t.ca_cert, ca.pem());
        write(&t.server_cert, format!("{}{}", server.pem(), ca.pem()));
        write(&t.server_key, server_key.serialize_pem());
        write(&t.client_cert, format!("{}{}", client.pem(), ca.pem()));
        write(&t.client_key, client_key.serialize_pem());
        t
    }

    /// The CA certificate as PEM bytes (for a client's trust store).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca_cert).expect("CA certificate")
    }

    /// A blocking HTTPS client that trusts only this CA.
    pub fn client(&self) -> reqwest::blocking::Client {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem()).expect("CA certificate");
        reqwest::blocking::Client::builder()
            .tls_certs_only([ca])
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("HTTPS client")
    }
}

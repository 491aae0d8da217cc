//! TLS for the end-to-end tests: rcgen certificates for "localhost" and
//! 127.0.0.1 in PEM files, and tokio-rustls clients and servers (ring) on
//! Fulcrum sockets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use fulcrum::net::TcpStream;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use super::{temp_path, TempFile};

/// A self-signed certificate for "localhost" and 127.0.0.1, and its key,
/// as DER and in PEM files (removed when dropped).
pub struct Cert {
    pub der: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub cert_file: TempFile,
    pub key_file: TempFile,
}

impl Cert {
    pub fn new() -> Cert {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let cert_file = TempFile(pem_path("cert"));
        let key_file = TempFile(pem_path("key"));
        std::fs::write(&cert_file.0, made.cert.pem()).unwrap();
        std::fs::write(&key_file.0, made.signing_key.serialize_pem()).unwrap();
        Cert {
            der: made.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()).into(),
            cert_file,
            key_file,
        }
    }

    pub fn cert_path(&self) -> &str {
        self.cert_file.0.to_str().unwrap()
    }

    pub fn key_path(&self) -> &str {
        self.key_file.0.to_str().unwrap()
    }

    /// The listener lines that turn TLS on with this certificate.
    pub fn listener_keys(&self) -> String {
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            self.cert_path(),
            self.key_path()
        )
    }

    /// A TLS server configuration with this certificate, offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let mut c = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], self.key.clone_key())
            .unwrap();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }
}

/// A fresh temp path ending in `.pem`.
pub fn pem_path(what: &str) -> PathBuf {
    temp_path(what).with_extension("pem")
}

/// The crypto provider of the tests (ring), given explicitly.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client trusting `cert` only, offering `alpn`.
pub fn client_config(cert: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// A TLS connection to the gateway at `addr`, as "localhost", trusting
/// `cert` only (the handshake fails on any other certificate).
pub async fn tls_connect(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    try_tls_connect(addr, cert, alpn)
        .await
        .expect("TLS handshake with the gateway")
}

/// As [`tls_connect`], the handshake's error returned.
pub async fn try_tls_connect(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(client_config(cert, alpn))
        .connect(name, tcp)
        .await
}

//! TLS termination on `fulcrum::http::serve` with tokio-rustls and a
//! self-signed certificate made by rcgen; HTTP/1.1 or h2 chosen by ALPN;
//! the client is hyper-util's through hyper-rustls on Fulcrum's
//! `Connector` (so "localhost" resolves on the blocking pool).

mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use fulcrum::http::{Connector, FulcrumExecutor, FulcrumTimer, IncomingStream, Listener};
use fulcrum::io::{AsyncReadExt, AsyncWriteExt};
use fulcrum::net::{TcpListener, TcpStream};
use http_body_util::{BodyExt, Full};
use hyper::Version;
use hyper_util::client::legacy::Client;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use web::assert_no_tokio_runtime;

/// A TLS listener: TCP accept, then the rustls handshake. (The handshake
/// runs in the accept loop to keep the test short; a server would spawn it.)
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let (tcp, peer) = Listener::accept(&mut self.tcp).await;
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, peer),
                Err(e) => tracing::debug!("TLS handshake with {peer}: {e}"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Listener::local_addr(&self.tcp)
    }
}

/// What the handshake settled, as axum connection info.
#[derive(Clone, Debug)]
struct Alpn(String);

impl Connected<IncomingStream<'_, TlsListener>> for Alpn {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let alpn = stream.io().get_ref().1.alpn_protocol().unwrap_or(b"none");
        Alpn(String::from_utf8_lossy(alpn).into_owned())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for "localhost", and its key.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    (cert.cert.der().clone(), key.into())
}

async fn start(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> u16 {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    let app = Router::new().route(
        "/alpn",
        get(|ConnectInfo(Alpn(alpn)): ConnectInfo<Alpn>| async move { format!("alpn {alpn}") }),
    );
    drop(fulcrum::spawn(async move {
        let made = app.into_make_service_with_connect_info::<Alpn>();
        if let Err(e) = fulcrum::http::serve(listener, made).await {
            panic!("serve: {e}");
        }
    }));
    port
}

async fn fetch_https(cert: &CertificateDer<'static>, port: u16, h2: bool) -> (Version, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // hyper-rustls sets the ALPN list itself: "h2" and "http/1.1" with
    // HTTP/2 enabled, none for an HTTP/1.1-only client.
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let https = if h2 {
        builder
            .enable_http1()
            .enable_http2()
            .wrap_connector(Connector::new())
    } else {
        builder.enable_http1().wrap_connector(Connector::new())
    };
    let client: Client<_, Full<Bytes>> = Client::builder(FulcrumExecutor::new())
        .timer(FulcrumTimer::new())
        .pool_timer(FulcrumTimer::new())
        .build(https);
    let uri = format!("https://localhost:{port}/alpn").parse().unwrap();
    let resp = client.get(uri).await.expect("https request");
    assert_eq!(resp.status().as_u16(), 200);
    let version = resp.version();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (version, String::from_utf8(body.to_vec()).unwrap())
}

#[fulcrum::test]
async fn tls_http1_and_h2_by_alpn() {
    web::watch_panics();
    let (cert, key) = certificate();
    let port = start(cert.clone(), key).await;
    assert_eq!(
        fetch_https(&cert, port, true).await,
        (Version::HTTP_2, "alpn h2".to_string())
    );
    // No ALPN: HTTP/1.1.
    assert_eq!(
        fetch_https(&cert, port, false).await,
        (Version::HTTP_11, "alpn none".to_string())
    );
    // ALPN "http/1.1" by hand with tokio-rustls, and a raw request.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    stream
        .write_all(b"GET /alpn HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    // rustls reports the peer's missing close_notify as an error once the
    // bytes are in; hyper closes after `connection: close` with one.
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nalpn http/1.1"), "{response}");
    assert_no_tokio_runtime();
}

/// A client that does not trust the certificate gets a TLS error, and the
/// server goes on serving the next client.
#[fulcrum::test]
async fn untrusted_certificate_is_refused_and_serving_goes_on() {
    web::watch_panics();
    let (cert, key) = certificate();
    let port = start(cert.clone(), key).await;
    let (other, _) = certificate();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(other).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let err = connector.connect(name, tcp).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(
        fetch_https(&cert, port, true).await,
        (Version::HTTP_2, "alpn h2".to_string())
    );
    assert_no_tokio_runtime();
}

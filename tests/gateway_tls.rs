//! TLS in the gateway, through the real binary: termination on the
//! listener (rustls, ALPN `h2`/`http/1.1`), its failure modes (plain HTTP
//! on the TLS port, a silent client, bad certificate files), the
//! `X-Forwarded-Proto` it sends, and TLS to upstreams (`tls = true`
//! clusters, their health checks, and an untrusted upstream certificate).
//! Certificates are made by rcgen for "localhost" and 127.0.0.1; clients
//! are curl and tokio-rustls on a Fulcrum runtime.

use std::convert::Infallible;
use std::io::Read;
use std::net::{SocketAddr, TcpStream as StdStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fulcrum::io::{AsyncReadExt, AsyncWriteExt};
use fulcrum::net::hyper::{FulcrumExecutor, FulcrumTimer, HyperIo};
use fulcrum::net::{Server, Serving, TcpStream};
use fulcrum::runtime::{Builder, Runtime};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use rustls::pki_types::CertificateDer;

mod common;
use common::tls::{pem_path, provider, tls_connect, Cert};
use common::{gateway_binary, listener, raw, temp_path, Gw, TempFile};

fn runtime() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime")
}

/// One HTTP/1.1 request written by hand over TLS; the raw answer.
fn https_raw(
    rt: &Runtime,
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    alpn: &[&[u8]],
    path: &str,
) -> (Option<Vec<u8>>, String) {
    rt.block_on(async {
        fulcrum::time::timeout(Duration::from_secs(30), async {
            let mut s = tls_connect(addr, cert, alpn).await;
            let chosen = s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = Vec::new();
            // The bytes are in even if the close is not a clean one.
            let _ = s.read_to_end(&mut out).await;
            (chosen, String::from_utf8_lossy(&out).into_owned())
        })
        .await
        .expect("the HTTPS request timed out")
    })
}

/// `curl` over TLS to the gateway with `version` (`--http1.1`,
/// `--http2`): the response head lines and `%{http_version}`; `None` if
/// curl is not installed.
fn curl(addr: SocketAddr, cert: &Cert, version: &str, path: &str) -> Option<(String, String)> {
    let port = addr.port();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--max-time",
            "20",
            version,
            "--cacert",
            cert.cert_path(),
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            "-w",
            "\nversion=%{http_version}",
            &format!("https://localhost:{port}{path}"),
        ])
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("running curl: {e}"),
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {version} failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (head, version) = text.rsplit_once("\nversion=").unwrap();
    Some((head.to_owned(), version.trim().to_owned()))
}

/// The sum of a per-worker counter in `/stats`.
fn worker_sum(gw: &Gw, name: &str) -> u64 {
    gw.stats()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w[name].as_u64().unwrap())
        .sum()
}

/// A TLS-terminating gateway in front of one demo backend.
fn tls_gateway(cert: &Cert, extra: &str) -> Gw {
    Gw::start(&format!(
        "{}\n[[routes]]\nprefix = \"/\"\ncluster = \"demo\"\n[[clusters]]\nname = \"demo\"\ndemo_backends = 1\n",
        listener(2, &format!("{}{extra}", cert.listener_keys()))
    ))
}

#[test]
fn curl_gets_http1_and_http2_by_alpn() {
    let cert = Cert::new();
    let gw = tls_gateway(&cert, "");
    let Some((head, version)) = curl(gw.addr, &cert, "--http1.1", "/status/200") else {
        eprintln!("curl is not installed: skipping the curl half of the test");
        return;
    };
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(version, "1.1");
    let (head, version) = curl(gw.addr, &cert, "--http2", "/status/200").unwrap();
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert_eq!(version, "2");
    // The status comes from the backend, through the gateway.
    let (head, _) = curl(gw.addr, &cert, "--http2", "/status/418").unwrap();
    assert!(head.starts_with("HTTP/2 418"), "{head}");
}

/// One request over HTTP/2 on a TLS connection offering `alpn`: the
/// status, the response's version and the protocol ALPN chose (within 30 s).
fn h2_get(
    rt: &Runtime,
    addr: SocketAddr,
    cert: &Cert,
    alpn: &[&[u8]],
    req: Request<Empty<Bytes>>,
) -> (u16, hyper::Version, Option<Vec<u8>>) {
    rt.block_on(async {
        fulcrum::time::timeout(Duration::from_secs(30), async {
            let tls = tls_connect(addr, &cert.der, alpn).await;
            let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            let (mut send, conn) = hyper::client::conn::http2::Builder::new(FulcrumExecutor::new())
                .timer(FulcrumTimer::new())
                .handshake(HyperIo::new(tls))
                .await
                .unwrap();
            let driver = fulcrum::spawn(conn);
            let resp = send.send_request(req).await.unwrap();
            let out = (resp.status().as_u16(), resp.version(), chosen);
            let _ = resp.into_body().collect().await;
            driver.abort();
            out
        })
        .await
        .expect("the HTTP/2 request timed out")
    })
}

#[test]
fn rust_clients_get_http2_by_alpn_and_http1_without_it() {
    let cert = Cert::new();
    let gw = tls_gateway(&cert, "");
    let rt = runtime();

    // ALPN h2: an HTTP/2 connection.
    let req = Request::get("https://localhost/status/201")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (status, version, alpn) = h2_get(&rt, gw.addr, &cert, &[b"h2", b"http/1.1"], req);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!((status, version), (201, hyper::Version::HTTP_2));

    // ALPN http/1.1, and no ALPN at all: HTTP/1.1.
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let (chosen, text) = https_raw(&rt, gw.addr, &cert.der, alpn, "/status/202");
        assert_eq!(chosen.as_deref(), alpn.first().copied(), "{alpn:?}");
        assert!(text.starts_with("HTTP/1.1 202"), "{alpn:?}: {text}");
    }
    assert_eq!(worker_sum(&gw, "tls_handshake_failures"), 0);
}

#[test]
fn without_http2_alpn_offers_only_http1() {
    let cert = Cert::new();
    let gw = tls_gateway(&cert, "http2 = false\n");
    let rt = runtime();
    let (chosen, text) = https_raw(
        &rt,
        gw.addr,
        &cert.der,
        &[b"h2", b"http/1.1"],
        "/status/200",
    );
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn plain_http_on_the_tls_port_is_not_served() {
    let cert = Cert::new();
    let mut gw = tls_gateway(&cert, "");
    let rt = runtime();
    let (status, body) = raw(
        gw.addr,
        b"GET /status/200 HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(status, 0, "a plain request was answered: {body}");
    assert_eq!(worker_sum(&gw, "tls_handshake_failures"), 1);
    // Garbage that is not HTTP either.
    let (status, _) = raw(gw.addr, &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0, 0]);
    assert_eq!(status, 0);
    assert_eq!(worker_sum(&gw, "tls_handshake_failures"), 2);
    gw.assert_alive();
    let (_, text) = https_raw(&rt, gw.addr, &cert.der, &[], "/status/200");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn a_silent_client_is_closed_after_the_header_timeout() {
    let cert = Cert::new();
    let mut gw = tls_gateway(&cert, "header_timeout_ms = 300\n");
    let mut s = StdStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    // Closed: end of stream (or a reset), well before the read timeout.
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("the gateway sent {n} bytes to a silent client"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the silent client was not closed: {e}"
        ),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before the header timeout"
    );
    assert_eq!(worker_sum(&gw, "tls_handshake_failures"), 1);
    gw.assert_alive();
    let rt = runtime();
    let (_, text) = https_raw(&rt, gw.addr, &cert.der, &[], "/status/200");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// Runs the gateway on `config` (with `--check` if asked) and waits for it
/// to exit, at most 60 s.
fn run_to_exit(config: &str, check: bool) -> Output {
    let path = temp_path("gw-tls-bad");
    std::fs::write(&path, config).unwrap();
    let _file = TempFile(path.clone());
    let mut cmd = Command::new(gateway_binary());
    cmd.args(["--config".as_ref(), path.as_os_str()]);
    if check {
        cmd.arg("--check");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway did not exit on a bad configuration");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `config` is refused with exit status 2, by `--check` and at start-up,
/// with a message containing each of `wanted`.
fn refused(config: &str, wanted: &[&str]) {
    for check in [true, false] {
        let out = run_to_exit(config, check);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "check {check}: {err}");
        for w in wanted {
            assert!(err.contains(w), "check {check}: {w:?} not in {err:?}");
        }
    }
}

#[test]
fn bad_certificate_files_are_config_errors_naming_the_file() {
    let cert = Cert::new();
    let other = Cert::new();
    let with = |cert: &str, key: &str| {
        listener(1, &format!("tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"))
    };
    // A missing certificate file.
    let missing = pem_path("missing");
    let missing = missing.to_str().unwrap();
    refused(
        &with(missing, cert.key_path()),
        &["listener.tls_cert", missing, "No such file"],
    );
    // A missing key file.
    refused(
        &with(cert.cert_path(), missing),
        &["listener.tls_key", missing, "No such file"],
    );
    // Garbage where the certificate should be.
    let garbage = TempFile(pem_path("garbage"));
    std::fs::write(&garbage.0, "this is not a certificate\n").unwrap();
    let garbage = garbage.0.to_str().unwrap().to_owned();
    refused(
        &with(&garbage, cert.key_path()),
        &["listener.tls_cert", &garbage, "no PEM certificate"],
    );
    // A certificate where the key should be.
    refused(
        &with(cert.cert_path(), cert.cert_path()),
        &["listener.tls_key", cert.cert_path(), "no PEM private key"],
    );
    // Another certificate's key.
    refused(
        &with(cert.cert_path(), other.key_path()),
        &[
            "listener.tls_key",
            other.key_path(),
            "does not match the certificate",
        ],
    );
    // One without the other.
    refused(
        &listener(1, &format!("tls_cert = \"{}\"\n", cert.cert_path())),
        &["listener.tls_key", "without tls_key"],
    );
    // The good pair passes --check.
    let out = run_to_exit(&with(cert.cert_path(), cert.key_path()), true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn x_forwarded_proto_is_https_on_tls_connections() {
    let cert = Cert::new();
    let up = common::recorder::Recorder::start();
    let gw = Gw::start(&format!(
        "{}\n[[routes]]\nprefix = \"/\"\ncluster = \"up\"\n[[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n",
        listener(1, &cert.listener_keys()),
        up.addr
    ));
    let rt = runtime();
    let (_, text) = https_raw(&rt, gw.addr, &cert.der, &[], "/tls");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // A client's own claim is replaced, over HTTP/2 too.
    let req = Request::get("https://localhost/tls2")
        .header("x-forwarded-proto", "http")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (status, ..) = h2_get(&rt, gw.addr, &cert, &[b"h2"], req);
    assert_eq!(status, 200);
    let got = up.take();
    assert_eq!(got.len(), 2, "{got:#?}");
    for f in &got {
        let protos: Vec<&str> = f
            .headers
            .iter()
            .filter(|(k, _)| k == "x-forwarded-proto")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(protos, ["https"], "{f:#?}");
    }
    up.assert_no_problem();
}

/// What a TLS upstream in this process saw.
#[derive(Default)]
struct Seen {
    /// TLS handshakes completed.
    handshakes: AtomicU64,
    /// Request paths, in order.
    paths: Mutex<Vec<String>>,
}

/// An HTTPS upstream (hyper over tokio-rustls on a Fulcrum listener) with
/// `cert`, answering every request 200 `from tls upstream`.
async fn tls_upstream(cert: &Cert, seen: Arc<Seen>) -> Serving {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], cert.key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    Server::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .serve(move |stream: TcpStream, _| {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                seen.handshakes.fetch_add(1, Relaxed);
                let svc = hyper::service::service_fn(move |req: Request<_>| {
                    seen.paths.lock().unwrap().push(req.uri().path().to_owned());
                    async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"from tls upstream",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(FulcrumTimer::new())
                    .serve_connection(HyperIo::new(tls), svc)
                    .await;
            }
        })
        .await
        .expect("TLS upstream")
}

fn tls_cluster(name: &str, up: SocketAddr, ca: &Path, extra: &str) -> String {
    format!(
        "[[clusters]]\nname = \"{name}\"\nendpoints = [\"{up}\"]\ntls = true\ntls_ca = \"{}\"\n{extra}",
        ca.display()
    )
}

#[test]
fn tls_upstreams_are_verified_pooled_and_health_checked_over_tls() {
    let cert = Cert::new();
    let rt = runtime();
    let (seen_ip, seen_name) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    let up_ip = rt.block_on(tls_upstream(&cert, seen_ip.clone()));
    let up_name = rt.block_on(tls_upstream(&cert, seen_name.clone()));
    let ca = &cert.cert_file.0;
    // By IP (the default name: the endpoint's host part), and by the name
    // "localhost" in tls_server_name, with a health check over TLS.
    let gw = Gw::start(&format!(
        "{}\n[[routes]]\nprefix = \"/ip\"\ncluster = \"by-ip\"\n[[routes]]\nprefix = \"/name\"\ncluster = \"by-name\"\n{}\n{}",
        listener(1, ""),
        tls_cluster("by-ip", up_ip.local_addr(), ca, ""),
        tls_cluster(
            "by-name",
            up_name.local_addr(),
            ca,
            "tls_server_name = \"localhost\"\n[clusters.health_check]\npath = \"/health\"\ninterval_ms = 100\n"
        ),
    ));
    for path in ["/ip/a", "/ip/b", "/ip/c", "/name/a"] {
        let (status, body) = common::get(gw.addr, path, &[]);
        assert_eq!(
            (status, body.as_str()),
            (200, "from tls upstream"),
            "{path}"
        );
    }
    assert_eq!(*seen_ip.paths.lock().unwrap(), ["/ip/a", "/ip/b", "/ip/c"]);
    // The three sequential requests shared one pooled TLS connection (the
    // gateway has one worker, so one pool).
    assert_eq!(
        seen_ip.handshakes.load(Relaxed),
        1,
        "TLS connections not pooled"
    );
    // The health check reaches its upstream over TLS, and keeps the
    // endpoint in rotation.
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen_name
        .paths
        .lock()
        .unwrap()
        .iter()
        .filter(|p| *p == "/health")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no health check reached the TLS upstream"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen_name
        .paths
        .lock()
        .unwrap()
        .iter()
        .any(|p| p == "/name/a"));
    let stats = gw.stats();
    for c in stats["clusters"].as_array().unwrap() {
        assert_eq!(c["endpoints"][0]["healthy"], true, "{c}");
        assert_eq!(c["endpoints"][0]["failures"], 0, "{c}");
    }
    up_ip.stop();
    up_name.stop();
}

#[test]
fn an_untrusted_upstream_certificate_is_a_502() {
    let cert = Cert::new();
    let stranger = Cert::new();
    let rt = runtime();
    let seen = Arc::new(Seen::default());
    let up = rt.block_on(tls_upstream(&cert, seen.clone()));
    let mut gw = Gw::start(&format!(
        "{}\n[[routes]]\nprefix = \"/\"\ncluster = \"wary\"\n{}",
        listener(1, ""),
        tls_cluster(
            "wary",
            up.local_addr(),
            &stranger.cert_file.0,
            "connect_timeout_ms = 5000\n"
        ),
    ));
    // A 502 for the handshake, not a 504 for the connect timeout.
    let (status, body) = common::get(gw.addr, "/x", &[]);
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("TLS handshake failed"), "{body}");
    let (status, _) = common::get(gw.addr, "/y", &[]);
    assert_eq!(status, 502);
    gw.assert_alive();
    assert_eq!(seen.handshakes.load(Relaxed), 0);
    assert!(seen.paths.lock().unwrap().is_empty());
    let stats = gw.stats();
    assert_eq!(stats["clusters"][0]["endpoints"][0]["failures"], 2);
    up.stop();
}

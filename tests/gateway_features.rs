//! Where the gateway's features meet, through the real binary:
//!
//! - a TLS listener's certificate rotated by `POST /reload` (new
//!   connections get the new certificate, a keep-alive one keeps the old;
//!   a broken key file is a 400 and the old certificate keeps serving);
//! - WebSockets over a TLS listener (wss), and to a TLS upstream;
//! - an open WebSocket tunnel surviving a reload that re-routes its path,
//!   while new upgrades take the new route;
//! - retries across a reload that changes `max_retries`;
//! - an upgrade whose endpoint refuses the connection, or fails the TLS
//!   handshake (retried on another endpoint), and one whose endpoint takes
//!   the request and closes (not retried).
//!
//! Clients are tokio-tungstenite and tokio-rustls on Fulcrum runtimes; the
//! WebSocket upstreams are tungstenite echo servers (over tokio-rustls for
//! the TLS one) on threads of their own. Every wait is bounded.

use std::io::Read;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulcrum::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use fulcrum::net::{TcpListener, TcpStream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

mod common;
use common::recorder::Recorder;
use common::tls::{try_tls_connect, Cert};
use common::{get, listener, Gw, KeepAlive, TempFile};

/// How long any single wait may take.
const WAIT: Duration = Duration::from_secs(10);

fn runtime() -> fulcrum::runtime::Runtime {
    fulcrum::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

/// A WebSocket echo upstream on its own thread and Fulcrum runtime,
/// speaking TLS with `tls` if given. After each handshake it sends
/// `hello from <tag>`, then echoes every data message until the client
/// closes. Counts its handshakes.
struct WsUpstream {
    addr: SocketAddr,
    handshakes: Arc<AtomicU64>,
}

impl WsUpstream {
    fn start(tag: &'static str, tls: Option<Arc<rustls::ServerConfig>>) -> WsUpstream {
        let handshakes = Arc::new(AtomicU64::new(0));
        let count = handshakes.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = fulcrum::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        continue;
                    };
                    let (acceptor, count) = (acceptor.clone(), count.clone());
                    drop(fulcrum::spawn(async move {
                        match acceptor {
                            None => echo_ws(s, tag, &count).await,
                            Some(a) => {
                                if let Ok(Ok(s)) = fulcrum::time::timeout(WAIT, a.accept(s)).await {
                                    echo_ws(s, tag, &count).await;
                                }
                            }
                        }
                    }));
                }
            });
        });
        let addr = rx.recv_timeout(WAIT).expect("the upstream did not start");
        WsUpstream { addr, handshakes }
    }
}

async fn echo_ws<S>(s: S, tag: &str, handshakes: &AtomicU64)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(Ok(mut ws)) = fulcrum::time::timeout(WAIT, tokio_tungstenite::accept_async(s)).await
    else {
        return;
    };
    handshakes.fetch_add(1, Relaxed);
    if ws
        .send(Message::text(format!("hello from {tag}")))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
    }
}

/// A WebSocket client handshake over `stream` to `url`: the socket, or
/// the error (`WsError::Http` carries a refusal's response).
async fn ws_over<S>(stream: S, url: &str) -> Result<WebSocketStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match fulcrum::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream)).await {
        Ok(Ok((ws, resp))) => {
            assert_eq!(resp.status(), 101);
            Ok(ws)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => panic!("the handshake to {url} hung"),
    }
}

/// A plain WebSocket client through the gateway at `gw` to `path`.
async fn ws_connect(gw: SocketAddr, path: &str) -> Result<WebSocketStream<TcpStream>, WsError> {
    let s = fulcrum::time::timeout(WAIT, TcpStream::connect(gw))
        .await
        .expect("connect hung")
        .map_err(WsError::Io)?;
    ws_over(s, &format!("ws://{gw}{path}")).await
}

/// The next message, within [`WAIT`].
async fn next<S>(ws: &mut WebSocketStream<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fulcrum::time::timeout(WAIT, ws.next())
        .await
        .expect("no message in time")
        .expect("the tunnel ended")
        .expect("a message")
}

/// Sends `msg` and expects it back.
async fn echo<S>(ws: &mut WebSocketStream<S>, msg: Message)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fulcrum::time::timeout(WAIT, ws.send(msg.clone()))
        .await
        .expect("send hung")
        .expect("send");
    assert_eq!(next(ws).await, msg);
}

/// Closes from the client side and reads until the stream ends.
async fn close<S>(mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fulcrum::time::timeout(WAIT, ws.close(None))
        .await
        .expect("close hung")
        .expect("close");
    fulcrum::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} })
        .await
        .expect("the tunnel did not end after the close");
}

/// Waits for every tunnel to close, then checks that more than `bytes`
/// went each way.
fn tunnels_closed_after(gw: &Gw, bytes: u64) {
    let stats = wait_tunnels(gw, "open", 0);
    let t = &stats["tunnels"];
    for way in ["bytes_up", "bytes_down"] {
        assert!(t[way].as_u64().unwrap() > bytes, "{way}: {t}");
    }
}

/// Polls `/stats` until `tunnels.<key>` is `want` (at most [`WAIT`]).
fn wait_tunnels(gw: &Gw, key: &str, want: u64) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = gw.stats();
        if stats["tunnels"][key] == want {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "tunnels.{key} never became {want}: {}",
            stats["tunnels"]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Counter `key` of the cluster named `cluster` in `/stats`.
fn cluster_stat(gw: &Gw, cluster: &str, key: &str) -> u64 {
    let stats = gw.stats();
    stats["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == cluster)
        .and_then(|c| c[key].as_u64())
        .unwrap_or_else(|| panic!("no {cluster}.{key} in {stats:#}"))
}

/// The `failures` of endpoint `addr` of cluster `cluster` in `/stats`.
fn endpoint_failures(gw: &Gw, cluster: &str, addr: SocketAddr) -> u64 {
    let stats = gw.stats();
    stats["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == cluster)
        .flat_map(|c| c["endpoints"].as_array().unwrap().iter())
        .find(|e| e["address"] == addr.to_string().as_str())
        .and_then(|e| e["failures"].as_u64())
        .unwrap_or_else(|| panic!("no endpoint {addr} of {cluster} in {stats:#}"))
}

/// A free loopback port with nothing listening on it: connecting to it is
/// refused.
fn dead_port() -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// One keep-alive `GET path` over `s` (the response must carry
/// `content-length`): status and body.
async fn keep_alive_get<S>(s: &mut S, path: &str) -> (u16, String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fulcrum::time::timeout(WAIT, async {
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed in {head:?}");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            // A 204 has no body, and no length.
            .or((status == 204).then_some(0))
            .unwrap_or_else(|| panic!("no content-length in {head:?}"));
        let mut body = vec![0; length];
        s.read_exact(&mut body).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
    .await
    .expect("the keep-alive request timed out")
}

/// A TLS-terminating gateway config (`cert`) in front of one demo backend.
fn tls_demo_config(cert_lines: &str) -> String {
    format!(
        "{}\n[[routes]]\nprefix = \"/\"\ncluster = \"demo\"\n[[clusters]]\nname = \"demo\"\ndemo_backends = 1\n",
        listener(2, cert_lines)
    )
}

#[test]
fn a_reload_rotates_the_listener_certificate() {
    let (a, b) = (Cert::new(), Cert::new());
    let gw = Gw::start(&tls_demo_config(&a.listener_keys()));
    let rt = runtime();
    rt.block_on(async {
        let http1: &[&[u8]] = &[b"http/1.1"];
        // A keep-alive connection under certificate A.
        let mut old = try_tls_connect(gw.addr, &a.der, http1).await.unwrap();
        assert_eq!(keep_alive_get(&mut old, "/status/200").await.0, 200);
        // B is not trusted by a client that knows only B, yet.
        assert!(try_tls_connect(gw.addr, &b.der, http1).await.is_err());

        gw.rewrite(&tls_demo_config(&b.listener_keys()));
        let (status, body) = gw.post_reload();
        assert_eq!(status, 200, "{body}");

        // New connections get B: a client trusting only B completes the
        // handshake and sees B as the peer; one trusting only A fails.
        let mut new = try_tls_connect(gw.addr, &b.der, http1)
            .await
            .expect("a handshake trusting only the new certificate");
        let peer = new.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(peer, b.der, "the new connection did not get certificate B");
        assert_eq!(keep_alive_get(&mut new, "/status/201").await.0, 201);
        assert!(
            try_tls_connect(gw.addr, &a.der, http1).await.is_err(),
            "the old certificate is still served to new connections"
        );
        // The connection opened before keeps working, with A.
        for code in [200, 202, 203] {
            let path = format!("/status/{code}");
            assert_eq!(keep_alive_get(&mut old, &path).await.0, code);
        }
        let peer = old.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(peer, a.der);

        // A broken key file: 400 naming the field, B keeps serving.
        let broken = TempFile(common::tls::pem_path("broken-key"));
        std::fs::write(&broken.0, "-----BEGIN PRIVATE KEY-----\nnot base64\n").unwrap();
        gw.rewrite(&tls_demo_config(&format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            b.cert_path(),
            broken.0.display()
        )));
        let (status, body) = gw.post_reload();
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("listener.tls_key"), "{body}");
        let mut after = try_tls_connect(gw.addr, &b.der, http1)
            .await
            .expect("certificate B after the rejected reload");
        assert_eq!(keep_alive_get(&mut after, "/status/204").await.0, 204);
        assert_eq!(keep_alive_get(&mut new, "/status/200").await.0, 200);
        assert_eq!(keep_alive_get(&mut old, "/status/200").await.0, 200);
    });
    let stats = gw.stats();
    assert_eq!(stats["reload"]["done"], 1, "{stats:#}");
    assert_eq!(stats["reload"]["failed"], 1, "{stats:#}");
}

#[test]
fn websockets_over_a_tls_listener() {
    let cert = Cert::new();
    let up = WsUpstream::start("plain", None);
    let gw = Gw::start(&format!(
        "{}\n[[routes]]\nprefix = \"/\"\ncluster = \"up\"\nupgrades = [\"websocket\"]\n[[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n",
        listener(2, &cert.listener_keys()),
        up.addr
    ));
    runtime().block_on(async {
        let tls = try_tls_connect(gw.addr, &cert.der, &[b"http/1.1"])
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let url = format!("wss://localhost:{}/chat", gw.addr.port());
        let mut ws = ws_over(tls, &url).await.expect("wss handshake");
        assert_eq!(next(&mut ws).await, Message::text("hello from plain"));
        echo(&mut ws, Message::text("over tls")).await;
        echo(&mut ws, Message::binary(vec![7u8; 100_000])).await;
        let stats = wait_tunnels(&gw, "open", 1);
        assert_eq!(stats["tunnels"]["upgrades"], 1, "{}", stats["tunnels"]);
        close(ws).await;
    });
    tunnels_closed_after(&gw, 100_000);
    assert_eq!(up.handshakes.load(Relaxed), 1);
}

#[test]
fn websockets_to_a_tls_upstream() {
    let cert = Cert::new();
    let up = WsUpstream::start("tls", Some(cert.server_config(&[b"http/1.1"])));
    let gw = Gw::start(&format!(
        "{}\n[[routes]]\nprefix = \"/\"\ncluster = \"up\"\nupgrades = [\"websocket\"]\n[[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\ntls = true\ntls_ca = \"{}\"\n",
        listener(2, ""),
        up.addr,
        cert.cert_path()
    ));
    runtime().block_on(async {
        let mut ws = ws_connect(gw.addr, "/chat").await.expect("handshake");
        assert_eq!(next(&mut ws).await, Message::text("hello from tls"));
        echo(&mut ws, Message::text("to tls")).await;
        echo(&mut ws, Message::binary(vec![9u8; 100_000])).await;
        let stats = wait_tunnels(&gw, "open", 1);
        assert_eq!(stats["tunnels"]["upgrades"], 1, "{}", stats["tunnels"]);
        close(ws).await;
    });
    tunnels_closed_after(&gw, 100_000);
    assert_eq!(up.handshakes.load(Relaxed), 1);
    assert_eq!(endpoint_failures(&gw, "up", up.addr), 0);
}

/// A plain gateway routing `/ws` to the cluster `to`, over upstreams
/// `one` and `two` (clusters of those names).
fn ws_routes(to: &str, one: SocketAddr, two: SocketAddr) -> String {
    format!(
        "{}\n[[routes]]\nprefix = \"/ws\"\ncluster = \"{to}\"\nupgrades = [\"websocket\"]\n\
         [[clusters]]\nname = \"one\"\nendpoints = [\"{one}\"]\n\
         [[clusters]]\nname = \"two\"\nendpoints = [\"{two}\"]\n",
        listener(2, "")
    )
}

#[test]
fn an_open_tunnel_survives_a_reload_that_reroutes_it() {
    let (one, two) = (
        WsUpstream::start("one", None),
        WsUpstream::start("two", None),
    );
    let gw = Gw::start(&ws_routes("one", one.addr, two.addr));
    runtime().block_on(async {
        let mut old = ws_connect(gw.addr, "/ws").await.expect("handshake");
        assert_eq!(next(&mut old).await, Message::text("hello from one"));
        echo(&mut old, Message::text("before")).await;

        gw.rewrite(&ws_routes("two", one.addr, two.addr));
        let (status, body) = gw.post_reload();
        assert_eq!(status, 200, "{body}");

        // The open tunnel still echoes (still through upstream one).
        for i in 0..5 {
            echo(&mut old, Message::text(format!("after reload {i}"))).await;
        }
        // A new upgrade takes the new route.
        let mut new = ws_connect(gw.addr, "/ws").await.expect("handshake");
        assert_eq!(next(&mut new).await, Message::text("hello from two"));
        echo(&mut new, Message::text("new")).await;
        echo(&mut old, Message::text("old still")).await;
        let stats = wait_tunnels(&gw, "open", 2);
        assert_eq!(stats["tunnels"]["upgrades"], 2, "{}", stats["tunnels"]);
        close(old).await;
        wait_tunnels(&gw, "open", 1);
        echo(&mut new, Message::text("alone")).await;
        close(new).await;
    });
    wait_tunnels(&gw, "open", 0);
    assert_eq!(one.handshakes.load(Relaxed), 1);
    assert_eq!(two.handshakes.load(Relaxed), 1);
}

#[test]
fn an_upgrade_whose_upstream_tls_handshake_fails_is_retried_elsewhere() {
    // Both endpoints speak TLS; the cluster trusts only `cert`, so the
    // stranger's handshake fails before the request leaves the gateway.
    let (cert, stranger) = (Cert::new(), Cert::new());
    let bad = WsUpstream::start("stranger", Some(stranger.server_config(&[b"http/1.1"])));
    let good = WsUpstream::start("trusted", Some(cert.server_config(&[b"http/1.1"])));
    let gw = Gw::start(&retry_config(
        &[bad.addr, good.addr],
        &format!("tls = true\ntls_ca = \"{}\"\n", cert.cert_path()),
    ));
    const N: u64 = 6;
    runtime().block_on(async {
        for i in 0..N {
            let mut ws = ws_connect(gw.addr, &format!("/ws/{i}"))
                .await
                .unwrap_or_else(|e| panic!("upgrade {i}: {e}"));
            assert_eq!(next(&mut ws).await, Message::text("hello from trusted"));
            echo(&mut ws, Message::binary(vec![i as u8; 1000])).await;
            close(ws).await;
        }
    });
    let retries = cluster_stat(&gw, "c", "retries");
    assert!(retries > 0, "round robin sent no upgrade to the stranger");
    assert_eq!(retries, endpoint_failures(&gw, "c", bad.addr));
    assert_eq!(bad.handshakes.load(Relaxed), 0);
    assert_eq!(good.handshakes.load(Relaxed), N);
}

/// A gateway config with the round-robin cluster `c` over `eps` at `/`.
fn retry_config(eps: &[SocketAddr], extra: &str) -> String {
    let eps: Vec<String> = eps.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "{}\n[[routes]]\nprefix = \"/\"\ncluster = \"c\"\nupgrades = [\"websocket\"]\n\
         [[clusters]]\nname = \"c\"\nendpoints = [{}]\npolicy = \"round_robin\"\n{extra}\n",
        listener(2, ""),
        eps.join(", ")
    )
}

#[test]
fn retries_follow_the_reloaded_max_retries() {
    let (dead, live) = (dead_port(), Recorder::start());
    let gw = Gw::start(&retry_config(&[dead, live.addr], "max_retries = 1"));
    for i in 0..20 {
        let (status, body) = get(gw.addr, &format!("/before/{i}"), &[]);
        assert_eq!(status, 200, "GET {i}: {body}");
    }
    let retried = cluster_stat(&gw, "c", "retries");
    assert!(retried > 0, "round robin sent none to the dead endpoint");
    assert_eq!(retried, endpoint_failures(&gw, "c", dead));
    // A keep-alive connection accepted under max_retries = 1.
    let mut old = KeepAlive::connect(gw.addr);
    assert_eq!(old.get("/old/first").unwrap().0, 200);

    gw.rewrite(&retry_config(&[dead, live.addr], "max_retries = 0"));
    let (status, body) = gw.post_reload();
    assert_eq!(status, 200, "{body}");

    // New connections: the dead endpoint's share is 502, unretried.
    let mut bad = 0;
    for i in 0..30 {
        match get(gw.addr, &format!("/after/{i}"), &[]) {
            (200, _) => {}
            (502, body) => {
                assert!(body.contains("upstream connect error"), "{body}");
                bad += 1;
            }
            (other, body) => panic!("GET {i}: {other} {body}"),
        }
    }
    assert!(bad > 0 && bad < 30, "{bad} of 30 answered 502");
    // The counters are the new configuration's: they start at 0.
    assert_eq!(endpoint_failures(&gw, "c", dead), bad);
    assert_eq!(cluster_stat(&gw, "c", "retries"), 0);
    // The old connection keeps its configuration, retries included.
    for i in 0..10 {
        let (status, body) = old.get(&format!("/old/{i}")).unwrap();
        assert_eq!(status, 200, "old connection, GET {i}: {body}");
    }
    let after = live
        .take()
        .iter()
        .filter(|f| f.request_line.starts_with("GET /after/"))
        .count();
    assert_eq!(after as u64, 30 - bad);
    live.assert_no_problem();
}

/// An upstream that reads each request head and closes without answering
/// (it took the request); counts them.
fn closer() -> (SocketAddr, Arc<AtomicU64>) {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let n = read.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let n = n.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(WAIT)).unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => got.extend_from_slice(&buf[..k]),
                    }
                }
                n.fetch_add(1, Relaxed);
            });
        }
    });
    (addr, read)
}

#[test]
fn an_upgrade_whose_connect_is_refused_is_retried_elsewhere() {
    let dead = dead_port();
    let up = WsUpstream::start("live", None);
    let gw = Gw::start(&retry_config(&[dead, up.addr], ""));
    const N: u64 = 8;
    runtime().block_on(async {
        for i in 0..N {
            let mut ws = ws_connect(gw.addr, &format!("/ws/{i}"))
                .await
                .unwrap_or_else(|e| panic!("upgrade {i}: {e}"));
            assert_eq!(next(&mut ws).await, Message::text("hello from live"));
            echo(&mut ws, Message::text(format!("message {i}"))).await;
            close(ws).await;
        }
    });
    let retries = cluster_stat(&gw, "c", "retries");
    assert!(
        retries > 0,
        "round robin sent no upgrade to the dead endpoint"
    );
    assert_eq!(retries, endpoint_failures(&gw, "c", dead));
    assert_eq!(up.handshakes.load(Relaxed), N);
    assert_eq!(wait_tunnels(&gw, "open", 0)["tunnels"]["upgrades"], N);

    // With max_retries = 0 the refused connect is the answer: 502.
    let gw = Gw::start(&retry_config(&[dead, up.addr], "max_retries = 0"));
    let mut bad = 0;
    runtime().block_on(async {
        for i in 0..N {
            match ws_connect(gw.addr, &format!("/ws/{i}")).await {
                Ok(ws) => close(ws).await,
                Err(WsError::Http(resp)) => {
                    assert_eq!(resp.status(), 502, "upgrade {i}");
                    bad += 1;
                }
                Err(e) => panic!("upgrade {i}: {e}"),
            }
        }
    });
    assert!(bad > 0 && bad < N, "{bad} of {N} answered 502");
    assert_eq!(endpoint_failures(&gw, "c", dead), bad);
    assert_eq!(cluster_stat(&gw, "c", "retries"), 0);
}

#[test]
fn an_upgrade_the_upstream_took_and_dropped_is_not_retried() {
    let (closer, read) = closer();
    let up = WsUpstream::start("live", None);
    let gw = Gw::start(&retry_config(&[closer, up.addr], ""));
    const N: u64 = 8;
    let mut bad = 0;
    runtime().block_on(async {
        for i in 0..N {
            match ws_connect(gw.addr, &format!("/ws/{i}")).await {
                Ok(mut ws) => {
                    assert_eq!(next(&mut ws).await, Message::text("hello from live"));
                    close(ws).await;
                }
                Err(WsError::Http(resp)) => {
                    assert_eq!(resp.status(), 502, "upgrade {i}");
                    bad += 1;
                }
                Err(e) => panic!("upgrade {i}: {e}"),
            }
        }
    });
    assert!(bad > 0, "round robin sent no upgrade to the closer");
    assert_eq!(
        read.load(Relaxed),
        bad,
        "each upgrade the closer read is a 502"
    );
    assert_eq!(cluster_stat(&gw, "c", "retries"), 0);
    assert_eq!(endpoint_failures(&gw, "c", closer), bad);
    assert_eq!(up.handshakes.load(Relaxed), N - bad);
}

//! WebSocket (and `Upgrade`) passthrough in the gateway example, end to
//! end: the real binary as a child process between a tokio-tungstenite
//! client (`client_async` over a Fulcrum `TcpStream`) and a
//! tokio-tungstenite echo upstream (`accept_hdr_async` in a Fulcrum
//! runtime of its own thread).
//!
//! - text, binary and 1 MiB messages echo both ways, and `/stats` counts
//!   the upgrade, the open tunnel and the bytes;
//! - several clients at once, while ordinary requests are served;
//! - the client closing first and the upstream closing first both end the
//!   tunnel (the gauge goes back to 0);
//! - an upstream that answers the handshake without 101 is passed through;
//! - what the upstream sees: `Connection: upgrade`, `Upgrade` (without
//!   `h2c`), `X-Forwarded-For`, `X-Request-Id`, no other hop-by-hop header;
//! - `CONNECT` and an `Upgrade` without `Connection: upgrade` stay 501;
//! - a drain cuts an open tunnel at the drain timeout.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fulcrum::net::{TcpListener, TcpStream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

mod common;
use common::{get, listener, raw, Gw};

/// How long any single wait may take.
const WAIT: Duration = Duration::from_secs(10);

/// The headers of one handshake as the upstream received it.
type Head = (String, Vec<(String, String)>);

/// A WebSocket upstream on its own thread and Fulcrum runtime. By path:
/// `/refuse` answers 400, `/plain` answers 200 (neither upgrades),
/// `/close-first` sends one text message and closes, anything else echoes
/// every data message until the client closes.
struct Upstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<Head>>>,
}

impl Upstream {
    fn start() -> Upstream {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = fulcrum::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        continue;
                    };
                    drop(fulcrum::spawn(serve_ws(s, seen.clone())));
                }
            });
        });
        let addr = rx.recv_timeout(WAIT).expect("the upstream did not start");
        Upstream { addr, heads }
    }

    fn heads(&self) -> Vec<Head> {
        self.heads.lock().unwrap().clone()
    }
}

// tungstenite's `Callback` returns its `ErrorResponse` by value.
#[allow(clippy::result_large_err)]
async fn serve_ws(mut s: TcpStream, seen: Arc<Mutex<Vec<Head>>>) {
    // tungstenite refuses only with an error status: `/plain` is answered
    // here, by hand.
    let mut peeked = [0u8; 11];
    if let Ok(Ok(n)) = fulcrum::time::timeout(WAIT, s.peek(&mut peeked)).await {
        if peeked[..n].starts_with(b"GET /plain") {
            use fulcrum::io::{AsyncReadExt, AsyncWriteExt};
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            seen.lock().unwrap().push(("/plain".to_owned(), Vec::new()));
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nplain",
                )
                .await;
            return;
        }
    }
    let mut path = String::new();
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        path = req.uri().path().to_owned();
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        seen.lock().unwrap().push((path.clone(), headers));
        let refuse = |status: u16, text: &str| {
            let mut r = ErrorResponse::new(Some(text.to_owned()));
            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            r.headers_mut()
                .insert("content-length", text.len().to_string().parse().unwrap());
            r.headers_mut()
                .insert("connection", "close".parse().unwrap());
            Err(r)
        };
        match path.as_str() {
            "/refuse" => refuse(400, "no websocket here"),
            _ => Ok(resp),
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(s, callback).await else {
        return;
    };
    if path == "/close-first" {
        let _ = ws.send(Message::text("bye")).await;
        let _ = ws.close(None).await;
        // Reads the client's close reply, then drops the connection.
        while let Some(Ok(_)) = ws.next().await {}
        return;
    }
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
    }
}

/// A gateway whose `/status` goes to a demo backend and everything else to
/// `up`.
fn gateway_to(up: SocketAddr, extra: &str) -> Gw {
    Gw::start(&format!(
        "{}
[[routes]]
prefix = \"/status\"
cluster = \"demo\"
[[routes]]
prefix = \"/\"
cluster = \"up\"
upgrades = [\"websocket\"]
[[clusters]]
name = \"up\"
endpoints = [\"{up}\"]
request_timeout_ms = 5000
[[clusters]]
name = \"demo\"
demo_backends = 1
",
        listener(2, extra)
    ))
}

fn runtime() -> fulcrum::runtime::Runtime {
    fulcrum::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket client through the gateway to `path`.
async fn connect(gw: SocketAddr, path: &str) -> Result<Ws, WsError> {
    let s = TcpStream::connect(gw).await.map_err(WsError::Io)?;
    let url = format!("ws://{gw}{path}");
    match fulcrum::time::timeout(WAIT, tokio_tungstenite::client_async(url, s)).await {
        Ok(Ok((ws, resp))) => {
            assert_eq!(resp.status(), 101);
            assert!(resp.headers().contains_key("sec-websocket-accept"));
            Ok(ws)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => panic!("the handshake to {path} hung"),
    }
}

/// Sends `msg` and expects it back.
async fn echo(ws: &mut Ws, msg: Message) {
    fulcrum::time::timeout(WAIT, ws.send(msg.clone()))
        .await
        .expect("send hung")
        .expect("send");
    let back = fulcrum::time::timeout(WAIT, ws.next())
        .await
        .expect("no echo in time")
        .expect("the tunnel ended")
        .expect("a message");
    assert_eq!(back, msg);
}

/// Closes from the client side and reads until the stream ends.
async fn close(mut ws: Ws) {
    fulcrum::time::timeout(WAIT, ws.close(None))
        .await
        .expect("close hung")
        .expect("close");
    fulcrum::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} })
        .await
        .expect("the tunnel did not end after the close");
}

/// Polls `/stats` until `tunnels.<key>` is `want` (at most [`WAIT`]).
async fn wait_tunnels(gw: &Gw, key: &str, want: u64) -> serde_json::Value {
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
        fulcrum::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn messages_echo_both_ways_and_stats_count_the_tunnel() {
    let up = Upstream::start();
    let gw = gateway_to(up.addr, "");
    runtime().block_on(async {
        let mut ws = connect(gw.addr, "/ws").await.expect("handshake");
        echo(&mut ws, Message::text("hello")).await;
        echo(&mut ws, Message::binary(vec![0u8, 1, 2, 255])).await;
        let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        echo(&mut ws, Message::binary(big)).await;
        echo(&mut ws, Message::text("é".repeat(1000))).await;

        let stats = wait_tunnels(&gw, "open", 1).await;
        assert_eq!(stats["tunnels"]["upgrades"], 1, "{}", stats["tunnels"]);
        // Ordinary requests on other connections, meanwhile.
        for _ in 0..3 {
            assert_eq!(get(gw.addr, "/status/200", &[]).0, 200);
        }
        echo(&mut ws, Message::text("still here")).await;

        close(ws).await;
        let stats = wait_tunnels(&gw, "open", 0).await;
        let t = &stats["tunnels"];
        assert_eq!(t["upgrades"], 1, "{t}");
        for way in ["bytes_up", "bytes_down"] {
            let n = t[way].as_u64().unwrap();
            assert!(n > 1 << 20, "{way}: {t}");
        }
    });
}

#[test]
fn several_clients_at_once_and_the_upstream_closing_first() {
    let up = Upstream::start();
    let gw = gateway_to(up.addr, "");
    const CLIENTS: u64 = 8;
    runtime().block_on(async {
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            clients.push(
                connect(gw.addr, &format!("/ws/{c}"))
                    .await
                    .expect("handshake"),
            );
        }
        wait_tunnels(&gw, "open", CLIENTS).await;
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(c, mut ws)| {
                fulcrum::spawn(async move {
                    for i in 0..20 {
                        echo(&mut ws, Message::text(format!("client {c} message {i}"))).await;
                        echo(&mut ws, Message::binary(vec![c as u8; 1000 + i])).await;
                    }
                    close(ws).await;
                })
            })
            .collect();
        for _ in 0..5 {
            assert_eq!(get(gw.addr, "/status/204", &[]).0, 204);
        }
        for t in tasks {
            fulcrum::time::timeout(WAIT * 3, t)
                .await
                .expect("a client hung")
                .expect("a client failed");
        }
        let stats = wait_tunnels(&gw, "open", 0).await;
        assert_eq!(stats["tunnels"]["upgrades"], CLIENTS);

        // The upstream closes first: the client gets its message, the
        // close, then the end of the stream, and the tunnel is gone.
        let mut ws = connect(gw.addr, "/close-first").await.expect("handshake");
        let first = fulcrum::time::timeout(WAIT, ws.next()).await.expect("hung");
        assert_eq!(first.unwrap().unwrap(), Message::text("bye"));
        let ended = fulcrum::time::timeout(WAIT, async {
            let mut saw_close = false;
            while let Some(Ok(m)) = ws.next().await {
                saw_close |= m.is_close();
            }
            saw_close
        })
        .await
        .expect("the tunnel did not end after the upstream closed");
        assert!(ended, "no close frame came through");
        let stats = wait_tunnels(&gw, "open", 0).await;
        assert_eq!(stats["tunnels"]["upgrades"], CLIENTS + 1);
    });
}

#[test]
fn refused_upgrades_pass_through_and_nothing_hangs() {
    let up = Upstream::start();
    let gw = gateway_to(up.addr, "");
    runtime().block_on(async {
        for (path, want) in [("/refuse", 400), ("/plain", 200)] {
            match connect(gw.addr, path).await {
                Err(WsError::Http(resp)) => {
                    assert_eq!(resp.status(), want, "{path}");
                    let body = resp.body().clone().unwrap_or_default();
                    let want_body = if want == 400 {
                        "no websocket here"
                    } else {
                        "plain"
                    };
                    assert_eq!(String::from_utf8_lossy(&body), want_body, "{path}");
                }
                Err(e) => panic!("{path}: {e}"),
                Ok(_) => panic!("{path}: upgraded"),
            }
        }
    });
    // The same through a raw socket: the answer, then the connection ends.
    let (status, body) = raw(
        gw.addr,
        b"GET /refuse HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (400, "no websocket here"));
    let t = &gw.stats()["tunnels"];
    assert_eq!(
        (t["upgrades"].as_u64(), t["open"].as_u64()),
        (Some(0), Some(0)),
        "{t}"
    );
    assert_eq!(get(gw.addr, "/status/200", &[]).0, 200);
}

#[test]
fn the_upstream_sees_the_upgrade_headers_and_no_other_hop_by_hop_header() {
    let up = Upstream::start();
    let gw = gateway_to(up.addr, "");
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(
        b"GET /ws?q=1 HTTP/1.1\r\nhost: x\r\nconnection: keep-alive, Upgrade, x-hop\r\nx-hop: secret\r\nkeep-alive: timeout=5\r\nupgrade: h2c, websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed in {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    // RFC 6455's accept value for this key.
    assert!(
        head.contains("\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{head}"
    );
    drop(s);

    let heads = up.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let (path, headers) = &heads[0];
    assert_eq!(path, "/ws");
    let get = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("connection"), ["upgrade"], "{headers:?}");
    assert_eq!(get("upgrade"), ["websocket"], "{headers:?}");
    assert_eq!(get("sec-websocket-key"), ["dGhlIHNhbXBsZSBub25jZQ=="]);
    assert!(get("x-hop").is_empty(), "{headers:?}");
    assert!(get("keep-alive").is_empty(), "{headers:?}");
    assert_eq!(get("x-forwarded-for"), ["127.0.0.1"], "{headers:?}");
    assert_eq!(get("x-forwarded-proto"), ["http"], "{headers:?}");
    assert_eq!(get("x-request-id").len(), 1, "{headers:?}");
}

#[test]
fn connect_and_upgrades_without_connection_upgrade_stay_501() {
    let up = Upstream::start();
    let gw = gateway_to(up.addr, "");
    let (status, _) = raw(
        gw.addr,
        b"CONNECT x.example:443 HTTP/1.1\r\nhost: x.example:443\r\n\r\n",
    );
    assert_eq!(status, 501);
    let (status, _) = raw(
        gw.addr,
        b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(status, 501);
    // HTTP/1.0 has no upgrades (RFC 9110 section 7.8).
    let (status, _) = raw(
        gw.addr,
        b"GET /ws HTTP/1.0\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    );
    assert_eq!(status, 501);
    assert!(up.heads().is_empty(), "{:?}", up.heads());
    assert_eq!(gw.stats()["tunnels"]["upgrades"], 0);
}

#[test]
fn a_drain_cuts_an_open_tunnel_at_the_drain_timeout() {
    let up = Upstream::start();
    let mut gw = gateway_to(up.addr, "drain_timeout_ms = 2000\n");
    runtime().block_on(async {
        let mut ws = connect(gw.addr, "/ws").await.expect("handshake");
        echo(&mut ws, Message::text("before")).await;
        wait_tunnels(&gw, "open", 1).await;
        let signalled = Instant::now();
        gw.signal(libc::SIGTERM);
        // Open until the drain timeout...
        echo(&mut ws, Message::text("while draining")).await;
        // ...then cut: the stream ends without a close handshake.
        let ended = fulcrum::time::timeout(WAIT, async {
            loop {
                match ws.next().await {
                    Some(Ok(m)) if m.is_close() => return false,
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return true,
                }
            }
        })
        .await
        .expect("the tunnel outlived the drain");
        assert!(ended);
        assert!(
            signalled.elapsed() >= Duration::from_millis(1500),
            "cut after {:?}, before the drain timeout",
            signalled.elapsed()
        );
    });
    let deadline = Instant::now() + WAIT;
    let mut drained = None;
    while Instant::now() < deadline {
        match gw.stdout.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("drained in") => {
                drained = Some(line);
                break;
            }
            _ => {}
        }
    }
    let drained = drained.expect("a drain summary");
    assert!(drained.contains(" 1 connections cut"), "{drained}");
    let status = gw.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// An upstream on a std listener that answers every request head with
/// `answer` and then holds the connection a moment.
fn fixed_upstream(answer: &'static [u8]) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(WAIT));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = s.write_all(answer);
                std::thread::sleep(Duration::from_millis(500));
            });
        }
    });
    addr
}

const HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade, close\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

#[test]
fn upgrades_are_only_passed_through_where_the_route_allows_them() {
    let up = Upstream::start();
    // `/status` goes to the demo cluster, whose route lists no upgrade.
    let gw = gateway_to(up.addr, "");
    let refused = String::from_utf8_lossy(HANDSHAKE).replace("GET /ws ", "GET /status/200 ");
    let (status, body) = raw(gw.addr, refused.as_bytes());
    assert_eq!(
        (status, body.as_str()),
        (501, "protocol upgrade not enabled on this route\n")
    );
    let t = &gw.stats()["tunnels"];
    assert_eq!(t["upgrades"].as_u64(), Some(0), "{t}");
    // The same request without the upgrade is served there.
    assert_eq!(get(gw.addr, "/status/200", &[]).0, 200);
}

#[test]
fn a_101_that_is_not_the_switch_asked_for_is_a_502_and_no_tunnel() {
    for (answer, what) in [
        (
            &b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"[..],
            "another protocol",
        ),
        (
            &b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\r\n"[..],
            "no Upgrade",
        ),
        (
            &b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"[..],
            "no Sec-WebSocket-Accept",
        ),
    ] {
        let up = fixed_upstream(answer);
        let gw = gateway_to(up, "");
        let (status, body) = raw(gw.addr, HANDSHAKE);
        assert_eq!(
            (status, body.as_str()),
            (502, "upstream switched protocols wrongly\n"),
            "{what}"
        );
        let t = &gw.stats()["tunnels"];
        assert_eq!(
            (t["upgrades"].as_u64(), t["open"].as_u64()),
            (Some(0), Some(0)),
            "{what}: {t}"
        );
    }
    // A proper switch through the same kind of upstream is a tunnel.
    let up = fixed_upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    );
    let gw = gateway_to(up, "");
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(HANDSHAKE).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
}

//! The gateway example against hostile peers, end to end (the real binary
//! as a child process, std sockets on both sides):
//!
//! - upstreams that answer badly: a bad status line, a head over
//!   `max_response_head_bytes`, an invalid first chunk, a body shorter
//!   than its `Content-Length`. The client gets 502 (or, once the body has
//!   started, a connection closed before the body is complete), and the
//!   upstream connection is closed, never pooled;
//! - an absolute-form target whose authority disagrees with `Host`:
//!   routed by the authority and forwarded with it;
//! - heads the gateway refuses (several `Host`s, none, a control character,
//!   obs-fold, `CONNECT`, an `Upgrade` without `Connection: upgrade`),
//!   each with a request pipelined behind it that must never be
//!   forwarded; and the ones it accepts (bare LF line endings, an `h2c`
//!   upgrade offer, a WebSocket handshake the upstream answers with 200);
//! - a client that pipelines requests and never reads the answers: the
//!   gateway stops reading from it, its memory stays bounded, and other
//!   clients are served meanwhile.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{get, listener, raw, Gw};

// ---------------------------------------------------------------------------
// A scripted upstream.

/// One request as the scripted upstream read it.
#[derive(Clone, Debug)]
struct Seen {
    conn: u64,
    path: String,
    host: Option<String>,
}

/// A raw upstream whose answer depends on the path; it records every
/// request (with the id of the connection it came on) and every
/// connection the gateway closed.
struct Scripted {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    closed: Arc<Mutex<HashSet<u64>>>,
}

/// The answer to `path`, and whether the upstream closes after it.
fn script(path: &str) -> (Vec<u8>, bool) {
    match path {
        "/bad-status" => (
            b"HTTP/1.1 2x0 Nope\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        "/huge-head" => {
            let mut v = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
            v.resize(v.len() + 100 * 1024, b'a');
            v.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
            (v, false)
        }
        "/bad-first-chunk" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            false,
        ),
        "/big" => {
            let mut v = b"HTTP/1.1 200 OK\r\ncontent-length: 65536\r\n\r\n".to_vec();
            v.resize(v.len() + 65536, b'b');
            (v, false)
        }
        "/short-body" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc".to_vec(),
            true,
        ),
        p => (
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\nscripted:{p}",
                "scripted:".len() + p.len()
            )
            .into_bytes(),
            false,
        ),
    }
}

impl Scripted {
    fn start() -> Scripted {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the scripted upstream");
        let addr = l.local_addr().expect("its address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(HashSet::new()));
        let (s2, c2) = (seen.clone(), closed.clone());
        std::thread::spawn(move || {
            for (conn, s) in (1u64..).zip(l.incoming().flatten()) {
                let (seen, closed) = (s2.clone(), c2.clone());
                std::thread::spawn(move || {
                    serve_scripted(conn, s, &seen);
                    closed.lock().unwrap().insert(conn);
                });
            }
        });
        Scripted { addr, seen, closed }
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// Waits up to 5 s for the gateway to close connection `conn`.
    fn wait_closed(&self, conn: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.closed.lock().unwrap().contains(&conn) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

/// Reads request heads (no bodies: the tests send none) and answers each
/// by [`script`], until EOF or a scripted close.
fn serve_scripted(conn: u64, mut s: TcpStream, seen: &Mutex<Vec<Seen>>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_owned();
        let host = lines.find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("host").then(|| v.trim().to_owned())
        });
        seen.lock().unwrap().push(Seen {
            conn,
            path: path.clone(),
            host,
        });
        let (answer, close) = script(&path);
        if s.write_all(&answer).is_err() || close {
            return;
        }
    }
}

fn gateway_to(up: SocketAddr, workers: usize) -> Gw {
    Gw::start(&format!(
        "{}
[[routes]]
host = \"b.example\"
prefix = \"/\"
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
        listener(workers, "header_timeout_ms = 2000\n")
    ))
}

/// Reads what the gateway sends on `s` until it closes (or 10 s pass).
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

fn responses_in(bytes: &[u8]) -> usize {
    String::from_utf8_lossy(bytes).matches("HTTP/1.1 ").count()
}

// ---------------------------------------------------------------------------

#[test]
fn malformed_upstream_answers_are_502_and_their_connections_never_pooled() {
    let up = Scripted::start();
    // One worker: one pool, so a pooled connection is the one reused.
    let gw = gateway_to(up.addr, 1);
    for bad in ["/bad-status", "/huge-head", "/bad-first-chunk"] {
        // A good request leaves a pooled connection...
        let (status, body) = get(gw.addr, "/good", &[]);
        assert_eq!((status, body.as_str()), (200, "scripted:/good"), "{bad}");
        let pooled = up.take().last().expect("the upstream saw /good").conn;
        // ...which the bad answer arrives on.
        let (status, body) = get(gw.addr, bad, &[]);
        assert_eq!(status, 502, "{bad}: {body}");
        let seen = up.take();
        assert_eq!(seen.len(), 1, "{bad}: {seen:?}");
        assert_eq!(seen[0].path, bad);
        assert_eq!(seen[0].conn, pooled, "{bad} came on a new connection");
        assert!(
            up.wait_closed(pooled),
            "{bad}: the gateway kept connection {pooled} open after a bad answer"
        );
        // The next request gets a new connection and a good answer.
        let (status, _) = get(gw.addr, "/good", &[]);
        assert_eq!(status, 200, "after {bad}");
        let next = up.take().last().expect("/good again").conn;
        assert_ne!(next, pooled, "{bad}: the connection went back to the pool");
    }

    // A body shorter than its Content-Length: the head went out, so the
    // client's connection is closed before the body is complete (never a
    // complete response, never the next request's bytes).
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    s.write_all(b"GET /short-body HTTP/1.1\r\nhost: a.example\r\n\r\n")
        .expect("send");
    let answer = read_all(&mut s);
    let text = String::from_utf8_lossy(&answer);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(
        text.starts_with("HTTP/1.1 200") && body.len() < 100,
        "a truncated body must end the client connection early: {text:?}"
    );
    let short = up.take();
    assert_eq!(short.len(), 1, "{short:?}");
    let (status, _) = get(gw.addr, "/good", &[]);
    assert_eq!(status, 200);
    assert_ne!(up.take()[0].conn, short[0].conn);
}

#[test]
fn an_absolute_form_target_is_routed_and_forwarded_by_its_authority() {
    let up = Scripted::start();
    let gw = gateway_to(up.addr, 2);
    // Host says b.example (the demo cluster); the target says a.example
    // (the scripted upstream). The target wins, for routing and upstream.
    let (status, body) = raw(
        gw.addr,
        b"GET http://a.example/abs HTTP/1.1\r\nhost: b.example\r\nconnection: close\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, "scripted:/abs"));
    let seen = up.take();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].host.as_deref(), Some("a.example"), "{seen:?}");
    // The other way round: routed to the demo cluster, nothing reaches the
    // scripted upstream.
    let (status, body) = raw(
        gw.addr,
        b"GET http://b.example/status/200 HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("scripted"), "{body}");
    assert!(up.take().is_empty());
}

#[test]
fn refused_heads_close_the_connection_and_nothing_behind_them_is_forwarded() {
    let up = Scripted::start();
    let gw = gateway_to(up.addr, 2);
    let after = "GET /after HTTP/1.1\r\nhost: a.example\r\n\r\n";
    let cases: [(&str, &str, u16); 6] = [
        (
            "two Host headers",
            "GET /x HTTP/1.1\r\nhost: a.example\r\nhost: b.example\r\n\r\n",
            400,
        ),
        ("no Host header", "GET /x HTTP/1.1\r\n\r\n", 400),
        (
            "a control character in a value",
            "GET /x HTTP/1.1\r\nhost: a.example\r\nx-a: b\x01c\r\n\r\n",
            400,
        ),
        (
            "obs-fold",
            "GET /x HTTP/1.1\r\nhost: a.example\r\nx-a: b\r\n c\r\n\r\n",
            400,
        ),
        (
            "CONNECT",
            "CONNECT a.example:443 HTTP/1.1\r\nhost: a.example:443\r\n\r\n",
            501,
        ),
        (
            "an Upgrade without Connection: upgrade",
            "GET /ws HTTP/1.1\r\nhost: a.example\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            501,
        ),
    ];
    for (case, head, want) in cases {
        let mut s = TcpStream::connect(gw.addr).expect("connect");
        s.write_all(format!("{head}{after}").as_bytes())
            .expect("send");
        let answer = read_all(&mut s);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {want} ")),
            "{case}: want {want}, got {text:?}"
        );
        assert_eq!(responses_in(&answer), 1, "{case}: {text:?}");
        let seen = up.take();
        assert!(seen.is_empty(), "{case}: forwarded {seen:?}");
    }

    // Accepted: bare LF line endings (RFC 9112 section 2.2 allows a
    // recipient to take them), forwarded with CRLF; an h2c upgrade offer,
    // which the gateway ignores and serves over HTTP/1.1.
    let (status, body) = raw(
        gw.addr,
        b"GET /lf HTTP/1.1\nhost: a.example\nconnection: close\n\n",
    );
    assert_eq!((status, body.as_str()), (200, "scripted:/lf"));
    let (status, body) = raw(
        gw.addr,
        b"GET /h2c HTTP/1.1\r\nhost: a.example\r\nconnection: upgrade, http2-settings, close\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, "scripted:/h2c"));
    // A WebSocket handshake is forwarded (on a connection of its own); the
    // upstream's answer without 101 comes back as it is.
    let (status, body) = raw(
        gw.addr,
        b"GET /ws HTTP/1.1\r\nhost: a.example\r\nconnection: upgrade, close\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, "scripted:/ws"));
    let seen = up.take();
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn a_client_that_pipelines_without_reading_is_stopped_and_others_are_served() {
    let up = Scripted::start();
    let mut gw = gateway_to(up.addr, 2);
    for _ in 0..50 {
        let (status, body) = raw(
            gw.addr,
            b"GET /status/200 HTTP/1.1\r\nhost: b.example\r\nconnection: close\r\n\r\n",
        );
        assert_eq!(status, 200, "{body}");
    }
    let rss_before = gw.rss_kib();

    // Other clients, throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let normal = {
        let (stop, served, failures, addr) =
            (stop.clone(), served.clone(), failures.clone(), gw.addr);
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                match raw(
                    addr,
                    b"GET /status/200 HTTP/1.1\r\nhost: b.example\r\nconnection: close\r\n\r\n",
                ) {
                    (200, _) => {
                        served.fetch_add(1, Relaxed);
                    }
                    other => failures.lock().unwrap().push(other),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // The hostile client: pipelined requests for 64 KiB answers, never a
    // read, until a write has been blocked for 3 s (or 64 MiB went out).
    let request = b"GET /big HTTP/1.1\r\nhost: a.example\r\n\r\n";
    let chunk: Vec<u8> = request.repeat(1000);
    let mut hostile = TcpStream::connect(gw.addr).expect("connect");
    hostile
        .set_write_timeout(Some(Duration::from_secs(3)))
        .expect("write timeout");
    const CAP: usize = 64 << 20;
    let started = Instant::now();
    let mut written = 0usize;
    let blocked = loop {
        if written >= CAP || started.elapsed() > Duration::from_secs(120) {
            break false;
        }
        match hostile.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break true
            }
            Err(e) => {
                panic!("the gateway dropped the hostile client instead ({e}) after {written} bytes")
            }
        }
    };
    assert!(
        blocked,
        "the gateway kept reading: {written} bytes in {:?}",
        started.elapsed()
    );
    // Stopped, and it stays stopped: nothing more is read a second later.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        matches!(
            hostile.write(&chunk),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
        ),
        "the gateway resumed reading from a client that reads nothing"
    );
    let rss_after = gw.rss_kib();
    gw.assert_alive();
    let before_close = served.load(Relaxed);
    drop(hostile);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    normal.join().expect("the normal client thread");

    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "normal requests failed: {failures:?}");
    assert!(
        before_close >= 10,
        "only {before_close} normal requests were served while the hostile client was stuck"
    );
    // The kernel's socket buffers hold most of what was written; the
    // gateway's own memory may hold a read buffer and a few answers.
    assert!(
        rss_after < rss_before + 32 * 1024,
        "the gateway's memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    println!(
        "hostile pipeliner: {} KiB written before the gateway stopped reading ({:?}); RSS {rss_before} -> {rss_after} KiB; {before_close} normal requests served meanwhile; {} forwarded",
        written / 1024,
        started.elapsed(),
        up.seen.lock().unwrap().len()
    );
    let forwarded = up.take().len();
    assert!(
        forwarded < written / request.len() / 10,
        "{forwarded} of the {} requests written were forwarded",
        written / request.len()
    );
}

//! The gateway's own HTTP/1.1 path (`examples/gateway/h1.rs`, the default
//! `http1 = "native"`), end to end through the binary, against a raw
//! upstream whose answers are scripted per path and a raw client that
//! checks the bytes it gets:
//!
//! - whatever framing the upstream uses (chunked with extensions and
//!   trailers, none until the close, a length, 1xx heads first), the
//!   client gets one valid framing, and the upstream connection is reused
//!   only when its framing allows;
//! - hop-by-hop headers (those named in `Connection` too) go neither way;
//! - a request the path does not take (a chunked body) hands the
//!   connection to hyper, which serves it and the requests after it;
//! - pipelined requests are answered in order;
//! - a pooled connection the upstream closed is replaced, not failed;
//! - large bodies go through whole, both ways.
//!
//! The other gateway suites run on this path too (it is the default), and
//! `.ci/run` runs them again with `FULCRUM_TEST_HTTP1=hyper`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{listener, Gw};

/// One request as the upstream read it.
#[derive(Clone, Debug)]
struct Seen {
    conn: u64,
    line: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// The first value of header `name` (lowercase) in `headers`.
fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The upstream's answer to a path, and whether it closes afterwards.
fn answer(path: &str, body: &[u8]) -> (Vec<u8>, bool) {
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n".to_vec(),
            false,
        ),
        "/until-close" => (b"HTTP/1.1 200 OK\r\nx-kind: close\r\n\r\nuntil the close".to_vec(), true),
        "/continue" => (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        "/hop" => (
            b"HTTP/1.1 200 OK\r\nconnection: x-secret\r\nx-secret: 1\r\nkeep-alive: timeout=5\r\nx-kept: 1\r\ncontent-length: 3\r\n\r\nhop".to_vec(),
            false,
        ),
        "/big" => {
            let mut v = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", 4 << 20).into_bytes();
            v.extend((0..4u32 << 20).map(|i| (i % 251) as u8));
            (v, false)
        }
        "/length" => {
            let text = body.len().to_string();
            (
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}", text.len()).into_bytes(),
                false,
            )
        }
        "/closes-later" => (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nlater".to_vec(), false),
        "/early" => (
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!".to_vec(),
            true,
        ),
        "/status-5" => (b"HTTP/1.1 005 Odd\r\ncontent-length: 0\r\n\r\n".to_vec(), false),
        p => {
            let text = format!("path {p}");
            (
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}", text.len()).into_bytes(),
                false,
            )
        }
    }
}

/// A raw upstream that serves [`answer`] and records what it read.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn start() -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let ids = Arc::new(AtomicU64::new(0));
        let s = seen.clone();
        std::thread::spawn(move || {
            for stream in l.incoming().flatten() {
                let (s, conn) = (s.clone(), ids.fetch_add(1, Relaxed));
                std::thread::spawn(move || serve(conn, stream, &s));
            }
        });
        Upstream { addr, seen }
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Reads requests (`Content-Length` bodies only, as the gateway forwards
/// them) and answers each.
fn serve(conn: u64, stream: TcpStream, seen: &Mutex<Vec<Seen>>) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').expect("a header line");
            headers.push((k.to_ascii_lowercase(), v.trim().to_owned()));
        }
        let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
        if path == "/early" {
            // Answers (and closes) before reading the body.
            let (bytes, _) = answer(&path, &[]);
            seen.lock().unwrap().push(Seen {
                conn,
                line,
                headers,
                body: Vec::new(),
            });
            let _ = w.write_all(&bytes);
            return;
        }
        let len = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse::<usize>().expect("a length"));
        assert!(
            !headers.iter().any(|(k, _)| k == "transfer-encoding"),
            "the gateway forwarded a coded body: {headers:?}"
        );
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let (bytes, close) = answer(&path, &body);
        seen.lock().unwrap().push(Seen {
            conn,
            line,
            headers,
            body,
        });
        if w.write_all(&bytes).is_err() || close {
            return;
        }
        if path == "/closes-later" {
            // Idle in the gateway's pool, then closed by the upstream.
            std::thread::sleep(Duration::from_millis(50));
            return;
        }
    }
}

fn gateway(up: SocketAddr) -> Gw {
    gateway_with(up, "")
}

fn gateway_with(up: SocketAddr, listener_extra: &str) -> Gw {
    Gw::start(&format!(
        "{}[[routes]]\nprefix = \"/\"\ncluster = \"up\"\n[[clusters]]\nname = \"up\"\nendpoints = [\"{up}\"]\n",
        listener(1, listener_extra)
    ))
}

/// A response as the client read it.
#[derive(Debug)]
struct Response {
    status: u16,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// A strict client on one keep-alive connection.
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect to the gateway");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("send to the gateway");
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("read from the gateway");
        assert!(l.ends_with("\r\n"), "a line without CRLF: {l:?}");
        l.truncate(l.len() - 2);
        l
    }

    /// Reads one response (to a `HEAD` if `head`): exactly one framing, a
    /// valid chunked body without trailers.
    fn read(&mut self, head: bool) -> Response {
        let status_line = self.line();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let h = self.line();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').expect("a header line");
            headers.push((k.to_ascii_lowercase(), v.trim().to_owned()));
        }
        let count = |n: &str| headers.iter().filter(|(k, _)| k == n).count();
        let (lengths, codings) = (count("content-length"), count("transfer-encoding"));
        assert!(lengths + codings <= 1, "two framings: {headers:?}");
        let mut body = Vec::new();
        if head {
            return Response {
                status,
                headers,
                body,
            };
        }
        if codings == 1 {
            loop {
                let size = usize::from_str_radix(&self.line(), 16).expect("a bare hex chunk size");
                if size == 0 {
                    assert_eq!(self.line(), "", "trailers were passed on");
                    break;
                }
                let at = body.len();
                body.resize(at + size, 0);
                self.r.read_exact(&mut body[at..]).unwrap();
                assert_eq!(self.line(), "");
            }
        } else {
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            body.resize(len, 0);
            self.r.read_exact(&mut body).unwrap();
        }
        Response {
            status,
            headers,
            body,
        }
    }

    fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nhost: a.example\r\n\r\n").as_bytes());
        self.read(false)
    }
}

#[test]
fn every_upstream_framing_reaches_the_client_as_one_valid_framing() {
    let up = Upstream::start();
    let gw = gateway(up.addr);
    let mut c = Client::connect(gw.addr);

    let r = c.get("/chunked");
    assert_eq!((r.status, &r.body[..]), (200, &b"hello world"[..]), "{r:?}");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.header("x-trailer").is_none());
    // A chunked body read to its end leaves a reusable connection.
    let r = c.get("/after-chunked");
    assert_eq!(r.body, b"path /after-chunked");
    let seen = up.take();
    assert_eq!(seen[0].conn, seen[1].conn, "{seen:?}");

    // A body until the close: chunked to the client, whose connection
    // stays open; the upstream's is not reused.
    let r = c.get("/until-close");
    assert_eq!(
        (r.status, &r.body[..]),
        (200, &b"until the close"[..]),
        "{r:?}"
    );
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let r = c.get("/after-close");
    assert_eq!(r.body, b"path /after-close");
    let seen = up.take();
    assert_ne!(seen[0].conn, seen[1].conn, "{seen:?}");

    // 1xx heads are skipped.
    let r = c.get("/continue");
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]), "{r:?}");

    // Hop-by-hop response headers stay on the upstream's hop.
    let r = c.get("/hop");
    assert_eq!(r.body, b"hop");
    assert_eq!(r.header("x-kept"), Some("1"));
    assert!(
        r.header("x-secret").is_none() && r.header("keep-alive").is_none(),
        "{r:?}"
    );
    assert!(r.header("connection").is_none(), "{r:?}");
    assert!(r.header("date").is_some(), "{r:?}");

    // HEAD: the length of the body a GET would get, and no body.
    c.send(b"HEAD /length HTTP/1.1\r\nhost: a.example\r\n\r\n");
    let r = c.read(true);
    assert_eq!(
        (r.status, r.header("content-length")),
        (200, Some("1")),
        "{r:?}"
    );
    let r = c.get("/after-head");
    assert_eq!(r.body, b"path /after-head");
}

#[test]
fn requests_are_forwarded_with_the_forwarding_headers_and_without_hop_by_hop_ones() {
    let up = Upstream::start();
    let gw = gateway(up.addr);
    let mut c = Client::connect(gw.addr);
    c.send(
        b"GET /h?q=1 HTTP/1.1\r\nHost: A.example:80\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\nX-Forwarded-For: 10.1.1.1\r\nx-forwarded-proto: https\r\nX-Request-Id: my-id-1\r\nx-app: v\r\n\r\n",
    );
    let r = c.read(false);
    assert_eq!(r.status, 200, "{r:?}");
    let seen = up.take();
    let s = &seen[0];
    assert_eq!(s.line, "GET /h?q=1 HTTP/1.1");
    assert_eq!(s.header("host"), Some("A.example:80"));
    assert_eq!(s.header("x-app"), Some("v"));
    assert_eq!(s.header("x-forwarded-for"), Some("10.1.1.1, 127.0.0.1"));
    assert_eq!(s.header("x-forwarded-proto"), Some("http"));
    assert_eq!(s.header("x-request-id"), Some("my-id-1"));
    for hop in ["connection", "x-hop", "te"] {
        assert!(s.header(hop).is_none(), "{hop} forwarded: {s:?}");
    }
    // A generated id when the client sends none.
    let r = c.get("/gen");
    assert_eq!(r.status, 200);
    let id = up.take()[0].header("x-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 36, "{id}");
}

#[test]
fn a_request_the_native_path_does_not_take_hands_the_connection_to_hyper() {
    let up = Upstream::start();
    let gw = gateway(up.addr);
    let mut c = Client::connect(gw.addr);
    let r = c.get("/one");
    assert_eq!(r.body, b"path /one");
    // A chunked request body: hyper's (it decodes it; the upstream gets a
    // length).
    c.send(b"POST /length HTTP/1.1\r\nhost: a.example\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    let r = c.read(false);
    assert_eq!((r.status, &r.body[..]), (200, &b"5"[..]), "{r:?}");
    // ... and hyper serves the rest of the connection.
    let r = c.get("/three");
    assert_eq!(r.body, b"path /three");
    let seen = up.take();
    let lines: Vec<&str> = seen.iter().map(|s| s.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "GET /one HTTP/1.1",
            "POST /length HTTP/1.1",
            "GET /three HTTP/1.1"
        ]
    );
    assert_eq!(seen[1].body, b"hello");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start();
    let gw = gateway(up.addr);
    let mut c = Client::connect(gw.addr);
    let mut burst = Vec::new();
    for i in 0..20 {
        burst
            .extend_from_slice(format!("GET /p{i} HTTP/1.1\r\nhost: a.example\r\n\r\n").as_bytes());
    }
    burst.extend_from_slice(
        b"POST /length HTTP/1.1\r\nhost: a.example\r\ncontent-length: 3\r\n\r\nabc",
    );
    burst.extend_from_slice(b"GET /last HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n");
    c.send(&burst);
    for i in 0..20 {
        let r = c.read(false);
        assert_eq!(r.body, format!("path /p{i}").as_bytes());
    }
    assert_eq!(c.read(false).body, b"3");
    let last = c.read(false);
    assert_eq!(last.body, b"path /last");
    assert_eq!(last.header("connection"), Some("close"));
    let mut rest = Vec::new();
    let _ = c.r.read_to_end(&mut rest);
    assert!(rest.is_empty(), "bytes after the close: {rest:?}");
}

#[test]
fn a_pooled_connection_the_upstream_closed_is_replaced() {
    let up = Upstream::start();
    let gw = gateway(up.addr);
    let mut c = Client::connect(gw.addr);
    for i in 0..5 {
        let r = c.get("/closes-later");
        assert_eq!(
            (r.status, &r.body[..]),
            (200, &b"later"[..]),
            "round {i}: {r:?}"
        );
        // The upstream closes the idle pooled connection meanwhile.
        std::thread::sleep(Duration::from_millis(150));
    }
    let conns: std::collections::HashSet<u64> = up.take().iter().map(|s| s.conn).collect();
    assert_eq!(conns.len(), 5, "each request on a new upstream connection");
}

#[test]
fn large_bodies_go_through_whole_both_ways() {
    let up = Upstream::start();
    let gw = gateway(up.addr);
    let mut c = Client::connect(gw.addr);
    let body: Vec<u8> = (0..512 * 1024u32).map(|i| (i % 253) as u8).collect();
    let mut req = format!(
        "POST /length HTTP/1.1\r\nhost: a.example\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    c.send(&req);
    let r = c.read(false);
    assert_eq!(r.body, body.len().to_string().as_bytes());
    assert_eq!(up.take()[0].body, body);

    let r = c.get("/big");
    assert_eq!(r.body.len(), 4 << 20);
    assert!(r
        .body
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i % 251) as u8));
    // And the connection goes on.
    assert_eq!(c.get("/end").body, b"path /end");
}

#[test]
fn a_header_named_in_connection_cannot_unframe_a_request() {
    let up = Upstream::start();
    let gw = gateway(up.addr);
    // `Connection: content-length` would drop the length line and leave
    // the body to be read as a second request.
    let smuggled = b"GET /smuggled HTTP/1.1\r\nhost: internal\r\n\r\n";
    let mut req = format!(
        "POST /length HTTP/1.1\r\nhost: a.example\r\nconnection: content-length\r\ncontent-length: {}\r\n\r\n",
        smuggled.len()
    )
    .into_bytes();
    req.extend_from_slice(smuggled);
    let mut c = Client::connect(gw.addr);
    c.send(&req);
    let r = c.read(false);
    assert_eq!(
        (r.status, r.body),
        (200, smuggled.len().to_string().into_bytes())
    );
    // `Connection: host`: the upstream still gets a Host.
    c.send(b"GET /named-host HTTP/1.1\r\nhost: a.example\r\nconnection: host\r\n\r\n");
    assert_eq!(c.read(false).status, 200);
    std::thread::sleep(Duration::from_millis(100));
    let seen = up.take();
    let lines: Vec<&str> = seen.iter().map(|s| s.line.as_str()).collect();
    assert_eq!(
        lines,
        ["POST /length HTTP/1.1", "GET /named-host HTTP/1.1"],
        "{seen:?}"
    );
    assert_eq!(seen[0].body, smuggled);
    assert!(seen[1].header("host").is_some(), "{seen:?}");
}

#[test]
fn hosts_that_are_not_one_authority_are_refused() {
    let up = Upstream::start();
    let gw = gateway(up.addr);
    for host in ["a:1:2", "[::1"] {
        let mut c = Client::connect(gw.addr);
        c.send(format!("GET /h HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes());
        let r = c.read(false);
        assert_eq!(r.status, 400, "Host {host:?}: {r:?}");
    }
    assert!(up.take().is_empty());
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let up = Upstream::start();
    let gw = gateway_with(up.addr, "header_timeout_ms = 500\n");
    let mut c = Client::connect(gw.addr);
    assert_eq!(c.get("/one").status, 200);
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let n = c.r.read_to_end(&mut rest).expect("closed, not reset");
    assert_eq!(n, 0, "no bytes after the answer: {rest:?}");
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(400) && idle < Duration::from_secs(5),
        "closed after {idle:?}"
    );
}

#[test]
fn an_upstream_that_answers_before_reading_the_body_is_relayed() {
    let up = Upstream::start();
    let gw = gateway(up.addr);
    let mut c = Client::connect(gw.addr);
    let body = vec![b'x'; 900 * 1024];
    let mut req = format!(
        "POST /early HTTP/1.1\r\nhost: a.example\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    c.send(&req);
    let r = c.read(false);
    assert_eq!((r.status, &r.body[..]), (413, &b"big!"[..]), "{r:?}");
    // A status code below 100 is not relayed.
    let mut c = Client::connect(gw.addr);
    assert_eq!(c.get("/status-5").status, 502);
}

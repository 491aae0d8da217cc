//! The gateway's retries, retry budget, per-route timeouts and the
//! upstream timing of its access log, end to end: the real binary in front
//! of a dead endpoint (a port bound and closed again), an upstream that
//! reads each request and closes without answering, and live upstreams
//! (the recorder, or the gateway's demo backends).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::recorder::Recorder;
use common::{get, listener, raw, Gw};

/// A free loopback port with nothing listening on it: connecting to it is
/// refused.
fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// An upstream that reads each request head (and its `Content-Length`
/// body), counts it, and closes the connection without answering.
struct Closer {
    addr: SocketAddr,
    read: Arc<AtomicU64>,
}

impl Closer {
    fn start() -> Closer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let read = Arc::new(AtomicU64::new(0));
        let n = read.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let n = n.clone();
                std::thread::spawn(move || read_one_and_close(s, &n));
            }
        });
        Closer { addr, read }
    }
}

fn read_one_and_close(mut s: TcpStream, n: &AtomicU64) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if got.len() >= end + 4 + length {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    n.fetch_add(1, Relaxed);
    // Dropped with everything read: a FIN before any byte of a response.
}

/// A gateway with one round-robin cluster `c` over `endpoints` (its
/// `cluster_extra` lines added), routed at `/`.
fn gateway(endpoints: &[SocketAddr], cluster_extra: &str) -> Gw {
    Gw::start(&config(&listener(2, ""), endpoints, cluster_extra))
}

fn config(listener: &str, endpoints: &[SocketAddr], cluster_extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "{listener}
[[routes]]
prefix = \"/\"
cluster = \"c\"

[[clusters]]
name = \"c\"
endpoints = [{}]
policy = \"round_robin\"
{cluster_extra}
",
        eps.join(", ")
    )
}

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    raw(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

/// Counter `name` of cluster `c` in `/stats`.
fn cluster_stat(gw: &Gw, name: &str) -> u64 {
    let stats = gw.stats();
    stats["clusters"][0][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no clusters[0].{name} in {stats:#}"))
}

/// The `failures` of the endpoint at `addr` in `/stats`.
fn endpoint_failures(gw: &Gw, addr: SocketAddr) -> u64 {
    let stats = gw.stats();
    let eps = stats["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .clone();
    eps.iter()
        .find(|e| e["address"] == addr.to_string().as_str())
        .and_then(|e| e["failures"].as_u64())
        .unwrap_or_else(|| panic!("no endpoint {addr} in {stats:#}"))
}

fn methods(rec: &Recorder, method: &str) -> usize {
    rec.take()
        .iter()
        .filter(|f| f.request_line.starts_with(&format!("{method} ")))
        .count()
}

#[test]
fn gets_that_hit_a_dead_endpoint_are_retried_on_the_live_one() {
    let (dead, live) = (dead_port(), Recorder::start());
    let gw = gateway(&[dead, live.addr], "");
    for i in 0..50 {
        let (status, body) = get(gw.addr, &format!("/get/{i}"), &[]);
        assert_eq!(status, 200, "GET {i}: {body}");
    }
    let retries = cluster_stat(&gw, "retries");
    assert!(retries > 0, "round robin sent none to the dead endpoint");
    assert_eq!(
        retries,
        endpoint_failures(&gw, dead),
        "each failed attempt counts against the dead endpoint and is retried"
    );
    assert_eq!(endpoint_failures(&gw, live.addr), 0);
    assert_eq!(cluster_stat(&gw, "retries_over_budget"), 0);
    assert_eq!(
        methods(&live, "GET"),
        50,
        "each GET reached the live upstream once"
    );
    live.assert_no_problem();
}

#[test]
fn posts_whose_connect_was_refused_are_retried_too() {
    // A refused connect means the request never left the gateway (Envoy's
    // connect-failure): retried whatever the method.
    let (dead, live) = (dead_port(), Recorder::start());
    let gw = gateway(&[dead, live.addr], "");
    for i in 0..50 {
        let (status, body) = post(gw.addr, &format!("/post/{i}"), "payload");
        assert_eq!(status, 200, "POST {i}: {body}");
    }
    let retries = cluster_stat(&gw, "retries");
    assert!(retries > 0, "round robin sent none to the dead endpoint");
    assert_eq!(retries, endpoint_failures(&gw, dead));
    let got = live.take();
    assert_eq!(
        got.len(),
        50,
        "each POST reached the live upstream exactly once"
    );
    assert!(
        got.iter().all(|f| f.body == b"payload"),
        "the body is re-sent whole"
    );
    live.assert_no_problem();
}

#[test]
fn max_retries_0_answers_the_dead_endpoint_with_502() {
    let (dead, live) = (dead_port(), Recorder::start());
    let gw = gateway(&[dead, live.addr], "max_retries = 0");
    let mut bad = 0;
    for i in 0..50 {
        match get(gw.addr, &format!("/get/{i}"), &[]).0 {
            200 => {}
            502 => bad += 1,
            other => panic!("GET {i}: {other}"),
        }
    }
    assert!(bad > 0 && bad < 50, "{bad} of 50 answered 502");
    assert_eq!(bad, endpoint_failures(&gw, dead));
    assert_eq!(cluster_stat(&gw, "retries"), 0);
    assert_eq!(methods(&live, "GET"), 50 - bad as usize);
}

#[test]
fn a_reset_before_the_response_retries_gets_but_not_posts() {
    let (closer, live) = (Closer::start(), Recorder::start());
    let gw = gateway(&[closer.addr, live.addr], "");
    for i in 0..20 {
        let (status, body) = get(gw.addr, &format!("/get/{i}"), &[]);
        assert_eq!(status, 200, "GET {i}: {body}");
    }
    let closed_gets = closer.read.load(Relaxed);
    assert!(closed_gets > 0, "round robin sent no GET to the closer");
    assert_eq!(cluster_stat(&gw, "retries"), closed_gets);
    assert_eq!(methods(&live, "GET"), 20);

    // The closer read each POST: it may have acted on it, so no retry.
    let mut bad = 0;
    for i in 0..20 {
        match post(gw.addr, &format!("/post/{i}"), "once").0 {
            200 => {}
            502 => bad += 1,
            other => panic!("POST {i}: {other}"),
        }
    }
    let closed_posts = closer.read.load(Relaxed) - closed_gets;
    assert!(bad > 0, "no POST went to the closer");
    assert_eq!(bad, closed_posts, "each POST the closer read is a 502");
    assert_eq!(cluster_stat(&gw, "retries"), closed_gets, "no POST retried");
    assert_eq!(methods(&live, "POST"), 20 - bad as usize);
    assert_eq!(
        endpoint_failures(&gw, closer.addr),
        closed_gets + closed_posts
    );
}

#[test]
fn retries_over_the_budget_are_not_made() {
    // A budget of 0% with no floor: every retry is over it.
    let (dead, live) = (dead_port(), Recorder::start());
    let gw = gateway(
        &[dead, live.addr],
        "retry_budget_percent = 0.0\nretry_min_concurrency = 0",
    );
    let mut bad = 0;
    for i in 0..30 {
        match get(gw.addr, &format!("/get/{i}"), &[]).0 {
            200 => {}
            502 => bad += 1,
            other => panic!("GET {i}: {other}"),
        }
    }
    assert!(bad > 0, "no GET went to the dead endpoint");
    assert_eq!(cluster_stat(&gw, "retries_over_budget"), bad);
    assert_eq!(cluster_stat(&gw, "retries"), 0);

    // And in Prometheus text.
    let (status, text) = get(gw.admin, "/stats?format=prometheus", &[]);
    assert_eq!(status, 200);
    assert!(
        text.contains(&format!(
            "fulcrum_gateway_cluster_retries_over_budget{{cluster=\"c\"}} {bad}"
        )),
        "{text}"
    );
    assert!(
        text.contains("fulcrum_gateway_cluster_retries{cluster=\"c\"} 0"),
        "{text}"
    );
}

#[test]
fn a_route_timeout_overrides_the_clusters() {
    let gw = Gw::start(&format!(
        "{}
[[routes]]
prefix = \"/short/\"
rewrite = \"/\"
cluster = \"demo\"
timeout_ms = 100

[[routes]]
prefix = \"/delay\"
cluster = \"demo\"

[[clusters]]
name = \"demo\"
demo_backends = 2
request_timeout_ms = 5000
",
        listener(2, "")
    ));
    let started = Instant::now();
    let (status, body) = get(gw.addr, "/short/delay/500", &[]);
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(
        took < Duration::from_millis(450),
        "the 100 ms route timeout answered after {took:?}"
    );
    // The route without an override has the cluster's 5 s.
    let (status, body) = get(gw.addr, "/delay/200", &[]);
    assert_eq!(status, 200, "{body}");
    // The same path through the short route, quick enough: 200.
    assert_eq!(get(gw.addr, "/short/status/201", &[]).0, 201);
    // A response-head timeout is not retried.
    assert_eq!(cluster_stat(&gw, "retries"), 0);
}

/// `line` without ANSI colour sequences.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_access_log_has_attempts_and_upstream_timing() {
    let (dead, live) = (dead_port(), Recorder::start());
    let listener = "[listener]\naddress = \"127.0.0.1:0\"\nworkers = 2\ndlb_backend = \"soft\"\naccess_log = true\n[admin]\naddress = \"127.0.0.1:0\"\n";
    let gw = Gw::start_logging(
        &config(listener, &[dead, live.addr], ""),
        "warn,access=info",
    );
    for i in 0..4 {
        assert_eq!(get(gw.addr, &format!("/log/{i}"), &[]).0, 200);
    }
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines.len() < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = gw
            .stdout
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("4 access lines, got {lines:#?}"));
        let line = plain(&line);
        if line.contains("/log/") {
            lines.push(line);
        }
    }
    for l in &lines {
        for field in [
            "attempts=",
            "upstream_connect_micros=",
            "upstream_micros=",
            " micros=",
        ] {
            assert!(l.contains(field), "no {field} in {l}");
        }
        assert!(
            l.contains(&format!("upstream=\"{}\"", live.addr)),
            "the answering endpoint is logged: {l}"
        );
    }
    let retried = lines.iter().filter(|l| l.contains("attempts=2")).count();
    let first = lines.iter().filter(|l| l.contains("attempts=1")).count();
    assert!(retried > 0 && first > 0, "{lines:#?}");
    assert_eq!(retried as u64, cluster_stat(&gw, "retries"));
}

#[test]
fn bad_retry_settings_are_config_errors() {
    let bin = common::gateway_binary();
    for (extra, want) in [
        ("max_retries = 11", "max_retries: 11 is more than 10"),
        (
            "retry_budget_percent = -1.0",
            "retry_budget_percent: -1 is not a percentage",
        ),
        (
            "retry_budget_percent = 100.5",
            "retry_budget_percent: 100.5 is not a percentage",
        ),
        (
            "retry_budget_percent = nan",
            "retry_budget_percent: NaN is not a percentage",
        ),
        ("retry_min_concurrency = -1", "retry_min_concurrency"),
    ] {
        let path = common::temp_path("retry-bad");
        let _file = common::TempFile(path.clone());
        std::fs::write(&path, config(&listener(1, ""), &[dead_port()], extra)).unwrap();
        let out = std::process::Command::new(&bin)
            .args(["--config".as_ref(), path.as_os_str(), "--check".as_ref()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert!(err.contains(want), "{extra}: {err}");
    }
    let path = common::temp_path("retry-bad");
    let _file = common::TempFile(path.clone());
    let text = config(&listener(1, ""), &[dead_port()], "")
        .replace("cluster = \"c\"\n", "cluster = \"c\"\ntimeout_ms = 0\n");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(&bin)
        .args(["--config".as_ref(), path.as_os_str(), "--check".as_ref()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes[0].timeout_ms: must be above 0"),
        "{err}"
    );
}

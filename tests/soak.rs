//! The soak: the gateway and the echo example (real binaries, child
//! processes) under connection churn, slowloris and bad input at once, for
//! `FULCRUM_SOAK_SECS` seconds (default 600). Every few seconds it samples
//! each server's resident memory and open descriptors; after the warm-up
//! (the first sixth of the run, at least 10 s) neither may grow past its
//! bound, no normal request may fail, and both servers must still be
//! alive at the end.
//!
//! Ignored by `cargo test`: it runs through `scripts/soak.sh [SECONDS]`
//! (`.ci/run` runs a 60-second one).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fulcrum_test_support::rss_kib;

mod common;
use common::{listener, Echo, Gw};

/// Descriptors a server may open beyond its warm-up peak (the slowloris
/// connections come and go; the churn holds a few at a time).
const FD_SLACK: usize = 256;
/// Resident memory a server may gain beyond its warm-up peak, in KiB.
const RSS_SLACK_KIB: u64 = 32 * 1024;
/// Slowloris connections kept open on the gateway.
const SLOWLORIS: usize = 200;

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Counters {
    fn fail(&self, what: String) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() < 20 {
            f.push(what);
        }
    }
}

fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// New connections, one request each, until `stop`.
fn gateway_churn(addr: SocketAddr, stop: &AtomicBool, c: &Counters) {
    while !stop.load(Relaxed) {
        match exchange(
            addr,
            b"GET /status/200 HTTP/1.1\r\nhost: soak\r\nconnection: close\r\n\r\n",
        ) {
            Ok(r) if r.starts_with(b"HTTP/1.1 200") => {
                c.ok.fetch_add(1, Relaxed);
            }
            Ok(r) => c.fail(format!("gateway: {:?}", String::from_utf8_lossy(&r))),
            Err(e) => c.fail(format!("gateway: {e}")),
        }
    }
}

/// New connections echoing 4 KiB each, until `stop`.
fn echo_churn(addr: SocketAddr, stop: &AtomicBool, c: &Counters, seed: u64) {
    let mut rng = fulcrum_test_support::rng(seed);
    let mut data = vec![0u8; 4096];
    while !stop.load(Relaxed) {
        rng.fill(&mut data);
        let result = (|| -> std::io::Result<Vec<u8>> {
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(&data)?;
            let mut back = vec![0u8; data.len()];
            s.read_exact(&mut back)?;
            Ok(back)
        })();
        match result {
            Ok(back) if back == data => {
                c.ok.fetch_add(1, Relaxed);
            }
            Ok(_) => c.fail("echo: different bytes came back".into()),
            Err(e) => c.fail(format!("echo: {e}")),
        }
    }
}

/// Keeps `SLOWLORIS` connections open on the gateway, each sending one
/// byte of a head every 200 ms; the gateway's header timeout closes them
/// and they are opened again.
fn slowloris(addr: SocketAddr, stop: &AtomicBool) {
    let mut conns: Vec<TcpStream> = Vec::new();
    let head = b"GET /status/200 HTTP/1.1\r\nhost: soak\r\nx-slow: ";
    let mut sent = 0usize;
    while !stop.load(Relaxed) {
        while conns.len() < SLOWLORIS {
            match TcpStream::connect(addr) {
                Ok(s) => {
                    let _ = s.set_nonblocking(true);
                    conns.push(s);
                }
                Err(_) => break,
            }
        }
        let b = [head[sent % head.len()]];
        sent += 1;
        // A write that fails means the gateway closed the connection.
        conns.retain_mut(|s| match s.write(&b) {
            Ok(_) => true,
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        });
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Random bytes and malformed requests on new connections, until `stop`.
fn bad_input(addr: SocketAddr, stop: &AtomicBool, seed: u64) {
    let mut rng = fulcrum_test_support::rng(seed);
    let shapes: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"GET /\x01 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: -1\r\n\r\n",
    ];
    while !stop.load(Relaxed) {
        let request = if rng.u32(..) % 2 == 0 {
            let mut v = vec![0u8; 64 + (rng.u32(..) % 2048) as usize];
            rng.fill(&mut v);
            v
        } else {
            shapes[(rng.u32(..) % 4) as usize].to_vec()
        };
        let _ = exchange(addr, &request);
    }
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}: did it exit?"))
        .count()
}

/// (elapsed s, RSS KiB, fds) of one server over the run.
type Samples = Vec<(u64, u64, usize)>;

fn check(name: &str, samples: &Samples, warm_up: u64) {
    let (warm, after): (Vec<&(u64, u64, usize)>, Vec<_>) =
        samples.iter().partition(|s| s.0 < warm_up);
    assert!(
        !warm.is_empty() && !after.is_empty(),
        "{name}: too few samples ({samples:?})"
    );
    let rss_bound = warm.iter().map(|s| s.1).max().unwrap_or(0) + RSS_SLACK_KIB;
    let fd_bound = warm.iter().map(|s| s.2).max().unwrap_or(0) + FD_SLACK;
    for &&(t, rss, fd) in &after {
        assert!(
            rss <= rss_bound,
            "{name}: RSS {rss} KiB at {t} s, past the bound of {rss_bound} KiB (samples {samples:?})"
        );
        assert!(
            fd <= fd_bound,
            "{name}: {fd} open fds at {t} s, past the bound of {fd_bound} (samples {samples:?})"
        );
    }
}

#[test]
#[ignore = "a soak: run it with scripts/soak.sh [SECONDS]"]
fn soak_gateway_and_echo_under_churn_slowloris_and_bad_input() {
    let secs: u64 = std::env::var("FULCRUM_SOAK_SECS")
        .ok()
        .map(|v| v.parse().expect("FULCRUM_SOAK_SECS: a number of seconds"))
        .unwrap_or(600);
    assert!(
        secs >= 30,
        "FULCRUM_SOAK_SECS={secs}: a soak needs at least 30 s"
    );
    let warm_up = (secs / 6).max(10);
    let mut gw = Gw::start(&format!(
        "{}
[[routes]]
prefix = \"/\"
cluster = \"demo\"
[[clusters]]
name = \"demo\"
demo_backends = 2
",
        listener(2, "header_timeout_ms = 1000\n")
    ));
    let mut echo = Echo::start(&["--workers", "2", "--addr", "127.0.0.1:0"]);
    let (gw_addr, echo_addr) = (gw.addr, echo.addr);
    let (gw_pid, echo_pid) = (gw.child.id(), echo.child.id());

    let stop = Arc::new(AtomicBool::new(false));
    let gw_counts = Arc::new(Counters::default());
    let echo_counts = Arc::new(Counters::default());
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (stop, c) = (stop.clone(), gw_counts.clone());
        threads.push(std::thread::spawn(move || {
            gateway_churn(gw_addr, &stop, &c)
        }));
    }
    for seed in 0..2 {
        let (stop, c) = (stop.clone(), echo_counts.clone());
        threads.push(std::thread::spawn(move || {
            echo_churn(echo_addr, &stop, &c, seed)
        }));
    }
    {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || slowloris(gw_addr, &stop)));
    }
    {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || bad_input(gw_addr, &stop, 7)));
    }

    let start = Instant::now();
    let (mut gw_samples, mut echo_samples) = (Samples::new(), Samples::new());
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(2));
        gw.assert_alive();
        let t = start.elapsed().as_secs();
        gw_samples.push((t, rss_kib(gw_pid), fds(gw_pid)));
        echo_samples.push((t, rss_kib(echo_pid), fds(echo_pid)));
    }
    stop.store(true, Relaxed);
    for t in threads {
        t.join().expect("a load thread panicked");
    }
    gw.assert_alive();
    assert!(
        echo.child.try_wait().expect("try_wait").is_none(),
        "the echo example exited"
    );

    for (name, c) in [("gateway", &gw_counts), ("echo", &echo_counts)] {
        let failures = c.failures.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            failures.is_empty(),
            "{name}: normal requests failed: {failures:#?}"
        );
        assert!(
            c.ok.load(Relaxed) > secs,
            "{name}: only {} requests served",
            c.ok.load(Relaxed)
        );
    }
    check("gateway", &gw_samples, warm_up);
    check("echo", &echo_samples, warm_up);
    let last = |s: &Samples| s.last().copied().unwrap_or_default();
    let peak_warm = |s: &Samples| {
        s.iter()
            .filter(|x| x.0 < warm_up)
            .fold((0, 0), |m, x| (m.0.max(x.1), m.1.max(x.2)))
    };
    println!(
        "soak {secs} s: gateway {} requests (RSS warm-up peak {} KiB, end {} KiB; fds {} / {}), echo {} connections (RSS {} / {} KiB; fds {} / {})",
        gw_counts.ok.load(Relaxed),
        peak_warm(&gw_samples).0,
        last(&gw_samples).1,
        peak_warm(&gw_samples).1,
        last(&gw_samples).2,
        echo_counts.ok.load(Relaxed),
        peak_warm(&echo_samples).0,
        last(&echo_samples).1,
        peak_warm(&echo_samples).1,
        last(&echo_samples).2,
    );
}

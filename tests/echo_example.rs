//! The echo example end to end: the real binary (`examples/echo.rs`) runs
//! as a child process; blocking std clients echo through it; SIGINT stops
//! it, and its last line gives the per-worker connection counts.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::Duration;

mod common;
use common::Echo;

/// The numbers in the `[a, b, ...]` of "connections per worker [...]".
fn per_worker(line: &str) -> Vec<u64> {
    let start = line.find("connections per worker [").expect("counts") + 24;
    let end = start + line[start..].find(']').expect("closing bracket");
    line[start..end]
        .split(',')
        .map(|n| n.trim().parse().expect("a count"))
        .collect()
}

#[test]
fn exact_balance_spreads_40_connections_over_4_workers() {
    const CLIENTS: usize = 40;
    let mut echo = Echo::start(&[
        "--workers",
        "4",
        "--balance",
        "exact",
        "--addr",
        "127.0.0.1:0",
    ]);
    // All 40 stay open until every one has had its echo, so the exact
    // balancer sees the open counts grow and spreads them evenly.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut s = TcpStream::connect(echo.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let msg = format!("hello from client {i}\n").repeat(100);
        s.write_all(msg.as_bytes()).expect("write");
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).expect("read the echo");
        assert_eq!(back, msg.as_bytes(), "client {i}");
        clients.push(s);
    }
    for (i, mut s) in clients.into_iter().enumerate() {
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("read to the end");
        assert!(rest.is_empty(), "client {i}: bytes after the echo");
    }

    echo.signal(libc::SIGINT);
    let status = echo.wait(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    // The reader thread ends when the pipe closes, after the last line.
    let lines: Vec<String> = echo.stdout.iter().collect();
    let last = lines
        .iter()
        .find(|l| l.starts_with("echo: stopped on SIGINT"))
        .unwrap_or_else(|| panic!("no stop line in {lines:?}"));
    let counts = per_worker(last);
    assert_eq!(counts.len(), 4, "{last}");
    assert_eq!(counts.iter().sum::<u64>(), CLIENTS as u64, "{last}");
    for (w, &n) in counts.iter().enumerate() {
        assert!((7..=13).contains(&n), "worker {w} handled {n}: {last}");
    }
}

#[test]
fn bad_arguments_exit_with_code_2() {
    for args in [
        &["--balance", "nope"][..],
        &["--workers", "zero"],
        &["--scheduler", "fifo"],
        &["--addr", "not-an-address"],
        &["--frobnicate"],
        &["--workers"],
    ] {
        let out = Command::new(common::example_binary("echo"))
            .args(args)
            .output()
            .expect("run the echo example");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("echo: "), "{args:?}: {err}");
    }
}

//! `fulcrum::http::serve` out of file descriptors: the server runs in a
//! child process (this test binary, the ignored `emfile_http_server`) with
//! a low fd limit and is flooded with connections. Its listener must back
//! off (little CPU while stalled), its open keep-alive connections must go
//! on answering, and once the flood is gone it must accept again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use fulcrum_test_support::{answer_parent, is_child, set_soft_fd_limit, ChildTest};

const SERVER_ENV: &str = "FULCRUM_HTTP_EMFILE_SERVER";

/// The server, in the child: prints `addr <address>`, answers `cpu` on
/// stdin with `cpu <microseconds of its CPU time>`, until stdin closes.
#[test]
#[ignore = "run by http_serve_backs_off_at_emfile_and_recovers in a child process"]
fn emfile_http_server() {
    if !is_child(SERVER_ENV) {
        return;
    }
    let rt = fulcrum::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let listener = rt
        .block_on(fulcrum::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/", get(|| async { "hello" }));
    let _server = rt.spawn(async move { fulcrum::http::serve(listener, app).await });
    set_soft_fd_limit(64);
    println!("addr {addr}");
    answer_parent(|_| None);
    drop(rt);
}

/// One keep-alive GET /, checking the bytes of the response.
fn get_hello(c: &mut TcpStream) -> std::io::Result<()> {
    c.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"hello") {
        let n = c.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{got:?}");
    Ok(())
}

#[test]
fn http_serve_backs_off_at_emfile_and_recovers() {
    let mut server = ChildTest::start("emfile_http_server", SERVER_ENV);
    let addr: SocketAddr = server
        .expect("addr ")
        .parse()
        .expect("the server's address");
    let connect = || {
        let c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    };
    let mut early: Vec<_> = (0..10).map(|_| connect()).collect();
    for c in &mut early {
        get_hello(c).unwrap();
    }
    // More connections than the child has descriptors left.
    let flood: Vec<_> = (0..100).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let cpu0 = server.cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = server.cpu_time() - cpu0;
    // It is at its limit (else nothing here is tested): 64 descriptors.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.id()))
        .unwrap()
        .count();
    eprintln!("http server stalled at its fd limit ({fds} fds): {cpu:?} CPU over 1 s");
    assert!(
        fds >= 62,
        "the server never reached its fd limit: {fds} fds"
    );
    assert!(
        cpu < Duration::from_millis(250),
        "{cpu:?} of CPU in 1 s at the fd limit: the accept loop spins"
    );
    // The connections it has keep being served.
    for c in &mut early {
        get_hello(c).unwrap();
    }
    // The flood leaves; a new connection is accepted and served.
    drop(flood);
    let mut recovered = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        let mut c = connect();
        if get_hello(&mut c).is_ok() {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "no new connection was served after the flood");
}

//! `fulcrum::http::serve` out of file descriptors: the server runs in a
//! child process (this test binary, the ignored `emfile_http_server`) with
//! a low fd limit and is flooded with connections. Its listener must back
//! off (little CPU while stalled), its open keep-alive connections must go
//! on answering, and once the flood is gone it must accept again.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;

const SERVER_ENV: &str = "FULCRUM_HTTP_EMFILE_SERVER";

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct we pass; all-zero is a valid
    // initial value for it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The server, in the child: prints `addr <address>`, answers `cpu` on
/// stdin with `cpu <microseconds of its CPU time>`, until stdin closes.
#[test]
#[ignore = "run by http_serve_backs_off_at_emfile_and_recovers in a child process"]
fn emfile_http_server() {
    if std::env::var(SERVER_ENV).is_err() {
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
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = 64.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    println!("addr {addr}");
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        if line == "cpu" {
            println!("cpu {}", cpu_time().as_micros());
        }
    }
    drop(rt);
}

struct ServerChild {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ServerChild {
    fn start() -> (Self, SocketAddr) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "emfile_http_server", "--ignored", "--nocapture"])
            .env(SERVER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self { child, lines: rx };
        let addr = server.expect("addr ").parse().unwrap();
        (server, addr)
    }

    fn expect(&mut self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .expect("the server process stopped talking");
            if let Some(i) = line.find(prefix) {
                return line[i + prefix.len()..].trim().to_owned();
            }
        }
    }

    fn cpu(&mut self) -> Duration {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "cpu").unwrap();
        stdin.flush().unwrap();
        Duration::from_micros(self.expect("cpu ").parse().unwrap())
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
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
    let (mut server, addr) = ServerChild::start();
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
    let cpu0 = server.cpu();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = server.cpu() - cpu0;
    // It is at its limit (else nothing here is tested): 64 descriptors.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
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

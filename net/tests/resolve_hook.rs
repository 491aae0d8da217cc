//! Host-name resolution runs on the blocking pool, never on a worker:
//! proved with the TEST-ONLY `resolver-hook` feature, which replaces the
//! system resolver so that a lookup blocks until the test releases it
//! (deterministic, no network). Names under `.test` are answered by the
//! hook; everything else falls through to the system resolver.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fulcrum_net::resolver_hook;
use fulcrum_net::{lookup_host, TcpListener, TcpStream, UdpSocket};
use fulcrum_runtime::{Builder, Handle};

/// What the hook saw: calls per host, and the thread each ran on.
#[derive(Default)]
struct Seen {
    calls: HashMap<String, Vec<String>>,
}

struct Gate {
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
static GATE: OnceLock<Gate> = OnceLock::new();

fn seen() -> &'static Mutex<Seen> {
    SEEN.get_or_init(Default::default)
}

/// Installs the hook once for the whole test binary.
fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        resolver_hook::set(Some(Arc::new(|host: &str, port: u16| {
            if !host.ends_with(".test") {
                return None;
            }
            let thread = std::thread::current().name().unwrap_or("").to_string();
            seen()
                .lock()
                .unwrap()
                .calls
                .entry(host.to_string())
                .or_default()
                .push(thread);
            let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            Some(match host {
                "slow.test" => {
                    let gate = GATE.get().expect("gate");
                    let _ = gate.entered.lock().unwrap().send(());
                    match gate
                        .release
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(10))
                    {
                        Ok(()) => Ok(vec![loopback]),
                        Err(_) => Err(io::Error::other("the lookup was never released")),
                    }
                }
                "fails.test" => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
                "empty.test" => Ok(Vec::new()),
                _ => Ok(vec![loopback]),
            })
        })));
    });
}

fn calls(host: &str) -> Vec<String> {
    seen()
        .lock()
        .unwrap()
        .calls
        .get(host)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_slow_lookup_does_not_stall_its_worker() {
    install();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    GATE.set(Gate {
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    })
    .ok()
    .expect("one test uses the gate");
    // One worker: were the lookup on it, the task that releases the lookup
    // could not run until the lookup gave up (after 10 s, failing the
    // connect).
    let rt = Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = Handle::current();
        let connecting =
            handle.spawn_on_worker(
                0,
                async move { TcpStream::connect(("slow.test", port)).await },
            );
        let releaser = handle.spawn_on_worker(0, async move {
            // Runs on the same worker while the lookup blocks.
            while entered_rx.try_recv().is_err() {
                fulcrum_runtime::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(Handle::current().current_worker(), Some(0));
            release_tx.send(()).unwrap();
        });
        let (stream, _) = listener.accept().await.unwrap();
        releaser.await.unwrap();
        let client = connecting
            .await
            .unwrap()
            .expect("connected after the lookup");
        assert_eq!(client.peer_addr().unwrap().port(), port);
        assert_eq!(stream.peer_addr().unwrap(), client.local_addr().unwrap());
    });
    let threads = calls("slow.test");
    assert_eq!(threads.len(), 1);
    assert!(
        threads[0].starts_with("fulcrum-blocking-"),
        "looked up on {:?}",
        threads[0]
    );
}

#[test]
fn every_name_taking_api_resolves_on_the_pool() {
    install();
    for (name, rt) in [
        (
            "dlb",
            Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap(),
        ),
        ("current", Builder::new_current_thread().build().unwrap()),
    ] {
        rt.block_on(async {
            let listener = TcpListener::bind("bind.test:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let _client = TcpStream::connect(format!("connect.test:{port}"))
                .await
                .unwrap();
            let addrs: Vec<_> = lookup_host(("lookup.test", 53)).await.unwrap().collect();
            assert_eq!(
                addrs,
                [SocketAddr::from((Ipv4Addr::LOCALHOST, 53))],
                "{name}"
            );

            let a = UdpSocket::bind("udp.test:0").await.unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let b_port = b.local_addr().unwrap().port();
            a.send_to(b"ping", ("sendto.test", b_port)).await.unwrap();
            let mut buf = [0u8; 8];
            let (n, from) = b.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"ping", "{name}");
            b.connect(format!("udpconnect.test:{}", from.port()))
                .await
                .unwrap();

            let e = TcpStream::connect("fails.test:80").await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{name}: {e}");
            let e = TcpStream::connect("empty.test:80").await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name}: {e}");
        });
    }
    for host in [
        "bind.test",
        "connect.test",
        "lookup.test",
        "udp.test",
        "sendto.test",
        "udpconnect.test",
    ] {
        let threads = calls(host);
        assert_eq!(threads.len(), 2, "{host}: one lookup per runtime");
        assert!(
            threads.iter().all(|t| t.starts_with("fulcrum-blocking-")),
            "{host}: {threads:?}"
        );
    }
}

#[test]
fn addresses_and_ip_literals_never_reach_the_pool() {
    install();
    // The pool's only thread is held until the connects are done: any of
    // them that needed the pool would wait for it, and the holder would
    // time out instead of being released.
    let rt = Builder::new_current_thread()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let released = rt.block_on(async {
        let (held_tx, held_rx) = mpsc::channel();
        let holder = fulcrum_runtime::spawn_blocking(move || {
            held_tx.send(()).unwrap();
            release_rx.recv_timeout(Duration::from_secs(10)).is_ok()
        });
        while held_rx.try_recv().is_err() {
            fulcrum_runtime::time::sleep(Duration::from_millis(1)).await;
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let port = addr.port();
        TcpStream::connect(addr).await.unwrap();
        TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        TcpStream::connect(&[addr][..]).await.unwrap();
        TcpStream::connect(&addr).await.unwrap();
        let v: Vec<_> = lookup_host("[::1]:443").await.unwrap().collect();
        assert_eq!(v, ["[::1]:443".parse::<SocketAddr>().unwrap()]);
        release_tx.send(()).unwrap();
        holder.await.unwrap()
    });
    assert!(released, "a literal address waited for the blocking pool");
}

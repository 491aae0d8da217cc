//! TCP over loopback on every scheduler: echo with random-sized writes,
//! split halves, try_read/try_write, error messages.

use std::time::Duration;

use fulcrum_dlb::Backend;
use fulcrum_net::{TcpListener, TcpStream};
use fulcrum_runtime::{spawn, Builder, Runtime, Scheduler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtimes() -> Vec<(&'static str, Runtime)> {
    let multi = |scheduler| {
        Builder::new_multi_thread()
            .worker_threads(2)
            .scheduler(scheduler)
            .dlb_backend(Backend::Software)
            .build()
            .expect("runtime")
    };
    vec![
        ("dlb", multi(Scheduler::Dlb)),
        ("stealing", multi(Scheduler::WorkStealing)),
        (
            "current",
            Builder::new_current_thread().build().expect("runtime"),
        ),
    ]
}

/// A deterministic pseudo-random sequence (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn echo_200_connections_of_64k_in_random_sized_writes() {
    const CONNS: usize = 200;
    const LEN: usize = 64 * 1024;
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = spawn(async move {
                let mut handlers = Vec::new();
                for _ in 0..CONNS {
                    let (mut s, _peer) = listener.accept().await.unwrap();
                    handlers.push(spawn(async move {
                        let (mut r, mut w) = s.split();
                        tokio::io::copy(&mut r, &mut w).await.unwrap();
                        w.shutdown().await.unwrap();
                    }));
                }
                for h in handlers {
                    h.await.unwrap();
                }
            });
            let clients: Vec<_> = (0..CONNS as u64)
                .map(|i| {
                    spawn(async move {
                        let s = TcpStream::connect(addr).await.unwrap();
                        s.set_nodelay(true).unwrap();
                        let (mut r, mut w) = s.into_split();
                        let mut rng = Rng(i * 7919 + 1);
                        let data: Vec<u8> = (0..LEN).map(|_| rng.next() as u8).collect();
                        let expect = data.clone();
                        let writer = spawn(async move {
                            let mut rng = Rng(i + 17);
                            let mut off = 0;
                            while off < data.len() {
                                let n = (1 + rng.next() as usize % 9000).min(data.len() - off);
                                w.write_all(&data[off..off + n]).await.unwrap();
                                off += n;
                            }
                            w.shutdown().await.unwrap();
                        });
                        let mut back = Vec::with_capacity(LEN);
                        r.read_to_end(&mut back).await.unwrap();
                        writer.await.unwrap();
                        assert!(back == expect, "connection {i}: bytes differ");
                    })
                })
                .collect();
            for c in clients {
                c.await.unwrap();
            }
            server.await.unwrap();
        });
        let m = rt.handle().metrics();
        let live: u64 = m.workers.iter().map(|w| w.io_resources).sum();
        assert_eq!(live, 0, "{name}: sockets left registered: {m:?}");
    }
}

#[test]
fn errors_name_the_address() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = taken.local_addr().unwrap();
            let err = TcpListener::bind(addr).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{name}");
            assert!(
                err.to_string().starts_with(&format!("bind {addr}: ")),
                "{err}"
            );
            drop(taken);
            let err = TcpStream::connect(addr).await.unwrap_err();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{name}: {err}"
            );
            assert!(err.to_string().contains(&addr.to_string()), "{err}");
        });
    }
}

#[test]
fn try_read_try_write_readable_writable() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = TcpStream::connect(addr).await.unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            assert_eq!(server.peer_addr().unwrap(), peer);
            let mut buf = [0u8; 16];
            let e = server.try_read(&mut buf);
            assert!(
                matches!(e, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "{name}: {e:?}"
            );
            client.writable().await.unwrap();
            assert_eq!(client.try_write(b"hello").unwrap(), 5);
            server.readable().await.unwrap();
            let n = loop {
                match server.try_read(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        server.readable().await.unwrap()
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(&buf[..n], b"hello", "{name}");
        });
    }
}

#[test]
fn from_std_and_timeouts_together() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = std_listener.local_addr().unwrap();
            let listener = TcpListener::from_std(std_listener).unwrap();
            let _client = TcpStream::connect(addr).await.unwrap();
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1];
            // Nothing arrives: the read times out instead of hanging.
            let r =
                fulcrum_runtime::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await;
            assert!(r.is_err(), "{name}");
        });
    }
}

//! Unix sockets on every scheduler: a stream echo of 50 connections of
//! 64 KiB checked byte for byte, a datagram echo, pairs, `try_` operations
//! and error messages. Socket files live in a fresh directory under the
//! system temp dir, removed at the end.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{assert_no_sockets_left, echo_in_random_writes, runtimes};
use fulcrum_net::{UnixDatagram, UnixListener, UnixStream};
use fulcrum_runtime::{spawn, time::timeout};
use fulcrum_test_support::{random_bytes, rng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fulcrum-net-{test}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn stream_echo_50_connections_of_64k() {
    const CONNS: usize = 50;
    const LEN: usize = 64 * 1024;
    for (name, rt) in runtimes() {
        let dir = TempDir::new("stream-echo");
        let path = dir.path("echo.sock");
        rt.block_on(async {
            let listener = UnixListener::bind(&path).unwrap();
            assert_eq!(listener.local_addr().unwrap().as_pathname(), Some(&*path));
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
                    let path = path.clone();
                    spawn(async move {
                        let s = UnixStream::connect(&path).await.unwrap();
                        assert_eq!(s.peer_addr().unwrap().as_pathname(), Some(&*path));
                        let (r, w) = s.into_split();
                        let data = random_bytes(&mut rng(i * 7919 + 1), LEN);
                        let back = echo_in_random_writes(r, w, data.clone(), i + 17, 9000).await;
                        assert!(back == data, "connection {i}: bytes differ");
                    })
                })
                .collect();
            for c in clients {
                c.await.unwrap();
            }
            server.await.unwrap();
        });
        assert_no_sockets_left(name, &rt);
    }
}

#[test]
fn datagram_echo_and_pairs() {
    const COUNT: usize = 300;
    for (name, rt) in runtimes() {
        let dir = TempDir::new("datagram-echo");
        let (server_path, client_path) = (dir.path("server.sock"), dir.path("client.sock"));
        rt.block_on(async {
            let server = UnixDatagram::bind(&server_path).unwrap();
            let echo = spawn(async move {
                let mut buf = vec![0u8; 4096];
                for _ in 0..COUNT {
                    let (n, from) = server.recv_from(&mut buf).await.unwrap();
                    let to = from.as_pathname().expect("a bound sender").to_path_buf();
                    server.send_to(&buf[..n], &to).await.unwrap();
                }
            });
            let client = UnixDatagram::bind(&client_path).unwrap();
            let mut buf = vec![0u8; 4096];
            for i in 0..COUNT {
                let data: Vec<u8> = (0..1 + i * 13 % 3000).map(|k| (k + i) as u8).collect();
                client.send_to(&data, &server_path).await.unwrap();
                let (n, from) = client.recv_from(&mut buf).await.unwrap();
                assert_eq!(from.as_pathname(), Some(&*server_path), "{name}");
                assert!(buf[..n] == data[..], "{name}: datagram {i} differs");
            }
            timeout(Duration::from_secs(10), echo)
                .await
                .expect("echo finished")
                .unwrap();

            // Connected: send / recv, and an unbound sender.
            let connected = UnixDatagram::unbound().unwrap();
            connected.connect(&client_path).unwrap();
            assert_eq!(
                connected.peer_addr().unwrap().as_pathname(),
                Some(&*client_path)
            );
            connected.send(b"hi").await.unwrap();
            let (n, from) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"hi");
            assert!(from.is_unnamed(), "{name}: {from:?}");

            // A pair, across tasks, with the `try_` operations.
            let (a, b) = UnixDatagram::pair().unwrap();
            let e = b.try_recv(&mut buf).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{name}");
            let ponger = spawn(async move {
                let mut buf = [0u8; 16];
                let n = b.recv(&mut buf).await.unwrap();
                b.send(&buf[..n]).await.unwrap();
            });
            a.writable().await.unwrap();
            assert_eq!(a.try_send(b"ping").unwrap(), 4);
            let n = loop {
                a.readable().await.unwrap();
                match a.try_recv(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => panic!("{name}: {e}"),
                }
            };
            assert_eq!(&buf[..n], b"ping", "{name}");
            ponger.await.unwrap();
        });
        assert_no_sockets_left(name, &rt);
    }
}

#[test]
fn stream_pair_try_operations_and_from_std() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let mut buf = [0u8; 16];
            let e = b.try_read(&mut buf).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{name}");
            a.writable().await.unwrap();
            assert_eq!(a.try_write(b"hello").unwrap(), 5);
            let n = loop {
                b.readable().await.unwrap();
                match b.try_read(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => panic!("{name}: {e}"),
                }
            };
            assert_eq!(&buf[..n], b"hello", "{name}");

            let (x, y) = std::os::unix::net::UnixStream::pair().unwrap();
            let (mut x, mut y) = (
                UnixStream::from_std(x).unwrap(),
                UnixStream::from_std(y).unwrap(),
            );
            x.write_all(b"std").await.unwrap();
            x.shutdown().await.unwrap();
            let mut got = Vec::new();
            y.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"std", "{name}");
            // Nothing more arrives on the other direction: a timeout.
            let r = timeout(Duration::from_millis(20), x.read(&mut buf)).await;
            assert!(r.is_err(), "{name}");
        });
        assert_no_sockets_left(name, &rt);
    }
}

#[test]
fn errors_name_the_path() {
    for (name, rt) in runtimes() {
        let dir = TempDir::new("errors");
        let path = dir.path("taken.sock");
        rt.block_on(async {
            let _taken = UnixListener::bind(&path).unwrap();
            let err = UnixListener::bind(&path).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{name}");
            assert!(
                err.to_string()
                    .starts_with(&format!("bind {}: ", path.display())),
                "{err}"
            );
            let missing: &Path = &dir.path("missing.sock");
            let err = UnixStream::connect(missing).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{name}: {err}");
            assert!(
                err.to_string().contains(&missing.display().to_string()),
                "{err}"
            );
            let err = UnixDatagram::unbound()
                .unwrap()
                .connect(missing)
                .unwrap_err();
            assert!(
                err.to_string().contains(&missing.display().to_string()),
                "{err}"
            );
        });
        assert_no_sockets_left(name, &rt);
    }
}

//! The `futures-io` feature: the streams through `futures_io::AsyncRead`
//! and `AsyncWrite` only (futures-util's extension traits, tokio's not in
//! scope), on every scheduler. A TCP and a Unix echo of 64 KiB per
//! connection, checked byte for byte: the servers copy with
//! `futures_util::io::copy` between borrowed halves, the clients use owned
//! halves or the whole stream, and every writer ends with `close()` (the
//! write side's shutdown, seen by the peer as end-of-file).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{assert_no_sockets_left, runtimes};
use fulcrum_net::{TcpListener, TcpStream, UnixListener, UnixStream};
use fulcrum_runtime::{spawn, time::timeout};
use futures_util::io::{AsyncReadExt, AsyncWriteExt};

const LEN: usize = 64 * 1024;
const CONNS: usize = 8;

/// A deterministic pattern, different per connection.
fn data(seed: usize) -> Vec<u8> {
    (0..LEN)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(97)) as u8)
        .collect()
}

/// Both traits are implemented for every stream type (compile-time check).
#[test]
fn every_stream_type_has_both_traits() {
    fn both<T: futures_io::AsyncRead + tokio::io::AsyncRead>() {}
    fn both_w<T: futures_io::AsyncWrite + tokio::io::AsyncWrite>() {}
    both::<TcpStream>();
    both_w::<TcpStream>();
    both::<fulcrum_net::tcp::OwnedReadHalf>();
    both_w::<fulcrum_net::tcp::OwnedWriteHalf>();
    both::<fulcrum_net::tcp::ReadHalf<'static>>();
    both_w::<fulcrum_net::tcp::WriteHalf<'static>>();
    both::<UnixStream>();
    both_w::<UnixStream>();
    both::<fulcrum_net::unix::OwnedReadHalf>();
    both_w::<fulcrum_net::unix::OwnedWriteHalf>();
    both::<fulcrum_net::unix::ReadHalf<'static>>();
    both_w::<fulcrum_net::unix::WriteHalf<'static>>();
}

#[test]
fn tcp_echo_of_64k_through_futures_io() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = spawn(async move {
                let mut handlers = Vec::new();
                for _ in 0..CONNS {
                    let (mut s, _peer) = listener.accept().await.unwrap();
                    handlers.push(spawn(async move {
                        // The inherent (borrowing) split, not futures-util's
                        // `AsyncReadExt::split`, which takes the stream.
                        let (mut r, mut w) = TcpStream::split(&mut s);
                        let n = futures_util::io::copy(&mut r, &mut w).await.unwrap();
                        w.close().await.unwrap();
                        n
                    }));
                }
                let mut total = 0;
                for h in handlers {
                    total += h.await.unwrap();
                }
                total
            });
            let clients: Vec<_> = (0..CONNS)
                .map(|i| {
                    spawn(async move {
                        let s = TcpStream::connect(addr).await.unwrap();
                        let (mut r, mut w) = s.into_split();
                        let sent = data(i);
                        let expect = sent.clone();
                        let writer = spawn(async move {
                            for chunk in sent.chunks(1000) {
                                w.write_all(chunk).await.unwrap();
                            }
                            w.flush().await.unwrap();
                            w.close().await.unwrap();
                        });
                        let mut got = Vec::new();
                        r.read_to_end(&mut got).await.unwrap();
                        writer.await.unwrap();
                        assert!(got == expect, "connection {i}: echo differs");
                    })
                })
                .collect();
            for c in clients {
                timeout(Duration::from_secs(60), c)
                    .await
                    .unwrap_or_else(|_| panic!("{name}: a client timed out"))
                    .unwrap();
            }
            let total = server.await.unwrap();
            assert_eq!(total, (CONNS * LEN) as u64, "{name}");
        });
        assert_no_sockets_left(name, &rt);
    }
}

#[test]
fn unix_echo_of_64k_through_futures_io() {
    for (name, rt) in runtimes() {
        let dir = std::env::temp_dir().join(format!(
            "fulcrum-net-futures-io-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path: PathBuf = dir.join("echo.sock");
        rt.block_on(async {
            let listener = UnixListener::bind(&path).unwrap();
            let server = spawn(async move {
                let mut handlers = Vec::new();
                for _ in 0..CONNS {
                    let (mut s, _peer) = listener.accept().await.unwrap();
                    handlers.push(spawn(async move {
                        let (mut r, mut w) = UnixStream::split(&mut s);
                        let n = futures_util::io::copy(&mut r, &mut w).await.unwrap();
                        w.close().await.unwrap();
                        n
                    }));
                }
                let mut total = 0;
                for h in handlers {
                    total += h.await.unwrap();
                }
                total
            });
            let clients: Vec<_> = (0..CONNS)
                .map(|i| {
                    let path = path.clone();
                    spawn(async move {
                        let mut s = UnixStream::connect(&path).await.unwrap();
                        let sent = data(i);
                        if i % 2 == 0 {
                            // The whole stream, in lock step: 4 KiB out,
                            // 4 KiB back.
                            let mut back = [0u8; 4096];
                            for chunk in sent.chunks(back.len()) {
                                s.write_all(chunk).await.unwrap();
                                s.read_exact(&mut back[..chunk.len()]).await.unwrap();
                                assert!(back[..chunk.len()] == *chunk, "connection {i}");
                            }
                            s.close().await.unwrap();
                            let mut rest = Vec::new();
                            s.read_to_end(&mut rest).await.unwrap();
                            assert!(rest.is_empty(), "connection {i}: bytes after the echo");
                        } else {
                            // Owned halves, writing and reading at once.
                            let (mut r, mut w) = s.into_split();
                            let expect = sent.clone();
                            let writer = spawn(async move {
                                w.write_all(&sent).await.unwrap();
                                w.close().await.unwrap();
                            });
                            let mut got = Vec::new();
                            r.read_to_end(&mut got).await.unwrap();
                            writer.await.unwrap();
                            assert!(got == expect, "connection {i}: echo differs");
                        }
                    })
                })
                .collect();
            for c in clients {
                timeout(Duration::from_secs(60), c)
                    .await
                    .unwrap_or_else(|_| panic!("{name}: a client timed out"))
                    .unwrap();
            }
            let total = server.await.unwrap();
            assert_eq!(total, (CONNS * LEN) as u64, "{name}");
        });
        assert_no_sockets_left(name, &rt);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! TCP over loopback on every scheduler: echo with random-sized writes,
//! split halves, try_read/try_write, error messages, and `TcpSocket`
//! (options, `SO_REUSEPORT`, non-blocking connect).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{echo_in_random_writes, runtimes};
use fulcrum_net::{TcpListener, TcpSocket, TcpStream};
use fulcrum_runtime::spawn;
use fulcrum_test_support::{random_bytes, rng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

#[test]
fn tcp_socket_reuseport_lets_two_listeners_share_a_port() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let first = TcpSocket::new_v4().unwrap();
            first.set_reuseport(true).unwrap();
            assert!(first.reuseport().unwrap());
            first.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = first.local_addr().unwrap();
            let second = TcpSocket::new_v4().unwrap();
            second.set_reuseport(true).unwrap();
            second.bind(addr).unwrap();
            let (a, b) = (first.listen(64).unwrap(), second.listen(64).unwrap());
            assert_eq!(a.local_addr().unwrap(), addr);
            assert_eq!(b.local_addr().unwrap(), addr);
            // Every connection lands on one of the two; serve both.
            let serve = |l: TcpListener| {
                spawn(async move {
                    while let Ok((mut s, _)) = l.accept().await {
                        let mut byte = [0u8; 1];
                        s.read_exact(&mut byte).await.unwrap();
                        s.write_all(&byte).await.unwrap();
                    }
                })
            };
            let (ha, hb) = (serve(a), serve(b));
            for i in 0..20u8 {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(&[i]).await.unwrap();
                let mut byte = [0u8; 1];
                s.read_exact(&mut byte).await.unwrap();
                assert_eq!(byte[0], i, "{name}");
            }
            ha.abort();
            hb.abort();
            let _ = ha.await;
            let _ = hb.await;
        });
    }
}

#[test]
fn tcp_socket_errors_name_the_address() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = taken.local_addr().unwrap();
            let s = TcpSocket::new_v4().unwrap();
            let err = s.bind(addr).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{name}");
            assert!(
                err.to_string().starts_with(&format!("bind {addr}: ")),
                "{err}"
            );
            drop(taken);
            let err = TcpSocket::new_v4()
                .unwrap()
                .connect(addr)
                .await
                .unwrap_err();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{name}: {err}"
            );
            assert!(
                err.to_string().starts_with(&format!("connect {addr}: ")),
                "{err}"
            );
        });
    }
}

#[test]
fn tcp_socket_options_and_connect_from_a_bound_address() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let s = TcpSocket::new_v4().unwrap();
            s.set_reuseaddr(true).unwrap();
            assert!(s.reuseaddr().unwrap());
            s.set_nodelay(true).unwrap();
            assert!(s.nodelay().unwrap());
            s.set_keepalive(true).unwrap();
            assert!(s.keepalive().unwrap());
            s.set_send_buffer_size(64 * 1024).unwrap();
            s.set_recv_buffer_size(64 * 1024).unwrap();
            // Linux doubles the sizes it is given.
            assert!(s.send_buffer_size().unwrap() >= 64 * 1024, "{name}");
            assert!(s.recv_buffer_size().unwrap() >= 64 * 1024, "{name}");
            assert!(s.take_error().unwrap().is_none());
            s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let from = s.local_addr().unwrap();
            let mut client = s.connect(addr).await.unwrap();
            assert_eq!(client.local_addr().unwrap(), from, "{name}");
            assert!(client.nodelay().unwrap(), "{name}");
            let (mut server, peer) = listener.accept().await.unwrap();
            assert_eq!(peer, from);
            client.write_all(b"over TcpSocket").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"over TcpSocket", "{name}");

            // IPv6, where the host has it.
            if let Ok(l6) = TcpListener::bind("[::1]:0").await {
                let addr6 = l6.local_addr().unwrap();
                let c6 = TcpSocket::new_v6().unwrap().connect(addr6).await.unwrap();
                let (_, peer6): (_, SocketAddr) = l6.accept().await.unwrap();
                assert_eq!(peer6, c6.local_addr().unwrap(), "{name}");
            }

            // from_std_stream reads the options of a connected stream.
            let std_stream = std::net::TcpStream::connect(addr).unwrap();
            std_stream.set_nodelay(true).unwrap();
            let wrapped = TcpSocket::from_std_stream(std_stream);
            assert!(wrapped.nodelay().unwrap(), "{name}");
            assert_ne!(wrapped.local_addr().unwrap().port(), 0);
        });
    }
}

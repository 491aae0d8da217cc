//! UDP over loopback on every scheduler: a request/response echo of 1,000
//! datagrams from 8 clients with every payload checked, the `try_`/`poll_`
//! operations, options and error messages.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{assert_no_sockets_left, runtimes};
use fulcrum_net::UdpSocket;
use fulcrum_runtime::{spawn, time::timeout};
use tokio::io::ReadBuf;

/// The payload of datagram `i` of client `c`: its own length and bytes.
fn payload(c: usize, i: usize) -> Vec<u8> {
    let len = 1 + (c * 131 + i * 577) % 1400;
    (0..len).map(|k| (k * 31 + i * 7 + c) as u8).collect()
}

#[test]
fn echo_1000_datagrams_from_8_clients() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 125;
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = server.local_addr().unwrap();
            let echo = spawn(async move {
                let mut buf = vec![0u8; 2048];
                for _ in 0..CLIENTS * PER_CLIENT {
                    let (n, peer) = server.recv_from(&mut buf).await.unwrap();
                    assert_eq!(server.send_to(&buf[..n], peer).await.unwrap(), n);
                }
            });
            let clients: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    spawn(async move {
                        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                        sock.connect(addr).await.unwrap();
                        assert_eq!(sock.peer_addr().unwrap(), addr);
                        let mut buf = vec![0u8; 2048];
                        for i in 0..PER_CLIENT {
                            let data = payload(c, i);
                            assert_eq!(sock.send(&data).await.unwrap(), data.len());
                            let n = sock.recv(&mut buf).await.unwrap();
                            assert!(buf[..n] == data[..], "client {c}, datagram {i} differs");
                        }
                    })
                })
                .collect();
            for c in clients {
                c.await.unwrap();
            }
            timeout(Duration::from_secs(10), echo)
                .await
                .expect("echo server finished")
                .unwrap();
        });
        assert_no_sockets_left(name, &rt);
    }
}

#[test]
fn try_and_poll_operations() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
            let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
            let mut buf = [0u8; 64];
            let e = b.try_recv_from(&mut buf).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{name}");

            a.writable().await.unwrap();
            assert_eq!(a.try_send_to(b"one", b_addr).unwrap(), 3);
            let (n, from) = loop {
                b.readable().await.unwrap();
                match b.try_recv_from(&mut buf) {
                    Ok(r) => break r,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => panic!("{name}: {e}"),
                }
            };
            assert_eq!((&buf[..n], from), (&b"one"[..], a_addr), "{name}");

            // poll_send_to / poll_recv_from, with a receiver in another task.
            let b2 = b.clone();
            let receiver = spawn(async move {
                let mut storage = [0u8; 64];
                let mut rb = ReadBuf::new(&mut storage);
                let from = std::future::poll_fn(|cx| b2.poll_recv_from(cx, &mut rb))
                    .await
                    .unwrap();
                (rb.filled().to_vec(), from)
            });
            fulcrum_runtime::time::sleep(Duration::from_millis(10)).await;
            let n = std::future::poll_fn(|cx| a.poll_send_to(cx, b"two", b_addr))
                .await
                .unwrap();
            assert_eq!(n, 3);
            let (got, from) = receiver.await.unwrap();
            assert_eq!((&got[..], from), (&b"two"[..], a_addr), "{name}");

            // Connected try_send / try_recv and peek_from.
            a.connect(b_addr).await.unwrap();
            b.connect(a_addr).await.unwrap();
            assert_eq!(a.try_send(b"three").unwrap(), 5);
            let (n, from) = b.peek_from(&mut buf).await.unwrap();
            assert_eq!((&buf[..n], from), (&b"three"[..], a_addr), "{name}");
            let n = loop {
                match b.try_recv(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        b.readable().await.unwrap()
                    }
                    Err(e) => panic!("{name}: {e}"),
                }
            };
            assert_eq!(&buf[..n], b"three", "{name}");
            drop(b);
        });
        assert_no_sockets_left(name, &rt);
    }
}

#[test]
fn options_from_std_and_errors() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = std_sock.local_addr().unwrap();
            let sock = UdpSocket::from_std(std_sock).unwrap();
            assert_eq!(sock.local_addr().unwrap(), addr);
            assert!(!sock.broadcast().unwrap());
            sock.set_broadcast(true).unwrap();
            assert!(sock.broadcast().unwrap(), "{name}");
            sock.set_ttl(17).unwrap();
            assert_eq!(sock.ttl().unwrap(), 17);
            assert!(sock.take_error().unwrap().is_none());
            let e = sock.peer_addr().unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::NotConnected, "{name}");

            let err = UdpSocket::bind(addr).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{name}");
            assert!(
                err.to_string().starts_with(&format!("bind {addr}: ")),
                "{err}"
            );

            // Nothing arrives: the receive times out instead of hanging.
            let mut buf = [0u8; 8];
            let r = timeout(Duration::from_millis(20), sock.recv_from(&mut buf)).await;
            assert!(r.is_err(), "{name}");

            // A datagram to a closed port: the ICMP error surfaces on the
            // connected socket's next receive.
            let closed: SocketAddr = {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.local_addr().unwrap()
            };
            let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            c.connect(closed).await.unwrap();
            c.send(b"anyone?").await.unwrap();
            let r = timeout(Duration::from_secs(5), c.recv(&mut buf))
                .await
                .expect("the ICMP error arrives");
            assert_eq!(
                r.unwrap_err().kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{name}"
            );
        });
        assert_no_sockets_left(name, &rt);
    }
}

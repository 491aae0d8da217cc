//! `net::tcp::{ReadHalf, WriteHalf, OwnedReadHalf, OwnedWriteHalf,
//! ReuniteError}` and the `net::unix` equivalents, as tokio's.

use std::time::Duration;

use fulcrum_net::{tcp, unix, TcpListener, TcpStream, UnixStream};
use fulcrum_runtime::time::timeout;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::runtimes;

const LIMIT: Duration = Duration::from_secs(10);

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

#[test]
fn tcp_owned_halves_reunite_and_shut_down_on_drop() {
    for (_, rt) in runtimes() {
        rt.block_on(async {
            let (a, mut b) = tcp_pair().await;
            let (mut r, mut w) = a.into_split();
            assert_eq!(r.peer_addr().unwrap(), b.local_addr().unwrap());
            assert_eq!(w.local_addr().unwrap(), b.peer_addr().unwrap());
            assert_eq!(
                AsRef::<TcpStream>::as_ref(&r).peer_addr().unwrap(),
                w.peer_addr().unwrap()
            );
            w.write_all(b"hi").await.unwrap();
            let mut buf = [0u8; 2];
            b.read_exact(&mut buf).await.unwrap();
            b.write_all(b"yo").await.unwrap();
            r.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"yo");

            // Halves of different streams: an error that gives both back.
            let (c, _d) = tcp_pair().await;
            let (r2, w2) = c.into_split();
            let tcp::ReuniteError(r, w2) = r.reunite(w2).expect_err("different streams");
            drop((r2, w2));
            let mut a = r.reunite(w).expect("same stream");
            a.write_all(b"!").await.unwrap();
            let mut one = [0u8; 1];
            b.read_exact(&mut one).await.unwrap();

            // Dropping the owned write half shuts the write side down: the
            // peer reads end-of-file, and the read half still works.
            let (mut r, w) = a.into_split();
            drop(w);
            let mut rest = Vec::new();
            timeout(LIMIT, b.read_to_end(&mut rest))
                .await
                .unwrap()
                .unwrap();
            assert!(rest.is_empty());
            b.write_all(b"still").await.unwrap();
            let mut five = [0u8; 5];
            r.read_exact(&mut five).await.unwrap();
            assert_eq!(&five, b"still");
        });
    }
}

#[test]
fn tcp_forget_keeps_the_write_side_open() {
    for (_, rt) in runtimes() {
        rt.block_on(async {
            let (a, mut b) = tcp_pair().await;
            let (r, w) = a.into_split();
            w.forget();
            // No end-of-file: the read times out instead.
            let mut one = [0u8; 1];
            let r2 = timeout(Duration::from_millis(50), b.read(&mut one)).await;
            assert!(r2.is_err(), "the peer saw the write side close");
            drop(r);
        });
    }
}

#[test]
fn tcp_borrowed_halves() {
    for (_, rt) in runtimes() {
        rt.block_on(async {
            let (mut a, mut b) = tcp_pair().await;
            {
                let (mut r, mut w): (tcp::ReadHalf<'_>, tcp::WriteHalf<'_>) = a.split();
                assert_eq!(r.local_addr().unwrap(), w.local_addr().unwrap());
                w.writable().await.unwrap();
                assert_eq!(w.try_write(b"x").unwrap(), 1);
                b.write_all(b"pong").await.unwrap();
                r.readable().await.unwrap();
                let mut peeked = [0u8; 4];
                let n = r.peek(&mut peeked).await.unwrap();
                assert!(n >= 1);
                let mut buf = [0u8; 4];
                r.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"pong");
                w.write_all(b"yz").await.unwrap();
                // Dropping a borrowed write half does not shut anything.
            }
            let mut three = [0u8; 3];
            b.read_exact(&mut three).await.unwrap();
            assert_eq!(&three, b"xyz");
            a.write_all(b"ok").await.unwrap();
        });
    }
}

#[test]
fn unix_halves_as_tcp() {
    for (_, rt) in runtimes() {
        rt.block_on(async {
            let (a, mut b) = UnixStream::pair().unwrap();
            let (mut r, mut w): (unix::OwnedReadHalf, unix::OwnedWriteHalf) = a.into_split();
            w.write_all(b"ab").await.unwrap();
            let mut two = [0u8; 2];
            b.read_exact(&mut two).await.unwrap();
            let (c, _d) = UnixStream::pair().unwrap();
            let (r2, w2) = c.into_split();
            let unix::ReuniteError(r_back, w2) = r.reunite(w2).expect_err("different");
            drop((r2, w2));
            r = r_back;
            let mut a = w.reunite(r).expect("same stream");
            {
                let (mut rh, mut wh): (unix::ReadHalf<'_>, unix::WriteHalf<'_>) = a.split();
                wh.write_all(b"c").await.unwrap();
                b.write_all(b"d").await.unwrap();
                let mut one = [0u8; 1];
                rh.read_exact(&mut one).await.unwrap();
                assert_eq!(&one, b"d");
            }
            let (_r, w) = a.into_split();
            drop(w);
            let mut rest = Vec::new();
            timeout(LIMIT, b.read_to_end(&mut rest))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(rest, b"c");
        });
    }
}

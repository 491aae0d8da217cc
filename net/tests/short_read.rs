//! A short read clears the socket's readiness (the receive queue is empty,
//! so the next read would return `EAGAIN`); data that arrives after it must
//! still wake the reader. Ping-pong with one-byte messages, and bursts
//! written while the reader is between reads.

use std::time::Duration;

use fulcrum_dlb::Backend;
use fulcrum_net::{TcpListener, TcpStream};
use fulcrum_runtime::Builder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rt() -> fulcrum_runtime::Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .dlb_backend(Backend::Software)
        .build()
        .unwrap()
}

#[test]
fn short_reads_never_miss_later_data() {
    rt().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = fulcrum_runtime::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let mut total = 0usize;
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return total;
                }
                total += n;
                // Echo the count of bytes seen so far, one byte mod 256.
                s.write_all(&[(total % 256) as u8]).await.unwrap();
            }
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.set_nodelay(true).unwrap();
        let mut sent = 0usize;
        for i in 0..2000usize {
            // One byte, or a burst of small writes while the server is
            // between reads.
            let chunks = if i % 10 == 0 { 3 } else { 1 };
            for _ in 0..chunks {
                c.write_all(b"x").await.unwrap();
                sent += 1;
            }
            if i % 100 == 0 {
                fulcrum_runtime::time::sleep(Duration::from_millis(1)).await;
            }
            // Read acks until the last one covers everything sent.
            let mut ack = [0u8; 1];
            loop {
                fulcrum_runtime::time::timeout(Duration::from_secs(10), c.read_exact(&mut ack))
                    .await
                    .expect("the server missed data after a short read")
                    .unwrap();
                if ack[0] as usize == sent % 256 {
                    break;
                }
            }
        }
        drop(c);
        assert_eq!(server.await.unwrap(), sent);
    });
}

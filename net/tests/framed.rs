//! tokio-util's `Framed` with `LinesCodec` on Fulcrum's `TcpStream`,
//! through tokio's `AsyncRead`/`AsyncWrite`, on every scheduler: a server
//! answers each line upper-cased; 20 clients send 200 lines each (in
//! pipelined batches of 50) and check every answer, in order.

mod common;

use std::time::Duration;

use common::{assert_no_sockets_left, runtimes};
use fulcrum_net::{TcpListener, TcpStream};
use fulcrum_runtime::{spawn, time::timeout};
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{Framed, LinesCodec};

const CLIENTS: usize = 20;
const LINES: usize = 200;
const BATCH: usize = 50;

fn line(client: usize, i: usize) -> String {
    format!("client {client} line {i}: the quick brown fox")
}

#[test]
fn lines_echo_upper_cased_20_clients_of_200_lines() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = spawn(async move {
                let mut handlers = Vec::new();
                for _ in 0..CLIENTS {
                    let (stream, _peer) = listener.accept().await.unwrap();
                    handlers.push(spawn(async move {
                        let mut framed = Framed::new(stream, LinesCodec::new());
                        let mut answered = 0;
                        while let Some(line) = framed.next().await {
                            framed.send(line.unwrap().to_uppercase()).await.unwrap();
                            answered += 1;
                        }
                        answered
                    }));
                }
                let mut total = 0;
                for h in handlers {
                    total += h.await.unwrap();
                }
                total
            });
            let clients: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    spawn(async move {
                        let stream = TcpStream::connect(addr).await.unwrap();
                        let mut framed = Framed::new(stream, LinesCodec::new());
                        for start in (0..LINES).step_by(BATCH) {
                            for i in start..start + BATCH {
                                framed.feed(line(c, i)).await.unwrap();
                            }
                            SinkExt::<String>::flush(&mut framed).await.unwrap();
                            for i in start..start + BATCH {
                                let got = framed.next().await.expect("an answer").unwrap();
                                assert_eq!(got, line(c, i).to_uppercase(), "client {c}");
                            }
                        }
                        // Closing the sink shuts down the write side: the
                        // server's stream ends and it closes too.
                        SinkExt::<String>::close(&mut framed).await.unwrap();
                        assert!(framed.next().await.is_none(), "client {c}: extra answers");
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
            assert_eq!(total, CLIENTS * LINES, "{name}");
        });
        assert_no_sockets_left(name, &rt);
    }
}

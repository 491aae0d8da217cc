//! A small tokio program, ported to Fulcrum by renaming paths only.
//!
//! It is an echo server and a client that uses `select!`, `timeout`,
//! `JoinSet` and `mpsc`. The tokio original is this file with the changes
//! below reversed; this is the whole diff (`-` tokio, `+` Fulcrum):
//!
//! ```diff
//! -use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! -use tokio::net::{TcpListener, TcpStream};
//! -use tokio::sync::mpsc;
//! -use tokio::task::JoinSet;
//! -use tokio::time::{sleep, timeout};
//! +use fulcrum::io::{AsyncReadExt, AsyncWriteExt};
//! +use fulcrum::net::{TcpListener, TcpStream};
//! +use fulcrum::sync::mpsc;
//! +use fulcrum::task::JoinSet;
//! +use fulcrum::time::{sleep, timeout};
//! -#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! +#[fulcrum::test(flavor = "multi_thread", worker_threads = 2)]
//! -    tokio::spawn(async move {
//! +    fulcrum::spawn(async move {
//! -            tokio::spawn(async move {
//! +            fulcrum::spawn(async move {
//! -        tokio::select! {
//! +        fulcrum::select! {
//! ```

use std::time::Duration;

use fulcrum::io::{AsyncReadExt, AsyncWriteExt};
use fulcrum::net::{TcpListener, TcpStream};
use fulcrum::sync::mpsc;
use fulcrum::task::JoinSet;
use fulcrum::time::{sleep, timeout};

async fn echo_server(listener: TcpListener) {
    loop {
        let (mut socket, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(_) => return,
        };
        fulcrum::spawn(async move {
            let mut buf = vec![0; 1024];
            loop {
                let n = match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if socket.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[fulcrum::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_with_select_timeout_joinset_and_mpsc() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    fulcrum::spawn(async move {
        echo_server(listener).await;
    });

    // Clients report their echoes over a channel.
    let (tx, mut rx) = mpsc::channel::<(usize, String)>(16);
    let mut clients = JoinSet::new();
    for id in 0..8 {
        let tx = tx.clone();
        clients.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let msg = format!("hello from {id}");
            stream.write_all(msg.as_bytes()).await.unwrap();
            let mut buf = vec![0; msg.len()];
            timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
                .await
                .expect("echo timed out")
                .unwrap();
            tx.send((id, String::from_utf8(buf).unwrap()))
                .await
                .unwrap();
        });
    }
    drop(tx);

    let mut got = Vec::new();
    loop {
        fulcrum::select! {
            msg = rx.recv() => match msg {
                Some((id, echo)) => {
                    assert_eq!(echo, format!("hello from {id}"));
                    got.push(id);
                }
                None => break,
            },
            _ = sleep(Duration::from_secs(10)) => panic!("echoes stopped arriving"),
        }
    }
    while let Some(res) = clients.join_next().await {
        res.unwrap();
    }
    got.sort_unstable();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
}

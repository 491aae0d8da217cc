//! hyper 1.x on Fulcrum through the `hyper` feature: a hyper HTTP/1.1
//! server (served with each balance mode) and hyper clients exchange 1,000
//! requests; the server's header-read timeout runs on `FulcrumTimer`; an
//! upgraded connection turns back into a tokio-trait stream.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use fulcrum_net::hyper::{FulcrumExecutor, FulcrumTimer, HyperIo};
use fulcrum_net::{Balance, Server, TcpStream};
use fulcrum_runtime::spawn;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::runtimes;

/// Answers `/echo` with the request body, and everything else with the
/// path.
async fn service(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/echo" {
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        return Ok(Response::new(Full::new(body.unwrap_or_default())));
    }
    Ok(Response::new(Full::new(Bytes::from(path))))
}

async fn serve_http(balance: Balance) -> fulcrum_net::Serving {
    Server::bind("127.0.0.1:0".parse().unwrap())
        .balance(balance)
        .serve(|stream: TcpStream, _peer| async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(FulcrumTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(HyperIo::new(stream), hyper::service::service_fn(service));
            let _ = conn.await;
        })
        .await
        .unwrap()
}

#[test]
fn server_and_clients_exchange_1000_requests() {
    const CLIENTS: usize = 10;
    const PER_CLIENT: usize = 100;
    for (name, rt) in runtimes() {
        for balance in [Balance::Dlb, Balance::Exact] {
            rt.block_on(async {
                let serving = serve_http(balance).await;
                let addr = serving.local_addr();
                let mut clients = Vec::new();
                for c in 0..CLIENTS {
                    clients.push(spawn(async move {
                        let stream = TcpStream::connect(addr).await.unwrap();
                        let (mut sender, conn) =
                            hyper::client::conn::http1::handshake(HyperIo::new(stream))
                                .await
                                .unwrap();
                        let driver = spawn(conn);
                        for i in 0..PER_CLIENT {
                            // hyper's contract: wait until the connection can
                            // take the next request.
                            sender.ready().await.unwrap();
                            let body = format!("client {c} request {i}");
                            let req = Request::post("/echo")
                                .header("host", "test")
                                .body(Full::new(Bytes::from(body.clone())))
                                .unwrap();
                            let resp = sender.send_request(req).await.unwrap();
                            assert_eq!(resp.status(), 200);
                            let got = resp.into_body().collect().await.unwrap().to_bytes();
                            assert_eq!(got, body.as_bytes());
                        }
                        drop(sender);
                        driver.await.unwrap().unwrap();
                        PER_CLIENT
                    }));
                }
                let mut total = 0;
                for c in clients {
                    total += c.await.unwrap();
                }
                assert_eq!(total, 1000, "{name} {balance:?}");
                let handled: u64 = serving.handled_per_worker().iter().sum();
                assert_eq!(handled, CLIENTS as u64, "{name} {balance:?}");
                serving.stop();
            });
        }
    }
}

/// The header-read timeout is a `FulcrumTimer` sleep: a client that sends
/// half a request head and stops is disconnected.
#[test]
fn header_read_timeout_fires_on_fulcrum_timer() {
    let rt = &runtimes()[0].1;
    rt.block_on(async {
        let serving = Server::bind("127.0.0.1:0".parse().unwrap())
            .serve(|stream: TcpStream, _peer| async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(FulcrumTimer::new())
                    .header_read_timeout(Duration::from_millis(200))
                    .serve_connection(HyperIo::new(stream), hyper::service::service_fn(service));
                let _ = conn.await;
            })
            .await
            .unwrap();
        let mut s = TcpStream::connect(serving.local_addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = Vec::new();
        let read = fulcrum_runtime::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .expect("the server closed the slow connection");
        assert!(read.is_ok() || buf.is_empty());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        serving.stop();
    });
}

/// hyper's `Executor` spawns on Fulcrum, and an upgraded connection comes
/// back to tokio's traits through `HyperIo`.
#[test]
fn executor_spawns_and_upgrade_round_trips() {
    use hyper::rt::Executor;
    let rt = &runtimes()[0].1;
    rt.block_on(async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        FulcrumExecutor::new().execute(async move {
            tx.send(fulcrum_runtime::Handle::current().current_worker())
                .unwrap();
        });
        let worker = rx.await.unwrap();
        assert!(worker.is_some(), "executor futures run on a worker");

        let serving = Server::bind("127.0.0.1:0".parse().unwrap())
            .serve(|stream: TcpStream, _peer| async move {
                let svc = hyper::service::service_fn(
                    |mut req: Request<hyper::body::Incoming>| async move {
                        spawn(async move {
                            let upgraded = hyper::upgrade::on(&mut req).await.unwrap();
                            let mut io = HyperIo::new(upgraded);
                            let mut buf = [0u8; 4];
                            io.read_exact(&mut buf).await.unwrap();
                            io.write_all(&buf).await.unwrap();
                            io.write_all(b"!").await.unwrap();
                        });
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(101)
                                .header("connection", "upgrade")
                                .header("upgrade", "echo")
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(HyperIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            })
            .await
            .unwrap();

        let stream = TcpStream::connect(serving.local_addr()).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(HyperIo::new(stream))
            .await
            .unwrap();
        spawn(conn.with_upgrades());
        let req = Request::get("/")
            .header("host", "test")
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        let mut io = HyperIo::new(hyper::upgrade::on(resp).await.unwrap());
        io.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 5];
        io.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping!");
        serving.stop();
    });
}

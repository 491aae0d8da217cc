//! An axum application served by `fulcrum::http::serve`, over HTTP/1.1 and
//! HTTP/2 (h2c): routing, `State`, `Path`, `Json`, a 404, a bad-JSON 400,
//! `ConnectInfo`, tower-http's trace, compression and CORS layers, 20 slow
//! requests at once, graceful shutdown with requests in flight, the
//! balanced variant, a Unix socket and a hand-written service. Every test
//! checks the bytes that come back, and that no tokio runtime ran.

mod web;

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use fulcrum::io::{AsyncReadExt, AsyncWriteExt};
use fulcrum::net::{Balance, Server, TcpListener, UnixListener, UnixStream};
use fulcrum::sync::oneshot;
use http_body_util::Full;
use hyper::{Request, Version};
use serde::{Deserialize, Serialize};
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

use web::{assert_no_tokio_runtime, client, get as fetch, send};

#[derive(Default)]
struct AppState {
    items: Mutex<HashMap<u64, Item>>,
    next_id: AtomicUsize,
    /// Slow requests that have started.
    slow_started: AtomicUsize,
    /// Responses the trace layer saw.
    traced: AtomicUsize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Item {
    id: u64,
    name: String,
}

#[derive(Deserialize)]
struct NewItem {
    name: String,
}

async fn create(
    State(state): State<Arc<AppState>>,
    Json(new): Json<NewItem>,
) -> (StatusCode, Json<Item>) {
    let id = state.next_id.fetch_add(1, SeqCst) as u64 + 1;
    let item = Item { id, name: new.name };
    state.items.lock().unwrap().insert(id, item.clone());
    (StatusCode::CREATED, Json(item))
}

async fn read(
    State(state): State<Arc<AppState>>,
    Path(id): Path<u64>,
) -> Result<Json<Item>, StatusCode> {
    let item = state.items.lock().unwrap().get(&id).cloned();
    item.map(Json).ok_or(StatusCode::NOT_FOUND)
}

async fn slow(State(state): State<Arc<AppState>>, Path(ms): Path<u64>) -> String {
    state.slow_started.fetch_add(1, SeqCst);
    fulcrum::time::sleep(Duration::from_millis(ms)).await;
    format!("slept {ms}")
}

async fn peer(ConnectInfo(addr): ConnectInfo<SocketAddr>) -> String {
    addr.to_string()
}

/// 20 KiB of text, which the compression layer gzips.
fn big_text() -> String {
    "fulcrum balances connections through the DLB queue\n".repeat(400)
}

fn app(state: Arc<AppState>) -> Router {
    let traced = state.clone();
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/items", post(create))
        .route("/items/{id}", get(read))
        .route("/slow/{ms}", get(slow))
        .route("/peer", get(peer))
        .route("/big", get(|| async { big_text() }))
        .layer(TraceLayer::new_for_http().on_response(
            move |_res: &axum::http::Response<_>, _latency: Duration, _span: &tracing::Span| {
                traced.traced.fetch_add(1, SeqCst);
            },
        ))
        .layer(CompressionLayer::new())
        .layer(CorsLayer::permissive())
        .with_state(state)
}

/// Serves `app` with ConnectInfo on a fresh port; returns the base URI,
/// the state, the shutdown trigger and the server's task.
async fn start() -> (
    String,
    Arc<AppState>,
    oneshot::Sender<()>,
    fulcrum::task::JoinHandle<std::io::Result<()>>,
) {
    let state = Arc::new(AppState::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = fulcrum::http::serve(
        listener,
        app(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stopped.await;
    });
    let task = fulcrum::spawn(server.into_future());
    (format!("http://{addr}"), state, stop, task)
}

use std::future::IntoFuture;

fn json_post(uri: String, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn routes_and_extractors(h2: bool) {
    let (base, state, stop, server) = start().await;
    let client = client(h2);
    let version = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };

    let got = fetch(&client, &format!("{base}/")).await;
    assert_eq!(
        (got.status.as_u16(), got.text(), got.version),
        (200, "hello", version)
    );

    // State + Json: create, then read back through Path.
    let got = send(
        &client,
        json_post(format!("{base}/items"), r#"{"name":"widget"}"#),
    )
    .await;
    assert_eq!(got.status.as_u16(), 201);
    assert_eq!(got.text(), r#"{"id":1,"name":"widget"}"#);
    assert_eq!(got.headers["content-type"], "application/json");
    let got = fetch(&client, &format!("{base}/items/1")).await;
    assert_eq!(
        (got.status.as_u16(), got.text()),
        (200, r#"{"id":1,"name":"widget"}"#)
    );
    let got = fetch(&client, &format!("{base}/items/99")).await;
    assert_eq!((got.status.as_u16(), got.text()), (404, ""));

    // No route: axum's empty 404.
    let got = fetch(&client, &format!("{base}/no/such/route")).await;
    assert_eq!((got.status.as_u16(), got.text()), (404, ""));

    // Bad JSON: axum's 400 and its message.
    let got = send(&client, json_post(format!("{base}/items"), r#"{"name": "#)).await;
    assert_eq!(got.status.as_u16(), 400);
    assert!(
        got.text()
            .starts_with("Failed to parse the request body as JSON"),
        "{:?}",
        got.text()
    );

    // ConnectInfo: the client's own address, seen by the server.
    let got = fetch(&client, &format!("{base}/peer")).await;
    let peer: SocketAddr = got.text().parse().expect("a socket address");
    assert_eq!(peer.ip().to_string(), "127.0.0.1");
    assert_ne!(peer.port(), 0);

    // Compression: gzip when asked for, and the bytes decompress to the text.
    let req = Request::get(format!("{base}/big"))
        .header("accept-encoding", "gzip")
        .body(Full::default())
        .unwrap();
    let got = send(&client, req).await;
    assert_eq!(got.status.as_u16(), 200);
    assert_eq!(got.headers["content-encoding"], "gzip");
    assert!(
        got.body.len() < big_text().len() / 10,
        "{} bytes",
        got.body.len()
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&got.body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, big_text());
    // Uncompressed without the header.
    let got = fetch(&client, &format!("{base}/big")).await;
    assert!(!got.headers.contains_key("content-encoding"));
    assert_eq!(got.text(), big_text());

    // CORS: a preflight, and the header on a simple request.
    let req = Request::builder()
        .method("OPTIONS")
        .uri(format!("{base}/items"))
        .header("origin", "https://example.test")
        .header("access-control-request-method", "POST")
        .body(Full::default())
        .unwrap();
    let got = send(&client, req).await;
    assert_eq!(got.status.as_u16(), 200);
    assert_eq!(got.headers["access-control-allow-origin"], "*");
    assert!(got.headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains('*'));
    let req = Request::get(format!("{base}/"))
        .header("origin", "https://example.test")
        .body(Full::default())
        .unwrap();
    let got = send(&client, req).await;
    assert_eq!(
        (got.text(), &got.headers["access-control-allow-origin"]),
        ("hello", &"*".parse().unwrap())
    );

    // The trace layer saw every response above (the preflight is answered
    // by the CORS layer, outside it).
    assert_eq!(state.traced.load(SeqCst), 10);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert_no_tokio_runtime();
}

#[fulcrum::test]
async fn axum_routes_and_extractors_http1() {
    routes_and_extractors(false).await;
}

#[fulcrum::test]
async fn axum_routes_and_extractors_http2() {
    routes_and_extractors(true).await;
}

/// 20 requests that each sleep 300 ms run at the same time: all done well
/// before the 6 s they would take one after another.
async fn twenty_slow_requests(h2: bool) {
    let (base, state, stop, server) = start().await;
    let client = client(h2);
    let t = Instant::now();
    let mut set = fulcrum::task::JoinSet::new();
    for _ in 0..20 {
        let client = client.clone();
        let uri = format!("{base}/slow/300");
        set.spawn(async move { fetch(&client, &uri).await });
    }
    let mut n = 0;
    while let Some(got) = set.join_next().await {
        let got = got.unwrap();
        assert_eq!((got.status.as_u16(), got.text()), (200, "slept 300"));
        n += 1;
    }
    let took = t.elapsed();
    assert_eq!((n, state.slow_started.load(SeqCst)), (20, 20));
    assert!(
        took < Duration::from_millis(2500),
        "20 slow requests took {took:?}"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert_no_tokio_runtime();
}

#[fulcrum::test(workers = 4)]
async fn twenty_slow_requests_overlap_http1() {
    twenty_slow_requests(false).await;
}

#[fulcrum::test(workers = 4)]
async fn twenty_slow_requests_overlap_http2() {
    twenty_slow_requests(true).await;
}

/// The shutdown signal fires while three slow requests are in flight: all
/// three complete with their bytes, then the server's future returns and
/// the port no longer accepts.
async fn graceful_shutdown(h2: bool) {
    let (base, state, stop, server) = start().await;
    let client = client(h2);
    let mut set = fulcrum::task::JoinSet::new();
    for ms in [300, 400, 500] {
        let client = client.clone();
        let uri = format!("{base}/slow/{ms}");
        set.spawn(async move { (ms, fetch(&client, &uri).await) });
    }
    while state.slow_started.load(SeqCst) < 3 {
        fulcrum::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    stop.send(()).unwrap();
    let mut done = Vec::new();
    while let Some(r) = set.join_next().await {
        let (ms, got) = r.unwrap();
        assert_eq!(
            (got.status.as_u16(), got.text()),
            (200, format!("slept {ms}").as_str())
        );
        done.push(ms);
    }
    done.sort_unstable();
    assert_eq!(done, [300, 400, 500]);
    // The server waited for them (and not much longer).
    fulcrum::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returned after the drain")
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let addr = base.trim_start_matches("http://");
    let refused = fulcrum::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener is still open");
    assert_no_tokio_runtime();
}

#[fulcrum::test]
async fn graceful_shutdown_completes_in_flight_requests_http1() {
    graceful_shutdown(false).await;
}

#[fulcrum::test]
async fn graceful_shutdown_completes_in_flight_requests_http2() {
    graceful_shutdown(true).await;
}

/// `serve_balanced` with the exact balancer: every connection is counted on
/// a worker, ConnectInfo works, and the graceful shutdown returns.
#[fulcrum::test(workers = 3)]
async fn serve_balanced_exact_with_connect_info() {
    let state = Arc::new(AppState::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).balance(Balance::Exact);
    let running = fulcrum::http::serve_balanced(
        server,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stopped.await;
    })
    .bind()
    .await
    .unwrap();
    let base = format!("http://{}", running.local_addr());
    let mut peers = Vec::new();
    let mut clients = Vec::new();
    for i in 0..6 {
        // A fresh client per request: a new connection each time, kept
        // open so the exact balancer counts it.
        clients.push(client(i % 2 == 1));
        let got = fetch(&clients[i], &format!("{base}/peer")).await;
        assert_eq!(got.status.as_u16(), 200);
        peers.push(got.text().parse::<SocketAddr>().unwrap());
    }
    assert!(peers.iter().all(|p| p.ip().to_string() == "127.0.0.1"));
    let handled = running.serving().handled_per_worker();
    assert_eq!(handled.iter().sum::<u64>(), 6, "{handled:?}");
    assert!(
        handled.iter().all(|&n| n == 2),
        "exact balance: {handled:?}"
    );
    let task = fulcrum::spawn(running.into_future());
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_no_tokio_runtime();
}

/// A Unix socket listener, and a plain `Router` (no ConnectInfo).
#[fulcrum::test]
async fn unix_listener_and_plain_router() {
    let dir = std::env::temp_dir().join(format!("fulcrum-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("axum.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let router = Router::new().route("/", get(|| async { "over a unix socket" }));
    let server = fulcrum::spawn(fulcrum::http::serve(listener, router).into_future());
    let mut stream = UnixStream::connect(&path).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: local\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.ends_with("\r\n\r\nover a unix socket"),
        "{response}"
    );
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    assert_no_tokio_runtime();
}

/// A hand-written `Service<Request<Incoming>>`, through `Shared`.
#[fulcrum::test]
async fn hand_written_service() {
    let service = tower::service_fn(|req: Request<hyper::body::Incoming>| async move {
        let body = format!("{} {}", req.method(), req.uri().path());
        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = fulcrum::spawn(
        fulcrum::http::serve(listener, fulcrum::http::Shared::new(service)).into_future(),
    );
    for h2 in [false, true] {
        let got = fetch(&client(h2), &format!("{base}/a/b")).await;
        assert_eq!((got.status.as_u16(), got.text()), (200, "GET /a/b"));
    }
    server.abort();
    assert_no_tokio_runtime();
}

/// Outside a runtime, serving is an error, not a panic.
#[test]
fn serve_outside_a_runtime_is_an_error() {
    let rt = fulcrum::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let router = Router::new().route("/", get(|| async { "x" }));
    let fut = fulcrum::http::serve(listener, router).into_future();
    drop(rt);
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = Box::pin(fut);
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::Other),
        other => panic!("expected an error, got {other:?}"),
    }
}

use std::future::Future;

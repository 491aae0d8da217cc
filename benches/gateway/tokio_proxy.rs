//! The reverse proxy a Rust user would write instead of the gateway: tokio's
//! multi-thread runtime, hyper's HTTP/1 server, and hyper-util's pooled
//! client to one upstream, keep-alive. It does the header work the gateway
//! does (`examples/gateway/proxy.rs`): drops hop-by-hop headers both ways,
//! keeps the client's `Host`, appends the peer to `X-Forwarded-For`, sets
//! `X-Forwarded-Proto`, keeps the client's `X-Request-Id` or sets 128
//! random bits in hex, and speaks HTTP/1.1 upstream. Bodies stream through (the gateway buffers a
//! request body; the benchmark's GETs have none).
//!
//! Runs in its own process: the benchmark binary re-executed as
//! `server tokio-proxy UPSTREAM WORKERS`, which prints `listening ADDR`.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use fulcrum_test_support::fastrand;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Idle upstream connections kept per worker (the gateway's
/// `max_idle_per_endpoint` and nginx's `keepalive`; hyper-util's pool is
/// shared by the workers, so it gets this many times the worker count).
pub const MAX_IDLE_PER_WORKER: usize = 32;

type Body = BoxBody<Bytes, hyper::Error>;
type Upstream = Client<HttpConnector, Incoming>;

/// Serves until killed.
pub fn serve(upstream: SocketAddr, workers: usize) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Upstream = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE_PER_WORKER * workers)
            .build(connector);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: go on with the connections we have.
                    eprintln!("tokio-proxy: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    forward(client.clone(), upstream, peer, req)
                });
                // A client that goes away mid-request is not our error.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Headers that describe one hop, not the message (RFC 9110 section 7.6.1).
fn drop_hop_headers(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(code.canonical_reason().unwrap_or("error")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = code;
    resp
}

async fn forward(
    client: Upstream,
    upstream: SocketAddr,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    drop_hop_headers(req.headers_mut());
    let forwarded = match req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(earlier) => format!("{earlier}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        req.headers_mut().insert("x-forwarded-for", v);
    }
    req.headers_mut()
        .insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if !req.headers().contains_key("x-request-id") {
        // 128 random bits in hex, as nginx's `$request_id`.
        let id = format!("{:032x}", fastrand::u128(..));
        if let Ok(v) = HeaderValue::from_str(&id) {
            req.headers_mut().insert("x-request-id", v);
        }
    }
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    *req.uri_mut() = match format!("http://{upstream}{path}").parse() {
        Ok(uri) => uri,
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    *req.version_mut() = hyper::Version::HTTP_11;
    // The client sets `Host` from the URI only when the request has none.
    Ok(match client.request(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            drop_hop_headers(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(_) => status(StatusCode::BAD_GATEWAY),
    })
}

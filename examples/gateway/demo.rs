//! The built-in demo upstream: httpbin-style backends on loopback ports,
//! served on the same runtime.
//!
//! - `GET /status/{code}`: answers with that status (200–599);
//! - `GET /delay/{ms}`: waits that long (at most 10 s), then 200;
//! - anything else: 404.
//!
//! Every answer carries `x-backend: <address>`, so a client can see which
//! backend served it.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fulcrum::net::hyper::{FulcrumTimer, HyperIo};
use fulcrum::net::{Server, Serving, TcpStream};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

fn answer(req: &Request<hyper::body::Incoming>) -> Result<(StatusCode, Option<Duration>), ()> {
    let path = req.uri().path();
    if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().map_err(|_| ())?;
        if !(200..=599).contains(&code) {
            return Err(());
        }
        return StatusCode::from_u16(code)
            .map(|c| (c, None))
            .map_err(|_| ());
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        let ms: u64 = ms.parse().map_err(|_| ())?;
        return Ok((StatusCode::OK, Some(Duration::from_millis(ms.min(10_000)))));
    }
    Ok((StatusCode::NOT_FOUND, None))
}

async fn service(
    me: SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match answer(&req) {
        Ok((status, delay)) => {
            if let Some(d) = delay {
                fulcrum::time::sleep(d).await;
            }
            (
                status,
                format!(
                    "{{\"status\": {}, \"backend\": \"{me}\"}}\n",
                    status.as_u16()
                ),
            )
        }
        Err(()) => (
            StatusCode::BAD_REQUEST,
            "expected /status/{200..599} or /delay/{ms}\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&me.to_string()) {
        headers.insert("x-backend", v);
    }
    Ok(resp)
}

/// Serves one demo backend on `addr` (port 0: any free port).
pub async fn serve(addr: SocketAddr) -> io::Result<Serving> {
    let serving = Server::bind(addr)
        .serve(|stream: TcpStream, _peer| async move {
            let me = match stream.local_addr() {
                Ok(a) => a,
                Err(_) => return,
            };
            let svc = hyper::service::service_fn(move |req| service(me, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(FulcrumTimer::new())
                // The gateway forwards up to hyper's 100 request headers
                // and adds its own (X-Forwarded-For/-Proto, X-Request-Id).
                .max_headers(128)
                .serve_connection(HyperIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!("demo backend {me}: {e}");
            }
        })
        .await?;
    Ok(serving)
}

/// Starts `n` demo backends on loopback ports.
pub async fn start(n: usize) -> io::Result<Vec<Serving>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(serve(SocketAddr::from(([127, 0, 0, 1], 0))).await?);
    }
    Ok(v)
}

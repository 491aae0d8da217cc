//! The proxy: routing, request limits, the per-worker upstream connection
//! pool, forwarding, and the mapping of upstream failures to status codes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use fulcrum::net::hyper::HyperIo;
use fulcrum::net::TcpStream;
use fulcrum::runtime::Handle;
use fulcrum::time::timeout;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};

use crate::cluster::{Cluster, Endpoint, InFlight};
use crate::config::{RouteSpec, Validated};

/// The body of every response the gateway sends.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A response the gateway makes itself.
pub fn reply(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{text}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Request counters of one worker (the last slot counts requests served
/// off the workers).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub requests: AtomicU64,
    pub responses_5xx: AtomicU64,
}

type Idle = HashMap<SocketAddr, Vec<SendRequest<Full<Bytes>>>>;

/// Idle keep-alive upstream connections, one pool per worker: a request
/// reuses a connection of the worker it runs on, whose socket is
/// registered in that worker's reactor.
struct Pool {
    slots: Vec<Mutex<Idle>>,
}

impl Pool {
    fn slot(&self, worker: usize) -> &Mutex<Idle> {
        &self.slots[worker.min(self.slots.len() - 1)]
    }

    fn take(&self, worker: usize, addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.slot(worker).lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&addr)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put(&self, worker: usize, addr: SocketAddr, s: SendRequest<Full<Bytes>>, max: usize) {
        if s.is_closed() {
            return;
        }
        let mut idle = self.slot(worker).lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < max {
            list.push(s);
        }
    }

    /// Drops every idle connection (at drain).
    fn clear(&self) {
        for s in &self.slots {
            s.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}

/// Everything a request needs: one configuration in force. A reload makes
/// a new `Gateway` ([`Gateway::successor`]); each client connection keeps
/// the one it was accepted under. When the last connection of an old
/// `Gateway` ends it is dropped, and with it its idle upstream connections
/// (dropping a pooled sender ends the upstream connection's task, which
/// closes the socket); a response body still streaming then closes its
/// connection when it ends instead of pooling it for good.
pub struct Gateway {
    pub config: Validated,
    pub clusters: Vec<Arc<Cluster>>,
    /// Request counters per worker, shared by every `Gateway` of the
    /// process (they count across reloads).
    pub workers: Arc<[WorkerStats]>,
    /// Set at drain: every response then carries `Connection: close`.
    /// Shared by every `Gateway` of the process, so that a drain reaches
    /// the connections of old configurations too.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    pool: Arc<Pool>,
}

/// The longest `X-Request-Id` a client may send that the gateway keeps.
const MAX_REQUEST_ID: usize = 128;

/// Keeps the client's `X-Request-Id` if there is exactly one and it is
/// 1–128 visible ASCII characters, else sets a new random UUID (version 4)
/// in its place, as Envoy generates one for each request it receives;
/// returns the id, which the upstream request and the access log carry.
fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    const NAME: &str = "x-request-id";
    let mut given = headers.get_all(NAME).iter();
    if let (Some(id), None) = (given.next(), given.next()) {
        let bytes = id.as_bytes();
        if !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID
            && bytes.iter().all(u8::is_ascii_graphic)
        {
            return id.clone();
        }
    }
    let id = new_request_id();
    headers.insert(NAME, id.clone());
    id
}

/// A random version-4 UUID, lowercase hex.
fn new_request_id() -> HeaderValue {
    let (hi, lo) = (crate::cluster::random(), crate::cluster::random());
    // Version 4 in the 13th hex digit, variant 10xx in the 17th.
    let hi = (hi & !0xf000) | 0x4000;
    let lo = (lo & !(0xc << 60)) | (0x8 << 60);
    let text = format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Headers that describe one hop, not the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for h in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(h);
    }
}

/// The requests the gateway answers itself, before routing, with the
/// connection closed afterwards (so that nothing pipelined behind them is
/// read): RFC 9112 section 3.2 asks for 400 when an HTTP/1.1 request has no
/// `Host` or several, or a `Host` that is not one valid value. `CONNECT`
/// (a tunnel) and protocol upgrades other than `h2c` (which a server may
/// ignore) are not supported: 501. An `Upgrade: h2c` offer is dropped with
/// the other hop-by-hop headers, and the request is served over HTTP/1.1.
fn refuse_head(parts: &hyper::http::request::Parts) -> Option<Response<Body>> {
    let hosts = parts.headers.get_all(header::HOST).iter().count();
    let refusal = if hosts > 1 {
        Some((StatusCode::BAD_REQUEST, "several Host headers"))
    } else if hosts == 0
        && parts.version == hyper::Version::HTTP_11
        && parts.uri.authority().is_none()
    {
        Some((StatusCode::BAD_REQUEST, "no Host header"))
    } else if parts.headers.get(header::HOST).is_some_and(|h| {
        h.to_str().map_or(true, |h| {
            h.is_empty() || h.parse::<hyper::http::uri::Authority>().is_err()
        })
    }) {
        Some((StatusCode::BAD_REQUEST, "bad Host header"))
    } else if parts.method == hyper::Method::CONNECT {
        Some((StatusCode::NOT_IMPLEMENTED, "CONNECT is not supported"))
    } else if parts.headers.get_all(header::UPGRADE).iter().any(|v| {
        v.to_str().map_or(true, |v| {
            v.split(',').any(|p| !p.trim().eq_ignore_ascii_case("h2c"))
        })
    }) {
        Some((
            StatusCode::NOT_IMPLEMENTED,
            "protocol upgrades are not supported",
        ))
    } else {
        None
    };
    refusal.map(|(status, text)| {
        let mut resp = reply(status, text);
        // HTTP/2 has no `Connection` header: the refusal ends the stream.
        if parts.version < hyper::Version::HTTP_2 {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    })
}

/// How long a response waits for the first bytes of its body before its
/// head goes to the client (see `Gateway::send`).
const FIRST_FRAME_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Why forwarding failed.
enum Failure {
    Refused(io::Error),
    Timeout(&'static str),
    Upstream(hyper::Error),
}

impl Gateway {
    pub fn new(config: Validated, clusters: Vec<Arc<Cluster>>, workers: usize) -> Self {
        Self {
            config,
            clusters,
            workers: (0..=workers).map(|_| WorkerStats::default()).collect(),
            draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            pool: Arc::new(Pool {
                slots: (0..=workers).map(|_| Mutex::new(HashMap::new())).collect(),
            }),
        }
    }

    /// The `Gateway` of a reloaded configuration: its own clusters and an
    /// empty upstream pool; the request counters and the drain flag are
    /// this one's.
    pub fn successor(&self, config: Validated, clusters: Vec<Arc<Cluster>>) -> Self {
        Self {
            config,
            clusters,
            workers: self.workers.clone(),
            draining: self.draining.clone(),
            pool: Arc::new(Pool {
                slots: (0..self.pool.slots.len())
                    .map(|_| Mutex::new(HashMap::new()))
                    .collect(),
            }),
        }
    }

    /// Drops the idle upstream connections.
    pub fn close_idle(&self) {
        self.pool.clear();
    }

    fn worker(&self) -> usize {
        Handle::try_current()
            .ok()
            .and_then(|h| h.current_worker())
            .unwrap_or(self.workers.len() - 1)
    }

    /// The first route matching the request's host and path.
    pub fn route(&self, host: &str, path: &str) -> Option<&RouteSpec> {
        self.config.routes.iter().find(|r| {
            let host_ok = match r.host.as_str() {
                "*" => true,
                h if h.starts_with("*.") => host.ends_with(&h[1..]),
                h => h == host,
            };
            host_ok && path.starts_with(&r.prefix)
        })
    }

    /// Serves one request (the hyper service of every client connection).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let worker = self.worker();
        self.workers[worker].requests.fetch_add(1, Relaxed);
        let mut req = req;
        let request_id = ensure_request_id(req.headers_mut());
        let method = req.method().clone();
        let uri = req.uri().clone();
        let http1 = req.version() < hyper::Version::HTTP_2;
        let (mut resp, upstream) = self.forward(req, peer).await;
        if self.draining.load(Relaxed) && http1 {
            // The client learns not to reuse the connection, so no request
            // races the close.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if resp.status().is_server_error() {
            self.workers[worker].responses_5xx.fetch_add(1, Relaxed);
        }
        if self.config.access_log {
            tracing::info!(
                target: "access",
                client = %peer,
                %method,
                %uri,
                status = resp.status().as_u16(),
                request_id = request_id.to_str().unwrap_or("-"),
                upstream = upstream.as_ref().map_or("-", |e| e.name.as_str()),
                worker,
                micros = started.elapsed().as_micros() as u64,
            );
        }
        Ok(resp)
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> (Response<Body>, Option<Arc<Endpoint>>) {
        let (mut parts, body) = req.into_parts();
        if let Some(refusal) = refuse_head(&parts) {
            return (refusal, None);
        }
        let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
        let host = parts
            .uri
            .host()
            .map(str::to_owned)
            .or_else(|| {
                let h = parts.headers.get(header::HOST)?.to_str().ok()?;
                Some(h.rsplit_once(':').map_or(h, |(name, _)| name).to_owned())
            })
            .unwrap_or_default()
            .to_ascii_lowercase();
        let path = parts.uri.path().to_owned();
        let Some(route) = self.route(&host, &path) else {
            return (reply(StatusCode::NOT_FOUND, "no route"), None);
        };
        let cluster = &self.clusters[route.cluster];

        // RFC 9112 §6.1: hyper decodes `chunked` and nothing else; a body in
        // any other transfer coding would reach the upstream undecoded and
        // without its coding (the header is hop-by-hop), so refuse it.
        let other_coding = parts
            .headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .any(|v| {
                v.to_str().map_or(true, |v| {
                    v.split(',')
                        .any(|c| !c.trim().eq_ignore_ascii_case("chunked"))
                })
            });
        if other_coding {
            return (
                reply(
                    StatusCode::NOT_IMPLEMENTED,
                    "transfer coding not implemented",
                ),
                None,
            );
        }

        // The body, within the limit and the body timeout.
        let limit = self.config.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return (
                reply(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
                None,
            );
        }
        let collected = timeout(
            self.config.body_timeout,
            Limited::new(body, limit).collect(),
        )
        .await;
        let Ok(collected) = collected else {
            return (
                reply(StatusCode::REQUEST_TIMEOUT, "request body timeout"),
                None,
            );
        };
        let body = match collected {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return (
                    reply(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
                    None,
                )
            }
            Err(e) => {
                tracing::debug!("reading a request body from {peer}: {e}");
                return (reply(StatusCode::BAD_REQUEST, "bad request body"), None);
            }
        };

        let client_ip = peer.ip().to_string();
        let Some(endpoint) = cluster.pick(cluster.key(&parts.headers, client_ip.as_bytes())) else {
            return (
                reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
                None,
            );
        };

        // The upstream request: origin-form URI with the prefix rewritten,
        // hop-by-hop headers dropped, X-Forwarded-For appended.
        let rest = &path[route.prefix.len()..];
        let new_path = match &route.rewrite {
            Some(rw) if rw.ends_with('/') && rest.starts_with('/') => format!("{rw}{}", &rest[1..]),
            Some(rw) => format!("{rw}{rest}"),
            None => path.clone(),
        };
        let pq = match parts.uri.query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        parts.uri = match pq.parse::<Uri>() {
            Ok(u) => u,
            Err(_) => return (reply(StatusCode::BAD_REQUEST, "bad path"), None),
        };
        parts.version = hyper::Version::HTTP_11;
        // RFC 9112 section 3.2.2: an absolute-form target's authority
        // replaces `Host`, so that the upstream sees the host the request
        // was routed by. `parts.uri` is origin-form from here on.
        strip_hop_by_hop(&mut parts.headers);
        let forwarded_host = authority.or_else(|| {
            (!parts.headers.contains_key(header::HOST) && !host.is_empty()).then(|| host.clone())
        });
        if let Some(h) = forwarded_host {
            if let Ok(v) = HeaderValue::from_str(&h) {
                parts.headers.insert(header::HOST, v);
            }
        }
        let xff = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) => format!("{prev}, {client_ip}"),
            None => client_ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            parts.headers.insert("x-forwarded-for", v);
        }
        // The scheme the client used to reach the gateway, whatever the
        // client claimed (as Envoy does at the edge).
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static("http"));
        let req = Request::from_parts(parts, Full::new(body));

        let flight = InFlight::new(endpoint.clone());
        let resp = match self.send(cluster, &endpoint, req).await {
            Ok(resp) => resp,
            Err(f) => {
                endpoint.failures.fetch_add(1, Relaxed);
                let resp = match f {
                    Failure::Refused(e) => {
                        tracing::debug!(upstream = %endpoint.name, "connect: {e}");
                        reply(StatusCode::BAD_GATEWAY, "upstream connect error")
                    }
                    Failure::Timeout(what) => reply(
                        StatusCode::GATEWAY_TIMEOUT,
                        &format!("upstream {what} timeout"),
                    ),
                    Failure::Upstream(e) => {
                        tracing::debug!(upstream = %endpoint.name, "upstream: {e}");
                        reply(StatusCode::BAD_GATEWAY, "upstream reset or bad response")
                    }
                };
                return (resp, Some(endpoint));
            }
        };
        drop(flight);
        (resp, Some(endpoint))
    }

    /// Sends `req` on a pooled connection (retrying once on a fresh one if
    /// the pooled one closed before taking it) or a new one.
    async fn send(
        &self,
        cluster: &Cluster,
        endpoint: &Arc<Endpoint>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<Body>, Failure> {
        let spec = &cluster.spec;
        let deadline = fulcrum::time::Instant::now() + spec.request_timeout;
        let worker = self.worker();
        loop {
            let (mut sender, pooled) = match self.pool.take(worker, endpoint.addr) {
                Some(s) => (s, true),
                None => (connect(endpoint.addr, spec, worker).await?, false),
            };
            if timeout(spec.request_timeout, sender.ready()).await.is_err() {
                return Err(Failure::Timeout("connection"));
            }
            let sent = sender.try_send_request(req);
            let result = match fulcrum::time::timeout_at(deadline, sent).await {
                Ok(r) => r,
                Err(_) => return Err(Failure::Timeout("response")),
            };
            match result {
                Ok(resp) => {
                    let (mut parts, mut body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    // The first bytes of the body usually come with the
                    // head: waiting a moment for them turns an invalid first
                    // chunk into a 502 instead of a response cut short. A
                    // body that starts later streams, and an error in it
                    // then closes the client's connection.
                    // One poll first: the frame is usually there already,
                    // and then no timer is armed for it.
                    let polled = if body.is_end_stream() {
                        None
                    } else {
                        std::future::poll_fn(|cx| {
                            Poll::Ready(match Pin::new(&mut body).poll_frame(cx) {
                                Poll::Ready(frame) => Some(frame),
                                Poll::Pending => None,
                            })
                        })
                        .await
                    };
                    let next = match polled {
                        Some(frame) => frame,
                        None if body.is_end_stream() => None,
                        None => {
                            let wait = fulcrum::time::Instant::now() + FIRST_FRAME_WAIT;
                            fulcrum::time::timeout_at(wait.min(deadline), body.frame())
                                .await
                                .ok()
                                .flatten()
                        }
                    };
                    let first = match next {
                        Some(Ok(frame)) => Some(frame),
                        Some(Err(e)) => return Err(Failure::Upstream(e)),
                        None => None,
                    };
                    let body = PooledBody::new(
                        first,
                        body,
                        GiveBack {
                            pool: self.pool.clone(),
                            worker,
                            addr: endpoint.addr,
                            max: spec.max_idle,
                            sender,
                        },
                    );
                    return Ok(Response::from_parts(parts, body.boxed()));
                }
                Err(mut e) => match e.take_message() {
                    // Never sent on a connection the upstream had closed:
                    // safe to retry on a new one.
                    Some(unsent) if pooled => req = unsent,
                    _ => return Err(Failure::Upstream(e.into_error())),
                },
            }
        }
    }
}

/// Opens an upstream connection and drives it on `worker`, where its
/// socket registers.
async fn connect(
    addr: SocketAddr,
    spec: &crate::config::ClusterSpec,
    worker: usize,
) -> Result<SendRequest<Full<Bytes>>, Failure> {
    let stream = match timeout(spec.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Failure::Refused(e)),
        Err(_) => return Err(Failure::Timeout("connect")),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_header_size(spec.max_response_head)
        .handshake(HyperIo::new(stream))
        .await
        .map_err(Failure::Upstream)?;
    let drive = async move {
        if let Err(e) = conn.await {
            tracing::debug!(upstream = %addr, "upstream connection: {e}");
        }
    };
    let handle = Handle::current();
    if worker < handle.num_workers() {
        drop(handle.spawn_on_worker(worker, drive));
    } else {
        drop(handle.spawn(drive));
    }
    Ok(sender)
}

/// An upstream response body that puts its connection back in the pool
/// once it has been read to the end (dropped early, the connection closes).
struct PooledBody {
    /// A frame read ahead (see `Gateway::send`), served first.
    first: Option<Frame<Bytes>>,
    inner: Incoming,
    back: Option<GiveBack>,
}

/// Where a finished body returns its connection.
struct GiveBack {
    pool: Arc<Pool>,
    worker: usize,
    addr: SocketAddr,
    max: usize,
    sender: SendRequest<Full<Bytes>>,
}

impl PooledBody {
    fn new(first: Option<Frame<Bytes>>, inner: Incoming, back: GiveBack) -> Self {
        let mut body = Self {
            first,
            inner,
            back: Some(back),
        };
        if body.inner.is_end_stream() {
            body.give_back();
        }
        body
    }

    fn give_back(&mut self) {
        if let Some(b) = self.back.take() {
            b.pool.put(b.worker, b.addr, b.sender, b.max);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(frame) = self.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let ahead = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |d| d.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + ahead);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + ahead);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_uuid_v4(id: &str) -> bool {
        let b = id.as_bytes();
        b.len() == 36
            && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
            && b.iter().enumerate().all(|(i, c)| {
                [8, 13, 18, 23].contains(&i) || matches!(c, b'0'..=b'9' | b'a'..=b'f')
            })
            && b[14] == b'4'
            && matches!(b[19], b'8' | b'9' | b'a' | b'b')
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_generated_otherwise() {
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h);
        assert!(is_uuid_v4(id.to_str().unwrap()), "{id:?}");
        assert_eq!(h.get("x-request-id"), Some(&id));
        assert_ne!(ensure_request_id(&mut HeaderMap::new()), id, "ids repeat");

        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(ensure_request_id(&mut h), "abc-123");

        // Two ids, an empty one, a space, or an over-long one: replaced.
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        for bad in [vec!["a", "b"], vec![""], vec!["a b"], vec![long.as_str()]] {
            let mut h = HeaderMap::new();
            for v in &bad {
                h.append("x-request-id", HeaderValue::from_str(v).unwrap());
            }
            let id = ensure_request_id(&mut h);
            assert!(is_uuid_v4(id.to_str().unwrap()), "{bad:?} kept as {id:?}");
            assert_eq!(h.get_all("x-request-id").iter().count(), 1, "{bad:?}");
        }
    }
}

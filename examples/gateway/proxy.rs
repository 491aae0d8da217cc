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
use fulcrum::io::{AsyncRead, AsyncWrite, ReadBuf};
use fulcrum::net::hyper::HyperIo;
use fulcrum::net::TcpStream;
use fulcrum::runtime::Handle;
use fulcrum::time::timeout;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri};
use tokio_rustls::client::TlsStream;

use crate::cluster::{Cluster, Endpoint, InFlight, RetryInFlight};
use crate::config::{RouteSpec, UpstreamTls, Validated};

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
    /// Client connections closed because their TLS handshake failed or
    /// did not finish within the header timeout.
    pub tls_handshake_failures: AtomicU64,
    /// Protocol upgrades the upstream accepted (`101 Switching Protocols`
    /// passed to the client).
    pub upgrades: AtomicU64,
    /// Upgraded connections (tunnels) open on the worker.
    pub tunnels_open: AtomicU64,
    /// Bytes tunnelled from clients to upstreams.
    pub tunnel_bytes_up: AtomicU64,
    /// Bytes tunnelled from upstreams to clients.
    pub tunnel_bytes_down: AtomicU64,
}

/// Where a request's protocol upgrade waits for its client connection: the
/// connection task puts one in each HTTP/1 request's extensions and, once
/// hyper has written the `101` and handed the connection over, takes the
/// tunnel out and runs it (`Gateway::run_tunnel`) as the rest of the same
/// task, so that an open tunnel counts as an open connection. A request
/// without one (HTTP/2) cannot upgrade. Holds at most one tunnel: a
/// connection upgrades once, after which hyper reads no more requests on it.
#[derive(Default)]
pub struct TunnelSlot(Mutex<Option<Tunnel>>);

impl TunnelSlot {
    /// An empty slot.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn put(&self, tunnel: Tunnel) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(tunnel);
    }

    /// The tunnel an upgraded request left, if any.
    pub fn take(&self) -> Option<Tunnel> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The two halves of an accepted upgrade, to be joined by
/// `Gateway::run_tunnel`.
pub struct Tunnel {
    client: OnUpgrade,
    upstream: OnUpgrade,
    upstream_name: String,
}

/// Marks a request that came over a TLS connection (in its extensions):
/// its `X-Forwarded-Proto` is `https`.
#[derive(Clone, Copy, Debug)]
pub struct ClientTls;

/// What an idle upstream connection is pooled under: the endpoint's
/// address, the TLS id of its cluster (0 for plain TCP) and, for TLS, the
/// endpoint's place in its cluster, so that a request never reuses a
/// connection of the other kind, or one made with another cluster's trust
/// anchors, or with another endpoint's server name (two names may resolve
/// to one address, as virtual hosts behind one ingress do).
type PoolKey = (SocketAddr, usize, usize);

/// One worker's idle upstream connections: hyper's (any cluster), and the
/// native HTTP/1.1 path's (plain TCP only, so the address is the key).
#[derive(Default)]
struct Idle {
    hyper: HashMap<PoolKey, Vec<SendRequest<Full<Bytes>>>>,
    native: HashMap<SocketAddr, Vec<crate::h1::UpConn>>,
}

/// Idle keep-alive upstream connections, one pool per worker: a request
/// reuses a connection of the worker it runs on, whose socket is
/// registered in that worker's reactor. Full (`max_idle_per_endpoint` for
/// an endpoint on a worker), a connection is closed instead of pooled.
pub(crate) struct Pool {
    slots: Vec<Mutex<Idle>>,
}

impl Pool {
    fn slot(&self, worker: usize) -> &Mutex<Idle> {
        &self.slots[worker.min(self.slots.len() - 1)]
    }

    /// An idle native connection to `addr` that is still open.
    pub(crate) fn take_native(&self, worker: usize, addr: SocketAddr) -> Option<crate::h1::UpConn> {
        let mut idle = self.slot(worker).lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.native.get_mut(&addr)?;
        while let Some(c) = list.pop() {
            if c.is_usable() {
                return Some(c);
            }
        }
        None
    }

    /// Pools a native connection to `addr` (closes it if `max` are idle).
    pub(crate) fn put_native(
        &self,
        worker: usize,
        addr: SocketAddr,
        c: crate::h1::UpConn,
        max: usize,
    ) {
        let mut idle = self.slot(worker).lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.native.entry(addr).or_default();
        if list.len() < max {
            list.push(c);
        }
    }

    fn take(&self, worker: usize, key: PoolKey) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.slot(worker).lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.hyper.get_mut(&key)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put(&self, worker: usize, key: PoolKey, s: SendRequest<Full<Bytes>>, max: usize) {
        if s.is_closed() {
            return;
        }
        let mut idle = self.slot(worker).lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.hyper.entry(key).or_default();
        if list.len() < max {
            list.push(s);
        }
    }

    /// Drops every idle connection (at drain).
    fn clear(&self) {
        for s in &self.slots {
            let mut idle = s.lock().unwrap_or_else(|e| e.into_inner());
            idle.hyper.clear();
            idle.native.clear();
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
    pub(crate) pool: Arc<Pool>,
}

/// The longest `X-Request-Id` a client may send that the gateway keeps.
pub(crate) const MAX_REQUEST_ID: usize = 128;

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
    let id = HeaderValue::from_bytes(&new_request_id())
        .unwrap_or_else(|_| HeaderValue::from_static("-"));
    headers.insert(NAME, id.clone());
    id
}

/// A random version-4 UUID, lowercase hex, without allocating.
pub(crate) fn new_request_id() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (hi, lo) = (crate::cluster::random(), crate::cluster::random());
    // Version 4 in the 13th hex digit, variant 10xx in the 17th.
    let hi = (hi & !0xf000) | 0x4000;
    let lo = (lo & !(0xc << 60)) | (0x8 << 60);
    let mut id = [b'-'; 36];
    let digits = (0..16)
        .map(|i| (hi >> (60 - 4 * i)) & 0xf)
        .chain((0..16).map(|i| (lo >> (60 - 4 * i)) & 0xf));
    let places = (0..36).filter(|i| ![8, 13, 18, 23].contains(i));
    for (at, d) in places.zip(digits) {
        id[at] = HEX[d as usize];
    }
    id
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
/// (a tunnel) is not supported: 501. A protocol upgrade other than `h2c`
/// (a WebSocket handshake, say) is passed through (see `upgrade_offer`)
/// when it is a proper HTTP/1.1 one on a connection that can upgrade, and
/// is otherwise a 501 (over HTTP/2, without `Connection: upgrade`, over
/// HTTP/1.0). An `Upgrade: h2c` offer is dropped with the other hop-by-hop
/// headers, and the request is served over HTTP/1.1.
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
    }) && upgrade_offer(parts).is_none()
    {
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

/// The protocols (other than `h2c`) a request asks to upgrade to, as its
/// `Upgrade` value to forward: only for an HTTP/1.1 request whose
/// `Connection` names `upgrade` (RFC 9110 section 7.8), on a connection
/// that can upgrade (it carries a `TunnelSlot`), and not `CONNECT`.
fn upgrade_offer(parts: &hyper::http::request::Parts) -> Option<HeaderValue> {
    if parts.version != hyper::Version::HTTP_11
        || parts.method == hyper::Method::CONNECT
        || parts.extensions.get::<Arc<TunnelSlot>>().is_none()
    {
        return None;
    }
    let asked = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !asked {
        return None;
    }
    let mut protocols = Vec::new();
    for v in parts.headers.get_all(header::UPGRADE) {
        for p in v.to_str().ok()?.split(',') {
            let p = p.trim();
            if !p.is_empty() && !p.eq_ignore_ascii_case("h2c") {
                protocols.push(p);
            }
        }
    }
    if protocols.is_empty() {
        return None;
    }
    HeaderValue::from_str(&protocols.join(", ")).ok()
}

/// Counts the bytes read through it into an atomic counter (the bytes a
/// tunnel carries one way); writes pass through unchanged.
struct Counted<'a, T> {
    io: T,
    read: &'a AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.read
                .fetch_add((buf.filled().len() - before) as u64, Relaxed);
        }
        polled
    }
}

crate::h1::write_through!(Counted<'_, T>);

/// How long a tunnel stays half open: once one direction has ended, the
/// other may carry bytes this long before both connections close.
const HALF_CLOSED_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Copies `rd` into `wr` until EOF, then shuts `wr` down for writing.
/// Through one buffer of `fulcrum::io::copy`'s (8 KiB): while `wr` cannot
/// take more, nothing more is read from `rd`, so a slow side slows the
/// other down instead of growing a queue.
async fn one_way<R, W>(rd: &mut R, wr: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use fulcrum::io::AsyncWriteExt;
    fulcrum::io::copy(rd, wr).await?;
    wr.shutdown().await
}

/// Takes one off a tunnel gauge when dropped, however the tunnel ends.
struct OpenTunnel<'a>(&'a AtomicU64);

impl Drop for OpenTunnel<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// How long a response waits for the first bytes of its body before its
/// head goes to the client (see `Gateway::send`).
pub(crate) const FIRST_FRAME_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Why forwarding failed.
pub(crate) enum Failure {
    Refused(io::Error),
    Timeout(&'static str),
    Upstream(hyper::Error),
    /// The TLS handshake with the upstream failed (say, a certificate the
    /// cluster's `tls_ca` does not trust).
    Tls(io::Error),
    /// The upstream answered an upgrade with a `101` that does not switch
    /// to what the client asked for.
    BadSwitch(&'static str),
    /// The connection failed before it took the request (the request
    /// never left the gateway).
    Unsent(hyper::Error),
    /// The response head came, but its body failed at once (see
    /// `Gateway::send`).
    BodyStart(hyper::Error),
    /// The native path's upstream connection failed after the request
    /// went out, before a response head (`h1.rs`).
    Io(io::Error),
    /// The native path got a malformed or oversized response head, an
    /// unasked-for `101`, or an invalid first chunk.
    Bad(&'static str),
}

/// Whether a failed attempt may be retried on another endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RetryOn {
    /// The request never reached the upstream (Envoy's `connect-failure`
    /// and `reset-before-request`): any method.
    Always,
    /// The upstream may have received the request, but failed before any
    /// byte of a response (Envoy's `reset`): idempotent methods only.
    Idempotent,
    /// Never: the response-head timeout (the upstream may still be
    /// processing the request), or the upstream answered something.
    Never,
}

impl Failure {
    fn retry_on(&self) -> RetryOn {
        match self {
            Failure::Refused(_)
            | Failure::Unsent(_)
            | Failure::Tls(_)
            | Failure::Timeout("connect" | "TLS handshake") => RetryOn::Always,
            Failure::Timeout(_)
            | Failure::BodyStart(_)
            | Failure::BadSwitch(_)
            | Failure::Bad(_) => RetryOn::Never,
            Failure::Io(_) => RetryOn::Idempotent,
            // A malformed or oversized head: the upstream answered.
            Failure::Upstream(e) if e.is_parse() || e.is_user() => RetryOn::Never,
            Failure::Upstream(_) => RetryOn::Idempotent,
        }
    }
}

/// The answer to a request whose last attempt failed with `failure`.
fn failure_response(endpoint: &Endpoint, failure: Failure) -> Response<Body> {
    let (status, text) = failure_text(endpoint, failure);
    reply(status, &text)
}

/// The status and text of the answer to a request whose last attempt
/// failed with `failure` (logged here).
pub(crate) fn failure_text(endpoint: &Endpoint, failure: Failure) -> (StatusCode, String) {
    let bad = |text: &str| (StatusCode::BAD_GATEWAY, text.to_owned());
    match failure {
        Failure::Refused(e) => {
            tracing::debug!(upstream = %endpoint.name, "connect: {e}");
            bad("upstream connect error")
        }
        Failure::Timeout(what) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("upstream {what} timeout"),
        ),
        Failure::Upstream(e) | Failure::Unsent(e) | Failure::BodyStart(e) => {
            tracing::debug!(upstream = %endpoint.name, "upstream: {e}");
            bad("upstream reset or bad response")
        }
        Failure::Io(e) => {
            tracing::debug!(upstream = %endpoint.name, "upstream: {e}");
            bad("upstream reset or bad response")
        }
        Failure::Bad(why) => {
            tracing::debug!(upstream = %endpoint.name, "upstream: {why}");
            bad("upstream reset or bad response")
        }
        Failure::Tls(e) => {
            tracing::debug!(upstream = %endpoint.name, "TLS handshake: {e}");
            bad("upstream TLS handshake failed")
        }
        Failure::BadSwitch(why) => {
            tracing::debug!(upstream = %endpoint.name, "upgrade refused: {why}");
            bad("upstream switched protocols wrongly")
        }
    }
}

/// The offered upgrade protocols (`offered`, an `Upgrade` value) that the
/// route allows, as the value to forward; `None` if none is allowed.
fn allowed_upgrades(offered: &HeaderValue, allowed: &[String]) -> Option<HeaderValue> {
    let offered = offered.to_str().ok()?;
    let kept: Vec<&str> = offered
        .split(',')
        .map(str::trim)
        .filter(|p| {
            // `websocket/13` names a version: the route lists the name.
            let name = p.split('/').next().unwrap_or(p);
            allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// Checks an upstream's `101` against the upgrade it was asked for: its
/// `Upgrade` must name one of the protocols asked (RFC 9110 section 7.8),
/// and a switch to WebSocket must carry `Sec-WebSocket-Accept` (RFC 6455
/// section 4.2.2; the client checks its value). Anything else is not the
/// switch the client asked for, and opening a tunnel on it would hand the
/// client a raw connection to the upstream.
fn check_switch(headers: &HeaderMap, asked: &Option<HeaderValue>) -> Result<(), &'static str> {
    let asked: Vec<&str> = asked
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let chosen: Vec<&str> = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if chosen.is_empty() {
        return Err("a 101 without Upgrade");
    }
    if !chosen
        .iter()
        .all(|c| asked.iter().any(|a| a.eq_ignore_ascii_case(c)))
    {
        return Err("a 101 to a protocol the client did not offer");
    }
    let websocket = chosen.iter().any(|c| {
        c.split('/')
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case("websocket"))
    });
    if websocket && !headers.contains_key("sec-websocket-accept") {
        return Err("a WebSocket 101 without Sec-WebSocket-Accept");
    }
    Ok(())
}

/// Idempotent methods (RFC 9110 section 9.2.2), which may be retried
/// after the upstream may have received them.
fn is_idempotent(method: &hyper::Method) -> bool {
    is_idempotent_method(method.as_str().as_bytes())
}

/// [`is_idempotent`] for a method's bytes (methods are case-sensitive).
pub(crate) fn is_idempotent_method(method: &[u8]) -> bool {
    [
        &b"GET"[..],
        b"HEAD",
        b"OPTIONS",
        b"TRACE",
        b"PUT",
        b"DELETE",
    ]
    .contains(&method)
}

/// The upstream side of one request, for the access log.
#[derive(Debug, Default)]
pub struct UpstreamLog {
    /// Attempts made: 1 + retries (0: the request never went upstream).
    pub attempts: u32,
    /// Of the last attempt: time to get a connection (0 when pooled).
    pub connect_micros: u64,
    /// Of the last attempt: time from sending the request to the response
    /// head (or to the failure; 0 if it was never sent).
    pub upstream_micros: u64,
}

/// After attempt number `attempts` on `failed` failed in a way that may
/// be retried: the endpoint to retry on and its place in the retry
/// budget, if the cluster's `max_retries` allows another attempt (none
/// when it has one endpoint: see [`retries_possible`]), `deadline` is ahead,
/// an untried healthy endpoint is left and the budget has room (else
/// `None`, the last failure stands). `failed` joins `tried`.
fn retry_target<'c>(
    cluster: &'c Cluster,
    failed: &Arc<Endpoint>,
    tried: &mut Vec<Arc<Endpoint>>,
    attempts: u32,
    deadline: fulcrum::time::Instant,
) -> Option<(Arc<Endpoint>, RetryInFlight<'c>)> {
    if attempts > retries_possible(cluster) || fulcrum::time::Instant::now() >= deadline {
        return None;
    }
    tried.push(failed.clone());
    let next = cluster.pick_retry(tried)?;
    let place = cluster.start_retry()?;
    tracing::debug!(
        upstream = %failed.name,
        next = %next.name,
        "attempt {attempts} failed; retrying"
    );
    Some((next, place))
}

/// After a failed attempt on `endpoint`: frees the attempt's place in the
/// retry budget (`retry`), counts the failure against the endpoint and, if
/// the failure may be retried (some only for an `idempotent` request) and
/// [`retry_target`] finds another endpoint, moves `endpoint` and `retry` on
/// to the next attempt and returns `true`; `false`: the failure stands.
#[allow(clippy::too_many_arguments)]
pub(crate) fn retry_after<'c>(
    cluster: &'c Cluster,
    endpoint: &mut Arc<Endpoint>,
    failure: &Failure,
    idempotent: bool,
    tried: &mut Vec<Arc<Endpoint>>,
    attempts: u32,
    deadline: fulcrum::time::Instant,
    retry: &mut Option<RetryInFlight<'c>>,
) -> bool {
    drop(retry.take());
    endpoint.failures.fetch_add(1, Relaxed);
    let allowed = match failure.retry_on() {
        RetryOn::Always => true,
        RetryOn::Idempotent => idempotent,
        RetryOn::Never => false,
    };
    match allowed
        .then(|| retry_target(cluster, endpoint, tried, attempts, deadline))
        .flatten()
    {
        Some((next, place)) => {
            *retry = Some(place);
            *endpoint = next;
            true
        }
        None => false,
    }
}

/// How many retries can follow a first attempt in `cluster`: its
/// `max_retries`, or none when it has one endpoint (a retry goes to
/// another one), so that no copy of a request is kept for nothing.
fn retries_possible(cluster: &Cluster) -> u32 {
    if cluster.endpoints.len() > 1 {
        cluster.spec.max_retries
    } else {
        0
    }
}

/// `now + d`, or a year from now if that overflows (a huge configured
/// timeout).
pub(crate) fn deadline_after(d: std::time::Duration) -> fulcrum::time::Instant {
    let now = fulcrum::time::Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(365 * 24 * 3600))
}

impl Gateway {
    pub fn new(config: Validated, clusters: Vec<Arc<Cluster>>, workers: usize) -> Self {
        Self {
            config,
            clusters,
            workers: (0..=workers).map(|_| WorkerStats::default()).collect(),
            draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            pool: Arc::new(Pool {
                slots: (0..=workers).map(|_| Mutex::new(Idle::default())).collect(),
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
                    .map(|_| Mutex::new(Idle::default()))
                    .collect(),
            }),
        }
    }

    /// Drops the idle upstream connections.
    pub fn close_idle(&self) {
        self.pool.clear();
    }

    /// Counts a client connection whose TLS handshake failed.
    pub fn count_tls_failure(&self) {
        self.workers[self.worker()]
            .tls_handshake_failures
            .fetch_add(1, Relaxed);
    }

    pub(crate) fn worker(&self) -> usize {
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
        let mut up = UpstreamLog::default();
        let (mut resp, upstream) = self.forward(req, peer, &mut up).await;
        // A 101 keeps its `Connection: upgrade`: the tunnel it opens is cut
        // at the drain timeout like any connection still open.
        if self.draining.load(Relaxed) && http1 && resp.status() != StatusCode::SWITCHING_PROTOCOLS
        {
            // The client learns not to reuse the connection, so no request
            // races the close.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.finish(
            worker,
            started,
            peer,
            &method,
            &uri,
            resp.status().as_u16(),
            request_id.to_str().unwrap_or("-"),
            upstream.as_deref(),
            &up,
        );
        Ok(resp)
    }

    /// Counts a request's 5xx answer and writes its access-log line (both
    /// HTTP/1.1 paths and HTTP/2 alike).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish(
        &self,
        worker: usize,
        started: Instant,
        peer: SocketAddr,
        method: &dyn std::fmt::Display,
        uri: &dyn std::fmt::Display,
        status: u16,
        request_id: &str,
        upstream: Option<&Endpoint>,
        up: &UpstreamLog,
    ) {
        if status >= 500 {
            self.workers[worker].responses_5xx.fetch_add(1, Relaxed);
        }
        if self.config.access_log {
            tracing::info!(
                target: "access",
                client = %peer,
                method = %method,
                uri = %uri,
                status,
                request_id,
                upstream = upstream.map_or("-", |e| e.name.as_str()),
                worker,
                attempts = up.attempts,
                upstream_connect_micros = up.connect_micros,
                upstream_micros = up.upstream_micros,
                micros = started.elapsed().as_micros() as u64,
            );
        }
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        up: &mut UpstreamLog,
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
        // A protocol upgrade to pass through: the client side of it, and
        // the protocols to ask the upstream for.
        let upgrade = match upgrade_offer(&parts) {
            Some(protocols) => {
                let slot = parts.extensions.remove::<Arc<TunnelSlot>>();
                match (parts.extensions.remove::<OnUpgrade>(), slot) {
                    (Some(client), Some(slot)) => Some((protocols, client, slot)),
                    _ => {
                        return (
                            reply(
                                StatusCode::NOT_IMPLEMENTED,
                                "protocol upgrades are not supported here",
                            ),
                            None,
                        )
                    }
                }
            }
            None => None,
        };
        let Some(route) = self.route(&host, &path) else {
            return (reply(StatusCode::NOT_FOUND, "no route"), None);
        };
        // Only the protocols the route allows are passed through (none by
        // default): a raw tunnel to an upstream must be asked for.
        let upgrade = match upgrade {
            Some((offered, client, slot)) => match allowed_upgrades(&offered, &route.upgrades) {
                Some(protocols) => Some((protocols, client, slot)),
                None => {
                    let mut refusal = reply(
                        StatusCode::NOT_IMPLEMENTED,
                        "protocol upgrade not enabled on this route",
                    );
                    refusal
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    return (refusal, None);
                }
            },
            None => None,
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
        let proto = if parts.extensions.get::<ClientTls>().is_some() {
            "https"
        } else {
            "http"
        };
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static(proto));

        let deadline = deadline_after(route.timeout.unwrap_or(cluster.spec.request_timeout));
        if let Some((protocols, client, slot)) = upgrade {
            // The two hop-by-hop headers an upgrade needs on the next hop.
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocols);
            let req = Request::from_parts(parts, Full::new(body));
            // Until an upstream connection exists the request has not left
            // the gateway: a failed connect (refused, timed out, or its TLS
            // handshake) is retried on another endpoint as for any request
            // (Envoy's `connect-failure`), within `max_retries`, the
            // deadline and the retry budget. Once connected, the upgrade is
            // tried once: the upstream may have taken it over before
            // failing.
            let mut endpoint = endpoint;
            let mut tried: Vec<Arc<Endpoint>> = Vec::new();
            let mut retry = None;
            let (sender, flight) = loop {
                up.attempts += 1;
                let flight = InFlight::new(endpoint.clone());
                let started = Instant::now();
                let got = connect(
                    cluster,
                    &endpoint,
                    self.worker(),
                    deadline,
                    Upgrades::Allowed,
                )
                .await;
                up.connect_micros = started.elapsed().as_micros() as u64;
                let failure = match got {
                    Ok(sender) => break (sender, flight),
                    Err(f) => f,
                };
                drop(flight);
                // Not idempotent here: only a request that never left is
                // retried.
                let (at, n) = (&mut endpoint, up.attempts);
                if !retry_after(
                    cluster, at, &failure, false, &mut tried, n, deadline, &mut retry,
                ) {
                    return (failure_response(&endpoint, failure), Some(endpoint));
                }
            };
            let sent = self
                .send_upgrade(sender, &endpoint, req, client, &slot, deadline, up)
                .await;
            drop(flight);
            drop(retry);
            return match sent {
                Ok(resp) => (resp, Some(endpoint)),
                Err(f) => {
                    endpoint.failures.fetch_add(1, Relaxed);
                    (failure_response(&endpoint, f), Some(endpoint))
                }
            };
        }
        // Attempts: the first on the picked endpoint, then up to
        // `max_retries` on endpoints not tried yet, while the failure
        // allows it, the deadline is ahead and the retry budget has room.
        // The route's timeout (or the cluster's) bounds them all.
        let idempotent = is_idempotent(&parts.method);
        // No copy of the head is kept where no retry can follow.
        let max_retries = retries_possible(cluster);
        // The client side's extensions stay on this side.
        parts.extensions.clear();
        let mut parts = Some(parts);
        let mut endpoint = endpoint;
        let mut tried: Vec<Arc<Endpoint>> = Vec::new();
        let mut retry = None;
        loop {
            up.attempts += 1;
            // The request is kept for a retry while one may follow; the
            // last possible attempt takes it.
            let head = if up.attempts <= max_retries {
                parts.clone()
            } else {
                parts.take()
            };
            let Some(head) = head else {
                // Unreachable: the head is taken only by the last attempt.
                return (
                    reply(StatusCode::INTERNAL_SERVER_ERROR, "request lost"),
                    Some(endpoint),
                );
            };
            let req = Request::from_parts(head, Full::new(body.clone()));
            let flight = InFlight::new(endpoint.clone());
            let failure = match self.send(cluster, &endpoint, req, deadline, up).await {
                Ok(resp) => return (resp, Some(endpoint)),
                Err(f) => f,
            };
            drop(flight);
            let (at, n) = (&mut endpoint, up.attempts);
            if retry_after(
                cluster, at, &failure, idempotent, &mut tried, n, deadline, &mut retry,
            ) {
                continue;
            }
            let resp = failure_response(&endpoint, failure);
            return (resp, Some(endpoint));
        }
    }

    /// Sends `req` on a pooled connection (retrying once on a fresh one if
    /// the pooled one closed before taking it) or a new one, with the
    /// response head due by `deadline` (the connection too); records the
    /// attempt's timing in `up`.
    async fn send(
        &self,
        cluster: &Cluster,
        endpoint: &Arc<Endpoint>,
        mut req: Request<Full<Bytes>>,
        deadline: fulcrum::time::Instant,
        up: &mut UpstreamLog,
    ) -> Result<Response<Body>, Failure> {
        let spec = &cluster.spec;
        let worker = self.worker();
        up.connect_micros = 0;
        up.upstream_micros = 0;
        let key = match &spec.tls {
            None => (endpoint.addr, 0, 0),
            Some(t) => {
                let at = cluster
                    .endpoints
                    .iter()
                    .position(|e| Arc::ptr_eq(e, endpoint))
                    .unwrap_or(usize::MAX);
                (endpoint.addr, t.id, at)
            }
        };
        loop {
            let (mut sender, pooled) = match self.pool.take(worker, key) {
                Some(s) => (s, true),
                None => {
                    let started = Instant::now();
                    let got = connect(cluster, endpoint, worker, deadline, Upgrades::No).await;
                    up.connect_micros = started.elapsed().as_micros() as u64;
                    (got?, false)
                }
            };
            if fulcrum::time::timeout_at(deadline, sender.ready())
                .await
                .is_err()
            {
                return Err(Failure::Timeout("connection"));
            }
            let sent_at = Instant::now();
            let sent = sender.try_send_request(req);
            let result = fulcrum::time::timeout_at(deadline, sent).await;
            up.upstream_micros = sent_at.elapsed().as_micros() as u64;
            let result = match result {
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
                        Some(Err(e)) => return Err(Failure::BodyStart(e)),
                        None => None,
                    };
                    let body = PooledBody::new(
                        first,
                        body,
                        GiveBack {
                            pool: self.pool.clone(),
                            worker,
                            key,
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
                    Some(_) => return Err(Failure::Unsent(e.into_error())),
                    None => return Err(Failure::Upstream(e.into_error())),
                },
            }
        }
    }
}

/// The TLS client handshake with `endpoint` of `cluster` over `tcp`,
/// with the cluster's trust anchors and the endpoint's server name.
pub async fn tls_handshake(
    cluster: &Cluster,
    tls: &UpstreamTls,
    endpoint: &Endpoint,
    tcp: TcpStream,
) -> io::Result<TlsStream<TcpStream>> {
    let name = cluster
        .endpoints
        .iter()
        .position(|e| std::ptr::eq(&**e, endpoint))
        .and_then(|i| tls.name(i))
        .ok_or_else(|| io::Error::other(format!("{}: no TLS server name", endpoint.name)))?;
    tls.connector().connect(name, tcp).await
}

impl Gateway {
    /// Sends an upgrade request on `sender`, a fresh upstream connection
    /// of its own (made with upgrades allowed), never pooled. A `101` goes back to the client with the upstream's
    /// `Upgrade` (and `Connection: upgrade`), and leaves the two sides'
    /// upgrades in `slot` for the client's connection task to join; any
    /// other answer is passed back as a normal response, after which the
    /// connection closes.
    #[allow(clippy::too_many_arguments)]
    async fn send_upgrade(
        &self,
        mut sender: SendRequest<Full<Bytes>>,
        endpoint: &Arc<Endpoint>,
        req: Request<Full<Bytes>>,
        client: OnUpgrade,
        slot: &TunnelSlot,
        deadline: fulcrum::time::Instant,
        up: &mut UpstreamLog,
    ) -> Result<Response<Body>, Failure> {
        let worker = self.worker();
        if fulcrum::time::timeout_at(deadline, sender.ready())
            .await
            .is_err()
        {
            return Err(Failure::Timeout("connection"));
        }
        let asked = req.headers().get(header::UPGRADE).cloned();
        let sent_at = Instant::now();
        let resp = fulcrum::time::timeout_at(deadline, sender.send_request(req)).await;
        up.upstream_micros = sent_at.elapsed().as_micros() as u64;
        let resp = match resp {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return Err(Failure::Upstream(e)),
            Err(_) => return Err(Failure::Timeout("response")),
        };
        let (mut parts, body) = resp.into_parts();
        let upstream = parts.extensions.remove::<OnUpgrade>();
        let upstream = match upstream {
            Some(_) if parts.status == StatusCode::SWITCHING_PROTOCOLS => {
                if let Err(why) = check_switch(&parts.headers, &asked) {
                    // Not the switch the client asked for: no tunnel (the
                    // connection closes as `sender` and the upgrade drop).
                    return Err(Failure::BadSwitch(why));
                }
                upstream
            }
            _ => None,
        };
        let upstream = match upstream {
            Some(u) => u,
            _ => {
                strip_hop_by_hop(&mut parts.headers);
                let body = Unpooled {
                    inner: body,
                    _sender: sender,
                };
                return Ok(Response::from_parts(parts, body.boxed()));
            }
        };
        let protocols: Vec<HeaderValue> = parts
            .headers
            .get_all(header::UPGRADE)
            .iter()
            .cloned()
            .collect();
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        for p in protocols {
            parts.headers.append(header::UPGRADE, p);
        }
        self.workers[worker].upgrades.fetch_add(1, Relaxed);
        slot.put(Tunnel {
            client,
            upstream,
            upstream_name: endpoint.name.clone(),
        });
        let empty = Full::new(Bytes::new()).map_err(|never| match never {});
        Ok(Response::from_parts(parts, empty.boxed()))
    }

    /// Runs an accepted upgrade: copies bytes both ways between the client's
    /// and the upstream's upgraded connections. When one direction ends (its
    /// reader's EOF or an error), the other side is shut down for writing,
    /// and the other direction gets `HALF_CLOSED_LINGER` to end as well;
    /// then both connections close.
    pub async fn run_tunnel(&self, tunnel: Tunnel) {
        let stats = &self.workers[self.worker()];
        stats.tunnels_open.fetch_add(1, Relaxed);
        let _open = OpenTunnel(&stats.tunnels_open);
        let name = tunnel.upstream_name;
        let (client, upstream) = match (tunnel.client.await, tunnel.upstream.await) {
            (Ok(c), Ok(u)) => (c, u),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(upstream = %name, "upgrade: {e}");
                return;
            }
        };
        let mut client = Counted {
            io: HyperIo::new(client),
            read: &stats.tunnel_bytes_up,
        };
        let mut upstream = Counted {
            io: HyperIo::new(upstream),
            read: &stats.tunnel_bytes_down,
        };
        let (mut client_rd, mut client_wr) = fulcrum::io::split(&mut client);
        let (mut upstream_rd, mut upstream_wr) = fulcrum::io::split(&mut upstream);
        let mut up = std::pin::pin!(one_way(&mut client_rd, &mut upstream_wr));
        let mut down = std::pin::pin!(one_way(&mut upstream_rd, &mut client_wr));
        let (first, up_ended) = fulcrum::select! {
            r = up.as_mut() => (r, true),
            r = down.as_mut() => (r, false),
        };
        let rest = if up_ended { down } else { up };
        if let Err(e) = first {
            tracing::debug!(upstream = %name, "tunnel: {e}");
        }
        match timeout(HALF_CLOSED_LINGER, rest).await {
            Ok(Err(e)) => tracing::debug!(upstream = %name, "tunnel: {e}"),
            Ok(Ok(())) => {}
            Err(_) => tracing::debug!(upstream = %name, "tunnel: closed after the linger"),
        }
    }
}

/// The body of a response from an unpooled upstream connection (a refused
/// upgrade): keeps the connection's sender until the body is done, then
/// the connection closes.
struct Unpooled {
    inner: Incoming,
    _sender: SendRequest<Full<Bytes>>,
}

impl hyper::body::Body for Unpooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Opens an upstream connection (TCP, then TLS if the cluster has it)
/// and drives it on `worker`, where its socket registers; gives up at the
/// connect timeout or at `deadline`, whichever comes first. `upgrades`:
/// whether the connection may be handed over after a `101`.
async fn connect(
    cluster: &Cluster,
    endpoint: &Endpoint,
    worker: usize,
    deadline: fulcrum::time::Instant,
    upgrades: Upgrades,
) -> Result<SendRequest<Full<Bytes>>, Failure> {
    let spec = &cluster.spec;
    let addr = endpoint.addr;
    let deadline = deadline_after(spec.connect_timeout).min(deadline);
    let stream = match fulcrum::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Failure::Refused(e)),
        Err(_) => return Err(Failure::Timeout("connect")),
    };
    let _ = stream.set_nodelay(true);
    match &spec.tls {
        None => handshake(HyperIo::new(stream), spec, addr, worker, upgrades).await,
        Some(tls) => {
            let shake = tls_handshake(cluster, tls, endpoint, stream);
            let stream = match fulcrum::time::timeout_at(deadline, shake).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(Failure::Tls(e)),
                Err(_) => return Err(Failure::Timeout("TLS handshake")),
            };
            handshake(HyperIo::new(stream), spec, addr, worker, upgrades).await
        }
    }
}

/// Whether an upstream connection may be upgraded (hyper's
/// `with_upgrades`): only the fresh, never pooled one of an upgrade
/// request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Upgrades {
    No,
    Allowed,
}

/// Starts HTTP/1.1 on a connected upstream stream (TCP or TLS) and
/// spawns its driver on `worker`.
async fn handshake<T>(
    io: T,
    spec: &crate::config::ClusterSpec,
    addr: SocketAddr,
    worker: usize,
    upgrades: Upgrades,
) -> Result<SendRequest<Full<Bytes>>, Failure>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_header_size(spec.max_response_head)
        .handshake(io)
        .await
        .map_err(Failure::Unsent)?;
    let drive = async move {
        // After a 101, `with_upgrades` ends and hands the connection to the
        // response's `OnUpgrade`.
        let ended = match upgrades {
            Upgrades::No => conn.await,
            Upgrades::Allowed => conn.with_upgrades().await,
        };
        if let Err(e) = ended {
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
    key: PoolKey,
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
            b.pool.put(b.worker, b.key, b.sender, b.max);
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

    fn parts(
        version: hyper::Version,
        headers: &[(&str, &str)],
        slot: bool,
    ) -> hyper::http::request::Parts {
        let mut req = Request::builder()
            .uri("/ws")
            .version(version)
            .header("host", "a.example");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        if slot {
            parts.extensions.insert(TunnelSlot::new());
        }
        parts
    }

    #[test]
    fn only_proper_http11_upgrades_are_passed_through() {
        use hyper::Version;
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        let offer = |p: &hyper::http::request::Parts| {
            upgrade_offer(p).map(|v| v.to_str().unwrap().to_owned())
        };
        let p = parts(Version::HTTP_11, &ws, true);
        assert_eq!(offer(&p).as_deref(), Some("websocket"));
        assert!(refuse_head(&p).is_none());
        // h2c is taken out of the offer; an h2c-only offer is no upgrade.
        let mixed = [("connection", "upgrade"), ("upgrade", "h2c, websocket")];
        assert_eq!(
            offer(&parts(Version::HTTP_11, &mixed, true)).as_deref(),
            Some("websocket")
        );
        let h2c = [("connection", "upgrade"), ("upgrade", "h2c")];
        assert_eq!(offer(&parts(Version::HTTP_11, &h2c, true)), None);
        assert!(refuse_head(&parts(Version::HTTP_11, &h2c, true)).is_none());
        // Refused with 501: no `Connection: upgrade`, HTTP/1.0, a
        // connection that cannot upgrade (HTTP/2 has no slot either).
        for p in [
            parts(Version::HTTP_11, &[("upgrade", "websocket")], true),
            parts(Version::HTTP_10, &ws, true),
            parts(Version::HTTP_11, &ws, false),
            parts(Version::HTTP_2, &[("upgrade", "websocket")], false),
        ] {
            assert_eq!(offer(&p), None, "{p:?}");
            let refused = refuse_head(&p).map(|r| r.status());
            assert_eq!(refused, Some(StatusCode::NOT_IMPLEMENTED), "{p:?}");
        }
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

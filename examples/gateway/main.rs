//! The Fulcrum gateway: an HTTP/1.1 and HTTP/2 reverse proxy on Fulcrum
//! and hyper, with optional TLS termination (rustls) and TLS upstreams.
//!
//! ```text
//! cargo run --release --example gateway                       # the built-in default
//! cargo run --release --example gateway -- --config my.toml   # a configuration file
//! cargo run --release --example gateway -- --config my.toml --check
//! ```
//!
//! With no arguments it runs `examples/gateway/gateway.toml` (embedded):
//! a listener on 127.0.0.1:8080 whose connections the DLB queue spreads
//! over the workers, three built-in httpbin-style backends, routes for
//! `/status` and `/delay`, and the admin pages on 127.0.0.1:9901.
//! SIGHUP (or `POST /reload` on the admin listener) re-reads the
//! `--config` file (`reload.rs`). See `examples/gateway/README.md`.

mod admin;
mod cluster;
mod config;
mod demo;
mod h1;
mod health;
mod maglev;
mod proxy;
mod reload;

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulcrum::io::{AsyncRead, AsyncWrite};
use fulcrum::net::hyper::{FulcrumExecutor, FulcrumTimer, HyperIo};
use fulcrum::net::signal::unix::{signal, Signal, SignalKind};
use fulcrum::net::{Server, TcpStream};
use fulcrum::runtime::{Builder, Handle};
use fulcrum::sync::watch;

use crate::config::Validated;
use crate::proxy::Gateway;
use crate::reload::Live;

/// The default configuration: the shipped file, embedded.
const DEFAULT_CONFIG: &str = include_str!("gateway.toml");

struct Args {
    config: Option<String>,
    check: bool,
}

const USAGE: &str = "usage: gateway [--config FILE.toml] [--check]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: None,
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-c" => {
                args.config = Some(it.next().ok_or("--config needs a file")?);
            }
            "--check" => args.check = true,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn load(args: &Args) -> Result<Validated, String> {
    match &args.config {
        None => config::parse("<built-in gateway.toml>", DEFAULT_CONFIG).map_err(|e| e.to_string()),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            config::parse(path, &text).map_err(|e| e.to_string())
        }
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gateway: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("gateway: configuration ok");
        return ExitCode::SUCCESS;
    }
    let rt = match Builder::new_multi_thread()
        .worker_threads(config.workers)
        .dlb_backend(config.backend)
        .thread_name("gateway-worker")
        // Connection tasks are woken by their sockets, in the reactor of
        // the worker that adopted them: a task shed to a peer comes back
        // with its next event. Hand off only work that would wait 100 µs
        // (BENCHMARKS.md: fewer handoffs per request, more requests/s).
        .handoff_wait(std::time::Duration::from_micros(100))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gateway: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config, args.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The client connection preface of HTTP/2 with prior knowledge (RFC 9113
/// section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams an HTTP/2 client may reset before the gateway has taken them
/// up (hyper's default, said here): past it, the connection is closed.
const H2_MAX_PENDING_RESETS: usize = 20;

/// Streams the gateway may reset because of a client's protocol errors on
/// one connection before it closes the connection.
const H2_MAX_LOCAL_RESETS: Option<usize> = Some(64);

/// Which protocol a new connection speaks: `Some(true)` for HTTP/2 with
/// prior knowledge (it opens with the preface), `Some(false)` for HTTP/1.x,
/// `None` to close it (a preface still incomplete after `limit`, the
/// header timeout). Only peeks: hyper reads the bytes again.
async fn protocol(stream: &TcpStream, http2: bool, limit: Duration) -> Option<bool> {
    if !http2 {
        return Some(false);
    }
    let check = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(n) => n,
                // hyper meets the same error and reports it.
                Err(_) => return Some(false),
            };
            if n == 0 || buf[..n] != H2_PREFACE[..n] {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            // The preface came split over segments (rare): peek again
            // shortly, since peeking sees the same bytes at once.
            fulcrum::time::sleep(Duration::from_millis(1)).await;
        }
    };
    fulcrum::time::timeout(limit, check).await.unwrap_or(None)
}

/// Runs a client connection to its end; when the gateway starts draining,
/// gives it `grace` to end by itself, then shuts it down gracefully (HTTP/1:
/// after the response in flight; HTTP/2: GOAWAY, streams in flight finish).
async fn drive<C, E>(
    mut conn: std::pin::Pin<&mut C>,
    shutdown: impl Fn(std::pin::Pin<&mut C>),
    drain: &mut watch::Receiver<bool>,
    grace: Duration,
) -> Result<(), E>
where
    C: std::future::Future<Output = Result<(), E>>,
{
    if *drain.borrow() {
        shutdown(conn.as_mut());
        return conn.await;
    }
    fulcrum::select! {
        r = conn.as_mut() => r,
        _ = drain.changed() => {
            // Responses now carry `Connection: close` (HTTP/1); give busy
            // connections a moment to end on their own, then close the
            // idle ones.
            match fulcrum::time::timeout(grace, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => {
                    shutdown(conn.as_mut());
                    conn.await
                }
            }
        }
    }
}

/// The limits every client connection is served with.
#[derive(Clone, Copy)]
struct ConnSettings {
    /// Time for the TLS handshake, and for each HTTP/1 request head.
    header_timeout: Duration,
    /// Largest request head (and HTTP/2 header list), in bytes.
    max_header: usize,
    /// Time a connection gets to end by itself once draining starts.
    grace: Duration,
    /// Streams one HTTP/2 connection may have open at once.
    h2_streams: u32,
    /// HTTP/1.1 on the gateway's own path first (`h1.rs`).
    native: bool,
    /// Largest request body, and the time for it (the native path's).
    max_body: usize,
    body_timeout: Duration,
}

/// Serves a client connection (plain or TLS): HTTP/1.1 on the gateway's
/// own path while it can serve the requests, then (or for HTTP/2, or with
/// `http1 = "hyper"`) on hyper, from the first byte it has not served.
async fn serve_conn<T>(
    io: T,
    h2: bool,
    https: bool,
    gw: Arc<Gateway>,
    peer: SocketAddr,
    mut drain: watch::Receiver<bool>,
    settings: ConnSettings,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (io, rest) = if settings.native && !h2 {
        let limits = h1::Limits {
            header_timeout: settings.header_timeout,
            max_header: settings.max_header,
            max_body: settings.max_body,
            body_timeout: settings.body_timeout,
            grace: settings.grace,
            https,
        };
        match h1::serve(io, &gw, peer, &mut drain, limits).await {
            h1::Served::Closed => return,
            h1::Served::Hyper(io, rest) => (io, rest),
        }
    } else {
        (io, bytes::Bytes::new())
    };
    // On the heap: hyper's connection state sizes only the tasks that
    // reach it.
    let io = HyperIo::new(h1::Rewind::new(io, rest));
    Box::pin(serve_http(io, h2, https, gw, peer, drain, settings)).await;
}

/// Serves HTTP on a client connection, plain or TLS (`https`), as HTTP/2
/// if `h2` (prior knowledge or ALPN) and HTTP/1.x otherwise, to its end or
/// until the drain closes it.
async fn serve_http<T>(
    io: T,
    h2: bool,
    https: bool,
    gw: Arc<Gateway>,
    peer: SocketAddr,
    mut drain: watch::Receiver<bool>,
    settings: ConnSettings,
) where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // A protocol upgrade this connection's requests pass through (HTTP/1
    // only), run below once hyper hands the connection over.
    let tunnel = (!h2).then(proxy::TunnelSlot::new);
    let (slot, tunnel_gw) = (tunnel.clone(), gw.clone());
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if https {
            req.extensions_mut().insert(proxy::ClientTls);
        }
        // Only where an upgrade is offered: no allocation on other requests.
        if let Some(slot) = slot
            .as_ref()
            .filter(|_| req.headers().contains_key(hyper::header::UPGRADE))
        {
            req.extensions_mut().insert(slot.clone());
        }
        gw.clone().handle(req, peer)
    });
    let ConnSettings {
        header_timeout,
        max_header,
        grace,
        h2_streams,
        ..
    } = settings;
    let result = if h2 {
        let conn = hyper::server::conn::http2::Builder::new(FulcrumExecutor::new())
            .timer(FulcrumTimer::new())
            .max_concurrent_streams(h2_streams)
            .max_header_list_size(max_header as u32)
            // Rapid reset (CVE-2023-44487): a client that opens
            // and resets streams faster than they are served
            // gets GOAWAY(ENHANCE_YOUR_CALM) and is disconnected.
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS)
            .serve_connection(io, svc);
        drive(
            std::pin::pin!(conn),
            |c| c.graceful_shutdown(),
            &mut drain,
            grace,
        )
        .await
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(FulcrumTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(max_header)
            .serve_connection(io, svc)
            .with_upgrades();
        drive(
            std::pin::pin!(conn),
            |c| c.graceful_shutdown(),
            &mut drain,
            grace,
        )
        .await
    };
    if let Err(e) = result {
        tracing::debug!(client = %peer, "connection: {e}");
    }
    // An upgraded connection lives on in this task, so that it counts as
    // open (and the drain waits for it, up to the drain timeout).
    if let Some(t) = tunnel.and_then(|slot| slot.take()) {
        tunnel_gw.run_tunnel(t).await;
    }
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() -> io::Result<&'static str> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    fulcrum::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
    }
}

/// Reloads the configuration on each SIGHUP (see `reload.rs`).
fn reload_on_hangup(live: Arc<Live>, mut hup: Signal) {
    drop(fulcrum::spawn(async move {
        while hup.recv().await.is_some() {
            // The outcome is logged (and counted in /stats) by `reload`.
            let _ = live.reload().await;
        }
    }));
}

async fn run(config: Validated, path: Option<String>) -> io::Result<()> {
    let handle = Handle::current();
    // Install the handlers first, so that a signal during start-up drains
    // (or, SIGHUP, does not end the process).
    let stop = fulcrum::spawn(shutdown_signal());
    let hup = signal(SignalKind::hangup())?;
    let live = Arc::new(Live::start(config.clone(), path, handle.num_workers()).await?);
    let (drain_tx, drain_rx) = watch::channel(false);

    let accepted = live.clone();
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let serving = Server::bind(config.listen)
        .balance(config.balance)
        .serve(move |stream: TcpStream, peer: SocketAddr| {
            // The connection's configuration for its whole life (its TLS
            // certificate included).
            let gw = accepted.current();
            let drain = drain_rx.clone();
            let settings = ConnSettings {
                header_timeout: gw.config.header_timeout,
                max_header: gw.config.max_header_bytes,
                grace: (gw.config.drain_timeout / 4).min(Duration::from_secs(1)),
                h2_streams: gw.config.http2_max_concurrent_streams,
                native: gw.config.native_http1,
                max_body: gw.config.max_body_bytes,
                body_timeout: gw.config.body_timeout,
            };
            let http2 = gw.config.http2;
            let tls = gw.config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
            async move {
                let _ = stream.set_nodelay(true);
                let Some(acceptor) = tls else {
                    let Some(h2) = protocol(&stream, http2, settings.header_timeout).await else {
                        return;
                    };
                    serve_conn(stream, h2, false, gw, peer, drain, settings).await;
                    return;
                };
                // On the heap: the TLS path's state (rustls, the handshake)
                // would otherwise size every connection's task, plain ones
                // included (the soak's RSS showed it).
                Box::pin(async move {
                    // The handshake runs here, in the connection's task, within
                    // the header timeout: a client that sends nothing, or bytes
                    // that are not TLS, is counted, then closed (the socket is
                    // kept until the count is in, so that a client that sees
                    // the close sees the count too).
                    let mut shake = std::pin::pin!(acceptor.accept(stream).into_fallible());
                    let stream =
                        match fulcrum::time::timeout(settings.header_timeout, shake.as_mut()).await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err((e, tcp))) => {
                                tracing::debug!(client = %peer, "TLS handshake: {e}");
                                gw.count_tls_failure();
                                drop(tcp);
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(client = %peer, "TLS handshake: header timeout");
                                gw.count_tls_failure();
                                return;
                            }
                        };
                    // ALPN decides; a client that offered none gets HTTP/1.1.
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(&b"h2"[..]);
                    serve_conn(stream, h2, true, gw, peer, drain, settings).await;
                })
                .await;
            }
        })
        .await?;
    let serving = Arc::new(serving);

    let state = Arc::new(admin::State {
        live: live.clone(),
        serving: serving.clone(),
        handle: handle.clone(),
        draining: AtomicBool::new(false),
    });
    let admin = admin::start(config.admin, state.clone()).await?;

    let backend = handle
        .dlb_backend()
        .map_or_else(|| "none".to_owned(), |b| b.to_string());
    println!(
        "gateway: listening on {scheme}://{} ({} workers, balance {:?}, DLB backend: {backend})",
        serving.local_addr(),
        handle.num_workers(),
        config.balance,
    );
    let gateway = live.current();
    for (spec, c) in config.clusters.iter().zip(&gateway.clusters) {
        let eps: Vec<&str> = c.endpoints.iter().map(|e| e.name.as_str()).collect();
        println!(
            "gateway: cluster {:?} ({:?}): {}",
            spec.name,
            spec.policy,
            eps.join(", ")
        );
    }
    println!("gateway: admin on http://{}/stats", admin.local_addr());
    match &config.raw.listener.tls_cert {
        Some(cert) => println!(
            "gateway: try  curl -i --cacert {cert} https://NAME:{}/status/200 (NAME: a name in the certificate)",
            serving.local_addr().port()
        ),
        None => println!(
            "gateway: try  curl -i http://{}/status/200",
            serving.local_addr()
        ),
    }
    // Only the connections keep a configuration alive.
    drop(gateway);
    reload_on_hangup(live.clone(), hup);

    let why = match stop.await {
        Ok(Ok(why)) => why,
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(io::Error::other(e.to_string())),
    };

    // Graceful drain: stop accepting, let requests in flight finish, close
    // idle keep-alive connections, give up after the drain timeout.
    let started = Instant::now();
    // The configuration in force now; its drain flag is every
    // configuration's, and the drain channel reaches every connection.
    let gateway = live.current();
    let drain_timeout = gateway.config.drain_timeout;
    println!("gateway: {why}: draining (timeout {drain_timeout:?})");
    state.draining.store(true, Relaxed);
    gateway.draining.store(true, Relaxed);
    serving.stop();
    let _ = drain_tx.send(true);
    // A year stands for "no limit": a huge configured timeout must not
    // overflow the clock.
    let deadline = started
        .checked_add(drain_timeout)
        .unwrap_or_else(|| started + Duration::from_secs(365 * 24 * 3600));
    let open = || serving.open_per_worker().iter().sum::<u64>();
    while open() > 0 && Instant::now() < deadline {
        fulcrum::time::sleep(Duration::from_millis(10)).await;
    }
    let left = open();
    gateway.close_idle();
    admin.stop();
    live.stop().await;
    let served: u64 = gateway
        .workers
        .iter()
        .map(|w| w.requests.load(Relaxed))
        .sum();
    println!(
        "gateway: drained in {:?}: {served} requests served, {left} connections cut at the timeout; \
         connections per worker {:?}",
        started.elapsed(),
        serving.handled_per_worker()
    );
    Ok(())
}

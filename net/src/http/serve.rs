//! `serve`: axum's serving loop on Fulcrum.

use std::convert::Infallible;
use std::fmt;
use std::future::{poll_fn, Future, IntoFuture, Pending};
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fulcrum_runtime::Handle;
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Mutex};
use tower_service::Service;
use tracing::Instrument;

use crate::hyper::{FulcrumExecutor, FulcrumTimer, HyperIo};
use crate::serve::{AcceptBackoff, AcceptError};
use crate::{Server, Serving, TcpListener, TcpStream, UnixListener, UnixStream};

/// The error type that hyper and tower accept from services and bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What [`serve`] accepts connections from: axum's `Listener` trait, with
/// the same shape, for Fulcrum's listeners (and anything else: a TLS
/// acceptor, a listener that taps each stream).
pub trait Listener: Send + 'static {
    /// The stream of an accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The peer's address.
    type Addr: Send;

    /// Accepts the next connection. It never fails: errors are logged and
    /// retried here (out of descriptors or memory: backing off 10 ms,
    /// doubling up to 100 ms, as [`Server`] does), so that [`serve`]'s loop
    /// keeps going.
    fn accept(&mut self) -> impl Future<Output = (Self::Io, Self::Addr)> + Send;

    /// The address it listens on.
    ///
    /// # Errors
    /// The socket's error.
    fn local_addr(&self) -> io::Result<Self::Addr>;
}

/// Waits out an accept error: [`AcceptBackoff`] for lack of resources and
/// connection-level errors; one second for anything else (an error of the
/// listening socket, which a retry loop would otherwise spin on).
async fn wait_out(backoff: &mut AcceptBackoff, e: &io::Error) {
    if backoff.on_error(e, None).await == AcceptError::Fatal {
        tracing::error!("accept: {e}; retrying in 1 s");
        fulcrum_runtime::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Listener for TcpListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        let mut backoff = AcceptBackoff::new();
        loop {
            match TcpListener::accept(self).await {
                Ok(conn) => return conn,
                Err(e) => wait_out(&mut backoff, &e).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

impl Listener for UnixListener {
    type Io = UnixStream;
    type Addr = std::os::unix::net::SocketAddr;

    async fn accept(&mut self) -> (UnixStream, Self::Addr) {
        let mut backoff = AcceptBackoff::new();
        loop {
            match UnixListener::accept(self).await {
                Ok(conn) => return conn,
                Err(e) => wait_out(&mut backoff, &e).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        UnixListener::local_addr(self)
    }
}

/// What a make-service is called with for each accepted connection (axum's
/// `IncomingStream`): the stream, borrowed, and the peer's address. axum's
/// `ConnectInfo<SocketAddr>` is read from it (feature `axum`).
pub struct IncomingStream<'a, L: Listener> {
    io: &'a L::Io,
    remote_addr: L::Addr,
}

impl<L: Listener> IncomingStream<'_, L> {
    /// The connection's stream.
    pub fn io(&self) -> &L::Io {
        self.io
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> &L::Addr {
        &self.remote_addr
    }
}

impl<L: Listener> fmt::Debug for IncomingStream<'_, L>
where
    L::Io: fmt::Debug,
    L::Addr: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingStream")
            .field("io", self.io)
            .field("remote_addr", &self.remote_addr)
            .finish()
    }
}

/// A make-service that hands every connection a clone of one service
/// (tower's `Shared`): how a hand-written `Service<Request<Incoming>>`, or
/// a tonic server, is given to [`serve`].
#[derive(Clone, Copy, Debug)]
pub struct Shared<S>(S);

impl<S> Shared<S> {
    /// Shares `service` between all connections.
    pub fn new(service: S) -> Self {
        Self(service)
    }
}

impl<S: Clone, T> Service<T> for Shared<S> {
    type Response = S;
    type Error = Infallible;
    type Future = std::future::Ready<Result<S, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _conn: T) -> Self::Future {
        std::future::ready(Ok(self.0.clone()))
    }
}

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge, "h2c") on one listener,
/// with the shape of `axum::serve`: `make_service` is called for each
/// accepted connection (an axum `Router` with feature `axum`,
/// `Router::into_make_service_with_connect_info::<SocketAddr>()`, or
/// [`Shared`] around any `Service<Request<Incoming>>`).
///
/// Each connection is spawned through the DLB queue
/// ([`Handle::spawn_balanced`]): the arbiter picks its worker, and its
/// socket registers with that worker's reactor. When the DLB credit pool is
/// empty, the connection runs on the accepting worker instead; nothing is
/// dropped. Connection errors are logged (`tracing`, debug level) and never
/// stop the loop; accept errors are waited out by the [`Listener`].
///
/// Awaiting the returned [`Serve`] runs until the process ends; with
/// [`Serve::with_graceful_shutdown`] it returns once the signal has fired
/// and every connection has finished its requests in flight. Outside a
/// Fulcrum runtime it returns an error (`Other`).
///
/// ```no_run
/// use fulcrum_net::http::{serve, Shared};
/// use fulcrum_net::TcpListener;
///
/// # async fn run<S>(service: S) -> std::io::Result<()>
/// # where S: tower_service::Service<hyper::Request<hyper::body::Incoming>, Response = hyper::Response<String>, Error = std::convert::Infallible> + Clone + Send + 'static, S::Future: Send + 'static {
/// // `service`: any tower `Service<Request<Incoming>>`, e.g. a tonic server.
/// let listener = TcpListener::bind("127.0.0.1:3000").await?;
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// # drop(stop);
/// serve(listener, Shared::new(service))
///     .with_graceful_shutdown(async move {
///         let _ = stopped.await;
///     })
///     .await
/// # }
/// ```
pub fn serve<L, M, S>(listener: L, make_service: M) -> Serve<L, M, S>
where
    L: Listener,
    M: for<'a> Service<IncomingStream<'a, L>, Error = Infallible, Response = S>,
{
    Serve {
        listener,
        make_service,
        _marker: PhantomData,
    }
}

/// The future-to-be of [`serve`] (it implements [`IntoFuture`]).
#[must_use = "a server does nothing until awaited"]
pub struct Serve<L, M, S> {
    listener: L,
    make_service: M,
    _marker: PhantomData<fn() -> S>,
}

impl<L: Listener, M, S> Serve<L, M, S> {
    /// Stops accepting once `signal` completes, lets the connections finish
    /// the requests they are serving (HTTP/1.1 connections close after
    /// their current response, HTTP/2 ones send `GOAWAY`), then returns.
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<L, M, S, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        WithGracefulShutdown {
            serve: self,
            signal,
        }
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// The listener's error.
    pub fn local_addr(&self) -> io::Result<L::Addr> {
        self.listener.local_addr()
    }
}

impl<L, M, S> fmt::Debug for Serve<L, M, S>
where
    L: fmt::Debug,
    M: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("make_service", &self.make_service)
            .finish()
    }
}

/// [`serve`] with a graceful shutdown signal.
#[must_use = "a server does nothing until awaited"]
pub struct WithGracefulShutdown<L, M, S, F> {
    serve: Serve<L, M, S>,
    signal: F,
}

impl<L: Listener, M, S, F> WithGracefulShutdown<L, M, S, F> {
    /// The address it listens on.
    ///
    /// # Errors
    /// The listener's error.
    pub fn local_addr(&self) -> io::Result<L::Addr> {
        self.serve.listener.local_addr()
    }
}

impl<L, M, S, F> fmt::Debug for WithGracefulShutdown<L, M, S, F>
where
    L: fmt::Debug,
    M: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithGracefulShutdown")
            .field("serve", &self.serve)
            .finish_non_exhaustive()
    }
}

/// The future of a server: `Output = io::Result<()>`.
#[must_use = "futures do nothing unless polled"]
pub struct ServeFuture(Pin<Box<dyn Future<Output = io::Result<()>> + Send>>);

impl Future for ServeFuture {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for ServeFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServeFuture")
    }
}

impl<L, M, S, B> IntoFuture for Serve<L, M, S>
where
    L: Listener,
    L::Addr: fmt::Debug,
    M: for<'a> Service<IncomingStream<'a, L>, Error = Infallible, Response = S> + Send + 'static,
    for<'a> <M as Service<IncomingStream<'a, L>>>::Future: Send,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = io::Result<()>;
    type IntoFuture = ServeFuture;

    fn into_future(self) -> ServeFuture {
        ServeFuture(Box::pin(run(
            self.listener,
            self.make_service,
            std::future::pending::<()>(),
        )))
    }
}

impl<L, M, S, B, F> IntoFuture for WithGracefulShutdown<L, M, S, F>
where
    L: Listener,
    L::Addr: fmt::Debug,
    M: for<'a> Service<IncomingStream<'a, L>, Error = Infallible, Response = S> + Send + 'static,
    for<'a> <M as Service<IncomingStream<'a, L>>>::Future: Send,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = ServeFuture;

    fn into_future(self) -> ServeFuture {
        ServeFuture(Box::pin(run(
            self.serve.listener,
            self.serve.make_service,
            self.signal,
        )))
    }
}

/// The HTTP/1.1 + HTTP/2 connection builder, on Fulcrum's executor and
/// timer. As axum's: HTTP/2's extended CONNECT (WebSockets over h2) on.
fn conn_builder() -> Builder<FulcrumExecutor> {
    let mut builder = Builder::new(FulcrumExecutor::new());
    builder.http1().timer(FulcrumTimer::new());
    builder
        .http2()
        .timer(FulcrumTimer::new())
        .enable_connect_protocol();
    builder
}

/// What every connection task of one server shares: the builder, the
/// shutdown signal, and a receiver whose drop tells the server that the
/// connection is gone.
#[derive(Clone)]
struct ConnShared {
    builder: Arc<Builder<FulcrumExecutor>>,
    shutdown: watch::Receiver<bool>,
    alive: watch::Receiver<()>,
}

/// The shutdown side of [`ConnShared`].
struct Drain {
    shutdown: watch::Sender<bool>,
    alive: watch::Sender<()>,
}

fn drain_pair() -> (Drain, ConnShared) {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (alive_tx, alive_rx) = watch::channel(());
    (
        Drain {
            shutdown: shutdown_tx,
            alive: alive_tx,
        },
        ConnShared {
            builder: Arc::new(conn_builder()),
            shutdown: shutdown_rx,
            alive: alive_rx,
        },
    )
}

impl Drain {
    /// Tells every connection to finish what it serves, then waits until
    /// all of them (and every clone of the shared state) are gone.
    async fn drain(self) {
        self.shutdown.send_replace(true);
        tracing::trace!(
            connections = self.alive.receiver_count(),
            "graceful shutdown: waiting for connections"
        );
        self.alive.closed().await;
    }
}

/// Polls `a` and `b` together; `None` when `b` completes first (`b` is
/// polled first, so a fired signal wins over a ready accept).
async fn unless<A: Future, B: Future<Output = ()>>(a: A, b: Pin<&mut B>) -> Option<A::Output> {
    let mut a = pin!(a);
    let mut b = b;
    poll_fn(|cx| {
        if b.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        a.as_mut().poll(cx).map(Some)
    })
    .await
}

async fn run<L, M, S, B, F>(mut listener: L, mut make_service: M, signal: F) -> io::Result<()>
where
    L: Listener,
    L::Addr: fmt::Debug,
    M: for<'a> Service<IncomingStream<'a, L>, Error = Infallible, Response = S> + Send + 'static,
    for<'a> <M as Service<IncomingStream<'a, L>>>::Future: Send,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    let handle = Handle::try_current().map_err(io::Error::other)?;
    let (drain, shared) = drain_pair();
    let mut signal = pin!(signal);
    while let Some((io, remote_addr)) = unless(listener.accept(), signal.as_mut()).await {
        // The connection's span carries the peer's address into hyper's and
        // the service's events (and the error logged at its end).
        let span = tracing::debug_span!("connection", peer = ?remote_addr);
        let (service, io) = make(&mut make_service, io, remote_addr).await;
        let shared = shared.clone();
        let runtime = handle.clone();
        let conn = async move {
            // Counted in `WorkerMetrics::open_connections` of the worker it
            // starts on.
            let _tracked = runtime.track_connection();
            serve_connection(shared, io, service).await;
        };
        drop(handle.spawn_balanced(conn.instrument(span)));
    }
    tracing::trace!("shutdown signal: no longer accepting");
    drop(listener);
    drop(shared);
    drain.drain().await;
    Ok(())
}

/// Calls the make-service for one connection. The stream is owned here
/// and lent to the make-service's call only (so it need not be `Sync`).
async fn make<L, M, S>(make_service: &mut M, io: L::Io, remote_addr: L::Addr) -> (S, L::Io)
where
    L: Listener,
    M: for<'a> Service<IncomingStream<'a, L>, Error = Infallible, Response = S>,
{
    let ready = poll_fn(|cx| make_service.poll_ready(cx)).await;
    let Ok(()) = ready;
    let made = make_service
        .call(IncomingStream {
            io: &io,
            remote_addr,
        })
        .await;
    let Ok(service) = made;
    (service, io)
}

/// Serves one connection until it closes, starting a graceful shutdown of
/// it when the server's signal fires.
async fn serve_connection<I, S, B>(shared: ConnShared, io: I, service: S)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let ConnShared {
        builder,
        mut shutdown,
        alive,
    } = shared;
    let mut conn =
        pin!(builder
            .serve_connection_with_upgrades(HyperIo::new(io), TowerToHyperService::new(service)));
    let mut signal = pin!(async move {
        // The server gone without a signal (its future dropped): the
        // connection goes on, as with axum.
        if shutdown.wait_for(|&stop| stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    let mut closing = false;
    let result = poll_fn(|cx| {
        if !closing && signal.as_mut().poll(cx).is_ready() {
            closing = true;
            conn.as_mut().graceful_shutdown();
        }
        conn.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = result {
        tracing::debug!("connection error: {e}");
    }
    drop(alive);
}

/// [`serve`] on a [`Server`]: the connections are placed by the server's
/// [`Balance`](crate::Balance) mode (`Dlb`, `Exact`, `Reuseport`,
/// `AcceptRace`), and the per-worker counts of [`Serving`] are kept.
///
/// The make-service sees each connection as an
/// `IncomingStream<'_, TcpListener>`, so axum's
/// `into_make_service_with_connect_info::<SocketAddr>()` works here too. It
/// is called on the worker the connection was placed on, one connection at
/// a time (under a lock: make-services are cheap clones).
///
/// ```no_run
/// use fulcrum_net::http::{serve_balanced, Shared};
/// use fulcrum_net::{Balance, Server};
///
/// # async fn run<S>(service: S) -> std::io::Result<()>
/// # where S: tower_service::Service<hyper::Request<hyper::body::Incoming>, Response = hyper::Response<String>, Error = std::convert::Infallible> + Clone + Send + 'static, S::Future: Send + 'static {
/// let server = Server::bind("127.0.0.1:3000".parse().unwrap()).balance(Balance::Exact);
/// let running = serve_balanced(server, Shared::new(service)).bind().await?;
/// println!("listening on {}", running.local_addr());
/// running.await
/// # }
/// ```
pub fn serve_balanced<M, S>(server: Server, make_service: M) -> ServeBalanced<M, S> {
    ServeBalanced {
        server,
        make_service,
        signal: std::future::pending(),
        _marker: PhantomData,
    }
}

/// The future-to-be of [`serve_balanced`]: await it to bind and serve, or
/// [`bind`](Self::bind) first to learn the address.
#[must_use = "a server does nothing until awaited"]
pub struct ServeBalanced<M, S, F = Pending<()>> {
    server: Server,
    make_service: M,
    signal: F,
    _marker: PhantomData<fn() -> S>,
}

impl<M, S, F> fmt::Debug for ServeBalanced<M, S, F>
where
    M: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeBalanced")
            .field("server", &self.server)
            .field("make_service", &self.make_service)
            .finish_non_exhaustive()
    }
}

/// A [`serve_balanced`] server that is accepting. Awaiting it waits for the
/// shutdown signal, then for the connections to finish.
#[must_use = "dropping it stops accepting at once; await it to serve"]
pub struct RunningBalanced<F> {
    serving: Serving,
    signal: F,
    drain: Drain,
}

impl<F> fmt::Debug for RunningBalanced<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningBalanced")
            .field("serving", &self.serving)
            .finish_non_exhaustive()
    }
}

impl<F> RunningBalanced<F> {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.serving.local_addr()
    }

    /// The server's per-worker counts.
    pub fn serving(&self) -> &Serving {
        &self.serving
    }
}

impl<F> IntoFuture for RunningBalanced<F>
where
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = ServeFuture;

    fn into_future(self) -> ServeFuture {
        ServeFuture(Box::pin(async move {
            self.signal.await;
            tracing::trace!("shutdown signal: no longer accepting");
            self.serving.stop();
            self.drain.drain().await;
            drop(self.serving);
            Ok(())
        }))
    }
}

impl<M, S, F> ServeBalanced<M, S, F> {
    /// Stops accepting once `signal` completes and waits for the
    /// connections to finish their requests in flight, as
    /// [`Serve::with_graceful_shutdown`].
    pub fn with_graceful_shutdown<G>(self, signal: G) -> ServeBalanced<M, S, G>
    where
        G: Future<Output = ()> + Send + 'static,
    {
        ServeBalanced {
            server: self.server,
            make_service: self.make_service,
            signal,
            _marker: PhantomData,
        }
    }
}

impl<M, S, B, F> ServeBalanced<M, S, F>
where
    M: for<'a> Service<IncomingStream<'a, TcpListener>, Error = Infallible, Response = S>
        + Send
        + 'static,
    for<'a> <M as Service<IncomingStream<'a, TcpListener>>>::Future: Send,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    /// Binds and starts accepting.
    ///
    /// # Errors
    /// Those of [`Server::serve`]: binding errors; outside a runtime,
    /// `Other`.
    pub async fn bind(self) -> io::Result<RunningBalanced<F>> {
        let (drain, shared) = drain_pair();
        let make_service = Arc::new(Mutex::new(self.make_service));
        let serving = self
            .server
            .serve(move |stream: TcpStream, peer: SocketAddr| {
                let make_service = make_service.clone();
                let shared = shared.clone();
                let span = tracing::debug_span!("connection", peer = ?peer);
                async move {
                    let (service, stream) = {
                        let mut make_service = make_service.lock().await;
                        make::<TcpListener, M, S>(&mut make_service, stream, peer).await
                    };
                    serve_connection(shared, stream, service).await;
                }
                .instrument(span)
            })
            .await?;
        Ok(RunningBalanced {
            serving,
            signal: self.signal,
            drain,
        })
    }
}

impl<M, S, B, F> IntoFuture for ServeBalanced<M, S, F>
where
    M: for<'a> Service<IncomingStream<'a, TcpListener>, Error = Infallible, Response = S>
        + Send
        + 'static,
    for<'a> <M as Service<IncomingStream<'a, TcpListener>>>::Future: Send,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = ServeFuture;

    fn into_future(self) -> ServeFuture {
        ServeFuture(Box::pin(async move { self.bind().await?.await }))
    }
}

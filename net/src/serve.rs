//! Balanced serving: run a handler for every connection on the worker that
//! the balance mode picks (see [`Server`]).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fulcrum_runtime::{Handle, JoinHandle};

use crate::{TcpListener, TcpSocket, TcpStream};

/// How connections are spread over the workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    /// One listener; the accepting worker sends each connection as an
    /// unordered DLB event and the arbiter picks the worker. The default.
    #[default]
    Dlb,
    /// Envoy's exact balance: under a lock, pick the worker with the fewest
    /// open connections and count the new one; hand the connection to it
    /// with a directed DLB event.
    Exact,
    /// One `SO_REUSEPORT` listener per worker; the kernel hashes each
    /// connection to one of them (Envoy's default "Nop" balancer).
    Reuseport,
    /// One listening socket registered in every worker; whichever worker
    /// accepts first keeps the connection.
    AcceptRace,
}

impl std::str::FromStr for Balance {
    type Err = io::Error;

    /// Parses `dlb`, `exact`, `reuseport` or `race`.
    fn from_str(s: &str) -> io::Result<Self> {
        match s {
            "dlb" => Ok(Balance::Dlb),
            "exact" => Ok(Balance::Exact),
            "reuseport" => Ok(Balance::Reuseport),
            "race" | "accept_race" => Ok(Balance::AcceptRace),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown balance mode {other:?}; expected dlb, exact, reuseport or race"),
            )),
        }
    }
}

/// Configures balanced serving on an address: a handler runs for every
/// connection, on the worker that the [`Balance`] mode picks.
///
/// ```
/// use fulcrum_net::{Balance, Server, TcpStream};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let rt = fulcrum_runtime::Builder::new_multi_thread().worker_threads(2).build()?;
/// rt.block_on(async {
///     let addr = "127.0.0.1:0".parse().expect("a socket address");
///     let serving = Server::bind(addr)
///         .balance(Balance::Dlb)
///         .serve(|mut stream, _peer| async move {
///             let _ = stream.write_all(b"hi").await;
///         })
///         .await?;
///     let mut client = TcpStream::connect(serving.local_addr()).await?;
///     let mut greeting = String::new();
///     client.read_to_string(&mut greeting).await?;
///     assert_eq!(greeting, "hi");
///     assert_eq!(serving.handled_per_worker().iter().sum::<u64>(), 1);
///     Ok::<(), std::io::Error>(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Server {
    addr: SocketAddr,
    balance: Balance,
}

/// Per-worker connection counts of a [`Serving`].
#[derive(Debug)]
struct Counts {
    handled: Box<[AtomicU64]>,
    open: Box<[AtomicU64]>,
    /// Envoy's exact balancer: open counts under one lock.
    exact: Mutex<Vec<u64>>,
    /// Times an accept loop backed off for lack of descriptors or memory.
    backoffs: AtomicU64,
}

impl Counts {
    fn new(workers: usize) -> Self {
        Self {
            handled: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            open: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            exact: Mutex::new(vec![0; workers]),
            backoffs: AtomicU64::new(0),
        }
    }
}

/// A server that is running; dropping it stops accepting (connections in
/// progress go on).
pub struct Serving {
    local_addr: SocketAddr,
    counts: Arc<Counts>,
    acceptors: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Serving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serving")
            .field("local_addr", &self.local_addr)
            .field("handled", &self.handled_per_worker())
            .finish()
    }
}

impl Serving {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections handled so far, per worker.
    pub fn handled_per_worker(&self) -> Vec<u64> {
        self.counts
            .handled
            .iter()
            .map(|c| c.load(Relaxed))
            .collect()
    }

    /// How many times an accept loop backed off because the process was
    /// out of file descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`,
    /// `ENOMEM`): it sleeps 10 ms, doubling up to 100 ms, while the
    /// connections already open keep being served.
    pub fn accept_backoffs(&self) -> u64 {
        self.counts.backoffs.load(Relaxed)
    }

    /// Connections open now, per worker.
    pub fn open_per_worker(&self) -> Vec<u64> {
        self.counts.open.iter().map(|c| c.load(Relaxed)).collect()
    }

    /// Stops accepting.
    pub fn stop(&self) {
        for a in &self.acceptors {
            a.abort();
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Server {
    /// Serving on `addr`.
    pub fn bind(addr: SocketAddr) -> Self {
        Self {
            addr,
            balance: Balance::Dlb,
        }
    }

    /// The balance mode (default [`Balance::Dlb`]).
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// Starts accepting; `handler(stream, peer)` runs for each connection on
    /// the worker the mode picks, with the socket registered there.
    ///
    /// # What if a queue is full?
    /// - The listen backlog (1024, capped by `net.core.somaxconn`): the
    ///   kernel drops handshakes and clients retry (see
    ///   [`TcpListener::accept`]).
    /// - Out of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`,
    ///   `ENOMEM`): the accept loop sleeps 10 ms, doubling up to 100 ms,
    ///   and tries again while the open connections keep being served
    ///   ([`Serving::accept_backoffs`] counts it). A connection that fails
    ///   before it is accepted (`ECONNABORTED`, `ECONNRESET`, `EPROTO`,
    ///   `EINTR`) is skipped. Any other error of the listening socket stops
    ///   that accept loop, logged at error level; connections already open
    ///   go on.
    /// - Each connection's task is handed off through the DLB queue
    ///   ([`Handle::spawn_balanced`] for [`Balance::Dlb`],
    ///   [`Handle::spawn_on_worker`] for the others). When the DLB credit
    ///   pool is empty the handoff comes up short and the connection runs
    ///   on the accepting worker instead; [`Balance::Exact`] still counts
    ///   it on the worker it chose.
    ///
    /// # Errors
    /// Binding errors, with the address; outside a runtime, `Other`.
    pub async fn serve<F, Fut>(self, handler: F) -> io::Result<Serving>
    where
        F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = Handle::try_current().map_err(io::Error::other)?;
        let workers = handle.num_workers();
        let counts = Arc::new(Counts::new(workers));
        let handler = Arc::new(handler);
        let mut acceptors = Vec::new();
        let local_addr;
        match self.balance {
            Balance::Dlb | Balance::Exact => {
                let listener = TcpListener::bind(self.addr).await?;
                local_addr = listener.local_addr()?;
                let ctx = Ctx {
                    handle: handle.clone(),
                    counts: counts.clone(),
                    handler,
                    mode: self.balance,
                };
                acceptors.push(handle.spawn(accept_loop(listener, ctx, None)));
            }
            Balance::Reuseport => {
                let first = reuseport_listener(self.addr)?;
                local_addr = first.local_addr()?;
                let mut listeners = vec![first];
                for _ in 1..workers {
                    listeners.push(reuseport_listener(local_addr)?);
                }
                for (w, l) in listeners.into_iter().enumerate() {
                    let ctx = Ctx {
                        handle: handle.clone(),
                        counts: counts.clone(),
                        handler: handler.clone(),
                        mode: self.balance,
                    };
                    acceptors.push(handle.spawn_on_worker(w, accept_loop(l, ctx, Some(w))));
                }
            }
            Balance::AcceptRace => {
                let std_listener = TcpListener::bind_std(self.addr)?;
                local_addr = std_listener.local_addr()?;
                for w in 0..workers {
                    // One fd per worker, so each registers with its own
                    // worker's reactor; all share the listening socket.
                    let l = TcpListener::from_std(std_listener.try_clone()?)?;
                    let ctx = Ctx {
                        handle: handle.clone(),
                        counts: counts.clone(),
                        handler: handler.clone(),
                        mode: self.balance,
                    };
                    acceptors.push(handle.spawn_on_worker(w, accept_loop(l, ctx, Some(w))));
                }
            }
        }
        Ok(Serving {
            local_addr,
            counts,
            acceptors,
        })
    }
}

/// What an accept loop does after an error, as decided by
/// [`AcceptBackoff::on_error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptError {
    /// A per-connection error or a lack of resources waited out: accept
    /// again.
    Retry,
    /// An error of the listening socket itself.
    Fatal,
}

/// The accept loops' answer to running out of descriptors or memory
/// (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`): sleep 10 ms, doubling up to
/// 100 ms while it lasts, so the connections already open keep being served
/// instead of the loop spinning on a full accept queue. Shared by
/// [`Server`] and `http::serve`'s listeners.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    delay: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_millis(100);

    pub(crate) fn new() -> Self {
        Self { delay: Self::FIRST }
    }

    /// After a successful accept.
    pub(crate) fn reset(&mut self) {
        self.delay = Self::FIRST;
    }

    /// Classifies `e`, sleeping first when it is a lack of resources
    /// (counted in `backoffs`).
    pub(crate) async fn on_error(
        &mut self,
        e: &io::Error,
        backoffs: Option<&AtomicU64>,
    ) -> AcceptError {
        match e.raw_os_error() {
            Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
                tracing::warn!("accept: {e}; backing off {:?}", self.delay);
                if let Some(b) = backoffs {
                    b.fetch_add(1, Relaxed);
                }
                fulcrum_runtime::time::sleep(self.delay).await;
                self.delay = (self.delay * 2).min(Self::MAX);
                AcceptError::Retry
            }
            // The peer gave up before we accepted, or a signal: nothing
            // wrong with the listener.
            Some(libc::ECONNABORTED)
            | Some(libc::EINTR)
            | Some(libc::EPROTO)
            | Some(libc::ECONNRESET) => AcceptError::Retry,
            _ => AcceptError::Fatal,
        }
    }
}

struct Ctx<F> {
    handle: Handle,
    counts: Arc<Counts>,
    handler: Arc<F>,
    mode: Balance,
}

impl<F> Clone for Ctx<F> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
            counts: self.counts.clone(),
            handler: self.handler.clone(),
            mode: self.mode,
        }
    }
}

/// Accepts forever; `pinned` is the worker this loop runs on (for the
/// per-worker listener modes, whose connections stay on that worker).
async fn accept_loop<F, Fut>(listener: TcpListener, ctx: Ctx<F>, pinned: Option<usize>)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = AcceptBackoff::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => {
                backoff.reset();
                c
            }
            Err(e) => match backoff.on_error(&e, Some(&ctx.counts.backoffs)).await {
                AcceptError::Retry => continue,
                AcceptError::Fatal => {
                    tracing::error!("accept: {e}; stopping this listener");
                    return;
                }
            },
        };
        let ctx2 = ctx.clone();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        match (ctx.mode, pinned) {
            (Balance::Exact, _) => {
                let w = {
                    let mut open = ctx.counts.exact.lock().unwrap_or_else(|e| e.into_inner());
                    let (w, _) = open
                        .iter()
                        .enumerate()
                        .min_by_key(|&(_, n)| *n)
                        .unwrap_or((0, &0));
                    open[w] += 1;
                    w
                };
                tracing::debug!(fd, worker = w, mode = "exact", "connection handoff");
                drop(
                    ctx.handle
                        .spawn_on_worker(w, handle_conn(ctx2, stream, peer, Some(w))),
                );
            }
            (_, Some(w)) => {
                tracing::debug!(fd, worker = w, mode = ?ctx.mode, "connection kept");
                drop(
                    ctx.handle
                        .spawn_on_worker(w, handle_conn(ctx2, stream, peer, None)),
                );
            }
            (_, None) => {
                tracing::debug!(fd, mode = "dlb", "connection handoff");
                drop(
                    ctx.handle
                        .spawn_balanced(handle_conn(ctx2, stream, peer, None)),
                );
            }
        }
    }
}

/// Runs the handler for one connection and keeps the per-worker counts.
/// `exact` is the worker the exact balancer counted the connection on.
async fn handle_conn<F, Fut>(ctx: Ctx<F>, stream: TcpStream, peer: SocketAddr, exact: Option<usize>)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Counted in the runtime's metrics (`WorkerMetrics::open_connections`)
    // and in this server's own counts, on the worker the handler starts on.
    let tracked = ctx.handle.track_connection();
    let w = tracked.worker() % ctx.counts.handled.len();
    ctx.counts.handled[w].fetch_add(1, Relaxed);
    ctx.counts.open[w].fetch_add(1, Relaxed);
    let _open = OpenGuard(ctx.counts.clone(), w);
    let _exact = exact.map(|chosen| ExactGuard(ctx.counts.clone(), chosen));
    (ctx.handler)(stream, peer).await;
}

/// Counts a connection out of its worker's open count when it closes.
struct OpenGuard(Arc<Counts>, usize);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open[self.1].fetch_sub(1, Relaxed);
    }
}

/// Gives back the exact balancer's count of a connection when it closes.
struct ExactGuard(Arc<Counts>, usize);

impl Drop for ExactGuard {
    fn drop(&mut self) {
        let mut exact = self.0.exact.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = exact.get_mut(self.1) {
            *n = n.saturating_sub(1);
        }
    }
}

/// A listening socket with `SO_REUSEADDR` and `SO_REUSEPORT`, bound to
/// `addr`.
fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_for(addr)?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(TcpListener::DEFAULT_BACKLOG)
}

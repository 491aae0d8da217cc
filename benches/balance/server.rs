//! The servers under test: the same connection loop on every runtime, and
//! a thread-per-connection server as the reference for what the kernel's
//! scheduler achieves alone.

use std::cell::Cell;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulcrum::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use fulcrum::net::{Balance, Server};

use crate::common::tune;
use crate::scenario::decode;

/// Every system, in the order of the tables.
pub const SYSTEMS: [&str; 8] = [
    "fulcrum-spawn",
    "fulcrum-dlb",
    "fulcrum-exact",
    "fulcrum-reuseport",
    "fulcrum-race",
    "fulcrum-stealing",
    "tokio",
    "threads",
];

/// Counters shared by one server's handlers; indexed by worker.
pub struct Stats {
    /// Connections whose handler started on each worker.
    pub conns: Vec<AtomicU64>,
    /// Nanoseconds of requested work (spin or block) run on each worker.
    pub busy_ns: Vec<AtomicU64>,
    /// Handlers started (accepted connections).
    pub accepted: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Worker indices outside `0..workers` (should stay 0).
    pub bad_worker: AtomicU64,
    /// Read or write errors other than a clean end or a reset.
    pub errors: AtomicU64,
    /// Connections that ended with a reset (expected in `churn`, whose
    /// clients close with `SO_LINGER` 0).
    pub resets: AtomicU64,
    /// Accept errors of the plain accept loops.
    pub accept_errors: AtomicU64,
}

impl Stats {
    pub fn new(workers: usize) -> Self {
        Self {
            conns: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            busy_ns: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            accepted: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            bad_worker: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
        }
    }

    fn slot(&self, w: Option<usize>) -> Option<usize> {
        match w {
            Some(w) if w < self.conns.len() => Some(w),
            _ => {
                self.bad_worker.fetch_add(1, Relaxed);
                None
            }
        }
    }

    fn end_of(&self, e: &std::io::Error) {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {}
            std::io::ErrorKind::ConnectionReset => {
                self.resets.fetch_add(1, Relaxed);
            }
            _ => {
                self.errors.fetch_add(1, Relaxed);
            }
        }
    }
}

fn fulcrum_worker() -> Option<usize> {
    fulcrum::runtime::Handle::try_current()
        .ok()
        .and_then(|h| h.current_worker())
}

thread_local! {
    /// The tokio worker index of this thread, set by `on_thread_start`.
    static TOKIO_WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

fn tokio_worker() -> Option<usize> {
    TOKIO_WORKER.with(Cell::get)
}

/// Runs one request's work on the calling thread: spins for `cost` (busy
/// CPU) or blocks the thread for it.
fn work(cost: Duration, block: bool) -> Duration {
    let t = Instant::now();
    if block {
        std::thread::sleep(cost);
    } else {
        while t.elapsed() < cost {
            std::hint::spin_loop();
        }
    }
    t.elapsed()
}

/// One connection: read an 8-byte request, do its work, echo it.
async fn conn_loop<S>(mut s: S, st: Arc<Stats>, worker: fn() -> Option<usize>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    st.accepted.fetch_add(1, Relaxed);
    if let Some(w) = st.slot(worker()) {
        st.conns[w].fetch_add(1, Relaxed);
    }
    let mut req = [0u8; 8];
    loop {
        if let Err(e) = s.read_exact(&mut req).await {
            st.end_of(&e);
            return;
        }
        let (cost, block) = decode(req);
        let w = st.slot(worker());
        let took = work(cost, block);
        if let Some(w) = w {
            st.busy_ns[w].fetch_add(took.as_nanos() as u64, Relaxed);
        }
        if s.write_all(&req).await.is_err() {
            st.errors.fetch_add(1, Relaxed);
            return;
        }
        st.requests.fetch_add(1, Relaxed);
    }
}

/// A server under test; dropping it shuts its runtime down.
pub enum Running {
    Balanced {
        rt: fulcrum::runtime::Runtime,
        serving: fulcrum::net::Serving,
    },
    Fulcrum(fulcrum::runtime::Runtime),
    Tokio(tokio::runtime::Runtime),
    Threads(ThreadServer),
}

impl Running {
    /// Connections per worker as the server itself counts them: the
    /// `Serving`'s counts in the balance modes, else the handlers' own
    /// (empty for the thread-per-connection server).
    pub fn conns_per_worker(&self, st: &Stats) -> Vec<u64> {
        match self {
            Running::Balanced { serving, .. } => serving.handled_per_worker(),
            Running::Threads(_) => Vec::new(),
            _ => st.conns.iter().map(|c| c.load(Relaxed)).collect(),
        }
    }

    /// The Fulcrum runtime's metrics, if this is a Fulcrum server.
    pub fn metrics(&self) -> Option<fulcrum::runtime::RuntimeMetrics> {
        match self {
            Running::Balanced { rt, .. } | Running::Fulcrum(rt) => Some(rt.handle().metrics()),
            _ => None,
        }
    }

    pub fn shutdown(self) {
        match self {
            Running::Balanced { rt, serving } => {
                drop(serving);
                rt.shutdown_timeout(Duration::from_secs(2));
            }
            Running::Fulcrum(rt) => rt.shutdown_timeout(Duration::from_secs(2)),
            Running::Tokio(rt) => rt.shutdown_timeout(Duration::from_secs(2)),
            Running::Threads(t) => t.stop(),
        }
    }
}

fn fulcrum_rt(
    workers: usize,
    scheduler: fulcrum::runtime::Scheduler,
) -> std::io::Result<fulcrum::runtime::Runtime> {
    tune(
        fulcrum::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .scheduler(scheduler)
            .dlb_backend(fulcrum::dlb::Backend::Software)
            .enable_all(),
    )
    .build()
}

/// A plain accept loop that spawns one task per connection: tokio's
/// idiom, on Fulcrum.
fn fulcrum_accept_loop(
    scheduler: fulcrum::runtime::Scheduler,
    workers: usize,
    st: Arc<Stats>,
) -> std::io::Result<(Running, SocketAddr)> {
    let rt = fulcrum_rt(workers, scheduler)?;
    let listener = rt.block_on(fulcrum::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    drop(rt.spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    drop(fulcrum::spawn(conn_loop(s, st.clone(), fulcrum_worker)));
                }
                Err(_) => {
                    st.accept_errors.fetch_add(1, Relaxed);
                    fulcrum::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }));
    Ok((Running::Fulcrum(rt), addr))
}

/// Starts `system` with `workers` workers on a loopback port.
pub fn start(
    system: &str,
    workers: usize,
    st: Arc<Stats>,
) -> std::io::Result<(Running, SocketAddr)> {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let balance = match system {
        "fulcrum-dlb" => Some(Balance::Dlb),
        "fulcrum-exact" => Some(Balance::Exact),
        "fulcrum-reuseport" => Some(Balance::Reuseport),
        "fulcrum-race" => Some(Balance::AcceptRace),
        _ => None,
    };
    if let Some(balance) = balance {
        let rt = fulcrum_rt(workers, fulcrum::runtime::Scheduler::Dlb)?;
        let serving = rt.block_on(async move {
            Server::bind(loopback)
                .balance(balance)
                .serve(move |s: fulcrum::net::TcpStream, _| {
                    let st = st.clone();
                    async move {
                        let _ = s.set_nodelay(true);
                        conn_loop(s, st, fulcrum_worker).await;
                    }
                })
                .await
        })?;
        let addr = serving.local_addr();
        return Ok((Running::Balanced { rt, serving }, addr));
    }
    match system {
        "fulcrum-spawn" => fulcrum_accept_loop(fulcrum::runtime::Scheduler::Dlb, workers, st),
        "fulcrum-stealing" => {
            fulcrum_accept_loop(fulcrum::runtime::Scheduler::WorkStealing, workers, st)
        }
        "tokio" => {
            let next = Arc::new(AtomicUsize::new(0));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .on_thread_start(move || {
                    let i = next.fetch_add(1, Relaxed);
                    TOKIO_WORKER.with(|w| w.set(Some(i)));
                })
                .enable_all()
                .build()?;
            let listener = rt.block_on(tokio::net::TcpListener::bind(loopback))?;
            let addr = listener.local_addr()?;
            drop(rt.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            drop(tokio::spawn(conn_loop(s, st.clone(), tokio_worker)));
                        }
                        Err(_) => {
                            // No tokio timer in this build: yield and retry.
                            st.accept_errors.fetch_add(1, Relaxed);
                            tokio::task::yield_now().await;
                        }
                    }
                }
            }));
            Ok((Running::Tokio(rt), addr))
        }
        "threads" => {
            let t = ThreadServer::start(st)?;
            let addr = t.addr;
            Ok((Running::Threads(t), addr))
        }
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("unknown system {other}"),
        )),
    }
}

/// One OS thread per connection, blocking sockets: the kernel's scheduler
/// alone decides who runs.
pub struct ThreadServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl ThreadServer {
    fn start(st: Arc<Stats>) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let acceptor = std::thread::Builder::new()
            .name("threads-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Relaxed) {
                        return;
                    }
                    let Ok(s) = conn else {
                        st.accept_errors.fetch_add(1, Relaxed);
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    };
                    let st = st.clone();
                    let spawned = std::thread::Builder::new()
                        .name("threads-conn".into())
                        .stack_size(128 * 1024)
                        .spawn(move || thread_conn(s, &st));
                    if spawned.is_err() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })?;
        Ok(Self {
            addr,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// Stops accepting (connection threads end when their clients close).
    fn stop(mut self) {
        self.stop.store(true, Relaxed);
        // Wake the acceptor with one last connection.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn thread_conn(mut s: std::net::TcpStream, st: &Stats) {
    st.accepted.fetch_add(1, Relaxed);
    let _ = s.set_nodelay(true);
    let mut req = [0u8; 8];
    loop {
        if let Err(e) = s.read_exact(&mut req) {
            st.end_of(&e);
            return;
        }
        let (cost, block) = decode(req);
        work(cost, block);
        if s.write_all(&req).is_err() {
            st.errors.fetch_add(1, Relaxed);
            return;
        }
        st.requests.fetch_add(1, Relaxed);
    }
}

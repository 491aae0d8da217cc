//! Fulcrum: a multi-threaded async runtime whose workers hand work to each
//! other only through a load-balancing queue with the semantics of Intel
//! DLB's unordered queues (the DLB hardware where present, a lock-free
//! software emulation elsewhere), never by stealing.
//!
//! The paths mirror tokio's: for the APIs in the table under [Porting a
//! tokio application](#porting-a-tokio-application), a tokio application
//! ports by changing `tokio::` to `fulcrum::`. What renaming does not cover
//! (`axum::serve`, hyper-util's client, libraries that call tokio's runtime
//! themselves, and a few APIs) is listed there too. A TCP echo server, and
//! a client to try it:
//!
//! ```
//! use fulcrum::io::{AsyncReadExt, AsyncWriteExt};
//! use fulcrum::net::{TcpListener, TcpStream};
//!
//! #[fulcrum::main]
//! async fn main() -> std::io::Result<()> {
//!     let listener = TcpListener::bind("127.0.0.1:0").await?;
//!     let addr = listener.local_addr()?;
//!     fulcrum::spawn(async move {
//!         while let Ok((mut conn, _peer)) = listener.accept().await {
//!             // Each connection's task lands where the DLB arbiter puts it.
//!             fulcrum::spawn(async move {
//!                 let (mut rd, mut wr) = conn.split();
//!                 fulcrum::io::copy(&mut rd, &mut wr).await
//!             });
//!         }
//!     });
//!     let mut client = TcpStream::connect(addr).await?;
//!     client.write_all(b"ping").await?;
//!     let mut buf = [0u8; 4];
//!     client.read_exact(&mut buf).await?;
//!     assert_eq!(&buf, b"ping");
//!     Ok(())
//! }
//! ```
//!
//! Building a runtime by hand, tokio's way:
//!
//! ```
//! use std::time::Duration;
//!
//! let rt = fulcrum::runtime::Builder::new_multi_thread().worker_threads(2).build()?;
//! let total = rt.block_on(async {
//!     let mut set = fulcrum::task::JoinSet::new();
//!     for i in 0..10u64 {
//!         set.spawn(async move {
//!             fulcrum::time::sleep(Duration::from_millis(i)).await;
//!             i
//!         });
//!     }
//!     let mut total = 0;
//!     while let Some(done) = set.join_next().await {
//!         total += done.expect("task panicked");
//!     }
//!     total
//! });
//! assert_eq!(total, 45);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # What is here
//! - [`runtime`]: [`Builder`](runtime::Builder), [`Runtime`](runtime::Runtime),
//!   [`Handle`](runtime::Handle) (with `block_on`), the schedulers, and
//!   [`RuntimeMetrics`](runtime::RuntimeMetrics) with tokio's method names.
//! - [`spawn`], [`task`] (`JoinHandle`, `JoinSet`, `spawn_blocking`,
//!   `yield_now`, `LocalSet`/`spawn_local`, `id`/`try_id`, `LocalKey`),
//!   [`task_local!`], [`time`] (`sleep`, `timeout`, `interval`, `Instant`,
//!   paused time: `pause`, `resume`, `advance`).
//! - [`io`] and [`sync`]: tokio's runtime-agnostic I/O traits and
//!   synchronisation primitives, re-exported (no tokio runtime is linked),
//!   and the process's standard streams (`io::stdin`, `stdout`, `stderr`).
//! - [`fs`] (on the blocking pool) and [`process`] (children reaped by the
//!   runtime, through pidfds in the reactor).
//! - [`select!`], [`join!`], [`try_join!`], [`pin!`]: tokio's macros,
//!   re-exported; they run on any executor.
//! - [`net`]: TCP (`TcpListener`, `TcpStream` and its `tcp` halves,
//!   `TcpSocket`), UDP and Unix sockets, `lookup_host`, and balanced
//!   serving; [`signal`]: `ctrl_c` and Unix signals.
//! - [`dlb`]: the load-balancing queue itself.
//! - `http` (feature `http`; `axum` for axum's `Router` and `ConnectInfo`):
//!   `serve` with the shape of `axum::serve`, `serve_balanced`, and a
//!   `Connector` for hyper-util's client; `tokio_compat` (feature
//!   `tokio-compat`, off by default) for libraries that call tokio's
//!   runtime themselves. See `docs/porting.md`.
//!
//! - [`main`] and [`test`]: `#[fulcrum::main]` and `#[fulcrum::test]`, with
//!   tokio's options as aliases (`flavor`, `worker_threads`,
//!   `start_paused`) besides `workers`, `scheduler = "dlb" | "stealing" |
//!   "current"` and `dlb = "auto" | "soft" | "hw"`. `#[fulcrum::test]`
//!   defaults to the DLB scheduler with 2 workers, so tests exercise the
//!   real handoff path (`start_paused = true` selects the current-thread
//!   runtime, as tokio's test default).
//!
//! # Porting a tokio application
//! Renaming `tokio` to `fulcrum` in paths is enough for the APIs below
//! (`tests/ported_from_tokio_apis.rs` holds programs ported that way):
//!
//! | tokio | Fulcrum |
//! |---|---|
//! | `#[tokio::main]`, `#[tokio::test]` (`flavor`, `worker_threads`, `start_paused`) | the same options; a test's default runtime is DLB with 2 workers |
//! | `runtime::{Builder, Runtime, Handle}`, `Handle::block_on`, `enter`, `spawn_blocking`, `Builder::start_paused` | the same |
//! | `RuntimeMetrics`: `num_workers`, `num_alive_tasks`, `global_queue_depth`, `worker_park_count`, `worker_park_unpark_count`, `worker_total_busy_duration`, and the unstable `worker_poll_count`, `worker_local_queue_depth`, `worker_steal_count`, `spawned_tasks_count` | the same names; the global queue is the DLB queue |
//! | `spawn`, `task::{JoinHandle, JoinSet, AbortHandle, JoinError, Id, id, try_id, yield_now, spawn_blocking}` | the same |
//! | `task::block_in_place` | the same; the blocked worker's queued tasks and ready I/O go to other workers through the DLB queue; panics on the current-thread runtime, as tokio's |
//! | `io::unix::{AsyncFd, AsyncFdReadyGuard, AsyncFdReadyMutGuard, TryIoError}`, `io::{Interest, Ready}` | the same (`T: AsFd`, which std's and mio's types implement); the fd follows its task between workers |
//! | `task::{LocalSet, spawn_local, LocalEnterGuard}`, `task_local!`, `task::LocalKey`, `task::futures::TaskLocalFuture` | the same |
//! | `time::{sleep, sleep_until, timeout, timeout_at, interval, interval_at, Instant, Sleep, Interval, MissedTickBehavior, error::Elapsed, pause, resume, advance}` | the same; pausing needs the current-thread runtime, as in tokio |
//! | `net::{TcpListener, TcpStream, TcpSocket, UdpSocket, UnixListener, UnixStream, UnixDatagram, lookup_host, ToSocketAddrs}`, `net::tcp::*` and `net::unix::*` halves | the same; host names resolve on the blocking pool |
//! | `fs::*` (functions, `File`, `OpenOptions`, `DirBuilder`, `ReadDir`, `DirEntry`) | the same, on the blocking pool |
//! | `process::{Command, Child, ChildStdin, ChildStdout, ChildStderr}` | the same |
//! | `io::{stdin, stdout, stderr}`, the `io-util` traits and helpers, `sync::*`, `select!`, `join!`, `try_join!`, `pin!`, `signal::{ctrl_c, unix}` | the same |
//!
//! What renaming does not cover (`docs/porting.md` has the whole table):
//! - The `tokio` dependency itself: replace it with `fulcrum` and its
//!   features (`http`, `axum`, `hyper`, `tokio-compat`) in `Cargo.toml`.
//! - Serving: `axum::serve` spawns on tokio and panics on Fulcrum; call
//!   `fulcrum::http::serve` (feature `http`), which has its shape.
//! - hyper-util's legacy `Client`: its `HttpConnector`, `TokioExecutor` and
//!   `TokioTimer` need tokio; use `fulcrum::http::Connector` with
//!   `FulcrumExecutor` and `FulcrumTimer` (hyper-rustls wraps the
//!   connector; tonic clients use such a `Client`, not
//!   `tonic::transport::Channel`).
//! - Libraries that call tokio's runtime themselves (reqwest, sqlx's
//!   `runtime-tokio`, redis's `tokio-comp`; tower's `timeout`,
//!   `limit::rate`, `retry` backoff, `hedge`, `buffer` and `spawn_ready`;
//!   tower-http's `timeout` and `ServeDir`):
//!   they need feature `tokio-compat` (their I/O and timers then run on one
//!   tokio thread, off the DLB workers) or a runtime-agnostic alternative.
//! - Not supported: axum's `WebSocketUpgrade` and `Sse::keep_alive` (they
//!   spawn and sleep on tokio: upgrade through hyper and tokio-tungstenite
//!   instead), tokio-util's `DelayQueue` and `TaskTracker::spawn`, and the
//!   grpc-timeout header of a tonic server served by `fulcrum::http::serve`
//!   (not enforced).
//!
//! Not there among tokio's own APIs, and why:
//! - Pausing the clock of a multi-thread runtime: refused, as by tokio (a
//!   worker cannot tell that the whole runtime is idle).
//! - tokio's own `net::unix::SocketAddr` type: Fulcrum returns std's
//!   `std::os::unix::net::SocketAddr` (same `is_unnamed`/`as_pathname`).
//! - `Handle::runtime_flavor`, `task::unconstrained`,
//!   `task::consume_budget`, the unstable metrics beyond those above, and
//!   the `*_timeout` methods of `sync` (they need tokio's timer): not
//!   provided yet; use [`Handle::is_current_thread`](runtime::Handle::is_current_thread)
//!   and [`time::timeout`].
//! - Differences in behaviour: `fs` and `process` calls outside a runtime
//!   return an error instead of panicking; `LocalKey::get` needs `Clone`,
//!   not `Copy`; `Builder::start_paused(true)` on a multi-thread builder is
//!   a build error instead of a panic; `RuntimeMetrics`'s public fields are
//!   a snapshot (tokio's type has none), its methods read live counters.

pub use fulcrum_dlb as dlb;
pub use fulcrum_macros::{main, test};
/// Signals: `ctrl_c()` and `unix::signal(SignalKind)`, with tokio's paths.
pub use fulcrum_net::signal;
pub use fulcrum_runtime::{spawn, task_local, time};

/// Sockets, tokio's `net` module (`fulcrum-net`): besides tokio's names
/// (`TcpListener`, `TcpStream` and the [`net::tcp`] halves, `UdpSocket`,
/// the [`net::unix`] sockets, `lookup_host`, `ToSocketAddrs`), Fulcrum's
/// balanced serving (`Server`, `Balance`) and, with the `hyper` feature,
/// `net::hyper`. Host names are resolved on the blocking pool.
pub use fulcrum_net as net;

/// The web stack on Fulcrum (feature `http`): [`serve`](http::serve), with
/// the shape of `axum::serve` (feature `axum` for axum's `Router` and
/// `ConnectInfo`), HTTP/1.1 and HTTP/2 on one port with every connection
/// placed by the DLB queue; [`serve_balanced`](http::serve_balanced) on a
/// [`Server`](net::Server) with a [`Balance`](net::Balance) mode; and
/// [`Connector`](http::Connector) with [`FulcrumExecutor`](http::FulcrumExecutor)
/// and [`FulcrumTimer`](http::FulcrumTimer) for hyper-util's `Client`
/// (hyper-rustls, tonic clients). See `docs/porting.md`.
#[cfg(feature = "http")]
pub mod http {
    pub use fulcrum_net::http::*;
}

/// Feature `tokio-compat` (off by default): every Fulcrum thread has
/// entered the handle of a small tokio runtime, so that libraries calling
/// tokio's runtime themselves (reqwest, sqlx's `runtime-tokio`) work in
/// Fulcrum tasks; their I/O and timers run on tokio's driver thread, off
/// the DLB workers. [`handle`](tokio_compat::handle) spawns on it.
#[cfg(feature = "tokio-compat")]
pub mod tokio_compat {
    pub use fulcrum_runtime::tokio_compat::*;
}

/// Files and directories, tokio's `fs` module, on the blocking pool.
pub mod fs {
    pub use fulcrum_net::fs::*;
}

/// Child processes, tokio's `process` module, reaped by the runtime.
pub mod process {
    pub use fulcrum_net::process::*;
}

/// What `#[fulcrum::main]` and `#[fulcrum::test]` expand to. Not a public
/// API: kept stable for the macros only.
#[doc(hidden)]
pub mod __private {
    pub use fulcrum_dlb::Backend;
    pub use fulcrum_runtime::{Builder, Scheduler};
}

/// Runtime construction and control: tokio's `runtime` module.
pub mod runtime {
    pub use fulcrum_runtime::{
        Builder, ConnectionGuard, EnterGuard, Handle, Runtime, RuntimeMetrics, Scheduler,
        TryCurrentError, WorkerMetrics,
    };
}

/// Tasks: tokio's `task` module.
pub mod task {
    pub use fulcrum_runtime::task::{
        block_in_place, futures, id, spawn_local, try_id, AbortHandle, AccessError, Id, JoinError,
        JoinHandle, JoinSet, LocalEnterGuard, LocalKey, LocalSet,
    };
    pub use fulcrum_runtime::{spawn, spawn_blocking, yield_now};
}

/// tokio's runtime-agnostic I/O traits and helpers (`AsyncRead`,
/// `AsyncWrite`, `AsyncReadExt`, `AsyncWriteExt`, `ReadBuf`, `copy`,
/// `split`, ...), which Fulcrum's sockets implement, and the process's
/// standard streams ([`stdin`](io::stdin), [`stdout`](io::stdout),
/// [`stderr`](io::stderr)) on the blocking pool.
pub mod io {
    pub use fulcrum_net::{stderr, stdin, stdout, Stderr, Stdin, Stdout};
    pub use fulcrum_runtime::io::{Interest, Ready};
    pub use tokio::io::*;

    /// Unix-specific I/O, with tokio's paths: [`AsyncFd`](unix::AsyncFd)
    /// waits for any fd-backed object on the runtime's reactors.
    pub mod unix {
        pub use fulcrum_runtime::io::unix::*;
    }
}

/// tokio's runtime-agnostic synchronisation primitives (`mpsc`, `oneshot`,
/// `Mutex`, `Notify`, `Semaphore`, `watch`, `broadcast`, ...). They work on
/// Fulcrum unchanged; for timeouts use [`time::timeout`].
pub mod sync {
    pub use tokio::sync::*;
}

pub use tokio::{join, pin, select, try_join};

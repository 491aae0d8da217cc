//! Fulcrum: a multi-threaded async runtime whose workers hand work to each
//! other only through a load-balancing queue with the semantics of Intel
//! DLB's unordered queues (the DLB hardware where present, a lock-free
//! software emulation elsewhere), never by stealing.
//!
//! The paths mirror tokio's, so that a tokio application ports by changing
//! `tokio::` to `fulcrum::`. A TCP echo server, and a client to try it:
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
//!   [`Handle`](runtime::Handle), the schedulers and metrics.
//! - [`spawn`], [`task`] (`JoinHandle`, `JoinSet`, `spawn_blocking`,
//!   `yield_now`), [`time`] (`sleep`, `timeout`, `interval`).
//! - [`io`] and [`sync`]: tokio's runtime-agnostic I/O traits and
//!   synchronisation primitives, re-exported (no tokio runtime is linked).
//! - [`select!`], [`join!`], [`try_join!`], [`pin!`]: tokio's macros,
//!   re-exported; they run on any executor.
//! - [`net`]: TCP (`TcpListener`, `TcpStream`, `TcpSocket`), UDP and Unix
//!   sockets, and balanced serving; [`signal`]: `ctrl_c` and Unix signals.
//! - [`dlb`]: the load-balancing queue itself.
//!
//! - [`main`] and [`test`]: `#[fulcrum::main]` and `#[fulcrum::test]`, with
//!   tokio's options as aliases (`flavor`, `worker_threads`) besides
//!   `workers`, `scheduler = "dlb" | "stealing" | "current"` and
//!   `dlb = "auto" | "soft" | "hw"`. `#[fulcrum::test]` defaults to the DLB
//!   scheduler with 2 workers, so tests exercise the real handoff path.

pub use fulcrum_dlb as dlb;
pub use fulcrum_macros::{main, test};
pub use fulcrum_net as net;
/// Signals: `ctrl_c()` and `unix::signal(SignalKind)`, with tokio's paths.
pub use fulcrum_net::signal;
pub use fulcrum_runtime::{spawn, time};

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
    pub use fulcrum_runtime::task::{AbortHandle, Id, JoinError, JoinHandle, JoinSet};
    pub use fulcrum_runtime::{spawn, spawn_blocking, yield_now};
}

/// tokio's runtime-agnostic I/O traits and helpers (`AsyncRead`,
/// `AsyncWrite`, `AsyncReadExt`, `AsyncWriteExt`, `ReadBuf`, `copy`,
/// `split`, ...), which Fulcrum's sockets implement.
pub mod io {
    pub use tokio::io::*;
}

/// tokio's runtime-agnostic synchronisation primitives (`mpsc`, `oneshot`,
/// `Mutex`, `Notify`, `Semaphore`, `watch`, `broadcast`, ...). They work on
/// Fulcrum unchanged; for timeouts use [`time::timeout`](crate::time::timeout).
pub mod sync {
    pub use tokio::sync::*;
}

pub use tokio::{join, pin, select, try_join};

//! hyper 1.x on Fulcrum (feature `hyper`).
//!
//! hyper is runtime-agnostic: it asks for an I/O type implementing its own
//! [`Read`](::hyper::rt::Read)/[`Write`](::hyper::rt::Write) traits, an
//! [`Executor`](::hyper::rt::Executor) for background tasks (HTTP/2
//! streams, client connection drivers) and a [`Timer`](::hyper::rt::Timer)
//! for its timeouts (`header_read_timeout`, keep-alive). This module gives
//! all three on Fulcrum, so neither hyper-util's `tokio` feature nor tokio's
//! runtime is needed:
//!
//! - [`HyperIo`] adapts any tokio-trait stream ([`TcpStream`](crate::TcpStream),
//!   a TLS stream, ...) to hyper's traits, and hyper's upgraded
//!   connections back to tokio's traits;
//! - [`FulcrumExecutor`] spawns on the current Fulcrum runtime;
//! - [`FulcrumTimer`] sleeps with Fulcrum's timers.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use fulcrum_net::hyper::{FulcrumTimer, HyperIo};
//!
//! # async fn serve(stream: fulcrum_net::TcpStream) {
//! let service = hyper::service::service_fn(|_req| async {
//!     Ok::<_, Infallible>(hyper::Response::new(String::from("hello")))
//! });
//! let conn = hyper::server::conn::http1::Builder::new()
//!     .timer(FulcrumTimer::new())
//!     .serve_connection(HyperIo::new(stream), service);
//! if let Err(e) = conn.await {
//!     eprintln!("connection: {e}");
//! }
//! # }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fulcrum_runtime::time::{self, Sleep};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Adapts a stream between tokio's I/O traits and hyper's.
///
/// `HyperIo<T>` implements hyper's `Read`/`Write` when `T` implements
/// tokio's `AsyncRead`/`AsyncWrite`, and the other way round, so it also
/// turns hyper's `Upgraded` into a tokio-trait stream.
#[derive(Debug)]
pub struct HyperIo<T> {
    inner: T,
}

impl<T> HyperIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self { inner }
    }

    /// The wrapped stream.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The wrapped stream, mutably.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> T {
        self.inner
    }

    fn pin_inner(self: Pin<&mut Self>) -> Pin<&mut T> {
        // SAFETY: structural pinning of the only field: `HyperIo` never moves
        // `inner` out of a pinned `self` (the by-value accessors need an
        // unpinned `self`), has no `Drop` impl, and is `Unpin` only when `T`
        // is (the auto trait follows the field).
        unsafe { self.map_unchecked_mut(|s| &mut s.inner) }
    }
}

impl<T: AsyncRead> ::hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ::hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: `ReadBuf::uninit` only writes initialised bytes into the
        // slice and never de-initialises any; the slice is the cursor's
        // unfilled part, which is all we hand out.
        let filled = unsafe {
            let mut tbuf = ReadBuf::uninit(buf.as_mut());
            match self.pin_inner().poll_read(cx, &mut tbuf) {
                Poll::Ready(Ok(())) => tbuf.filled().len(),
                other => return other,
            }
        };
        // SAFETY: the first `filled` bytes of the unfilled part were written
        // (and so initialised) by the inner reader, as `ReadBuf` records.
        unsafe { buf.advance(filled) };
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite> ::hyper::rt::Write for HyperIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.pin_inner().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.pin_inner().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.pin_inner().poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.pin_inner().poll_write_vectored(cx, bufs)
    }
}

impl<T: ::hyper::rt::Read> AsyncRead for HyperIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        tbuf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = tbuf.filled().len();
        let n = {
            // SAFETY: hyper's `ReadBuf` over the unfilled part only ever
            // writes initialised bytes and reports how many it filled; it
            // never de-initialises memory.
            let mut hbuf = ::hyper::rt::ReadBuf::uninit(unsafe { tbuf.unfilled_mut() });
            match ::hyper::rt::Read::poll_read(self.pin_inner(), cx, hbuf.unfilled()) {
                Poll::Ready(Ok(())) => hbuf.filled().len(),
                other => return other,
            }
        };
        // SAFETY: the inner reader initialised the first `n` bytes of the
        // unfilled part (hyper's `ReadBuf` tracked them).
        unsafe { tbuf.assume_init(before + n) };
        tbuf.set_filled(before + n);
        Poll::Ready(Ok(()))
    }
}

impl<T: ::hyper::rt::Write> AsyncWrite for HyperIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ::hyper::rt::Write::poll_write(self.pin_inner(), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ::hyper::rt::Write::poll_flush(self.pin_inner(), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ::hyper::rt::Write::poll_shutdown(self.pin_inner(), cx)
    }

    fn is_write_vectored(&self) -> bool {
        ::hyper::rt::Write::is_write_vectored(&self.inner)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ::hyper::rt::Write::poll_write_vectored(self.pin_inner(), cx, bufs)
    }
}

/// hyper's [`Executor`](::hyper::rt::Executor) on Fulcrum: each future is
/// spawned on the current runtime (through the DLB queue when the
/// scheduler places it there, as any [`spawn`](fulcrum_runtime::spawn)).
///
/// # Panics
/// `execute` panics if called outside a Fulcrum runtime, as `spawn` does.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct FulcrumExecutor;

impl FulcrumExecutor {
    /// The executor.
    pub fn new() -> Self {
        Self
    }
}

impl<F> ::hyper::rt::Executor<F> for FulcrumExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        drop(fulcrum_runtime::spawn(fut));
    }
}

/// hyper's [`Timer`](::hyper::rt::Timer) on Fulcrum's timers.
///
/// The sleeps register with the timer wheel of the worker that first polls
/// them, like every Fulcrum [`Sleep`].
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct FulcrumTimer;

impl FulcrumTimer {
    /// The timer.
    pub fn new() -> Self {
        Self
    }
}

/// A Fulcrum [`Sleep`] as hyper's [`Sleep`](::hyper::rt::Sleep).
#[derive(Debug)]
struct HyperSleep(Sleep);

impl Future for HyperSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl ::hyper::rt::Sleep for HyperSleep {}

impl ::hyper::rt::Timer for FulcrumTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn ::hyper::rt::Sleep>> {
        Box::pin(HyperSleep(time::sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn ::hyper::rt::Sleep>> {
        Box::pin(HyperSleep(time::sleep_until(deadline.into())))
    }

    /// The runtime's clock (paused with it, in a paused test).
    fn now(&self) -> Instant {
        time::Instant::now().into_std()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn ::hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<HyperSleep>() {
            Some(ours) => Pin::new(&mut ours.get_mut().0).reset(new_deadline.into()),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

//! [`AsyncFd`]: an fd that Fulcrum's reactors wait on, with tokio's API
//! (`tokio::io::unix::AsyncFd`).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::task::{Context, Poll};

use super::registration::Registration;
use super::scheduled::{Direction, Ready, ReadyEvent};
use super::Interest;

/// Owns an fd-backed I/O object (`T`) and lets tasks wait for it to become
/// readable or writable on the runtime's reactors, as tokio's `AsyncFd`.
///
/// The fd must be non-blocking, and `T` must keep it open for as long as
/// it lives (the [`AsFd`] contract). Dropping the `AsyncFd` (or
/// [`into_inner`](Self::into_inner)) removes the fd from its reactor before
/// `T` is dropped, so no readiness event can name it afterwards.
///
/// The fd is registered with the reactor of the thread that creates the
/// `AsyncFd` ([`new`](Self::new)) or, for [`unregistered`](Self::unregistered),
/// of the first thread that waits on it. When a task waits on it from
/// another runtime thread (a task handed to another worker), the
/// registration moves to that thread's reactor, at most once a
/// millisecond, so that its readiness is dispatched where the task runs.
///
/// ```
/// use std::io::Read;
/// use std::os::unix::net::UnixStream;
/// use fulcrum_runtime::io::{unix::AsyncFd, Interest};
///
/// let rt = fulcrum_runtime::Runtime::new()?;
/// rt.block_on(async {
///     let (a, mut b) = UnixStream::pair()?;
///     a.set_nonblocking(true)?;
///     let a = AsyncFd::with_interest(a, Interest::READABLE)?;
///     std::io::Write::write_all(&mut b, b"hi")?;
///     let mut buf = [0u8; 2];
///     let n = a.async_io(Interest::READABLE, |mut s| s.read(&mut buf)).await?;
///     assert_eq!(&buf[..n], b"hi");
///     Ok::<(), std::io::Error>(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct AsyncFd<T: AsFd> {
    reg: Registration,
    inner: Option<T>,
}

/// The error of a guard's `try_io` when the operation would block: the
/// readiness was cleared and the caller should wait again.
#[derive(Debug)]
pub struct TryIoError(());

impl fmt::Display for TryIoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the I/O operation would block")
    }
}

impl std::error::Error for TryIoError {}

fn direction_of(interest: Interest) -> Direction {
    if interest.is_readable() {
        Direction::Read
    } else {
        Direction::Write
    }
}

impl<T: AsFd> AsyncFd<T> {
    /// Registers `inner` for reading and writing with the calling thread's
    /// reactor.
    ///
    /// # Errors
    /// Outside a Fulcrum runtime thread (a worker, or inside `block_on`),
    /// or the OS error of `epoll_ctl`: `ENOSPC` once the kernel's epoll
    /// limit (`fs.epoll.max_user_watches`) is reached, since the runtime
    /// itself bounds nothing (see [the module docs](crate::io)).
    pub fn new(inner: T) -> io::Result<Self> {
        Self::with_interest(inner, Interest::READABLE | Interest::WRITABLE)
    }

    /// Registers `inner` for `interest` with the calling thread's reactor.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_interest(inner: T, interest: Interest) -> io::Result<Self> {
        let fd = Self::unregistered(inner, interest);
        fd.reg.register_now()?;
        Ok(fd)
    }

    /// Wraps `inner` without registering it yet: it is registered with the
    /// reactor of the first runtime thread that waits on it, so it may be
    /// created anywhere (Fulcrum's sockets are made this way). Not in
    /// tokio.
    pub fn unregistered(inner: T, interest: Interest) -> Self {
        let fd = inner.as_fd().as_raw_fd();
        Self {
            reg: Registration::lazy(fd, interest),
            inner: Some(inner),
        }
    }

    /// The inner object.
    pub fn get_ref(&self) -> &T {
        self.inner
            .as_ref()
            .expect("the inner object lives until drop")
    }

    /// The inner object, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner
            .as_mut()
            .expect("the inner object lives until drop")
    }

    /// Deregisters the fd and gives the inner object back.
    pub fn into_inner(mut self) -> T {
        self.reg.deregister();
        self.inner
            .take()
            .expect("the inner object lives until drop")
    }

    /// The worker whose reactor the fd is registered with now (`None`: a
    /// `block_on` thread's, or not registered yet). Not in tokio.
    pub fn worker(&self) -> Option<usize> {
        self.reg.worker()
    }

    fn poll_guard(&self, cx: &mut Context<'_>, dir: Direction) -> Poll<io::Result<ReadyEvent>> {
        self.reg.poll_ready(cx, dir)
    }

    /// Polls for read readiness.
    ///
    /// # Errors
    /// If the fd cannot be registered (outside a runtime thread).
    pub fn poll_read_ready<'a>(
        &'a self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<AsyncFdReadyGuard<'a, T>>> {
        self.poll_guard(cx, Direction::Read)
            .map_ok(|event| AsyncFdReadyGuard {
                fd: self,
                event: Some(event),
            })
    }

    /// Polls for write readiness.
    ///
    /// # Errors
    /// As [`poll_read_ready`](Self::poll_read_ready).
    pub fn poll_write_ready<'a>(
        &'a self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<AsyncFdReadyGuard<'a, T>>> {
        self.poll_guard(cx, Direction::Write)
            .map_ok(|event| AsyncFdReadyGuard {
                fd: self,
                event: Some(event),
            })
    }

    /// Polls for read readiness, with a guard giving mutable access.
    ///
    /// # Errors
    /// As [`poll_read_ready`](Self::poll_read_ready).
    pub fn poll_read_ready_mut<'a>(
        &'a mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<AsyncFdReadyMutGuard<'a, T>>> {
        match self.poll_guard(cx, Direction::Read) {
            Poll::Ready(Ok(event)) => Poll::Ready(Ok(AsyncFdReadyMutGuard {
                fd: self,
                event: Some(event),
            })),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Polls for write readiness, with a guard giving mutable access.
    ///
    /// # Errors
    /// As [`poll_read_ready`](Self::poll_read_ready).
    pub fn poll_write_ready_mut<'a>(
        &'a mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<AsyncFdReadyMutGuard<'a, T>>> {
        match self.poll_guard(cx, Direction::Write) {
            Poll::Ready(Ok(event)) => Poll::Ready(Ok(AsyncFdReadyMutGuard {
                fd: self,
                event: Some(event),
            })),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Waits for any of `interest`; both interests wait for either.
    ///
    /// # Errors
    /// As [`poll_read_ready`](Self::poll_read_ready).
    pub async fn ready(&self, interest: Interest) -> io::Result<AsyncFdReadyGuard<'_, T>> {
        let event = std::future::poll_fn(|cx| {
            if interest.is_readable() {
                if let Poll::Ready(r) = self.poll_guard(cx, Direction::Read) {
                    return Poll::Ready(r);
                }
            }
            if interest.is_writable() {
                if let Poll::Ready(r) = self.poll_guard(cx, Direction::Write) {
                    return Poll::Ready(r);
                }
            }
            Poll::Pending
        })
        .await?;
        Ok(AsyncFdReadyGuard {
            fd: self,
            event: Some(event),
        })
    }

    /// Waits for any of `interest`, with a guard giving mutable access.
    ///
    /// # Errors
    /// As [`poll_read_ready`](Self::poll_read_ready).
    pub async fn ready_mut(
        &mut self,
        interest: Interest,
    ) -> io::Result<AsyncFdReadyMutGuard<'_, T>> {
        let event = self.ready(interest).await?.event;
        Ok(AsyncFdReadyMutGuard { fd: self, event })
    }

    /// Waits until readable.
    ///
    /// # Errors
    /// As [`poll_read_ready`](Self::poll_read_ready).
    pub async fn readable(&self) -> io::Result<AsyncFdReadyGuard<'_, T>> {
        self.ready(Interest::READABLE).await
    }

    /// Waits until writable.
    ///
    /// # Errors
    /// As [`poll_read_ready`](Self::poll_read_ready).
    pub async fn writable(&self) -> io::Result<AsyncFdReadyGuard<'_, T>> {
        self.ready(Interest::WRITABLE).await
    }

    /// Waits until readable, with a guard giving mutable access.
    ///
    /// # Errors
    /// As [`poll_read_ready`](Self::poll_read_ready).
    pub async fn readable_mut(&mut self) -> io::Result<AsyncFdReadyMutGuard<'_, T>> {
        self.ready_mut(Interest::READABLE).await
    }

    /// Waits until writable, with a guard giving mutable access.
    ///
    /// # Errors
    /// As [`poll_read_ready`](Self::poll_read_ready).
    pub async fn writable_mut(&mut self) -> io::Result<AsyncFdReadyMutGuard<'_, T>> {
        self.ready_mut(Interest::WRITABLE).await
    }

    /// Polls `f` until it does not return `WouldBlock`: the poll form of
    /// [`async_io`](Self::async_io) (not in tokio). Only the first of
    /// `interest`'s directions is waited on (readable if both).
    ///
    /// # Errors
    /// The error of `f`, or as [`poll_read_ready`](Self::poll_read_ready).
    pub fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        interest: Interest,
        mut f: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        let inner = self.get_ref();
        self.reg.poll_io(cx, direction_of(interest), || f(inner))
    }

    /// Waits for `interest` and runs `f`, again each time it returns
    /// `WouldBlock`. Only the first of `interest`'s directions is waited on
    /// (readable if both).
    ///
    /// # Errors
    /// The error of `f`, or as [`poll_read_ready`](Self::poll_read_ready).
    pub async fn async_io<R>(
        &self,
        interest: Interest,
        mut f: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        std::future::poll_fn(|cx| self.poll_io(cx, interest, &mut f)).await
    }

    /// Runs `f` once if the fd looks ready for `interest` (readable if
    /// both), else returns `WouldBlock`; a `WouldBlock` from `f` clears
    /// the readiness. For non-blocking `try_` operations.
    ///
    /// # Errors
    /// `WouldBlock`, the error of `f`, or as
    /// [`poll_read_ready`](Self::poll_read_ready).
    pub fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        let inner = self.get_ref();
        self.reg.try_io(direction_of(interest), || f(inner))
    }
}

impl<T: AsFd> AsRawFd for AsyncFd<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.get_ref().as_fd().as_raw_fd()
    }
}

impl<T: AsFd> AsFd for AsyncFd<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl<T: AsFd> Drop for AsyncFd<T> {
    fn drop(&mut self) {
        // Out of the reactor while the fd is still open; `inner` (which
        // closes it) drops after this.
        self.reg.deregister();
    }
}

impl<T: AsFd + fmt::Debug> fmt::Debug for AsyncFd<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncFd")
            .field("inner", &self.inner)
            .field("worker", &self.worker())
            .finish()
    }
}

/// Readiness of an [`AsyncFd`], returned by its `readable`/`writable`
/// methods: clear it when the operation would block.
pub struct AsyncFdReadyGuard<'a, T: AsFd> {
    fd: &'a AsyncFd<T>,
    event: Option<ReadyEvent>,
}

impl<'a, T: AsFd> AsyncFdReadyGuard<'a, T> {
    /// Clears the readiness this guard saw (unless newer readiness arrived
    /// since): the next wait waits for a new event.
    pub fn clear_ready(&mut self) {
        if let Some(ev) = self.event.take() {
            self.fd.reg.clear_readiness(ev);
        }
    }

    /// Keeps the readiness (the default when the guard drops).
    pub fn retain_ready(&mut self) {
        self.event = None;
    }

    /// The readiness seen.
    pub fn ready(&self) -> Ready {
        self.event.map_or(Ready::EMPTY, |e| e.ready)
    }

    /// Runs `f`; if it returns `WouldBlock`, clears the readiness and
    /// returns `Err(TryIoError)`.
    ///
    /// # Errors
    /// `TryIoError` when `f` would block.
    pub fn try_io<R>(
        &mut self,
        f: impl FnOnce(&'a AsyncFd<T>) -> io::Result<R>,
    ) -> Result<io::Result<R>, TryIoError> {
        match f(self.fd) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.clear_ready();
                Err(TryIoError(()))
            }
            res => Ok(res),
        }
    }

    /// The `AsyncFd`.
    pub fn get_ref(&self) -> &'a AsyncFd<T> {
        self.fd
    }

    /// The inner object.
    pub fn get_inner(&self) -> &'a T {
        self.fd.get_ref()
    }
}

impl<T: AsFd> fmt::Debug for AsyncFdReadyGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncFdReadyGuard")
            .field("ready", &self.ready())
            .finish()
    }
}

/// As [`AsyncFdReadyGuard`], with mutable access to the [`AsyncFd`].
pub struct AsyncFdReadyMutGuard<'a, T: AsFd> {
    fd: &'a mut AsyncFd<T>,
    event: Option<ReadyEvent>,
}

impl<T: AsFd> AsyncFdReadyMutGuard<'_, T> {
    /// Clears the readiness this guard saw (see
    /// [`AsyncFdReadyGuard::clear_ready`]).
    pub fn clear_ready(&mut self) {
        if let Some(ev) = self.event.take() {
            self.fd.reg.clear_readiness(ev);
        }
    }

    /// Keeps the readiness.
    pub fn retain_ready(&mut self) {
        self.event = None;
    }

    /// The readiness seen.
    pub fn ready(&self) -> Ready {
        self.event.map_or(Ready::EMPTY, |e| e.ready)
    }

    /// Runs `f`; if it returns `WouldBlock`, clears the readiness and
    /// returns `Err(TryIoError)`.
    ///
    /// # Errors
    /// `TryIoError` when `f` would block.
    pub fn try_io<R>(
        &mut self,
        f: impl FnOnce(&mut AsyncFd<T>) -> io::Result<R>,
    ) -> Result<io::Result<R>, TryIoError> {
        match f(self.fd) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.clear_ready();
                Err(TryIoError(()))
            }
            res => Ok(res),
        }
    }

    /// The `AsyncFd`.
    pub fn get_ref(&self) -> &AsyncFd<T> {
        self.fd
    }

    /// The `AsyncFd`, mutably.
    pub fn get_mut(&mut self) -> &mut AsyncFd<T> {
        self.fd
    }

    /// The inner object.
    pub fn get_inner(&self) -> &T {
        self.fd.get_ref()
    }

    /// The inner object, mutably.
    pub fn get_inner_mut(&mut self) -> &mut T {
        self.fd.get_mut()
    }
}

impl<T: AsFd> fmt::Debug for AsyncFdReadyMutGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncFdReadyMutGuard")
            .field("ready", &self.ready())
            .finish()
    }
}

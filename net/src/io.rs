//! What every socket type shares: [`Io`], a mio socket in an `AsyncFd`
//! registered on first use; the stream plumbing behind `AsyncRead` and
//! `AsyncWrite` (one implementation for TCP and Unix streams and their
//! halves, for tokio's traits and, with the `futures-io` feature, for
//! `futures_io`'s); and the error and address helpers.

use std::fmt;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};
use std::task::{Context, Poll};

use fulcrum_runtime::io::unix::{AsyncFd, AsyncFdReadyGuard};
use fulcrum_runtime::io::Interest;
use tokio::io::ReadBuf;

/// Which side of a socket an operation waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

impl Direction {
    fn interest(self) -> Interest {
        match self {
            Direction::Read => Interest::READABLE,
            Direction::Write => Interest::WRITABLE,
        }
    }
}

/// A mio socket in an [`AsyncFd`], registered on first use with the
/// reactor of the thread that polls it, and moved with its task (see
/// `fulcrum_runtime::io`).
pub(crate) struct Io<S: AsFd> {
    fd: AsyncFd<S>,
}

impl<S: AsFd> Io<S> {
    pub(crate) fn new(sock: S, interest: Interest) -> Self {
        Self {
            fd: AsyncFd::unregistered(sock, interest),
        }
    }

    /// The socket.
    pub(crate) fn sock(&self) -> &S {
        self.fd.get_ref()
    }

    /// Runs `f` when ready in `dir`, waiting again on `WouldBlock`.
    pub(crate) fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        dir: Direction,
        mut f: impl FnMut() -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        self.fd.poll_io(cx, dir.interest(), |_| f())
    }

    /// Polls for read readiness, for operations that need the guard.
    pub(crate) fn poll_read_ready<'a>(
        &'a self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<AsyncFdReadyGuard<'a, S>>> {
        self.fd.poll_read_ready(cx)
    }

    /// Waits for readiness in `dir` and returns its guard.
    pub(crate) async fn ready_guard(&self, dir: Direction) -> io::Result<AsyncFdReadyGuard<'_, S>> {
        self.fd.ready(dir.interest()).await
    }

    /// Waits for readiness in `dir` (for `readable`/`writable`).
    pub(crate) async fn ready(&self, dir: Direction) -> io::Result<()> {
        self.fd
            .ready(dir.interest())
            .await
            .map(|mut g| g.retain_ready())
    }

    /// Runs `f` once if the socket looks ready in `dir`, else `WouldBlock`
    /// (for the `try_` operations).
    pub(crate) fn try_io<R>(
        &self,
        dir: Direction,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        self.fd.try_io(dir.interest(), |_| f())
    }

    /// Deregisters the socket and gives it back (to hand the fd to
    /// someone else: a child process's stdio, say).
    pub(crate) fn into_inner(self) -> S {
        self.fd.into_inner()
    }
}

impl<S: AsFd> fmt::Debug for Io<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("fd", &self.fd.as_raw_fd())
            .field("worker", &self.fd.worker())
            .finish()
    }
}

/// Adds the address to an OS error, as in "bind 127.0.0.1:8080: Address
/// already in use".
pub(crate) fn with_addr(op: &str, addr: impl fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {addr}: {e}"))
}

/// A connected mio stream socket (TCP or Unix): what the shared
/// `AsyncRead`/`AsyncWrite` implementation needs of it.
pub(crate) trait StreamSocket: AsFd {
    /// A read into an initialized slice (`futures_io`'s shape; tokio's
    /// reads go through `read_uninit`).
    #[cfg(feature = "futures-io")]
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&self, buf: &[u8]) -> io::Result<usize>;
    fn write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
}

macro_rules! stream_socket {
    ($($ty:ty),*) => {$(
        impl StreamSocket for $ty {
            #[cfg(feature = "futures-io")]
            fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
                std::io::Read::read(&mut &*self, buf)
            }

            fn write(&self, buf: &[u8]) -> io::Result<usize> {
                Write::write(&mut &*self, buf)
            }

            fn write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
                Write::write_vectored(&mut &*self, bufs)
            }

            fn shutdown(&self, how: Shutdown) -> io::Result<()> {
                <$ty>::shutdown(self, how)
            }
        }
    )*};
}

stream_socket!(mio::net::TcpStream, mio::net::UnixStream);

pub(crate) fn poll_read<S: StreamSocket>(
    io: &Io<S>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    loop {
        let mut guard = match io.poll_read_ready(cx) {
            Poll::Ready(Ok(guard)) => guard,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let len = buf.remaining();
        match guard.try_io(|fd| read_uninit(fd.get_ref(), buf)) {
            Ok(Ok(n)) => {
                // A short read of a stream socket emptied its receive
                // queue: the next read would only return `EAGAIN`, so wait
                // for the next readiness edge instead of paying that system
                // call (a request/response connection reads once per
                // request, not twice). Readiness that arrived meanwhile has
                // a newer tick and is kept. tokio does the same on Linux.
                if n > 0 && n < len {
                    guard.clear_ready();
                }
                return Poll::Ready(Ok(()));
            }
            Ok(Err(e)) => return Poll::Ready(Err(e)),
            Err(_would_block) => continue,
        }
    }
}

/// One `read(2)` into the unfilled part of `buf`, which is not zeroed
/// first (a reader such as `read_buf` on a `BytesMut` hands over its whole
/// spare capacity, uninitialized, on every read: zeroing it would cost a
/// memset of that size per read). Marks the bytes read as filled.
fn read_uninit<S: StreamSocket>(sock: &S, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
    // SAFETY: nothing de-initializes bytes of `unfilled`: read(2) only
    // writes to it, at most `len` bytes, and no `&mut [u8]` over its
    // uninitialized bytes is ever formed (the kernel gets a raw pointer).
    let unfilled = unsafe { buf.unfilled_mut() };
    let (ptr, len) = (unfilled.as_mut_ptr().cast::<libc::c_void>(), unfilled.len());
    // SAFETY: `ptr` is valid for writes of `len` bytes (the unfilled part of
    // `buf`, borrowed mutably here), and the descriptor is the socket's,
    // open for as long as `sock` is borrowed.
    let n = unsafe { libc::read(sock.as_fd().as_raw_fd(), ptr, len) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: read(2) wrote (so initialized) the first `n` bytes of the
    // unfilled part.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(n)
}

/// Reads into a plain slice (the `futures_io::AsyncRead` shape).
#[cfg(feature = "futures-io")]
pub(crate) fn poll_read_slice<S: StreamSocket>(
    io: &Io<S>,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    io.poll_io(cx, Direction::Read, || io.sock().read(buf))
}

pub(crate) fn poll_write<S: StreamSocket>(
    io: &Io<S>,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    io.poll_io(cx, Direction::Write, || io.sock().write(buf))
}

pub(crate) fn poll_write_vectored<S: StreamSocket>(
    io: &Io<S>,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    io.poll_io(cx, Direction::Write, || io.sock().write_vectored(bufs))
}

pub(crate) fn shutdown_write<S: StreamSocket>(io: &Io<S>) -> Poll<io::Result<()>> {
    match io.sock().shutdown(Shutdown::Write) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
        _ => Poll::Ready(Ok(())),
    }
}

/// `AsyncRead` for a type whose stream `Io` is the expression `$io` of
/// `&$this`: tokio's, and `futures_io`'s with the `futures-io` feature.
macro_rules! impl_async_read {
    ($name:ident $(<$lt:lifetime>)?, $this:ident => $io:expr) => {
        impl$(<$lt>)? ::tokio::io::AsyncRead for $name$(<$lt>)? {
            fn poll_read(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut ::tokio::io::ReadBuf<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                let $this = &*self;
                $crate::io::poll_read($io, cx, buf)
            }
        }

        /// Reads from the socket; the same readiness and registration as
        /// tokio's `AsyncRead` on this type.
        #[cfg(feature = "futures-io")]
        impl$(<$lt>)? ::futures_io::AsyncRead for $name$(<$lt>)? {
            fn poll_read(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut [u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                let $this = &*self;
                $crate::io::poll_read_slice($io, cx, buf)
            }
        }
    };
}

/// `AsyncWrite` for a type whose stream `Io` is the expression `$io` of
/// `&$this`: tokio's, and `futures_io`'s with the `futures-io` feature.
/// Shutting it down (`poll_shutdown`, `poll_close`) shuts down the
/// stream's write side.
macro_rules! impl_async_write {
    ($name:ident $(<$lt:lifetime>)?, $this:ident => $io:expr) => {
        impl$(<$lt>)? ::tokio::io::AsyncWrite for $name$(<$lt>)? {
            fn poll_write(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                let $this = &*self;
                $crate::io::poll_write($io, cx, buf)
            }

            fn poll_write_vectored(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                let $this = &*self;
                $crate::io::poll_write_vectored($io, cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(
                self: ::std::pin::Pin<&mut Self>,
                _cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::task::Poll::Ready(Ok(()))
            }

            fn poll_shutdown(
                self: ::std::pin::Pin<&mut Self>,
                _cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                let $this = &*self;
                $crate::io::shutdown_write($io)
            }
        }

        /// Writes to the socket; closing shuts down its write side (the
        /// peer reads end-of-file). Writes are unbuffered, so flushing
        /// does nothing.
        #[cfg(feature = "futures-io")]
        impl$(<$lt>)? ::futures_io::AsyncWrite for $name$(<$lt>)? {
            fn poll_write(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                let $this = &*self;
                $crate::io::poll_write($io, cx, buf)
            }

            fn poll_write_vectored(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                let $this = &*self;
                $crate::io::poll_write_vectored($io, cx, bufs)
            }

            fn poll_flush(
                self: ::std::pin::Pin<&mut Self>,
                _cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::task::Poll::Ready(Ok(()))
            }

            fn poll_close(
                self: ::std::pin::Pin<&mut Self>,
                _cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                let $this = &*self;
                $crate::io::shutdown_write($io)
            }
        }
    };
}

/// The readiness and non-blocking connected-mode methods that the datagram
/// sockets (`UdpSocket`, `UnixDatagram`) share, for an `impl` block of a
/// type whose `io` field is an `Io` of a mio datagram socket.
macro_rules! datagram_readiness {
    () => {
        /// Waits until a datagram can be received.
        ///
        /// # Errors
        /// If the socket cannot be registered with the reactor.
        pub async fn readable(&self) -> io::Result<()> {
            self.io.ready(Direction::Read).await
        }

        /// Waits until a datagram can be sent.
        ///
        /// # Errors
        /// If the socket cannot be registered with the reactor.
        pub async fn writable(&self) -> io::Result<()> {
            self.io.ready(Direction::Write).await
        }

        /// Sends to the connected peer without waiting: `WouldBlock` if the
        /// socket is not ready.
        ///
        /// # Errors
        /// The OS error of `send`, or `WouldBlock`.
        pub fn try_send(&self, buf: &[u8]) -> io::Result<usize> {
            self.io
                .try_io(Direction::Write, || self.io.sock().send(buf))
        }

        /// Receives from the connected peer without waiting: `WouldBlock` if
        /// nothing is ready.
        ///
        /// # Errors
        /// The OS error of `recv`, or `WouldBlock`.
        pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
            self.io.try_io(Direction::Read, || self.io.sock().recv(buf))
        }
    };
}

pub(crate) use {datagram_readiness, impl_async_read, impl_async_write};

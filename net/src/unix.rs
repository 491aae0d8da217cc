//! Unix domain sockets: [`UnixListener`], [`UnixStream`] and its halves,
//! [`UnixDatagram`]. Their addresses are std's [`SocketAddr`].

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use fulcrum_runtime::io::Interest;

use crate::io::Direction;

use crate::io::{impl_async_read, impl_async_write, with_addr, Io};

/// A Unix stream listening socket.
///
/// The socket file stays behind when the listener is dropped: remove it
/// before binding the same path again.
pub struct UnixListener {
    io: Io<mio::net::UnixListener>,
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("addr", &self.io.sock().local_addr().ok())
            .field("fd", &self.io.sock().as_raw_fd())
            .finish()
    }
}

impl UnixListener {
    /// Binds to `path` and listens.
    ///
    /// # Errors
    /// The OS error, with the path: "bind /tmp/app.sock: Address in use".
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        let path = path.as_ref();
        let l =
            mio::net::UnixListener::bind(path).map_err(|e| with_addr("bind", path.display(), e))?;
        Ok(Self::from_mio(l))
    }

    fn from_mio(l: mio::net::UnixListener) -> Self {
        Self {
            io: Io::new(l, Interest::READABLE),
        }
    }

    /// Wraps a std listener (set to non-blocking here).
    ///
    /// # Errors
    /// If the socket cannot be made non-blocking.
    pub fn from_std(listener: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        listener.set_nonblocking(true)?;
        Ok(Self::from_mio(mio::net::UnixListener::from_std(listener)))
    }

    /// Accepts a connection. The stream registers with the worker that
    /// first polls it.
    ///
    /// # Errors
    /// The OS error of `accept4`.
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for a connection.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(UnixStream, SocketAddr)>> {
        self.io
            .poll_io(cx, Direction::Read, || self.io.sock().accept())
            .map_ok(|(s, peer)| (UnixStream::from_mio(s), peer))
    }

    /// The local address.
    ///
    /// # Errors
    /// The OS error of `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().local_addr()
    }
}

impl AsRawFd for UnixListener {
    fn as_raw_fd(&self) -> RawFd {
        self.io.sock().as_raw_fd()
    }
}

impl AsFd for UnixListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.sock().as_fd()
    }
}

/// A Unix stream connection. Implements tokio's `AsyncRead` and
/// `AsyncWrite`.
pub struct UnixStream {
    io: Arc<Io<mio::net::UnixStream>>,
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream")
            .field("local", &self.io.sock().local_addr().ok())
            .field("peer", &self.io.sock().peer_addr().ok())
            .field("fd", &self.io.sock().as_raw_fd())
            .finish()
    }
}

impl UnixStream {
    fn from_mio(s: mio::net::UnixStream) -> Self {
        Self {
            io: Arc::new(Io::new(s, Interest::READABLE | Interest::WRITABLE)),
        }
    }

    /// Connects to the socket at `path`.
    ///
    /// # Errors
    /// The OS error, with the path: "connect /tmp/app.sock: Connection
    /// refused". A full accept queue gives `WouldBlock` (Linux refuses to
    /// queue a non-blocking Unix connect).
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let path = path.as_ref();
        let connect = async {
            let stream = Self::from_mio(mio::net::UnixStream::connect(path)?);
            // Writable once connected (or failed).
            stream.io.ready(Direction::Write).await?;
            match stream.io.sock().take_error()? {
                Some(e) => Err(e),
                None => Ok(stream),
            }
        };
        connect
            .await
            .map_err(|e| with_addr("connect", path.display(), e))
    }

    /// A pair of connected streams.
    ///
    /// # Errors
    /// The OS error of `socketpair`.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = mio::net::UnixStream::pair()?;
        Ok((Self::from_mio(a), Self::from_mio(b)))
    }

    /// Wraps a connected std stream (set to non-blocking here).
    ///
    /// # Errors
    /// If the socket cannot be made non-blocking.
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        stream.set_nonblocking(true)?;
        Ok(Self::from_mio(mio::net::UnixStream::from_std(stream)))
    }

    /// The local address.
    ///
    /// # Errors
    /// The OS error of `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().local_addr()
    }

    /// The peer's address.
    ///
    /// # Errors
    /// The OS error of `getpeername`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().peer_addr()
    }

    /// The pending socket error (`SO_ERROR`), clearing it.
    ///
    /// # Errors
    /// The OS error of `getsockopt`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.sock().take_error()
    }

    /// Waits until the stream is readable.
    ///
    /// # Errors
    /// If the stream cannot be registered with the reactor.
    pub async fn readable(&self) -> io::Result<()> {
        self.io.ready(Direction::Read).await
    }

    /// Waits until the stream is writable.
    ///
    /// # Errors
    /// If the stream cannot be registered with the reactor.
    pub async fn writable(&self) -> io::Result<()> {
        self.io.ready(Direction::Write).await
    }

    /// Reads without waiting: `WouldBlock` if nothing is ready.
    ///
    /// # Errors
    /// The OS error of `read`, or `WouldBlock`.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.try_io(Direction::Read, || self.io.sock().read(buf))
    }

    /// Writes without waiting: `WouldBlock` if the socket is full.
    ///
    /// # Errors
    /// The OS error of `write`, or `WouldBlock`.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.io
            .try_io(Direction::Write, || self.io.sock().write(buf))
    }

    /// Splits into owned read and write halves, which can move to different
    /// tasks.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (
            OwnedReadHalf {
                io: self.io.clone(),
            },
            OwnedWriteHalf { io: self.io },
        )
    }

    /// Borrowed halves (for `copy_bidirectional`-style code in one task).
    pub fn split(&mut self) -> (OwnedReadHalfRef<'_>, OwnedWriteHalfRef<'_>) {
        (
            OwnedReadHalfRef { io: &self.io },
            OwnedWriteHalfRef { io: &self.io },
        )
    }
}

impl AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.sock().as_raw_fd()
    }
}

impl AsFd for UnixStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.sock().as_fd()
    }
}

/// The read half of a [`UnixStream`], from [`UnixStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    io: Arc<Io<mio::net::UnixStream>>,
}

/// The write half of a [`UnixStream`], from [`UnixStream::into_split`].
/// Shutting it down shuts down the stream's write side.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    io: Arc<Io<mio::net::UnixStream>>,
}

/// A borrowed read half of a [`UnixStream`], from [`UnixStream::split`].
#[derive(Debug)]
pub struct OwnedReadHalfRef<'a> {
    io: &'a Io<mio::net::UnixStream>,
}

/// A borrowed write half of a [`UnixStream`], from [`UnixStream::split`].
#[derive(Debug)]
pub struct OwnedWriteHalfRef<'a> {
    io: &'a Io<mio::net::UnixStream>,
}

impl_async_read!(UnixStream);
impl_async_write!(UnixStream);
impl_async_read!(OwnedReadHalf);
impl_async_write!(OwnedWriteHalf);
impl_async_read!(OwnedReadHalfRef<'a>);
impl_async_write!(OwnedWriteHalfRef<'a>);

/// A Unix datagram socket, bound to a path, unbound, or one of a pair.
///
/// As for [`UdpSocket`](crate::UdpSocket), every operation takes `&self`,
/// and one task at a time may wait in each direction.
pub struct UnixDatagram {
    io: Io<mio::net::UnixDatagram>,
}

impl fmt::Debug for UnixDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixDatagram")
            .field("local", &self.io.sock().local_addr().ok())
            .field("peer", &self.io.sock().peer_addr().ok())
            .field("fd", &self.io.sock().as_raw_fd())
            .finish()
    }
}

impl UnixDatagram {
    fn from_mio(s: mio::net::UnixDatagram) -> Self {
        Self {
            io: Io::new(s, Interest::READABLE | Interest::WRITABLE),
        }
    }

    /// A socket bound to `path`.
    ///
    /// # Errors
    /// The OS error, with the path.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixDatagram> {
        let path = path.as_ref();
        let s =
            mio::net::UnixDatagram::bind(path).map_err(|e| with_addr("bind", path.display(), e))?;
        Ok(Self::from_mio(s))
    }

    /// A socket bound to no address: it can send, and receive replies only
    /// if the peer is connected to it (see [`pair`](Self::pair)).
    ///
    /// # Errors
    /// The OS error of `socket`.
    pub fn unbound() -> io::Result<UnixDatagram> {
        Ok(Self::from_mio(mio::net::UnixDatagram::unbound()?))
    }

    /// A pair of connected sockets.
    ///
    /// # Errors
    /// The OS error of `socketpair`.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = mio::net::UnixDatagram::pair()?;
        Ok((Self::from_mio(a), Self::from_mio(b)))
    }

    /// Wraps a std socket (set to non-blocking here).
    ///
    /// # Errors
    /// If the socket cannot be made non-blocking.
    pub fn from_std(socket: std::os::unix::net::UnixDatagram) -> io::Result<UnixDatagram> {
        socket.set_nonblocking(true)?;
        Ok(Self::from_mio(mio::net::UnixDatagram::from_std(socket)))
    }

    /// Sets the default destination of [`send`](Self::send) and the only
    /// source [`recv`](Self::recv) accepts.
    ///
    /// # Errors
    /// The OS error, with the path.
    pub fn connect(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        self.io
            .sock()
            .connect(path)
            .map_err(|e| with_addr("connect", path.display(), e))
    }

    /// The local address.
    ///
    /// # Errors
    /// The OS error of `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().local_addr()
    }

    /// The connected peer's address.
    ///
    /// # Errors
    /// `NotConnected` if not connected.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().peer_addr()
    }

    /// Sends a datagram to the connected peer.
    ///
    /// # Errors
    /// The OS error of `send`.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            self.io
                .poll_io(cx, Direction::Write, || self.io.sock().send(buf))
        })
        .await
    }

    /// Receives a datagram from the connected peer. A datagram longer than
    /// `buf` is truncated.
    ///
    /// # Errors
    /// The OS error of `recv`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            self.io
                .poll_io(cx, Direction::Read, || self.io.sock().recv(buf))
        })
        .await
    }

    /// Sends a datagram to the socket bound to `path`.
    ///
    /// # Errors
    /// The OS error of `sendto`.
    pub async fn send_to(&self, buf: &[u8], path: impl AsRef<Path>) -> io::Result<usize> {
        let path = path.as_ref();
        std::future::poll_fn(|cx| {
            self.io
                .poll_io(cx, Direction::Write, || self.io.sock().send_to(buf, path))
        })
        .await
    }

    /// Receives a datagram and the address it came from (unnamed for an
    /// unbound sender). A datagram longer than `buf` is truncated.
    ///
    /// # Errors
    /// The OS error of `recvfrom`.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        std::future::poll_fn(|cx| {
            self.io
                .poll_io(cx, Direction::Read, || self.io.sock().recv_from(buf))
        })
        .await
    }

    crate::io::datagram_readiness!();

    /// Sends to `path` without waiting: `WouldBlock` if the socket is not
    /// ready.
    ///
    /// # Errors
    /// The OS error of `sendto`, or `WouldBlock`.
    pub fn try_send_to(&self, buf: &[u8], path: impl AsRef<Path>) -> io::Result<usize> {
        self.io
            .try_io(Direction::Write, || self.io.sock().send_to(buf, path))
    }

    /// Receives without waiting: `WouldBlock` if nothing is ready.
    ///
    /// # Errors
    /// The OS error of `recvfrom`, or `WouldBlock`.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io
            .try_io(Direction::Read, || self.io.sock().recv_from(buf))
    }

    /// The pending socket error (`SO_ERROR`), clearing it.
    ///
    /// # Errors
    /// The OS error of `getsockopt`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.sock().take_error()
    }
}

impl AsRawFd for UnixDatagram {
    fn as_raw_fd(&self) -> RawFd {
        self.io.sock().as_raw_fd()
    }
}

impl AsFd for UnixDatagram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.sock().as_fd()
    }
}

//! Unix domain sockets: [`UnixListener`], [`UnixStream`] and its halves
//! with tokio's names ([`ReadHalf`], [`WriteHalf`], [`OwnedReadHalf`],
//! [`OwnedWriteHalf`], [`ReuniteError`]), [`UnixDatagram`]. Their
//! addresses are std's [`SocketAddr`] (tokio wraps it in a type of its own
//! with the same `is_unnamed` and `as_pathname`).

use std::error::Error;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
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
    io: Io<mio::net::UnixStream>,
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
            io: Io::new(s, Interest::READABLE | Interest::WRITABLE),
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

    /// Splits into owned halves, which can move to different tasks;
    /// [`OwnedReadHalf::reunite`] puts them back together. Dropping the
    /// write half shuts down the write side (see [`OwnedWriteHalf`]).
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let inner = Arc::new(self);
        (
            OwnedReadHalf {
                inner: inner.clone(),
            },
            OwnedWriteHalf {
                inner,
                shutdown_on_drop: true,
            },
        )
    }

    /// Borrowed halves, for reading and writing at once within one task
    /// (`copy_bidirectional`-style code); no allocation.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (ReadHalf(self), WriteHalf(self))
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

/// The borrowed read half of a [`UnixStream`], from [`UnixStream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a>(&'a UnixStream);

/// The borrowed write half of a [`UnixStream`], from
/// [`UnixStream::split`]. Shutting it down shuts down the stream's write
/// side; dropping it does not.
#[derive(Debug)]
pub struct WriteHalf<'a>(&'a UnixStream);

/// The owned read half of a [`UnixStream`], from
/// [`UnixStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    inner: Arc<UnixStream>,
}

/// The owned write half of a [`UnixStream`], from
/// [`UnixStream::into_split`].
///
/// As in tokio, dropping it shuts down the stream's write side (the peer
/// reads end-of-file), unless it was [`forget`](Self::forget)-ed or put
/// back together with its read half.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    inner: Arc<UnixStream>,
    shutdown_on_drop: bool,
}

/// Returned by [`OwnedReadHalf::reunite`] when the halves come from
/// different streams; it gives both back.
#[derive(Debug)]
pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

impl fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves that are not from the same socket")
    }
}

impl Error for ReuniteError {}

impl_async_read!(UnixStream, s => &s.io);
impl_async_write!(UnixStream, s => &s.io);
impl_async_read!(ReadHalf<'a>, s => &s.0.io);
impl_async_write!(WriteHalf<'a>, s => &s.0.io);
impl_async_read!(OwnedReadHalf, s => &s.inner.io);
impl_async_write!(OwnedWriteHalf, s => &s.inner.io);

/// The address methods every half has, over `$stream` (a `&UnixStream`).
macro_rules! half_addrs {
    ($this:ident => $stream:expr) => {
        /// The peer's address.
        ///
        /// # Errors
        /// The OS error of `getpeername`.
        pub fn peer_addr(&self) -> io::Result<SocketAddr> {
            let $this = self;
            $stream.peer_addr()
        }

        /// The local address.
        ///
        /// # Errors
        /// The OS error of `getsockname`.
        pub fn local_addr(&self) -> io::Result<SocketAddr> {
            let $this = self;
            $stream.local_addr()
        }
    };
}

/// The readiness methods of the read halves.
macro_rules! read_half_methods {
    ($this:ident => $stream:expr) => {
        half_addrs!($this => $stream);

        /// Waits until the stream is readable.
        ///
        /// # Errors
        /// If the stream cannot be registered with the reactor.
        pub async fn readable(&self) -> io::Result<()> {
            let $this = self;
            $stream.readable().await
        }

        /// Reads without waiting: `WouldBlock` if nothing is ready.
        ///
        /// # Errors
        /// The OS error of `read`, or `WouldBlock`.
        pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
            let $this = self;
            $stream.try_read(buf)
        }
    };
}

/// The readiness methods of the write halves.
macro_rules! write_half_methods {
    ($this:ident => $stream:expr) => {
        half_addrs!($this => $stream);

        /// Waits until the stream is writable.
        ///
        /// # Errors
        /// If the stream cannot be registered with the reactor.
        pub async fn writable(&self) -> io::Result<()> {
            let $this = self;
            $stream.writable().await
        }

        /// Writes without waiting: `WouldBlock` if the socket is full.
        ///
        /// # Errors
        /// The OS error of `write`, or `WouldBlock`.
        pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
            let $this = self;
            $stream.try_write(buf)
        }
    };
}

impl ReadHalf<'_> {
    read_half_methods!(h => h.0);
}

impl WriteHalf<'_> {
    write_half_methods!(h => h.0);
}

impl OwnedReadHalf {
    read_half_methods!(h => h.inner);

    /// Puts the stream back together from its two halves.
    ///
    /// # Errors
    /// [`ReuniteError`], with both halves, if they come from different
    /// streams.
    pub fn reunite(self, other: OwnedWriteHalf) -> Result<UnixStream, ReuniteError> {
        reunite(self, other)
    }
}

impl OwnedWriteHalf {
    write_half_methods!(h => h.inner);

    /// Puts the stream back together; see [`OwnedReadHalf::reunite`].
    ///
    /// # Errors
    /// [`ReuniteError`] if the halves come from different streams.
    pub fn reunite(self, other: OwnedReadHalf) -> Result<UnixStream, ReuniteError> {
        reunite(other, self)
    }

    /// Drops the half without shutting down the write side.
    pub fn forget(mut self) {
        self.shutdown_on_drop = false;
    }
}

fn reunite(read: OwnedReadHalf, mut write: OwnedWriteHalf) -> Result<UnixStream, ReuniteError> {
    if !Arc::ptr_eq(&read.inner, &write.inner) {
        return Err(ReuniteError(read, write));
    }
    write.shutdown_on_drop = false;
    drop(write);
    match Arc::try_unwrap(read.inner) {
        Ok(stream) => Ok(stream),
        // The two halves held the only references, and one is gone.
        Err(_) => unreachable!("reunite: a third reference to a split UnixStream"),
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            // As tokio: the peer reads end-of-file.
            let _ = self.inner.io.sock().shutdown(Shutdown::Write);
        }
    }
}

impl AsRef<UnixStream> for ReadHalf<'_> {
    fn as_ref(&self) -> &UnixStream {
        self.0
    }
}

impl AsRef<UnixStream> for WriteHalf<'_> {
    fn as_ref(&self) -> &UnixStream {
        self.0
    }
}

impl AsRef<UnixStream> for OwnedReadHalf {
    fn as_ref(&self) -> &UnixStream {
        &self.inner
    }
}

impl AsRef<UnixStream> for OwnedWriteHalf {
    fn as_ref(&self) -> &UnixStream {
        &self.inner
    }
}

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

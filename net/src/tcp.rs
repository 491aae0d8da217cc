//! TCP: [`TcpListener`], [`TcpStream`] and its owned halves.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::task::{Context, Poll};

use fulcrum_runtime::io::Interest;

use crate::io::Direction;

use crate::io::{impl_async_read, impl_async_write, resolve, with_addr, Io};

/// A TCP listening socket.
pub struct TcpListener {
    io: Io<mio::net::TcpListener>,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("addr", &self.io.sock().local_addr().ok())
            .field("fd", &self.io.sock().as_raw_fd())
            .finish()
    }
}

impl TcpListener {
    /// Binds to `addr` (the first address that works, of those it resolves
    /// to) and listens, with `SO_REUSEADDR` and a backlog of
    /// [`DEFAULT_BACKLOG`](Self::DEFAULT_BACKLOG).
    ///
    /// # Errors
    /// The OS error, with the address: "bind 127.0.0.1:8080: Address in use".
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let mut last = None;
        for a in resolve(addr)? {
            match Self::bind_now(a) {
                Ok(l) => return Ok(l),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::ErrorKind::InvalidInput.into()))
    }

    /// The accept backlog of [`bind`](Self::bind) and of the listeners of
    /// [`Server`](crate::Server): 1024. tokio (through mio) uses std's 128;
    /// a burst of connections beyond the backlog overflows the kernel's
    /// accept queue, whose handshakes are then dropped and, under load,
    /// reset (500 simultaneous connects to a 128 backlog lost 8-149 of
    /// them in our echo test). Use [`TcpSocket`](crate::TcpSocket) for
    /// another value; the kernel caps it at `net.core.somaxconn`.
    pub const DEFAULT_BACKLOG: u32 = 1024;

    /// Binds and listens on one address, synchronously; errors name the
    /// address.
    pub(crate) fn bind_now(addr: SocketAddr) -> io::Result<TcpListener> {
        let l = Self::bind_std(addr)?;
        Ok(Self::from_mio(mio::net::TcpListener::from_std(l)))
    }

    /// As [`bind_now`](Self::bind_now), as a non-blocking std listener.
    pub(crate) fn bind_std(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
        let socket =
            crate::TcpSocket::new_for(addr).map_err(|e| with_addr("socket for", addr, e))?;
        socket
            .set_reuseaddr(true)
            .map_err(|e| with_addr("SO_REUSEADDR on", addr, e))?;
        socket.bind(addr)?; // names the address itself
        socket
            .listen_std(Self::DEFAULT_BACKLOG)
            .map_err(|e| with_addr("listen on", addr, e))
    }

    pub(crate) fn from_mio(l: mio::net::TcpListener) -> Self {
        Self {
            io: Io::new(l, Interest::READABLE),
        }
    }

    /// Wraps a std listener (set to non-blocking here).
    ///
    /// # Errors
    /// If the socket cannot be made non-blocking.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(Self::from_mio(mio::net::TcpListener::from_std(listener)))
    }

    /// Accepts a connection. The stream is not registered anywhere yet: it
    /// registers with the worker that first polls it.
    ///
    /// # Errors
    /// The OS error of `accept4`.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for a connection.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        self.io
            .poll_io(cx, Direction::Read, || self.io.sock().accept())
            .map_ok(|(s, peer)| (TcpStream::from_mio(s), peer))
    }

    /// The local address.
    ///
    /// # Errors
    /// The OS error of `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().local_addr()
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.io.sock().as_raw_fd()
    }
}

/// A TCP connection. Implements tokio's `AsyncRead` and `AsyncWrite`.
pub struct TcpStream {
    io: Arc<Io<mio::net::TcpStream>>,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("local", &self.io.sock().local_addr().ok())
            .field("peer", &self.io.sock().peer_addr().ok())
            .field("fd", &self.io.sock().as_raw_fd())
            .finish()
    }
}

impl TcpStream {
    pub(crate) fn from_mio(s: mio::net::TcpStream) -> Self {
        Self {
            io: Arc::new(Io::new(s, Interest::READABLE | Interest::WRITABLE)),
        }
    }

    /// Connects to `addr` (trying each address it resolves to in turn).
    ///
    /// # Errors
    /// The OS error of the last attempt, with its address.
    pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        let mut last = None;
        for a in resolve(addr)? {
            match Self::connect_one(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(with_addr("connect", a, e)),
            }
        }
        Err(last.unwrap_or_else(|| io::ErrorKind::InvalidInput.into()))
    }

    async fn connect_one(addr: SocketAddr) -> io::Result<TcpStream> {
        Self::from_mio(mio::net::TcpStream::connect(addr)?)
            .connected()
            .await
    }

    /// Waits for a connection in progress to finish (or fail).
    pub(crate) async fn connected(self) -> io::Result<TcpStream> {
        let stream = self;
        // Writable once the handshake finished (or failed).
        let mut ready = stream.io.ready_guard(Direction::Write).await?;
        if let Some(e) = stream.io.sock().take_error()? {
            return Err(e);
        }
        match stream.io.sock().peer_addr() {
            Ok(_) => Ok(stream),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                ready.clear_ready();
                Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "connection refused",
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Wraps a connected std stream (set to non-blocking here).
    ///
    /// # Errors
    /// If the socket cannot be made non-blocking.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        Ok(Self::from_mio(mio::net::TcpStream::from_std(stream)))
    }

    /// The peer's address.
    ///
    /// # Errors
    /// The OS error of `getpeername`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().peer_addr()
    }

    /// The local address.
    ///
    /// # Errors
    /// The OS error of `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().local_addr()
    }

    /// Sets `TCP_NODELAY`.
    ///
    /// # Errors
    /// The OS error of `setsockopt`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.io.sock().set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    /// The OS error of `getsockopt`.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.io.sock().nodelay()
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

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.sock().as_raw_fd()
    }
}

/// The read half of a [`TcpStream`], from [`TcpStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    io: Arc<Io<mio::net::TcpStream>>,
}

/// The write half of a [`TcpStream`], from [`TcpStream::into_split`].
/// Shutting it down shuts down the stream's write side.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    io: Arc<Io<mio::net::TcpStream>>,
}

/// A borrowed read half of a [`TcpStream`], from [`TcpStream::split`].
#[derive(Debug)]
pub struct OwnedReadHalfRef<'a> {
    io: &'a Io<mio::net::TcpStream>,
}

/// A borrowed write half of a [`TcpStream`], from [`TcpStream::split`].
#[derive(Debug)]
pub struct OwnedWriteHalfRef<'a> {
    io: &'a Io<mio::net::TcpStream>,
}

impl_async_read!(TcpStream);
impl_async_write!(TcpStream);
impl_async_read!(OwnedReadHalf);
impl_async_write!(OwnedWriteHalf);
impl_async_read!(OwnedReadHalfRef<'a>);
impl_async_write!(OwnedWriteHalfRef<'a>);

impl OwnedReadHalf {
    /// The peer's address.
    ///
    /// # Errors
    /// The OS error of `getpeername`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().peer_addr()
    }
}

impl OwnedWriteHalf {
    /// The peer's address.
    ///
    /// # Errors
    /// The OS error of `getpeername`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().peer_addr()
    }
}

//! TCP: [`TcpListener`], [`TcpStream`], and the stream's halves with
//! tokio's names: borrowed ([`ReadHalf`], [`WriteHalf`], from
//! [`TcpStream::split`]) and owned ([`OwnedReadHalf`], [`OwnedWriteHalf`],
//! from [`TcpStream::into_split`], back together with
//! [`OwnedReadHalf::reunite`]). tokio's `tokio::net::tcp` module.

use std::error::Error;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::task::{Context, Poll};

use fulcrum_runtime::io::Interest;

use crate::io::Direction;

use crate::io::{impl_async_read, impl_async_write, with_addr, Io};
use crate::resolve::{resolve, ToSocketAddrs};

/// A TCP listening socket.
///
/// ```
/// use fulcrum_net::{TcpListener, TcpStream};
///
/// let rt = fulcrum_runtime::Builder::new_multi_thread().worker_threads(2).build()?;
/// rt.block_on(async {
///     // Port 0: the OS picks a free one.
///     let listener = TcpListener::bind("127.0.0.1:0").await?;
///     let addr = listener.local_addr()?;
///     let client = fulcrum_runtime::spawn(async move { TcpStream::connect(addr).await });
///     let (conn, peer) = listener.accept().await?;
///     let client = client.await.expect("the client task panicked")?;
///     assert_eq!(peer, client.local_addr()?);
///     assert_eq!(conn.local_addr()?, addr);
///     Ok::<(), std::io::Error>(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
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
    /// to: host names are resolved on the blocking pool, see
    /// [`ToSocketAddrs`]) and listens, with `SO_REUSEADDR` and a backlog of
    /// [`DEFAULT_BACKLOG`](Self::DEFAULT_BACKLOG).
    ///
    /// # Errors
    /// The OS error, with the address: "bind 127.0.0.1:8080: Address in use".
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let mut last = None;
        for a in resolve(addr).await? {
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
    /// # What if the backlog is full?
    /// Connections wait in the kernel's accept queue, the listen backlog
    /// ([`DEFAULT_BACKLOG`](Self::DEFAULT_BACKLOG) for [`bind`](Self::bind)),
    /// until accepted. When it is full the kernel drops new handshakes and
    /// the clients retry; under load some are reset. When the process is
    /// out of descriptors (`EMFILE`, `ENFILE`) this returns the error and
    /// the connection stays queued; [`Server`](crate::Server) backs off and
    /// tries again.
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
///
/// ```
/// use fulcrum_net::{TcpListener, TcpStream};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let rt = fulcrum_runtime::Builder::new_multi_thread().worker_threads(2).build()?;
/// let received = rt.block_on(async {
///     let listener = TcpListener::bind("127.0.0.1:0").await?;
///     let mut client = TcpStream::connect(listener.local_addr()?).await?;
///     client.set_nodelay(true)?;
///     let (mut server, _peer) = listener.accept().await?;
///     client.write_all(b"hello").await?;
///     // Shuts down the write side: the server reads to the end.
///     client.shutdown().await?;
///     let mut received = Vec::new();
///     server.read_to_end(&mut received).await?;
///     Ok::<_, std::io::Error>(received)
/// })?;
/// assert_eq!(received, b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct TcpStream {
    io: Io<mio::net::TcpStream>,
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
            io: Io::new(s, Interest::READABLE | Interest::WRITABLE),
        }
    }

    /// Connects to `addr`, trying each address it resolves to in turn (host
    /// names are resolved on the blocking pool, see [`ToSocketAddrs`]).
    ///
    /// # Errors
    /// The resolver's error, or the OS error of the last attempt, with its
    /// address.
    pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        let mut last = None;
        for a in resolve(addr).await? {
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

    /// Reads what is ready without taking it off the socket (`MSG_PEEK`):
    /// the next read sees the same bytes. Waits until something is ready.
    ///
    /// # Errors
    /// The OS error of `recv`.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            self.io
                .poll_io(cx, Direction::Read, || self.io.sock().peek(buf))
        })
        .await
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

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.sock().as_raw_fd()
    }
}

/// The borrowed read half of a [`TcpStream`], from [`TcpStream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a>(&'a TcpStream);

/// The borrowed write half of a [`TcpStream`], from [`TcpStream::split`].
/// Shutting it down shuts down the stream's write side; dropping it does
/// not.
#[derive(Debug)]
pub struct WriteHalf<'a>(&'a TcpStream);

/// The owned read half of a [`TcpStream`], from [`TcpStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    inner: Arc<TcpStream>,
}

/// The owned write half of a [`TcpStream`], from
/// [`TcpStream::into_split`].
///
/// As in tokio, dropping it shuts down the stream's write side (the peer
/// reads end-of-file), unless it was [`forget`](Self::forget)-ed or put
/// back together with its read half; shutting it down
/// (`AsyncWriteExt::shutdown`) does so at once.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    inner: Arc<TcpStream>,
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

impl_async_read!(TcpStream, s => &s.io);
impl_async_write!(TcpStream, s => &s.io);
impl_async_read!(ReadHalf<'a>, s => &s.0.io);
impl_async_write!(WriteHalf<'a>, s => &s.0.io);
impl_async_read!(OwnedReadHalf, s => &s.inner.io);
impl_async_write!(OwnedWriteHalf, s => &s.inner.io);

/// The methods both read halves have, over `$stream` (a `&TcpStream`).
macro_rules! read_half_methods {
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

        /// Reads what is ready without taking it off the socket; see
        /// [`TcpStream::peek`].
        ///
        /// # Errors
        /// The OS error of `recv`.
        pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
            let $this = self;
            $stream.peek(buf).await
        }
    };
}

/// The methods both write halves have, over `$stream` (a `&TcpStream`).
macro_rules! write_half_methods {
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
    pub fn reunite(self, other: OwnedWriteHalf) -> Result<TcpStream, ReuniteError> {
        reunite(self, other)
    }
}

impl OwnedWriteHalf {
    write_half_methods!(h => h.inner);

    /// Puts the stream back together; see [`OwnedReadHalf::reunite`].
    ///
    /// # Errors
    /// [`ReuniteError`] if the halves come from different streams.
    pub fn reunite(self, other: OwnedReadHalf) -> Result<TcpStream, ReuniteError> {
        reunite(other, self)
    }

    /// Drops the half without shutting down the write side.
    pub fn forget(mut self) {
        self.shutdown_on_drop = false;
    }
}

fn reunite(read: OwnedReadHalf, mut write: OwnedWriteHalf) -> Result<TcpStream, ReuniteError> {
    if !Arc::ptr_eq(&read.inner, &write.inner) {
        return Err(ReuniteError(read, write));
    }
    write.shutdown_on_drop = false;
    drop(write);
    match Arc::try_unwrap(read.inner) {
        Ok(stream) => Ok(stream),
        // The two halves held the only references, and one is gone.
        Err(_) => unreachable!("reunite: a third reference to a split TcpStream"),
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            // As tokio: the peer reads end-of-file. A socket already shut
            // down or reset has nothing left to shut.
            let _ = self.inner.io.sock().shutdown(Shutdown::Write);
        }
    }
}

impl AsRef<TcpStream> for ReadHalf<'_> {
    fn as_ref(&self) -> &TcpStream {
        self.0
    }
}

impl AsRef<TcpStream> for WriteHalf<'_> {
    fn as_ref(&self) -> &TcpStream {
        self.0
    }
}

impl AsRef<TcpStream> for OwnedReadHalf {
    fn as_ref(&self) -> &TcpStream {
        &self.inner
    }
}

impl AsRef<TcpStream> for OwnedWriteHalf {
    fn as_ref(&self) -> &TcpStream {
        &self.inner
    }
}

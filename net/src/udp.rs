//! UDP: [`UdpSocket`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::task::{Context, Poll};

use fulcrum_runtime::io::Interest;

use crate::io::Direction;
use tokio::io::ReadBuf;

use crate::io::{with_addr, Io};
use crate::resolve::{resolve, ToSocketAddrs};

/// A UDP socket. tokio's `UdpSocket`: every operation takes `&self`, so
/// the socket can be shared (in an `Arc`) by a sending and a receiving task.
///
/// One task at a time may wait in each direction: a second task waiting to
/// receive while another already waits replaces the first one's waker.
///
/// ```no_run
/// use fulcrum_net::UdpSocket;
/// # async fn run() -> std::io::Result<()> {
/// let socket = UdpSocket::bind("127.0.0.1:0").await?;
/// let mut buf = [0u8; 1500];
/// loop {
///     let (n, peer) = socket.recv_from(&mut buf).await?;
///     socket.send_to(&buf[..n], peer).await?;
/// }
/// # }
/// ```
pub struct UdpSocket {
    io: Io<mio::net::UdpSocket>,
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("local", &self.io.sock().local_addr().ok())
            .field("peer", &self.io.sock().peer_addr().ok())
            .field("fd", &self.io.sock().as_raw_fd())
            .finish()
    }
}

impl UdpSocket {
    fn from_mio(s: mio::net::UdpSocket) -> Self {
        Self {
            io: Io::new(s, Interest::READABLE | Interest::WRITABLE),
        }
    }

    /// Binds to `addr` (the first address that works, of those it resolves
    /// to; host names are resolved on the blocking pool, see
    /// [`ToSocketAddrs`](crate::ToSocketAddrs)).
    ///
    /// # Errors
    /// The OS error, with the address: "bind 127.0.0.1:5353: Address in use".
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        let mut last = None;
        for a in resolve(addr).await? {
            match mio::net::UdpSocket::bind(a) {
                Ok(s) => return Ok(Self::from_mio(s)),
                Err(e) => last = Some(with_addr("bind", a, e)),
            }
        }
        Err(last.unwrap_or_else(|| io::ErrorKind::InvalidInput.into()))
    }

    /// Wraps a std socket (set to non-blocking here).
    ///
    /// # Errors
    /// If the socket cannot be made non-blocking.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        socket.set_nonblocking(true)?;
        Ok(Self::from_mio(mio::net::UdpSocket::from_std(socket)))
    }

    /// Sets the default destination of [`send`](Self::send) and the only
    /// source [`recv`](Self::recv) accepts (the first address of those
    /// `addr` resolves to that works).
    ///
    /// # Errors
    /// The OS error, with the address.
    pub async fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<()> {
        let mut last = None;
        for a in resolve(addr).await? {
            match self.io.sock().connect(a) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(with_addr("connect", a, e)),
            }
        }
        Err(last.unwrap_or_else(|| io::ErrorKind::InvalidInput.into()))
    }

    /// The local address.
    ///
    /// # Errors
    /// The OS error of `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().local_addr()
    }

    /// The address given to [`connect`](Self::connect).
    ///
    /// # Errors
    /// `NotConnected` if not connected.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().peer_addr()
    }

    /// Sends a datagram to the connected peer.
    ///
    /// # Errors
    /// The OS error of `send` (`ConnectionRefused` after an ICMP
    /// port-unreachable, for example).
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_send(cx, buf)).await
    }

    /// Polls to send a datagram to the connected peer.
    pub fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.io
            .poll_io(cx, Direction::Write, || self.io.sock().send(buf))
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

    /// Polls to receive a datagram from the connected peer into `buf`.
    pub fn poll_recv(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = match self.io.poll_io(cx, Direction::Read, || {
            self.io.sock().recv(buf.initialize_unfilled())
        }) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }

    /// Sends a datagram to `target` (its first address; a host name is
    /// resolved on the blocking pool).
    ///
    /// # Errors
    /// The OS error of `sendto`, or a resolution error.
    pub async fn send_to(&self, buf: &[u8], target: impl ToSocketAddrs) -> io::Result<usize> {
        let target = resolve(target).await?[0];
        std::future::poll_fn(|cx| self.poll_send_to(cx, buf, target)).await
    }

    /// Polls to send a datagram to `target`.
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        self.io
            .poll_io(cx, Direction::Write, || self.io.sock().send_to(buf, target))
    }

    /// Receives a datagram and the address it came from. A datagram longer
    /// than `buf` is truncated.
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

    /// Polls to receive a datagram into `buf`; returns where it came from.
    pub fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        let (n, from) = match self.io.poll_io(cx, Direction::Read, || {
            self.io.sock().recv_from(buf.initialize_unfilled())
        }) {
            Poll::Ready(Ok(r)) => r,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        buf.advance(n);
        Poll::Ready(Ok(from))
    }

    /// Receives a datagram without removing it from the queue.
    ///
    /// # Errors
    /// The OS error of `recvfrom`.
    pub async fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        std::future::poll_fn(|cx| {
            self.io
                .poll_io(cx, Direction::Read, || self.io.sock().peek_from(buf))
        })
        .await
    }

    crate::io::datagram_readiness!();

    /// Sends to `target` without waiting: `WouldBlock` if the socket is not
    /// ready.
    ///
    /// # Errors
    /// The OS error of `sendto`, or `WouldBlock`.
    pub fn try_send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.io
            .try_io(Direction::Write, || self.io.sock().send_to(buf, target))
    }

    /// Receives without waiting: `WouldBlock` if nothing is ready.
    ///
    /// # Errors
    /// The OS error of `recvfrom`, or `WouldBlock`.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io
            .try_io(Direction::Read, || self.io.sock().recv_from(buf))
    }

    /// Sets `SO_BROADCAST`: allow sending to broadcast addresses.
    ///
    /// # Errors
    /// The OS error of `setsockopt`.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.io.sock().set_broadcast(on)
    }

    /// Whether `SO_BROADCAST` is set.
    ///
    /// # Errors
    /// The OS error of `getsockopt`.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.io.sock().broadcast()
    }

    /// Sets `IP_TTL`.
    ///
    /// # Errors
    /// The OS error of `setsockopt`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.sock().set_ttl(ttl)
    }

    /// `IP_TTL`.
    ///
    /// # Errors
    /// The OS error of `getsockopt`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.io.sock().ttl()
    }

    /// The pending socket error (`SO_ERROR`), clearing it.
    ///
    /// # Errors
    /// The OS error of `getsockopt`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.sock().take_error()
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.io.sock().as_raw_fd()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.sock().as_fd()
    }
}

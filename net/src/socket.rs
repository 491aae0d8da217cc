//! [`TcpSocket`]: a TCP socket to configure before it connects or listens.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use crate::io::with_addr;
use crate::{sys, TcpListener, TcpStream};

/// A TCP socket that is not yet connected or listening, for setting options
/// (`SO_REUSEPORT`, buffer sizes, a local address to connect from) first.
/// tokio's `TcpSocket`.
///
/// ```no_run
/// use fulcrum_net::TcpSocket;
/// # async fn run() -> std::io::Result<()> {
/// let addr = "127.0.0.1:8080".parse().unwrap();
/// let socket = TcpSocket::new_v4()?;
/// socket.set_reuseport(true)?;
/// socket.bind(addr)?;
/// let listener = socket.listen(1024)?;
/// # let _ = listener; Ok(()) }
/// ```
///
/// The socket is created non-blocking and close-on-exec.
pub struct TcpSocket {
    fd: OwnedFd,
}

impl fmt::Debug for TcpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpSocket")
            .field("addr", &self.local_addr().ok())
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl TcpSocket {
    /// A new IPv4 TCP socket.
    ///
    /// # Errors
    /// The OS error of `socket`.
    pub fn new_v4() -> io::Result<TcpSocket> {
        Self::new(libc::AF_INET)
    }

    /// A new IPv6 TCP socket.
    ///
    /// # Errors
    /// The OS error of `socket`.
    pub fn new_v6() -> io::Result<TcpSocket> {
        Self::new(libc::AF_INET6)
    }

    /// A new socket of the family of `addr`.
    pub(crate) fn new_for(addr: SocketAddr) -> io::Result<TcpSocket> {
        if addr.is_ipv4() {
            Self::new_v4()
        } else {
            Self::new_v6()
        }
    }

    fn new(domain: libc::c_int) -> io::Result<TcpSocket> {
        Ok(Self {
            fd: sys::socket(domain, libc::SOCK_STREAM)?,
        })
    }

    /// Wraps a connected std stream, to read or change its options; the
    /// stream's `connect` and `listen` are then of no use.
    pub fn from_std_stream(stream: std::net::TcpStream) -> TcpSocket {
        Self {
            fd: OwnedFd::from(stream),
        }
    }

    fn set(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        sys::set_int(self.fd.as_raw_fd(), level, name, value)
    }

    fn get(&self, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
        sys::get_int(self.fd.as_raw_fd(), level, name)
    }

    /// Sets `SO_REUSEADDR`: bind a listening address still in `TIME_WAIT`.
    ///
    /// # Errors
    /// The OS error of `setsockopt`.
    pub fn set_reuseaddr(&self, reuseaddr: bool) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_REUSEADDR, reuseaddr.into())
    }

    /// Whether `SO_REUSEADDR` is set.
    ///
    /// # Errors
    /// The OS error of `getsockopt`.
    pub fn reuseaddr(&self) -> io::Result<bool> {
        Ok(self.get(libc::SOL_SOCKET, libc::SO_REUSEADDR)? != 0)
    }

    /// Sets `SO_REUSEPORT`: several sockets with it may bind the same
    /// address, and the kernel spreads incoming connections over them.
    ///
    /// # Errors
    /// The OS error of `setsockopt`.
    pub fn set_reuseport(&self, reuseport: bool) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_REUSEPORT, reuseport.into())
    }

    /// Whether `SO_REUSEPORT` is set.
    ///
    /// # Errors
    /// The OS error of `getsockopt`.
    pub fn reuseport(&self) -> io::Result<bool> {
        Ok(self.get(libc::SOL_SOCKET, libc::SO_REUSEPORT)? != 0)
    }

    /// Sets `SO_KEEPALIVE`.
    ///
    /// # Errors
    /// The OS error of `setsockopt`.
    pub fn set_keepalive(&self, keepalive: bool) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, keepalive.into())
    }

    /// Whether `SO_KEEPALIVE` is set.
    ///
    /// # Errors
    /// The OS error of `getsockopt`.
    pub fn keepalive(&self) -> io::Result<bool> {
        Ok(self.get(libc::SOL_SOCKET, libc::SO_KEEPALIVE)? != 0)
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    ///
    /// # Errors
    /// The OS error of `setsockopt`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.set(libc::IPPROTO_TCP, libc::TCP_NODELAY, nodelay.into())
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    /// The OS error of `getsockopt`.
    pub fn nodelay(&self) -> io::Result<bool> {
        Ok(self.get(libc::IPPROTO_TCP, libc::TCP_NODELAY)? != 0)
    }

    /// Sets `SO_SNDBUF`. Linux doubles the value (for its bookkeeping), and
    /// [`send_buffer_size`](Self::send_buffer_size) reports the doubled
    /// size.
    ///
    /// # Errors
    /// The OS error of `setsockopt`.
    pub fn set_send_buffer_size(&self, size: u32) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_SNDBUF, clamp(size))
    }

    /// `SO_SNDBUF`.
    ///
    /// # Errors
    /// The OS error of `getsockopt`.
    pub fn send_buffer_size(&self) -> io::Result<u32> {
        Ok(u32::try_from(self.get(libc::SOL_SOCKET, libc::SO_SNDBUF)?).unwrap_or(0))
    }

    /// Sets `SO_RCVBUF` (doubled by Linux, as for
    /// [`set_send_buffer_size`](Self::set_send_buffer_size)).
    ///
    /// # Errors
    /// The OS error of `setsockopt`.
    pub fn set_recv_buffer_size(&self, size: u32) -> io::Result<()> {
        self.set(libc::SOL_SOCKET, libc::SO_RCVBUF, clamp(size))
    }

    /// `SO_RCVBUF`.
    ///
    /// # Errors
    /// The OS error of `getsockopt`.
    pub fn recv_buffer_size(&self) -> io::Result<u32> {
        Ok(u32::try_from(self.get(libc::SOL_SOCKET, libc::SO_RCVBUF)?).unwrap_or(0))
    }

    /// Binds the socket to `addr`.
    ///
    /// # Errors
    /// The OS error, with the address: "bind 127.0.0.1:8080: Address in use".
    pub fn bind(&self, addr: SocketAddr) -> io::Result<()> {
        sys::bind(self.fd.as_raw_fd(), addr).map_err(|e| with_addr("bind", addr, e))
    }

    /// The local address (after [`bind`](Self::bind), or the one the OS
    /// picked).
    ///
    /// # Errors
    /// The OS error of `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sys::local_addr(self.fd.as_raw_fd())
    }

    /// The pending socket error (`SO_ERROR`), clearing it.
    ///
    /// # Errors
    /// The OS error of `getsockopt`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        let e = self.get(libc::SOL_SOCKET, libc::SO_ERROR)?;
        Ok((e != 0).then(|| io::Error::from_raw_os_error(e)))
    }

    /// Listens, with at most `backlog` connections waiting to be accepted.
    ///
    /// # Errors
    /// The OS error of `listen`.
    pub fn listen(self, backlog: u32) -> io::Result<TcpListener> {
        let listener = self.listen_std(backlog)?;
        Ok(TcpListener::from_mio(mio::net::TcpListener::from_std(
            listener,
        )))
    }

    /// Listens, and returns the non-blocking std listener (for callers that
    /// share the socket between several registrations).
    pub(crate) fn listen_std(self, backlog: u32) -> io::Result<std::net::TcpListener> {
        sys::listen(self.fd.as_raw_fd(), backlog)?;
        let listener = std::net::TcpListener::from(self.fd);
        listener.set_nonblocking(true)?;
        Ok(listener)
    }

    /// Connects to `addr`, without blocking the worker: the connection
    /// starts (`EINPROGRESS`), the task waits until the socket is writable,
    /// then the socket's error, if any, is the result.
    ///
    /// # Errors
    /// The OS error, with the address: "connect 127.0.0.1:8080: Connection
    /// refused".
    pub async fn connect(self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = std::net::TcpStream::from(self.fd);
        let attempt = async {
            // A socket from `from_std_stream` may be blocking.
            stream.set_nonblocking(true)?;
            sys::connect(stream.as_raw_fd(), addr)?;
            TcpStream::from_mio(mio::net::TcpStream::from_std(stream))
                .connected()
                .await
        };
        attempt.await.map_err(|e| with_addr("connect", addr, e))
    }
}

/// A buffer size as the `c_int` that `setsockopt` takes.
fn clamp(size: u32) -> libc::c_int {
    libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX)
}

impl AsRawFd for TcpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for TcpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl IntoRawFd for TcpSocket {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

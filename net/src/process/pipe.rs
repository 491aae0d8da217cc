//! The parent's ends of a child's standard streams: [`ChildStdin`],
//! [`ChildStdout`], [`ChildStderr`]. Each is the pipe's fd set to
//! non-blocking and registered (on first use) with the reactor of the
//! thread that polls it, like a socket.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};

use fulcrum_runtime::io::Interest;

use crate::io::Direction;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::io::Io;

/// Sets or clears `O_NONBLOCK` on `fd`.
fn set_nonblocking(fd: RawFd, nonblocking: bool) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor the caller owns; checked.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One pipe end, non-blocking, registered lazily.
struct Pipe {
    io: Io<File>,
}

impl Pipe {
    fn new(fd: OwnedFd, interest: Interest) -> io::Result<Self> {
        set_nonblocking(fd.as_raw_fd(), true)?;
        Ok(Self {
            io: Io::new(File::from(fd), interest),
        })
    }

    /// Deregisters the pipe and gives its fd back, blocking again (for a
    /// `Stdio` of another child, which expects a blocking descriptor).
    fn into_owned_fd(self) -> io::Result<OwnedFd> {
        let fd = OwnedFd::from(self.io.into_inner());
        set_nonblocking(fd.as_raw_fd(), false)?;
        Ok(fd)
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = match self.io.poll_io(cx, Direction::Read, || {
            Read::read(&mut self.io.sock(), buf.initialize_unfilled())
        }) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.io.poll_io(cx, Direction::Write, || {
            Write::write(&mut self.io.sock(), buf)
        })
    }

    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io.poll_io(cx, Direction::Write, || {
            Write::write_vectored(&mut self.io.sock(), bufs)
        })
    }
}

macro_rules! pipe_type {
    ($(#[$doc:meta])* $name:ident, $std:ty, $interest:expr) => {
        $(#[$doc])*
        pub struct $name {
            pipe: Pipe,
        }

        impl $name {
            /// Wraps std's handle (made non-blocking here).
            ///
            /// # Errors
            /// If the pipe cannot be made non-blocking.
            pub fn from_std(inner: $std) -> io::Result<Self> {
                Ok(Self {
                    pipe: Pipe::new(OwnedFd::from(inner), $interest)?,
                })
            }

            /// The pipe's fd, deregistered and blocking again.
            ///
            /// # Errors
            /// If the pipe cannot be made blocking again.
            pub fn into_owned_fd(self) -> io::Result<OwnedFd> {
                self.pipe.into_owned_fd()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("fd", &self.pipe.io.sock().as_raw_fd())
                    .finish()
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.pipe.io.sock().as_raw_fd()
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.pipe.io.sock().as_fd()
            }
        }

        /// For another child's standard stream (a pipeline): the fd,
        /// blocking again.
        impl TryFrom<$name> for Stdio {
            type Error = io::Error;

            fn try_from(pipe: $name) -> io::Result<Stdio> {
                pipe.into_owned_fd().map(Stdio::from)
            }
        }
    };
}

pipe_type!(
    /// The child's standard input, for writing; tokio's
    /// `process::ChildStdin`. Implements tokio's `AsyncWrite`; dropping it
    /// closes the pipe (the child reads end-of-file), and shutting it down
    /// does nothing, as in tokio.
    ChildStdin,
    std::process::ChildStdin,
    Interest::WRITABLE
);

pipe_type!(
    /// The child's standard output, for reading; tokio's
    /// `process::ChildStdout`. Implements tokio's `AsyncRead`.
    ChildStdout,
    std::process::ChildStdout,
    Interest::READABLE
);

pipe_type!(
    /// The child's standard error, for reading; tokio's
    /// `process::ChildStderr`. Implements tokio's `AsyncRead`.
    ChildStderr,
    std::process::ChildStderr,
    Interest::READABLE
);

impl AsyncWrite for ChildStdin {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.pipe.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.pipe.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ChildStdout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.pipe.poll_read(cx, buf)
    }
}

impl AsyncRead for ChildStderr {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.pipe.poll_read(cx, buf)
    }
}

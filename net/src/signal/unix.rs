//! Listening for Unix signals: [`signal`], [`SignalKind`], [`Signal`].
//! tokio's `tokio::signal::unix`.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::task::{Context, Poll};

use fulcrum_runtime::io::Interest;

use super::registry::{self, Slot};
use crate::io::Io;

/// A signal number, with constructors for the common ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignalKind(libc::c_int);

impl SignalKind {
    /// Any signal, by number (`libc::SIGUSR1`, for example).
    pub const fn from_raw(signum: libc::c_int) -> Self {
        Self(signum)
    }

    /// The signal number.
    pub const fn as_raw_value(&self) -> libc::c_int {
        self.0
    }

    /// `SIGALRM`.
    pub const fn alarm() -> Self {
        Self(libc::SIGALRM)
    }

    /// `SIGCHLD`.
    pub const fn child() -> Self {
        Self(libc::SIGCHLD)
    }

    /// `SIGHUP`: the terminal went away, or (by convention) reload the
    /// configuration.
    pub const fn hangup() -> Self {
        Self(libc::SIGHUP)
    }

    /// `SIGINT`: Ctrl-C.
    pub const fn interrupt() -> Self {
        Self(libc::SIGINT)
    }

    /// `SIGIO`.
    pub const fn io() -> Self {
        Self(libc::SIGIO)
    }

    /// `SIGPIPE`.
    pub const fn pipe() -> Self {
        Self(libc::SIGPIPE)
    }

    /// `SIGQUIT`.
    pub const fn quit() -> Self {
        Self(libc::SIGQUIT)
    }

    /// `SIGTERM`: the polite request to stop.
    pub const fn terminate() -> Self {
        Self(libc::SIGTERM)
    }

    /// `SIGUSR1`.
    pub const fn user_defined1() -> Self {
        Self(libc::SIGUSR1)
    }

    /// `SIGUSR2`.
    pub const fn user_defined2() -> Self {
        Self(libc::SIGUSR2)
    }

    /// `SIGWINCH`: the terminal was resized.
    pub const fn window_change() -> Self {
        Self(libc::SIGWINCH)
    }
}

impl From<libc::c_int> for SignalKind {
    fn from(signum: libc::c_int) -> Self {
        Self(signum)
    }
}

impl From<SignalKind> for libc::c_int {
    fn from(kind: SignalKind) -> Self {
        kind.0
    }
}

/// Signals that cannot be caught, or must not be (tokio's list).
const FORBIDDEN: [libc::c_int; 5] = [
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGKILL,
    libc::SIGSEGV,
    libc::SIGSTOP,
];

/// A listener for one signal, from [`signal`].
///
/// Its eventfd registers with the reactor of the worker that first polls
/// it. Deliveries between two [`recv`](Self::recv)s coalesce into one.
pub struct Signal {
    kind: SignalKind,
    /// The listener's eventfd, which the handler writes to.
    io: Io<OwnedFd>,
    /// Where the handler finds `io`'s fd; emptied on drop.
    slot: &'static Slot,
    /// The delivery count last reported.
    seen: u64,
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal")
            .field("kind", &self.kind)
            .field("fd", &self.io.sock().as_raw_fd())
            .finish()
    }
}

/// Listens for `kind`: the returned [`Signal`] reports each delivery after
/// this call.
///
/// The first listener of a signal installs Fulcrum's handler for it for
/// good: the signal's default action (terminating the process, for most)
/// no longer happens, even after the listener is dropped (see the [module
/// docs](super#handlers-stay-installed)).
///
/// # Errors
/// `InvalidInput` for `SIGILL`, `SIGFPE`, `SIGKILL`, `SIGSEGV`, `SIGSTOP`
/// and numbers out of range; the OS error of `eventfd` or `sigaction`.
pub fn signal(kind: SignalKind) -> io::Result<Signal> {
    let signum = kind.0;
    if signum <= 0 || FORBIDDEN.contains(&signum) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {signum} cannot be listened for"),
        ));
    }
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new eventfd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (slot, seen) = registry::listen(signum, fd.as_raw_fd())?;
    Ok(Signal {
        kind,
        io: Io::new(fd, Interest::READABLE),
        slot,
        seen,
    })
}

impl Signal {
    /// Waits for the next delivery of the signal. Returns `None` only if
    /// the listener cannot wait: its eventfd could not register with the
    /// reactor (it is polled outside a Fulcrum runtime).
    pub async fn recv(&mut self) -> Option<()> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next delivery; `None` as for [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<()>> {
        self.poll_recv_io(cx).map(|r| match r {
            Ok(()) => Some(()),
            Err(e) => {
                tracing::warn!(signal = self.kind.0, "signal listener cannot wait: {e}");
                None
            }
        })
    }

    /// Polls for the next delivery, with the reason it cannot wait.
    pub(super) fn poll_recv_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let now = registry::deliveries(self.kind.0);
            if now != self.seen {
                self.seen = now;
                return Poll::Ready(Ok(()));
            }
            let mut ready = match self.io.poll_read_ready(cx) {
                Poll::Ready(Ok(ready)) => ready,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            // Drain the eventfd, then check the counter again: a delivery
            // the check misses writes after the drain, a new edge.
            let mut buf = [0u8; 8];
            // SAFETY: `buf` is 8 writable bytes, the size of an eventfd
            // counter.
            let n = unsafe { libc::read(self.io.sock().as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => ready.clear_ready(),
                    io::ErrorKind::Interrupted => {}
                    _ => return Poll::Ready(Err(e)),
                }
            }
        }
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        // Before `io` closes the eventfd: from here on no handler writes
        // to it.
        registry::release(self.slot);
    }
}

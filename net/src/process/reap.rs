//! Waiting for a child to exit without a thread per child: the runtime's
//! reactor tells when.
//!
//! # Which mechanism
//! - **A pidfd** (Linux 5.3+, `pidfd_open(2)`), the default: a descriptor
//!   that becomes readable when the child exits, registered like a socket
//!   with the reactor of the thread that waits (so a waiting task is woken
//!   by its worker's `epoll_wait`, as for any I/O).
//! - **`SIGCHLD`**, where `pidfd_open` is unavailable (an older kernel, or
//!   a seccomp filter that refuses it): each waiting child holds a
//!   listener of the existing signal machinery (`crate::signal`), whose
//!   eventfd the handler writes to on every `SIGCHLD`; each delivery makes
//!   every waiter try `waitpid(WNOHANG)` for its own child. (That installs
//!   Fulcrum's `SIGCHLD` handler for good, as any listener does.)
//!
//! Either way the exit status comes from `waitpid` on that one pid (std's
//! `Child::try_wait`), after the notification, so that a wake-up that is
//! not about this child costs one non-blocking syscall.
//!
//! # Children dropped before they exit
//! Dropping a [`Child`](super::Child) whose process still runs (after
//! killing it, with `kill_on_drop`) hands it to a reaper task on the
//! current runtime, which waits for the exit the same way and reaps it, so
//! no zombie is left behind. With no runtime to spawn on (or if the runtime
//! shuts down first), the child goes to the process-wide orphan list, which
//! is reaped (with `try_wait`) at every [`Command::spawn`](super::Command::spawn).
//!
//! What if the orphan list is full? It is a `Vec` that grows: each entry
//! is a child process that is still running, so it is bounded by the
//! process limit of the OS, and no child is ever forgotten.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use fulcrum_runtime::io::Interest;
use fulcrum_runtime::Handle;

use crate::io::Io;
use crate::signal::unix::{signal, Signal, SignalKind};

/// How a waiter learns that its child exited.
pub(crate) enum ExitWatch {
    /// The child's pidfd, readable once it exits.
    Pidfd(Io<OwnedFd>),
    /// A `SIGCHLD` listener.
    Sigchld(Signal),
}

/// `pidfd_open(pid, 0)`.
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: plain syscall with integer arguments; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd)
        .map_err(|_| io::Error::other("pidfd_open returned an fd out of range"))?;
    // SAFETY: `fd` is a new descriptor that nothing else owns; the kernel
    // opens pidfds close-on-exec.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether this kernel lets us open pidfds (for the tests).
#[cfg(test)]
pub(crate) fn pidfd_supported() -> bool {
    pidfd_open(std::process::id()).is_ok()
}

impl ExitWatch {
    /// A watch over child `pid`: its pidfd, else a `SIGCHLD` listener.
    pub(crate) fn new(pid: u32) -> io::Result<Self> {
        match pidfd_open(pid) {
            Ok(fd) => Ok(ExitWatch::Pidfd(Io::new(fd, Interest::READABLE))),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSYS | libc::EPERM | libc::EACCES)
                ) =>
            {
                tracing::debug!("pidfd_open unavailable ({e}); waiting for children with SIGCHLD");
                Self::sigchld()
            }
            Err(e) => Err(e),
        }
    }

    /// A `SIGCHLD` listener (the fallback; also for tests).
    pub(crate) fn sigchld() -> io::Result<Self> {
        signal(SignalKind::child()).map(ExitWatch::Sigchld)
    }

    /// Whether this is the pidfd mechanism (for tests and logs).
    pub(crate) fn is_pidfd(&self) -> bool {
        matches!(self, ExitWatch::Pidfd(_))
    }
}

/// A child that has not been reaped yet.
pub(crate) struct Running {
    /// Taken out only by `Drop`.
    std: ManuallyDrop<std::process::Child>,
    watch: ExitWatch,
}

impl Running {
    pub(crate) fn new(std: std::process::Child, watch: ExitWatch) -> Self {
        Self {
            std: ManuallyDrop::new(std),
            watch,
        }
    }

    pub(crate) fn std(&mut self) -> &mut std::process::Child {
        &mut self.std
    }

    pub(crate) fn pid(&self) -> u32 {
        self.std.id()
    }

    pub(crate) fn watch(&self) -> &ExitWatch {
        &self.watch
    }

    /// Polls for the exit status, reaping the child.
    pub(crate) fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<ExitStatus>> {
        let Self { std, watch } = self;
        loop {
            // First, so that an exit before the watch existed is seen.
            if let Some(status) = std.try_wait()? {
                return Poll::Ready(Ok(status));
            }
            match watch {
                ExitWatch::Pidfd(io) => {
                    let mut ready = ready!(io.poll_read_ready(cx))?;
                    // Readable means exited, so `try_wait` reaps it; if it
                    // says "running", the readiness was stale: wait again.
                    if let Some(status) = std.try_wait()? {
                        return Poll::Ready(Ok(status));
                    }
                    ready.clear_ready();
                }
                ExitWatch::Sigchld(sig) => {
                    if ready!(sig.poll_recv(cx)).is_none() {
                        return Poll::Ready(Err(io::Error::other(
                            "cannot wait for SIGCHLD: the listener could not register with \
                             the reactor",
                        )));
                    }
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: `std` is taken once, here, and never used again.
        let mut std = unsafe { ManuallyDrop::take(&mut self.std) };
        // std caches the status once reaped: `Some` for a reaped child.
        if let Ok(None) = std.try_wait() {
            orphan(std);
        }
    }
}

static ORPHANS: Mutex<Vec<std::process::Child>> = Mutex::new(Vec::new());

fn orphan(child: std::process::Child) {
    ORPHANS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(child);
}

/// Reaps the orphans that have exited (called at every spawn).
pub(crate) fn reap_orphans() {
    let mut orphans = ORPHANS.lock().unwrap_or_else(|e| e.into_inner());
    orphans.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
}

/// Reaps a child that nothing watches (its watch could not be made), through
/// the orphan list.
pub(crate) fn reap_in_background_std(mut child: std::process::Child) {
    if let Ok(None) = child.try_wait() {
        orphan(child);
    }
}

/// Reaps a dropped child when it exits: on a task of the current runtime,
/// else through the orphan list.
pub(crate) fn reap_in_background(mut running: Running) {
    if let Ok(Some(_)) = running.std().try_wait() {
        return;
    }
    match Handle::try_current() {
        Ok(handle) => {
            drop(handle.spawn(async move {
                // An error (the watch could not register) leaves the child
                // to `Running`'s drop, which hands it to the orphan list.
                let _ = std::future::poll_fn(|cx| running.poll_wait(cx)).await;
            }));
        }
        Err(_) => drop(running),
    }
}

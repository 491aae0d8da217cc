//! Waking a parked port: an eventfd normally, loom's `Notify` under loom.

#[cfg(not(loom))]
mod imp {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::time::Duration;

    /// A non-blocking eventfd.
    #[derive(Debug)]
    pub(crate) struct Notifier {
        fd: OwnedFd,
    }

    impl Notifier {
        pub(crate) fn new() -> io::Result<Self> {
            // SAFETY: eventfd takes no pointers; the result is checked.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            Ok(Self { fd })
        }

        pub(crate) fn fd(&self) -> RawFd {
            self.fd.as_raw_fd()
        }

        /// Makes the fd readable. The only possible failure, EAGAIN on a
        /// counter near `u64::MAX`, still leaves it readable, so errors are
        /// ignored.
        pub(crate) fn notify(&self) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an fd we own.
            let _ = unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
        }

        /// Resets the counter so that the fd is no longer readable.
        pub(crate) fn drain(&self) {
            let mut buf: u64 = 0;
            // SAFETY: reads at most 8 bytes into a live u64 from an fd we own;
            // EAGAIN (nothing to drain) is the expected failure.
            let _ = unsafe { libc::read(self.fd(), (&mut buf as *mut u64).cast(), 8) };
        }

        /// Blocks until the fd is readable or `timeout` passes; returns
        /// whether it became readable.
        pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
            let ms = timeout.map_or(-1, |d| {
                // Round up so that a short timeout does not become a spin.
                let ms = d.as_nanos().div_ceil(1_000_000);
                i32::try_from(ms).unwrap_or(i32::MAX)
            });
            let mut pfd = libc::pollfd {
                fd: self.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            loop {
                // SAFETY: `pfd` is a live pollfd array of length 1.
                let n = unsafe { libc::poll(&mut pfd, 1, ms) };
                if n >= 0 {
                    return Ok(n > 0);
                }
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

#[cfg(loom)]
mod imp {
    use std::io;
    use std::time::Duration;

    /// Under loom: a park/unpark primitive that loom can reason about. A
    /// wait that is never notified is reported by loom as a deadlock, which
    /// is how the models catch lost wake-ups.
    #[derive(Debug)]
    pub(crate) struct Notifier {
        notify: loom::sync::Notify,
    }

    impl Notifier {
        pub(crate) fn new() -> io::Result<Self> {
            Ok(Self {
                notify: loom::sync::Notify::new(),
            })
        }

        pub(crate) fn notify(&self) {
            self.notify.notify();
        }

        pub(crate) fn drain(&self) {}

        pub(crate) fn wait(&self, _timeout: Option<Duration>) -> io::Result<bool> {
            self.notify.wait();
            Ok(true)
        }
    }
}

pub(crate) use imp::Notifier;

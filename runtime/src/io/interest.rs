//! [`Interest`]: which readiness a source is registered for.

use std::fmt;
use std::ops;

/// The readiness events an I/O source is registered for, with tokio's
/// names: [`READABLE`](Self::READABLE), [`WRITABLE`](Self::WRITABLE), or
/// both (`Interest::READABLE | Interest::WRITABLE`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interest(u8);

impl Interest {
    /// Readable: data to read, a connection to accept, the read half closed.
    pub const READABLE: Interest = Interest(1);
    /// Writable: room to write, a connection completed, the write half
    /// closed.
    pub const WRITABLE: Interest = Interest(1 << 1);

    /// Both interests.
    #[must_use]
    pub const fn add(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }

    /// Whether it includes readable.
    pub const fn is_readable(self) -> bool {
        self.0 & Self::READABLE.0 != 0
    }

    /// Whether it includes writable.
    pub const fn is_writable(self) -> bool {
        self.0 & Self::WRITABLE.0 != 0
    }

    pub(crate) fn to_mio(self) -> mio::Interest {
        match (self.is_readable(), self.is_writable()) {
            (true, true) => mio::Interest::READABLE | mio::Interest::WRITABLE,
            (false, true) => mio::Interest::WRITABLE,
            // `Interest` has no empty value: neither bit means readable.
            _ => mio::Interest::READABLE,
        }
    }
}

impl ops::BitOr for Interest {
    type Output = Interest;

    fn bitor(self, rhs: Interest) -> Interest {
        self.add(rhs)
    }
}

impl ops::BitOrAssign for Interest {
    fn bitor_assign(&mut self, rhs: Interest) {
        *self = self.add(rhs);
    }
}

impl fmt::Debug for Interest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.is_readable(), self.is_writable()) {
            (true, true) => f.write_str("READABLE | WRITABLE"),
            (true, false) => f.write_str("READABLE"),
            (false, true) => f.write_str("WRITABLE"),
            (false, false) => f.write_str("(none)"),
        }
    }
}

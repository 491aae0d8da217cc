//! [`DlbError`]: every way building or using a domain can fail.

use std::{fmt, io, path::PathBuf};

/// An error from building a domain or using a port.
///
/// Configuration errors name the offending setting and the accepted range.
/// Converting into [`io::Error`] keeps the message.
#[derive(Debug)]
#[non_exhaustive]
pub enum DlbError {
    /// The CQ depth is not a power of two in the accepted range.
    CqDepth {
        /// The depth asked for.
        depth: u32,
        /// Smallest accepted depth.
        min: u32,
        /// Largest accepted depth.
        max: u32,
    },
    /// The domain has no port.
    NoPorts,
    /// More ports than the backend has.
    TooManyPorts {
        /// Ports asked for.
        requested: usize,
        /// Ports the backend offers.
        max: usize,
    },
    /// The domain has no load-balanced queue, or more than the backend has.
    Queues {
        /// Queues asked for.
        requested: usize,
        /// Queues the backend offers.
        max: usize,
    },
    /// A link names a port or queue that does not exist, or a priority above 7.
    InvalidLink {
        /// The port of the link.
        port: usize,
        /// The queue of the link.
        queue: u8,
        /// The link priority.
        priority: u8,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A port is linked to more queues than a port can serve.
    TooManyLinks {
        /// The port.
        port: usize,
        /// Number of links asked for.
        links: usize,
        /// Largest number of links per port.
        max: usize,
    },
    /// The credit pool is empty or larger than the backend supports.
    Credits {
        /// Credits asked for.
        requested: u32,
        /// Largest credit pool.
        max: u32,
    },
    /// `send` was given an event it cannot schedule. Events before `index`
    /// were sent on an earlier call; this event and the rest were not.
    InvalidEvent {
        /// Index of the event in the slice passed to `send`.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The port does not exist.
    NoSuchPort {
        /// The port asked for.
        port: usize,
        /// Number of ports in the domain.
        ports: usize,
    },
    /// The port was already taken from the domain by another owner.
    PortTaken {
        /// The port asked for.
        port: usize,
    },
    /// `FULCRUM_DLB` holds a value that is not `auto`, `soft`, `hw` or `hw:N`.
    BadEnv {
        /// The value found.
        value: String,
    },
    /// No DLB device could be found.
    DeviceNotFound {
        /// The directory searched (normally `/dev`).
        dir: PathBuf,
        /// The device asked for.
        requested: u32,
    },
    /// `libdlb.so` could not be loaded, or lacks a symbol.
    Library {
        /// The library path or name tried.
        path: PathBuf,
        /// What the dynamic loader said.
        reason: String,
    },
    /// A libdlb call failed.
    Hardware {
        /// The libdlb function.
        call: &'static str,
        /// Its return value.
        code: i64,
        /// `errno` after the call.
        errno: i32,
    },
    /// An operating-system error (creating or polling the readiness fd).
    Io(io::Error),
    /// The port request was refused by the test-only fault injection
    /// (feature `fault-injection`); the port was not taken, and retrying may
    /// succeed.
    #[cfg(feature = "fault-injection")]
    PortRefused {
        /// The port asked for.
        port: usize,
    },
}

impl DlbError {
    /// Whether the same call may succeed if retried. Only a port refused by
    /// the test-only fault injection is transient; without the
    /// `fault-injection` feature this is always `false`.
    pub fn is_transient(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if let Self::PortRefused { .. } = self {
            return true;
        }
        false
    }
}

impl fmt::Display for DlbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CqDepth { depth, min, max } => write!(
                f,
                "dlb: CQ depth {depth} is invalid: it must be a power of two from {min} to {max}"
            ),
            Self::NoPorts => write!(f, "dlb: a domain needs at least one port"),
            Self::TooManyPorts { requested, max } => write!(
                f,
                "dlb: {requested} ports requested but the backend has {max}"
            ),
            Self::Queues { requested, max } => write!(
                f,
                "dlb: {requested} load-balanced queues requested; the backend supports 1 to {max}"
            ),
            Self::InvalidLink {
                port,
                queue,
                priority,
                reason,
            } => write!(
                f,
                "dlb: invalid link of port {port} to queue {queue} at priority {priority}: {reason}"
            ),
            Self::TooManyLinks { port, links, max } => write!(
                f,
                "dlb: port {port} is linked to {links} queues; a port can be linked to at most {max}"
            ),
            Self::Credits { requested, max } => write!(
                f,
                "dlb: credit pool of {requested} is invalid: it must be from 1 to {max}"
            ),
            Self::InvalidEvent { index, reason } => {
                write!(f, "dlb: event {index} of the batch was not sent: {reason}")
            }
            Self::NoSuchPort { port, ports } => {
                write!(f, "dlb: port {port} does not exist (the domain has {ports})")
            }
            Self::PortTaken { port } => write!(f, "dlb: port {port} is already taken"),
            Self::BadEnv { value } => write!(
                f,
                "dlb: FULCRUM_DLB={value:?} is not one of auto, soft, hw, hw:N"
            ),
            Self::DeviceNotFound { dir, requested } => write!(
                f,
                "dlb: device {requested} not found, and no other dlb device in {}",
                dir.display()
            ),
            Self::Library { path, reason } => {
                write!(f, "dlb: cannot use {}: {reason}", path.display())
            }
            Self::Hardware { call, code, errno } => write!(
                f,
                "dlb: {call} failed with {code}: {}",
                io::Error::from_raw_os_error(*errno)
            ),
            Self::Io(e) => write!(f, "dlb: {e}"),
            #[cfg(feature = "fault-injection")]
            Self::PortRefused { port } => write!(
                f,
                "dlb: port {port} refused by fault injection (transient: retry)"
            ),
        }
    }
}

impl std::error::Error for DlbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for DlbError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<DlbError> for io::Error {
    fn from(e: DlbError) -> Self {
        let kind = match &e {
            DlbError::Io(inner) => inner.kind(),
            DlbError::DeviceNotFound { .. } | DlbError::Library { .. } => io::ErrorKind::NotFound,
            DlbError::PortTaken { .. } => io::ErrorKind::AlreadyExists,
            DlbError::Hardware { .. } => io::ErrorKind::Other,
            #[cfg(feature = "fault-injection")]
            DlbError::PortRefused { .. } => io::ErrorKind::Interrupted,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

//! Building a [`Domain`](crate::Domain): [`DomainBuilder`] and [`Backend`].

use std::{path::PathBuf, str::FromStr};

use crate::{DlbError, Domain};

/// Smallest CQ depth. libdlb's floor is 8; loom models use smaller queues so
/// that they finish.
#[cfg(not(loom))]
pub const MIN_CQ_DEPTH: u32 = 8;
/// Smallest CQ depth (shrunk under loom so that models finish).
#[cfg(loom)]
pub const MIN_CQ_DEPTH: u32 = 2;
/// Largest CQ depth.
pub const MAX_CQ_DEPTH: u32 = 1024;
/// Default CQ depth: 8, the depth that balances best on hardware.
pub const DEFAULT_CQ_DEPTH: u32 = 8;
/// Most ports in one domain (DLB 2.0 has 64 load-balanced ports).
pub const MAX_PORTS: usize = 64;
/// Most load-balanced queues in one domain (DLB 2.0 has 32).
pub const MAX_QUEUES: usize = 32;
/// Most queues one port can be linked to.
pub const MAX_LINKS_PER_PORT: usize = 8;
/// Largest credit pool (DLB 2.0 stores 8K load-balanced QEs; the software
/// backend allows more).
pub const MAX_CREDITS: u32 = 1 << 16;
/// Default credit pool.
pub const DEFAULT_CREDITS: u32 = 1024;

/// Which implementation carries the events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// Hardware if a DLB device and `libdlb.so` are found, else software.
    /// A log line says which was chosen and why.
    #[default]
    Auto,
    /// The lock-free software emulation.
    Software,
    /// A DLB device through libdlb. Building fails with a clear error if no
    /// device or no library is found. If `/dev/dlb{device}` is missing, the
    /// other devices are scanned and the first found is used, with a warning.
    Hardware {
        /// The device number N of `/dev/dlbN`.
        device: u32,
    },
}

/// Name of the environment variable that overrides the backend choice.
pub const BACKEND_ENV: &str = "FULCRUM_DLB";

impl Backend {
    /// The backend named by `FULCRUM_DLB`, if it is set.
    ///
    /// # Errors
    /// [`DlbError::BadEnv`] if it is set to something other than `auto`,
    /// `soft`, `hw` or `hw:N`.
    pub fn from_env() -> Result<Option<Self>, DlbError> {
        match std::env::var(BACKEND_ENV) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => v.parse().map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(DlbError::BadEnv {
                value: v.to_string_lossy().into_owned(),
            }),
        }
    }
}

impl FromStr for Backend {
    type Err = DlbError;

    /// Parses `auto`, `soft` (or `software`), `hw` (or `hardware`) and `hw:N`.
    fn from_str(s: &str) -> Result<Self, DlbError> {
        let bad = || DlbError::BadEnv {
            value: s.to_owned(),
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "soft" | "software" => Ok(Self::Software),
            "hw" | "hardware" => Ok(Self::Hardware { device: 0 }),
            other => {
                let n = other
                    .strip_prefix("hw:")
                    .or_else(|| other.strip_prefix("hardware:"))
                    .ok_or_else(bad)?;
                let device = n.parse::<u32>().map_err(|_| bad())?;
                Ok(Self::Hardware { device })
            }
        }
    }
}

/// A validated domain configuration, shared by the backends.
#[derive(Clone, Debug)]
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct Config {
    pub(crate) queues: usize,
    pub(crate) ports: usize,
    pub(crate) cq_depth: u32,
    pub(crate) credits: u32,
    /// Per port: `(queue, link priority)`, sorted by priority.
    pub(crate) links: Vec<Vec<(u8, u8)>>,
    pub(crate) library_path: Option<PathBuf>,
    pub(crate) device_dir: PathBuf,
}

/// Builds a [`Domain`].
///
/// Defaults: one load-balanced queue, CQ depth 8, 1024 credits,
/// [`Backend::Auto`] (overridden by `FULCRUM_DLB`), and, when no link is
/// given, every port linked to every queue at priority 0.
///
/// ```
/// use fulcrum_dlb::{Backend, Domain};
/// let domain = Domain::builder()
///     .backend(Backend::Software)
///     .ports(4)
///     .cq_depth(16)
///     .credits(256)
///     .build()?;
/// assert_eq!(domain.num_ports(), 4);
/// # Ok::<(), fulcrum_dlb::DlbError>(())
/// ```
#[derive(Clone, Debug)]
pub struct DomainBuilder {
    backend: Backend,
    backend_from_env: bool,
    queues: usize,
    ports: usize,
    cq_depth: u32,
    credits: u32,
    links: Vec<(usize, u8, u8)>,
    library_path: Option<PathBuf>,
    device_dir: Option<PathBuf>,
}

impl Default for DomainBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DomainBuilder {
    /// A builder with the defaults listed on the type.
    pub fn new() -> Self {
        Self {
            backend: Backend::Auto,
            backend_from_env: true,
            queues: 1,
            ports: 1,
            cq_depth: DEFAULT_CQ_DEPTH,
            credits: DEFAULT_CREDITS,
            links: Vec::new(),
            library_path: None,
            device_dir: None,
        }
    }

    /// Chooses the backend. `FULCRUM_DLB`, when set, still overrides it
    /// unless [`ignore_env`](Self::ignore_env) is called.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Ignores `FULCRUM_DLB`: the backend given to
    /// [`backend`](Self::backend) is final.
    pub fn ignore_env(mut self) -> Self {
        self.backend_from_env = false;
        self
    }

    /// Number of load-balanced queues (1 to 32).
    pub fn queues(mut self, n: usize) -> Self {
        self.queues = n;
        self
    }

    /// Number of ports (1 to 64).
    pub fn ports(mut self, n: usize) -> Self {
        self.ports = n;
        self
    }

    /// Depth of each port's consumer queue: a power of two from 8 to 1024.
    pub fn cq_depth(mut self, depth: u32) -> Self {
        self.cq_depth = depth;
        self
    }

    /// Size of the credit pool: how many events may wait in queues at once.
    pub fn credits(mut self, credits: u32) -> Self {
        self.credits = credits;
        self
    }

    /// Links `port` to load-balanced `queue` with link `priority` (0 highest
    /// ..= 7). A port serves its higher-priority links first. A port may be
    /// linked to at most 8 queues; a port with no link only produces.
    pub fn link(mut self, port: usize, queue: u8, priority: u8) -> Self {
        self.links.push((port, queue, priority));
        self
    }

    /// Overrides where `libdlb.so` is loaded from (hardware backend).
    /// The environment variable `FULCRUM_LIBDLB` does the same.
    pub fn library_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.library_path = Some(path.into());
        self
    }

    /// Overrides the directory searched for `dlbN` device nodes (default
    /// `/dev`; the environment variable `FULCRUM_DLB_DEV_DIR` does the same).
    pub fn device_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.device_dir = Some(dir.into());
        self
    }

    /// The backend after applying `FULCRUM_DLB`.
    pub(crate) fn effective_backend(&self) -> Result<Backend, DlbError> {
        if self.backend_from_env {
            if let Some(b) = Backend::from_env()? {
                return Ok(b);
            }
        }
        Ok(self.backend)
    }

    /// Checks the configuration.
    pub(crate) fn validate(&self) -> Result<Config, DlbError> {
        if !self.cq_depth.is_power_of_two()
            || !(MIN_CQ_DEPTH..=MAX_CQ_DEPTH).contains(&self.cq_depth)
        {
            return Err(DlbError::CqDepth {
                depth: self.cq_depth,
                min: MIN_CQ_DEPTH,
                max: MAX_CQ_DEPTH,
            });
        }
        if self.ports == 0 {
            return Err(DlbError::NoPorts);
        }
        if self.ports > MAX_PORTS {
            return Err(DlbError::TooManyPorts {
                requested: self.ports,
                max: MAX_PORTS,
            });
        }
        if self.queues == 0 || self.queues > MAX_QUEUES {
            return Err(DlbError::Queues {
                requested: self.queues,
                max: MAX_QUEUES,
            });
        }
        if self.credits == 0 || self.credits > MAX_CREDITS {
            return Err(DlbError::Credits {
                requested: self.credits,
                max: MAX_CREDITS,
            });
        }
        let mut links = vec![Vec::new(); self.ports];
        if self.links.is_empty() {
            for port_links in &mut links {
                // `queues` <= 32 was checked above.
                port_links.extend((0..self.queues as u8).map(|q| (q, 0)));
            }
        }
        for &(port, queue, priority) in &self.links {
            let bad = |reason| DlbError::InvalidLink {
                port,
                queue,
                priority,
                reason,
            };
            if port >= self.ports {
                return Err(bad("no such port"));
            }
            if usize::from(queue) >= self.queues {
                return Err(bad("no such queue"));
            }
            if priority > crate::PRIORITY_LOWEST {
                return Err(bad("link priority must be 0 (highest) to 7"));
            }
            if links[port].iter().any(|&(q, _)| q == queue) {
                return Err(bad("port already linked to this queue"));
            }
            links[port].push((queue, priority));
        }
        for (port, port_links) in links.iter_mut().enumerate() {
            if port_links.len() > MAX_LINKS_PER_PORT {
                return Err(DlbError::TooManyLinks {
                    port,
                    links: port_links.len(),
                    max: MAX_LINKS_PER_PORT,
                });
            }
            port_links.sort_by_key(|&(q, prio)| (prio, q));
        }
        let env_path = |name| std::env::var_os(name).map(PathBuf::from);
        Ok(Config {
            queues: self.queues,
            ports: self.ports,
            cq_depth: self.cq_depth,
            credits: self.credits,
            links,
            library_path: self
                .library_path
                .clone()
                .or_else(|| env_path("FULCRUM_LIBDLB")),
            device_dir: self
                .device_dir
                .clone()
                .or_else(|| env_path("FULCRUM_DLB_DEV_DIR"))
                .unwrap_or_else(|| PathBuf::from("/dev")),
        })
    }

    /// Builds the domain.
    ///
    /// # Errors
    /// A [`DlbError`] naming the bad setting, or why the hardware backend
    /// could not be used when [`Backend::Hardware`] was asked for.
    pub fn build(self) -> Result<Domain, DlbError> {
        Domain::from_builder(self)
    }
}

//! Host names: [`ToSocketAddrs`] (sealed, tokio's shape) and
//! [`lookup_host`]. Socket addresses and IP literals resolve at once; a
//! host name is looked up with the system resolver (`getaddrinfo`, through
//! std) on the runtime's blocking pool, so that a slow lookup never stalls
//! a worker.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::pin::Pin;
use std::task::{Context, Poll};

use fulcrum_runtime::{Handle, JoinHandle};

/// Something that resolves to socket addresses, for `connect`, `bind` and
/// `send_to`; tokio's `net::ToSocketAddrs`. Sealed: implemented for
/// [`SocketAddr`], [`SocketAddrV4`], [`SocketAddrV6`], `(IpAddr, u16)`,
/// `(Ipv4Addr, u16)`, `(Ipv6Addr, u16)`, `&[SocketAddr]`, `str` and
/// `String` (`"host:port"`, or an address), `(&str, u16)` and
/// `(String, u16)` (a host or an IP literal, and a port), and references to
/// any of these.
///
/// Addresses and IP literals resolve without leaving the task; a host name
/// is looked up on the runtime's blocking pool
/// ([`spawn_blocking`](fulcrum_runtime::spawn_blocking)), as tokio does, so
/// the worker keeps running its other tasks meanwhile. A lookup outside a
/// Fulcrum runtime is an error (there is no pool to run it on).
pub trait ToSocketAddrs: sealed::ToSocketAddrsPriv {}

pub(crate) mod sealed {
    use super::MaybeReady;

    /// The sealed half of [`ToSocketAddrs`](super::ToSocketAddrs).
    pub trait ToSocketAddrsPriv {
        /// Starts the resolution.
        fn to_socket_addrs(&self, _: Internal) -> MaybeReady;
    }

    /// Keeps [`ToSocketAddrsPriv::to_socket_addrs`] uncallable outside the
    /// crate.
    #[derive(Debug)]
    pub struct Internal;
}

use sealed::{Internal, ToSocketAddrsPriv};

/// A resolution: done, or running on the blocking pool.
#[derive(Debug)]
pub enum MaybeReady {
    /// Resolved without a lookup (taken on the first poll).
    Ready(Option<io::Result<Vec<SocketAddr>>>),
    /// A host-name lookup on the blocking pool.
    Blocking(JoinHandle<io::Result<Vec<SocketAddr>>>),
}

impl Future for MaybeReady {
    type Output = io::Result<Vec<SocketAddr>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            MaybeReady::Ready(out) => Poll::Ready(out.take().unwrap_or_else(|| {
                Err(io::Error::other(
                    "a resolution was polled after it completed",
                ))
            })),
            MaybeReady::Blocking(join) => match Pin::new(join).poll(cx) {
                Poll::Ready(Ok(out)) => Poll::Ready(out),
                Poll::Ready(Err(e)) => Poll::Ready(Err(io::Error::other(format!(
                    "host-name lookup did not complete: {e}"
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

fn ready(addrs: Vec<SocketAddr>) -> MaybeReady {
    MaybeReady::Ready(Some(Ok(addrs)))
}

/// Looks `host` up on the current runtime's blocking pool.
fn blocking_lookup(host: String, port: u16) -> MaybeReady {
    match Handle::try_current() {
        Ok(handle) => MaybeReady::Blocking(handle.spawn_blocking(move || lookup(&host, port))),
        Err(_) => MaybeReady::Ready(Some(Err(io::Error::other(format!(
            "looking up {host:?} needs a Fulcrum runtime: the lookup runs on its blocking pool"
        ))))),
    }
}

/// The lookup itself, on a blocking-pool thread.
fn lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    #[cfg(feature = "resolver-hook")]
    if let Some(out) = hook::call(host, port) {
        return out;
    }
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port)).map(Iterator::collect)
}

/// Resolves `addr`; an error if it resolves to nothing.
pub(crate) async fn resolve(addr: impl ToSocketAddrs) -> io::Result<Vec<SocketAddr>> {
    let addrs = addr.to_socket_addrs(Internal).await?;
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        ));
    }
    Ok(addrs)
}

/// The addresses `host` resolves to; tokio's `net::lookup_host`. `host` is
/// anything [`ToSocketAddrs`] takes, such as `"example.com:443"` or
/// `("example.com", 443)`; a host name is looked up on the runtime's
/// blocking pool.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// for addr in fulcrum_net::lookup_host("localhost:8080").await? {
///     println!("{addr}");
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// The resolver's error (an unknown host, a malformed `"host:port"`), or an
/// error outside a Fulcrum runtime.
pub async fn lookup_host<T: ToSocketAddrs>(
    host: T,
) -> io::Result<impl Iterator<Item = SocketAddr>> {
    Ok(host.to_socket_addrs(Internal).await?.into_iter())
}

macro_rules! ready_impl {
    ($($ty:ty => |$s:ident| $addr:expr),* $(,)?) => {$(
        impl ToSocketAddrs for $ty {}
        impl ToSocketAddrsPriv for $ty {
            fn to_socket_addrs(&self, _: Internal) -> MaybeReady {
                let $s = self;
                ready(vec![$addr])
            }
        }
    )*};
}

ready_impl! {
    SocketAddr => |a| *a,
    SocketAddrV4 => |a| SocketAddr::V4(*a),
    SocketAddrV6 => |a| SocketAddr::V6(*a),
    (IpAddr, u16) => |a| SocketAddr::new(a.0, a.1),
    (Ipv4Addr, u16) => |a| SocketAddr::new(IpAddr::V4(a.0), a.1),
    (Ipv6Addr, u16) => |a| SocketAddr::new(IpAddr::V6(a.0), a.1),
}

impl ToSocketAddrs for &[SocketAddr] {}
impl ToSocketAddrsPriv for &[SocketAddr] {
    fn to_socket_addrs(&self, _: Internal) -> MaybeReady {
        ready(self.to_vec())
    }
}

impl ToSocketAddrs for str {}
impl ToSocketAddrsPriv for str {
    fn to_socket_addrs(&self, _: Internal) -> MaybeReady {
        if let Ok(addr) = self.parse::<SocketAddr>() {
            return ready(vec![addr]);
        }
        // std's `"host:port"` form: the port after the last colon.
        let Some((host, port)) = self.rsplit_once(':') else {
            return MaybeReady::Ready(Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid socket address: expected \"host:port\"",
            ))));
        };
        match port.parse::<u16>() {
            Ok(port) => blocking_lookup(host.to_owned(), port),
            Err(_) => MaybeReady::Ready(Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid port value",
            )))),
        }
    }
}

impl ToSocketAddrs for String {}
impl ToSocketAddrsPriv for String {
    fn to_socket_addrs(&self, _: Internal) -> MaybeReady {
        self.as_str().to_socket_addrs(Internal)
    }
}

impl ToSocketAddrs for (&str, u16) {}
impl ToSocketAddrsPriv for (&str, u16) {
    fn to_socket_addrs(&self, _: Internal) -> MaybeReady {
        let (host, port) = *self;
        match host.parse::<IpAddr>() {
            Ok(ip) => ready(vec![SocketAddr::new(ip, port)]),
            Err(_) => blocking_lookup(host.to_owned(), port),
        }
    }
}

impl ToSocketAddrs for (String, u16) {}
impl ToSocketAddrsPriv for (String, u16) {
    fn to_socket_addrs(&self, _: Internal) -> MaybeReady {
        (self.0.as_str(), self.1).to_socket_addrs(Internal)
    }
}

impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {}
impl<T: ToSocketAddrsPriv + ?Sized> ToSocketAddrsPriv for &T {
    fn to_socket_addrs(&self, _: Internal) -> MaybeReady {
        (**self).to_socket_addrs(Internal)
    }
}

/// **TEST-ONLY** (feature `resolver-hook`): replaces the system resolver
/// for host-name lookups, so that tests can make a lookup slow, or fail,
/// deterministically and without a network. The hook runs where the
/// lookup would (on a blocking-pool thread); returning `None` falls back
/// to the system resolver. Never enable this feature in a production
/// build: the hook is process-wide.
#[cfg(feature = "resolver-hook")]
pub mod hook {
    use std::io;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    /// A replacement resolver: `(host, port)` to addresses, or `None` for
    /// the system resolver.
    pub type Hook = Arc<dyn Fn(&str, u16) -> Option<io::Result<Vec<SocketAddr>>> + Send + Sync>;

    static HOOK: Mutex<Option<Hook>> = Mutex::new(None);

    /// Installs `hook` (or, with `None`, removes it).
    pub fn set(hook: Option<Hook>) {
        *HOOK.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    pub(super) fn call(host: &str, port: u16) -> Option<io::Result<Vec<SocketAddr>>> {
        let hook = HOOK.lock().unwrap_or_else(|e| e.into_inner()).clone();
        hook.and_then(|h| h(host, port))
    }
}

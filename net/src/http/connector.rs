//! `Connector`: the TCP connector of hyper-util's legacy `Client` on
//! Fulcrum.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use tower_service::Service;

use crate::hyper::HyperIo;
use crate::{TcpStream, UnixStream};

/// Connects to the host and port of a [`Uri`]: the connector that
/// hyper-util's legacy `Client` takes (`Client::builder(FulcrumExecutor)
/// .timer(FulcrumTimer).build(Connector::new())`), and that hyper-rustls's
/// `HttpsConnectorBuilder::wrap_connector` and tonic's
/// `XClient::with_origin` build on.
///
/// Host names are resolved on the blocking pool
/// ([`lookup_host`](crate::lookup_host)), never on a worker; the addresses
/// are tried in order, each with the connect timeout; the stream has
/// `TCP_NODELAY` set (by default). The port defaults to 80 for `http` and
/// 443 for `https` URIs.
///
/// ```no_run
/// use fulcrum_net::http::{Connector, FulcrumExecutor, FulcrumTimer};
/// use hyper_util::client::legacy::Client;
/// use std::time::Duration;
///
/// # async fn get() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let connector = Connector::new().connect_timeout(Some(Duration::from_secs(5)));
/// let client: Client<_, String> = Client::builder(FulcrumExecutor::new())
///     .timer(FulcrumTimer::new())
///     .pool_timer(FulcrumTimer::new())
///     .build(connector);
/// let response = client.get("http://127.0.0.1:3000/".parse()?).await?;
/// println!("{}", response.status());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Connector {
    connect_timeout: Option<Duration>,
    nodelay: bool,
}

impl Default for Connector {
    fn default() -> Self {
        Self::new()
    }
}

impl Connector {
    /// A connector with `TCP_NODELAY` and no connect timeout (as
    /// hyper-util's `HttpConnector`: the operating system's, about two
    /// minutes for an unanswered SYN).
    pub fn new() -> Self {
        Self {
            connect_timeout: None,
            nodelay: true,
        }
    }

    /// How long one connection attempt (one resolved address) may take;
    /// `None`: the operating system's limit.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether the streams get `TCP_NODELAY` (default `true`).
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    async fn connect(self, uri: Uri) -> io::Result<HyperIo<TcpStream>> {
        let invalid = |what: &str| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{what} in URI {uri}"))
        };
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        // `Uri::host` keeps an IPv6 literal's brackets.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = match (uri.port_u16(), uri.scheme_str()) {
            (Some(port), _) => port,
            (None, Some("http") | Some("ws")) => 80,
            (None, Some("https") | Some("wss")) => 443,
            (None, _) => return Err(invalid("no port and no known scheme")),
        };
        let mut last_error = None;
        for addr in crate::lookup_host((host, port)).await? {
            let attempt = TcpStream::connect(addr);
            let result = match self.connect_timeout {
                Some(limit) => match fulcrum_runtime::time::timeout(limit, attempt).await {
                    Ok(result) => result,
                    Err(_elapsed) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect to {addr} timed out after {limit:?}"),
                    )),
                },
                None => attempt.await,
            };
            match result {
                Ok(stream) => {
                    stream.set_nodelay(self.nodelay)?;
                    return Ok(HyperIo::new(stream));
                }
                Err(e) => {
                    tracing::debug!("connect to {addr} ({uri}): {e}");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolved to no address"),
            )
        }))
    }
}

/// The future of [`Connector`]'s `call`.
#[must_use = "futures do nothing unless polled"]
pub struct Connecting(Pin<Box<dyn Future<Output = io::Result<HyperIo<TcpStream>>> + Send>>);

impl fmt::Debug for Connecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connecting")
    }
}

impl Future for Connecting {
    type Output = io::Result<HyperIo<TcpStream>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl Service<Uri> for Connector {
    type Response = HyperIo<TcpStream>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        Connecting(Box::pin(self.clone().connect(uri)))
    }
}

/// hyper-util's client asks each connection what it is; a plain TCP stream
/// has nothing to add (no ALPN, no proxy).
impl Connection for HyperIo<TcpStream> {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Connection for HyperIo<UnixStream> {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

//! The configuration file (TOML), and its validation.
//!
//! TOML rather than YAML: the `toml` crate is actively maintained (the
//! common YAML binding for serde, `serde_yaml`, is archived), TOML has no
//! implicit typing surprises (`no` is not `false`), and its parser reports
//! the line and column of every error, so a bad file fails with the file,
//! the field and the reason.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};

/// The smallest value hyper accepts for its read buffer (and so for the
/// header-size limit).
const MIN_HEADER_BYTES: usize = 8192;

/// The most retries a cluster may configure (more only multiplies the load
/// on a failing cluster).
const MAX_RETRIES: u32 = 10;

/// A configuration error: which file, which field, and why.
#[derive(Debug)]
pub struct ConfigError {
    file: String,
    field: String,
    reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The whole file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The client-facing listener.
    pub listener: Listener,
    /// The admin listener.
    #[serde(default)]
    pub admin: Admin,
    /// Routes, tried in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Upstream clusters.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
}

/// `[listener]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Address to listen on.
    pub address: String,
    /// Worker threads; default: the available parallelism.
    pub workers: Option<usize>,
    /// How connections are spread over the workers.
    #[serde(default = "default_balance")]
    pub balance: String,
    /// The DLB backend: `auto`, `soft`, `hw` or `hw:N`.
    #[serde(default = "default_backend")]
    pub dlb_backend: String,
    /// Time allowed to read a request head (slowloris guard).
    #[serde(default = "default_header_timeout")]
    pub header_timeout_ms: u64,
    /// Largest request head, in bytes (at least 8192).
    #[serde(default = "default_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body, in bytes.
    #[serde(default = "default_body_bytes")]
    pub max_body_bytes: usize,
    /// Time allowed to read a request body, once the head is in (slow
    /// POST guard): 408 after it.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_ms: u64,
    /// Time allowed for requests in flight to finish on SIGTERM/ctrl-c.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_ms: u64,
    /// One `tracing` line per request.
    #[serde(default = "default_true")]
    pub access_log: bool,
    /// HTTP/2 with prior knowledge (h2c) beside HTTP/1.1: a connection that
    /// opens with the HTTP/2 preface is served as HTTP/2.
    #[serde(default = "default_true")]
    pub http2: bool,
    /// Streams one HTTP/2 connection may have open at once.
    #[serde(default = "default_h2_streams")]
    pub http2_max_concurrent_streams: u32,
    /// Who serves HTTP/1.1: `native` (the default), the gateway's own
    /// proxy path (`h1.rs`), which hands a connection to hyper at the first
    /// request it does not take (an upgrade, a chunked body, anything
    /// malformed); or `hyper`, hyper for every HTTP/1 request.
    #[serde(default = "default_http1")]
    pub http1: String,
    /// TLS termination: the certificate chain (PEM), leaf first. Set
    /// together with `tls_key`, or neither (plain HTTP).
    #[serde(default)]
    pub tls_cert: Option<String>,
    /// TLS termination: the private key (PEM: PKCS#8, PKCS#1 or SEC1) of
    /// the certificate in `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<String>,
}

/// `[admin]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address of the admin listener (loopback by default).
    #[serde(default = "default_admin")]
    pub address: String,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            address: default_admin(),
        }
    }
}

/// `[[routes]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Host to match: exact (`api.example.com`), a suffix wildcard
    /// (`*.example.com`) or any (`*`, the default). Ports are ignored.
    #[serde(default = "default_host")]
    pub host: String,
    /// Path prefix to match (default `/`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Replaces the matched prefix before the request goes upstream.
    pub rewrite: Option<String>,
    /// The cluster to send to.
    pub cluster: String,
    /// Overrides the cluster's `request_timeout_ms` for this route: the
    /// upper bound on waiting for the upstream's response head, over all
    /// attempts (retries included).
    pub timeout_ms: Option<u64>,
    /// Protocols an HTTP/1.1 `Upgrade` may switch to on this route (say
    /// `["websocket"]`), passed through to the upstream; none by default:
    /// an upgrade request gets 501, as Envoy's `upgrade_configs` are off
    /// unless listed.
    #[serde(default)]
    pub upgrades: Vec<String>,
}

/// `[[clusters]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The name routes refer to.
    pub name: String,
    /// Upstream `host:port`s.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Start this many built-in httpbin-style backends on loopback and add
    /// them to the endpoints.
    #[serde(default)]
    pub demo_backends: usize,
    /// `round_robin`, `least_request` or `maglev`.
    #[serde(default = "default_policy")]
    pub policy: String,
    /// Maglev's key: `client_ip` (default) or `header:<name>`.
    pub hash_key: Option<String>,
    /// Maglev's table size: a prime (default 65537).
    #[serde(default = "default_table")]
    pub maglev_table_size: usize,
    /// Time allowed to connect to an endpoint.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Time allowed for the upstream's response head.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// Idle keep-alive connections kept per endpoint and worker.
    #[serde(default = "default_idle")]
    pub max_idle_per_endpoint: usize,
    /// The largest response head an endpoint may send (Envoy's default,
    /// 60 KiB); a larger one is a 502 and its connection is closed.
    #[serde(default = "default_response_head")]
    pub max_response_head_bytes: usize,
    /// Retries of a failed attempt on another endpoint (0: none; at most
    /// 10).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Envoy's retry budget: retries in flight may be at most this percent
    /// of the cluster's requests in flight (0–100)...
    #[serde(default = "default_retry_budget_percent")]
    pub retry_budget_percent: f64,
    /// ...but this many concurrent retries are always allowed.
    #[serde(default = "default_retry_min_concurrency")]
    pub retry_min_concurrency: u32,
    /// The active health check (none: every endpoint is always healthy).
    pub health_check: Option<HealthCheck>,
    /// Speak TLS to the endpoints (and in the health checks).
    #[serde(default)]
    pub tls: bool,
    /// The trust anchors (PEM certificates) an endpoint's certificate is
    /// verified against; required with `tls = true`.
    #[serde(default)]
    pub tls_ca: Option<String>,
    /// The name sent as SNI and verified in the endpoint's certificate;
    /// default: the host part of each endpoint.
    #[serde(default)]
    pub tls_server_name: Option<String>,
}

/// `[clusters.health_check]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path to GET; a 2xx answer is a pass.
    pub path: String,
    /// Time between checks of one endpoint.
    #[serde(default = "default_hc_interval")]
    pub interval_ms: u64,
    /// Time allowed for one check.
    #[serde(default = "default_hc_timeout")]
    pub timeout_ms: u64,
    /// Consecutive passes that put an ejected endpoint back.
    #[serde(default = "default_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures that eject an endpoint.
    #[serde(default = "default_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_balance() -> String {
    "dlb".into()
}
fn default_backend() -> String {
    "auto".into()
}
fn default_header_timeout() -> u64 {
    10_000
}
fn default_header_bytes() -> usize {
    16 * 1024
}
fn default_body_bytes() -> usize {
    1024 * 1024
}
fn default_body_timeout() -> u64 {
    30_000
}
fn default_drain_timeout() -> u64 {
    10_000
}
fn default_h2_streams() -> u32 {
    100
}
fn default_http1() -> String {
    "native".into()
}
fn default_true() -> bool {
    true
}
fn default_admin() -> String {
    "127.0.0.1:9901".into()
}
fn default_host() -> String {
    "*".into()
}
fn default_prefix() -> String {
    "/".into()
}
fn default_policy() -> String {
    "round_robin".into()
}
fn default_table() -> usize {
    65_537
}
fn default_connect_timeout() -> u64 {
    1_000
}
fn default_response_head() -> usize {
    60 * 1024
}

fn default_request_timeout() -> u64 {
    15_000
}
fn default_idle() -> usize {
    32
}
fn default_max_retries() -> u32 {
    1
}
fn default_retry_budget_percent() -> f64 {
    20.0
}
fn default_retry_min_concurrency() -> u32 {
    3
}
fn default_hc_interval() -> u64 {
    1_000
}
fn default_hc_timeout() -> u64 {
    500
}
fn default_threshold() -> u32 {
    2
}

/// Load-balancing policy of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Each healthy endpoint in turn.
    RoundRobin,
    /// Envoy's least request: the less busy of two random endpoints.
    LeastRequest,
    /// Maglev consistent hashing on a key.
    Maglev,
}

/// What Maglev hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// A request header (lower-case name); requests without it go round
    /// robin.
    Header(String),
}

/// A validated cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub name: String,
    pub endpoints: Vec<String>,
    pub demo_backends: usize,
    pub policy: Policy,
    pub hash_key: HashKey,
    pub table_size: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_idle: usize,
    pub max_response_head: usize,
    /// Retries on another endpoint after a failed attempt.
    pub max_retries: u32,
    /// The retry budget: percent of the cluster's requests in flight...
    pub retry_budget_percent: f64,
    /// ...with this many concurrent retries always allowed.
    pub retry_min_concurrency: u32,
    pub health: Option<HealthSpec>,
    /// TLS to the endpoints (`tls = true`), or none: plain TCP.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// A cluster's validated upstream TLS settings.
#[derive(Debug)]
pub struct UpstreamTls {
    /// Tells this cluster's TLS connections apart from other clusters' in
    /// the connection pool (its index among the clusters, plus one; plain
    /// connections are 0).
    pub id: usize,
    /// The client configuration: the cluster's trust anchors, ALPN
    /// `http/1.1`.
    pub config: Arc<rustls::ClientConfig>,
    /// The name to send and verify for each configured endpoint, in the
    /// order of `endpoints`.
    pub names: Vec<ServerName<'static>>,
}

impl UpstreamTls {
    /// The server name for endpoint number `index` of the cluster.
    pub fn name(&self, index: usize) -> Option<ServerName<'static>> {
        self.names.get(index).cloned()
    }

    /// A connector for a handshake with this cluster's settings.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }
}

/// A validated health check.
#[derive(Clone, Debug)]
pub struct HealthSpec {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// A validated route; `cluster` indexes [`Validated::clusters`].
#[derive(Clone, Debug)]
pub struct RouteSpec {
    pub host: String,
    pub prefix: String,
    pub rewrite: Option<String>,
    pub cluster: usize,
    /// The route's bound on the upstream response head (none: the
    /// cluster's `request_timeout`).
    pub timeout: Option<Duration>,
    /// The upgrade protocols allowed on the route, lowercase.
    pub upgrades: Vec<String>,
}

/// The configuration, checked and in the types the gateway uses.
#[derive(Clone, Debug)]
pub struct Validated {
    pub listen: SocketAddr,
    pub workers: usize,
    pub balance: fulcrum::net::Balance,
    pub backend: fulcrum::dlb::Backend,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub drain_timeout: Duration,
    pub access_log: bool,
    pub http2: bool,
    pub http2_max_concurrent_streams: u32,
    /// HTTP/1.1 on the gateway's own proxy path (`http1 = "native"`), or
    /// on hyper only.
    pub native_http1: bool,
    /// TLS termination on the listener (`tls_cert` and `tls_key`), with
    /// ALPN `h2` (if `http2`) and `http/1.1`; none: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub admin: SocketAddr,
    pub routes: Vec<RouteSpec>,
    pub clusters: Vec<ClusterSpec>,
    /// The file as parsed, for the admin's `/config`.
    pub raw: Config,
}

/// Parses and validates `text`, read from `file`.
pub fn parse(file: &str, text: &str) -> Result<Validated, ConfigError> {
    let raw: Config = toml::from_str(text).map_err(|e| parse_error(file, text, &e))?;
    validate(file, raw)
}

/// Turns a TOML error into file + field + reason: the field is the key
/// on the line the error points at.
fn parse_error(file: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let reason = e.message().trim().to_owned();
    let Some(span) = e.span() else {
        return ConfigError {
            file: file.into(),
            field: "(document)".into(),
            reason,
        };
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = match line.split_once('=') {
        Some((k, _)) => k.trim().trim_matches('"').to_owned(),
        None => line.trim().to_owned(),
    };
    ConfigError {
        file: file.into(),
        field: format!("line {line_no}, `{key}`"),
        reason,
    }
}

/// Resolves `addr` (`host:port`) to one socket address.
fn socket_addr(addr: &str) -> Result<SocketAddr, String> {
    let mut it = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr:?} is not a host:port address ({e})"))?;
    it.next()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

/// Checks that `addr` has the `host:port` form; the name is resolved at
/// start-up, so that `--check` works away from the deployment's DNS.
fn host_port(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("{addr:?} is not a host:port address")),
    }
}

/// The rustls crypto provider of the gateway (ring), given explicitly so
/// that no process-wide default is needed.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The largest PEM file the gateway reads: a certificate chain or a
/// bundle of trust anchors is far smaller; a larger file (`/dev/zero`, a
/// wrong path) is refused rather than read without end.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Reads the PEM file `path` (at most [`MAX_PEM_BYTES`]), with its name in
/// the error.
fn read_pem(path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{path}: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("{path}: larger than {MAX_PEM_BYTES} bytes"));
    }
    Ok(bytes)
}

/// The certificates in PEM file `path`, at least one.
fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path}: not a valid PEM file ({e})"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no PEM certificate in it"));
    }
    Ok(certs)
}

/// The listener's TLS configuration: the chain in `cert`, the key in
/// `key`, checked against each other; ALPN `h2` (if `http2`), `http/1.1`.
/// An error names the field at fault and says why.
fn server_tls(
    cert: &str,
    key: &str,
    http2: bool,
) -> Result<rustls::ServerConfig, (&'static str, String)> {
    let chain = certificates(cert).map_err(|r| ("listener.tls_cert", r))?;
    let key_field = |r| ("listener.tls_key", r);
    let pem = read_pem(key).map_err(key_field)?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                format!("{key}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it")
            }
            e => format!("{key}: not a valid PEM private key ({e})"),
        })
        .map_err(key_field)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| key_field(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                format!("{key}: the private key does not match the certificate in {cert}")
            }
            e => format!("{key} with {cert}: {e}"),
        })
        .map_err(key_field)?;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// A cluster's client TLS configuration: trust anchors from `ca`, ALPN
/// `http/1.1` (upstream connections are HTTP/1.1).
fn client_tls(ca: &str) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certificates(ca)? {
        roots
            .add(c)
            .map_err(|e| format!("{ca}: not a usable trust anchor ({e})"))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The host part of `host:port` (an IPv6 address without its brackets).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `name` as a TLS server name (a DNS name or an IP address).
fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| format!("{name:?} is not a DNS name or IP address"))
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

fn validate(file: &str, raw: Config) -> Result<Validated, ConfigError> {
    let err = |field: String, reason: String| ConfigError {
        file: file.into(),
        field,
        reason,
    };
    let l = &raw.listener;
    let listen = socket_addr(&l.address).map_err(|r| err("listener.address".into(), r))?;
    let workers = match l.workers {
        Some(0) => return Err(err("listener.workers".into(), "must be at least 1".into())),
        Some(n) if n > 1024 => {
            return Err(err(
                "listener.workers".into(),
                format!("{n} is more than 1024"),
            ))
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let balance = l
        .balance
        .parse()
        .map_err(|e: std::io::Error| err("listener.balance".into(), e.to_string()))?;
    let backend = l
        .dlb_backend
        .parse()
        .map_err(|e: fulcrum::dlb::DlbError| err("listener.dlb_backend".into(), e.to_string()))?;
    if l.max_header_bytes < MIN_HEADER_BYTES {
        return Err(err(
            "listener.max_header_bytes".into(),
            format!(
                "{} is below the minimum of {MIN_HEADER_BYTES}",
                l.max_header_bytes
            ),
        ));
    }
    for (f, v) in [
        ("listener.header_timeout_ms", l.header_timeout_ms),
        ("listener.body_timeout_ms", l.body_timeout_ms),
        (
            "listener.http2_max_concurrent_streams",
            u64::from(l.http2_max_concurrent_streams),
        ),
    ] {
        if v == 0 {
            return Err(err(f.into(), "must be above 0".into()));
        }
    }
    let native_http1 = match l.http1.as_str() {
        "native" => true,
        "hyper" => false,
        other => {
            return Err(err(
                "listener.http1".into(),
                format!("{other:?} is neither \"native\" nor \"hyper\""),
            ))
        }
    };
    let tls = match (&l.tls_cert, &l.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(Arc::new(
            server_tls(cert, key, l.http2).map_err(|(f, r)| err(f.into(), r))?,
        )),
        (Some(_), None) => {
            return Err(err(
                "listener.tls_key".into(),
                "tls_cert is set without tls_key".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(err(
                "listener.tls_cert".into(),
                "tls_key is set without tls_cert".into(),
            ))
        }
    };
    let admin = socket_addr(&raw.admin.address).map_err(|r| err("admin.address".into(), r))?;

    let mut clusters = Vec::new();
    for (i, c) in raw.clusters.iter().enumerate() {
        let at = |f: &str| format!("clusters[{i}] ({}).{f}", c.name);
        if c.name.is_empty() {
            return Err(err(
                format!("clusters[{i}].name"),
                "must not be empty".into(),
            ));
        }
        if raw.clusters[..i].iter().any(|o| o.name == c.name) {
            return Err(err(
                at("name"),
                "a cluster of that name comes earlier".into(),
            ));
        }
        for (j, e) in c.endpoints.iter().enumerate() {
            host_port(e).map_err(|r| err(at(&format!("endpoints[{j}]")), r))?;
        }
        if c.endpoints.is_empty() && c.demo_backends == 0 {
            return Err(err(
                at("endpoints"),
                "a cluster needs at least one endpoint (or demo_backends)".into(),
            ));
        }
        if c.demo_backends > 16 {
            return Err(err(at("demo_backends"), "at most 16".into()));
        }
        let policy = match c.policy.as_str() {
            "round_robin" => Policy::RoundRobin,
            "least_request" => Policy::LeastRequest,
            "maglev" => Policy::Maglev,
            other => {
                return Err(err(
                    at("policy"),
                    format!(
                        "unknown policy {other:?}; expected round_robin, least_request or maglev"
                    ),
                ))
            }
        };
        let hash_key = match c.hash_key.as_deref() {
            None | Some("client_ip") => HashKey::ClientIp,
            Some(h) => match h.strip_prefix("header:") {
                Some(name) if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                    HashKey::Header(name.to_ascii_lowercase())
                }
                _ => {
                    return Err(err(
                        at("hash_key"),
                        format!("{h:?}: expected client_ip or header:<name>"),
                    ))
                }
            },
        };
        if c.hash_key.is_some() && policy != Policy::Maglev {
            return Err(err(at("hash_key"), "only the maglev policy hashes".into()));
        }
        // The bound first: a huge value would make the primality test slow.
        if c.maglev_table_size > 5_000_011 || !is_prime(c.maglev_table_size) {
            return Err(err(
                at("maglev_table_size"),
                format!("{} is not a prime up to 5000011", c.maglev_table_size),
            ));
        }
        if c.maglev_table_size < 100 * (c.endpoints.len() + c.demo_backends) {
            return Err(err(
                at("maglev_table_size"),
                "should be at least 100 times the number of endpoints".into(),
            ));
        }
        for (f, v) in [
            ("connect_timeout_ms", c.connect_timeout_ms),
            ("request_timeout_ms", c.request_timeout_ms),
        ] {
            if v == 0 {
                return Err(err(at(f), "must be above 0".into()));
            }
        }
        if c.max_response_head_bytes < MIN_HEADER_BYTES {
            return Err(err(
                at("max_response_head_bytes"),
                format!(
                    "{} is below the minimum of {MIN_HEADER_BYTES}",
                    c.max_response_head_bytes
                ),
            ));
        }
        if c.max_retries > MAX_RETRIES {
            return Err(err(
                at("max_retries"),
                format!("{} is more than {MAX_RETRIES}", c.max_retries),
            ));
        }
        if !(0.0..=100.0).contains(&c.retry_budget_percent) {
            return Err(err(
                at("retry_budget_percent"),
                format!(
                    "{} is not a percentage from 0 to 100",
                    c.retry_budget_percent
                ),
            ));
        }
        let health = match &c.health_check {
            None => None,
            Some(h) => {
                if !h.path.starts_with('/') {
                    return Err(err(at("health_check.path"), "must start with /".into()));
                }
                if h.interval_ms == 0 || h.timeout_ms == 0 {
                    return Err(err(
                        at("health_check"),
                        "interval_ms and timeout_ms must be above 0".into(),
                    ));
                }
                if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
                    return Err(err(
                        at("health_check"),
                        "thresholds must be at least 1".into(),
                    ));
                }
                Some(HealthSpec {
                    path: h.path.clone(),
                    interval: Duration::from_millis(h.interval_ms),
                    timeout: Duration::from_millis(h.timeout_ms),
                    healthy_threshold: h.healthy_threshold,
                    unhealthy_threshold: h.unhealthy_threshold,
                })
            }
        };
        let tls = if c.tls {
            let Some(ca) = &c.tls_ca else {
                return Err(err(
                    at("tls_ca"),
                    "required with tls = true (there is no system trust store)".into(),
                ));
            };
            if c.demo_backends > 0 {
                return Err(err(
                    at("tls"),
                    "the demo backends speak plain HTTP; use endpoints".into(),
                ));
            }
            let config = client_tls(ca).map_err(|r| err(at("tls_ca"), r))?;
            let names = match &c.tls_server_name {
                Some(n) => {
                    let n = server_name(n).map_err(|r| err(at("tls_server_name"), r))?;
                    vec![n; c.endpoints.len()]
                }
                None => c
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(j, e)| {
                        server_name(host_of(e)).map_err(|r| err(at(&format!("endpoints[{j}]")), r))
                    })
                    .collect::<Result<_, _>>()?,
            };
            Some(Arc::new(UpstreamTls {
                id: i + 1,
                config: Arc::new(config),
                names,
            }))
        } else {
            for (f, set) in [
                ("tls_ca", c.tls_ca.is_some()),
                ("tls_server_name", c.tls_server_name.is_some()),
            ] {
                if set {
                    return Err(err(at(f), "only with tls = true".into()));
                }
            }
            None
        };
        clusters.push(ClusterSpec {
            name: c.name.clone(),
            endpoints: c.endpoints.clone(),
            demo_backends: c.demo_backends,
            policy,
            hash_key,
            table_size: c.maglev_table_size,
            connect_timeout: Duration::from_millis(c.connect_timeout_ms),
            request_timeout: Duration::from_millis(c.request_timeout_ms),
            max_idle: c.max_idle_per_endpoint,
            max_response_head: c.max_response_head_bytes,
            max_retries: c.max_retries,
            retry_budget_percent: c.retry_budget_percent,
            retry_min_concurrency: c.retry_min_concurrency,
            health,
            tls,
        });
    }

    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let at = |f: &str| format!("routes[{i}].{f}");
        if !r.prefix.starts_with('/') {
            return Err(err(
                at("prefix"),
                format!("{:?} must start with /", r.prefix),
            ));
        }
        if let Some(rw) = &r.rewrite {
            if !rw.starts_with('/') {
                return Err(err(at("rewrite"), format!("{rw:?} must start with /")));
            }
        }
        if r.host.is_empty() || (r.host.contains('*') && r.host != "*" && !r.host.starts_with("*."))
        {
            return Err(err(
                at("host"),
                format!("{:?}: expected a host name, *.suffix or *", r.host),
            ));
        }
        if r.timeout_ms == Some(0) {
            return Err(err(at("timeout_ms"), "must be above 0".into()));
        }
        for u in &r.upgrades {
            // An HTTP token (RFC 9110 section 5.6.2); `h2c` is HTTP/2,
            // which the gateway speaks itself.
            let token = !u.is_empty()
                && u.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(err(
                    at("upgrades"),
                    format!("{u:?} is not a protocol name (an HTTP token, such as \"websocket\")"),
                ));
            }
            if u.eq_ignore_ascii_case("h2c") {
                return Err(err(
                    at("upgrades"),
                    "\"h2c\" cannot be passed through: the gateway serves HTTP/2 itself".into(),
                ));
            }
        }
        let cluster = raw
            .clusters
            .iter()
            .position(|c| c.name == r.cluster)
            .ok_or_else(|| err(at("cluster"), format!("no cluster named {:?}", r.cluster)))?;
        routes.push(RouteSpec {
            host: r.host.to_ascii_lowercase(),
            prefix: r.prefix.clone(),
            rewrite: r.rewrite.clone(),
            cluster,
            timeout: r.timeout_ms.map(Duration::from_millis),
            upgrades: r.upgrades.iter().map(|u| u.to_ascii_lowercase()).collect(),
        });
    }

    Ok(Validated {
        listen,
        workers,
        balance,
        backend,
        header_timeout: Duration::from_millis(l.header_timeout_ms),
        max_header_bytes: l.max_header_bytes,
        max_body_bytes: l.max_body_bytes,
        body_timeout: Duration::from_millis(l.body_timeout_ms),
        drain_timeout: Duration::from_millis(l.drain_timeout_ms),
        access_log: l.access_log,
        http2: l.http2,
        http2_max_concurrent_streams: l.http2_max_concurrent_streams,
        native_http1,
        tls,
        admin,
        routes,
        clusters,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("gateway.toml");

    #[test]
    fn the_shipped_file_is_the_default_and_valid() {
        let v = parse("gateway.toml", DEFAULT).unwrap();
        assert_eq!(v.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(v.admin.ip().to_string(), "127.0.0.1", "admin on loopback");
        assert_eq!(v.balance, fulcrum::net::Balance::Dlb);
        assert!(!v.routes.is_empty() && !v.clusters.is_empty());
    }

    fn error_of(text: &str) -> String {
        parse("bad.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn the_deployment_file_is_valid() {
        let text = include_str!("deploy/gateway.toml");
        let v = parse("deploy/gateway.toml", text).unwrap();
        assert_eq!(v.admin.ip().to_string(), "127.0.0.1", "admin on loopback");
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_reason() {
        let base = "[listener]\naddress = \"127.0.0.1:0\"\n";
        let e = error_of("[listener]\naddress = \"127.0.0.1:0\"\nworkers = \"two\"\n");
        assert!(
            e.starts_with("bad.toml: line 3, `workers`: invalid type"),
            "{e}"
        );
        let e = error_of("[listener]\naddress = \"127.0.0.1:0\"\nworkerz = 2\n");
        assert!(
            e.contains("`workerz`") && e.contains("unknown field"),
            "{e}"
        );
        let e = error_of("[listener]\naddress = \"nowhere\"\n");
        assert!(
            e.starts_with("bad.toml: listener.address: \"nowhere\""),
            "{e}"
        );
        let e = error_of(&format!(
            "{base}[[clusters]]\nname = \"a\"\nendpoints = [\"no-port\"]\n"
        ));
        assert!(
            e.contains("clusters[0] (a).endpoints[0]: \"no-port\" is not a host:port"),
            "{e}"
        );
        let e = error_of(&format!("{base}balance = \"random\"\n"));
        assert!(e.contains("listener.balance: unknown balance mode"), "{e}");
        let e = error_of(&format!("{base}max_header_bytes = 100\n"));
        assert!(e.contains("listener.max_header_bytes: 100 is below"), "{e}");
        let e = error_of(&format!(
            "{base}[[routes]]\nprefix = \"/\"\ncluster = \"nope\"\n"
        ));
        assert!(
            e.contains("routes[0].cluster: no cluster named \"nope\""),
            "{e}"
        );
        let e = error_of(&format!(
            "{base}[[clusters]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\npolicy = \"maglev\"\nmaglev_table_size = 65536\n"
        ));
        assert!(
            e.contains("clusters[0] (a).maglev_table_size: 65536 is not a prime"),
            "{e}"
        );
        let e = error_of(&format!(
            "{base}[[clusters]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\npolicy = \"random\"\n"
        ));
        assert!(e.contains("clusters[0] (a).policy: unknown policy"), "{e}");
        let e = error_of(&format!(
            "{base}[[clusters]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n[clusters.health_check]\npath = \"x\"\n"
        ));
        assert!(e.contains("health_check.path: must start with /"), "{e}");
        let e = error_of("listener = 3");
        assert!(e.starts_with("bad.toml: "), "{e}");
        let e = error_of("[listener\n");
        assert!(e.starts_with("bad.toml: line 1"), "{e}");
    }

    #[test]
    fn retry_settings_default_and_bounds() {
        let base = "[listener]\naddress = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"a\"\ntimeout_ms = 250\n[[clusters]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n";
        let v = parse("ok.toml", base).unwrap();
        let c = &v.clusters[0];
        assert_eq!(
            (
                c.max_retries,
                c.retry_budget_percent,
                c.retry_min_concurrency
            ),
            (1, 20.0, 3)
        );
        assert_eq!(v.routes[0].timeout, Some(Duration::from_millis(250)));
        let v = parse("ok.toml", &format!("{base}retry_budget_percent = 100\n")).unwrap();
        assert_eq!(
            v.clusters[0].retry_budget_percent, 100.0,
            "an integer is a float"
        );
        for (extra, want) in [
            (
                "max_retries = 11",
                "clusters[0] (a).max_retries: 11 is more than 10",
            ),
            (
                "retry_budget_percent = -0.5",
                "retry_budget_percent: -0.5 is not a percentage",
            ),
            (
                "retry_budget_percent = inf",
                "retry_budget_percent: inf is not a percentage",
            ),
        ] {
            let e = error_of(&format!("{base}{extra}\n"));
            assert!(e.contains(want), "{extra}: {e}");
        }
        let e = error_of(&base.replace("timeout_ms = 250", "timeout_ms = 0"));
        assert!(e.contains("routes[0].timeout_ms: must be above 0"), "{e}");
        let v = parse(
            "ok.toml",
            &base.replace("timeout_ms = 250", "upgrades = [\"WebSocket\"]"),
        )
        .unwrap();
        assert_eq!(v.routes[0].upgrades, ["websocket"]);
        for (list, want) in [
            ("[\"web socket\"]", "is not a protocol name"),
            ("[\"\"]", "is not a protocol name"),
            ("[\"h2c\"]", "the gateway serves HTTP/2 itself"),
        ] {
            let e = error_of(&base.replace("timeout_ms = 250", &format!("upgrades = {list}")));
            assert!(
                e.contains("routes[0].upgrades: ") && e.contains(want),
                "{list}: {e}"
            );
        }
    }

    #[test]
    fn tls_settings_are_checked() {
        let base = "[listener]\naddress = \"127.0.0.1:0\"\n";
        let e = error_of(&format!("{base}tls_key = \"k.pem\"\n"));
        assert!(
            e.contains("listener.tls_cert: tls_key is set without tls_cert"),
            "{e}"
        );
        let e = error_of(&format!(
            "{base}tls_cert = \"/dev/zero\"\ntls_key = \"k.pem\"\n"
        ));
        assert!(
            e.contains("listener.tls_cert: /dev/zero: larger than"),
            "{e}"
        );
        let e = error_of(&format!("{base}tls_cert = \"/\"\ntls_key = \"k.pem\"\n"));
        assert!(e.contains("listener.tls_cert: /: "), "{e}");
        let cluster = format!("{base}[[clusters]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n");
        let e = error_of(&format!("{cluster}tls = true\n"));
        assert!(
            e.contains("clusters[0] (a).tls_ca: required with tls = true"),
            "{e}"
        );
        let e = error_of(&format!("{cluster}tls_ca = \"ca.pem\"\n"));
        assert!(
            e.contains("clusters[0] (a).tls_ca: only with tls = true"),
            "{e}"
        );
        let e = error_of(&format!(
            "{cluster}tls = true\ntls_ca = \"/nonexistent/ca.pem\"\n"
        ));
        assert!(
            e.contains("clusters[0] (a).tls_ca: /nonexistent/ca.pem: No such file"),
            "{e}"
        );
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("api.example.com:443"), "api.example.com");
        assert!(server_name("not a name").is_err());
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap mutation fuzz of the shipped file: delete, duplicate and
        // replace bytes; every outcome is Ok or a ConfigError.
        let bytes = DEFAULT.as_bytes();
        let mut rng = fulcrum_test_support::rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2_000 {
            let mut v = bytes.to_vec();
            let at = rng.usize(..v.len());
            match rng.u8(..3) {
                0 => {
                    v.remove(at);
                }
                1 => v.insert(at, v[at]),
                _ => v[at] = rng.u8(..128),
            }
            if let Ok(text) = std::str::from_utf8(&v) {
                let _ = parse("fuzz.toml", text);
            }
        }
    }
}

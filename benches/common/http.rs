//! HTTP load for the benchmarks that drive HTTP servers (`benches/axum`,
//! `benches/gateway`), the same client for every system they compare:
//!
//! - [`wrk`]: wrk's closed loop (each connection sends its next request as
//!   soon as the last one is answered), parsed from `wrk --latency`.
//! - [`OpenLoop`]: requests at a fixed rate over keep-alive connections,
//!   each one's latency counted from the time it was *scheduled* to go
//!   out, so that a server that falls behind is charged for the queue it
//!   builds (no coordinated omission).
//!
//! Both run on the benchmark's own threads or processes, never on a
//! runtime under test.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// What one wrk run reported.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct WrkResult {
    /// Responses received.
    pub requests: u64,
    /// Responses per second.
    pub rps: f64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Socket errors (connect, read, write, timeout) plus answers that
    /// were not 2xx or 3xx.
    pub errors: u64,
}

/// Runs `wrk -t<threads> -c<connections> -d<secs>s --latency <url>`.
/// Returns its figures and its whole output.
pub fn wrk(
    url: &str,
    threads: usize,
    connections: usize,
    secs: u64,
) -> io::Result<(WrkResult, String)> {
    let out = Command::new("wrk")
        .args([
            format!("-t{threads}"),
            format!("-c{connections}"),
            format!("-d{secs}s"),
            "--latency".into(),
            url.into(),
        ])
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running wrk (apt-get install wrk): {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "wrk {url} failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let parsed = parse_wrk(&text)
        .ok_or_else(|| io::Error::other(format!("cannot read wrk's output: {text}")))?;
    Ok((parsed, text))
}

/// Reads the figures out of `wrk --latency` output.
pub fn parse_wrk(text: &str) -> Option<WrkResult> {
    let lines = || text.lines().map(str::trim);
    let field = |prefix: &str| lines().find_map(|l| l.strip_prefix(prefix)).map(str::trim);
    let rps = field("Requests/sec:")?.parse().ok()?;
    // "123456 requests in 10.00s, 17.50MB read"
    let requests = lines()
        .find(|l| l.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let p50_ms = parse_wrk_duration(field("50%")?)?;
    let p99_ms = parse_wrk_duration(field("99%")?)?;
    // "Socket errors: connect 0, read 3, write 0, timeout 0"
    let socket: u64 = field("Socket errors:").map_or(0, |v| {
        v.split(',')
            .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    });
    let bad_status: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(WrkResult {
        requests,
        rps,
        p50_ms,
        p99_ms,
        errors: socket + bad_status,
    })
}

/// wrk's "870.00us", "1.23ms", "1.02s", "2.00m" in milliseconds.
fn parse_wrk_duration(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(num.parse::<f64>().ok()? * scale)
}

/// An open-loop load: `rate` GET requests a second in all, spread evenly
/// over `connections` keep-alive connections, for `duration`.
#[derive(Clone, Debug)]
pub struct OpenLoop {
    /// Requests per second, all connections together.
    pub rate: f64,
    /// Keep-alive connections, one thread each.
    pub connections: usize,
    /// How long requests are scheduled for.
    pub duration: Duration,
    /// The request target (`GET <path>`, `Host: bench`).
    pub path: String,
}

/// What an open-loop run saw.
#[derive(Clone, Debug, Default)]
pub struct OpenLoopResult {
    /// Latency of every answered request from its scheduled send time,
    /// sorted.
    pub latencies: Vec<Duration>,
    /// Requests answered with a 2xx or 3xx status.
    pub ok: u64,
    /// Failed connects, reads and writes, timeouts and other statuses.
    pub errors: u64,
}

impl OpenLoopResult {
    /// The latency below which a fraction `p` of the answered requests
    /// fell, in milliseconds (NaN if none was answered).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let n = self.latencies.len();
        if n == 0 {
            return f64::NAN;
        }
        let i = ((n as f64 * p) as usize).min(n - 1);
        self.latencies[i].as_secs_f64() * 1_000.0
    }
}

/// Client-side bound on any one connect, read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

impl OpenLoop {
    /// Runs the load against `addr` from one thread per connection and
    /// returns when every thread has sent its last scheduled request.
    pub fn run(&self, addr: SocketAddr) -> OpenLoopResult {
        let conns = self.connections.max(1);
        let per_conn = Duration::from_secs_f64(conns as f64 / self.rate.max(1e-3));
        let start = Instant::now() + Duration::from_millis(50);
        let end = start + self.duration;
        let request: std::sync::Arc<[u8]> =
            format!("GET {} HTTP/1.1\r\nhost: bench\r\n\r\n", self.path)
                .into_bytes()
                .into();
        let threads: Vec<_> = (0..conns)
            .map(|c| {
                let request = request.clone();
                // Connections start evenly spread over one interval.
                let first = start + per_conn.mul_f64(c as f64 / conns as f64);
                std::thread::spawn(move || one_connection(addr, &request, first, per_conn, end))
            })
            .collect();
        let mut all = OpenLoopResult::default();
        for t in threads {
            let r = t.join().expect("open-loop thread panicked");
            all.latencies.extend(r.latencies);
            all.ok += r.ok;
            all.errors += r.errors;
        }
        all.latencies.sort_unstable();
        all
    }
}

/// One connection's schedule: a request at `next`, `next + interval`, …
/// until `end`, each sent when due or as soon as the previous one is
/// answered, whichever is later.
fn one_connection(
    addr: SocketAddr,
    request: &[u8],
    mut next: Instant,
    interval: Duration,
    end: Instant,
) -> OpenLoopResult {
    let mut r = OpenLoopResult::default();
    let mut conn: Option<Conn> = None;
    while next < end {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let answer = match conn.take() {
            Some(c) => Ok(c),
            None => Conn::connect(addr),
        }
        .and_then(|mut c| {
            c.stream.write_all(request)?;
            let status = c.read_response()?;
            Ok((c, status))
        });
        match answer {
            Ok((c, status)) => {
                conn = Some(c);
                if (200..400).contains(&status) {
                    r.ok += 1;
                    r.latencies.push(next.elapsed());
                } else {
                    r.errors += 1;
                }
            }
            // Reconnect for the next scheduled request.
            Err(_) => r.errors += 1,
        }
        next += interval;
    }
    r
}

/// A client connection and the bytes read past the last response.
pub struct Conn {
    /// The socket, for writing requests.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects with `TCP_NODELAY` and the I/O timeouts set.
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    fn read_more(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads until at least `len` bytes are buffered.
    fn fill(&mut self, len: usize) -> io::Result<()> {
        while self.buf.len() < len {
            self.read_more()?;
        }
        Ok(())
    }

    /// The offset of the first CRLF at or after `from`, reading as needed.
    fn crlf(&mut self, from: usize) -> io::Result<usize> {
        loop {
            if let Some(i) = find(self.buf.get(from..).unwrap_or(&[]), b"\r\n") {
                return Ok(from + i);
            }
            self.read_more()?;
        }
    }

    /// Reads one HTTP/1.1 response (a `content-length` or chunked body)
    /// and returns its status code, its body discarded.
    pub fn read_response(&mut self) -> io::Result<u16> {
        Ok(self.read_response_body()?.0)
    }

    /// Reads one HTTP/1.1 response and returns its status code and body
    /// (a chunked body de-chunked).
    pub fn read_response_body(&mut self) -> io::Result<(u16, Vec<u8>)> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            self.read_more()?;
        };
        let status = fulcrum_test_support::status_code(&self.buf).ok_or_else(|| bad("status"))?;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let mut pos = head_end + 4;
        let mut body = Vec::new();
        if chunked {
            loop {
                let eol = self.crlf(pos)?;
                let size_text = String::from_utf8_lossy(&self.buf[pos..eol]).into_owned();
                let size_hex = size_text.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("chunk size"))?;
                pos = eol + 2;
                if size == 0 {
                    // Trailer fields, up to an empty line.
                    loop {
                        let eol = self.crlf(pos)?;
                        let empty = eol == pos;
                        pos = eol + 2;
                        if empty {
                            break;
                        }
                    }
                    break;
                }
                self.fill(pos + size + 2)?;
                body.extend_from_slice(&self.buf[pos..pos + size]);
                pos += size + 2;
            }
        } else {
            let len: usize = match header("content-length") {
                Some(v) => v.parse().map_err(|_| bad("content-length"))?,
                None => 0,
            };
            self.fill(pos + len)?;
            body.extend_from_slice(&self.buf[pos..pos + len]);
            pos += len;
        }
        self.buf.drain(..pos);
        Ok((status, body))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

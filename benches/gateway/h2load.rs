//! HTTP/2 load with nghttp2's `h2load`: cleartext HTTP/2 with prior
//! knowledge (an `http://` URI), several streams in flight on each
//! connection, for a fixed time. Latency percentiles come from h2load's
//! per-request log (`--log-file`), since its summary gives only the mean
//! and spread.

use std::io;
use std::path::Path;
use std::process::Command;

/// What one h2load run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct H2Result {
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Responses per second over the measured time (h2load's figure).
    pub rps: f64,
    /// Latency percentiles from the per-request log, ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Requests that failed, errored or timed out, plus answers that were
    /// not 2xx.
    pub errors: u64,
}

/// How one load is shaped.
#[derive(Clone, Copy, Debug)]
pub struct H2Load {
    pub threads: usize,
    pub connections: usize,
    /// Concurrent streams per connection (`-m`).
    pub streams: usize,
    pub secs: u64,
}

impl H2Load {
    /// Runs `h2load -t -c -m -D <secs> --log-file=<log> <url>`. Returns the
    /// figures and h2load's whole output.
    pub fn run(&self, url: &str, log: &Path) -> io::Result<(H2Result, String)> {
        self.h2load(&[format!("-D{}", self.secs)], url, log)
    }

    /// Sends exactly `n` requests (`-n`), to check a system before the load.
    pub fn count(&self, n: usize, url: &str, log: &Path) -> io::Result<(H2Result, String)> {
        self.h2load(&[format!("-n{n}")], url, log)
    }

    fn h2load(&self, how: &[String], url: &str, log: &Path) -> io::Result<(H2Result, String)> {
        let out = Command::new("h2load")
            .arg(format!("-t{}", self.threads))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-m{}", self.streams))
            .args(how)
            .arg(format!("--log-file={}", log.display()))
            .arg(url)
            .output()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("running h2load (apt-get install nghttp2-client): {e}"),
                )
            })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "h2load {url} failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let mut r = parse_summary(&text)
            .ok_or_else(|| io::Error::other(format!("cannot read h2load's output: {text}")))?;
        let log_text = std::fs::read_to_string(log)?;
        let (p50, p99) = percentiles(&log_text)
            .ok_or_else(|| io::Error::other(format!("{}: no answered request", log.display())))?;
        r.p50_ms = p50;
        r.p99_ms = p99;
        Ok((r, text))
    }
}

/// Reads requests/s and the counts out of h2load's summary:
///
/// ```text
/// finished in 10.00s, 41234.50 req/s, 1.23MB/s
/// requests: 412345 total, 412385 started, 412345 done, 412345 succeeded, 0 failed, 0 errored, 0 timeout
/// status codes: 412345 2xx, 0 3xx, 0 4xx, 0 5xx
/// ```
pub fn parse_summary(text: &str) -> Option<H2Result> {
    let line = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix));
    let rps = line("finished in ")?
        .split(',')
        .nth(1)?
        .trim()
        .strip_suffix(" req/s")?
        .parse()
        .ok()?;
    // "<n> <name>" pairs separated by commas.
    let count = |fields: &str, name: &str| -> Option<u64> {
        fields.split(',').find_map(|f| {
            let mut it = f.split_whitespace();
            let n = it.next()?.parse().ok()?;
            (it.next()? == name).then_some(n)
        })
    };
    let requests = line("requests: ")?;
    let failed =
        count(requests, "failed")? + count(requests, "errored")? + count(requests, "timeout")?;
    let codes = line("status codes: ")?;
    let ok = count(codes, "2xx")?;
    let not_ok = count(codes, "3xx")? + count(codes, "4xx")? + count(codes, "5xx")?;
    Some(H2Result {
        ok,
        rps,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: failed + not_ok,
    })
}

/// The 50th and 99th percentiles (ms) of the per-request log's latencies:
/// lines of `start µs since the epoch <TAB> status <TAB> µs to the end of
/// the response`, for the requests that got a 2xx.
pub fn percentiles(log: &str) -> Option<(f64, f64)> {
    let mut us: Vec<u64> = log
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let _start = f.next()?;
            let status: u16 = f.next()?.trim().parse().ok()?;
            let took = f.next()?.trim().parse().ok()?;
            (200..300).contains(&status).then_some(took)
        })
        .collect();
    if us.is_empty() {
        return None;
    }
    us.sort_unstable();
    let at = |p: f64| us[((us.len() - 1) as f64 * p).round() as usize] as f64 / 1e3;
    Some((at(0.50), at(0.99)))
}

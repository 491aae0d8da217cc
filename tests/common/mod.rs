//! What the facade's tests share: a runtime of each scheduler, built
//! through the facade; and for the end-to-end tests of the examples,
//! building an example and finding its binary, temporary config files, a
//! running gateway and a running echo server, a raw socket client
//! ([`raw_client`]) and an upstream that records what the gateway
//! forwards ([`recorder`]), and TLS certificates and clients ([`tls`]).

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use fulcrum::runtime::{Builder, Runtime};
use fulcrum_test_support::status_code;

pub mod raw_client;
pub mod recorder;
pub mod tls;

/// One runtime of each scheduler, built through the facade: DLB (software
/// queue) and work stealing with 2 workers, and current-thread.
pub fn runtimes() -> Vec<(&'static str, Runtime)> {
    vec![
        (
            "dlb",
            Builder::new_multi_thread()
                .worker_threads(2)
                .dlb_backend(fulcrum::dlb::Backend::Software)
                .build()
                .unwrap(),
        ),
        (
            "stealing",
            Builder::new_multi_thread()
                .worker_threads(2)
                .scheduler(fulcrum::runtime::Scheduler::WorkStealing)
                .build()
                .unwrap(),
        ),
        ("current", Builder::new_current_thread().build().unwrap()),
    ]
}

/// Builds example `name` once per test binary (a no-op when `cargo test`
/// already has) and returns its path.
pub fn example_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the {name} example failed");
    // target/<profile>/deps/<this test> → target/<profile>/examples.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let mut path = profile_dir.join("examples").join(name);
    if !path.exists() {
        // The test was built in another profile than cargo build's.
        path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/debug/examples")
            .join(name);
    }
    built.push((name.to_owned(), path.clone()));
    path
}

/// The gateway example's binary.
pub fn gateway_binary() -> PathBuf {
    example_binary("gateway")
}

/// A file removed when dropped.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh path in the temp dir for a config file.
pub fn temp_path(what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "fulcrum-{what}-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, Relaxed)
    ))
}

/// The socket address printed after `marker` in `line`.
pub fn addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let end = rest.find([' ', '/']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Forwards a child's stdout, line by line, to a channel.
pub fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Sends `sig` to `child`.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// `config` with `http1 = "$FULCRUM_TEST_HTTP1"` in its `[listener]` when
/// that variable is set (and the file does not choose): `.ci/run` runs the
/// gateway's suites once on each HTTP/1.1 path (`native`, the default, and
/// `hyper`), unchanged.
pub fn with_http1_override(config: &str) -> String {
    match std::env::var("FULCRUM_TEST_HTTP1") {
        Ok(path) if !config.lines().any(|l| l.trim_start().starts_with("http1 ")) => config
            .replacen(
                "[listener]\n",
                &format!("[listener]\nhttp1 = {path:?}\n"),
                1,
            ),
        _ => config.to_owned(),
    }
}

/// A running gateway; killed when dropped.
pub struct Gw {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Lines the gateway prints after start-up.
    pub stdout: mpsc::Receiver<String>,
    _config: TempFile,
}

impl Gw {
    /// Starts the gateway on `config` and waits for its addresses.
    pub fn start(config: &str) -> Gw {
        Gw::start_logging(config, "warn")
    }

    /// Starts the gateway on `config` with `RUST_LOG=rust_log` (its log
    /// lines come on [`Gw::stdout`]) and waits for its addresses.
    pub fn start_logging(config: &str, rust_log: &str) -> Gw {
        let path = temp_path("gw");
        std::fs::write(&path, with_http1_override(config)).expect("write config");
        let mut child = Command::new(gateway_binary())
            .args(["--config".as_ref(), path.as_os_str()])
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gateway");
        let rx = lines_of(&mut child);
        let (mut addr, mut admin) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while addr.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("the gateway did not start");
            if let Some(a) = addr_after(&line, "listening on http://")
                .or_else(|| addr_after(&line, "listening on https://"))
            {
                addr = Some(a);
            }
            if let Some(a) = addr_after(&line, "admin on http://") {
                admin = Some(a);
            }
        }
        Gw {
            child,
            addr: addr.expect("listening address"),
            admin: admin.expect("admin address"),
            stdout: rx,
            _config: TempFile(path),
        }
    }

    /// Rewrites the configuration file the gateway was started with (for
    /// a reload).
    pub fn rewrite(&self, config: &str) {
        std::fs::write(&self._config.0, with_http1_override(config)).expect("rewrite the config");
    }

    /// `POST /reload` on the admin listener: status and body.
    pub fn post_reload(&self) -> (u16, String) {
        raw(
            self.admin,
            b"POST /reload HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
    }

    /// Sends `sig` to the gateway.
    pub fn signal(&self, sig: i32) {
        signal(&self.child, sig);
    }

    /// The admin page `/stats`, parsed.
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = get(self.admin, "/stats", &[]);
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("stats JSON")
    }

    /// The child's resident set size, in KiB (`VmRSS` in /proc).
    pub fn rss_kib(&self) -> u64 {
        fulcrum_test_support::rss_kib(self.child.id())
    }

    /// The configuration file the gateway was started with.
    pub fn config_path(&self) -> &std::path::Path {
        &self._config.0
    }

    /// SIGTERM, then the exit status (within `limit`).
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        signal(&self.child, libc::SIGTERM);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the gateway") {
                return status;
            }
            assert!(Instant::now() < deadline, "the gateway did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics if the gateway has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("the gateway exited: {status:?}");
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listener section for a test config: any port, `workers` workers, the
/// software queue, no access log; admin on any loopback port.
pub fn listener(workers: usize, extra: &str) -> String {
    format!(
        "[listener]\naddress = \"127.0.0.1:0\"\nworkers = {workers}\ndlb_backend = \"soft\"\naccess_log = false\n{extra}\n[admin]\naddress = \"127.0.0.1:0\"\n"
    )
}

/// One request on a fresh connection, with a blocking std socket (the
/// simplest client: no runtime involved). Returns status and body.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut extra = String::new();
    for (k, v) in headers {
        extra.push_str(&format!("{k}: {v}\r\n"));
    }
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nhost: test\r\n{extra}connection: close\r\n\r\n").as_bytes(),
    )
}

/// Sends `bytes` and reads the whole answer: (status, body); status 0 if
/// the gateway closed without answering.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut s = StdStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = status_code(&out).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// A keep-alive HTTP/1.1 client on one connection (responses must carry
/// `content-length`).
pub struct KeepAlive {
    reader: BufReader<StdStream>,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr) -> KeepAlive {
        let s = StdStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        KeepAlive {
            reader: BufReader::new(s),
        }
    }

    /// One GET; status and body, or what went wrong.
    pub fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
        self.reader
            .get_mut()
            .write_all(req.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut status = 0;
        let mut length = None;
        let mut first = true;
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before the response".into());
            }
            let line = line.trim_end();
            if first {
                status = line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad status line {line:?}"))?;
                first = false;
            } else if line.is_empty() {
                break;
            } else if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
            }
        }
        let length = length.ok_or("no content-length")?;
        let mut body = vec![0; length];
        self.reader
            .read_exact(&mut body)
            .map_err(|e| format!("body: {e}"))?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// A running echo server; killed when dropped.
pub struct Echo {
    pub child: Child,
    pub addr: SocketAddr,
    /// Lines it prints after the listening line.
    pub stdout: mpsc::Receiver<String>,
}

impl Echo {
    /// Starts the echo example with `args` and waits for its address.
    pub fn start(args: &[&str]) -> Echo {
        let mut child = Command::new(example_binary("echo"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the echo example");
        let rx = lines_of(&mut child);
        let marker = "echo: listening on ";
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the echo example did not start");
        let rest = line
            .strip_prefix(marker)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let addr = rest
            .split(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Echo {
            child,
            addr,
            stdout: rx,
        }
    }

    /// Sends `sig` to it.
    pub fn signal(&self, sig: i32) {
        signal(&self.child, sig);
    }

    /// Waits for the process to exit (at most `limit`).
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                return status;
            }
            assert!(Instant::now() < deadline, "the echo example did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

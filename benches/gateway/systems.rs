//! The processes of the gateway benchmark: the static nginx upstream and
//! the three reverse proxies, their configurations, start-up checks, and
//! their CPU time from `/proc`.

use std::io::{self, BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::Conn;

/// The systems under test, in the order of the first round.
/// `fulcrum-gateway-hyper` is the gateway with `http1 = "hyper"`: its
/// HTTP/1.1 on hyper alone, the A/B of the gateway's own HTTP/1.1 path.
pub const SYSTEMS: [&str; 4] = [
    "fulcrum-gateway",
    "fulcrum-gateway-hyper",
    "nginx",
    "tokio-proxy",
];

/// Where the upstream echoes the headers every proxy must set the same
/// way: `Host` (the client's), `X-Forwarded-For` (the peer appended),
/// `X-Forwarded-Proto` (`http`) and `X-Request-Id` (generated when the
/// client sent none; its value differs by proxy).
pub const HEADERS_PATH: &str = "/bench-headers";

/// What every proxy must answer on [`HEADERS_PATH`] for a request with
/// `Host: bench` from loopback and no forwarding headers of its own,
/// followed by a generated request id (at least 32 characters) and a
/// newline.
pub const HEADERS_EXPECTED: &str = "host=bench xff=127.0.0.1 xfp=http rid=";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A scratch directory for configurations, pid files, logs and nginx's
/// temp paths; removed on drop, its logs first copied to `keep_logs` if
/// the benchmark is failing.
pub struct Scratch {
    pub dir: PathBuf,
    keep_logs: PathBuf,
}

impl Scratch {
    pub fn new(keep_logs: &Path) -> io::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir =
            std::env::temp_dir().join(format!("fulcrum-gateway-bench.{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // nginx started by root runs its workers as `nobody`: let them in.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self {
            dir,
            keep_logs: keep_logs.to_path_buf(),
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(entries) = std::fs::read_dir(&self.dir) {
                let _ = std::fs::create_dir_all(&self.keep_logs);
                for e in entries.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "log") {
                        let _ = std::fs::copy(&p, self.keep_logs.join(e.file_name()));
                    }
                }
                eprintln!("logs copied to {}", self.keep_logs.display());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free loopback port (free when asked; nothing holds it after).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The nginx binary: `$PATH` first, then Debian's `/usr/sbin/nginx`.
pub fn nginx_binary() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("nginx"))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
        .ok_or_else(|| "nginx not found (apt-get install nginx, or run benches/gateway.sh)".into())
}

fn nginx_common(scratch: &Path, name: &str, workers: usize) -> String {
    let d = scratch.display();
    let temps: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("    {t}_temp_path {d}/{name}-{t};\n"))
        .collect();
    // keepalive_requests is raised on every keep-alive hop: nginx's default
    // of 1000 would make nginx, but not the others, reconnect.
    format!(
        "daemon off;\nmaster_process on;\nworker_processes {workers};\npid {d}/{name}.pid;\n\
         error_log {d}/{name}-error.log warn;\nevents {{ worker_connections 4096; }}\n\
         http {{\n    access_log off;\n    keepalive_requests 10000000;\n    keepalive_timeout 75s;\n{temps}"
    )
}

/// nginx serving `ok\n` on `/` (and the echo of the forwarded headers on
/// [`HEADERS_PATH`]), the one upstream of every proxy.
pub fn upstream_conf(scratch: &Path, port: u16, workers: usize) -> String {
    format!(
        "{}    server {{\n        listen 127.0.0.1:{port} reuseport backlog=4096;\n\
         \x20       default_type text/plain;\n\
         \x20       location = {HEADERS_PATH} {{ return 200 \"host=$http_host xff=$http_x_forwarded_for xfp=$http_x_forwarded_proto rid=$http_x_request_id\\n\"; }}\n\
         \x20       location / {{ return 200 \"ok\\n\"; }}\n    }}\n}}\n",
        nginx_common(scratch, "upstream", workers)
    )
}

/// nginx as a reverse proxy doing the gateway's header work: the client's
/// `Host`, `X-Forwarded-For` appended, `X-Forwarded-Proto`, the client's
/// `X-Request-Id` or a generated one, HTTP/1.1 keep-alive upstream
/// (`keepalive 32` per worker, as the gateway's `max_idle_per_endpoint`).
/// HTTP/1.1 on `port`, and the same proxying over cleartext HTTP/2 with
/// prior knowledge on `h2_port` (nginx cannot serve both on one listener).
pub fn nginx_proxy_conf(
    scratch: &Path,
    port: u16,
    h2_port: u16,
    upstream: u16,
    workers: usize,
) -> String {
    let location = "        location / {\n\
         \x20           proxy_pass http://fulcrum_bench_upstream;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_set_header Host $http_host;\n\
         \x20           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20           proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20           proxy_set_header X-Request-Id $fulcrum_bench_rid;\n\
         \x20       }\n";
    format!(
        "{}    map $http_x_request_id $fulcrum_bench_rid {{\n        default $http_x_request_id;\n        \"\" $request_id;\n    }}\n\
         \x20   upstream fulcrum_bench_upstream {{\n        server 127.0.0.1:{upstream};\n\
         \x20       keepalive 32;\n        keepalive_requests 10000000;\n    }}\n\
         \x20   server {{\n        listen 127.0.0.1:{port} backlog=4096;\n{location}    }}\n\
         \x20   server {{\n        listen 127.0.0.1:{h2_port} http2 backlog=4096;\n\
         \x20       http2_max_concurrent_streams 100;\n{location}    }}\n}}\n",
        nginx_common(scratch, "nginx", workers)
    )
}

/// The gateway: `workers` listener workers, DLB balance, no access log,
/// HTTP/1.1 on `http1` (`native` or `hyper`), one route `/` to the
/// upstream, pooled keep-alive (32 idle per worker), no health check;
/// admin (for `/stats`) on `admin`.
pub fn gateway_conf(port: u16, admin: u16, upstream: u16, workers: usize, http1: &str) -> String {
    format!(
        "[listener]\naddress = \"127.0.0.1:{port}\"\nworkers = {workers}\nbalance = \"dlb\"\nhttp1 = \"{http1}\"\n\
         drain_timeout_ms = 1000\naccess_log = false\n\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\n\
         [[routes]]\nprefix = \"/\"\ncluster = \"upstream\"\n\n[[clusters]]\nname = \"upstream\"\n\
         endpoints = [\"127.0.0.1:{upstream}\"]\npolicy = \"round_robin\"\nmax_idle_per_endpoint = 32\n"
    )
}

/// A server process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub addr: SocketAddr,
    /// nginx: the master's workers are its children; their CPU counts.
    pub with_children: bool,
    /// Where it serves cleartext HTTP/2 with prior knowledge, if it does.
    pub h2_addr: Option<SocketAddr>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` (its output to `<scratch>/<name>.log`) and waits for it
    /// to listen on `port`.
    pub fn spawn(
        name: &'static str,
        mut cmd: Command,
        scratch: &Path,
        port: u16,
        with_children: bool,
    ) -> Result<Self> {
        let log = scratch.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        let mut p = Self {
            name,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            with_children,
            h2_addr: None,
            log,
        };
        p.wait_listening()?;
        Ok(p)
    }

    /// Starts this benchmark binary as `server <args>` and reads the
    /// address it prints (`listening ADDR`).
    pub fn spawn_self(name: &'static str, args: &[String], scratch: &Path) -> Result<Self> {
        let log = scratch.join(format!("{name}.log"));
        let mut child = Command::new(std::env::current_exe()?)
            .arg("server")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        let parsed = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok());
        let mut p = Self {
            name,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            with_children: false,
            h2_addr: None,
            log,
        };
        p.addr = parsed.ok_or_else(|| format!("{name} said {line:?}: {}", p.log_tail()))?;
        Ok(p)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    fn wait_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(format!(
                    "{} exited at start-up ({status}): {}",
                    self.name,
                    self.log_tail()
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err(
                    format!("{} did not listen on {} within 10 s", self.name, self.addr).into(),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// User plus system CPU time of the process (and of its children, for
    /// nginx) so far.
    pub fn cpu(&self) -> Duration {
        let pid = self.child.id();
        let mut ticks = proc_stat(pid).map_or(0, |s| s.ticks);
        if self.with_children {
            ticks += children(pid)
                .into_iter()
                .filter_map(proc_stat)
                .map(|s| s.ticks)
                .sum::<u64>();
        }
        Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
    }

    /// Context switches so far (voluntary and not) of every thread of the
    /// process, and of its children where they count: each is a sleep and
    /// a wake-up or a preemption, the kernel cost that CPU per request
    /// alone does not explain.
    pub fn switches(&self) -> u64 {
        let pid = self.child.id();
        let mut n = thread_switches(pid);
        if self.with_children {
            n += children(pid).into_iter().map(thread_switches).sum::<u64>();
        }
        n
    }

    /// Checks that the process answers `/` with `ok` and forwards the
    /// headers as every system must.
    pub fn check(&self) -> Result<()> {
        let ask = |path: &str| -> Result<String> {
            let mut c = Conn::connect(self.addr)?;
            use std::io::Write as _;
            write!(c.stream, "GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n")?;
            let (status, body) = c.read_response_body()?;
            if status != 200 {
                return Err(format!("{} answered {path} with {status}", self.name).into());
            }
            Ok(String::from_utf8_lossy(&body).into_owned())
        };
        let ok = ask("/")?;
        if ok != "ok\n" {
            return Err(format!("{}: / answered {ok:?}", self.name).into());
        }
        let headers = ask(HEADERS_PATH)?;
        let id = headers
            .strip_prefix(HEADERS_EXPECTED)
            .and_then(|rest| rest.strip_suffix('\n'));
        if !id.is_some_and(|id| id.len() >= 32 && !id.contains(' ')) {
            return Err(format!(
                "{} forwarded {headers:?}, the others {HEADERS_EXPECTED:?}",
                self.name
            )
            .into());
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) with a pid we spawned and have not reaped yet
            // (so it cannot have been reused) and a valid signal number.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        // nginx's master stops its workers on SIGTERM; SIGKILL would leave
        // them behind.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What this benchmark reads from `/proc/<pid>/stat`.
struct ProcStat {
    ppid: u32,
    /// utime + stime, in clock ticks.
    ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // the fields after its closing parenthesis start at field 3 (state).
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        ppid: u32::try_from(field(4)?).ok()?,
        ticks: field(14)? + field(15)?,
    })
}

/// The context switches of every thread of `pid`, from
/// `/proc/<pid>/task/*/status` (0 for a process that is gone).
fn thread_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| proc_stat(p).is_some_and(|s| s.ppid == pid))
        .collect()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

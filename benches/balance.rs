//! `cargo bench --bench balance`: the same small TCP server on Fulcrum in
//! each balance mode (DLB scheduler, software backend), on Fulcrum's
//! work-stealing scheduler (plain accept loop + `fulcrum::spawn`) and on
//! tokio's multi-thread runtime (plain accept loop + `tokio::spawn`), all
//! with `FULCRUM_BENCH_WORKERS` workers (default 4, on purpose more than the
//! 2 cores of the reference machine, so that imbalance shows).
//!
//! Protocol: the client sends an 8-byte request (little-endian CPU cost in
//! µs); the server spins for that long (busy CPU, `Instant`-based) inside
//! the handler's poll and echoes the 8 bytes back. Handlers are
//! per-connection loops (read, spin, reply), as a real server's are.
//!
//! Load generator: open-loop and constant-rate, on its own std threads with
//! blocking sockets (never on the server's runtime), identical for every
//! system. Each connection has its own schedule (a fixed interval and a
//! random phase); latency is measured from each request's *intended* send
//! time, so a server that falls behind is charged for it (no coordinated
//! omission).
//!
//! Scenarios (offered load with the defaults). The 2 cores are shared by
//! the server and the load generator, and each request also costs roughly
//! 40–50 µs of CPU in TCP syscalls and thread wake-ups on the two sides,
//! so the rates are set for about 50–65% of the 2 cores *in total*, as
//! measured (column `cpu %`, the load generator's share in parentheses):
//! - `uniform`: 64 connections × 250 req/s × 20 µs: 16k req/s, 0.32 core
//!   of server spin (16% of 2 cores) plus the per-request overhead.
//! - `skewed`: 4 elephant connections × 100 req/s × 1 ms (0.4 core) among
//!   60 light ones × 170 req/s × 20 µs (0.2 core): 10.6k req/s, 0.6 core of
//!   spin (30%) plus the per-request overhead.
//! - `churn`: 16 generator threads open 6,000 connections/s in total (open
//!   loop); each sends one 20 µs request, reads the reply and closes (with
//!   `SO_LINGER` 0, so that client ports do not pile up in TIME_WAIT; the
//!   server sees the reset as the end of the connection). Measures accepts
//!   (handlers started per second inside the window; in the other two
//!   scenarios every connection is opened before the window, so 0).
//!
//! `FULCRUM_BENCH_LOAD` (default 1.0) multiplies every rate.
//!
//! Each (scenario, system) runs `FULCRUM_BENCH_RUNS` times (default 3) for
//! `FULCRUM_BENCH_SECS` seconds (default 4) after a 0.5 s warm-up, systems
//! alternating (the order rotates each round); the table shows medians.
//! Arguments filter: scenario names and/or system names
//! (`cargo bench --bench balance -- skewed tokio fulcrum-dlb`).
//!
//! Output: a markdown table, PASS/MISS lines for the goals, and in
//! `$CARGO_TARGET_DIR/bench/` (default `target/bench/`): `balance.json`,
//! `balance_p99_skewed.svg` and `balance_conns.svg`.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulcrum::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use fulcrum::net::{Balance, Server};

mod common;
use common::{env, tune};

// ---------------------------------------------------------------------------
// Configuration

const SYSTEMS: [&str; 6] = [
    "fulcrum-dlb",
    "fulcrum-exact",
    "fulcrum-reuseport",
    "fulcrum-race",
    "fulcrum-stealing",
    "tokio",
];

const LIGHT_US: u64 = 20;
const ELEPHANT_US: u64 = 1_000;
const WARMUP: Duration = Duration::from_millis(500);
/// Client-side bound on any one connect, read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A group of long-lived connections with one request cost and rate.
#[derive(Clone, Copy)]
struct Group {
    conns: usize,
    per_conn_rps: f64,
    cost_us: u64,
}

#[derive(Clone)]
enum Load {
    /// Long-lived connections, each with its own constant-rate schedule.
    Persistent(Vec<Group>),
    /// One request per connection; `rate` connections/s in total over
    /// `threads` generator threads.
    Churn {
        threads: usize,
        rate: f64,
        cost_us: u64,
    },
}

#[derive(Clone)]
struct Scenario {
    name: &'static str,
    load: Load,
}

/// The scenarios, with every rate multiplied by `load`.
fn scenarios(load: f64) -> Vec<Scenario> {
    vec![
        Scenario {
            name: "uniform",
            load: Load::Persistent(vec![Group {
                conns: 64,
                per_conn_rps: 250.0 * load,
                cost_us: LIGHT_US,
            }]),
        },
        Scenario {
            name: "skewed",
            // Elephants first in the list; connections are opened
            // interleaved (see `run_persistent`), so they are not the first
            // four accepted.
            load: Load::Persistent(vec![
                Group {
                    conns: 4,
                    per_conn_rps: 100.0 * load,
                    cost_us: ELEPHANT_US,
                },
                Group {
                    conns: 60,
                    per_conn_rps: 170.0 * load,
                    cost_us: LIGHT_US,
                },
            ]),
        },
        Scenario {
            name: "churn",
            load: Load::Churn {
                threads: 16,
                rate: 6_000.0 * load,
                cost_us: LIGHT_US,
            },
        },
    ]
}

// ---------------------------------------------------------------------------
// Server side: the same connection loop on every runtime

/// Counters shared by one server's handlers; indexed by worker.
struct Stats {
    /// Connections whose handler started on each worker.
    conns: Vec<AtomicU64>,
    /// Nanoseconds of requested spin run on each worker.
    busy_ns: Vec<AtomicU64>,
    /// Handlers started (accepted connections).
    accepted: AtomicU64,
    /// Worker indices outside `0..workers` (should stay 0).
    bad_worker: AtomicU64,
    /// Read or write errors other than a clean end or a reset.
    errors: AtomicU64,
    /// Connections that ended with a reset (expected in `churn`, whose
    /// clients close with `SO_LINGER` 0).
    resets: AtomicU64,
    /// Accept errors of the plain accept loops.
    accept_errors: AtomicU64,
}

impl Stats {
    fn new(workers: usize) -> Self {
        Self {
            conns: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            busy_ns: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            accepted: AtomicU64::new(0),
            bad_worker: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
        }
    }

    fn slot(&self, w: Option<usize>) -> Option<usize> {
        match w {
            Some(w) if w < self.conns.len() => Some(w),
            _ => {
                self.bad_worker.fetch_add(1, Relaxed);
                None
            }
        }
    }
}

fn fulcrum_worker() -> Option<usize> {
    fulcrum::runtime::Handle::try_current()
        .ok()
        .and_then(|h| h.current_worker())
}

thread_local! {
    /// The tokio worker index of this thread, set by `on_thread_start`.
    static TOKIO_WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

fn tokio_worker() -> Option<usize> {
    TOKIO_WORKER.with(Cell::get)
}

/// One connection: read an 8-byte request, spin for its cost, echo it.
async fn conn_loop<S>(mut s: S, st: Arc<Stats>, worker: fn() -> Option<usize>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    st.accepted.fetch_add(1, Relaxed);
    if let Some(w) = st.slot(worker()) {
        st.conns[w].fetch_add(1, Relaxed);
    }
    let mut req = [0u8; 8];
    loop {
        if let Err(e) = s.read_exact(&mut req).await {
            match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {}
                std::io::ErrorKind::ConnectionReset => {
                    st.resets.fetch_add(1, Relaxed);
                }
                _ => {
                    st.errors.fetch_add(1, Relaxed);
                }
            }
            return;
        }
        let cost = Duration::from_micros(u64::from_le_bytes(req));
        let w = st.slot(worker());
        let t = Instant::now();
        while t.elapsed() < cost {
            std::hint::spin_loop();
        }
        if let Some(w) = w {
            st.busy_ns[w].fetch_add(t.elapsed().as_nanos() as u64, Relaxed);
        }
        if s.write_all(&req).await.is_err() {
            st.errors.fetch_add(1, Relaxed);
            return;
        }
    }
}

/// A server under test; dropping it shuts its runtime down.
enum Running {
    Balanced {
        rt: fulcrum::runtime::Runtime,
        serving: fulcrum::net::Serving,
    },
    Fulcrum(fulcrum::runtime::Runtime),
    Tokio(tokio::runtime::Runtime),
}

impl Running {
    /// Connections per worker as the server itself counts them: the
    /// `Serving`'s counts in the balance modes, else the handlers' own.
    fn conns_per_worker(&self, st: &Stats) -> Vec<u64> {
        match self {
            Running::Balanced { serving, .. } => serving.handled_per_worker(),
            _ => st.conns.iter().map(|c| c.load(Relaxed)).collect(),
        }
    }

    fn shutdown(self) {
        match self {
            Running::Balanced { rt, serving } => {
                drop(serving);
                rt.shutdown_timeout(Duration::from_secs(2));
            }
            Running::Fulcrum(rt) => rt.shutdown_timeout(Duration::from_secs(2)),
            Running::Tokio(rt) => rt.shutdown_timeout(Duration::from_secs(2)),
        }
    }
}

fn fulcrum_rt(
    workers: usize,
    scheduler: fulcrum::runtime::Scheduler,
) -> std::io::Result<fulcrum::runtime::Runtime> {
    tune(
        fulcrum::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .scheduler(scheduler)
            .dlb_backend(fulcrum::dlb::Backend::Software)
            .enable_all(),
    )
    .build()
}

fn start(system: &str, workers: usize, st: Arc<Stats>) -> std::io::Result<(Running, SocketAddr)> {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let balance = match system {
        "fulcrum-dlb" => Some(Balance::Dlb),
        "fulcrum-exact" => Some(Balance::Exact),
        "fulcrum-reuseport" => Some(Balance::Reuseport),
        "fulcrum-race" => Some(Balance::AcceptRace),
        _ => None,
    };
    if let Some(balance) = balance {
        let rt = fulcrum_rt(workers, fulcrum::runtime::Scheduler::Dlb)?;
        let serving = rt.block_on(async move {
            Server::bind(loopback)
                .balance(balance)
                .serve(move |s: fulcrum::net::TcpStream, _| {
                    let st = st.clone();
                    async move {
                        let _ = s.set_nodelay(true);
                        conn_loop(s, st, fulcrum_worker).await;
                    }
                })
                .await
        })?;
        let addr = serving.local_addr();
        return Ok((Running::Balanced { rt, serving }, addr));
    }
    match system {
        "fulcrum-stealing" => {
            let rt = fulcrum_rt(workers, fulcrum::runtime::Scheduler::WorkStealing)?;
            let listener = rt.block_on(fulcrum::net::TcpListener::bind(loopback))?;
            let addr = listener.local_addr()?;
            drop(rt.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            drop(fulcrum::spawn(conn_loop(s, st.clone(), fulcrum_worker)));
                        }
                        Err(_) => {
                            st.accept_errors.fetch_add(1, Relaxed);
                            fulcrum::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            }));
            Ok((Running::Fulcrum(rt), addr))
        }
        "tokio" => {
            let next = Arc::new(AtomicUsize::new(0));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .on_thread_start(move || {
                    let i = next.fetch_add(1, Relaxed);
                    TOKIO_WORKER.with(|w| w.set(Some(i)));
                })
                .enable_all()
                .build()?;
            let listener = rt.block_on(tokio::net::TcpListener::bind(loopback))?;
            let addr = listener.local_addr()?;
            drop(rt.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            drop(tokio::spawn(conn_loop(s, st.clone(), tokio_worker)));
                        }
                        Err(_) => {
                            // No tokio timer in this build: yield and retry.
                            st.accept_errors.fetch_add(1, Relaxed);
                            tokio::task::yield_now().await;
                        }
                    }
                }
            }));
            Ok((Running::Tokio(rt), addr))
        }
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("unknown system {other}"),
        )),
    }
}

// ---------------------------------------------------------------------------
// Load generator: std threads, blocking sockets, open loop

/// What one generator thread saw.
#[derive(Default)]
struct GenResult {
    /// Latency (ns, from intended send time) of requests intended inside
    /// the measurement window.
    lat_ns: Vec<u64>,
    /// Responses received inside the window.
    done_in_window: u64,
    /// Failed connects, reads, writes, timeouts and wrong replies.
    errors: u64,
    /// The first few failures, for the report.
    samples: Vec<String>,
    /// CPU time this thread used from the window's start to its end.
    cpu: Duration,
    /// Whether its requests are light ones (`LIGHT_US`).
    light: bool,
}

impl GenResult {
    fn fail(&mut self, what: &str, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.samples.len() < 3 {
            self.samples.push(format!("{what}: {e}"));
        }
    }
}

/// The times of one run: generator threads start their schedules at `t0`,
/// latencies count from `warm`, nothing new is sent from `end`.
#[derive(Clone, Copy)]
struct Window {
    t0: Instant,
    warm: Instant,
    end: Instant,
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: `clock_gettime` fills the zero-initialised struct we pass.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Tracks a generator thread's CPU time inside the window.
struct CpuMeter(Option<Duration>);

impl CpuMeter {
    /// Called before each scheduled send; starts counting at the window.
    fn tick(&mut self, next: Instant, w: Window) {
        if self.0.is_none() && next >= w.warm {
            self.0 = Some(thread_cpu());
        }
    }

    fn total(&self) -> Duration {
        self.0
            .map_or(Duration::ZERO, |t0| thread_cpu().saturating_sub(t0))
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Tighter sleeps for the generator threads (default slack is 50 µs).
fn low_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and only affects
    // the calling thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

/// splitmix64, for schedule phases.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn phase(seed: u64, interval: Duration) -> Duration {
    interval.mul_f64((mix(seed) >> 11) as f64 / (1u64 << 53) as f64)
}

fn connect(addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let s = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// One request on `s`; the reply must echo it.
fn request(s: &mut std::net::TcpStream, cost_us: u64) -> Result<(), String> {
    let req = cost_us.to_le_bytes();
    s.write_all(&req).map_err(|e| format!("write: {e}"))?;
    let mut resp = [0u8; 8];
    s.read_exact(&mut resp).map_err(|e| format!("read: {e}"))?;
    if resp != req {
        return Err(format!("bad reply {resp:?} to {req:?}"));
    }
    Ok(())
}

/// Closes with a reset instead of a FIN, leaving no TIME_WAIT behind.
fn close_abortive(s: std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `s` owns a valid socket fd; the option value is a properly
    // initialised `linger` with its exact size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

fn record(r: &mut GenResult, w: Window, intended: Instant, done: Instant) {
    if intended >= w.warm {
        r.lat_ns.push((done - intended).as_nanos() as u64);
    }
    if done >= w.warm && done < w.end {
        r.done_in_window += 1;
    }
}

/// A long-lived connection sending `cost_us` requests every `interval`.
fn persistent_conn(
    addr: SocketAddr,
    cost_us: u64,
    interval: Duration,
    seed: u64,
    w: Window,
) -> GenResult {
    low_timer_slack();
    let mut r = GenResult {
        light: cost_us <= LIGHT_US,
        ..GenResult::default()
    };
    let mut s = match connect(addr) {
        Ok(s) => s,
        Err(e) => {
            r.fail("connect", e);
            return r;
        }
    };
    let mut next = w.t0 + phase(seed, interval);
    let mut cpu = CpuMeter(None);
    while next < w.end {
        cpu.tick(next, w);
        sleep_until(next);
        match request(&mut s, cost_us) {
            Ok(()) => record(&mut r, w, next, Instant::now()),
            Err(e) => {
                r.fail("request", e);
                break;
            }
        }
        next += interval;
    }
    r.cpu = cpu.total();
    r
}

/// Opens a connection every `interval`, one request each.
fn churn_thread(
    addr: SocketAddr,
    cost_us: u64,
    interval: Duration,
    seed: u64,
    w: Window,
) -> GenResult {
    low_timer_slack();
    let mut r = GenResult::default();
    let mut next = w.t0 + phase(seed, interval);
    let mut cpu = CpuMeter(None);
    while next < w.end {
        cpu.tick(next, w);
        sleep_until(next);
        match connect(addr) {
            Ok(mut s) => match request(&mut s, cost_us) {
                Ok(()) => {
                    record(&mut r, w, next, Instant::now());
                    close_abortive(s);
                }
                Err(e) => r.fail("request", e),
            },
            Err(e) => r.fail("connect", e),
        }
        next += interval;
    }
    r.cpu = cpu.total();
    r
}

fn spawn_gen(
    f: impl FnOnce() -> GenResult + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<GenResult>> {
    std::thread::Builder::new()
        .name("loadgen".into())
        .stack_size(128 * 1024)
        .spawn(f)
}

/// Process CPU time (user + system), all threads.
fn cpu_time() -> Duration {
    // SAFETY: `getrusage` fills the zero-initialised struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

// ---------------------------------------------------------------------------
// One run

struct RunResult {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    /// p99 of the light requests only.
    p99_light_us: f64,
    /// Fraction of the latency samples that are not light requests.
    elephant_share: f64,
    accepts_per_s: f64,
    conns: Vec<u64>,
    busy: Vec<u64>,
    conn_spread: f64,
    busy_spread: f64,
    /// Process CPU over the window, % of all cores.
    cpu_pct: f64,
    /// The load generator's share of it, % of all cores.
    gen_cpu_pct: f64,
    /// Client-side failures.
    errors: u64,
    /// Server-side failures (I/O errors, accept errors, unknown worker).
    server_errors: u64,
    samples: Vec<String>,
}

fn spread(v: &[u64]) -> f64 {
    let total: u64 = v.iter().sum();
    if v.is_empty() || total == 0 {
        return f64::NAN;
    }
    let mean = total as f64 / v.len() as f64;
    *v.iter().max().expect("non-empty") as f64 / mean
}

/// Nearest-rank percentile of sorted samples, in µs.
fn pct_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1_000.0
}

fn run_once(
    scenario: &Scenario,
    system: &str,
    workers: usize,
    secs: Duration,
    cores: usize,
) -> std::io::Result<RunResult> {
    let st = Arc::new(Stats::new(workers));
    let (running, addr) = start(system, workers, st.clone())?;
    let t0 = Instant::now() + Duration::from_millis(150);
    let w = Window {
        t0,
        warm: t0 + WARMUP,
        end: t0 + WARMUP + secs,
    };
    let mut threads = Vec::new();
    match &scenario.load {
        Load::Persistent(groups) => {
            // Interleave the groups, so that the rare kind is spread over
            // the connection order.
            let total: usize = groups.iter().map(|g| g.conns).sum();
            let mut left: Vec<usize> = groups.iter().map(|g| g.conns).collect();
            for i in 0..total {
                let gi = (0..groups.len())
                    .max_by(|&a, &b| {
                        let fa = left[a] as f64 / groups[a].conns as f64;
                        let fb = left[b] as f64 / groups[b].conns as f64;
                        fa.total_cmp(&fb)
                    })
                    .expect("groups");
                left[gi] -= 1;
                let g = groups[gi];
                let interval = Duration::from_secs_f64(1.0 / g.per_conn_rps);
                threads.push(spawn_gen(move || {
                    persistent_conn(addr, g.cost_us, interval, i as u64, w)
                })?);
            }
        }
        &Load::Churn {
            threads: n,
            rate,
            cost_us,
        } => {
            let interval = Duration::from_secs_f64(n as f64 / rate);
            for i in 0..n {
                threads.push(spawn_gen(move || {
                    churn_thread(addr, cost_us, interval, 1_000 + i as u64, w)
                })?);
            }
        }
    }
    sleep_until(w.warm);
    let (acc0, cpu0) = (st.accepted.load(Relaxed), cpu_time());
    sleep_until(w.end);
    let (acc1, cpu1) = (st.accepted.load(Relaxed), cpu_time());
    let mut all = GenResult::default();
    let mut light = Vec::new();
    for t in threads {
        let r = t.join().expect("load generator thread panicked");
        if r.light {
            light.extend_from_slice(&r.lat_ns);
        }
        all.lat_ns.extend(r.lat_ns);
        all.done_in_window += r.done_in_window;
        all.errors += r.errors;
        all.cpu += r.cpu;
        for s in r.samples {
            if all.samples.len() < 3 {
                all.samples.push(s);
            }
        }
    }
    // Let handlers see the clients' closes before reading the counts.
    std::thread::sleep(Duration::from_millis(50));
    let conns = running.conns_per_worker(&st);
    let own: u64 = st.conns.iter().map(|c| c.load(Relaxed)).sum();
    if conns.iter().sum::<u64>() != own && !matches!(running, Running::Balanced { .. }) {
        all.samples.push("per-worker counts disagree".into());
    }
    let busy: Vec<u64> = st.busy_ns.iter().map(|b| b.load(Relaxed)).collect();
    running.shutdown();
    all.lat_ns.sort_unstable();
    light.sort_unstable();
    let secs_f = secs.as_secs_f64();
    Ok(RunResult {
        rps: all.done_in_window as f64 / secs_f,
        p50_us: pct_us(&all.lat_ns, 0.5),
        p99_us: pct_us(&all.lat_ns, 0.99),
        p999_us: pct_us(&all.lat_ns, 0.999),
        p99_light_us: pct_us(&light, 0.99),
        elephant_share: 1.0 - light.len() as f64 / all.lat_ns.len().max(1) as f64,
        accepts_per_s: (acc1 - acc0) as f64 / secs_f,
        conn_spread: spread(&conns),
        busy_spread: spread(&busy),
        conns,
        busy,
        cpu_pct: 100.0 * (cpu1 - cpu0).as_secs_f64() / (secs_f * cores as f64),
        gen_cpu_pct: 100.0 * all.cpu.as_secs_f64() / (secs_f * cores as f64),
        errors: all.errors,
        server_errors: st.errors.load(Relaxed)
            + st.accept_errors.load(Relaxed)
            + st.bad_worker.load(Relaxed),
        samples: all.samples,
    })
}

// ---------------------------------------------------------------------------
// Summaries, goals, files

struct Summary {
    scenario: &'static str,
    system: &'static str,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    p99_light_us: f64,
    elephant_share: f64,
    accepts_per_s: f64,
    conn_spread: f64,
    busy_spread: f64,
    cpu_pct: f64,
    gen_cpu_pct: f64,
    errors: u64,
    server_errors: u64,
    /// Connections per worker of the run with the median p99.
    conns: Vec<u64>,
    busy: Vec<u64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn summarize(scenario: &'static str, system: &'static str, runs: &[RunResult]) -> Summary {
    let m = |f: fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
    let mut by_p99: Vec<&RunResult> = runs.iter().collect();
    by_p99.sort_by(|a, b| a.p99_us.total_cmp(&b.p99_us));
    let mid = by_p99[by_p99.len() / 2];
    Summary {
        scenario,
        system,
        rps: m(|r| r.rps),
        p50_us: m(|r| r.p50_us),
        p99_us: m(|r| r.p99_us),
        p999_us: m(|r| r.p999_us),
        p99_light_us: m(|r| r.p99_light_us),
        elephant_share: m(|r| r.elephant_share),
        accepts_per_s: m(|r| r.accepts_per_s),
        conn_spread: m(|r| r.conn_spread),
        busy_spread: m(|r| r.busy_spread),
        cpu_pct: m(|r| r.cpu_pct),
        gen_cpu_pct: m(|r| r.gen_cpu_pct),
        errors: runs.iter().map(|r| r.errors).sum(),
        server_errors: runs.iter().map(|r| r.server_errors).sum(),
        conns: mid.conns.clone(),
        busy: mid.busy.clone(),
    }
}

fn json_num(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64((x * 1_000.0).round() / 1_000.0)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

fn find<'a>(s: &'a [Summary], scenario: &str, system: &str) -> Option<&'a Summary> {
    s.iter()
        .find(|x| x.scenario == scenario && x.system == system)
}

fn goal(name: &str, value: f64, bound: f64, lower_is_better: bool, what: &str) {
    if value.is_nan() || bound.is_nan() {
        println!("SKIP {name}: not measured");
        return;
    }
    let ok = if lower_is_better {
        value <= bound
    } else {
        value >= bound
    };
    let rel = if lower_is_better { "≤" } else { "≥" };
    println!(
        "{} {name}: {value:.1} {rel} {bound:.1} ({what})",
        if ok { "PASS" } else { "MISS" }
    );
}

fn goals(s: &[Summary]) {
    let get = |sc, sy, f: fn(&Summary) -> f64| find(s, sc, sy).map_or(f64::NAN, f);
    let p99 = |sy| get("skewed", sy, |x| x.p99_us);
    let acc = |sy| get("churn", sy, |x| x.accepts_per_s);
    goal(
        "skewed p99 vs reuseport",
        p99("fulcrum-dlb"),
        0.5 * p99("fulcrum-reuseport"),
        true,
        "µs; dlb ≤ 0.5 × reuseport",
    );
    goal(
        "skewed p99 vs tokio",
        p99("fulcrum-dlb"),
        0.8 * p99("tokio"),
        true,
        "µs; dlb ≤ 0.8 × tokio",
    );
    goal(
        "churn accepts/s vs reuseport",
        acc("fulcrum-dlb"),
        0.95 * acc("fulcrum-reuseport"),
        false,
        "accepts/s; dlb ≥ 0.95 × reuseport",
    );
    let ratio = |a: f64, b: f64| a / b;
    println!(
        "INFO exact's lock: churn accepts/s exact ÷ dlb = {:.3}, churn p99 exact ÷ dlb = {:.2}, \
         churn p50 exact ÷ dlb = {:.2}, skewed p99 exact ÷ dlb = {:.2}, skewed p99 exact ÷ \
         reuseport = {:.2}",
        ratio(acc("fulcrum-exact"), acc("fulcrum-dlb")),
        ratio(
            get("churn", "fulcrum-exact", |x| x.p99_us),
            get("churn", "fulcrum-dlb", |x| x.p99_us)
        ),
        ratio(
            get("churn", "fulcrum-exact", |x| x.p50_us),
            get("churn", "fulcrum-dlb", |x| x.p50_us)
        ),
        ratio(p99("fulcrum-exact"), p99("fulcrum-dlb")),
        ratio(p99("fulcrum-exact"), p99("fulcrum-reuseport")),
    );
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const COLORS: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

/// A bar chart: groups of bars (one group per label), one series per
/// colour; values ≥ 0 (NaN drawn as missing).
fn bar_chart(
    title: &str,
    y_label: &str,
    groups: &[(String, Vec<f64>)],
    series: &[String],
) -> String {
    let (w, h) = (760.0, 420.0);
    let (left, right, top, bottom) = (70.0, 20.0, 50.0, 70.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max = groups
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max);
    let max = if max > 0.0 { max * 1.1 } else { 1.0 };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    // Axes and grid.
    for i in 0..=5 {
        let v = max * f64::from(i) / 5.0;
        let y = top + plot_h - plot_h * f64::from(i) / 5.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            left + plot_w,
            left - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        esc(y_label)
    );
    let gw = plot_w / groups.len().max(1) as f64;
    for (gi, (label, vals)) in groups.iter().enumerate() {
        let gx = left + gw * gi as f64;
        let n = vals.len().max(1) as f64;
        let bw = (gw * 0.8) / n;
        for (i, &v) in vals.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let bh = plot_h * v / max;
            let x = gx + gw * 0.1 + bw * i as f64;
            let y = top + plot_h - bh;
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{}: {v:.1}</title></rect>"#,
                (bw - 2.0).max(1.0),
                COLORS[i % COLORS.len()],
                esc(series.get(i).map_or("", String::as_str))
            );
            if n <= 1.0 || bw >= 28.0 {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{v:.0}</text>"#,
                    x + bw / 2.0,
                    y - 4.0
                );
            }
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + gw / 2.0,
            top + plot_h + 18.0,
            esc(label)
        );
    }
    let _ = writeln!(
        svg,
        r#"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    if series.len() > 1 {
        for (i, s) in series.iter().enumerate() {
            let x = left + 90.0 * i as f64;
            let y = h - 22.0;
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{y:.1}">{}</text>"#,
                y - 10.0,
                COLORS[i % COLORS.len()],
                x + 16.0,
                esc(s)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn raise_nofile() {
    // SAFETY: get/setrlimit on a properly initialised `rlimit`.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

fn fmt_f(x: f64, prec: usize) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.prec$}")
    }
}

fn main() -> std::io::Result<()> {
    let started = Instant::now();
    raise_nofile();
    let workers = env("FULCRUM_BENCH_WORKERS", 4).max(1);
    let runs = env("FULCRUM_BENCH_RUNS", 3).max(1);
    let secs = Duration::from_secs(env("FULCRUM_BENCH_SECS", 4).max(1) as u64);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // `cargo bench` passes `--bench`; other arguments select scenarios
    // and/or systems by name.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let load = std::env::var("FULCRUM_BENCH_LOAD")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|l| *l > 0.0)
        .unwrap_or(1.0);
    let all_scenarios = scenarios(load);
    for a in &args {
        if !SYSTEMS.contains(&a.as_str()) && !all_scenarios.iter().any(|s| s.name == a) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("unknown argument {a:?}: expected a scenario or system name"),
            ));
        }
    }
    let pick_sc: Vec<Scenario> = if args
        .iter()
        .any(|a| all_scenarios.iter().any(|s| s.name == a))
    {
        all_scenarios
            .into_iter()
            .filter(|s| args.iter().any(|a| a == s.name))
            .collect()
    } else {
        all_scenarios
    };
    let pick_sys: Vec<&'static str> = if args.iter().any(|a| SYSTEMS.contains(&a.as_str())) {
        SYSTEMS
            .into_iter()
            .filter(|s| args.iter().any(|a| a == s))
            .collect()
    } else {
        SYSTEMS.to_vec()
    };

    println!(
        "{workers} workers, {cores} cores, {runs} runs × {}s (+{}s warm-up) per system and \
         scenario, alternating; medians. Latency from intended send time (open loop).",
        secs.as_secs(),
        WARMUP.as_secs_f64()
    );
    println!();
    println!(
        "| scenario | system | req/s | p50 µs | p99 µs | p99.9 µs | accepts/s | conn spread | \
         busy spread | cpu % (loadgen) | client errors | server errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut summaries = Vec::new();
    for sc in &pick_sc {
        let mut results: Vec<Vec<RunResult>> = pick_sys.iter().map(|_| Vec::new()).collect();
        for run in 0..runs {
            for k in 0..pick_sys.len() {
                let i = (k + run) % pick_sys.len();
                let r = run_once(sc, pick_sys[i], workers, secs, cores)?;
                for s in &r.samples {
                    eprintln!("{} / {} run {run}: {s}", sc.name, pick_sys[i]);
                }
                results[i].push(r);
            }
        }
        for (i, sys) in pick_sys.iter().enumerate() {
            let s = summarize(sc.name, sys, &results[i]);
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} |",
                s.scenario,
                s.system,
                fmt_f(s.rps, 0),
                fmt_f(s.p50_us, 0),
                fmt_f(s.p99_us, 0),
                fmt_f(s.p999_us, 0),
                fmt_f(s.accepts_per_s, 0),
                fmt_f(s.conn_spread, 2),
                fmt_f(s.busy_spread, 2),
                fmt_f(s.cpu_pct, 0),
                fmt_f(s.gen_cpu_pct, 0),
                s.errors,
                s.server_errors
            );
            summaries.push(s);
        }
        let _ = std::io::stdout().flush();
    }

    println!();
    for s in summaries.iter().filter(|s| s.scenario != "churn") {
        println!(
            "{} / {}: connections per worker {:?}, busy ms per worker {:?} (median-p99 run); \
             p99 of light requests only {} µs (elephants {:.1}% of requests)",
            s.scenario,
            s.system,
            s.conns,
            s.busy.iter().map(|b| b / 1_000_000).collect::<Vec<_>>(),
            fmt_f(s.p99_light_us, 0),
            100.0 * s.elephant_share
        );
    }
    println!();
    goals(&summaries);

    let dir = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("bench");
    std::fs::create_dir_all(&dir)?;
    let json: Vec<serde_json::Value> = summaries
        .iter()
        .map(|s| {
            serde_json::json!({
                "scenario": s.scenario,
                "system": s.system,
                "rps": json_num(s.rps),
                "p50_us": json_num(s.p50_us),
                "p99_us": json_num(s.p99_us),
                "p999_us": json_num(s.p999_us),
                "p99_light_us": json_num(s.p99_light_us),
                "accepts_per_s": json_num(s.accepts_per_s),
                "conn_spread": json_num(s.conn_spread),
                "busy_spread": json_num(s.busy_spread),
                "errors": s.errors + s.server_errors,
            })
        })
        .collect();
    let json_path = dir.join("balance.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json).map_err(std::io::Error::other)? + "\n",
    )?;

    let skewed: Vec<(String, Vec<f64>)> = summaries
        .iter()
        .filter(|s| s.scenario == "skewed")
        .map(|s| {
            (
                s.system.trim_start_matches("fulcrum-").to_string(),
                vec![s.p99_us],
            )
        })
        .collect();
    let p99_path = dir.join("balance_p99_skewed.svg");
    std::fs::write(
        &p99_path,
        bar_chart(
            "p99 latency, skewed scenario (lower is better)",
            "p99 µs",
            &skewed,
            &["p99".to_string()],
        ),
    )?;
    let conn_sc = if summaries.iter().any(|s| s.scenario == "skewed") {
        "skewed"
    } else {
        "uniform"
    };
    let conns: Vec<(String, Vec<f64>)> = summaries
        .iter()
        .filter(|s| s.scenario == conn_sc)
        .map(|s| {
            (
                s.system.trim_start_matches("fulcrum-").to_string(),
                s.conns.iter().map(|&c| c as f64).collect(),
            )
        })
        .collect();
    let conns_path = dir.join("balance_conns.svg");
    std::fs::write(
        &conns_path,
        bar_chart(
            &format!("connections per worker, {conn_sc} scenario (median-p99 run)"),
            "connections",
            &conns,
            &(0..workers)
                .map(|i| format!("worker {i}"))
                .collect::<Vec<_>>(),
        ),
    )?;
    println!();
    println!(
        "wrote {}, {}, {}",
        json_path.display(),
        p99_path.display(),
        conns_path.display()
    );
    println!("total time {:.0?}", started.elapsed());
    Ok(())
}

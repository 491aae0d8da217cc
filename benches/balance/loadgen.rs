//! The load generator: std threads with blocking sockets, never on the
//! server's runtime, identical for every system. Open-loop clients measure
//! each request's latency from its *intended* send time, so a server that
//! falls behind is charged for it (no coordinated omission).

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::scenario::{encode, Group, Load, LIGHT_US};

/// Client-side bound on any one connect, read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What kind of client a generator thread is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// Requests that cost at most [`LIGHT_US`]: the latencies that matter.
    #[default]
    Light,
    /// Elephants and heavy closed-loop clients.
    Heavy,
}

/// What one generator thread saw.
#[derive(Default)]
pub struct GenResult {
    /// Latency (ns, from intended send time) of requests intended inside
    /// the measurement window.
    pub lat_ns: Vec<u64>,
    /// Responses received inside the window.
    pub done_in_window: u64,
    /// Failed connects, reads, writes, timeouts and wrong replies.
    pub errors: u64,
    /// The first few failures, for the report.
    pub samples: Vec<String>,
    /// CPU time this thread used inside the window.
    pub cpu: Duration,
    pub kind: Kind,
}

impl GenResult {
    fn fail(&mut self, what: &str, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.samples.len() < 3 {
            self.samples.push(format!("{what}: {e}"));
        }
    }

    fn record(&mut self, w: Window, intended: Instant, done: Instant) {
        if intended >= w.warm && intended < w.end {
            self.lat_ns.push((done - intended).as_nanos() as u64);
        }
        if done >= w.warm && done < w.end {
            self.done_in_window += 1;
        }
    }
}

/// The times of one run: generator threads start their schedules at `t0`,
/// latencies count from `warm`, nothing new is sent from `end`.
#[derive(Clone, Copy)]
pub struct Window {
    pub t0: Instant,
    pub warm: Instant,
    pub end: Instant,
}

fn clock(id: libc::clockid_t) -> Duration {
    // SAFETY: `clock_gettime` fills the zero-initialised struct we pass.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(id, &mut ts);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process (every thread, user and system).
pub fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Tracks a generator thread's CPU time inside the window.
struct CpuMeter(Option<Duration>);

impl CpuMeter {
    /// Called before each request; starts counting at the window.
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

pub fn sleep_until(t: Instant) {
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

/// A start offset in `[0, interval)` for a client's schedule, the same for
/// the same `seed` on every run, so that clients do not send in lockstep.
fn phase(seed: u64, interval: Duration) -> Duration {
    interval.mul_f64(fulcrum_test_support::rng(seed).f64())
}

fn connect(addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let s = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// One request on `s`; the reply must echo it.
fn request(s: &mut std::net::TcpStream, req: [u8; 8]) -> Result<(), String> {
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

/// A long-lived connection sending `req` every `interval` (open loop).
fn persistent_conn(
    addr: SocketAddr,
    req: [u8; 8],
    kind: Kind,
    interval: Duration,
    seed: u64,
    w: Window,
) -> GenResult {
    low_timer_slack();
    let mut r = GenResult {
        kind,
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
        match request(&mut s, req) {
            Ok(()) => r.record(w, next, Instant::now()),
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

/// A long-lived connection sending `req` again as soon as it is answered
/// (closed loop), from `t0` to the end of the window.
fn closed_loop_conn(addr: SocketAddr, req: [u8; 8], w: Window) -> GenResult {
    let mut r = GenResult {
        kind: Kind::Heavy,
        ..GenResult::default()
    };
    let mut s = match connect(addr) {
        Ok(s) => s,
        Err(e) => {
            r.fail("connect", e);
            return r;
        }
    };
    sleep_until(w.t0);
    let mut cpu = CpuMeter(None);
    loop {
        let sent = Instant::now();
        if sent >= w.end {
            break;
        }
        cpu.tick(sent, w);
        match request(&mut s, req) {
            Ok(()) => r.record(w, sent, Instant::now()),
            Err(e) => {
                r.fail("request", e);
                break;
            }
        }
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
            Ok(mut s) => match request(&mut s, encode(cost_us, false)) {
                Ok(()) => {
                    r.record(w, next, Instant::now());
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

fn kind_of(cost_us: u64) -> Kind {
    if cost_us <= LIGHT_US {
        Kind::Light
    } else {
        Kind::Heavy
    }
}

/// Opens the groups' connections interleaved, so that the rare kind is
/// spread over the connection order.
fn persistent_groups(
    addr: SocketAddr,
    groups: &[Group],
    w: Window,
    threads: &mut Vec<std::thread::JoinHandle<GenResult>>,
) -> std::io::Result<()> {
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
        let req = encode(g.cost_us, false);
        threads.push(spawn_gen(move || {
            persistent_conn(addr, req, kind_of(g.cost_us), interval, i as u64, w)
        })?);
    }
    Ok(())
}

/// Starts every generator thread of `load` against `addr`.
pub fn start(
    load: &Load,
    addr: SocketAddr,
    w: Window,
) -> std::io::Result<Vec<std::thread::JoinHandle<GenResult>>> {
    let mut threads = Vec::new();
    match load {
        Load::Persistent(groups) => persistent_groups(addr, groups, w, &mut threads)?,
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
        &Load::Saturated {
            light,
            heavy,
            heavy_cost_us,
            block,
        } => {
            // The heavy clients connect first, interleaved with nothing:
            // which workers they land on is the server's choice.
            let req = encode(heavy_cost_us, block);
            for _ in 0..heavy {
                threads.push(spawn_gen(move || closed_loop_conn(addr, req, w))?);
            }
            persistent_groups(addr, &[light], w, &mut threads)?;
        }
    }
    Ok(threads)
}

//! `cargo bench --bench sched`: tokio's own scheduler workloads (its
//! `benches/rt_multi_threaded.rs` and `remote_spawn.rs`) on Fulcrum (DLB
//! scheduler, software backend), Fulcrum (work-stealing mode) and tokio's
//! multi-thread runtime, side by side in one process, alternating, with the
//! same worker count (`FULCRUM_BENCH_WORKERS`, default 2) and
//! `FULCRUM_BENCH_RUNS` runs each (default 25). `FULCRUM_BENCH_EVENT_INTERVAL`,
//! `FULCRUM_BENCH_SHED`, `FULCRUM_BENCH_SPIN_US` and `FULCRUM_BENCH_HANDOFF_US`
//! override the scheduler's
//! thresholds (for `scripts/sweep.sh`).
//!
//! Prints a markdown table of medians and ratios, and writes
//! `target/bench/sched.json`: one object per workload and system,
//! `{"workload", "system", "workers", "median_ns", "runs"}`.
//!
//! The workloads are written once against a tiny trait, so every runtime
//! runs the same code; channels are `tokio::sync` (runtime-agnostic).

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulcrum_test_support::median_duration;
use tokio::sync::{mpsc, oneshot};

mod common;
use common::{env, tune};

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;
/// Spawns from any thread; the returned future completes with the task.
type Spawner = Arc<dyn Fn(BoxFut) -> BoxFut + Send + Sync>;

/// What a workload needs from a runtime.
trait Rt {
    fn name(&self) -> &'static str;
    fn block_on(&self, f: BoxFut);
    /// Spawns from inside the runtime.
    fn spawn(f: BoxFut);
    fn yield_now() -> BoxFut;
    /// Spawns from outside the runtime's workers.
    fn spawner(&self) -> Spawner;
}

struct Fulcrum(fulcrum::runtime::Runtime, &'static str);
struct Tokio(tokio::runtime::Runtime);

impl Rt for Fulcrum {
    fn name(&self) -> &'static str {
        self.1
    }
    fn block_on(&self, f: BoxFut) {
        self.0.block_on(f)
    }
    fn spawn(f: BoxFut) {
        drop(fulcrum::spawn(f));
    }
    fn yield_now() -> BoxFut {
        Box::pin(fulcrum::task::yield_now())
    }
    fn spawner(&self) -> Spawner {
        let h = self.0.handle().clone();
        Arc::new(move |f| {
            let j = h.spawn(f);
            Box::pin(async move {
                let _ = j.await;
            })
        })
    }
}

impl Rt for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }
    fn block_on(&self, f: BoxFut) {
        self.0.block_on(f)
    }
    fn spawn(f: BoxFut) {
        drop(tokio::spawn(f));
    }
    fn yield_now() -> BoxFut {
        Box::pin(tokio::task::yield_now())
    }
    fn spawner(&self) -> Spawner {
        let h = self.0.handle().clone();
        Arc::new(move |f| {
            let j = h.spawn(f);
            Box::pin(async move {
                let _ = j.await;
            })
        })
    }
}

const NUM_SPAWN: usize = 10_000;

/// tokio's `stall`: 10 µs of busy CPU.
fn stall() {
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(10) {
        std::hint::spin_loop();
    }
}

fn spawn_many_local<R: Rt>(rt: &R) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let rem = Arc::new(AtomicUsize::new(NUM_SPAWN));
    rt.block_on(Box::pin(async move {
        for _ in 0..NUM_SPAWN {
            let tx = tx.clone();
            let rem = rem.clone();
            R::spawn(Box::pin(async move {
                if rem.fetch_sub(1, SeqCst) == 1 {
                    let _ = tx.send(()).await;
                }
            }));
        }
        let _ = rx.recv().await;
    }));
}

/// `n` spawns from the thread inside `block_on` (not a worker), then
/// awaits every handle.
fn spawn_remote<R: Rt>(rt: &R, n: usize) {
    let spawner = rt.spawner();
    rt.block_on(Box::pin(async move {
        let handles: Vec<BoxFut> = (0..n).map(|_| spawner(Box::pin(async {}))).collect();
        for h in handles {
            h.await;
        }
    }));
}

fn spawn_many_remote_idle<R: Rt>(rt: &R) {
    spawn_remote(rt, NUM_SPAWN);
}

/// Background load for the `busy` workloads: stopped (and awaited) when
/// dropped.
struct Busy {
    stop: Arc<AtomicBool>,
    running: Arc<AtomicUsize>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        while self.running.load(SeqCst) > 0 {
            std::thread::yield_now();
        }
    }
}

/// tokio's busy1: 8 tasks loop on yield + stall while the remote spawns
/// run.
fn spawn_many_remote_busy1<R: Rt>(rt: &R) {
    let spawner = rt.spawner();
    let busy = Busy {
        stop: Arc::new(AtomicBool::new(false)),
        running: Arc::new(AtomicUsize::new(8)),
    };
    for _ in 0..8 {
        let (stop, running) = (busy.stop.clone(), busy.running.clone());
        drop(spawner(Box::pin(async move {
            while !stop.load(SeqCst) {
                R::yield_now().await;
                stall();
            }
            running.fetch_sub(1, SeqCst);
        })));
    }
    spawn_remote(rt, NUM_SPAWN);
    drop(busy);
}

/// tokio's busy2: 1,000 remote spawns while 4 chains of tasks re-spawn
/// themselves after each stall.
fn spawn_many_remote_busy2<R: Rt>(rt: &R) {
    fn chain<R: Rt>(stop: Arc<AtomicBool>, running: Arc<AtomicUsize>) {
        R::spawn(Box::pin(async move {
            stall();
            if stop.load(SeqCst) {
                running.fetch_sub(1, SeqCst);
            } else {
                chain::<R>(stop, running);
            }
        }));
    }
    let spawner = rt.spawner();
    let busy = Busy {
        stop: Arc::new(AtomicBool::new(false)),
        running: Arc::new(AtomicUsize::new(4)),
    };
    for _ in 0..4 {
        let (stop, running) = (busy.stop.clone(), busy.running.clone());
        drop(spawner(Box::pin(async move { chain::<R>(stop, running) })));
    }
    spawn_remote(rt, 1_000);
    drop(busy);
}

fn yield_many<R: Rt>(rt: &R) {
    const TASKS: usize = 200;
    const YIELDS: usize = 1_000;
    let (tx, mut rx) = mpsc::channel::<()>(TASKS);
    rt.block_on(Box::pin(async move {
        for _ in 0..TASKS {
            let tx = tx.clone();
            R::spawn(Box::pin(async move {
                for _ in 0..YIELDS {
                    R::yield_now().await;
                }
                let _ = tx.send(()).await;
            }));
        }
        for _ in 0..TASKS {
            let _ = rx.recv().await;
        }
    }));
}

fn ping_pong<R: Rt>(rt: &R) {
    const PAIRS: usize = 1_000;
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let rem = Arc::new(AtomicUsize::new(PAIRS));
    rt.block_on(Box::pin(async move {
        for _ in 0..PAIRS {
            let done_tx = done_tx.clone();
            let rem = rem.clone();
            R::spawn(Box::pin(async move {
                let (tx1, rx1) = oneshot::channel::<()>();
                let (tx2, rx2) = oneshot::channel::<()>();
                R::spawn(Box::pin(async move {
                    let _ = rx1.await;
                    let _ = tx2.send(());
                }));
                let _ = tx1.send(());
                let _ = rx2.await;
                if rem.fetch_sub(1, SeqCst) == 1 {
                    let _ = done_tx.send(()).await;
                }
            }));
        }
        let _ = done_rx.recv().await;
    }));
}

fn chained_spawn<R: Rt>(rt: &R) {
    const ITER: usize = 1_000;
    fn iter<R: Rt>(done: mpsc::Sender<()>, n: usize) {
        if n == 0 {
            R::spawn(Box::pin(async move {
                let _ = done.send(()).await;
            }));
        } else {
            R::spawn(Box::pin(async move { iter::<R>(done, n - 1) }));
        }
    }
    let (tx, mut rx) = mpsc::channel::<()>(1);
    rt.block_on(Box::pin(async move {
        iter::<R>(tx, ITER);
        let _ = rx.recv().await;
    }));
}

/// tokio's `remote_spawn`: 12,800 spawns from `threads` external threads,
/// each awaiting its own handles.
fn remote_spawn<R: Rt>(rt: &R, threads: usize) {
    const TOTAL: usize = 12_800;
    let spawner = rt.spawner();
    let joins: Vec<_> = (0..threads)
        .map(|_| {
            let spawner = spawner.clone();
            std::thread::spawn(move || {
                (0..TOTAL / threads)
                    .map(|_| spawner(Box::pin(async {})))
                    .collect::<Vec<BoxFut>>()
            })
        })
        .collect();
    let handles: Vec<BoxFut> = joins
        .into_iter()
        .flat_map(|j| j.join().expect("spawning thread"))
        .collect();
    rt.block_on(Box::pin(async move {
        for h in handles {
            h.await;
        }
    }));
}

fn remote_spawn_1<R: Rt>(rt: &R) {
    remote_spawn(rt, 1);
}
fn remote_spawn_2<R: Rt>(rt: &R) {
    remote_spawn(rt, 2);
}
fn remote_spawn_8<R: Rt>(rt: &R) {
    remote_spawn(rt, 8);
}

fn time<R: Rt>(rt: &R, f: fn(&R)) -> Duration {
    let t = Instant::now();
    f(rt);
    t.elapsed()
}

fn main() -> std::io::Result<()> {
    // `cargo bench` passes `--bench`; names filter the workloads (a
    // workload runs if its name contains any of them).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let workers = env("FULCRUM_BENCH_WORKERS", 2);
    let runs = env("FULCRUM_BENCH_RUNS", 25).max(1);
    let multi = |scheduler| {
        tune(
            fulcrum::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .scheduler(scheduler)
                .dlb_backend(fulcrum::dlb::Backend::Software),
        )
        .build()
    };
    let fulcrum = Fulcrum(multi(fulcrum::runtime::Scheduler::Dlb)?, "fulcrum-dlb");
    let stealing = Fulcrum(
        multi(fulcrum::runtime::Scheduler::WorkStealing)?,
        "fulcrum-stealing",
    );
    let tokio = Tokio(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?,
    );
    type Row = (&'static str, fn(&Fulcrum), fn(&Tokio));
    let workloads: [Row; 10] = [
        ("spawn_many_local", spawn_many_local, spawn_many_local),
        (
            "spawn_many_remote_idle",
            spawn_many_remote_idle,
            spawn_many_remote_idle,
        ),
        (
            "spawn_many_remote_busy1",
            spawn_many_remote_busy1,
            spawn_many_remote_busy1,
        ),
        (
            "spawn_many_remote_busy2",
            spawn_many_remote_busy2,
            spawn_many_remote_busy2,
        ),
        ("yield_many", yield_many, yield_many),
        ("ping_pong", ping_pong, ping_pong),
        ("chained_spawn", chained_spawn, chained_spawn),
        ("remote_spawn_1_thread", remote_spawn_1, remote_spawn_1),
        ("remote_spawn_2_threads", remote_spawn_2, remote_spawn_2),
        ("remote_spawn_8_threads", remote_spawn_8, remote_spawn_8),
    ];
    println!("{workers} workers, {runs} runs each, alternating; medians");
    println!();
    println!(
        "| workload | {} | {} | {} | dlb ÷ tokio | dlb ÷ stealing |",
        fulcrum.name(),
        stealing.name(),
        tokio.name()
    );
    println!("|---|---|---|---|---|---|");
    let mut json = Vec::new();
    for (name, f, t) in workloads {
        if !filters.is_empty() && !filters.iter().any(|w| name.contains(w.as_str())) {
            continue;
        }
        // Warm up all three.
        f(&fulcrum);
        f(&stealing);
        t(&tokio);
        let (mut ft, mut st, mut tt) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            ft.push(time(&fulcrum, f));
            st.push(time(&stealing, f));
            tt.push(time(&tokio, t));
        }
        let (fm, sm, tm) = (
            median_duration(ft),
            median_duration(st),
            median_duration(tt),
        );
        println!(
            "| {name} | {fm:.2?} | {sm:.2?} | {tm:.2?} | {:.2} | {:.2} |",
            fm.as_secs_f64() / tm.as_secs_f64(),
            fm.as_secs_f64() / sm.as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        for (system, m) in [("fulcrum-dlb", fm), ("fulcrum-stealing", sm), ("tokio", tm)] {
            json.push(format!(
                "  {{\"workload\": \"{name}\", \"system\": \"{system}\", \"workers\": {workers}, \
                 \"median_ns\": {}, \"runs\": {runs}}}",
                m.as_nanos()
            ));
        }
    }
    let dir = std::path::Path::new(
        &std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
    )
    .join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("sched.json");
    std::fs::write(&path, format!("[\n{}\n]\n", json.join(",\n")))?;
    println!();
    println!("wrote {}", path.display());
    Ok(())
}

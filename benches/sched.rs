//! `cargo bench --bench sched`: tokio's own scheduler workloads (its
//! `benches/rt_multi_threaded.rs` and `remote_spawn.rs`) on Fulcrum (DLB
//! scheduler, software backend), Fulcrum (work-stealing mode) and tokio's
//! multi-thread runtime, with the same worker count
//! (`FULCRUM_BENCH_WORKERS`, default 2).
//!
//! Every (workload, system, round) runs in a process of its own (this
//! binary re-executed as `sched --run SYSTEM WORKLOAD`), so the runtimes
//! never share a heap or warmed caches; the systems' order rotates each
//! round. A process runs its workload once to warm up, then
//! `FULCRUM_BENCH_RUNS` times (default 5) and reports each time; a round's
//! figure is the median of its process's runs, and the table shows the
//! median over `FULCRUM_BENCH_ROUNDS` rounds (default 5).
//! `FULCRUM_BENCH_EVENT_INTERVAL`, `FULCRUM_BENCH_SHED`,
//! `FULCRUM_BENCH_SPIN_US` and the other knobs of `common::tune` override
//! the DLB scheduler's thresholds (for `scripts/sweep.sh`).
//!
//! Arguments filter: a system name (`fulcrum-dlb`, `fulcrum-stealing`,
//! `tokio`) selects systems; any other word selects the workloads whose
//! name contains it. `sched --run SYSTEM WORKLOAD` alone runs one
//! process's share (what `scripts/profile.sh` records); with
//! `FULCRUM_BENCH_METRICS=1` it also prints, for each run on Fulcrum, the
//! time and each worker's parks, polls, DLB events and steals during it.
//!
//! Prints a markdown table of medians and ratios, and writes
//! `target/bench/sched.json` (under `$CARGO_TARGET_DIR` if set): one object
//! per workload and system, `{"workload", "system", "workers",
//! "median_ns", "rounds", "runs", "round_medians_ns", "runs_ns"}` (`runs`
//! per round; `runs_ns` every timed run, round by round).
//!
//! The workloads are written once against a tiny trait, so every runtime
//! runs the same code; channels are `tokio::sync` (runtime-agnostic). Where
//! tokio's benchmark spawns from inside the runtime, so does this one
//! (`ping_pong`'s and `chained_spawn`'s outer spawns run on a worker); the
//! remote spawns come from threads outside it, and `remote_spawn`'s threads
//! start together at a barrier. The busy tasks of `busy1`/`busy2` (2 ×
//! workers and 1 × workers, as tokio's) are running before the clock
//! starts, and only the remote spawns are timed. Unlike tokio's, which
//! caps the thread count at the available parallelism, `remote_spawn`
//! always runs 1, 2 and 8 threads.

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fulcrum_test_support::median_duration;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

mod common;
use common::{env, tune};

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;
/// Spawns from any thread; the returned future completes with the task.
type Spawner = Arc<dyn Fn(BoxFut) -> BoxFut + Send + Sync>;

/// What a workload needs from a runtime.
trait Rt {
    fn block_on(&self, f: BoxFut);
    fn workers(&self) -> usize;
    /// Spawns from inside the runtime.
    fn spawn(f: BoxFut);
    fn yield_now() -> BoxFut;
    /// Spawns from outside the runtime's workers.
    fn spawner(&self) -> Spawner;
}

struct Fulcrum(fulcrum::runtime::Runtime, usize);
struct Tokio(tokio::runtime::Runtime, usize);

impl Rt for Fulcrum {
    fn block_on(&self, f: BoxFut) {
        self.0.block_on(f)
    }
    fn workers(&self) -> usize {
        self.1
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
    fn block_on(&self, f: BoxFut) {
        self.0.block_on(f)
    }
    fn workers(&self) -> usize {
        self.1
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

/// tokio's `stall`: 10 µs on the thread, yielding it to the OS meanwhile.
fn stall() {
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(10) {
        std::thread::yield_now();
    }
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn spawn_many_local<R: Rt>(rt: &R) -> Duration {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let rem = Arc::new(AtomicUsize::new(NUM_SPAWN));
    time(|| {
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
        }))
    })
}

/// `n` spawns from this thread, outside the runtime, then `block_on`
/// awaits every handle: the timed part of the `remote` workloads.
fn spawn_remote<R: Rt>(rt: &R, n: usize) -> Duration {
    let spawner = rt.spawner();
    time(|| {
        let handles: Vec<BoxFut> = (0..n).map(|_| spawner(Box::pin(async {}))).collect();
        rt.block_on(Box::pin(async move {
            for h in handles {
                h.await;
            }
        }));
    })
}

fn spawn_many_remote_idle<R: Rt>(rt: &R) -> Duration {
    spawn_remote(rt, NUM_SPAWN)
}

/// Background load for the `busy` workloads: its tasks count themselves
/// in `running` once started, and are stopped (and awaited) on drop.
struct Busy {
    stop: Arc<AtomicBool>,
    running: Arc<AtomicUsize>,
}

impl Busy {
    fn new() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Waits until `n` tasks are running.
    fn wait_running(&self, n: usize) {
        while self.running.load(SeqCst) < n {
            std::thread::yield_now();
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        while self.running.load(SeqCst) > 0 {
            std::thread::yield_now();
        }
    }
}

/// tokio's busy1: 2 × workers tasks loop on yield + stall while the remote
/// spawns run.
fn spawn_many_remote_busy1<R: Rt>(rt: &R) -> Duration {
    let spawner = rt.spawner();
    let busy = Busy::new();
    let n = 2 * rt.workers();
    for _ in 0..n {
        let (stop, running) = (busy.stop.clone(), busy.running.clone());
        drop(spawner(Box::pin(async move {
            running.fetch_add(1, SeqCst);
            while !stop.load(SeqCst) {
                R::yield_now().await;
                stall();
            }
            running.fetch_sub(1, SeqCst);
        })));
    }
    busy.wait_running(n);
    spawn_remote(rt, NUM_SPAWN)
}

/// tokio's busy2: 1,000 remote spawns while one chain of tasks per worker
/// re-spawns itself after each stall.
fn spawn_many_remote_busy2<R: Rt>(rt: &R) -> Duration {
    fn chain<R: Rt>(stop: Arc<AtomicBool>, running: Arc<AtomicUsize>) {
        R::spawn(Box::pin(async move {
            if stop.load(SeqCst) {
                running.fetch_sub(1, SeqCst);
            } else {
                stall();
                chain::<R>(stop, running);
            }
        }));
    }
    let spawner = rt.spawner();
    let busy = Busy::new();
    let n = rt.workers();
    for _ in 0..n {
        let (stop, running) = (busy.stop.clone(), busy.running.clone());
        drop(spawner(Box::pin(async move {
            running.fetch_add(1, SeqCst);
            chain::<R>(stop, running);
        })));
    }
    busy.wait_running(n);
    spawn_remote(rt, 1_000)
}

fn yield_many<R: Rt>(rt: &R) -> Duration {
    const TASKS: usize = 200;
    const YIELDS: usize = 1_000;
    let (tx, mut rx) = mpsc::channel::<()>(TASKS);
    time(|| {
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
        }))
    })
}

/// tokio's `ping_pong`: one task, spawned from `block_on`, spawns the
/// 1,000 pairs from inside the runtime.
fn ping_pong<R: Rt>(rt: &R) -> Duration {
    const PAIRS: usize = 1_000;
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let rem = Arc::new(AtomicUsize::new(PAIRS));
    time(|| {
        rt.block_on(Box::pin(async move {
            R::spawn(Box::pin(async move {
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
            }));
            let _ = done_rx.recv().await;
        }))
    })
}

/// tokio's `chained_spawn`: a task spawned from `block_on` starts a chain
/// of 1,000 tasks, each spawning the next from inside the runtime.
fn chained_spawn<R: Rt>(rt: &R) -> Duration {
    const ITER: usize = 1_000;
    fn iter<R: Rt>(done: mpsc::Sender<()>, n: usize) {
        if n == 0 {
            // The channel has room for this one message.
            let _ = done.try_send(());
        } else {
            R::spawn(Box::pin(async move { iter::<R>(done, n - 1) }));
        }
    }
    let (tx, mut rx) = mpsc::channel::<()>(1);
    time(|| {
        rt.block_on(Box::pin(async move {
            R::spawn(Box::pin(async move { iter::<R>(tx, ITER) }));
            let _ = rx.recv().await;
        }))
    })
}

/// tokio's `remote_spawn`: 12,800 spawns from `threads` external threads
/// that start together at a barrier, then `block_on` awaits every handle.
fn remote_spawn<R: Rt>(rt: &R, threads: usize) -> Duration {
    const TOTAL: usize = 12_800;
    let spawner = rt.spawner();
    let barrier = Arc::new(Barrier::new(threads));
    time(|| {
        let joins: Vec<_> = (0..threads)
            .map(|_| {
                let (spawner, barrier) = (spawner.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut handles = Vec::with_capacity(TOTAL / threads);
                    barrier.wait();
                    for _ in 0..TOTAL / threads {
                        handles.push(spawner(Box::pin(async {})));
                    }
                    handles
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
    })
}

fn remote_spawn_1<R: Rt>(rt: &R) -> Duration {
    remote_spawn(rt, 1)
}
fn remote_spawn_2<R: Rt>(rt: &R) -> Duration {
    remote_spawn(rt, 2)
}
fn remote_spawn_8<R: Rt>(rt: &R) -> Duration {
    remote_spawn(rt, 8)
}

/// A workload: its name and its code on each kind of runtime.
type Workload = (
    &'static str,
    fn(&Fulcrum) -> Duration,
    fn(&Tokio) -> Duration,
);

const WORKLOADS: [Workload; 10] = [
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

const SYSTEMS: [&str; 3] = ["fulcrum-dlb", "fulcrum-stealing", "tokio"];

/// What a `--run` process prints on stdout.
#[derive(Serialize, Deserialize)]
struct ProcessRuns {
    runs_ns: Vec<u64>,
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

/// `--run SYSTEM WORKLOAD`: one runtime, one warm-up, then the timed runs.
fn run_one(system: &str, workload: &str) -> std::io::Result<()> {
    let workers = env("FULCRUM_BENCH_WORKERS", 2);
    let runs = env("FULCRUM_BENCH_RUNS", 5).max(1);
    let &(_, on_fulcrum, on_tokio) = WORKLOADS
        .iter()
        .find(|w| w.0 == workload)
        .ok_or_else(|| invalid(format!("unknown workload {workload:?}")))?;
    let fulcrum = |scheduler| -> std::io::Result<Fulcrum> {
        let rt = tune(
            fulcrum::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .scheduler(scheduler)
                .dlb_backend(fulcrum::dlb::Backend::Software),
        )
        .build()?;
        Ok(Fulcrum(rt, workers))
    };
    let mut timed: Box<dyn FnMut() -> Duration> = match system {
        "fulcrum-dlb" => {
            let rt = fulcrum(fulcrum::runtime::Scheduler::Dlb)?;
            Box::new(move || with_metrics(&rt, on_fulcrum))
        }
        "fulcrum-stealing" => {
            let rt = fulcrum(fulcrum::runtime::Scheduler::WorkStealing)?;
            Box::new(move || with_metrics(&rt, on_fulcrum))
        }
        "tokio" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()?;
            let rt = Tokio(rt, workers);
            Box::new(move || on_tokio(&rt))
        }
        other => return Err(invalid(format!("unknown system {other:?}"))),
    };
    timed();
    let out = ProcessRuns {
        runs_ns: (0..runs)
            .map(|_| u64::try_from(timed().as_nanos()).unwrap_or(u64::MAX))
            .collect(),
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// Runs `workload` once; with `FULCRUM_BENCH_METRICS` set, prints to
/// stderr what each worker did during the run (parks, polls, DLB events,
/// steals), next to the time, to tell the modes of a workload apart.
fn with_metrics(rt: &Fulcrum, workload: fn(&Fulcrum) -> Duration) -> Duration {
    if std::env::var_os("FULCRUM_BENCH_METRICS").is_none() {
        return workload(rt);
    }
    let before = rt.0.handle().metrics();
    let took = workload(rt);
    let after = rt.0.handle().metrics();
    let per_worker = |field: fn(&fulcrum::runtime::WorkerMetrics) -> u64| -> Vec<u64> {
        after
            .workers
            .iter()
            .zip(&before.workers)
            .map(|(a, b)| field(a).saturating_sub(field(b)))
            .collect()
    };
    eprintln!(
        "metrics: {} µs; per worker: parks {:?} polled {:?} dlb_received {:?} dlb_sent {:?} \
         fallbacks {:?} steals {:?}",
        took.as_micros(),
        per_worker(|w| w.parks),
        per_worker(|w| w.tasks_polled),
        per_worker(|w| w.dlb_received),
        per_worker(|w| w.dlb_sent),
        per_worker(|w| w.fallbacks),
        per_worker(|w| w.steals),
    );
    took
}

/// One process's share, run by the parent.
fn spawn_run(system: &str, workload: &str) -> std::io::Result<Vec<Duration>> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--run", system, workload])
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{workload} on {system} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let runs: ProcessRuns = serde_json::from_slice(&out.stdout).map_err(|e| {
        std::io::Error::other(format!(
            "{workload} on {system} printed {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })?;
    Ok(runs.runs_ns.into_iter().map(Duration::from_nanos).collect())
}

/// One line of `sched.json`.
#[derive(Serialize)]
struct Entry {
    workload: &'static str,
    system: &'static str,
    workers: usize,
    median_ns: u64,
    rounds: usize,
    runs: usize,
    round_medians_ns: Vec<u64>,
    runs_ns: Vec<Vec<u64>>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--run") {
        return match (args.get(1), args.get(2)) {
            (Some(system), Some(workload)) => run_one(system, workload),
            _ => Err(invalid("usage: sched --run SYSTEM WORKLOAD".into())),
        };
    }
    // `cargo bench` passes `--bench`; other words filter (see the top).
    let words: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let systems = common::named_systems(&words, &SYSTEMS);
    let filters: Vec<&String> = words
        .into_iter()
        .filter(|w| !SYSTEMS.contains(&w.as_str()))
        .collect();
    let workers = env("FULCRUM_BENCH_WORKERS", 2);
    let runs = env("FULCRUM_BENCH_RUNS", 5).max(1);
    let rounds = env("FULCRUM_BENCH_ROUNDS", 5).max(1);
    println!(
        "{workers} workers; {rounds} rounds, one process per system and workload each \
         (order rotated), {runs} runs per process after a warm-up; medians"
    );
    println!();
    println!(
        "| workload | {} | {} | {} | dlb ÷ tokio | dlb ÷ stealing |",
        SYSTEMS[0], SYSTEMS[1], SYSTEMS[2]
    );
    println!("|---|---|---|---|---|---|");
    let mut json = Vec::new();
    for &(name, _, _) in &WORKLOADS {
        if !filters.is_empty() && !filters.iter().any(|w| name.contains(w.as_str())) {
            continue;
        }
        let mut per_system: Vec<Vec<Vec<Duration>>> = systems.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for k in 0..systems.len() {
                let i = (k + round) % systems.len();
                per_system[i].push(spawn_run(systems[i], name)?);
            }
        }
        let mut medians: [Option<Duration>; 3] = [None; 3];
        for (i, system) in systems.iter().enumerate() {
            let round_medians: Vec<Duration> = per_system[i]
                .iter()
                .map(|r| median_duration(r.iter().copied()))
                .collect();
            let m = median_duration(round_medians.iter().copied());
            if let Some(slot) = SYSTEMS.iter().position(|s| s == system) {
                medians[slot] = Some(m);
            }
            json.push(Entry {
                workload: name,
                system,
                workers,
                median_ns: nanos(m),
                rounds,
                runs,
                round_medians_ns: round_medians.into_iter().map(nanos).collect(),
                runs_ns: per_system[i]
                    .iter()
                    .map(|r| r.iter().copied().map(nanos).collect())
                    .collect(),
            });
        }
        let cell = |m: Option<Duration>| m.map_or("–".to_string(), |d| format!("{d:.2?}"));
        let ratio = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}", a.as_secs_f64() / b.as_secs_f64()),
            _ => "–".to_string(),
        };
        let [dlb, stealing, tokio] = medians;
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            cell(dlb),
            cell(stealing),
            cell(tokio),
            ratio(dlb, tokio),
            ratio(dlb, stealing)
        );
        let _ = std::io::stdout().flush();
    }
    let dir = std::path::Path::new(
        &std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
    )
    .join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("sched.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")?;
    println!();
    println!("wrote {}", path.display());
    Ok(())
}

//! `cargo bench -p fulcrum-runtime --bench sched`: tokio's own scheduler
//! workloads (`benches/rt_multi_threaded.rs` in tokio) on Fulcrum (DLB
//! scheduler, software backend) and on tokio's multi-thread runtime, side
//! by side in one process, alternating, with the same worker count
//! (`FULCRUM_BENCH_WORKERS`, default 2). Prints medians and ratios.
//!
//! The workloads are written once against a tiny trait, so both runtimes run
//! the same code; channels are `tokio::sync` (runtime-agnostic).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a workload needs from a runtime.
trait Rt {
    fn name(&self) -> &'static str;
    fn block_on(&self, f: BoxFut);
    fn spawn(f: BoxFut);
    fn yield_now() -> BoxFut;
}

struct Fulcrum(fulcrum_runtime::Runtime, &'static str);
struct Tokio(tokio::runtime::Runtime);

impl Rt for Fulcrum {
    fn name(&self) -> &'static str {
        self.1
    }
    fn block_on(&self, f: BoxFut) {
        self.0.block_on(f)
    }
    fn spawn(f: BoxFut) {
        drop(fulcrum_runtime::spawn(f));
    }
    fn yield_now() -> BoxFut {
        Box::pin(fulcrum_runtime::yield_now())
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
}

const NUM_SPAWN: usize = 10_000;

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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<R: Rt>(rt: &R, f: fn(&R)) -> Duration {
    let t = Instant::now();
    f(rt);
    t.elapsed()
}

fn main() {
    let workers: usize = std::env::var("FULCRUM_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let runs: usize = std::env::var("FULCRUM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let fulcrum = Fulcrum(
        fulcrum_runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .dlb_backend(fulcrum_dlb::Backend::Software)
            .build()
            .expect("fulcrum runtime"),
        "fulcrum-dlb",
    );
    let stealing = Fulcrum(
        fulcrum_runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .scheduler(fulcrum_runtime::Scheduler::WorkStealing)
            .dlb_backend(fulcrum_dlb::Backend::Software)
            .build()
            .expect("fulcrum runtime"),
        "fulcrum-stealing",
    );
    let tokio = Tokio(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("tokio runtime"),
    );
    type Pair = (&'static str, fn(&Fulcrum), fn(&Tokio));
    let workloads: [Pair; 4] = [
        ("spawn_many_local", spawn_many_local, spawn_many_local),
        ("yield_many", yield_many, yield_many),
        ("ping_pong", ping_pong, ping_pong),
        ("chained_spawn", chained_spawn, chained_spawn),
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
    for (name, f, t) in workloads {
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
        let (fm, sm, tm) = (median(ft), median(st), median(tt));
        println!(
            "| {name} | {fm:.2?} | {sm:.2?} | {tm:.2?} | {:.2} | {:.2} |",
            fm.as_secs_f64() / tm.as_secs_f64(),
            fm.as_secs_f64() / sm.as_secs_f64()
        );
    }
}

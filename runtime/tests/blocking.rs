//! `spawn_blocking` and the blocking pool, on every runtime flavour.
#![cfg(not(loom))]

use std::cell::RefCell;
use std::collections::HashSet;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier};

use std::thread;
use std::time::{Duration, Instant};

use fulcrum_runtime::{spawn, spawn_blocking, Handle};

mod common;
use common::{builders, futures_block_on, runtimes};

/// Counts the live pool threads that ran one of our closures: the first
/// closure on a thread installs a thread-local guard, whose destructor runs
/// when the thread exits.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

thread_local! {
    static LIVE: RefCell<Option<Live>> = const { RefCell::new(None) };
}

fn count_this_thread(live: &Arc<AtomicUsize>) {
    LIVE.with(|l| {
        let mut l = l.borrow_mut();
        if l.is_none() {
            live.fetch_add(1, SeqCst);
            *l = Some(Live(live.clone()));
        }
    });
}

/// Waits until `cond` holds, for at most `limit`; returns the time taken.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        thread::sleep(Duration::from_millis(2));
    }
    cond().then(|| start.elapsed())
}

#[test]
fn returns_its_value_from_everywhere() {
    for (name, rt) in runtimes() {
        // From block_on, through the free function.
        let v = rt.block_on(async { spawn_blocking(|| 6 * 7).await.unwrap() });
        assert_eq!(v, 42, "{name}");
        // From the runtime and a handle, outside it.
        let a = rt.spawn_blocking(|| "runtime");
        let handle = rt.handle().clone();
        let b = thread::spawn(move || handle.spawn_blocking(|| "handle"))
            .join()
            .unwrap();
        assert_eq!(futures_block_on(a).unwrap(), "runtime", "{name}");
        assert_eq!(futures_block_on(b).unwrap(), "handle", "{name}");
        // Through the `task` module too.
        let c = rt.block_on(async { fulcrum_runtime::task::spawn_blocking(|| 1).await });
        assert_eq!(c.unwrap(), 1, "{name}");
    }
}

#[test]
fn runs_on_a_pool_thread_that_is_not_a_worker() {
    for (name, rt) in runtimes() {
        let (worker, pool) = rt.block_on(async {
            spawn(async {
                let worker = thread::current().id();
                let pool = spawn_blocking(|| {
                    (
                        thread::current().id(),
                        thread::current().name().map(str::to_owned),
                    )
                })
                .await
                .unwrap();
                (worker, pool)
            })
            .await
            .unwrap()
        });
        assert_ne!(worker, pool.0, "{name}");
        assert!(
            pool.1
                .as_deref()
                .unwrap_or("")
                .starts_with("fulcrum-blocking"),
            "{name}: {:?}",
            pool.1
        );
    }
}

#[test]
fn a_hundred_sleeping_calls_run_in_parallel() {
    for (name, rt) in runtimes() {
        let live = Arc::new(AtomicUsize::new(0));
        let l2 = live.clone();
        let took = rt.block_on(async move {
            let start = Instant::now();
            let hs: Vec<_> = (0..100u64)
                .map(|i| {
                    let live = l2.clone();
                    spawn_blocking(move || {
                        count_this_thread(&live);
                        thread::sleep(Duration::from_millis(10));
                        i
                    })
                })
                .collect();
            let mut sum = 0;
            for h in hs {
                sum += h.await.unwrap();
            }
            assert_eq!(sum, 4_950);
            start.elapsed()
        });
        let threads = live.load(SeqCst);
        eprintln!("{name}: 100 x 10 ms blocking calls took {took:?} on {threads} threads");
        assert!(took < Duration::from_millis(500), "{name}: {took:?}");
        assert!(threads > 10, "{name}: the pool did not grow: {threads}");
    }
}

#[test]
fn max_blocking_threads_bounds_concurrency() {
    for (name, mut builder) in builders() {
        let rt = builder.max_blocking_threads(2).build().unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let live = Arc::new(AtomicUsize::new(0));
        let (r, m, l) = (running.clone(), max.clone(), live.clone());
        let took = rt.block_on(async move {
            let start = Instant::now();
            let hs: Vec<_> = (0..10)
                .map(|_| {
                    let (r, m, l) = (r.clone(), m.clone(), l.clone());
                    spawn_blocking(move || {
                        count_this_thread(&l);
                        let now = r.fetch_add(1, SeqCst) + 1;
                        m.fetch_max(now, SeqCst);
                        thread::sleep(Duration::from_millis(20));
                        r.fetch_sub(1, SeqCst);
                    })
                })
                .collect();
            for h in hs {
                h.await.unwrap();
            }
            start.elapsed()
        });
        let (max, threads) = (max.load(SeqCst), live.load(SeqCst));
        eprintln!("{name}: max_blocking_threads(2): 10 x 20 ms took {took:?}, max concurrent {max}, {threads} threads");
        assert_eq!(max, 2, "{name}");
        assert_eq!(threads, 2, "{name}");
        assert!(took >= Duration::from_millis(100), "{name}: {took:?}");
    }
}

#[test]
fn max_blocking_threads_zero_is_a_build_error() {
    for (name, mut builder) in builders() {
        let err = builder.max_blocking_threads(0).build().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{name}");
        assert!(
            err.to_string().contains("max_blocking_threads"),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_panicking_closure_gives_is_panic() {
    for (name, rt) in runtimes() {
        let err =
            rt.block_on(async { spawn_blocking(|| -> u32 { panic!("blocking boom") }).await });
        let err = err.unwrap_err();
        assert!(err.is_panic(), "{name}: {err}");
        assert!(err.to_string().contains("blocking boom"), "{name}: {err}");
        // The pool keeps serving.
        let v = rt.block_on(async { spawn_blocking(|| 5).await.unwrap() });
        assert_eq!(v, 5, "{name}");
    }
}

#[test]
fn idle_threads_exit_after_keep_alive_and_are_reused_before() {
    for (name, mut builder) in builders() {
        let keep_alive = Duration::from_millis(150);
        let rt = builder.thread_keep_alive(keep_alive).build().unwrap();
        let live = Arc::new(AtomicUsize::new(0));
        // Four closures that wait for each other: four threads.
        let barrier = Arc::new(Barrier::new(4));
        let ids: HashSet<_> = rt.block_on(async {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let (live, barrier) = (live.clone(), barrier.clone());
                    spawn_blocking(move || {
                        count_this_thread(&live);
                        barrier.wait();
                        thread::current().id()
                    })
                })
                .collect();
            let mut ids = HashSet::new();
            for h in hs {
                ids.insert(h.await.unwrap());
            }
            ids
        });
        assert_eq!(ids.len(), 4, "{name}");
        assert_eq!(live.load(SeqCst), 4, "{name}");
        // Within the keep-alive, an idle thread is reused.
        let again = rt.block_on(async { spawn_blocking(|| thread::current().id()).await.unwrap() });
        assert!(ids.contains(&again), "{name}: no thread reused");
        let idle_since = Instant::now();
        let gone = wait_for(Duration::from_secs(5), || live.load(SeqCst) == 0);
        let gone = gone.map(|_| idle_since.elapsed());
        eprintln!(
            "{name}: 4 idle blocking threads, keep-alive {keep_alive:?}: all exited after {gone:?}"
        );
        let gone =
            gone.unwrap_or_else(|| panic!("{name}: {} threads still alive", live.load(SeqCst)));
        // The reused thread went idle just before `idle_since`; allow for the
        // wake-up latency, but not for an exit long before the keep-alive.
        assert!(gone >= keep_alive / 2, "{name}: exited early: {gone:?}");
        // A new call starts a new thread.
        let fresh = rt.block_on(async { spawn_blocking(|| thread::current().id()).await.unwrap() });
        assert!(!ids.contains(&fresh), "{name}");
    }
}

#[test]
fn inside_a_task_with_the_runtime_context() {
    for (name, rt) in runtimes() {
        let out = rt.block_on(async {
            spawn(async {
                spawn_blocking(|| {
                    // The runtime's context is entered on the pool thread.
                    let handle = Handle::current();
                    let inner = handle.spawn(async { 10 });
                    let nested = spawn_blocking(|| 20);
                    (inner, nested)
                })
                .await
                .unwrap()
            })
            .await
            .unwrap()
        });
        let (inner, nested) = out;
        let sum = rt.block_on(async { inner.await.unwrap() + nested.await.unwrap() });
        assert_eq!(sum, 30, "{name}");
    }
}

#[test]
fn abort_cancels_a_queued_call_but_not_a_running_one() {
    for (name, mut builder) in builders() {
        let rt = builder.max_blocking_threads(1).build().unwrap();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let started = Arc::new(AtomicBool::new(false));
        let s2 = started.clone();
        let running = rt.spawn_blocking(move || {
            s2.store(true, SeqCst);
            go_rx.recv().unwrap();
            "finished anyway"
        });
        wait_for(Duration::from_secs(5), || started.load(SeqCst)).expect("first call started");
        let ran = Arc::new(AtomicBool::new(false));
        let r2 = ran.clone();
        let queued = rt.spawn_blocking(move || r2.store(true, SeqCst));
        queued.abort();
        running.abort();
        go_tx.send(()).unwrap();
        let (a, b) = rt.block_on(async { (running.await, queued.await) });
        assert_eq!(a.unwrap(), "finished anyway", "{name}");
        assert!(b.unwrap_err().is_cancelled(), "{name}");
        assert!(!ran.load(SeqCst), "{name}: the aborted closure ran");
    }
}

#[test]
fn shutdown_cancels_queued_calls_and_waits_for_running_ones() {
    for (name, mut builder) in builders() {
        let rt = builder.max_blocking_threads(1).build().unwrap();
        let started = Arc::new(AtomicBool::new(false));
        let s2 = started.clone();
        let running = rt.spawn_blocking(move || {
            s2.store(true, SeqCst);
            thread::sleep(Duration::from_millis(100));
            1
        });
        wait_for(Duration::from_secs(5), || started.load(SeqCst)).expect("first call started");
        let ran = Arc::new(AtomicBool::new(false));
        let r2 = ran.clone();
        let queued = rt.spawn_blocking(move || {
            r2.store(true, SeqCst);
            2
        });
        let handle = rt.handle().clone();
        let t = Instant::now();
        drop(rt);
        let took = t.elapsed();
        eprintln!("{name}: drop with a 100 ms blocking call running took {took:?}");
        // Drop waits for the running closure, and it completes normally.
        assert!(running.is_finished(), "{name}");
        assert_eq!(futures_block_on(running).unwrap(), 1, "{name}");
        // The queued call never ran and reports a cancellation.
        assert!(queued.is_finished(), "{name}");
        let err = futures_block_on(queued).unwrap_err();
        assert!(err.is_cancelled(), "{name}: {err}");
        assert!(!ran.load(SeqCst), "{name}");
        // After shutdown, a call through a kept handle is cancelled at once.
        let late = handle.spawn_blocking(|| 3);
        assert!(futures_block_on(late).unwrap_err().is_cancelled(), "{name}");
    }
}

#[test]
fn shutdown_timeout_returns_promptly_with_a_long_blocking_call() {
    for (name, rt) in runtimes() {
        let started = Arc::new(AtomicBool::new(false));
        let s2 = started.clone();
        let long = rt.spawn_blocking(move || {
            s2.store(true, SeqCst);
            thread::sleep(Duration::from_millis(800));
            "late"
        });
        wait_for(Duration::from_secs(5), || started.load(SeqCst)).expect("call started");
        let t = Instant::now();
        rt.shutdown_timeout(Duration::from_millis(50));
        let took = t.elapsed();
        eprintln!("{name}: shutdown_timeout(50 ms) with an 800 ms blocking call took {took:?}");
        assert!(took < Duration::from_millis(400), "{name}: {took:?}");
        assert!(took >= Duration::from_millis(45), "{name}: {took:?}");
        // The detached closure still completes its handle.
        assert_eq!(futures_block_on(long).unwrap(), "late", "{name}");
    }
}

#[test]
fn spawn_blocking_outside_a_runtime_panics_clearly() {
    let err = std::panic::catch_unwind(|| drop(spawn_blocking(|| ()))).unwrap_err();
    let msg = err.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(msg.contains("outside a Fulcrum runtime"), "{msg}");
}

//! Runtime behaviour in tokio's style, run against every scheduler.
#![cfg(not(loom))]

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use fulcrum_dlb::Backend;
use fulcrum_runtime::{spawn, yield_now, Builder, Handle, Scheduler};

mod common;
use common::{futures_block_on, runtimes};

/// A future that completes when `release` is set, waking through a stored
/// waker (set from any thread).
#[derive(Clone, Default)]
struct Gate(Arc<Mutex<(bool, Option<Waker>)>>);

impl Gate {
    fn open(&self) {
        let waker = {
            let mut g = self.0.lock().unwrap();
            g.0 = true;
            g.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn wait(&self) -> GateWait {
        GateWait(self.clone())
    }
}

struct GateWait(Gate);

impl Future for GateWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut g = (self.0).0.lock().unwrap();
        if g.0 {
            Poll::Ready(())
        } else {
            g.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// Sets a flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

#[test]
fn spawn_ten_thousand_and_join() {
    for (name, rt) in runtimes() {
        let total = rt.block_on(async {
            let handles: Vec<_> = (0..10_000u64).map(|i| spawn(async move { i })).collect();
            let mut total = 0;
            for h in handles {
                total += h.await.unwrap();
            }
            total
        });
        assert_eq!(total, 10_000 * 9_999 / 2, "{name}");
        // A joined task leaves the owned list just after it hands over its
        // output, on its worker; give the last ones a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while rt.handle().metrics().alive_tasks > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(rt.handle().metrics().alive_tasks, 0, "{name}");
    }
}

#[test]
fn nested_spawns() {
    fn chain(depth: u32) -> Pin<Box<dyn Future<Output = u32> + Send>> {
        Box::pin(async move {
            if depth == 0 {
                0
            } else {
                spawn(chain(depth - 1)).await.unwrap() + 1
            }
        })
    }
    for (name, rt) in runtimes() {
        assert_eq!(rt.block_on(chain(1_000)), 1_000, "{name}");
    }
}

#[test]
fn yield_now_interleaves() {
    for (name, rt) in runtimes() {
        let count = Arc::new(AtomicUsize::new(0));
        rt.block_on(async {
            let handles: Vec<_> = (0..200)
                .map(|_| {
                    let count = count.clone();
                    spawn(async move {
                        for _ in 0..100 {
                            count.fetch_add(1, SeqCst);
                            yield_now().await;
                        }
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
        });
        assert_eq!(count.load(SeqCst), 20_000, "{name}");
    }
}

#[test]
fn abort_cancels_a_pending_task_and_drops_its_future() {
    for (name, rt) in runtimes() {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        let err = rt.block_on(async move {
            let h = spawn(async move {
                let _flag = flag;
                std::future::pending::<()>().await;
            });
            yield_now().await;
            h.abort();
            h.await.unwrap_err()
        });
        assert!(err.is_cancelled(), "{name}: {err}");
        assert!(dropped.load(SeqCst), "{name}: future not dropped");
    }
}

#[test]
fn abort_after_completion_keeps_the_output() {
    for (name, rt) in runtimes() {
        let out = rt.block_on(async {
            let h = spawn(async { 7 });
            while !h.is_finished() {
                yield_now().await;
            }
            h.abort();
            h.await
        });
        assert_eq!(out.unwrap(), 7, "{name}");
    }
}

#[test]
fn a_panicking_task_reports_and_the_workers_keep_going() {
    for (name, rt) in runtimes() {
        let err = rt.block_on(async { spawn(async { panic!("boom {}", 42) }).await.unwrap_err() });
        assert!(err.is_panic(), "{name}");
        assert!(err.to_string().contains("boom 42"), "{name}: {err}");
        let payload = err.into_panic();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        assert_eq!(msg, Some("boom 42"));
        // Many panics later, every worker still runs tasks.
        let ok = rt.block_on(async {
            let hs: Vec<_> = (0..64)
                .map(|i| {
                    spawn(async move {
                        if i % 2 == 0 {
                            panic!("even");
                        }
                        i
                    })
                })
                .collect();
            let mut ok = 0;
            for h in hs {
                if h.await.is_ok() {
                    ok += 1;
                }
            }
            ok
        });
        assert_eq!(ok, 32, "{name}");
        // Every worker still runs tasks. One task per worker holds its
        // worker until all of them have started, so each must run on a
        // different worker (directed there on DLB; taken or stolen by an
        // idle worker when stealing). A dead worker leaves the count short
        // and the wait runs out, without depending on how the OS (or
        // valgrind) happens to schedule the threads.
        let m = rt.handle().metrics();
        let n = m.workers.len();
        let started = Arc::new(AtomicUsize::new(0));
        let mut seen = rt.block_on(async {
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    let started = started.clone();
                    Handle::current().spawn_on_worker(i, async move {
                        started.fetch_add(1, SeqCst);
                        let deadline = Instant::now() + Duration::from_secs(30);
                        while started.load(SeqCst) < n && Instant::now() < deadline {
                            thread::yield_now();
                        }
                        Handle::current().current_worker()
                    })
                })
                .collect();
            let mut seen = Vec::new();
            for h in hs {
                seen.push(h.await.unwrap());
            }
            seen
        });
        seen.sort();
        assert_eq!(seen, (0..n).map(Some).collect::<Vec<_>>(), "{name}");
        let after = rt.handle().metrics();
        for (i, (before, after)) in m.workers.iter().zip(&after.workers).enumerate() {
            assert!(
                after.tasks_polled > before.tasks_polled,
                "{name}: worker {i} stopped polling ({before:?} -> {after:?})"
            );
        }
    }
}

#[test]
fn dropping_the_join_handle_detaches() {
    for (name, rt) in runtimes() {
        let (tx, rx) = mpsc::channel();
        rt.block_on(async move {
            drop(spawn(async move {
                yield_now().await;
                tx.send(5).unwrap();
            }));
            // Keep driving (current-thread) until the detached task ran.
            for _ in 0..1_000 {
                yield_now().await;
            }
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            5,
            "{name}"
        );
    }
}

#[test]
fn block_on_accepts_non_send_futures() {
    for (name, rt) in runtimes() {
        let rc = Rc::new(5);
        let out = rt.block_on(async move {
            yield_now().await;
            *rc + spawn(async { 1 }).await.unwrap()
        });
        assert_eq!(out, 6, "{name}");
    }
}

#[test]
fn wakes_from_a_plain_thread() {
    for (name, rt) in runtimes() {
        let gate = Gate::default();
        let g2 = gate.clone();
        let opener = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            g2.open();
        });
        let out = rt.block_on(async move {
            spawn(async move {
                gate.wait().await;
                "opened"
            })
            .await
            .unwrap()
        });
        opener.join().unwrap();
        assert_eq!(out, "opened", "{name}");
    }
}

#[test]
fn spawn_from_outside_through_the_handle() {
    for (name, rt) in runtimes() {
        let handle = rt.handle().clone();
        let (tx, rx) = mpsc::channel();
        let t = thread::spawn(move || {
            let hs: Vec<_> = (0..100u32)
                .map(|i| handle.spawn(async move { i }))
                .collect();
            tx.send(hs).unwrap();
        });
        t.join().unwrap();
        let hs = rx.recv().unwrap();
        let sum = rt.block_on(async move {
            let mut sum = 0;
            for h in hs {
                sum += h.await.unwrap();
            }
            sum
        });
        assert_eq!(sum, 4_950, "{name}");
    }
}

#[test]
fn shutdown_cancels_pending_tasks_on_drop() {
    for (name, rt) in runtimes() {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        let gate = Gate::default();
        let g = gate.clone();
        let h = rt.spawn(async move {
            let _flag = flag;
            g.wait().await;
        });
        rt.block_on(async {
            for _ in 0..100 {
                yield_now().await;
            }
        });
        drop(rt);
        assert!(
            dropped.load(SeqCst),
            "{name}: pending task's future not dropped"
        );
        assert!(h.is_finished(), "{name}");
        // The join handle outlives the runtime and reports cancellation.
        let err = futures_block_on(h).unwrap_err();
        assert!(err.is_cancelled(), "{name}");
        gate.open();
    }
}

#[test]
fn shutdown_timeout_returns_with_a_blocked_worker() {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .dlb_backend(Backend::Software)
        .build()
        .unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let s2 = started.clone();
    rt.spawn(async move {
        s2.store(true, SeqCst);
        thread::sleep(Duration::from_millis(500));
    });
    while !started.load(SeqCst) {
        thread::yield_now();
    }
    let t = Instant::now();
    rt.shutdown_timeout(Duration::from_millis(50));
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn spawn_outside_a_runtime_panics_clearly() {
    let err = std::panic::catch_unwind(|| {
        drop(spawn(async {}));
    })
    .unwrap_err();
    let msg = err.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(msg.contains("outside a Fulcrum runtime"), "{msg}");
    assert!(Handle::try_current().is_err());
}

#[test]
fn block_on_inside_a_runtime_panics_clearly() {
    for (name, rt) in runtimes() {
        let rt = Arc::new(rt);
        let inner = rt.clone();
        let msg = rt.block_on(async move {
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.block_on(async {})));
            let err = r.unwrap_err();
            err.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| err.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        });
        assert!(
            msg.contains("Cannot start a runtime from within a runtime"),
            "{name}: {msg}"
        );
        drop(rt);
    }
}

#[test]
fn tasks_cross_workers_through_the_dlb_queue() {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .dlb_backend(Backend::Software)
        .build()
        .unwrap();
    rt.block_on(async {
        // Spawned from the block_on thread (not a worker): remote handoffs.
        let hs: Vec<_> = (0..200)
            .map(|_| {
                spawn(async {
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_micros(200) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        for h in hs {
            h.await.unwrap();
        }
    });
    let m = rt.handle().metrics();
    let received: u64 = m.workers.iter().map(|w| w.dlb_received).sum();
    assert!(received >= 200, "{m:?}");
    for (i, w) in m.workers.iter().enumerate() {
        assert!(w.tasks_polled > 20, "worker {i} ran too little: {m:?}");
        assert_eq!(w.steals, 0);
    }
}

#[test]
fn the_stealing_mode_steals_and_hands_off_nothing() {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .scheduler(fulcrum_runtime::Scheduler::WorkStealing)
        .dlb_backend(Backend::Software)
        .build()
        .unwrap();
    rt.block_on(async {
        // All spawned from one task: the other worker only gets work by
        // stealing.
        spawn(async {
            let hs: Vec<_> = (0..200)
                .map(|_| {
                    spawn(async {
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_micros(200) {
                            std::hint::spin_loop();
                        }
                    })
                })
                .collect();
            for h in hs {
                h.await.unwrap();
            }
        })
        .await
        .unwrap();
    });
    let m = rt.handle().metrics();
    let steals: u64 = m.workers.iter().map(|w| w.steals).sum();
    let sent: u64 = m.workers.iter().map(|w| w.dlb_sent + w.dlb_received).sum();
    assert!(steals > 0, "{m:?}");
    assert_eq!(sent, 0, "{m:?}");
}

#[test]
fn worker_count_and_thread_hooks() {
    let started = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicUsize::new(0));
    let (s1, s2) = (started.clone(), stopped.clone());
    let rt = Builder::new_multi_thread()
        .worker_threads(3)
        .thread_name("hook-test")
        .on_thread_start(move || {
            s1.fetch_add(1, SeqCst);
        })
        .on_thread_stop(move || {
            s2.fetch_add(1, SeqCst);
        })
        .dlb_backend(Backend::Software)
        .build()
        .unwrap();
    assert_eq!(rt.handle().metrics().num_workers(), 3);
    let name = rt.block_on(async {
        spawn(async { thread::current().name().map(str::to_owned) })
            .await
            .unwrap()
    });
    assert_eq!(name.as_deref(), Some("hook-test"));
    drop(rt);
    assert_eq!(started.load(SeqCst), 3);
    assert_eq!(stopped.load(SeqCst), 3);
    let err = Builder::new_multi_thread()
        .worker_threads(0)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("1 to 63 workers"), "{err}");
}

mod time {
    use super::*;
    use fulcrum_runtime::time::{
        interval, sleep, sleep_until, timeout, Elapsed, MissedTickBehavior,
    };

    /// Sleeps never end before their deadline, on every runtime; in what
    /// order tasks on different workers then run is up to the OS, so the
    /// order is checked where it is deterministic: paused time on the
    /// current-thread runtime.
    #[test]
    fn sleeps_never_fire_early_and_fire_in_order() {
        let paused = Builder::new_current_thread()
            .start_paused(true)
            .build()
            .unwrap();
        let mut rts = runtimes();
        rts.push(("current-paused", paused));
        for (name, rt) in rts {
            let order = Arc::new(Mutex::new(Vec::new()));
            rt.block_on(async {
                let hs: Vec<_> = [30u64, 10, 20, 5, 25]
                    .into_iter()
                    .map(|ms| {
                        let order = order.clone();
                        spawn(async move {
                            let start = fulcrum_runtime::time::Instant::now();
                            sleep(Duration::from_millis(ms)).await;
                            let took = start.elapsed();
                            assert!(
                                took >= Duration::from_millis(ms),
                                "{ms} ms sleep took {took:?}"
                            );
                            order.lock().unwrap().push(ms);
                        })
                    })
                    .collect();
                for h in hs {
                    h.await.unwrap();
                }
            });
            let mut order = order.lock().unwrap().clone();
            if name != "current-paused" {
                order.sort_unstable();
            }
            assert_eq!(order, [5, 10, 20, 25, 30], "{name}");
        }
    }

    #[test]
    fn sleep_inside_block_on_itself() {
        for (name, rt) in runtimes() {
            let t = Instant::now();
            rt.block_on(sleep(Duration::from_millis(15)));
            let took = t.elapsed();
            assert!(took >= Duration::from_millis(15), "{name}: {took:?}");
            assert!(took < Duration::from_secs(2), "{name}: {took:?}");
        }
    }

    #[test]
    fn timeout_elapses_and_passes_through() {
        for (name, rt) in runtimes() {
            let (slow, fast) = rt.block_on(async {
                let slow = timeout(Duration::from_millis(10), std::future::pending::<()>()).await;
                let fast = timeout(Duration::from_secs(5), async { 3 }).await;
                (slow, fast)
            });
            assert_eq!(
                slow,
                Err::<(), _>(Elapsed::clone(&slow.unwrap_err())),
                "{name}"
            );
            assert_eq!(fast, Ok(3), "{name}");
            let io: std::io::Error = slow.unwrap_err().into();
            assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
        }
    }

    #[test]
    fn interval_ticks_on_schedule() {
        for (name, rt) in runtimes() {
            let ticks = rt.block_on(async {
                let start = Instant::now();
                let mut iv = interval(Duration::from_millis(10));
                let mut ticks = Vec::new();
                for _ in 0..4 {
                    ticks.push(iv.tick().await.into_std().duration_since(start));
                }
                let real = start.elapsed();
                (ticks, real)
            });
            let (ticks, real) = ticks;
            assert!(
                ticks[0] < Duration::from_millis(5),
                "{name}: first tick at once: {ticks:?}"
            );
            for w in ticks.windows(2) {
                let gap = w[1] - w[0];
                assert!(
                    gap >= Duration::from_millis(9) && gap <= Duration::from_millis(11),
                    "{name}: {ticks:?}"
                );
            }
            assert!(real >= Duration::from_millis(30), "{name}: {real:?}");
        }
    }

    /// Each missed-tick behaviour after a 35 ms stall of a 10 ms interval,
    /// in paused time (deterministic): the late tick completes at once;
    /// then `Burst` catches up at once, `Skip` waits for the next multiple
    /// of the period (40 ms), `Delay` waits a period from now (45 ms).
    #[test]
    fn interval_burst_skip_and_delay_after_a_stall() {
        for (behavior, next_at) in [
            (MissedTickBehavior::Burst, 35),
            (MissedTickBehavior::Skip, 40),
            (MissedTickBehavior::Delay, 45),
        ] {
            let rt = Builder::new_current_thread()
                .start_paused(true)
                .build()
                .unwrap();
            let (late, next) = rt.block_on(async {
                let start = fulcrum_runtime::time::Instant::now();
                let mut iv = interval(Duration::from_millis(10));
                iv.set_missed_tick_behavior(behavior);
                iv.tick().await;
                // The stall: 35 ms pass without the interval being polled.
                fulcrum_runtime::time::advance(Duration::from_millis(35)).await;
                iv.tick().await;
                let late = start.elapsed();
                iv.tick().await;
                (late, start.elapsed())
            });
            assert_eq!(late, Duration::from_millis(35), "{behavior:?}");
            assert_eq!(next, Duration::from_millis(next_at), "{behavior:?}");
        }
    }

    #[test]
    fn dropped_sleeps_do_not_fire_and_many_timers_work() {
        for (name, rt) in runtimes() {
            let n = rt.block_on(async {
                // Most time out, few finish: the dropped sleeps leave the
                // wheel.
                let hs: Vec<_> = (0..1_000u64)
                    .map(|i| {
                        spawn(async move {
                            timeout(Duration::from_millis(1 + i % 20), async {
                                if i % 2 == 0 {
                                    sleep(Duration::from_secs(30)).await;
                                }
                            })
                            .await
                            .is_ok()
                        })
                    })
                    .collect();
                let mut ok = 0;
                for h in hs {
                    if h.await.unwrap() {
                        ok += 1;
                    }
                }
                ok
            });
            assert_eq!(n, 500, "{name}");
        }
    }

    #[test]
    fn sleep_until_in_the_past_is_ready() {
        for (_, rt) in runtimes() {
            rt.block_on(sleep_until(
                fulcrum_runtime::time::Instant::now() - Duration::from_millis(5),
            ));
        }
    }

    #[test]
    fn a_timer_outside_a_runtime_panics_clearly() {
        let err = std::panic::catch_unwind(|| futures_block_on(sleep(Duration::from_millis(5))))
            .unwrap_err();
        let msg = err.downcast_ref::<&str>().copied().unwrap_or_default();
        assert!(msg.contains("outside a Fulcrum runtime"), "{msg}");
    }

    /// A waker that only lives: its `Arc`'s count says who still holds it.
    struct Held;

    impl std::task::Wake for Held {
        fn wake(self: Arc<Self>) {}
    }

    /// A sleep registered on one runtime thread and dropped on another
    /// leaves its entry in the first thread's wheel until its deadline, but
    /// not its waker: a waker is a reference to its task, whose whole
    /// allocation (the future's storage) it would otherwise keep alive for
    /// as long as the timeout (a server's request timeout, for every
    /// connection task that moved between workers).
    #[test]
    fn a_sleep_dropped_on_another_thread_lets_go_of_its_waker_at_once() {
        for (name, rt) in runtimes() {
            let held = Arc::new(Held);
            let waker = Waker::from(held.clone());
            // In a tuple: what the task returns is not itself a future.
            let (sleep,) = rt.block_on(async move {
                spawn(async move {
                    let mut sleep = Box::pin(sleep(Duration::from_secs(600)));
                    let mut cx = Context::from_waker(&waker);
                    assert!(sleep.as_mut().poll(&mut cx).is_pending());
                    (sleep,)
                })
                .await
                .unwrap()
            });
            assert_eq!(
                Arc::strong_count(&held),
                2,
                "{name}: the wheel holds the waker"
            );
            // Dropped on a thread that is not the one whose wheel has it.
            thread::spawn(move || drop(sleep)).join().unwrap();
            assert_eq!(
                Arc::strong_count(&held),
                1,
                "{name}: the waker of a sleep dropped elsewhere is still held"
            );
        }
    }
}

#[test]
fn the_budget_stops_an_always_ready_task_from_starving_its_worker() {
    // Without the budget the current-thread runtime never comes back: fail
    // the run instead of hanging it.
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    thread::spawn(move || {
        thread::sleep(Duration::from_secs(30));
        if !d2.load(SeqCst) {
            eprintln!("the budget test starved for 30 s: a task never yielded");
            std::process::exit(1);
        }
    });
    let _done = DropFlag(done);
    for (name, rt) in runtimes() {
        let ran = Arc::new(AtomicBool::new(false));
        let r2 = ran.clone();
        let spins = Arc::new(AtomicUsize::new(0));
        let s2 = spins.clone();
        let spins_in = spins.clone();
        rt.block_on(async move {
            let spins = spins_in;
            // An always-ready timer in a loop never returns Pending on its
            // own; the budget makes it yield.
            let hog = spawn(async move {
                loop {
                    fulcrum_runtime::time::sleep(Duration::ZERO).await;
                    s2.fetch_add(1, SeqCst);
                }
            });
            let s3 = spins.clone();
            let other = spawn(async move {
                // Runs only if the hog yields (always, on current-thread).
                while s3.load(SeqCst) < 1_000 {
                    yield_now().await;
                }
                r2.store(true, SeqCst)
            });
            other.await.unwrap();
            hog.abort();
            assert!(hog.await.unwrap_err().is_cancelled());
        });
        assert!(ran.load(SeqCst), "{name}");
        assert!(spins.load(SeqCst) > 0, "{name}");
    }
}

/// The scheduler's thresholds can be set, are validated, and extreme
/// settings still run every task (a maintenance step every tick, shedding
/// from 1 queued task, no pre-sleep poll).
#[test]
fn scheduler_thresholds_are_settable_and_checked() {
    let Err(e) = Builder::new_multi_thread().event_interval(0).build() else {
        panic!("event_interval(0) is refused");
    };
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("event_interval(0)"), "{e}");

    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .dlb_backend(Backend::Software)
        .event_interval(1)
        .shed_threshold(0)
        .spin_before_park(Duration::ZERO)
        .build()
        .unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    rt.block_on(async move {
        let mut handles = Vec::new();
        for i in 0..2_000usize {
            let d = d.clone();
            handles.push(spawn(async move {
                for _ in 0..i % 4 {
                    yield_now().await;
                }
                d.fetch_add(1, SeqCst);
                i
            }));
        }
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap();
        }
        assert_eq!(sum, (0..2_000).sum::<usize>());
    });
    assert_eq!(done.load(SeqCst), 2_000);
}

/// The work-stealing mode's LIFO slot: the last task spawned by a running
/// task runs next (the earlier ones wait in the deque); without the slot,
/// spawn order is run order. One worker, so that no steal reorders.
#[test]
fn stealing_mode_lifo_slot_runs_the_last_spawn_next() {
    let order = |lifo: bool| {
        let mut b = Builder::new_multi_thread();
        b.worker_threads(1)
            .scheduler(fulcrum_runtime::Scheduler::WorkStealing);
        if !lifo {
            b.disable_lifo_slot();
        }
        let rt = b.build().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        rt.block_on(async move {
            let parent = spawn(async move {
                let mut hs = Vec::new();
                for i in 1..=3 {
                    let s = s.clone();
                    hs.push(spawn(async move { s.lock().unwrap().push(i) }));
                }
                hs
            });
            for h in parent.await.unwrap() {
                h.await.unwrap();
            }
        });
        let v = seen.lock().unwrap().clone();
        v
    };
    assert_eq!(order(true), [3, 1, 2]);
    assert_eq!(order(false), [1, 2, 3]);
}

/// Two tasks spawned back to back from outside onto sleeping workers, the
/// first holding its worker until the second starts: the second push must
/// wake the other worker, not the first one again before it is up (which
/// took the work-stealing mode 30 s, the deadline here, under valgrind).
#[test]
fn back_to_back_remote_spawns_wake_two_sleepers() {
    for (name, rt) in runtimes() {
        let n = rt.handle().metrics().workers.len();
        if n < 2 {
            continue;
        }
        for round in 0..200 {
            // Let every worker go to sleep.
            thread::sleep(Duration::from_micros(300));
            let started = Arc::new(AtomicUsize::new(0));
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let started = started.clone();
                    rt.spawn(async move {
                        started.fetch_add(1, SeqCst);
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while started.load(SeqCst) < 2 && Instant::now() < deadline {
                            thread::yield_now();
                        }
                        started.load(SeqCst)
                    })
                })
                .collect();
            for h in hs {
                assert_eq!(futures_block_on(h).unwrap(), 2, "{name}: round {round}");
            }
        }
    }
}

/// `yield_now` on a worker defers the task until the worker has run what
/// else it has: tasks spawned before the yield, including ones that arrive
/// through the DLB queue, run first (tokio's semantics). With the old
/// immediate re-queue the DLB mode alternated between its local queue and
/// its deliveries, so the yielder often ran again first.
#[test]
fn yield_now_lets_queued_and_delivered_work_run_first() {
    for scheduler in [Scheduler::Dlb, Scheduler::WorkStealing] {
        let rt = Builder::new_multi_thread()
            .worker_threads(1)
            .scheduler(scheduler)
            .dlb_backend(Backend::Software)
            // No maintenance step inside the test's few polls, by ticks or
            // by time.
            .event_interval(10_000)
            .io_poll_interval(Duration::from_secs(60))
            .build()
            .unwrap();
        for round in 0..50 {
            let ran = rt.block_on(async {
                spawn(async {
                    let ran = Arc::new(AtomicUsize::new(0));
                    let handle = Handle::current();
                    for i in 0..16 {
                        let ran = ran.clone();
                        let task = async move {
                            ran.fetch_add(1, SeqCst);
                        };
                        // Most through the DLB queue, a few queued here.
                        if i % 8 != 0 {
                            drop(handle.spawn_balanced(task));
                        } else {
                            drop(spawn(task));
                        }
                    }
                    yield_now().await;
                    ran.load(SeqCst)
                })
                .await
                .unwrap()
            });
            assert_eq!(ran, 16, "{scheduler:?}: round {round}");
        }
    }
}

/// `Builder::handoff_wait`: with the default (zero) a worker whose queue of
/// yielding tasks is long sheds part of it to its idle peer; with a
/// threshold far above the queue's wait (1 s against microseconds) it keeps
/// every task.
#[test]
fn handoff_wait_gates_shedding() {
    for (wait, expect_moved) in [(Duration::ZERO, true), (Duration::from_secs(1), false)] {
        let rt = Builder::new_multi_thread()
            .worker_threads(2)
            .dlb_backend(Backend::Software)
            .handoff_wait(wait)
            .build()
            .unwrap();
        let moved = rt.block_on(async {
            let handle = Handle::current();
            let hs: Vec<_> = (0..64)
                .map(|_| {
                    handle.spawn_on_worker(0, async {
                        let mut elsewhere = false;
                        for _ in 0..200 {
                            elsewhere |= Handle::current().current_worker() != Some(0);
                            yield_now().await;
                        }
                        elsewhere
                    })
                })
                .collect();
            let mut moved = 0;
            for h in hs {
                moved += usize::from(h.await.unwrap());
            }
            moved
        });
        assert_eq!(
            moved > 0,
            expect_moved,
            "handoff_wait {wait:?}: {moved} of 64 tasks moved"
        );
    }
}

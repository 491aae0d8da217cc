//! The runtime's clock: `time::Instant`, `pause`/`resume`/`advance`,
//! auto-advance and `start_paused`, against tokio's documented behaviour
//! (tokio's `test-util`).
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use fulcrum_runtime::time::error::Elapsed;
use fulcrum_runtime::time::{
    advance, interval, pause, resume, sleep, sleep_until, timeout, Instant,
};
use fulcrum_runtime::{Builder, Runtime};

const HOUR: Duration = Duration::from_secs(3600);

fn paused() -> Runtime {
    Builder::new_current_thread()
        .start_paused(true)
        .build()
        .expect("build runtime")
}

/// A bound on the real time a virtual-time test may take: far above what
/// it needs, far below the virtual durations involved.
const REAL_BOUND: Duration = Duration::from_secs(60);

#[test]
fn an_hour_long_sleep_completes_at_once() {
    let real = std::time::Instant::now();
    let virtual_elapsed = paused().block_on(async {
        let start = Instant::now();
        sleep(HOUR).await;
        start.elapsed()
    });
    assert_eq!(virtual_elapsed, HOUR);
    assert!(real.elapsed() < REAL_BOUND);
}

#[test]
fn timeouts_fire_in_virtual_time() {
    paused().block_on(async {
        let start = Instant::now();
        let r: Result<(), Elapsed> =
            timeout(Duration::from_secs(10), std::future::pending::<()>()).await;
        assert!(r.is_err(), "the timeout fires");
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // A future that completes first wins, whatever the deadline.
        let r = timeout(Duration::from_secs(1), async { 5 }).await;
        assert_eq!(r, Ok(5));
    });
}

#[test]
fn tasks_sleep_in_virtual_time_too() {
    paused().block_on(async {
        let start = Instant::now();
        let handles: Vec<_> = (1..=5u64)
            .map(|i| {
                fulcrum_runtime::spawn(async move {
                    sleep(Duration::from_secs(60 * i)).await;
                    Instant::now()
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let woke = h.await.expect("task");
            assert_eq!(woke - start, Duration::from_secs(60 * (i as u64 + 1)));
        }
    });
}

#[test]
fn advance_fires_the_timers_it_passes() {
    paused().block_on(async {
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        let h = fulcrum_runtime::spawn(async move {
            sleep(Duration::from_secs(5)).await;
            d2.store(true, SeqCst);
        });
        // Let it register its timer. This future keeps yielding, so the
        // runtime is never idle and does not auto-advance.
        for _ in 0..3 {
            fulcrum_runtime::yield_now().await;
        }
        let start = Instant::now();
        advance(Duration::from_secs(4)).await;
        for _ in 0..3 {
            fulcrum_runtime::yield_now().await;
        }
        assert!(!done.load(SeqCst), "not due after 4 s");
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        advance(Duration::from_secs(1)).await;
        for _ in 0..3 {
            fulcrum_runtime::yield_now().await;
        }
        assert!(done.load(SeqCst), "due after 5 s");
        assert!(h.is_finished());
    });
}

#[test]
fn intervals_tick_on_exact_virtual_instants() {
    paused().block_on(async {
        let start = Instant::now();
        let mut iv = interval(Duration::from_millis(250));
        for k in 0..5u32 {
            let tick = iv.tick().await;
            assert_eq!(tick, start + Duration::from_millis(250) * k);
            assert_eq!(Instant::now(), tick);
        }
        let deadline = start + HOUR;
        let s = sleep_until(deadline);
        assert_eq!(s.deadline(), deadline);
        s.await;
        assert_eq!(Instant::now(), deadline);
    });
}

#[test]
fn auto_advance_waits_for_blocking_calls() {
    // tokio: while a `spawn_blocking` call is in flight, a paused clock
    // does not auto-advance, so the timeout cannot fire before the call
    // ends, however long it takes in real time.
    paused().block_on(async {
        let start = Instant::now();
        let r = timeout(
            Duration::from_secs(1),
            fulcrum_runtime::spawn_blocking(|| {
                std::thread::sleep(Duration::from_millis(50));
                7
            }),
        )
        .await;
        assert_eq!(r.expect("no timeout while the call runs").expect("join"), 7);
        assert_eq!(start.elapsed(), Duration::ZERO, "the clock stood still");
    });
}

#[test]
fn pause_and_resume_by_hand() {
    let rt = Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        pause();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(Instant::now(), t0, "frozen");
        advance(HOUR).await;
        assert_eq!(Instant::now(), t0 + HOUR);
        resume();
        sleep(Duration::from_millis(2)).await;
        assert!(Instant::now() >= t0 + HOUR + Duration::from_millis(2));
    });
}

fn panic_message(f: impl FnOnce()) -> String {
    let payload =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("expected a panic");
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[test]
fn misuse_panics_as_tokio() {
    let msg = panic_message(pause);
    assert!(msg.contains("outside the Fulcrum runtime"), "{msg}");

    let multi = Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let msg = panic_message(|| multi.block_on(async { pause() }));
    assert!(msg.contains("requires the current-thread"), "{msg}");

    let msg = panic_message(|| paused().block_on(async { pause() }));
    assert_eq!(msg, "time is already frozen");
    let current = || Builder::new_current_thread().build().unwrap();
    let msg = panic_message(|| current().block_on(async { resume() }));
    assert_eq!(msg, "time is not frozen");
    let msg = panic_message(|| current().block_on(advance(HOUR)));
    assert_eq!(msg, "time is not frozen");
}

#[test]
fn start_paused_needs_the_current_thread_runtime() {
    let err = Builder::new_multi_thread()
        .start_paused(true)
        .build()
        .expect_err("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("current-thread"), "{err}");
}

#[test]
fn instant_api() {
    let std_now = std::time::Instant::now();
    let t = Instant::from_std(std_now);
    assert_eq!(t.into_std(), std_now);
    assert_eq!(std::time::Instant::from(t), std_now);
    assert_eq!(Instant::from(std_now), t);
    let later = t + Duration::from_secs(2);
    assert_eq!(later - t, Duration::from_secs(2));
    assert_eq!(t - later, Duration::ZERO, "saturates, as tokio's");
    assert_eq!(later.duration_since(t), Duration::from_secs(2));
    assert_eq!(t.checked_duration_since(later), None);
    assert_eq!(t.saturating_duration_since(later), Duration::ZERO);
    assert_eq!(later.checked_sub(Duration::from_secs(2)), Some(t));
    assert_eq!(t.checked_add(Duration::from_secs(2)), Some(later));
    let mut m = t;
    m += Duration::from_secs(2);
    assert_eq!(m, later);
    m -= Duration::from_secs(2);
    assert_eq!(m, t);
    assert!(later > t);
    // Outside a runtime it is the system clock.
    assert!(Instant::now() >= t);
}

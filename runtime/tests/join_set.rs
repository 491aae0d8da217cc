//! `JoinSet`, on every runtime flavour.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fulcrum_runtime::time::sleep;
use fulcrum_runtime::{spawn, yield_now, JoinSet};

mod common;
use common::runtimes;

/// Sets a flag when dropped.
struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[test]
fn a_thousand_tasks_each_arrive_once() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let mut set = JoinSet::new();
            for i in 0..1_000usize {
                set.spawn(async move {
                    for _ in 0..(i % 4) {
                        yield_now().await;
                    }
                    i
                });
            }
            assert_eq!(set.len(), 1_000);
            let mut seen = vec![0u8; 1_000];
            let mut n = 0;
            while let Some(r) = set.join_next().await {
                seen[r.unwrap()] += 1;
                n += 1;
                assert_eq!(set.len(), 1_000 - n);
            }
            assert!(seen.iter().all(|&c| c == 1), "{name}");
            assert!(set.is_empty());
            assert!(set.join_next().await.is_none());
        });
    }
}

#[test]
fn completion_order_follows_readiness() {
    for (name, rt) in runtimes() {
        let order = rt.block_on(async {
            let mut set = JoinSet::new();
            for ms in [30u64, 10, 20] {
                set.spawn(async move {
                    sleep(Duration::from_millis(ms)).await;
                    ms
                });
            }
            let mut order = Vec::new();
            while let Some(r) = set.join_next().await {
                order.push(r.unwrap());
            }
            order
        });
        assert_eq!(order, [10, 20, 30], "{name}");
    }
}

#[test]
fn join_next_with_id_matches_the_abort_handles() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let mut set = JoinSet::new();
            let a = set.spawn(async { "a" });
            let b = set.spawn(async { "b" });
            let mut got = Vec::new();
            while let Some(r) = set.join_next_with_id().await {
                got.push(r.unwrap());
            }
            got.sort();
            let mut want = vec![(a.id(), "a"), (b.id(), "b")];
            want.sort();
            assert_eq!(got, want, "{name}");
        });
    }
}

#[test]
fn abort_all_cancels_every_task() {
    for (name, rt) in runtimes() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let d = dropped.clone();
        rt.block_on(async move {
            let mut set = JoinSet::new();
            for _ in 0..50 {
                let flag = DropFlag(d.clone());
                set.spawn(async move {
                    let _flag = flag;
                    std::future::pending::<()>().await;
                });
            }
            yield_now().await;
            set.abort_all();
            assert_eq!(set.len(), 50);
            let mut cancelled = 0;
            while let Some(r) = set.join_next().await {
                assert!(r.unwrap_err().is_cancelled());
                cancelled += 1;
            }
            assert_eq!(cancelled, 50, "{name}");
        });
        assert_eq!(dropped.load(SeqCst), 50, "{name}");
    }
}

#[test]
fn dropping_the_set_aborts_its_tasks() {
    for (name, rt) in runtimes() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicBool::new(false));
        let (d, f) = (dropped.clone(), finished.clone());
        rt.block_on(async move {
            let mut set = JoinSet::new();
            for _ in 0..20 {
                let flag = DropFlag(d.clone());
                let f = f.clone();
                set.spawn(async move {
                    let _flag = flag;
                    sleep(Duration::from_secs(30)).await;
                    f.store(true, SeqCst);
                });
            }
            yield_now().await;
            drop(set);
            // The aborted tasks are cancelled at their next scheduling point.
            let start = Instant::now();
            while d.load(SeqCst) < 20 && start.elapsed() < Duration::from_secs(5) {
                sleep(Duration::from_millis(1)).await;
            }
        });
        assert_eq!(dropped.load(SeqCst), 20, "{name}");
        assert!(!finished.load(SeqCst), "{name}");
    }
}

#[test]
fn join_all_returns_every_output() {
    for (name, rt) in runtimes() {
        let mut out = rt.block_on(async {
            let set: JoinSet<u32> = (0..100u32).map(|i| async move { i * 2 }).collect();
            assert_eq!(set.len(), 100);
            set.join_all().await
        });
        out.sort();
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>(), "{name}");
    }
}

#[test]
fn join_all_re_raises_a_panic_and_aborts_the_rest() {
    for (name, rt) in runtimes() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let d = dropped.clone();
        let err = rt.block_on(async move {
            spawn(async move {
                let mut set = JoinSet::new();
                for _ in 0..5 {
                    let flag = DropFlag(d.clone());
                    set.spawn(async move {
                        let _flag = flag;
                        std::future::pending::<u32>().await
                    });
                }
                set.spawn(async { panic!("join_all boom") });
                set.join_all().await
            })
            .await
            .unwrap_err()
        });
        assert!(err.is_panic(), "{name}");
        assert_eq!(
            err.into_panic().downcast_ref::<&str>().copied(),
            Some("join_all boom"),
            "{name}"
        );
        let start = Instant::now();
        while dropped.load(SeqCst) < 5 && start.elapsed() < Duration::from_secs(5) {
            rt.block_on(yield_now());
        }
        assert_eq!(dropped.load(SeqCst), 5, "{name}");
    }
}

#[test]
fn len_and_is_empty() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let mut set = JoinSet::<()>::default();
            assert!(set.is_empty());
            assert_eq!(set.len(), 0);
            assert!(set.try_join_next().is_none());
            set.spawn(async {});
            set.spawn(async {});
            assert_eq!(set.len(), 2);
            assert!(!set.is_empty());
            assert_eq!(format!("{set:?}"), "JoinSet { len: 2 }");
            set.join_next().await.unwrap().unwrap();
            assert_eq!(set.len(), 1, "{name}");
            set.join_next().await.unwrap().unwrap();
            assert!(set.is_empty(), "{name}");
        });
    }
}

#[test]
fn panics_surface_as_join_errors() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let mut set = JoinSet::new();
            set.spawn(async { panic!("set boom") });
            set.spawn(async { 1 });
            let (mut ok, mut panics) = (0, 0);
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(v) => ok += v,
                    Err(e) => {
                        assert!(e.is_panic(), "{name}");
                        assert!(e.to_string().contains("set boom"), "{name}: {e}");
                        panics += 1;
                    }
                }
            }
            assert_eq!((ok, panics), (1, 1), "{name}");
        });
    }
}

#[test]
fn try_join_next_does_not_wait() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let mut set = JoinSet::new();
            let (tx, rx) = mpsc::channel::<()>();
            set.spawn_blocking(move || {
                rx.recv().unwrap();
                7
            });
            assert!(set.try_join_next().is_none(), "{name}");
            tx.send(()).unwrap();
            let start = Instant::now();
            let got = loop {
                if let Some(r) = set.try_join_next() {
                    break r.unwrap();
                }
                assert!(start.elapsed() < Duration::from_secs(5), "{name}");
                sleep(Duration::from_millis(1)).await;
            };
            assert_eq!(got, 7, "{name}");
            assert!(set.is_empty());
        });
    }
}

#[test]
fn shutdown_aborts_and_waits() {
    for (name, rt) in runtimes() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let d = dropped.clone();
        rt.block_on(async move {
            let mut set = JoinSet::new();
            for _ in 0..10 {
                let flag = DropFlag(d.clone());
                set.spawn(async move {
                    let _flag = flag;
                    std::future::pending::<()>().await;
                });
            }
            set.shutdown().await;
            assert!(set.is_empty(), "{name}");
            // Every future was dropped before shutdown returned.
            assert_eq!(d.load(SeqCst), 10, "{name}");
        });
    }
}

#[test]
fn detach_all_lets_the_tasks_run() {
    for (name, rt) in runtimes() {
        let (tx, rx) = mpsc::channel();
        let got = rt.block_on(async move {
            let mut set = JoinSet::new();
            for i in 0..10 {
                let tx = tx.clone();
                set.spawn(async move {
                    sleep(Duration::from_millis(5)).await;
                    tx.send(i).unwrap();
                });
            }
            set.detach_all();
            assert!(set.is_empty());
            drop(set);
            // Until all ten report (the detached tasks keep running), with
            // a bound that holds on a loaded machine.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let mut got = Vec::new();
            while got.len() < 10 && std::time::Instant::now() < deadline {
                got.extend(rx.try_iter());
                sleep(Duration::from_millis(1)).await;
            }
            got
        });
        let mut got = got;
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>(), "{name}");
    }
}

#[test]
fn spawn_on_a_handle_from_outside_and_poll_join_next() {
    for (name, rt) in runtimes() {
        let mut set = JoinSet::new();
        for i in 0..10u32 {
            set.spawn_on(async move { i }, rt.handle());
        }
        set.spawn_blocking_on(|| 100, rt.handle());
        let sum = rt.block_on(async move {
            let mut sum = 0;
            while let Some(r) = std::future::poll_fn(|cx: &mut Context<'_>| {
                let p = set.poll_join_next(cx);
                assert!(!matches!(p, Poll::Ready(Some(Err(_)))));
                p
            })
            .await
            {
                sum += r.unwrap();
            }
            sum
        });
        assert_eq!(sum, 145, "{name}");
    }
}

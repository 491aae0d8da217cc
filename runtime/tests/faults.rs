//! The runtime under injected DLB faults (feature `dlb-fault-injection`):
//! short sends, held-back handoffs and refused ports. Every task completes,
//! exactly once, and the fallback counters show the fault paths ran. Alone
//! in its binary: the fault switch is process-wide.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Once};
use std::thread;
use std::time::{Duration, Instant};

use fulcrum_dlb::fault::{self, FaultConfig};
use fulcrum_dlb::Backend;
use fulcrum_runtime::{spawn, yield_now, Builder, Runtime};

mod common;
use common::futures_block_on;

/// The same faults for every test of this binary: 10% of sends cut short,
/// 10% of events held back (or 20 µs spins where they cannot be), 30% of
/// port requests refused.
fn faults_on() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        fault::set(FaultConfig {
            short_send_per_mille: 100,
            delay_per_mille: 100,
            delay_us: 20,
            refuse_port_per_mille: 300,
            seed: 0xfa17,
        })
    });
}

fn dlb_runtime(workers: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .dlb_backend(Backend::Software)
        .build()
        .expect("build retries refused ports")
}

/// With 30% of port requests refused, building still succeeds: the
/// runtime retries the transient refusal.
#[test]
fn runtime_builds_despite_refused_ports() {
    faults_on();
    let before = fault::stats().refused_ports;
    for i in 0..20 {
        let rt = dlb_runtime(4);
        assert_eq!(
            rt.block_on(async move { spawn(async move { i * 2 }).await })
                .unwrap(),
            i * 2
        );
    }
    let refused = fault::stats().refused_ports - before;
    eprintln!("20 runtimes (100 ports) built through {refused} refusals");
    assert!(refused > 0, "no refusal injected in 100 port requests");
}

/// 100,000 tasks: 50,000 spawned remotely by 4 threads, 50,000 spawned on
/// the workers by fan-out tasks (half of all tasks yield once, so they are
/// woken and rescheduled too). Each runs exactly once and its output comes
/// back through its `JoinHandle`; no task is left alive.
#[test]
fn every_task_completes_exactly_once_under_faults() {
    faults_on();
    const REMOTE_THREADS: usize = 4;
    const PER_THREAD: usize = 12_500;
    const REMOTE: usize = REMOTE_THREADS * PER_THREAD;
    const FANOUTS: usize = 50;
    const PER_FANOUT: usize = 1_000;
    const TOTAL: usize = REMOTE + FANOUTS * PER_FANOUT;
    let before = fault::stats();
    let rt = dlb_runtime(4);
    let ran: Arc<Vec<AtomicU8>> = Arc::new((0..TOTAL).map(|_| AtomicU8::new(0)).collect());
    let task = |ran: Arc<Vec<AtomicU8>>, i: usize| async move {
        if i % 2 == 0 {
            yield_now().await;
        }
        ran[i].fetch_add(1, SeqCst);
        i as u64 * 3 + 1
    };
    let start = Instant::now();
    thread::scope(|s| {
        for t in 0..REMOTE_THREADS {
            let (handle, ran) = (rt.handle().clone(), ran.clone());
            s.spawn(move || {
                let joins: Vec<_> = (t * PER_THREAD..(t + 1) * PER_THREAD)
                    .map(|i| (i, handle.spawn(task(ran.clone(), i))))
                    .collect();
                for (i, j) in joins {
                    assert_eq!(futures_block_on(j).unwrap(), i as u64 * 3 + 1);
                }
            });
        }
        rt.block_on(async {
            let fanouts: Vec<_> = (0..FANOUTS)
                .map(|f| {
                    let ran = ran.clone();
                    spawn(async move {
                        let base = REMOTE + f * PER_FANOUT;
                        let mut joins = Vec::with_capacity(PER_FANOUT);
                        for i in base..base + PER_FANOUT {
                            joins.push((i, spawn(task(ran.clone(), i))));
                            if i % 64 == 0 {
                                // End the poll: the spawns so far are handed
                                // off to idle workers.
                                yield_now().await;
                            }
                        }
                        for (i, j) in joins {
                            assert_eq!(j.await.unwrap(), i as u64 * 3 + 1);
                        }
                    })
                })
                .collect();
            for f in fanouts {
                f.await.unwrap();
            }
        });
    });
    let elapsed = start.elapsed();
    for (i, r) in ran.iter().enumerate() {
        assert_eq!(r.load(SeqCst), 1, "task {i} ran {} times", r.load(SeqCst));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.handle().metrics().alive_tasks > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    let m = rt.handle().metrics();
    assert_eq!(m.alive_tasks, 0, "tasks left alive: {m:?}");
    let fallbacks: u64 = m.workers.iter().map(|w| w.fallbacks).sum();
    let sent: u64 = m.workers.iter().map(|w| w.dlb_sent).sum();
    let stats = fault::stats();
    eprintln!(
        "{TOTAL} tasks in {elapsed:?}: worker dlb sends {sent}, fallbacks {fallbacks}, \
         remote fallbacks {}, polls {}; faults since start: short {}, held {}, spun {}",
        m.remote_fallbacks,
        m.total_tasks_polled(),
        stats.short_sends - before.short_sends,
        stats.held - before.held,
        stats.spun - before.spun,
    );
    assert!(fallbacks > 0, "no worker fallback: {m:?}");
    assert!(m.remote_fallbacks > 0, "no remote fallback: {m:?}");
    assert!(stats.short_sends > before.short_sends && stats.held > before.held);
}

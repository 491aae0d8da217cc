//! `cargo bench -p fulcrum-dlb`: the software DLB queue next to the
//! crossbeam queues that a work-stealing runtime would use instead, in the
//! same run.
//!
//! - `one`: one event's send + recv + release, uncontended, against an
//!   `ArrayQueue` push + pop and a `crossbeam-deque` push + steal.
//! - `batch32`: the same with batches of 32.
//! - `threads_2x2`: 100,000 events from 2 producer threads to 2 consumer
//!   threads; against `ArrayQueue` and `Injector` with the same threads.
//!   Idle consumers yield (all three), and DLB consumers park on their
//!   readiness fd after 64 idle polls.
//!
//! Uses divan (lighter to build than criterion, and it runs groups side by
//! side and reports medians).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;

use crossbeam_deque::{Injector, Steal, Worker};
use crossbeam_queue::ArrayQueue;
use divan::Bencher;
use fulcrum_dlb::{Backend, Domain, Event, Port};

fn main() {
    divan::main();
}

/// Port 0 sends, port 1 receives queue 0.
fn pair(cq_depth: u32) -> (Port, Port) {
    let d = Domain::builder()
        .backend(Backend::Software)
        .ignore_env()
        .ports(2)
        .cq_depth(cq_depth)
        .credits(1024)
        .link(1, 0, 0)
        .build()
        .expect("domain");
    (d.port(0).expect("port 0"), d.port(1).expect("port 1"))
}

mod one {
    use super::*;

    #[divan::bench]
    fn dlb_send_recv_release(b: Bencher) {
        let (mut tx, mut rx) = pair(8);
        let mut buf = [Event::default(); 1];
        let mut i = 0u64;
        b.bench_local(|| {
            i += 1;
            let sent = tx.send(&[Event::unordered(0, i)]).unwrap_or(0);
            let n = rx.recv(&mut buf).unwrap_or(0);
            let _ = rx.release(n);
            black_box((sent, buf[0].udata))
        });
    }

    #[divan::bench]
    fn array_queue_push_pop(b: Bencher) {
        let q = ArrayQueue::new(8);
        let mut i = 0u64;
        b.bench_local(|| {
            i += 1;
            let _ = q.push(i);
            black_box(q.pop())
        });
    }

    #[divan::bench]
    fn deque_push_steal(b: Bencher) {
        let w = Worker::new_fifo();
        let s = w.stealer();
        let mut i = 0u64;
        b.bench_local(|| {
            i += 1;
            w.push(i);
            black_box(s.steal())
        });
    }
}

mod batch32 {
    use super::*;

    #[divan::bench]
    fn dlb_send_recv_release(b: Bencher) {
        let (mut tx, mut rx) = pair(32);
        let evs: Vec<Event> = (0..32).map(|i| Event::unordered(0, i)).collect();
        let mut buf = [Event::default(); 32];
        b.bench_local(|| {
            let sent = tx.send(&evs).unwrap_or(0);
            let n = rx.recv(&mut buf).unwrap_or(0);
            let _ = rx.release(n);
            black_box((sent, n))
        });
    }

    #[divan::bench]
    fn array_queue_push_pop(b: Bencher) {
        let q = ArrayQueue::new(32);
        b.bench_local(|| {
            for i in 0..32u64 {
                let _ = q.push(i);
            }
            for _ in 0..32 {
                black_box(q.pop());
            }
        });
    }

    #[divan::bench]
    fn deque_push_steal(b: Bencher) {
        let w = Worker::new_fifo();
        let s = w.stealer();
        let dst = Worker::new_fifo();
        b.bench_local(|| {
            for i in 0..32u64 {
                w.push(i);
            }
            // A thief takes half per steal_batch; drain the way a runtime
            // would.
            while let Steal::Success(()) = s.steal_batch(&dst) {}
            while let Some(v) = dst.pop() {
                black_box(v);
            }
        });
    }
}

const EVENTS: u64 = 100_000;
const CQ: u32 = fulcrum_dlb::DEFAULT_CQ_DEPTH;

mod threads_2x2 {
    use super::*;

    /// 2 producers and 2 consumers move `EVENTS` events; consumers sleep on
    /// the readiness fd when idle.
    #[divan::bench(sample_count = 20, sample_size = 1)]
    fn dlb(b: Bencher) {
        b.bench(|| {
            let d = Domain::builder()
                .backend(Backend::Software)
                .ignore_env()
                .ports(4)
                .cq_depth(CQ)
                .credits(1024)
                .link(2, 0, 0)
                .link(3, 0, 0)
                .build()
                .expect("domain");
            let done = Arc::new(AtomicU64::new(0));
            let consumers: Vec<_> = (2..4)
                .map(|id| {
                    let mut port = d.port(id).expect("port");
                    let done = done.clone();
                    thread::spawn(move || {
                        let mut buf = [Event::default(); 32];
                        let mut idle = 0;
                        while done.load(Relaxed) < EVENTS {
                            let n = port.recv(&mut buf).unwrap_or(0);
                            if n == 0 {
                                // Like the crossbeam consumers, yield while
                                // idle; park on the readiness fd only after a
                                // while (as a runtime worker would).
                                idle += 1;
                                if idle < 64 {
                                    thread::yield_now();
                                } else {
                                    idle = 0;
                                    let _ = port.wait(Some(std::time::Duration::from_millis(1)));
                                }
                                continue;
                            }
                            idle = 0;
                            let _ = port.release(n);
                            done.fetch_add(n as u64, Relaxed);
                        }
                    })
                })
                .collect();
            let producers: Vec<_> = (0..2)
                .map(|id| {
                    let mut port = d.port(id).expect("port");
                    thread::spawn(move || {
                        let evs: Vec<Event> = (0..16).map(|i| Event::unordered(0, i)).collect();
                        let mut left = EVENTS / 2;
                        while left > 0 {
                            let k = left.min(16) as usize;
                            let n = port.send(&evs[..k]).unwrap_or(0);
                            left -= n as u64;
                            if n == 0 {
                                thread::yield_now();
                            }
                        }
                    })
                })
                .collect();
            for t in producers.into_iter().chain(consumers) {
                t.join().expect("thread");
            }
        });
    }

    #[divan::bench(sample_count = 20, sample_size = 1)]
    fn array_queue(b: Bencher) {
        b.bench(|| {
            let q = Arc::new(ArrayQueue::new(1024));
            let done = Arc::new(AtomicU64::new(0));
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let (q, done) = (q.clone(), done.clone());
                    thread::spawn(move || {
                        while done.load(Relaxed) < EVENTS {
                            match q.pop() {
                                Some(v) => {
                                    black_box(v);
                                    done.fetch_add(1, Relaxed);
                                }
                                None => thread::yield_now(),
                            }
                        }
                    })
                })
                .collect();
            let producers: Vec<_> = (0..2)
                .map(|_| {
                    let q = q.clone();
                    thread::spawn(move || {
                        for i in 0..EVENTS / 2 {
                            let mut v = i;
                            while let Err(back) = q.push(v) {
                                v = back;
                                thread::yield_now();
                            }
                        }
                    })
                })
                .collect();
            for t in producers.into_iter().chain(consumers) {
                t.join().expect("thread");
            }
        });
    }

    #[divan::bench(sample_count = 20, sample_size = 1)]
    fn injector(b: Bencher) {
        b.bench(|| {
            let q = Arc::new(Injector::new());
            let done = Arc::new(AtomicU64::new(0));
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let (q, done) = (q.clone(), done.clone());
                    thread::spawn(move || {
                        while done.load(Relaxed) < EVENTS {
                            match q.steal() {
                                Steal::Success(v) => {
                                    black_box::<u64>(v);
                                    done.fetch_add(1, Relaxed);
                                }
                                _ => thread::yield_now(),
                            }
                        }
                    })
                })
                .collect();
            let producers: Vec<_> = (0..2)
                .map(|_| {
                    let q = q.clone();
                    thread::spawn(move || {
                        for i in 0..EVENTS / 2 {
                            q.push(i);
                        }
                    })
                })
                .collect();
            for t in producers.into_iter().chain(consumers) {
                t.join().expect("thread");
            }
        });
    }
}

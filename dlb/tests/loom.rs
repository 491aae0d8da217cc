//! Loom models of the software backend's protocols.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom -C debug_assertions" LOOM_MAX_PREEMPTIONS=2 cargo test -p fulcrum-dlb --release --test loom`
//!
//! Under loom the CQ depth floor is 2 and ports sleep on loom's `Notify`, so
//! a consumer that is never woken makes loom report a deadlock: that is how
//! a lost wake-up fails these models.
#![cfg(loom)]

use fulcrum_dlb::{Backend, Domain, Event, Port};
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

const STOP: u64 = u64::MAX;

fn domain(ports: usize, cq_depth: u32, credits: u32, consumers: &[usize]) -> Domain {
    let mut b = Domain::builder()
        .backend(Backend::Software)
        .ignore_env()
        .ports(ports)
        .cq_depth(cq_depth)
        .credits(credits);
    for &c in consumers {
        b = b.link(c, 0, 0);
    }
    b.build().expect("valid config")
}

/// Sends every event, waiting for credits by sleeping between tries is not
/// possible for a pure producer, so models give it enough credits.
fn send_all(port: &mut Port, events: &[Event]) {
    let mut done = 0;
    while done < events.len() {
        done += port.send(&events[done..]).expect("valid events");
        if done < events.len() {
            thread::yield_now();
        }
    }
}

/// Receives until a STOP event arrives; records each payload bit in `seen`
/// and fails on a duplicate. Releases everything it received.
fn consume_until_stop(port: &mut Port, seen: &AtomicUsize) -> usize {
    let mut got = 0;
    let mut buf = [Event::default(); 4];
    loop {
        let n = port.recv(&mut buf).expect("recv");
        let mut stop = false;
        for ev in &buf[..n] {
            if ev.udata == STOP {
                stop = true;
            } else {
                let bit = 1usize << ev.udata;
                let before = seen.fetch_or(bit, SeqCst);
                assert_eq!(before & bit, 0, "event {} delivered twice", ev.udata);
                got += 1;
            }
        }
        port.release(n).expect("release");
        if stop {
            return got;
        }
        if n == 0 {
            port.wait(None).expect("wait");
        }
    }
}

/// A consumer going to sleep races a delivery: it must always be woken.
#[test]
fn no_lost_wakeup() {
    loom::model(|| {
        let d = domain(2, 2, 2, &[1]);
        let mut producer = d.port(0).unwrap();
        let mut consumer = d.port(1).unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let seen2 = seen.clone();
        let c = thread::spawn(move || consume_until_stop(&mut consumer, &seen2));
        send_all(
            &mut producer,
            &[Event::unordered(0, 0), Event::directed(1, STOP)],
        );
        assert_eq!(c.join().unwrap(), 1);
        assert_eq!(seen.load(SeqCst), 1);
        assert_eq!(d.credits_available(), Some(2));
    });
}

/// Two consumers, two events: each delivered exactly once, credits back.
#[test]
fn exactly_once_two_consumers() {
    loom::model(|| {
        let d = domain(3, 2, 2, &[1, 2]);
        let mut producer = d.port(0).unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let consumers: Vec<_> = [1, 2]
            .into_iter()
            .map(|id| {
                let mut port = d.port(id).unwrap();
                let seen = seen.clone();
                thread::spawn(move || consume_until_stop(&mut port, &seen))
            })
            .collect();
        send_all(
            &mut producer,
            &[
                Event::unordered(0, 0),
                Event::unordered(0, 1),
                Event::directed(1, STOP),
                Event::directed(2, STOP),
            ],
        );
        let total: usize = consumers.into_iter().map(|c| c.join().unwrap()).sum();
        assert_eq!(total, 2);
        assert_eq!(seen.load(SeqCst), 0b11);
        assert_eq!(d.credits_available(), Some(2));
        for id in 0..3 {
            assert_eq!(d.port_stats(id).unwrap().in_flight, 0);
        }
    });
}

/// Two producers race on one credit and a CQ of 2: the CQ never overflows,
/// sends beyond CQ + credits come up short and stay with the caller, and
/// credits are conserved.
#[test]
fn full_cq_and_credits_conserved() {
    loom::model(|| {
        let d = domain(3, 2, 1, &[2]);
        let producers: Vec<_> = [0, 1]
            .into_iter()
            .map(|id| {
                let mut port = d.port(id).unwrap();
                thread::spawn(move || {
                    let evs = [
                        Event::unordered(0, 2 * id as u64),
                        Event::unordered(0, 2 * id as u64 + 1),
                    ];
                    port.send(&evs).unwrap()
                })
            })
            .collect();
        let sent: usize = producers.into_iter().map(|p| p.join().unwrap()).sum();
        // Two fit in the CQ, one more can wait on the single credit.
        assert_eq!(sent, 3);
        assert_eq!(d.credits_available(), Some(0));
        let mut consumer = d.port(2).unwrap();
        assert_eq!(consumer.stats().in_flight, 2, "CQ holds exactly its depth");
        let mut buf = [Event::default(); 4];
        let mut got = consumer.recv(&mut buf).unwrap();
        // Receiving freed the CQ, so the waiting event moved in.
        assert_eq!(d.credits_available(), Some(1));
        consumer.release(got).unwrap();
        got += consumer.recv(&mut buf).unwrap();
        assert_eq!(got, 3);
    });
}

/// A consumer that owes too many releases is skipped; releasing returns its
/// capacity and the waiting event is delivered, waking it.
#[test]
fn release_returns_capacity() {
    loom::model(|| {
        let d = domain(2, 2, 2, &[1]);
        let mut producer = d.port(0).unwrap();
        let mut consumer = d.port(1).unwrap();
        let c = thread::spawn(move || {
            let mut buf = [Event::default(); 1];
            let mut held = 0;
            let mut got = 0;
            while got < 4 {
                let n = consumer.recv(&mut buf).unwrap();
                got += n;
                held += n;
                if held > 2 {
                    // Owing more than the CQ depth makes the port ineligible;
                    // releasing must bring deliveries back.
                    consumer.release(held).unwrap();
                    held = 0;
                } else if n == 0 {
                    if held > 0 {
                        consumer.release(held).unwrap();
                        held = 0;
                    } else {
                        consumer.wait(None).unwrap();
                    }
                }
            }
            consumer.release(held).unwrap();
            got
        });
        let evs: Vec<_> = (0..4).map(|i| Event::unordered(0, i)).collect();
        send_all(&mut producer, &evs);
        assert_eq!(c.join().unwrap(), 4);
        assert_eq!(d.credits_available(), Some(2));
    });
}

/// Atomic scheduling: two events of one flow are never held by two
/// consumers at once.
#[test]
fn atomic_flow_single_holder() {
    loom::model(|| {
        let d = domain(3, 2, 2, &[1, 2]);
        let mut producer = d.port(0).unwrap();
        let holder = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let consumers: Vec<_> = [1usize, 2]
            .into_iter()
            .map(|id| {
                let mut port = d.port(id).unwrap();
                let holder = holder.clone();
                let seen = seen.clone();
                thread::spawn(move || {
                    let mut buf = [Event::default(); 2];
                    loop {
                        let n = port.recv(&mut buf).unwrap();
                        let mut stop = false;
                        let mut flow_events = 0;
                        for ev in &buf[..n] {
                            if ev.udata == STOP {
                                stop = true;
                            } else {
                                flow_events += 1;
                                seen.fetch_add(1, SeqCst);
                            }
                        }
                        if flow_events > 0 {
                            let prev = holder.swap(id, SeqCst);
                            assert!(prev == 0 || prev == id, "flow held by {prev} and {id}");
                            holder.store(0, SeqCst);
                        }
                        port.release(n).unwrap();
                        if stop {
                            return;
                        }
                        if n == 0 {
                            port.wait(None).unwrap();
                        }
                    }
                })
            })
            .collect();
        send_all(
            &mut producer,
            &[
                Event::atomic(0, 7, 0),
                Event::atomic(0, 7, 1),
                Event::directed(1, STOP),
                Event::directed(2, STOP),
            ],
        );
        for c in consumers {
            c.join().unwrap();
        }
        assert_eq!(seen.load(SeqCst), 2);
        assert_eq!(d.credits_available(), Some(2));
    });
}

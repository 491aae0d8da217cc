//! The software backend under real threads: configuration errors, arbitration,
//! credits, priorities, atomic flows, readiness, and a million events across
//! 4 producers and 4 consumers with every payload accounted for once.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fulcrum_dlb::{Backend, BackendKind, DlbError, Domain, DomainBuilder, Event, Port, Sched};
use fulcrum_test_support::serial;

fn soft() -> DomainBuilder {
    Domain::builder().backend(Backend::Software).ignore_env()
}

/// A domain whose ports `0..producers` only send and the rest consume queue 0.
fn split(producers: usize, consumers: usize, cq: u32, credits: u32) -> Domain {
    let mut b = soft()
        .ports(producers + consumers)
        .cq_depth(cq)
        .credits(credits);
    for c in producers..producers + consumers {
        b = b.link(c, 0, 0);
    }
    b.build().unwrap()
}

fn drain(port: &mut Port) -> Vec<Event> {
    let mut out = Vec::new();
    let mut buf = [Event::default(); 16];
    loop {
        let n = port.recv(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
        port.release(n).unwrap();
    }
}

#[test]
fn bad_configurations_are_clear_errors() {
    let cases: Vec<(DomainBuilder, &str)> = vec![
        (soft().cq_depth(12), "power of two from 8 to 1024"),
        (soft().cq_depth(4), "power of two from 8 to 1024"),
        (soft().cq_depth(2048), "power of two from 8 to 1024"),
        (soft().ports(0), "at least one port"),
        (
            soft().ports(65),
            "65 ports requested but the backend has 64",
        ),
        (soft().queues(0), "supports 1 to 32"),
        (soft().credits(0), "credit pool of 0"),
        (soft().ports(2).link(2, 0, 0), "no such port"),
        (soft().ports(2).link(0, 3, 0), "no such queue"),
        (soft().ports(2).link(0, 0, 9), "priority must be 0"),
        (
            (0..9).fold(soft().queues(9), |b, q| b.link(0, q, 0)),
            "linked to 9 queues; a port can be linked to at most 8",
        ),
    ];
    for (builder, want) in cases {
        let err = builder.build().expect_err(want);
        let msg = err.to_string();
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
        let io: std::io::Error = err.into();
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
    }
}

#[test]
fn backend_names_parse() {
    assert_eq!("auto".parse::<Backend>().unwrap(), Backend::Auto);
    assert_eq!("soft".parse::<Backend>().unwrap(), Backend::Software);
    assert_eq!(
        "hw".parse::<Backend>().unwrap(),
        Backend::Hardware { device: 0 }
    );
    assert_eq!(
        "hw:3".parse::<Backend>().unwrap(),
        Backend::Hardware { device: 3 }
    );
    let err = "gpu".parse::<Backend>().unwrap_err();
    assert!(err.to_string().contains("not one of auto, soft, hw, hw:N"));
    assert!("hw:x".parse::<Backend>().is_err());
}

#[test]
fn ports_are_taken_once_and_given_back_on_drop() {
    let d = soft().ports(2).build().unwrap();
    assert_eq!(d.backend(), BackendKind::Software);
    let p = d.port(1).unwrap();
    assert!(matches!(d.port(1), Err(DlbError::PortTaken { port: 1 })));
    assert!(matches!(
        d.port(2),
        Err(DlbError::NoSuchPort { port: 2, ports: 2 })
    ));
    drop(p);
    assert!(d.port(1).is_ok());
}

#[test]
fn short_send_keeps_the_rest_and_credits_are_conserved() {
    let d = split(1, 1, 8, 4);
    let mut tx = d.port(0).unwrap();
    let mut rx = d.port(1).unwrap();
    let events: Vec<_> = (0..20).map(|i| Event::unordered(0, i)).collect();
    // 8 fit in the CQ, 4 more wait on the 4 credits.
    assert_eq!(tx.send(&events).unwrap(), 12);
    assert_eq!(d.credits_available(), Some(0));
    assert_eq!(tx.stats().credit_waits, 8);
    assert_eq!(tx.send(&events[12..]).unwrap(), 0);
    let got = drain(&mut rx);
    assert_eq!(got.len(), 12);
    assert_eq!(d.credits_available(), Some(4));
    assert_eq!(tx.send(&events[12..]).unwrap(), 8);
    let got2 = drain(&mut rx);
    let mut all: Vec<u64> = got.iter().chain(&got2).map(|e| e.udata).collect();
    all.sort_unstable();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
    assert_eq!(rx.stats().received, 20);
    assert_eq!(rx.stats().released, 20);
    assert_eq!(rx.stats().in_flight, 0);
}

#[test]
fn invalid_events_are_refused_after_the_valid_prefix() {
    let d = soft().ports(2).build().unwrap();
    let mut p = d.port(0).unwrap();
    let batch = [
        Event::unordered(0, 1),
        Event::unordered(5, 2),
        Event::unordered(0, 3),
    ];
    assert_eq!(p.send(&batch).unwrap(), 1);
    let err = p.send(&batch[1..]).unwrap_err();
    assert!(
        matches!(err, DlbError::InvalidEvent { index: 0, .. }),
        "{err}"
    );
    assert!(p.send(&[Event::directed(9, 0)]).is_err());
    assert!(p.send(&[Event::unordered(0, 0).with_priority(8)]).is_err());
}

#[test]
fn directed_events_reach_the_named_port() {
    let d = soft().ports(3).build().unwrap();
    let mut ports: Vec<_> = (0..3).map(|i| d.port(i).unwrap()).collect();
    let evs: Vec<_> = (0..30).map(|i| Event::directed(2, i)).collect();
    let mut sent = 0;
    while sent < evs.len() {
        sent += ports[0].send(&evs[sent..]).unwrap();
        let got = drain(&mut ports[2]);
        assert!(got.iter().all(|e| e.sched == Sched::Directed));
    }
    assert_eq!(ports[2].stats().received, 30);
    assert_eq!(ports[1].stats().received, 0);
    assert_eq!(ports[0].stats().received, 0);
}

#[test]
fn waiting_events_leave_highest_priority_first() {
    let d = split(1, 1, 8, 64);
    let mut tx = d.port(0).unwrap();
    let mut rx = d.port(1).unwrap();
    // Fill the CQ, then queue low-priority events before high-priority ones.
    let fill: Vec<_> = (0..8).map(|i| Event::unordered(0, i)).collect();
    assert_eq!(tx.send(&fill).unwrap(), 8);
    let low: Vec<_> = (100..104)
        .map(|i| Event::unordered(0, i).with_priority(6))
        .collect();
    let high: Vec<_> = (200..204)
        .map(|i| Event::unordered(0, i).with_priority(1))
        .collect();
    assert_eq!(tx.send(&low).unwrap(), 4);
    assert_eq!(tx.send(&high).unwrap(), 4);
    let mut buf = [Event::default(); 8];
    assert_eq!(rx.recv(&mut buf).unwrap(), 8);
    rx.release(8).unwrap();
    let rest: Vec<u64> = drain(&mut rx).iter().map(|e| e.udata).collect();
    assert_eq!(rest, [200, 201, 202, 203, 100, 101, 102, 103]);
}

#[test]
fn link_priority_and_no_link_means_producer_only() {
    // Port 0 links nothing: it never receives.
    let d = soft().ports(3).link(1, 0, 0).link(2, 0, 0).build().unwrap();
    let mut tx = d.port(0).unwrap();
    let evs: Vec<_> = (0..8).map(|i| Event::unordered(0, i)).collect();
    assert_eq!(tx.send(&evs).unwrap(), 8);
    assert_eq!(tx.stats().in_flight, 0);
    assert_eq!(d.port_stats(1).unwrap().in_flight, 4);
    assert_eq!(d.port_stats(2).unwrap().in_flight, 4);
}

/// Sends `evs` in one call, or one event per call (the single-event path).
fn send_all(tx: &mut Port, evs: &[Event], one_at_a_time: bool) -> usize {
    if one_at_a_time {
        evs.iter()
            .map(|e| tx.send(std::slice::from_ref(e)).unwrap())
            .sum()
    } else {
        tx.send(evs).unwrap()
    }
}

fn least_loaded_port_is_preferred(one_at_a_time: bool) {
    let d = split(1, 3, 8, 64);
    let mut tx = d.port(0).unwrap();
    let mut rx: Vec<_> = (1..4).map(|i| d.port(i).unwrap()).collect();
    // Round-robin among equals: 6 events go 2/2/2.
    let evs: Vec<_> = (0..6).map(|i| Event::unordered(0, i)).collect();
    assert_eq!(send_all(&mut tx, &evs, one_at_a_time), 6);
    for id in 1..4 {
        assert_eq!(d.port_stats(id).unwrap().in_flight, 2);
    }
    // Port 1 drains and releases; the next two go to it.
    drain(&mut rx[0]);
    assert_eq!(send_all(&mut tx, &evs[..2], one_at_a_time), 2);
    assert_eq!(d.port_stats(1).unwrap().in_flight, 2);
    assert_eq!(d.port_stats(2).unwrap().in_flight, 2);
    // Port 2 receives but does not release: it stays loaded. Port 3 drains
    // and releases, so the next two go to port 3, not port 2.
    let mut buf = [Event::default(); 8];
    assert_eq!(rx[1].recv(&mut buf).unwrap(), 2);
    drain(&mut rx[2]);
    assert_eq!(send_all(&mut tx, &evs[..2], one_at_a_time), 2);
    assert_eq!(d.port_stats(2).unwrap().in_flight, 2);
    assert_eq!(d.port_stats(3).unwrap().in_flight, 2);
    // A load hint outweighs an empty CQ: with port 1 hinted busy and every
    // CQ equal, the next event goes to port 2 or 3.
    for port in &mut rx {
        drain(port);
    }
    d.set_load_hint(1, 4);
    assert_eq!(send_all(&mut tx, &evs[..1], one_at_a_time), 1);
    assert_eq!(d.port_stats(1).unwrap().in_flight, 0);
}

#[test]
fn arbiter_prefers_the_least_loaded_port() {
    least_loaded_port_is_preferred(false);
}

#[test]
fn arbiter_prefers_the_least_loaded_port_one_event_at_a_time() {
    least_loaded_port_is_preferred(true);
}

#[test]
fn atomic_flows_stick_to_one_port_until_released() {
    let d = split(1, 2, 8, 64);
    let mut tx = d.port(0).unwrap();
    let mut a = d.port(1).unwrap();
    let mut b = d.port(2).unwrap();
    let flow = |i| Event::atomic(0, 42, i);
    assert_eq!(tx.send(&[flow(0), flow(1), flow(2)]).unwrap(), 3);
    let (ia, ib) = (a.stats().in_flight, b.stats().in_flight);
    assert!(ia == 3 || ib == 3, "flow split across ports: {ia} / {ib}");
    let (holder, other) = if ia == 3 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let mut buf = [Event::default(); 8];
    assert_eq!(holder.recv(&mut buf).unwrap(), 3);
    // Still unreleased: more events of the flow follow it, even though the
    // other port is idle.
    assert_eq!(tx.send(&[flow(3)]).unwrap(), 1);
    assert_eq!(holder.stats().in_flight, 4);
    assert_eq!(other.stats().in_flight, 0);
    assert_eq!(holder.recv(&mut buf).unwrap(), 1);
    holder.release(4).unwrap();
    // Released: the flow is free and may move to the idle port.
    assert_eq!(tx.send(&[flow(4), flow(5)]).unwrap(), 2);
    assert_eq!(drain(holder).len() + drain(other).len(), 2);
}

#[test]
fn readiness_fd_is_written_only_for_a_parked_port() {
    let d = split(1, 1, 8, 64);
    let mut tx = d.port(0).unwrap();
    let mut rx = d.port(1).unwrap();
    let readable = |fd| {
        let mut pfd = libc_pollfd(fd);
        // SAFETY: a live pollfd array of length 1.
        unsafe { poll(&mut pfd, 1, 0) > 0 }
    };
    // Not parked: a delivery does not touch the eventfd (no syscall).
    tx.send(&[Event::unordered(0, 1)]).unwrap();
    assert!(!readable(rx.readiness_fd()));
    assert!(!rx.prepare_park(), "events are ready, so do not park");
    rx.finish_park();
    drain(&mut rx);
    // Parked: the delivery makes it readable.
    assert!(rx.prepare_park());
    assert!(!readable(rx.readiness_fd()));
    tx.send(&[Event::unordered(0, 2)]).unwrap();
    assert!(readable(rx.readiness_fd()));
    rx.finish_park();
    assert!(
        !readable(rx.readiness_fd()),
        "finish_park drains the eventfd"
    );
    assert_eq!(drain(&mut rx).len(), 1);
}

#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

fn libc_pollfd(fd: i32) -> PollFd {
    PollFd {
        fd,
        events: 1, // POLLIN
        revents: 0,
    }
}

extern "C" {
    fn poll(fds: *mut PollFd, n: u64, timeout: i32) -> i32;
}

const STOP: u64 = u64::MAX;

/// Payloads consumed by all `consume` calls of the running test binary.
/// Tests that use it hold `serial()` so that their counts do not mix.
static CONSUMED: AtomicU64 = AtomicU64::new(0);

/// Waits until `total` payloads were consumed, then stops the consumers.
/// (Stopping earlier would strand events that still wait in the queue.)
fn stop_when_consumed(port: &mut Port, total: u64, consumers: std::ops::Range<usize>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while CONSUMED.load(SeqCst) < total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} consumed",
            CONSUMED.load(SeqCst)
        );
        thread::sleep(Duration::from_millis(1));
    }
    let stops: Vec<_> = consumers
        .map(|c| Event::directed(c as u8, STOP).with_priority(7))
        .collect();
    produce(port, &stops);
}

/// Consumes until a STOP, sleeping on the readiness fd when idle. Marks each
/// payload in `seen`; returns how many it got.
fn consume(mut port: Port, seen: &[AtomicU64], delay: Duration) -> u64 {
    let mut buf = [Event::default(); 32];
    let mut got = 0;
    loop {
        let n = port.recv(&mut buf).unwrap();
        let mut stop = false;
        for ev in &buf[..n] {
            if ev.udata == STOP {
                stop = true;
                continue;
            }
            let (word, bit) = ((ev.udata / 64) as usize, 1u64 << (ev.udata % 64));
            let before = seen[word].fetch_or(bit, SeqCst);
            assert_eq!(before & bit, 0, "payload {} delivered twice", ev.udata);
            CONSUMED.fetch_add(1, SeqCst);
            got += 1;
            if !delay.is_zero() {
                thread::sleep(delay);
            }
        }
        port.release(n).unwrap();
        if stop {
            return got;
        }
        if n == 0 {
            port.wait(Some(Duration::from_millis(100))).unwrap();
        }
    }
}

fn produce(port: &mut Port, events: &[Event]) {
    let mut sent = 0;
    while sent < events.len() {
        let n = port.send(&events[sent..]).unwrap();
        sent += n;
        if n == 0 {
            thread::yield_now();
        }
    }
}

#[test]
fn million_events_four_by_four_each_exactly_once() {
    let _serial = serial();
    CONSUMED.store(0, SeqCst);
    const PRODUCERS: usize = 4;
    const CONSUMERS: usize = 4;
    const TOTAL: u64 = 1_000_000;
    let d = split(PRODUCERS, CONSUMERS, 8, 256);
    let seen: Arc<Vec<AtomicU64>> =
        Arc::new((0..TOTAL.div_ceil(64)).map(|_| AtomicU64::new(0)).collect());
    let consumers: Vec<_> = (PRODUCERS..PRODUCERS + CONSUMERS)
        .map(|id| {
            let port = d.port(id).unwrap();
            let seen = seen.clone();
            thread::spawn(move || consume(port, &seen, Duration::ZERO))
        })
        .collect();
    let per = TOTAL / PRODUCERS as u64;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            let mut port = d.port(id).unwrap();
            thread::spawn(move || {
                let base = id as u64 * per;
                for chunk in (base..base + per).collect::<Vec<_>>().chunks(32) {
                    let evs: Vec<_> = chunk.iter().map(|&i| Event::unordered(0, i)).collect();
                    produce(&mut port, &evs);
                }
                port
            })
        })
        .collect();
    let mut tx: Vec<Port> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    stop_when_consumed(&mut tx[0], TOTAL, PRODUCERS..PRODUCERS + CONSUMERS);
    let counts: Vec<u64> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(
        counts.iter().sum::<u64>(),
        TOTAL,
        "per consumer: {counts:?}"
    );
    for (i, w) in seen.iter().enumerate() {
        let expect = if (i as u64 + 1) * 64 <= TOTAL {
            u64::MAX
        } else {
            (1u64 << (TOTAL % 64)) - 1
        };
        assert_eq!(w.load(SeqCst), expect, "payload word {i} incomplete");
    }
    assert_eq!(d.credits_available(), Some(256), "credits conserved");
    for id in 0..PRODUCERS + CONSUMERS {
        assert_eq!(d.port_stats(id).unwrap().in_flight, 0);
    }
    let sent: u64 = tx.iter().map(|p| p.stats().sent).sum();
    assert_eq!(sent, TOTAL + CONSUMERS as u64);
}

#[test]
fn slow_consumer_gets_few_events() {
    let _serial = serial();
    CONSUMED.store(0, SeqCst);
    const TOTAL: u64 = 4_000;
    let d = split(1, 4, 8, 1024);
    let seen: Arc<Vec<AtomicU64>> =
        Arc::new((0..TOTAL.div_ceil(64)).map(|_| AtomicU64::new(0)).collect());
    let consumers: Vec<_> = (1..5)
        .map(|id| {
            let port = d.port(id).unwrap();
            let seen = seen.clone();
            // Port 1 takes 2 ms per event before releasing; the others 20 µs.
            let delay = if id == 1 { 2_000 } else { 20 };
            thread::spawn(move || consume(port, &seen, Duration::from_micros(delay)))
        })
        .collect();
    let mut tx = d.port(0).unwrap();
    let started = Instant::now();
    for i in 0..TOTAL {
        produce(&mut tx, &[Event::unordered(0, i)]);
    }
    stop_when_consumed(&mut tx, TOTAL, 1..5);
    let counts: Vec<u64> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(counts.iter().sum::<u64>(), TOTAL);
    // A fair share would be 25%; the slow port should get far less.
    let slow_share = counts[0] as f64 / TOTAL as f64;
    eprintln!(
        "slow consumer share {:.1}% (counts {counts:?}, {:?})",
        slow_share * 100.0,
        started.elapsed()
    );
    assert!(slow_share < 0.10, "slow consumer got {counts:?}");
}

#[test]
fn concurrent_spread_is_even_for_equal_consumers() {
    let _serial = serial();
    CONSUMED.store(0, SeqCst);
    const TOTAL: u64 = 40_000;
    let d = split(1, 4, 8, 1024);
    let seen: Arc<Vec<AtomicU64>> =
        Arc::new((0..TOTAL.div_ceil(64)).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicUsize::new(0));
    let consumers: Vec<_> = (1..5)
        .map(|id| {
            let port = d.port(id).unwrap();
            let seen = seen.clone();
            let done = done.clone();
            thread::spawn(move || {
                let n = consume(port, &seen, Duration::from_micros(5));
                done.fetch_add(1, SeqCst);
                n
            })
        })
        .collect();
    let mut tx = d.port(0).unwrap();
    for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(16) {
        let evs: Vec<_> = chunk.iter().map(|&i| Event::unordered(0, i)).collect();
        produce(&mut tx, &evs);
    }
    stop_when_consumed(&mut tx, TOTAL, 1..5);
    let counts: Vec<u64> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(counts.iter().sum::<u64>(), TOTAL);
    let mean = TOTAL as f64 / 4.0;
    for c in &counts {
        assert!((*c as f64) > mean * 0.5, "uneven spread {counts:?}");
    }
}

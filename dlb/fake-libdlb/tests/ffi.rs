//! The hardware backend's data path, run over the fake libdlb: the same
//! delivery properties as the software backend, through the FFI layer.
#![cfg(not(loom))]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{hw_builder, DevDir, Hooks};
use fulcrum_dlb::{BackendKind, DlbError, Event, Port, Sched};

/// Receives until `want` events arrived, sleeping in `Port::wait` when idle.
fn recv_n(port: &mut Port, want: usize) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    let mut buf = [Event::default(); 16];
    while got.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} events arrived",
            got.len()
        );
        let n = port.recv(&mut buf).expect("recv");
        if n == 0 {
            port.wait(Some(Duration::from_millis(200))).expect("wait");
            continue;
        }
        got.extend_from_slice(&buf[..n]);
        assert_eq!(port.release(n).expect("release"), n);
    }
    got
}

#[test]
fn every_event_is_delivered_exactly_once_to_sleeping_consumers() {
    const PER_PRODUCER: u64 = 10_000;
    const TOTAL: usize = 2 * PER_PRODUCER as usize;
    let dev = DevDir::new(&["dlb0"]);
    let hooks = Hooks::open();
    // Ports 0 and 1 produce; ports 2 and 3 consume queue 0.
    let domain = hw_builder(&dev)
        .ports(4)
        .link(2, 0, 0)
        .link(3, 0, 0)
        .cq_depth(8)
        .credits(64)
        .build()
        .expect("hardware domain over the fake");
    assert_eq!(domain.backend(), BackendKind::Hardware { device: 0 });

    let received = Arc::new(AtomicUsize::new(0));
    let timeouts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::with_capacity(TOTAL)));
    let started = Instant::now();
    let consumers: Vec<_> = [2, 3]
        .into_iter()
        .map(|id| {
            let mut port = domain.port(id).expect("consumer port");
            let (received, timeouts, seen) = (received.clone(), timeouts.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let mut buf = [Event::default(); 32];
                while received.load(SeqCst) < TOTAL {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "consumer stalled"
                    );
                    let n = port.recv(&mut buf).expect("recv");
                    if n == 0 {
                        if !port.wait(Some(Duration::from_secs(1))).expect("wait") {
                            timeouts.fetch_add(1, SeqCst);
                        }
                        continue;
                    }
                    for ev in &buf[..n] {
                        assert_eq!(ev.sched, Sched::Unordered);
                        assert_eq!(ev.queue, 0);
                        mine.push(ev.udata);
                    }
                    assert_eq!(port.release(n).expect("release"), n);
                    received.fetch_add(n, SeqCst);
                }
                let stats = port.stats();
                assert_eq!(stats.received, mine.len() as u64);
                assert_eq!(stats.released, stats.received);
                assert_eq!(stats.in_flight, 0);
                let count = mine.len();
                seen.lock().expect("lock").extend(mine);
                count
            })
        })
        .collect();
    let producers: Vec<_> = [0u64, 1]
        .into_iter()
        .map(|p| {
            let mut port = domain.port(p as usize).expect("producer port");
            std::thread::spawn(move || {
                let events: Vec<Event> = (0..PER_PRODUCER)
                    .map(|i| Event::unordered(0, (p << 32) | i))
                    .collect();
                let mut done = 0;
                while done < events.len() {
                    let chunk = &events[done..(done + 16).min(events.len())];
                    let n = port.send(chunk).expect("send");
                    done += n;
                    if n < chunk.len() {
                        // Out of credits: the rest is still ours; let the
                        // consumers drain.
                        std::thread::yield_now();
                    }
                }
                assert_eq!(port.stats().sent, PER_PRODUCER);
            })
        })
        .collect();
    for p in producers {
        p.join().expect("producer");
    }
    let per_consumer: Vec<usize> = consumers
        .into_iter()
        .map(|c| c.join().expect("consumer"))
        .collect();

    let mut seen = std::mem::take(&mut *seen.lock().expect("lock"));
    assert_eq!(seen.len(), TOTAL, "events lost or duplicated");
    seen.sort_unstable();
    let expected: Vec<u64> = [0u64, 1]
        .iter()
        .flat_map(|&p| (0..PER_PRODUCER).map(move |i| (p << 32) | i))
        .collect();
    assert_eq!(seen, expected, "every payload exactly once");
    assert!(
        per_consumer.iter().all(|&c| c > 0),
        "both consumers got work: {per_consumer:?}"
    );
    // A lost wake-up would show up as one-second timeouts; each consumer
    // may time out once at the end, waiting while the other finishes.
    assert!(
        timeouts.load(SeqCst) <= 2,
        "{} wait timeouts",
        timeouts.load(SeqCst)
    );
    // The backend only calls dlb_recv on a CQ whose eventfd is readable.
    assert_eq!(hooks.epoll_read_errors(), 0);
    eprintln!(
        "{TOTAL} events, 2 producers -> 2 sleeping consumers {per_consumer:?}, {:?}",
        started.elapsed()
    );
}

#[test]
fn short_send_when_credits_run_out_and_the_caller_keeps_the_rest() {
    let dev = DevDir::new(&["dlb0"]);
    let domain = hw_builder(&dev)
        .ports(2)
        .link(1, 0, 0)
        .cq_depth(8)
        .credits(8)
        .build()
        .expect("domain");
    let mut producer = domain.port(0).expect("port 0");
    let mut consumer = domain.port(1).expect("port 1");
    let events: Vec<Event> = (0..100).map(|i| Event::unordered(0, i)).collect();

    let first = producer.send(&events).expect("send");
    assert!(first > 0 && first < events.len(), "sent {first} of 100");
    assert_eq!(producer.stats().credit_waits, (events.len() - first) as u64);
    assert_eq!(producer.stats().sent, first as u64);
    // A retry without anyone consuming gets nowhere: nothing is dropped.
    assert_eq!(producer.send(&events[first..]).expect("send"), 0);

    let mut got: Vec<u64> = recv_n(&mut consumer, first)
        .iter()
        .map(|e| e.udata)
        .collect();
    let mut done = first;
    while done < events.len() {
        done += producer.send(&events[done..]).expect("send");
        let pending = done - got.len();
        got.extend(recv_n(&mut consumer, pending).iter().map(|e| e.udata));
    }
    got.sort_unstable();
    assert_eq!(got, (0..100).collect::<Vec<u64>>());
    assert_eq!(consumer.stats().in_flight, 0);
}

#[test]
fn directed_events_reach_the_named_port_and_fields_round_trip() {
    let dev = DevDir::new(&["dlb0"]);
    let domain = hw_builder(&dev)
        .ports(3)
        .link(1, 0, 0)
        .build()
        .expect("domain");
    let mut p0 = domain.port(0).expect("port 0");
    let mut p1 = domain.port(1).expect("port 1");
    let mut p2 = domain.port(2).expect("port 2");

    let mut to_p2 = Event::directed(2, 0xd2).with_priority(3);
    to_p2.flow = 9;
    let atomic = Event::atomic(0, 77, 0xa1).with_priority(5);
    let sent = p0
        .send(&[to_p2, Event::directed(1, 0xd1), atomic])
        .expect("send");
    assert_eq!(sent, 3);

    let got2 = recv_n(&mut p2, 1);
    assert_eq!(got2, vec![to_p2]);
    assert_eq!(got2[0].sched, Sched::Directed);
    assert_eq!((got2[0].flow, got2[0].priority), (9, 3));

    // Port 1 gets its directed event and the load-balanced one (its only
    // consumer); one release(2) covers both kinds.
    let mut buf = [Event::default(); 4];
    let mut got1 = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got1.len() < 2 {
        assert!(Instant::now() < deadline);
        let n = p1.recv(&mut buf).expect("recv");
        got1.extend_from_slice(&buf[..n]);
        if n == 0 {
            p1.wait(Some(Duration::from_millis(200))).expect("wait");
        }
    }
    assert_eq!(p1.stats().in_flight, 2);
    assert_eq!(p1.release(5).expect("release"), 2, "only 2 were owed");
    assert_eq!(p1.stats().in_flight, 0);
    got1.sort_by_key(|e| e.udata);
    assert_eq!(got1[0], atomic);
    assert_eq!(got1[1], Event::directed(1, 0xd1));
    assert_eq!(
        p0.recv(&mut buf).expect("recv"),
        0,
        "nothing for the producer"
    );
}

#[test]
fn invalid_events_are_refused_like_the_software_backend() {
    let dev = DevDir::new(&["dlb0"]);
    let domain = hw_builder(&dev).ports(2).build().expect("domain");
    let mut p = domain.port(0).expect("port");
    let batch = [Event::unordered(0, 1), Event::unordered(3, 2)];
    assert_eq!(p.send(&batch).expect("valid prefix"), 1);
    assert!(matches!(
        p.send(&batch[1..]),
        Err(DlbError::InvalidEvent { index: 0, .. })
    ));
    assert!(matches!(
        p.send(&[Event::unordered(0, 1).with_priority(8)]),
        Err(DlbError::InvalidEvent { index: 0, .. })
    ));
    assert!(matches!(
        p.send(&[Event::directed(2, 1)]),
        Err(DlbError::InvalidEvent { index: 0, .. })
    ));
    assert_eq!(p.stats().sent, 1);
}

#[test]
fn ports_are_taken_once_and_undelivered_events_survive_a_new_owner() {
    let dev = DevDir::new(&["dlb0"]);
    let domain = hw_builder(&dev)
        .ports(2)
        .link(1, 0, 0)
        .cq_depth(8)
        .build()
        .expect("domain");
    assert!(matches!(
        domain.port(2),
        Err(DlbError::NoSuchPort { port: 2, ports: 2 })
    ));
    let mut producer = domain.port(0).expect("port 0");
    assert!(matches!(
        domain.port(0),
        Err(DlbError::PortTaken { port: 0 })
    ));

    let events: Vec<Event> = (0..5).map(|i| Event::unordered(0, i)).collect();
    assert_eq!(producer.send(&events).expect("send"), 5);
    let mut consumer = domain.port(1).expect("port 1");
    let mut one = [Event::default(); 1];
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer.recv(&mut one).expect("recv") == 0 {
        assert!(Instant::now() < deadline);
        consumer
            .wait(Some(Duration::from_millis(200)))
            .expect("wait");
    }
    let first = one.to_vec();
    // The backend dequeued what the CQ had; what was not handed out is
    // still in flight for this port.
    let deadline = Instant::now() + Duration::from_secs(10);
    while domain.port_stats(1).expect("stats").in_flight < 4 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(consumer);
    let mut consumer = domain.port(1).expect("port 1 again");
    let rest = recv_n(&mut consumer, 4);
    let mut all: Vec<u64> = first.iter().chain(&rest).map(|e| e.udata).collect();
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3, 4]);
    let stats = domain.port_stats(1).expect("stats");
    assert_eq!((stats.received, stats.released, stats.in_flight), (5, 5, 0));
}

#[test]
fn the_readiness_fd_wakes_an_epoll_sleeper() {
    let dev = DevDir::new(&["dlb0"]);
    let domain = hw_builder(&dev)
        .ports(2)
        .link(1, 0, 0)
        .build()
        .expect("domain");
    let mut producer = domain.port(0).expect("port 0");
    let mut consumer = domain.port(1).expect("port 1");
    let fd = consumer.readiness_fd();
    let readable = |ms| {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: a live array of one pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
    };
    assert!(consumer.prepare_park(), "nothing to receive yet");
    assert!(!readable(0));
    assert_eq!(producer.send(&[Event::unordered(0, 42)]).expect("send"), 1);
    assert!(
        readable(5_000),
        "a delivery makes the readiness fd readable"
    );
    consumer.finish_park();
    let mut buf = [Event::default(); 4];
    assert_eq!(consumer.recv(&mut buf).expect("recv"), 1);
    assert_eq!(buf[0].udata, 42);
    consumer.release(1).expect("release");
    assert!(!readable(0), "receiving everything clears it");
    assert!(consumer.prepare_park());
    consumer.finish_park();
}

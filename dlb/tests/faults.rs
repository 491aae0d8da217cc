//! The software backend under injected faults (feature `fault-injection`):
//! short sends, held-back events and refused ports lose nothing, duplicate
//! nothing, leak no credit and strand no sleeper. Alone in its binary: the
//! fault switch is process-wide.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fulcrum_dlb::fault::{self, FaultConfig};
use fulcrum_dlb::{Backend, DlbError, Domain, Event, Port};
// The fault switch is process-wide: tests that set it run one at a time.
use fulcrum_test_support::serial;

/// Takes a port, retrying transient (injected) refusals.
fn take(domain: &Domain, id: usize) -> Port {
    for _ in 0..64 {
        match domain.port(id) {
            Ok(p) => return p,
            Err(e) if e.is_transient() => continue,
            Err(e) => panic!("port {id}: {e}"),
        }
    }
    panic!("port {id} refused 64 times");
}

const STOP: u64 = u64::MAX;

fn recv_all(port: &mut Port) -> Vec<u64> {
    let mut buf = [Event::default(); 16];
    let n = port.recv(&mut buf).unwrap();
    port.release(n).unwrap();
    buf[..n].iter().map(|e| e.udata).collect()
}

/// A held-back event is really held (no port can receive it yet), and is
/// delivered by the sender's next `recv`, by its park, or by its drop: the
/// three owner transitions that must pull it.
#[test]
fn a_held_event_waits_for_the_senders_next_transition() {
    let _serial = serial();
    let d = Domain::builder()
        .backend(Backend::Software)
        .ignore_env()
        .ports(2)
        .link(0, 0, 0)
        .link(1, 0, 0)
        .credits(8)
        .build()
        .unwrap();
    let mut p0 = d.port(0).unwrap();
    let mut p1 = d.port(1).unwrap();
    let hold_all = FaultConfig {
        delay_per_mille: 1000,
        ..FaultConfig::default()
    };
    for (case, udata) in [("recv", 1u64), ("park", 2), ("drop", 3)] {
        fault::set(hold_all);
        let held = fault::stats().held;
        assert_eq!(p0.send(&[Event::unordered(0, udata)]).unwrap(), 1);
        fault::clear();
        assert_eq!(fault::stats().held, held + 1, "{case}: not held");
        assert_eq!(
            d.credits_available(),
            Some(7),
            "{case}: a held event holds a credit"
        );
        assert!(
            recv_all(&mut p1).is_empty(),
            "{case}: delivered before a pull"
        );
        let mut got = match case {
            "recv" => recv_all(&mut p0),
            "park" => {
                // Pulls first: onto this port (then it must not sleep) or
                // the peer's (then it may).
                let may_sleep = p0.prepare_park();
                p0.finish_park();
                let mine = recv_all(&mut p0);
                assert_eq!(may_sleep, mine.is_empty(), "park with a delivery pending");
                mine
            }
            _ => {
                drop(p0);
                p0 = d.port(0).unwrap();
                recv_all(&mut p0)
            }
        };
        got.extend(recv_all(&mut p1));
        assert_eq!(got, vec![udata], "{case}");
        assert_eq!(d.credits_available(), Some(8), "{case}: credit back");
    }
}

/// Four threads, each owning a port linked to queue 0 (as the runtime's
/// workers do), send 50,000 events each (unordered, atomic, and directed at
/// themselves) while receiving, and sleep on their readiness fd when idle.
/// Every payload arrives exactly once, every credit comes back, and no
/// thread sleeps through a delivery (a lost wake-up would cost a 5 s
/// timeout, and the run takes well under that per thread).
#[test]
fn held_short_and_refused_lose_nothing() {
    let _serial = serial();
    fault::set(FaultConfig {
        short_send_per_mille: 150,
        delay_per_mille: 150,
        delay_us: 5,
        refuse_port_per_mille: 300,
        seed: 42,
    });
    const PORTS: usize = 4;
    const PER: u64 = 50_000;
    const TOTAL: u64 = PER * PORTS as u64;
    const CREDITS: u32 = 64;
    let mut b = Domain::builder()
        .backend(Backend::Software)
        .ignore_env()
        .ports(PORTS)
        .cq_depth(8)
        .credits(CREDITS);
    for p in 0..PORTS {
        b = b.link(p, 0, 0);
    }
    let d = b.build().unwrap();
    let seen: Arc<Vec<AtomicU64>> =
        Arc::new((0..TOTAL.div_ceil(64)).map(|_| AtomicU64::new(0)).collect());
    let consumed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..PORTS)
        .map(|id| {
            let mut port = take(&d, id);
            let (seen, consumed) = (seen.clone(), consumed.clone());
            thread::spawn(move || {
                let mut buf = [Event::default(); 16];
                let mut next = id as u64 * PER;
                let end = next + PER;
                let mut longest_wait = Duration::ZERO;
                let mut stops_sent = false;
                loop {
                    // Send a few, keep what comes back short.
                    if next < end {
                        let evs: Vec<Event> = (next..(next + 8).min(end))
                            .map(|i| match i % 5 {
                                0 => Event::atomic(0, (i % 97) as u16, i),
                                1 => Event::directed(id as u8, i),
                                _ => Event::unordered(0, i),
                            })
                            .collect();
                        next += port.send(&evs).unwrap() as u64;
                    }
                    let n = port.recv(&mut buf).unwrap();
                    let mut stop = false;
                    for ev in &buf[..n] {
                        if ev.udata == STOP {
                            stop = true;
                            continue;
                        }
                        let (w, bit) = ((ev.udata / 64) as usize, 1u64 << (ev.udata % 64));
                        let before = seen[w].fetch_or(bit, SeqCst);
                        assert_eq!(before & bit, 0, "payload {} delivered twice", ev.udata);
                        if consumed.fetch_add(1, SeqCst) + 1 == TOTAL && !stops_sent {
                            stops_sent = true;
                            let stops: Vec<Event> =
                                (0..PORTS).map(|p| Event::directed(p as u8, STOP)).collect();
                            let mut at = 0;
                            while at < stops.len() {
                                at += port.send(&stops[at..]).unwrap();
                            }
                        }
                    }
                    port.release(n).unwrap();
                    if stop {
                        return (port, longest_wait);
                    }
                    if n == 0 && next == end {
                        let t = Instant::now();
                        port.wait(Some(Duration::from_secs(5))).unwrap();
                        longest_wait = longest_wait.max(t.elapsed());
                    }
                }
            })
        })
        .collect();
    let mut ports = Vec::new();
    let mut longest = Duration::ZERO;
    for t in threads {
        let (p, w) = t.join().unwrap();
        ports.push(p);
        longest = longest.max(w);
    }
    let elapsed = start.elapsed();
    let stats = fault::stats();
    fault::clear();
    eprintln!("{TOTAL} events in {elapsed:?}; longest idle wait {longest:?}; injected {stats:?}");
    assert_eq!(consumed.load(SeqCst), TOTAL);
    for (i, w) in seen.iter().enumerate() {
        assert_eq!(w.load(SeqCst), u64::MAX, "payload word {i} incomplete");
    }
    drop(ports);
    assert_eq!(d.credits_available(), Some(CREDITS), "credits conserved");
    for id in 0..PORTS {
        assert_eq!(d.port_stats(id).unwrap().in_flight, 0, "port {id}");
    }
    assert!(
        longest < Duration::from_secs(4),
        "a port slept {longest:?}: lost wake-up"
    );
    assert!(stats.short_sends > 0, "{stats:?}");
    assert!(stats.held > 0, "{stats:?}");
    assert!(stats.spun > 0, "{stats:?}");
    // Refusals: whether or not the four requests above drew one, a refusal
    // is a transient error with a clear message.
    assert!(refused_once(&d));
}

/// Asks for port 0 with every request refused (the domain's ports are all
/// free again), and checks the error.
fn refused_once(d: &Domain) -> bool {
    fault::set(FaultConfig {
        refuse_port_per_mille: 1000,
        ..FaultConfig::default()
    });
    let r = d.port(0);
    fault::clear();
    match r {
        Err(e @ DlbError::PortRefused { .. }) => {
            assert!(e.is_transient());
            assert!(e.to_string().contains("refused by fault injection"), "{e}");
            let io: std::io::Error = e.into();
            assert_eq!(io.kind(), std::io::ErrorKind::Interrupted);
            true
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

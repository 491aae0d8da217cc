//! Load balancing through the DLB queue, in one process.
//!
//! A producer thread sends events (think: accepted connections or ready
//! tasks) to one unordered queue; `--workers` consumer threads sleep on their
//! port's readiness fd and handle what the arbiter gives them. Worker 0 is
//! slow: each event costs it 2 ms instead of 50 µs. A hash or round-robin
//! would still give it 1/N of the work; the arbiter sees its CQ filling and
//! sends it far less.
//!
//! ```text
//! cargo run --release --example dlb_balance -- [--workers N] [--events N] [--backend auto|soft|hw|hw:N]
//! ```

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fulcrum::dlb::{Backend, Domain, Event};

const STOP: u64 = u64::MAX;

struct Args {
    workers: usize,
    events: u64,
    backend: Backend,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        workers: 4,
        events: 20_000,
        backend: Backend::Auto,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--workers" => {
                args.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?;
                if !(2..=63).contains(&args.workers) {
                    return Err("--workers must be from 2 to 63".into());
                }
            }
            "--events" => {
                args.events = value()?.parse().map_err(|e| format!("--events: {e}"))?;
            }
            "--backend" => {
                args.backend = value()?.parse().map_err(|e| format!("--backend: {e}"))?;
            }
            "-h" | "--help" => {
                return Err(
                    "usage: dlb_balance [--workers N] [--events N] [--backend auto|soft|hw|hw:N]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("dlb_balance: {msg}");
            std::process::exit(2);
        }
    };
    // Port 0 produces; ports 1..=workers consume queue 0.
    let mut builder = Domain::builder()
        .backend(args.backend)
        .ports(args.workers + 1)
        .credits(1024);
    for w in 1..=args.workers {
        builder = builder.link(w, 0, 0);
    }
    let domain = builder.build()?;
    println!(
        "DLB backend: {}; {} workers, CQ depth {}, {} credits",
        domain.backend(),
        args.workers,
        domain.cq_depth(),
        domain.credits()
    );

    let handled = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 1..=args.workers {
        let mut port = domain.port(w)?;
        let handled = handled.clone();
        let cost = if w == 1 {
            Duration::from_millis(2)
        } else {
            Duration::from_micros(50)
        };
        workers.push(thread::spawn(
            move || -> std::io::Result<(u64, Duration)> {
                let mut buf = [Event::default(); 8];
                let (mut mine, mut busy) = (0u64, Duration::ZERO);
                loop {
                    let n = port.recv(&mut buf)?;
                    if n == 0 {
                        port.wait(None)?;
                        continue;
                    }
                    let mut stop = false;
                    for ev in &buf[..n] {
                        if ev.udata == STOP {
                            stop = true;
                            continue;
                        }
                        let t = Instant::now();
                        // Stand-in for serving a request: spin for the cost.
                        while t.elapsed() < cost {
                            std::hint::spin_loop();
                        }
                        busy += t.elapsed();
                        mine += 1;
                        handled.fetch_add(1, Relaxed);
                    }
                    port.release(n)?;
                    if stop {
                        return Ok((mine, busy));
                    }
                }
            },
        ));
    }

    let mut tx = domain.port(0)?;
    let started = Instant::now();
    let mut next = 0u64;
    while next < args.events {
        let batch: Vec<Event> = (next..(next + 16).min(args.events))
            .map(|i| Event::unordered(0, i))
            .collect();
        let sent = tx.send(&batch)? as u64;
        next += sent;
        if sent == 0 {
            // Credits exhausted: every worker is saturated. Back off.
            thread::sleep(Duration::from_micros(200));
        }
    }
    while handled.load(Relaxed) < args.events {
        thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    let stops: Vec<Event> = (1..=args.workers)
        .map(|w| Event::directed(w as u8, STOP))
        .collect();
    let mut sent = 0;
    while sent < stops.len() {
        sent += tx.send(&stops[sent..])?;
    }

    let fair = args.events as f64 / args.workers as f64;
    println!(
        "{:>8} {:>10} {:>10} {:>10}",
        "worker", "events", "share", "busy"
    );
    for (i, w) in workers.into_iter().enumerate() {
        let (mine, busy) = w
            .join()
            .map_err(|_| std::io::Error::other("worker panicked"))??;
        let note = if i == 0 {
            "  <- slow (2 ms per event)"
        } else {
            ""
        };
        println!(
            "{:>8} {:>10} {:>9.1}% {:>9.0?}{note}",
            i,
            mine,
            100.0 * mine as f64 / args.events as f64,
            busy
        );
    }
    println!(
        "{} events in {elapsed:.2?}; a hash would give each worker {:.0} ({:.1}%).",
        args.events,
        fair,
        100.0 / args.workers as f64
    );
    Ok(())
}

//! A TCP echo server on Fulcrum's balanced serving.
//!
//! Every connection gets its bytes back until it closes its write side. The
//! connections are spread over the workers by `--balance` (see
//! `fulcrum::net::Balance`): `dlb` (the DLB arbiter picks the worker),
//! `exact` (the worker with the fewest open connections), `reuseport` (one
//! `SO_REUSEPORT` listener per worker, the kernel hashes) or `race` (every
//! worker accepts on one socket). On ctrl-c or SIGTERM it stops and prints
//! how many connections each worker handled.
//!
//! ```text
//! cargo run --release --example echo -- [--balance dlb|exact|reuseport|race]
//!     [--workers N] [--addr HOST:PORT] [--scheduler dlb|stealing]
//! ```
//!
//! Defaults: `--balance dlb --workers 4 --addr 127.0.0.1:7000
//! --scheduler dlb`. With port 0 the system picks one; the first line it
//! prints, `echo: listening on ADDR`, says which. Try it with
//! `nc 127.0.0.1 7000`, then press ctrl-c in the server's terminal:
//!
//! ```text
//! echo: listening on 127.0.0.1:7000 (balance exact, 4 workers, scheduler dlb)
//! ^Cecho: stopped on SIGINT; connections per worker [3, 3, 2, 2] (10 in all)
//! ```
//!
//! Bad arguments print a message and exit with code 2.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::task::Poll;

use fulcrum::io::AsyncWriteExt;
use fulcrum::net::{Balance, Server, TcpStream};
use fulcrum::runtime::{Builder, Scheduler};
use fulcrum::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: echo [--balance dlb|exact|reuseport|race] [--workers N] \
                     [--addr HOST:PORT] [--scheduler dlb|stealing]";

struct Args {
    balance: Balance,
    /// The mode as given, for the start-up line.
    balance_name: String,
    workers: usize,
    addr: SocketAddr,
    scheduler: Scheduler,
    scheduler_name: &'static str,
}

/// Parses the command line (without the program name).
fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        balance: Balance::Dlb,
        balance_name: "dlb".into(),
        workers: 4,
        addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
        scheduler: Scheduler::Dlb,
        scheduler_name: "dlb",
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--balance" => {
                let v = value()?;
                args.balance = v.parse().map_err(|e| format!("--balance: {e}"))?;
                args.balance_name = v;
            }
            "--workers" => {
                args.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?;
                if !(1..=63).contains(&args.workers) {
                    return Err("--workers must be from 1 to 63".into());
                }
            }
            "--addr" => {
                let v = value()?;
                args.addr = v.parse().map_err(|e| {
                    format!("--addr {v:?}: {e} (expected HOST:PORT, e.g. 127.0.0.1:7000)")
                })?;
            }
            "--scheduler" => {
                (args.scheduler, args.scheduler_name) = match value()?.as_str() {
                    "dlb" => (Scheduler::Dlb, "dlb"),
                    "stealing" => (Scheduler::WorkStealing, "stealing"),
                    other => {
                        return Err(format!(
                            "--scheduler: unknown scheduler {other:?}; expected dlb or stealing"
                        ))
                    }
                };
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(io::stderr)
        .init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("echo: {msg}");
            return ExitCode::from(2);
        }
    };
    let rt = match Builder::new_multi_thread()
        .worker_threads(args.workers)
        .scheduler(args.scheduler)
        .thread_name("echo-worker")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echo: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Echoes one connection until the peer closes its write side.
async fn echo(mut stream: TcpStream, peer: SocketAddr) {
    let (mut rd, mut wr) = stream.split();
    match fulcrum::io::copy(&mut rd, &mut wr).await {
        Ok(_) => {
            if let Err(e) = wr.shutdown().await {
                tracing::debug!(%peer, "shutting down: {e}");
            }
        }
        Err(e) => tracing::debug!(%peer, "echo: {e}"),
    }
}

async fn run(args: Args) -> io::Result<()> {
    // Install both handlers before saying we listen, so that a signal sent
    // right after that line stops the server instead of killing it.
    // `ctrl_c()` installs its handler when first polled: poll it once here.
    let mut term = signal(SignalKind::terminate())?;
    let ctrl_c = fulcrum::signal::ctrl_c();
    fulcrum::pin!(ctrl_c);
    let early = std::future::poll_fn(|cx| Poll::Ready(ctrl_c.as_mut().poll(cx))).await;
    if let Poll::Ready(r) = early {
        r?;
    }

    let serving = Server::bind(args.addr)
        .balance(args.balance)
        .serve(echo)
        .await?;
    println!(
        "echo: listening on {} (balance {}, {} workers, scheduler {})",
        serving.local_addr(),
        args.balance_name,
        args.workers,
        args.scheduler_name,
    );

    let why = fulcrum::select! {
        r = &mut ctrl_c => r.map(|()| "SIGINT")?,
        _ = term.recv() => "SIGTERM",
    };
    serving.stop();
    let per_worker = serving.handled_per_worker();
    println!(
        "echo: stopped on {why}; connections per worker {per_worker:?} ({} in all)",
        per_worker.iter().sum::<u64>()
    );
    Ok(())
}

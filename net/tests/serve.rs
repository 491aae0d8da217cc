//! Balanced serving: every mode serves every connection, and `Dlb` and
//! `Exact` spread 400 long-lived connections over 4 workers within ±25% of
//! the mean (`Reuseport` and `AcceptRace` are reported, not asserted).

use std::future::Future;
use std::time::Duration;

use fulcrum_dlb::Backend;
use fulcrum_net::{Balance, Server, TcpStream};
use fulcrum_runtime::{spawn, Builder, Scheduler};
use fulcrum_test_support::raise_fd_limit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::echo_in_random_writes;

const CONNS: usize = 400;
const WORKERS: usize = 4;

fn spread(mode: Balance) -> Vec<u64> {
    let rt = Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .dlb_backend(Backend::Software)
        .build()
        .unwrap();
    rt.block_on(async move {
        let serving = Server::bind("127.0.0.1:0".parse().unwrap())
            .balance(mode)
            .serve(|mut stream: TcpStream, _peer| async move {
                let mut buf = [0u8; 1];
                // Each connection does a little work per request, then
                // stays open until the client closes it.
                while let Ok(1) = stream.read(&mut buf).await {
                    let t = std::time::Instant::now();
                    while t.elapsed() < Duration::from_micros(50) {
                        std::hint::spin_loop();
                    }
                    if stream.write_all(b"y").await.is_err() {
                        break;
                    }
                }
            })
            .await
            .unwrap();
        let addr = serving.local_addr();
        let mut open = Vec::with_capacity(CONNS);
        for _ in 0..CONNS {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"y");
            open.push(c);
        }
        let handled = serving.handled_per_worker();
        assert_eq!(
            handled.iter().sum::<u64>(),
            CONNS as u64,
            "{mode:?}: {handled:?}"
        );
        assert_eq!(serving.open_per_worker().iter().sum::<u64>(), CONNS as u64);
        // A second round of requests on every connection still works.
        for c in open.iter_mut() {
            c.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await.unwrap();
        }
        drop(open);
        // Closed connections leave the open counts.
        for _ in 0..500 {
            if serving.open_per_worker().iter().sum::<u64>() == 0 {
                break;
            }
            fulcrum_runtime::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(serving.open_per_worker().iter().sum::<u64>(), 0, "{mode:?}");
        handled
    })
}

fn within_quarter_of_mean(counts: &[u64]) -> bool {
    let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
    counts
        .iter()
        .all(|&c| (c as f64 - mean).abs() <= 0.25 * mean)
}

#[test]
fn dlb_spreads_connections_evenly() {
    let counts = spread(Balance::Dlb);
    eprintln!("dlb: connections per worker {counts:?}");
    assert!(within_quarter_of_mean(&counts), "dlb: {counts:?}");
}

#[test]
fn exact_spreads_connections_evenly() {
    let counts = spread(Balance::Exact);
    eprintln!("exact: connections per worker {counts:?}");
    assert!(within_quarter_of_mean(&counts), "exact: {counts:?}");
}

#[test]
fn reuseport_and_accept_race_serve_everything() {
    for mode in [Balance::Reuseport, Balance::AcceptRace] {
        let counts = spread(mode);
        eprintln!("{mode:?}: connections per worker {counts:?} (reported, not asserted)");
    }
}

#[test]
fn balance_modes_parse() {
    assert_eq!("dlb".parse::<Balance>().unwrap(), Balance::Dlb);
    assert_eq!("exact".parse::<Balance>().unwrap(), Balance::Exact);
    assert_eq!("reuseport".parse::<Balance>().unwrap(), Balance::Reuseport);
    assert_eq!("race".parse::<Balance>().unwrap(), Balance::AcceptRace);
    let e = "hash".parse::<Balance>().unwrap_err();
    assert!(e
        .to_string()
        .contains("expected dlb, exact, reuseport or race"));
}

#[test]
fn serve_outside_a_runtime_is_an_error() {
    // Polled on a thread with no runtime: `serve` fails at once, saying so.
    let fut = Server::bind("127.0.0.1:0".parse().unwrap()).serve(|_s, _p| async {});
    let mut fut = std::pin::pin!(fut);
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(e)) => assert!(
            e.to_string().contains("runtime"),
            "the error should say there is no runtime: {e}"
        ),
        std::task::Poll::Ready(Ok(_)) => panic!("serve succeeded outside a runtime"),
        std::task::Poll::Pending => panic!("serve waited outside a runtime instead of failing"),
    }
    // Inside a runtime it works even on the current-thread scheduler.
    let rt = Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let s = Server::bind("127.0.0.1:0".parse().unwrap())
            .serve(|_s, _p| async {})
            .await
            .unwrap();
        let c = spawn(async move { TcpStream::connect(s.local_addr()).await.map(drop) });
        c.await.unwrap().unwrap();
    });
}

/// The plain tokio pattern, `loop { accept; spawn(handle) }`, balances in
/// the DLB scheduler too: each spawn goes through the DLB queue while other
/// workers are idle, and the socket registers where the task lands.
#[test]
fn plain_accept_and_spawn_balances() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    let rt = Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .dlb_backend(Backend::Software)
        .build()
        .unwrap();
    let per_worker: Arc<Vec<AtomicU64>> =
        Arc::new((0..WORKERS).map(|_| AtomicU64::new(0)).collect());
    let counts = per_worker.clone();
    let counts = rt.block_on(async move {
        let listener = fulcrum_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts2 = counts.clone();
        let acceptor = spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let counts = counts2.clone();
                spawn(async move {
                    let w = fulcrum_runtime::Handle::current().current_worker().unwrap();
                    counts[w].fetch_add(1, Relaxed);
                    let mut buf = [0u8; 1];
                    while let Ok(1) = s.read(&mut buf).await {
                        let t = std::time::Instant::now();
                        while t.elapsed() < Duration::from_micros(50) {
                            std::hint::spin_loop();
                        }
                        if s.write_all(b"y").await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let mut open = Vec::new();
        for _ in 0..CONNS {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await.unwrap();
            open.push(c);
        }
        acceptor.abort();
        counts.iter().map(|c| c.load(Relaxed)).collect::<Vec<u64>>()
    });
    eprintln!("accept + spawn: connections per worker {counts:?}");
    assert_eq!(counts.iter().sum::<u64>(), CONNS as u64);
    assert!(
        within_quarter_of_mean(&counts),
        "accept + spawn: {counts:?}"
    );
    drop(per_worker);
}

/// Open connections per worker show in the runtime's metrics.
#[test]
fn open_connections_show_in_the_runtime_metrics() {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .dlb_backend(Backend::Software)
        .build()
        .unwrap();
    rt.block_on(async {
        let serving = Server::bind("127.0.0.1:0".parse().unwrap())
            .serve(|mut s: TcpStream, _| async move {
                let mut buf = [0u8; 1];
                let _ = s.read(&mut buf).await;
            })
            .await
            .unwrap();
        let mut clients = Vec::new();
        for _ in 0..10 {
            clients.push(TcpStream::connect(serving.local_addr()).await.unwrap());
        }
        let open = || -> u64 {
            fulcrum_runtime::Handle::current()
                .metrics()
                .workers
                .iter()
                .map(|w| w.open_connections)
                .sum()
        };
        for _ in 0..500 {
            if open() == 10 {
                break;
            }
            fulcrum_runtime::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(open(), 10);
        let per_worker: Vec<u64> = fulcrum_runtime::Handle::current()
            .metrics()
            .workers
            .iter()
            .map(|w| w.open_connections)
            .collect();
        assert_eq!(per_worker, serving.open_per_worker());
        drop(clients);
        for _ in 0..500 {
            if open() == 0 {
                break;
            }
            fulcrum_runtime::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(open(), 0);
    });
}

/// 500 concurrent connections each send 256 KiB in random-sized writes and
/// get every byte back, in every balance mode on every scheduler.
#[test]
fn echo_500_connections_of_256k_in_every_mode_and_scheduler() {
    const N: usize = 500;
    const LEN: usize = 256 * 1024;
    // Both ends of 500 connections are in this process.
    let want = 2 * N as u64 + 256;
    let soft = raise_fd_limit(want);
    assert!(
        soft >= want,
        "this test needs {want} file descriptors; the hard limit is {soft}"
    );
    let schedulers = [
        ("dlb", Some(Scheduler::Dlb)),
        ("stealing", Some(Scheduler::WorkStealing)),
        ("current", None),
    ];
    for (sname, scheduler) in schedulers {
        let rt = match scheduler {
            Some(s) => Builder::new_multi_thread()
                .worker_threads(2)
                .scheduler(s)
                .dlb_backend(Backend::Software)
                .build()
                .unwrap(),
            None => Builder::new_current_thread().build().unwrap(),
        };
        for mode in [
            Balance::Dlb,
            Balance::Exact,
            Balance::Reuseport,
            Balance::AcceptRace,
        ] {
            rt.block_on(async {
                let serving = Server::bind("127.0.0.1:0".parse().unwrap())
                    .balance(mode)
                    .serve(|mut s: TcpStream, _| async move {
                        let (mut r, mut w) = s.split();
                        if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                            let _ = w.shutdown().await;
                        }
                    })
                    .await
                    .unwrap();
                let addr = serving.local_addr();
                let mut clients = Vec::with_capacity(N);
                for i in 0..N {
                    clients.push(spawn(async move {
                        let s = TcpStream::connect(addr).await.unwrap();
                        let (r, w) = s.into_split();
                        let data: Vec<u8> = (0..LEN).map(|j| (j * 31 + i) as u8).collect();
                        let seed = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        let back = echo_in_random_writes(r, w, data.clone(), seed, 16_384).await;
                        assert!(back == data, "connection {i}: bytes differ");
                    }));
                }
                for c in clients {
                    c.await.unwrap();
                }
                let handled: u64 = serving.handled_per_worker().iter().sum();
                assert_eq!(handled, N as u64, "{sname} {mode:?}");
            });
        }
    }
}

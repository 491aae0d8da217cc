//! Balanced serving: every mode serves every connection, and `Dlb` and
//! `Exact` spread 400 long-lived connections over 4 workers within ±25% of
//! the mean (`Reuseport` and `AcceptRace` are reported, not asserted).

use std::time::Duration;

use fulcrum_dlb::Backend;
use fulcrum_net::{Balance, Server, TcpStream};
use fulcrum_runtime::{spawn, Builder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let rt = Builder::new_current_thread().build().unwrap();
    // Inside a runtime it works even on the current-thread scheduler.
    rt.block_on(async {
        let s = Server::bind("127.0.0.1:0".parse().unwrap())
            .serve(|_s, _p| async {})
            .await
            .unwrap();
        let c = spawn(async move { TcpStream::connect(s.local_addr()).await.map(drop) });
        c.await.unwrap().unwrap();
    });
}

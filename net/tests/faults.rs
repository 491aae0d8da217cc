//! Balanced serving under injected DLB faults (feature
//! `dlb-fault-injection`): with sends cut short, handoffs held back and
//! port requests refused, every connection is served and every byte comes
//! back, in the two modes that hand connections over through the DLB queue.
//! Alone in its binary: the fault switch is process-wide.

use std::time::Instant;

use fulcrum_dlb::fault::{self, FaultConfig};
use fulcrum_dlb::Backend;
use fulcrum_net::{Balance, Server, TcpStream};
use fulcrum_runtime::{spawn, Builder};
use fulcrum_test_support::raise_fd_limit;
use tokio::io::AsyncWriteExt;

mod common;
use common::echo_in_random_writes;

/// 500 concurrent connections, each sending 64 KiB in random-sized writes,
/// with `Balance::Dlb` and `Balance::Exact` on a 4-worker DLB runtime.
#[test]
fn every_connection_served_and_every_byte_back_under_faults() {
    const N: usize = 500;
    const LEN: usize = 64 * 1024;
    let want = 2 * N as u64 + 256;
    let soft = raise_fd_limit(want);
    assert!(
        soft >= want,
        "this test needs {want} file descriptors; the hard limit is {soft}"
    );
    fault::set(FaultConfig {
        short_send_per_mille: 100,
        delay_per_mille: 100,
        delay_us: 20,
        refuse_port_per_mille: 300,
        seed: 0x0e7,
    });
    let rt = Builder::new_multi_thread()
        .worker_threads(4)
        .dlb_backend(Backend::Software)
        .build()
        .expect("build retries refused ports");
    for mode in [Balance::Dlb, Balance::Exact] {
        let start = Instant::now();
        let before = rt.handle().metrics();
        let handled = rt.block_on(async {
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
            let clients: Vec<_> = (0..N)
                .map(|i| {
                    spawn(async move {
                        let s = TcpStream::connect(addr).await.unwrap();
                        let (r, w) = s.into_split();
                        let data: Vec<u8> = (0..LEN).map(|j| (j * 31 + i) as u8).collect();
                        let seed = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        let back = echo_in_random_writes(r, w, data.clone(), seed, 8_192).await;
                        assert!(back == data, "{mode:?} connection {i}: bytes differ");
                    })
                })
                .collect();
            for c in clients {
                c.await.unwrap();
            }
            serving.handled_per_worker()
        });
        let m = rt.handle().metrics();
        let fallbacks: u64 = m
            .workers
            .iter()
            .zip(&before.workers)
            .map(|(a, b)| a.fallbacks - b.fallbacks)
            .sum();
        let remote = m.remote_fallbacks - before.remote_fallbacks;
        eprintln!(
            "{mode:?}: {N} connections x {LEN} bytes in {:?}; per worker {handled:?}; \
             fallbacks {fallbacks}, remote fallbacks {remote}; faults so far {:?}",
            start.elapsed(),
            fault::stats()
        );
        assert_eq!(handled.iter().sum::<u64>(), N as u64, "{mode:?}");
        assert!(fallbacks > 0, "{mode:?}: no worker fallback: {m:?}");
        assert!(remote > 0, "{mode:?}: no remote fallback: {m:?}");
    }
    let stats = fault::stats();
    assert!(
        stats.short_sends > 0 && stats.held > 0 && stats.spun > 0,
        "{stats:?}"
    );
    drop(rt);
    fault::clear();
}

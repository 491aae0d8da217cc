//! Nothing leaks at shutdown: a runtime serving connections (with requests
//! in flight, connections just accepted and handed to another worker, and
//! connections in the accept queue) is shut down 50 times, and the
//! process's open file descriptors return to their baseline each time.
//! Alone in its binary: it counts every fd of the process.

use std::io::{Read, Write};
use std::time::Duration;

use fulcrum_dlb::Backend;
use fulcrum_net::{Balance, Server, TcpStream};
use fulcrum_runtime::{Builder, Scheduler};
use fulcrum_test_support::open_fds;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn fifty_start_stop_cycles_with_connections_in_flight_leak_no_fd() {
    const CYCLES: usize = 50;
    const CLIENTS: usize = 40;
    let modes = [
        Balance::Dlb,
        Balance::Exact,
        Balance::Reuseport,
        Balance::AcceptRace,
    ];
    // Warm up once: lazily created process-wide state (the tracing
    // dispatcher, the resolver) must not count as a leak.
    let baseline = {
        let rt = Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        drop(rt);
        open_fds()
    };
    for cycle in 0..CYCLES {
        let scheduler = if cycle % 2 == 0 {
            Scheduler::Dlb
        } else {
            Scheduler::WorkStealing
        };
        let rt = Builder::new_multi_thread()
            .worker_threads(4)
            .scheduler(scheduler)
            .dlb_backend(Backend::Software)
            .build()
            .unwrap();
        let mode = modes[cycle % modes.len()];
        let serving = rt.block_on(async {
            Server::bind("127.0.0.1:0".parse().unwrap())
                .balance(mode)
                .serve(|mut s: TcpStream, _| async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                // A slow request: still in flight at shutdown.
                                fulcrum_runtime::time::sleep(Duration::from_millis(5)).await;
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                })
                .await
                .unwrap()
        });
        let addr = serving.local_addr();
        // Plain blocking clients: connected (some still in the accept
        // queue), each with a request outstanding.
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"ping").unwrap();
            clients.push(c);
        }
        // Some answers, so some connections are well established.
        let mut b = [0u8; 4];
        clients[0]
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        clients[0].read_exact(&mut b).unwrap();
        drop(serving);
        drop(rt);
        // The server side of every connection was closed: each client
        // reads its echo or EOF, never hangs.
        for c in &mut clients {
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut rest = Vec::new();
            let r = c.read_to_end(&mut rest);
            assert!(
                r.is_ok()
                    || r.as_ref()
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
                "cycle {cycle}: {r:?}"
            );
        }
        drop(clients);
        let now = open_fds();
        assert_eq!(
            now, baseline,
            "cycle {cycle} ({mode:?}, {scheduler:?}): {now} fds open, {baseline} before"
        );
    }
}

//! The smallest DLB queue a runtime accepts: as many credits as DLB ports
//! (workers + 1) and CQs of the minimum depth. Most handoffs then find the
//! queue full and fall back (locally on a worker, to the overflow queue
//! from a remote thread); nothing may be lost. Also: the builder refuses
//! credit pools and CQ depths out of range, with clear errors.

use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fulcrum_dlb::{Backend, MAX_CREDITS, MIN_CQ_DEPTH};
use fulcrum_net::{Balance, Server, TcpStream};
use fulcrum_runtime::{spawn, yield_now, Builder, Runtime, Scheduler};
use fulcrum_test_support::raise_fd_limit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WORKERS: usize = 4;

fn tiny(credits: u32, cq_depth: u32) -> std::io::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .dlb_backend(Backend::Software)
        .dlb_credits(credits)
        .dlb_cq_depth(cq_depth)
        .build()
}

#[test]
fn credit_pool_and_cq_depth_out_of_range_are_clear_errors() {
    let ports = WORKERS as u32 + 1;
    let cases = [
        (
            0,
            8,
            "dlb_credits(0): a runtime with 4 workers needs 5 to 65536 credits",
        ),
        (
            ports - 1,
            8,
            "dlb_credits(4): a runtime with 4 workers needs 5",
        ),
        (MAX_CREDITS + 1, 8, "dlb_credits(65537)"),
        (
            ports,
            4,
            "dlb_cq_depth(4): the CQ depth must be a power of two from 8 to 1024",
        ),
        (ports, 12, "dlb_cq_depth(12)"),
        (ports, 2048, "dlb_cq_depth(2048)"),
    ];
    for (credits, depth, want) in cases {
        let err = tiny(credits, depth).expect_err(want);
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{want}");
        assert!(
            err.to_string().contains(want),
            "{err} should contain {want:?}"
        );
    }
    // The extremes that are accepted, and the knobs are ignored by the
    // work-stealing scheduler, which has no DLB queue.
    drop(tiny(ports, MIN_CQ_DEPTH).unwrap());
    drop(tiny(MAX_CREDITS, 1024).unwrap());
    let stealing = Builder::new_multi_thread()
        .worker_threads(2)
        .scheduler(Scheduler::WorkStealing)
        .dlb_backend(Backend::Software)
        .dlb_credits(3)
        .dlb_cq_depth(8)
        .build()
        .unwrap();
    assert_eq!(
        stealing.block_on(async { spawn(async { 7 }).await.unwrap() }),
        7
    );
}

/// 100,000 tasks (50,000 spawned by 4 remote threads, 50,000 by fan-out
/// tasks on the workers, half of them yielding once) while 2,000 echo
/// connections (4 waves of 500 concurrent, 32 KiB each, `Balance::Dlb`)
/// are served, on 5 credits and CQs of depth 8: every task runs exactly
/// once, every byte comes back, and both fallback counters moved.
#[test]
fn smallest_pool_loses_nothing_under_2000_connections_and_100k_tasks() {
    const CONNS: usize = 2_000;
    const WAVE: usize = 500;
    const LEN: usize = 32 * 1024;
    const REMOTE_THREADS: usize = 4;
    const PER_THREAD: usize = 12_500;
    const REMOTE: usize = REMOTE_THREADS * PER_THREAD;
    const FANOUTS: usize = 50;
    const PER_FANOUT: usize = 1_000;
    const TOTAL: usize = REMOTE + FANOUTS * PER_FANOUT;
    let want = 2 * WAVE as u64 + 256;
    let soft = raise_fd_limit(want);
    assert!(
        soft >= want,
        "this test needs {want} file descriptors; the hard limit is {soft}"
    );
    let rt = tiny(WORKERS as u32 + 1, MIN_CQ_DEPTH).unwrap();
    let ran: Arc<Vec<AtomicU8>> = Arc::new((0..TOTAL).map(|_| AtomicU8::new(0)).collect());
    let task = |ran: Arc<Vec<AtomicU8>>, i: usize| async move {
        if i % 2 == 0 {
            yield_now().await;
        }
        ran[i].fetch_add(1, SeqCst);
        i as u64 * 3 + 1
    };
    let start = Instant::now();
    let handled = thread::scope(|s| {
        for t in 0..REMOTE_THREADS {
            let (handle, ran) = (rt.handle().clone(), ran.clone());
            s.spawn(move || {
                let joins: Vec<_> = (t * PER_THREAD..(t + 1) * PER_THREAD)
                    .map(|i| (i, handle.spawn(task(ran.clone(), i))))
                    .collect();
                for (i, j) in joins {
                    assert_eq!(block_on(j).unwrap(), i as u64 * 3 + 1);
                }
            });
        }
        rt.block_on(async {
            // Fan-outs: each spawns 1,000 tasks in one poll while other
            // workers idle, so that the handoffs at the end of that poll
            // overrun 4 CQs of 8 and 5 credits.
            let fanouts: Vec<_> = (0..FANOUTS)
                .map(|f| {
                    let ran = ran.clone();
                    spawn(async move {
                        let base = REMOTE + f * PER_FANOUT;
                        let joins: Vec<_> = (base..base + PER_FANOUT)
                            .map(|i| (i, spawn(task(ran.clone(), i))))
                            .collect();
                        for (i, j) in joins {
                            assert_eq!(j.await.unwrap(), i as u64 * 3 + 1);
                        }
                    })
                })
                .collect();
            let serving = Server::bind("127.0.0.1:0".parse().unwrap())
                .balance(Balance::Dlb)
                .serve(|mut s: TcpStream, _| async move {
                    let (mut r, mut w) = s.split();
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        let _ = w.shutdown().await;
                    }
                })
                .await
                .unwrap();
            let addr = serving.local_addr();
            for wave in 0..CONNS / WAVE {
                let clients: Vec<_> = (wave * WAVE..(wave + 1) * WAVE)
                    .map(|i| spawn(echo_client(addr, i, LEN)))
                    .collect();
                for c in clients {
                    c.await.unwrap();
                }
            }
            for f in fanouts {
                f.await.unwrap();
            }
            serving.handled_per_worker()
        })
    });
    let elapsed = start.elapsed();
    for (i, r) in ran.iter().enumerate() {
        assert_eq!(r.load(SeqCst), 1, "task {i} ran {} times", r.load(SeqCst));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.handle().metrics().alive_tasks > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    let m = rt.handle().metrics();
    let fallbacks: u64 = m.workers.iter().map(|w| w.fallbacks).sum();
    let sent: u64 = m.workers.iter().map(|w| w.dlb_sent).sum();
    eprintln!(
        "5 credits, CQ depth {MIN_CQ_DEPTH}: {TOTAL} tasks and {CONNS} connections x {LEN} \
         bytes in {elapsed:?}; connections per worker {handled:?}; worker dlb sends {sent}, \
         fallbacks {fallbacks}, remote fallbacks {}",
        m.remote_fallbacks
    );
    assert_eq!(handled.iter().sum::<u64>(), CONNS as u64);
    assert_eq!(m.alive_tasks, 0, "tasks left alive: {m:?}");
    assert!(fallbacks > 0, "no worker fallback: {m:?}");
    assert!(m.remote_fallbacks > 0, "no remote fallback: {m:?}");
}

/// Connects, sends `len` bytes in 4 KiB writes from a second task, and
/// checks that every byte comes back.
async fn echo_client(addr: std::net::SocketAddr, i: usize, len: usize) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let data: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
    let expect = data.clone();
    let writer = spawn(async move {
        for chunk in data.chunks(4096) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(len);
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert!(back == expect, "connection {i}: bytes differ");
}

/// Polls a future to completion on this thread (no runtime of its own).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

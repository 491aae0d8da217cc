//! Fulcrum under load: handlers that panic at random while hundreds of
//! connections are served, and 10,000 concurrent echo connections.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use fulcrum_dlb::Backend;
use fulcrum_net::{Balance, Server, TcpStream};
use fulcrum_runtime::{spawn, Builder, Handle, Runtime};
use fulcrum_test_support::{fd_limits, raise_fd_limit, rng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn dlb_runtime(workers: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .dlb_backend(Backend::Software)
        .build()
        .expect("build runtime")
}

/// Whether connection (or task) `i` panics: about one in ten, fixed (the
/// first draw of the PRNG seeded from `i`).
fn doomed(i: u64) -> bool {
    rng(i ^ 0xdead_beef).u32(..10) == 0
}

const PANIC_TAG: &str = "injected panic for the load test";

/// Keeps the expected panics out of the test output (the hook is
/// process-wide; other panics still print).
fn quiet_expected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.contains(PANIC_TAG) {
                default(info);
            }
        }));
    });
}

/// An echo handler whose first 8 bytes name the connection; the doomed
/// connections panic instead of echoing.
async fn echo_or_panic(mut s: TcpStream, _peer: SocketAddr) {
    let mut id = [0u8; 8];
    if s.read_exact(&mut id).await.is_err() {
        return;
    }
    let id = u64::from_le_bytes(id);
    if doomed(id) {
        panic!("{PANIC_TAG}: connection {id}");
    }
    s.write_all(&id.to_le_bytes()).await.unwrap();
    let (mut r, mut w) = s.split();
    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
        let _ = w.shutdown().await;
    }
}

/// A client of `echo_or_panic`: whether it was served (every byte back) or
/// closed without a byte (doomed), checked against `doomed`.
async fn panic_client(addr: SocketAddr, i: u64, len: usize) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let data: Vec<u8> = (0..len).map(|j| (j as u64 * 31 + i) as u8).collect();
    let expect = data.clone();
    let writer = spawn(async move {
        // A doomed connection may be reset while we write: not an error.
        let _ = async {
            w.write_all(&i.to_le_bytes()).await?;
            for chunk in data.chunks(4096) {
                w.write_all(chunk).await?;
            }
            w.shutdown().await
        }
        .await;
    });
    let mut back = Vec::with_capacity(len + 8);
    let read = r.read_to_end(&mut back).await;
    writer.await.unwrap();
    if doomed(i) {
        // Closed (FIN) or reset (unread data at close), never served.
        match read {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{i}: {e}"),
        }
        assert!(
            back.is_empty(),
            "doomed connection {i} got {} bytes",
            back.len()
        );
    } else {
        read.unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(back.len(), len + 8, "connection {i}");
        assert_eq!(back[..8], i.to_le_bytes(), "connection {i}");
        assert!(back[8..] == expect[..], "connection {i}: bytes differ");
    }
}

/// A `Balance::Dlb` server on 4 workers whose handler panics for about 10%
/// of 1,000 connections (2 waves of 500 concurrent, 16 KiB each), while
/// 2,000 spawned tasks panic at the same rate. The clients of the doomed
/// connections see them closed, the others get every byte back, the
/// `JoinHandle`s of the panicking tasks report `is_panic()`, no connection
/// count leaks, and afterwards every worker still runs tasks and serves.
#[test]
fn handler_panics_under_load_close_only_their_connections() {
    const N: u64 = 1_000;
    const WAVE: u64 = 500;
    const LEN: usize = 16 * 1024;
    const TASKS: u64 = 2_000;
    const WORKERS: usize = 4;
    quiet_expected_panics();
    let soft = raise_fd_limit(2 * WAVE + 256);
    assert!(
        soft >= 2 * WAVE + 256,
        "needs {} fds, limit {soft}",
        2 * WAVE + 256
    );
    let rt = dlb_runtime(WORKERS);
    let start = Instant::now();
    let serving = rt.block_on(async {
        Server::bind("127.0.0.1:0".parse().unwrap())
            .balance(Balance::Dlb)
            .serve(echo_or_panic)
            .await
            .unwrap()
    });
    let addr = serving.local_addr();
    let (panicked, ok) = rt.block_on(async {
        // Panicking tasks, spawned around the connections.
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                spawn(async move {
                    fulcrum_runtime::yield_now().await;
                    if doomed(i) {
                        panic!("{PANIC_TAG}: task {i}");
                    }
                    i
                })
            })
            .collect();
        for wave in 0..N / WAVE {
            let clients: Vec<_> = (wave * WAVE..(wave + 1) * WAVE)
                .map(|i| spawn(panic_client(addr, i, LEN)))
                .collect();
            for c in clients {
                c.await.unwrap();
            }
        }
        let (mut panicked, mut ok) = (0u64, 0u64);
        for (i, t) in tasks.into_iter().enumerate() {
            let i = i as u64;
            match t.await {
                Ok(v) => {
                    assert!(!doomed(i), "task {i} should have panicked");
                    assert_eq!(v, i);
                    ok += 1;
                }
                Err(e) => {
                    assert!(e.is_panic(), "task {i}: {e}");
                    assert!(doomed(i), "task {i} panicked unexpectedly");
                    let payload = e.into_panic();
                    let msg = payload.downcast_ref::<String>().unwrap();
                    assert!(msg.contains(PANIC_TAG), "{msg}");
                    panicked += 1;
                }
            }
        }
        (panicked, ok)
    });
    let doomed_conns = (0..N).filter(|&i| doomed(i)).count();
    assert_eq!(serving.handled_per_worker().iter().sum::<u64>(), N);
    // Every connection, panicked or not, was counted out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while serving.open_per_worker().iter().sum::<u64>() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(serving.open_per_worker(), vec![0; WORKERS]);
    let m = rt.handle().metrics();
    assert!(
        m.workers.iter().all(|w| w.open_connections == 0),
        "connection counts leaked: {m:?}"
    );

    // Follow-up: every worker still polls tasks.
    let before: Vec<u64> = m.workers.iter().map(|w| w.tasks_polled).collect();
    let ran_on: Vec<Option<usize>> = rt.block_on(async {
        let joins: Vec<_> = (0..WORKERS)
            .map(|w| {
                Handle::current().spawn_on_worker(w, async { Handle::current().current_worker() })
            })
            .collect();
        let mut out = Vec::new();
        for (w, j) in joins.into_iter().enumerate() {
            // A worker killed by a panic would never run it: fail, not hang.
            let r = fulcrum_runtime::time::timeout(Duration::from_secs(10), j).await;
            out.push(
                r.unwrap_or_else(|_| panic!("worker {w} does not run tasks"))
                    .unwrap(),
            );
        }
        out
    });
    assert_eq!(ran_on, (0..WORKERS).map(Some).collect::<Vec<_>>());
    let after: Vec<u64> = rt
        .handle()
        .metrics()
        .workers
        .iter()
        .map(|w| w.tasks_polled)
        .collect();
    for w in 0..WORKERS {
        assert!(
            after[w] > before[w],
            "worker {w} stopped polling: {before:?} -> {after:?}"
        );
    }
    // ... and the server still serves (100 more connections).
    rt.block_on(async {
        let clients: Vec<_> = (N..N + 100)
            .map(|i| spawn(panic_client(addr, i, LEN)))
            .collect();
        for c in clients {
            c.await.unwrap();
        }
    });
    eprintln!(
        "{N} connections ({doomed_conns} handlers panicked) and {TASKS} tasks ({panicked} \
         panicked, {ok} ok) in {:?}; connections per worker {:?}; polls per worker {before:?} \
         -> {after:?}",
        start.elapsed(),
        serving.handled_per_worker()
    );
    assert_eq!(panicked + ok, TASKS);
    assert!(panicked > TASKS / 20 && panicked < TASKS / 5, "{panicked}");
    assert!(doomed_conns > 50 && doomed_conns < 200, "{doomed_conns}");
}

// ---- 10,000 concurrent connections ---------------------------------------

/// Bytes each connection echoes.
const ECHO_LEN: usize = 64 * 1024;
/// Each round trip: write this much, read it back.
const CHUNK: usize = 8 * 1024;
/// Environment of the client process.
const CLIENT_ENV: &str = "FULCRUM_LOAD_CLIENT";

/// The bytes of connection `i`: a window of a fixed pseudo-random table, so
/// that writing is a slice and checking is a comparison.
fn pattern() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..ECHO_LEN + 256)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    })
}

fn conn_bytes(i: usize) -> &'static [u8] {
    let at = i % 251;
    &pattern()[at..at + ECHO_LEN]
}

/// A barrier for tasks: the `n`th arrival releases everyone.
struct Barrier {
    state: Mutex<(usize, Vec<Waker>)>,
    n: usize,
}

impl Barrier {
    fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        let mut arrived = false;
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            let mut st = self.state.lock().unwrap();
            if !arrived {
                arrived = true;
                st.0 += 1;
                if st.0 == self.n {
                    for w in st.1.drain(..) {
                        w.wake();
                    }
                }
            }
            if st.0 >= self.n {
                Poll::Ready(())
            } else {
                st.1.push(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

fn somaxconn() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// 10,000 concurrent TCP connections to an echo server on a 2-worker DLB runtime, each echoing 64 KiB in 8 KiB round
/// trips, every byte checked on both sides.
///
/// The clients run in a child process (this binary, running the ignored
/// `load_client_process`), so that each process needs one descriptor per
/// connection, not two: a common hard `RLIMIT_NOFILE` of 20,000 would
/// otherwise not fit 10,000 connections. The clients connect in waves no
/// larger than half the listen backlog (`min(somaxconn, 1024)`), each
/// connection proving with a ping that its handler runs; once all are
/// connected the parent checks that the server holds them all open at once,
/// then lets the echo start on all of them together. Fails, saying why,
/// where the hard `RLIMIT_NOFILE` is below 11,500 (`.ci/run` raises it).
#[test]
fn ten_thousand_concurrent_connections_echo_64k() {
    // About 5 s in the debug profile on 2 cores.
    let n: usize = 10_000;
    // This process: n server sockets, the other test's 1,000, margin.
    let need = n as u64 + 1_500;
    let (soft, hard) = (raise_fd_limit(need), fd_limits().1);
    assert!(
        soft >= need,
        "{n} connections need {need} file descriptors in the server process, but the \
         RLIMIT_NOFILE hard limit is {hard}: raise it (as root, `ulimit -Hn 65536`; \
         `.ci/run` does)"
    );
    let backlog = somaxconn().unwrap_or(128).min(1024);
    let wave = (backlog / 2).clamp(16, 500) as usize;
    let rt = dlb_runtime(2);
    let echoed = Arc::new(AtomicU64::new(0));
    let serving = rt.block_on({
        let echoed = echoed.clone();
        async move {
            Server::bind("127.0.0.1:0".parse().unwrap())
                .balance(Balance::Dlb)
                .serve(move |mut s: TcpStream, _| {
                    let echoed = echoed.clone();
                    async move {
                        let (mut r, mut w) = s.split();
                        if let Ok(n) = tokio::io::copy(&mut r, &mut w).await {
                            echoed.fetch_add(n, Relaxed);
                            let _ = w.shutdown().await;
                        }
                    }
                })
                .await
                .unwrap()
        }
    });
    let start = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "load_client_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CLIENT_ENV, format!("{},{n},{wave}", serving.local_addr()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client process");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let expect_line = |prefix: &str, child: &mut std::process::Child| -> String {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                // libtest may have printed `test name ... ` before it.
                Ok(line) => {
                    if let Some(at) = line.find(prefix) {
                        return line[at..].to_string();
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!("client process: no {prefix:?} line ({e:?}); exit {status:?}");
                }
            }
        }
    };
    let connected = expect_line("CONNECTED", &mut child);
    let connect_time = start.elapsed();
    let open: u64 = serving.open_per_worker().iter().sum();
    let per_worker = serving.open_per_worker();
    assert_eq!(
        open, n as u64,
        "server holds {open} of {n} connections at once"
    );
    writeln!(stdin, "GO").unwrap();
    let done = expect_line("CLIENT OK", &mut child);
    let status = child.wait().unwrap();
    assert!(status.success(), "client process: {status}");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The server also echoed each connection's 1-byte ping.
    let server_bytes = (n * (ECHO_LEN + 1)) as u64;
    while echoed.load(Relaxed) < server_bytes && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    let m = rt.handle().metrics();
    eprintln!(
        "{n} concurrent connections (waves of {wave}, somaxconn {:?}, fd limit {soft}): \
         {connected} after {connect_time:?}, open per worker {per_worker:?}; {done}; total \
         {:?}; dlb sends {:?}, fallbacks {:?}",
        somaxconn(),
        start.elapsed(),
        m.workers.iter().map(|w| w.dlb_sent).collect::<Vec<_>>(),
        m.workers.iter().map(|w| w.fallbacks).collect::<Vec<_>>(),
    );
    assert!(
        done.contains(&format!("conns={n} bytes={}", n * ECHO_LEN)),
        "{done}"
    );
    assert_eq!(serving.handled_per_worker().iter().sum::<u64>(), n as u64);
    assert_eq!(
        echoed.load(Relaxed),
        server_bytes,
        "bytes echoed by the server"
    );
}

/// The client side of `ten_thousand_concurrent_connections_echo_64k`, run
/// by it in a child process (does nothing otherwise).
#[test]
#[ignore = "run by ten_thousand_concurrent_connections_echo_64k in a child process"]
fn load_client_process() {
    let Ok(arg) = std::env::var(CLIENT_ENV) else {
        return;
    };
    let mut parts = arg.split(',');
    let addr: SocketAddr = parts.next().unwrap().parse().unwrap();
    let n: usize = parts.next().unwrap().parse().unwrap();
    let wave: usize = parts.next().unwrap().parse().unwrap();
    let (soft, hard) = (raise_fd_limit(n as u64 + 256), fd_limits().1);
    assert!(
        soft >= n as u64 + 256,
        "client: need {} fds, hard limit {hard}",
        n + 256
    );
    let rt = dlb_runtime(2);
    let start = Instant::now();
    let streams: Vec<TcpStream> = rt.block_on(async {
        let mut streams = Vec::with_capacity(n);
        for first in (0..n).step_by(wave) {
            let joins: Vec<_> = (first..(first + wave).min(n))
                .map(|i| {
                    spawn(async move {
                        let mut s = TcpStream::connect(addr).await.unwrap();
                        // A ping: the handler runs (and counts the
                        // connection open) before the next wave.
                        s.write_all(&[i as u8]).await.unwrap();
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b).await.unwrap();
                        assert_eq!(b[0], i as u8);
                        s
                    })
                })
                .collect();
            for j in joins {
                streams.push(j.await.unwrap());
            }
        }
        streams
    });
    let connect = start.elapsed();
    println!("CONNECTED {} in {connect:?}", streams.len());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "GO");
    let start = Instant::now();
    let barrier = Arc::new(Barrier {
        state: Mutex::new((0, Vec::new())),
        n,
    });
    let total: u64 = rt.block_on(async {
        let joins: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                let barrier = barrier.clone();
                spawn(async move {
                    barrier.wait().await;
                    let data = conn_bytes(i);
                    let mut buf = vec![0u8; CHUNK];
                    for chunk in data.chunks(CHUNK) {
                        s.write_all(chunk).await.unwrap();
                        s.read_exact(&mut buf[..chunk.len()]).await.unwrap();
                        assert!(buf[..chunk.len()] == *chunk, "connection {i}: bytes differ");
                    }
                    s.shutdown().await.unwrap();
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).await.unwrap();
                    assert!(
                        rest.is_empty(),
                        "connection {i}: {} extra bytes",
                        rest.len()
                    );
                    data.len() as u64
                })
            })
            .collect();
        let mut total = 0;
        for j in joins {
            total += j.await.unwrap();
        }
        total
    });
    println!(
        "CLIENT OK conns={n} bytes={total} connect={connect:?} echo={:?}",
        start.elapsed()
    );
    std::io::stdout().flush().unwrap();
}

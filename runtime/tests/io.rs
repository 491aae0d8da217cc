//! The reactor interface: sockets registered with the worker (or `block_on`
//! thread) that polls them, echoing data over loopback on every scheduler.
#![cfg(not(loom))]

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use fulcrum_dlb::Backend;
use fulcrum_runtime::io::{Direction, Interest, Registration};
use fulcrum_runtime::{spawn, Builder};
use mio::net::{TcpListener, TcpStream};

mod common;
use common::runtimes;

/// A minimal async TCP stream over the public reactor interface.
struct Stream {
    io: TcpStream,
    reg: Registration,
}

impl Stream {
    fn new(mut io: TcpStream) -> io::Result<Self> {
        let reg = Registration::new(&mut io, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Self { io, reg })
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (io, reg) = (&mut self.io, &self.reg);
        std::future::poll_fn(|cx| reg.poll_io(cx, Direction::Read, || io.read(buf))).await
    }

    async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let (io, reg) = (&mut self.io, &self.reg);
            let n = std::future::poll_fn(|cx| reg.poll_io(cx, Direction::Write, || io.write(buf)))
                .await?;
            buf = &buf[n..];
        }
        Ok(())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.reg.deregister(&mut self.io);
    }
}

async fn accept(listener: &mut TcpListener, reg: &Registration) -> io::Result<TcpStream> {
    std::future::poll_fn(|cx| {
        reg.poll_io(cx, Direction::Read, || listener.accept().map(|(s, _)| s))
    })
    .await
}

async fn echo_server(mut listener: TcpListener, conns: usize) -> io::Result<()> {
    let reg = Registration::new(&mut listener, Interest::READABLE)?;
    let mut handles = Vec::new();
    for _ in 0..conns {
        let sock = accept(&mut listener, &reg).await?;
        // The socket registers on the worker that first polls this task.
        handles.push(spawn(async move {
            let mut s = Stream::new(sock)?;
            let mut buf = vec![0u8; 4096];
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, io::Error>(());
                }
                s.write_all(&buf[..n]).await?;
            }
        }));
    }
    for h in handles {
        h.await.map_err(io::Error::from)??;
    }
    Ok(())
}

async fn client(addr: SocketAddr, seed: u8, len: usize) -> io::Result<()> {
    let mut s = Stream::new(TcpStream::connect(addr)?)?;
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut back = vec![0u8; len];
    let mut got = 0;
    let mut sent = 0;
    // Interleave writing and reading so neither side's buffers fill up.
    while got < len {
        if sent < len {
            let end = (sent + 8192).min(len);
            s.write_all(&data[sent..end]).await?;
            sent = end;
        }
        let n = s.read(&mut back[got..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    assert!(back == data, "echoed bytes differ");
    s.io.shutdown(std::net::Shutdown::Write)?;
    Ok(())
}

#[test]
fn echo_fifty_connections_of_64k() {
    for (name, rt) in runtimes() {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.block_on(async move {
            let server = spawn(echo_server(listener, 50));
            let clients: Vec<_> = (0..50u8)
                .map(|i| spawn(client(addr, i, 64 * 1024)))
                .collect();
            for c in clients {
                c.await.unwrap().unwrap();
            }
            server.await.unwrap().unwrap();
        });
        // Every registration was released.
        let m = rt.handle().metrics();
        let live: u64 = m.workers.iter().map(|w| w.io_resources).sum();
        assert_eq!(live, 0, "{name}: {m:?}");
    }
}

#[test]
fn io_inside_block_on_itself() {
    for (name, rt) in runtimes() {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.block_on(async move {
            let server = spawn(echo_server(listener, 1));
            // This client's socket lives on the block_on thread's reactor.
            client(addr, 7, 100_000).await.unwrap();
            server.await.unwrap().unwrap();
        });
        let _ = name;
    }
}

#[test]
fn metrics_count_io_resources_per_worker() {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .dlb_backend(Backend::Software)
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let h = rt.spawn(async move {
        let mut l = listener;
        let reg = Registration::new(&mut l, Interest::READABLE).unwrap();
        let worker = reg.worker();
        tx.send(()).unwrap();
        // Hold the registration until the test has looked.
        fulcrum_runtime::time::sleep(std::time::Duration::from_millis(100)).await;
        drop(reg);
        worker
    });
    rx.recv().unwrap();
    let m = rt.handle().metrics();
    assert_eq!(
        m.workers.iter().map(|w| w.io_resources).sum::<u64>(),
        1,
        "{m:?}"
    );
    let worker = rt.block_on(h).unwrap().expect("registered on a worker");
    assert!(worker < 2);
    let m = rt.handle().metrics();
    assert_eq!(
        m.workers.iter().map(|w| w.io_resources).sum::<u64>(),
        0,
        "{m:?}"
    );
}

#[test]
fn registration_outside_a_runtime_is_an_error() {
    let mut l = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let err = Registration::new(&mut l, Interest::READABLE).unwrap_err();
    assert!(
        err.to_string().contains("outside a Fulcrum runtime"),
        "{err}"
    );
}

/// One worker blocks for 200 ms inside a task, right after registering a
/// socket whose serving task waits on the other worker. Returns how long a
/// ping on that socket took to come back and the rescue count, or `None`
/// if the serving task did not get to the other worker (nothing to test).
// The owner task hands the serving task's `JoinHandle` back on purpose.
#[allow(clippy::async_yields_async)]
fn ping_while_owner_blocks(
    rescue: Option<std::time::Duration>,
) -> Option<(std::time::Duration, u64)> {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .dlb_backend(Backend::Software)
        .rescue_interval(rescue)
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (server_side, _) = listener.accept().unwrap();
    server_side.set_nonblocking(true).unwrap();
    let blocking = Arc::new(AtomicBool::new(false));
    let gave_up = Arc::new(AtomicBool::new(false));
    let (b2, g2) = (blocking.clone(), gave_up.clone());
    let owner = rt.spawn(async move {
        // All in one poll: register the socket on this worker, hand it to a
        // serving task, wait until that task runs elsewhere, then block this
        // worker.
        let mut s = Stream::new(TcpStream::from_std(server_side)).unwrap();
        let here = std::thread::current().id();
        let serving = Arc::new(AtomicBool::new(false));
        let sv = serving.clone();
        // Straight to the other worker (a directed DLB event).
        let handle = fulcrum_runtime::Handle::current();
        let other = handle.current_worker().map_or(0, |w| w + 1);
        let server = handle.spawn_on_worker(other, async move {
            if std::thread::current().id() != here {
                sv.store(true, SeqCst);
            }
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(&buf[..n]).await.unwrap();
        });
        let t = Instant::now();
        while !serving.load(SeqCst) && t.elapsed() < Duration::from_secs(2) {
            std::hint::spin_loop();
        }
        if !serving.load(SeqCst) {
            g2.store(true, SeqCst);
            return server;
        }
        // Give the serving task time to reach its read and wait.
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(2) {
            std::hint::spin_loop();
        }
        b2.store(true, SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        server
    });
    while !blocking.load(SeqCst) && !gave_up.load(SeqCst) {
        std::thread::yield_now();
    }
    if gave_up.load(SeqCst) {
        client.write_all(b"ping").unwrap();
        let server = rt.block_on(owner).unwrap();
        rt.block_on(server).unwrap();
        return None;
    }
    std::thread::sleep(Duration::from_millis(2));
    let t = Instant::now();
    client.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    client.read_exact(&mut back).unwrap();
    let took = t.elapsed();
    assert_eq!(&back, b"ping");
    let server = rt.block_on(owner).unwrap();
    rt.block_on(server).unwrap();
    let rescued = rt
        .handle()
        .metrics()
        .workers
        .iter()
        .map(|w| w.io_rescued)
        .sum();
    Some((took, rescued))
}

fn exercised(rescue: Option<std::time::Duration>) -> (std::time::Duration, u64) {
    for _ in 0..20 {
        if let Some(r) = ping_while_owner_blocks(rescue) {
            return r;
        }
    }
    panic!("the serving task never ran on the other worker in 20 tries");
}

#[test]
fn a_blocked_worker_does_not_hold_its_sockets_ready_io_hostage() {
    let (fast, rescued) = exercised(Some(std::time::Duration::from_micros(100)));
    // Without the rescue the same ping waits for the blocked worker.
    let (slow, none) = exercised(None);
    eprintln!("ping while its owner is blocked: rescued {fast:?} ({rescued} events), not rescued {slow:?}");
    assert!(rescued > 0);
    assert_eq!(none, 0);
    assert!(
        fast < std::time::Duration::from_millis(20),
        "rescued ping took {fast:?}"
    );
    assert!(
        slow > std::time::Duration::from_millis(100),
        "unrescued ping took {slow:?}"
    );
}

/// A task that yields in a loop does not starve its worker's I/O: with the
/// yield deferred until the worker runs out of other work, the worker looks
/// at its sockets before running the yielder again, and the reader wakes.
#[test]
fn a_yield_loop_lets_io_through() {
    let one = |scheduler| {
        Builder::new_multi_thread()
            .worker_threads(1)
            .scheduler(scheduler)
            .dlb_backend(Backend::Software)
            .build()
            .unwrap()
    };
    let rts = [
        ("dlb-1", one(fulcrum_runtime::Scheduler::Dlb)),
        ("stealing-1", one(fulcrum_runtime::Scheduler::WorkStealing)),
        ("current", Builder::new_current_thread().build().unwrap()),
    ];
    for (name, rt) in rts {
        let (mut tx, rx) = mio::net::UnixStream::pair().unwrap();
        let (turns, got) = rt.block_on(async move {
            let reader = spawn(async move {
                let mut rx = rx;
                let mut reg = Registration::new(&mut rx, Interest::READABLE)?;
                let mut byte = [0u8; 1];
                let n = std::future::poll_fn(|cx| {
                    reg.poll_io(cx, Direction::Read, || (&rx).read(&mut byte))
                })
                .await?;
                let _ = reg.deregister(&mut rx);
                io::Result::Ok(byte[..n].to_vec())
            });
            let spinner = spawn(async move {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                let mut turns = 0u64;
                while !reader.is_finished() && std::time::Instant::now() < deadline {
                    if turns == 100 {
                        tx.write_all(b"x").unwrap();
                    }
                    turns += 1;
                    fulcrum_runtime::yield_now().await;
                }
                (turns, reader.await.unwrap().unwrap())
            });
            spinner.await.unwrap()
        });
        assert_eq!(got, b"x", "{name}");
        // Written at turn 100; the reader must run within a few
        // maintenance intervals (61 tasks), not at the 10 s deadline (the
        // current-thread scheduler, before it polled I/O between batches:
        // 8.5 million turns).
        assert!((101..=400).contains(&turns), "{name}: {turns} turns");
    }
}

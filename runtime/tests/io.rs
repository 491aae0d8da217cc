//! The reactor interface: sockets registered with the worker (or `block_on`
//! thread) that polls them, echoing data over loopback on every scheduler.
#![cfg(not(loom))]

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use fulcrum_dlb::Backend;
use fulcrum_runtime::io::{Direction, Interest, Registration};
use fulcrum_runtime::{spawn, Builder, Runtime};
use mio::net::{TcpListener, TcpStream};

fn runtimes() -> Vec<(&'static str, Runtime)> {
    vec![
        (
            "dlb-2",
            Builder::new_multi_thread()
                .worker_threads(2)
                .dlb_backend(Backend::Software)
                .build()
                .unwrap(),
        ),
        ("current", Builder::new_current_thread().build().unwrap()),
    ]
}

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

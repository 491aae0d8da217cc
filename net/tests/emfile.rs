//! Out of file descriptors: the accept loop backs off (no busy loop),
//! existing connections keep working, and accepting recovers once fds free
//! up. Alone in its binary: it lowers the process's fd limit.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use fulcrum_dlb::Backend;
use fulcrum_net::{Server, TcpStream};
use fulcrum_runtime::Builder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn set_soft_limit(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = n.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

fn echo_once(c: &mut std::net::TcpStream) -> std::io::Result<()> {
    c.write_all(b"ping")?;
    let mut b = [0u8; 4];
    c.read_exact(&mut b)?;
    assert_eq!(&b, b"ping");
    Ok(())
}

#[test]
fn emfile_backs_off_keeps_serving_and_recovers() {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .dlb_backend(Backend::Software)
        .build()
        .unwrap();
    let serving = rt.block_on(async {
        Server::bind("127.0.0.1:0".parse().unwrap())
            .serve(|mut s: TcpStream, _| async move {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            })
            .await
            .unwrap()
    });
    let addr = serving.local_addr();
    // Ten connections served before the flood.
    let mut early: Vec<_> = (0..10)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    for c in &mut early {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        echo_once(c).unwrap();
    }

    // Open 60 client connections, then lower the limit to what is open
    // now plus 5: the server accepts a few more, then hits EMFILE with
    // connections still in the kernel's accept queue.
    let mut flood: Vec<_> = (0..60)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    // Give the server a moment to accept what it can before the squeeze
    // (the accepts it has not made yet stay in the kernel's queue).
    std::thread::sleep(Duration::from_millis(100));
    let limit = open_fds() + 5;
    set_soft_limit(limit);
    let flood2: Vec<_> = (0..20)
        .filter_map(|_| std::net::TcpStream::connect(addr).ok())
        .collect();
    assert!(!flood2.is_empty() || open_fds() >= limit - 1);

    // Stalled: the accept queue is not empty and no fd is free. The accept
    // loop must sleep, not spin: under 25% of one core over 1 s.
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = cpu_time() - cpu0;
    let wall = t0.elapsed();
    eprintln!("stalled at the fd limit: {cpu:?} CPU over {wall:?}");
    assert!(
        cpu < wall / 4,
        "busy loop at EMFILE: {cpu:?} CPU over {wall:?}"
    );

    // Existing connections still work.
    for c in &mut early {
        echo_once(c).unwrap();
    }

    // Free fds (the limit stays): the early connections and 40 of the
    // flood close, on both sides. The server recovers by itself and serves
    // the rest of the flood.
    drop(early);
    let rest = flood.split_off(40);
    drop(flood);
    let mut served = 0;
    for mut c in rest.into_iter().chain(flood2) {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        echo_once(&mut c).unwrap();
        served += 1;
    }
    eprintln!("after recovery: {served} queued connections served");
    assert!(served >= 20);
    set_soft_limit(u64::MAX);
    drop(serving);
    drop(rt);
}

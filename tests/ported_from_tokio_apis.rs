//! Small tokio programs that use the APIs applications use every day
//! (`fs`, `process`, stdio, host names, the TCP halves, `task_local!`,
//! paused time, `LocalSet`, `Handle::block_on`, task ids, metrics,
//! `block_in_place`, `AsyncFd`), ported
//! to Fulcrum by renaming paths only.
//!
//! Each program below is the tokio original with `tokio` renamed to
//! `fulcrum`; this is the whole diff (`-` tokio, `+` Fulcrum), every line
//! of it of one form:
//!
//! ```diff
//! -use tokio::fs::{self, File, OpenOptions};
//! +use fulcrum::fs::{self, File, OpenOptions};
//! -use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};
//! +use fulcrum::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};
//! -use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
//! +use fulcrum::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
//! -use tokio::net::{lookup_host, TcpListener, TcpStream};
//! +use fulcrum::net::{lookup_host, TcpListener, TcpStream};
//! -use tokio::process::Command;
//! +use fulcrum::process::Command;
//! -use tokio::runtime::Handle;
//! +use fulcrum::runtime::Handle;
//! -use tokio::sync::{mpsc, oneshot};
//! +use fulcrum::sync::{mpsc, oneshot};
//! -use tokio::task::{self, LocalSet};
//! +use fulcrum::task::{self, LocalSet};
//! -use tokio::time::{self, error::Elapsed, Instant, MissedTickBehavior};
//! +use fulcrum::time::{self, error::Elapsed, Instant, MissedTickBehavior};
//! -    use tokio::io::unix::AsyncFd;
//! +    use fulcrum::io::unix::AsyncFd;
//! -    use tokio::io::Interest;
//! +    use fulcrum::io::Interest;
//! -    tokio::task::block_in_place(...)
//! +    fulcrum::task::block_in_place(...)
//! -tokio::task_local! {
//! +fulcrum::task_local! {
//! -#[tokio::test]
//! +#[fulcrum::test]
//! -#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! +#[fulcrum::test(flavor = "multi_thread", worker_threads = 2)]
//! -#[tokio::test(start_paused = true)]
//! +#[fulcrum::test(start_paused = true)]
//! -    tokio::spawn(...)            (every call)
//! +    fulcrum::spawn(...)
//! -    tokio::task::spawn_blocking(...)
//! +    fulcrum::task::spawn_blocking(...)
//! -    tokio::io::stdout()
//! +    fulcrum::io::stdout()
//! -    let rt = tokio::runtime::Builder::new_current_thread()
//! +    let rt = fulcrum::runtime::Builder::new_current_thread()
//! ```
//!
//! One difference in what the programs see: `#[fulcrum::test]` without
//! options runs on the DLB multi-thread runtime with 2 workers, where
//! tokio's default is the current-thread runtime (the programs here do not
//! depend on it; `start_paused = true` picks the current-thread runtime, as
//! tokio's default makes it).

use std::cell::RefCell;
use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;

use fulcrum::fs::{self, File, OpenOptions};
use fulcrum::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};
use fulcrum::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use fulcrum::net::{lookup_host, TcpListener, TcpStream};
use fulcrum::process::Command;
use fulcrum::runtime::Handle;
use fulcrum::sync::{mpsc, oneshot};
use fulcrum::task::{self, LocalSet};
use fulcrum::time::{self, error::Elapsed, Instant, MissedTickBehavior};

/// A log rotator: appends lines, reads them back line by line, rotates
/// the file, and lists the directory.
#[fulcrum::test]
async fn log_rotation_with_fs() -> std::io::Result<()> {
    let dir = std::env::temp_dir().join(format!("ported-fs-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir).await;
    fs::create_dir_all(dir.join("old")).await?;
    let log = dir.join("app.log");

    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .await?;
    for i in 0..100 {
        file.write_all(format!("event {i}\n").as_bytes()).await?;
    }
    file.flush().await?;
    file.sync_all().await?;
    drop(file);

    let mut lines = BufReader::new(File::open(&log).await?).lines();
    let mut count = 0;
    while let Some(line) = lines.next_line().await? {
        assert_eq!(line, format!("event {count}"));
        count += 1;
    }
    assert_eq!(count, 100);

    let mut file = File::open(&log).await?;
    file.seek(std::io::SeekFrom::End(-9)).await?;
    let mut last = String::new();
    file.read_to_string(&mut last).await?;
    assert_eq!(last, "event 99\n");

    fs::rename(&log, dir.join("old/app.log.1")).await?;
    fs::write(&log, b"").await?;
    assert!(fs::try_exists(dir.join("old/app.log.1")).await?);
    let mut entries = fs::read_dir(&dir).await?;
    let mut names = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        names.push(entry.file_name().into_string().unwrap());
    }
    names.sort();
    assert_eq!(names, ["app.log", "old"]);
    // "event 0\n" to "event 9\n" are 8 bytes, the next 90 lines 9.
    assert_eq!(
        fs::metadata(dir.join("old/app.log.1")).await?.len(),
        10 * 8 + 90 * 9
    );
    fs::remove_dir_all(&dir).await?;
    Ok(())
}

/// A build step runner: runs commands, streams a child's output line by
/// line, feeds another through stdin, and kills a stuck one.
#[fulcrum::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_commands_with_process() -> std::io::Result<()> {
    let output = Command::new("sh")
        .arg("-c")
        .arg("echo built; exit 0")
        .output()
        .await?;
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "built\n");

    let mut child = Command::new("sh")
        .arg("-c")
        .arg("for i in 1 2 3; do echo step $i; done")
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut steps = Vec::new();
    while let Some(line) = lines.next_line().await? {
        steps.push(line);
    }
    assert_eq!(steps, ["step 1", "step 2", "step 3"]);
    assert!(child.wait().await?.success());

    let mut sort = Command::new("sort")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = sort.stdin.take().expect("piped");
    fulcrum::spawn(async move {
        stdin.write_all(b"pear\napple\nfig\n").await.unwrap();
    });
    let sorted = sort.wait_with_output().await?;
    assert_eq!(sorted.stdout, b"apple\nfig\npear\n");

    let mut stuck = Command::new("sleep")
        .arg("600")
        .kill_on_drop(true)
        .spawn()?;
    let waited: Result<_, Elapsed> = time::timeout(Duration::from_millis(50), stuck.wait()).await;
    assert!(waited.is_err());
    stuck.kill().await?;
    assert!(stuck.try_wait()?.is_some());
    Ok(())
}

fulcrum::task_local! {
    static REQUEST_ID: u64;
}

async fn handle_request(mut stream: TcpStream) -> u64 {
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.unwrap();
    time::sleep(Duration::from_millis(1)).await;
    log_line("handled").await;
    stream.write_all(&buf).await.unwrap();
    REQUEST_ID.get()
}

async fn log_line(what: &str) {
    let id = REQUEST_ID.get();
    assert!(!what.is_empty() && id > 0);
}

/// A server that tags every request's work with a task-local request id,
/// resolves its own host name, and splits its client into owned halves.
#[fulcrum::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_host_names_and_split_halves() {
    let listener = TcpListener::bind("localhost:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = fulcrum::spawn(async move {
        let mut seen = Vec::new();
        for id in 1..=4u64 {
            let (stream, _) = listener.accept().await.unwrap();
            seen.push(fulcrum::spawn(REQUEST_ID.scope(id, handle_request(stream))));
        }
        let mut ids = Vec::new();
        for h in seen {
            ids.push(h.await.unwrap());
        }
        ids
    });

    let addrs: Vec<_> = lookup_host(("localhost", port)).await.unwrap().collect();
    assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    for _ in 0..4 {
        let stream = TcpStream::connect(("localhost", port)).await.unwrap();
        let (mut rd, mut wr): (OwnedReadHalf, OwnedWriteHalf) = stream.into_split();
        wr.write_all(b"hello").await.unwrap();
        let mut echo = [0u8; 5];
        rd.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"hello");
        let stream = rd.reunite(wr).unwrap();
        assert_eq!(stream.peer_addr().unwrap().port(), port);
    }
    let mut ids = server.await.unwrap();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3, 4]);
}

async fn fetch_with_retries(attempts_needed: u32) -> Result<u32, Elapsed> {
    let mut attempt = 0;
    let mut backoff = Duration::from_secs(1);
    loop {
        attempt += 1;
        let result = time::timeout(Duration::from_secs(30), async {
            if attempt < attempts_needed {
                std::future::pending::<()>().await;
            }
        })
        .await;
        if result.is_ok() {
            return Ok(attempt);
        }
        if attempt == 5 {
            return result.map(|()| attempt);
        }
        time::sleep(backoff).await;
        backoff *= 2;
    }
}

/// Retries with exponential backoff, tested in paused time: minutes of
/// timeouts and sleeps pass at once.
#[fulcrum::test(start_paused = true)]
async fn retries_with_backoff_in_paused_time() {
    let start = Instant::now();
    assert_eq!(fetch_with_retries(3).await, Ok(3));
    // Two timeouts of 30 s, backoffs of 1 s and 2 s.
    assert_eq!(start.elapsed(), Duration::from_secs(63));

    let start = Instant::now();
    assert!(fetch_with_retries(10).await.is_err());
    assert_eq!(start.elapsed(), Duration::from_secs(5 * 30 + 1 + 2 + 4 + 8));

    let mut ticker = time::interval(Duration::from_secs(10));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let first = ticker.tick().await;
    time::advance(Duration::from_secs(35)).await;
    let late = ticker.tick().await;
    assert_eq!(
        late - first,
        Duration::from_secs(10),
        "the missed tick fires now"
    );
    let next = ticker.tick().await;
    assert_eq!(
        next - first,
        Duration::from_secs(40),
        "then the schedule skips ahead"
    );
}

/// `!Send` state in a `LocalSet`, fed by tasks on the multi-thread
/// runtime through a channel, on a thread of its own (tokio's recipe).
#[fulcrum::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_set_fed_from_worker_tasks() {
    let (tx, mut rx) = mpsc::channel::<(u32, oneshot::Sender<u32>)>(16);
    let local_thread = std::thread::spawn(move || {
        let rt = fulcrum::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = LocalSet::new();
        local.block_on(&rt, async move {
            let totals = Rc::new(RefCell::new(0u32)); // not `Send`
            while let Some((n, reply)) = rx.recv().await {
                let totals = totals.clone();
                task::spawn_local(async move {
                    *totals.borrow_mut() += n;
                    let _ = reply.send(*totals.borrow());
                })
                .await
                .unwrap();
            }
            let total = *totals.borrow();
            total
        })
    });
    let mut last = 0;
    for n in 1..=10 {
        let tx = tx.clone();
        let reply = fulcrum::spawn(async move {
            let (reply_tx, reply_rx) = oneshot::channel();
            tx.send((n, reply_tx)).await.unwrap();
            reply_rx.await.unwrap()
        });
        last = reply.await.unwrap();
    }
    drop(tx);
    assert_eq!(last, 55);
    assert_eq!(local_thread.join().unwrap(), 55);
}

/// Blocking code that calls back into async code with `Handle::block_on`,
/// task ids, and the runtime's metrics.
#[fulcrum::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_block_on_task_ids_and_metrics() {
    let handle = Handle::current();
    let from_blocking = fulcrum::task::spawn_blocking(move || {
        handle.block_on(async {
            let local = LocalSet::new();
            local
                .run_until(async {
                    let rc = Rc::new(21);
                    task::spawn_local(async move { *rc * 2 }).await.unwrap()
                })
                .await
        })
    })
    .await
    .unwrap();
    assert_eq!(from_blocking, 42);

    let job = fulcrum::spawn(async { task::id() });
    let id = job.id();
    assert_eq!(job.await.unwrap(), id);
    assert!(task::try_id().is_none(), "the test body is not a task");

    // tokio's stable metrics (no `tokio_unstable` needed).
    let metrics = Handle::current().metrics();
    assert_eq!(metrics.num_workers(), 2);
    let held = fulcrum::spawn(std::future::pending::<()>());
    assert!(metrics.num_alive_tasks() >= 1);
    held.abort();
    let _ = metrics.global_queue_depth();
    let _ = metrics.worker_park_count(1);
    let _ = metrics.worker_total_busy_duration(0);
}

/// Printing through the async standard streams.
#[fulcrum::test]
async fn stdout_and_stderr() -> std::io::Result<()> {
    let mut out = fulcrum::io::stdout();
    out.write_all(b"ported: stdout works\n").await?;
    out.flush().await?;
    let mut err = fulcrum::io::stderr();
    err.write_all(b"ported: stderr works\n").await?;
    err.flush().await?;
    Ok(())
}

/// A synchronous hash over a file inside `block_in_place`, while another
/// task keeps answering over a Unix socket pair through `AsyncFd`.
#[fulcrum::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_in_place_beside_async_fd() -> std::io::Result<()> {
    use fulcrum::io::unix::AsyncFd;
    use fulcrum::io::Interest;
    use std::io::{Read, Write};

    let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    a.set_nonblocking(true)?;
    let echo = fulcrum::spawn(async move {
        let fd = AsyncFd::with_interest(a, Interest::READABLE)?;
        let mut buf = [0u8; 16];
        let n = fd
            .async_io(Interest::READABLE, |mut s| s.read(&mut buf))
            .await?;
        std::io::Result::Ok(buf[..n].to_vec())
    });
    let sum = fulcrum::task::block_in_place(|| {
        (0..1_000_000u64).fold(0u64, |s, i| s.wrapping_add(i * i))
    });
    assert_eq!(
        sum,
        (0..1_000_000u64).map(|i| i * i).fold(0, u64::wrapping_add)
    );
    b.write_all(b"ping")?;
    assert_eq!(echo.await.expect("echo task")?, b"ping");
    Ok(())
}

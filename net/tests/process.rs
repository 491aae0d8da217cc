//! `fulcrum_net::process` against tokio's documented behaviour: spawning,
//! piped stdio as async streams, waiting through the reactor (no thread
//! per child), killing, and no zombie left behind.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fulcrum_net::process::{Child, Command};
use fulcrum_runtime::time::{sleep, timeout};
use fulcrum_runtime::Builder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::runtimes;

const LIMIT: Duration = Duration::from_secs(20);

/// Whether process `pid` is gone: reaped (no zombie left).
fn reaped(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn wait_until_reaped(pid: u32) -> bool {
    let deadline = Instant::now() + LIMIT;
    while !reaped(pid) {
        if Instant::now() > deadline {
            return false;
        }
        sleep(Duration::from_millis(5)).await;
    }
    true
}

#[test]
fn output_and_status_on_every_runtime() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let out = Command::new("sh")
                .args(["-c", "echo out; echo err >&2; exit 3"])
                .output()
                .await
                .unwrap();
            assert_eq!(out.status.code(), Some(3), "{name}");
            assert_eq!(out.stdout, b"out\n");
            assert_eq!(out.stderr, b"err\n");

            let status = Command::new("true").status().await.unwrap();
            assert!(status.success(), "{name}");
            let status = Command::new("sh")
                .arg("-c")
                .arg("test \"$FOO\" = bar && test \"$(pwd)\" = /")
                .env("FOO", "bar")
                .current_dir("/")
                .stdout(Stdio::null())
                .status()
                .await
                .unwrap();
            assert!(status.success(), "{name}: env and current_dir");
            let e = Command::new("/no/such/program").spawn().unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        });
    }
}

#[test]
fn piped_stdio_are_async_streams() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            // More than a pipe holds: the writer and the reader must take
            // turns, through the reactor.
            let data: Vec<u8> = (0..512 * 1024u32).map(|i| (i % 253) as u8).collect();
            let mut child = Command::new("cat")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            assert!(child.id().is_some());
            let mut stdin = child.stdin.take().unwrap();
            let mut stdout = child.stdout.take().unwrap();
            let to_write = data.clone();
            let writer = fulcrum_runtime::spawn(async move {
                stdin.write_all(&to_write).await.unwrap();
                // Dropped: cat reads end-of-file.
            });
            let mut back = Vec::new();
            timeout(LIMIT, stdout.read_to_end(&mut back))
                .await
                .unwrap()
                .unwrap();
            writer.await.unwrap();
            assert!(back == data, "{name}: {} bytes back", back.len());
            assert!(child.wait().await.unwrap().success());
            assert_eq!(child.id(), None, "no id once waited for");
        });
    }
}

#[test]
fn wait_closes_stdin_first() {
    let rt = Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        assert!(child.stdin.is_some());
        let status = timeout(LIMIT, child.wait())
            .await
            .expect("cat saw end-of-file");
        assert!(status.unwrap().success());
        assert!(child.stdin.is_none());
    });
}

#[test]
fn kill_try_wait_and_start_kill() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
            assert!(child.try_wait().unwrap().is_none(), "{name}: still running");
            let pid = child.id().unwrap();
            child.kill().await.unwrap();
            let status = child.try_wait().unwrap().expect("exited");
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{name}");
            assert!(reaped(pid), "{name}: reaped by the wait");
            let e = child.start_kill().unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);

            let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
            child.start_kill().unwrap();
            let status = timeout(LIMIT, child.wait()).await.unwrap().unwrap();
            assert_eq!(status.signal(), Some(libc::SIGKILL));
        });
    }
}

#[test]
fn kill_on_drop_kills_and_reaps() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let mut cmd = Command::new("sleep");
            cmd.arg("1000").kill_on_drop(true);
            assert!(cmd.get_kill_on_drop());
            let child = cmd.spawn().unwrap();
            let pid = child.id().unwrap();
            drop(child);
            assert!(
                wait_until_reaped(pid).await,
                "{name}: pid {pid} is a zombie or alive"
            );

            // The future of `status` owns its child: dropping it kills.
            let mut cmd = Command::new("sleep");
            cmd.arg("1000").kill_on_drop(true);
            let r = timeout(Duration::from_millis(20), cmd.status()).await;
            assert!(r.is_err());
        });
    }
}

#[test]
fn a_dropped_child_keeps_running_and_is_reaped_when_it_exits() {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let child: Child = Command::new("sleep").arg("1000").spawn().unwrap();
        let pid = child.id().unwrap();
        drop(child);
        sleep(Duration::from_millis(20)).await;
        assert!(
            !reaped(pid),
            "still running: not killed without kill_on_drop"
        );
        // SAFETY: signals a child of this test, still unreaped (so the pid
        // is still ours).
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
        assert!(wait_until_reaped(pid).await, "pid {pid} left a zombie");
    });
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn many_children_no_thread_each() {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let before = threads();
        let mut children: Vec<Child> = (0..40)
            .map(|_| Command::new("sleep").arg("0.3").spawn().unwrap())
            .collect();
        let waits: Vec<_> = children
            .drain(..)
            .map(|mut c| fulcrum_runtime::spawn(async move { c.wait().await }))
            .collect();
        sleep(Duration::from_millis(50)).await;
        let during = threads();
        for w in waits {
            assert!(w.await.unwrap().unwrap().success());
        }
        assert!(
            during < before + 10,
            "{during} threads while waiting for 40 children (were {before})"
        );
    });
}

#[test]
fn pipelines_through_stdio() {
    let rt = Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut first = Command::new("echo")
            .arg("hello")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe: Stdio = first.stdout.take().unwrap().try_into().unwrap();
        let out = Command::new("tr")
            .args(["a-z", "A-Z"])
            .stdin(pipe)
            .output()
            .await
            .unwrap();
        assert_eq!(out.stdout, b"HELLO\n");
        assert!(first.wait().await.unwrap().success());
    });
}

#[test]
fn wait_with_output_reads_while_waiting() {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        // More output than a pipe holds: waiting without reading would
        // deadlock.
        let child = Command::new("sh")
            .args(["-c", "head -c 300000 /dev/zero; echo done >&2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = timeout(LIMIT, child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), 300_000);
        assert_eq!(out.stderr, b"done\n");
    });
}

//! `stdin`, `stdout` and `stderr` as tokio's, through a real child
//! process: this test binary runs itself as the child (`harness = false`),
//! which echoes its stdin upper-cased to stdout and reports on stderr,
//! with Fulcrum's standard streams.

use std::process::Stdio;
use std::time::Duration;

use fulcrum_net::process::Command;
use fulcrum_net::{stderr, stdin, stdout};
use fulcrum_runtime::Builder;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CHILD: &str = "FULCRUM_STDIO_TEST_CHILD";

fn child() {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut lines = BufReader::new(stdin()).lines();
        let mut out = stdout();
        let mut n = 0;
        while let Some(line) = lines.next_line().await.unwrap() {
            out.write_all(line.to_uppercase().as_bytes()).await.unwrap();
            out.write_all(b"\n").await.unwrap();
            n += 1;
        }
        out.flush().await.unwrap();
        let mut err = stderr();
        err.write_all(format!("{n} lines\n").as_bytes())
            .await
            .unwrap();
        err.flush().await.unwrap();
    });
}

fn parent() {
    let rt = Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .env(CHILD, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let lines: Vec<String> = (0..2000).map(|i| format!("line {i}")).collect();
        let text = lines.join("\n") + "\n";
        let writer = fulcrum_runtime::spawn(async move {
            input.write_all(text.as_bytes()).await.unwrap();
        });
        let out = fulcrum_runtime::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("the child finished")
            .unwrap();
        writer.await.unwrap();
        assert!(out.status.success(), "{out:?}");
        let expected = lines
            .iter()
            .map(|l| l.to_uppercase() + "\n")
            .collect::<String>();
        assert!(
            String::from_utf8(out.stdout).unwrap() == expected,
            "stdout differs"
        );
        assert_eq!(out.stderr, b"2000 lines\n");
    });
    println!("stdio: ok (stdin, stdout, stderr through a child process)");
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        child();
    } else {
        parent();
    }
}

//! The `fulcrum` facade used the way tokio code uses `tokio`: spawn and
//! join, time, `select!`/`join!`, `JoinSet`, and `sync` channels.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulcrum::sync::{mpsc, oneshot};
use fulcrum::task::JoinSet;
use fulcrum::time::{sleep, timeout};

mod common;
use common::runtimes;

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

#[test]
fn spawn_and_join_like_rt_common() {
    for (name, rt) in runtimes() {
        let out = rt.block_on(async {
            let a = fulcrum::spawn(async { 1 });
            let b = fulcrum::task::spawn(async { 2 });
            let c = fulcrum::task::spawn_blocking(|| 3);
            a.await.unwrap() + b.await.unwrap() + c.await.unwrap()
        });
        assert_eq!(out, 6, "{name}");
    }
}

#[test]
fn select_takes_the_first_and_drops_the_losers() {
    for (name, rt) in runtimes() {
        let dropped = Arc::new(AtomicBool::new(false));
        let d2 = dropped.clone();
        let winner = rt.block_on(async move {
            let guard = SetOnDrop(d2);
            let slow = async move {
                let _guard = guard;
                sleep(Duration::from_secs(10)).await;
                "slow"
            };
            fulcrum::select! {
                v = slow => v,
                _ = sleep(Duration::from_millis(5)) => "fast",
            }
        });
        assert_eq!(winner, "fast", "{name}");
        assert!(
            dropped.load(SeqCst),
            "{name}: the losing branch was not dropped"
        );
    }
}

#[test]
fn select_with_patterns_biased_and_else() {
    for (name, rt) in runtimes() {
        let got = rt.block_on(async {
            let (tx, mut rx) = mpsc::channel::<u32>(4);
            drop(tx);
            let mut log = Vec::new();
            for _ in 0..2 {
                fulcrum::select! {
                    biased;
                    Some(v) = rx.recv() => log.push(v),
                    else => log.push(0),
                }
            }
            let (tx2, mut rx2) = mpsc::channel::<u32>(4);
            tx2.send(7).await.unwrap();
            fulcrum::select! {
                biased;
                Some(v) = rx2.recv() => log.push(v),
                _ = sleep(Duration::from_secs(5)) => log.push(99),
            }
            log
        });
        assert_eq!(got, [0, 0, 7], "{name}");
    }
}

#[test]
fn join_and_try_join() {
    for (name, rt) in runtimes() {
        let (a, b) = rt.block_on(async {
            fulcrum::join!(
                async {
                    sleep(Duration::from_millis(5)).await;
                    1
                },
                async { 2 }
            )
        });
        assert_eq!((a, b), (1, 2), "{name}");
        let r: Result<(u8, u8), &str> =
            rt.block_on(async { fulcrum::try_join!(async { Ok(1) }, async { Err("no") }) });
        assert_eq!(r, Err("no"), "{name}");
    }
}

#[test]
fn pin_and_timeout() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let s = sleep(Duration::from_millis(2));
            fulcrum::pin!(s);
            (&mut s).await;
            let t = Instant::now();
            let r = timeout(Duration::from_millis(10), std::future::pending::<()>()).await;
            assert!(r.is_err());
            assert!(t.elapsed() >= Duration::from_millis(10));
        });
        let _ = name;
    }
}

#[test]
fn join_set_and_oneshot() {
    for (name, rt) in runtimes() {
        let sum = rt.block_on(async {
            let mut set = JoinSet::new();
            let (tx, rx) = oneshot::channel();
            set.spawn(async move { rx.await.unwrap_or(0) });
            for i in 1..=9u64 {
                set.spawn(async move { i });
            }
            tx.send(100).unwrap();
            let mut sum = 0;
            while let Some(r) = set.join_next().await {
                sum += r.unwrap();
            }
            sum
        });
        assert_eq!(sum, 145, "{name}");
    }
}

/// The tokio features that `cargo tree` resolves for `package` (with
/// `features`), inverted on tokio: checked on the resolved dependency graph,
/// not on this test binary, whose dev-dependencies may differ.
fn assert_no_tokio_runtime(package: &str, features: &str) {
    assert_no_tokio_runtime_allowing(package, features, &[]);
}

/// [`assert_no_tokio_runtime`], tolerating the tokio features in `allowed`.
fn assert_no_tokio_runtime_allowing(package: &str, features: &str, allowed: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec![
        "tree",
        "-p",
        package,
        "--edges",
        "normal,features",
        "--invert",
        "tokio",
        "--prefix",
        "none",
        "--offline",
    ];
    if !features.is_empty() {
        args.extend(["--features", features]);
    }
    let out = std::process::Command::new(cargo)
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("tokio feature \"io-util\""), "{tree}");
    for forbidden in [
        "\"rt\"",
        "\"rt-multi-thread\"",
        "\"time\"",
        "\"net\"",
        "\"fs\"",
        "\"process\"",
        "\"io-std\"",
        "\"signal\"",
        "\"test-util\"",
    ] {
        if allowed.contains(&forbidden) {
            continue;
        }
        assert!(
            !tree.contains(&format!("tokio feature {forbidden}")),
            "tokio {forbidden} is enabled for users of {package} [{features}]:\n{tree}"
        );
    }
}

/// A program depending on `fulcrum` gets no tokio runtime: tokio comes
/// without its `rt` features.
#[test]
fn no_tokio_runtime_in_the_dependency_graph() {
    assert_no_tokio_runtime("fulcrum", "");
}

/// Nor with the `hyper` feature: hyper runs on Fulcrum's executor, timer
/// and I/O adapter, without hyper-util's `tokio` feature.
#[test]
fn no_tokio_runtime_with_the_hyper_feature() {
    assert_no_tokio_runtime("fulcrum", "hyper");
    assert_no_tokio_runtime("fulcrum-net", "hyper");
}

/// Nor with the `http` feature: `fulcrum::http::serve` and the connector
/// use hyper-util without its `tokio` feature. hyper-util's `client-legacy`
/// (home of the `Connection` trait that the connector's streams implement)
/// compiles tokio's `net` in for its own `HttpConnector`; without `rt`, no
/// tokio runtime, and so no tokio I/O driver, can exist. (Feature `axum` compiles
/// tokio's `rt` in through axum's own `tokio` feature, needed by its
/// `ConnectInfo`, and starts nothing: tests/http_axum.rs checks that no
/// tokio thread runs. Feature `tokio-compat` starts one on purpose.)
#[test]
fn no_tokio_runtime_with_the_http_feature() {
    assert_no_tokio_runtime_allowing("fulcrum", "http", &["\"net\""]);
    assert_no_tokio_runtime_allowing("fulcrum-net", "http", &["\"net\""]);
}

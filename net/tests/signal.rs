//! Signals, on every scheduler, in their own test binary (signal handlers
//! are process-wide). Each test uses its own signal, so the tests can run
//! in parallel: SIGUSR1, SIGUSR2, SIGINT, SIGHUP, SIGWINCH.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use common::{assert_no_sockets_left, runtimes};
use fulcrum_net::signal::unix::{signal, SignalKind};
use fulcrum_net::signal::{self as sig};
use fulcrum_runtime::time::{sleep, timeout};
use fulcrum_runtime::{spawn, yield_now};

const LONG: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(30);

/// Sends `signum` to this process: any thread may run the handler, later.
fn raise(signum: libc::c_int) {
    // SAFETY: plain syscall; a handler for `signum` is installed first.
    let r = unsafe { libc::kill(libc::getpid(), signum) };
    assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
}

/// Sends `signum` to this thread: the handler has run when this returns.
fn raise_here(signum: libc::c_int) {
    // SAFETY: plain syscall; a handler for `signum` is installed first.
    let r = unsafe { libc::raise(signum) };
    assert_eq!(r, 0, "raise: {}", std::io::Error::last_os_error());
}

#[test]
fn a_listener_wakes_and_deliveries_coalesce() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let mut usr1 = signal(SignalKind::user_defined1()).unwrap();
            // Before the first poll: counted from `signal()` on.
            raise(libc::SIGUSR1);
            timeout(LONG, usr1.recv())
                .await
                .expect("woken")
                .expect("some");
            // Nothing new: no wake-up.
            assert!(timeout(SHORT, usr1.recv()).await.is_err(), "{name}");

            // While waiting, in another task.
            let waiter = spawn(async move {
                timeout(LONG, usr1.recv()).await.expect("woken").unwrap();
                usr1
            });
            sleep(Duration::from_millis(10)).await;
            raise(libc::SIGUSR1);
            let mut usr1 = waiter.await.unwrap();

            // Three deliveries (each handled before `raise` returns)
            // before the next recv: one wake-up.
            for _ in 0..3 {
                raise_here(libc::SIGUSR1);
            }
            timeout(LONG, usr1.recv()).await.expect("woken").unwrap();
            assert!(timeout(SHORT, usr1.recv()).await.is_err(), "{name}");
        });
        assert_no_sockets_left(name, &rt);
    }
}

#[test]
fn two_listeners_of_one_signal_both_wake() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let mut s = signal(SignalKind::user_defined2()).unwrap();
                    spawn(async move { timeout(LONG, s.recv()).await.is_ok() })
                })
                .collect();
            // Let both tasks start waiting (they may be on other workers).
            sleep(Duration::from_millis(20)).await;
            raise(libc::SIGUSR2);
            for w in waiters {
                assert!(w.await.unwrap(), "{name}: a listener was not woken");
            }
        });
        assert_no_sockets_left(name, &rt);
    }
}

#[test]
fn ctrl_c_completes_on_sigint() {
    // Installs the SIGINT handler before anything raises SIGINT.
    let _installed = signal(SignalKind::interrupt()).unwrap();
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let mut ctrl_c = pin!(sig::ctrl_c());
            // The first poll creates its listener; nothing delivered yet.
            let first = std::future::poll_fn(|cx| Poll::Ready(ctrl_c.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "{name}: {first:?}");
            raise(libc::SIGINT);
            timeout(LONG, ctrl_c)
                .await
                .expect("ctrl_c completed")
                .unwrap();
        });
        assert_no_sockets_left(name, &rt);
    }
}

#[test]
fn many_listeners_some_dropped() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let mut listeners: Vec<_> = (0..100)
                .map(|_| signal(SignalKind::hangup()).unwrap())
                .collect();
            // Half of them poll once (registering with a reactor), then
            // every other pair is dropped.
            for l in listeners.iter_mut().step_by(2) {
                assert!(timeout(Duration::from_millis(1), l.recv()).await.is_err());
            }
            let mut kept: Vec<_> = listeners
                .into_iter()
                .enumerate()
                .filter(|(i, _)| i % 4 < 2)
                .map(|(_, l)| l)
                .collect();
            // New listeners reuse the dropped ones' slots.
            kept.extend((0..20).map(|_| signal(SignalKind::hangup()).unwrap()));
            raise(libc::SIGHUP);
            let waiters: Vec<_> = kept
                .into_iter()
                .map(|mut l| spawn(async move { timeout(LONG, l.recv()).await.is_ok() }))
                .collect();
            let n = waiters.len();
            for w in waiters {
                assert!(w.await.unwrap(), "{name}: one of {n} listeners not woken");
            }
        });
        assert_no_sockets_left(name, &rt);
    }
}

#[test]
fn listeners_come_and_go_while_signals_fly() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let mut steady = signal(SignalKind::window_change()).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let sender = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        raise(libc::SIGWINCH);
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            };
            let churners: Vec<_> = (0..4)
                .map(|_| {
                    spawn(async {
                        for _ in 0..200 {
                            let mut s = signal(SignalKind::window_change()).unwrap();
                            let _ = timeout(Duration::from_micros(100), s.recv()).await;
                            drop(s);
                            yield_now().await;
                        }
                    })
                })
                .collect();
            for c in churners {
                c.await.unwrap();
            }
            stop.store(true, Ordering::SeqCst);
            sender.join().unwrap();
            // Whatever was delivered so far, one more wakes the steady one.
            let _ = timeout(SHORT, steady.recv()).await;
            raise(libc::SIGWINCH);
            timeout(LONG, steady.recv())
                .await
                .expect("woken")
                .expect("some");
        });
        assert_no_sockets_left(name, &rt);
    }
}

#[test]
fn forbidden_and_out_of_range_signals_are_refused() {
    for kind in [
        SignalKind::from_raw(libc::SIGKILL),
        SignalKind::from_raw(libc::SIGSEGV),
        SignalKind::from_raw(0),
        SignalKind::from_raw(1000),
    ] {
        let err = signal(kind).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{kind:?}");
    }
    assert_eq!(SignalKind::terminate().as_raw_value(), libc::SIGTERM);
    assert_eq!(
        libc::c_int::from(SignalKind::from(libc::SIGHUP)),
        libc::SIGHUP
    );
}

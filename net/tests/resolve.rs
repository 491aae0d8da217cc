//! `lookup_host` and host names in `connect`/`bind` on the system resolver
//! (only `localhost`, from `/etc/hosts`: there is no network here).

use std::io;
use std::net::SocketAddr;

use fulcrum_net::{lookup_host, TcpListener, TcpStream};
use fulcrum_runtime::Builder;

#[test]
fn localhost_resolves_and_connects() {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let addrs: Vec<SocketAddr> = lookup_host("localhost:8080").await.unwrap().collect();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080),
            "{addrs:?}"
        );

        let listener = TcpListener::bind(("localhost", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ip = listener.local_addr().unwrap().ip();
        let client = TcpStream::connect((ip.to_string(), port)).await.unwrap();
        assert_eq!(client.peer_addr().unwrap().port(), port);
    });
}

#[test]
fn malformed_names_are_input_errors() {
    let rt = Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let e = lookup_host("localhost").await.err().expect("no port");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = lookup_host("localhost:http").await.err().expect("bad port");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "invalid port value");
    });
}

#[test]
fn a_lookup_outside_a_runtime_is_an_error_but_literals_work() {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    fn poll_once<F: std::future::Future>(f: F) -> std::task::Poll<F::Output> {
        let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
        let mut cx = std::task::Context::from_waker(&waker);
        std::pin::pin!(f).poll(&mut cx)
    }
    // No runtime: a name has no blocking pool to be looked up on.
    match poll_once(lookup_host("localhost:80")) {
        std::task::Poll::Ready(Err(e)) => {
            assert!(e.to_string().contains("needs a Fulcrum runtime"), "{e}")
        }
        _ => panic!("expected an error at once"),
    }
    // An address resolves without one.
    match poll_once(lookup_host("127.0.0.1:80")) {
        std::task::Poll::Ready(Ok(addrs)) => {
            assert_eq!(
                addrs.collect::<Vec<_>>(),
                ["127.0.0.1:80".parse::<SocketAddr>().unwrap()]
            )
        }
        _ => panic!("expected the address at once"),
    }
}

//! A WebSocket echo with tokio-tungstenite on Fulcrum: the server upgrades a
//! connection of `fulcrum::http::serve` through hyper, the client is
//! `client_async` over a Fulcrum `TcpStream`.

mod web;

use std::convert::Infallible;

use bytes::Bytes;
use fulcrum::http::{HyperIo, Shared};
use fulcrum::net::{TcpListener, TcpStream};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use web::assert_no_tokio_runtime;

/// Upgrades `/ws` to a WebSocket that echoes every data message; anything
/// else is a 400.
async fn upgrade(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let (Some(key), true, "/ws") = (key, is_upgrade, req.uri().path()) else {
        let mut bad = Response::new(Full::new(Bytes::from_static(b"not a websocket")));
        *bad.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(bad);
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    drop(fulcrum::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => panic!("upgrade: {e}"),
        };
        let mut ws =
            WebSocketStream::from_raw_socket(HyperIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            let echo = msg.is_text() || msg.is_binary();
            if msg.is_close() || (echo && ws.send(msg).await.is_err()) {
                break;
            }
        }
    }));
    let accept = derive_accept_key(key.as_bytes());
    let resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::default())
        .unwrap_or_default();
    Ok(resp)
}

#[fulcrum::test]
async fn websocket_echo() {
    web::watch_panics();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = tower::service_fn(upgrade);
    let server =
        fulcrum::spawn(async move { fulcrum::http::serve(listener, Shared::new(service)).await });

    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .expect("handshake");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo, Message::text(format!("hello {i}")));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.unwrap();

    // A plain request on the same server is not upgraded.
    let got = web::get(&web::client(false), &format!("http://{addr}/ws")).await;
    assert_eq!((got.status.as_u16(), got.text()), (400, "not a websocket"));
    server.abort();
    assert_no_tokio_runtime();
}

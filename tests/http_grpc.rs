//! A tonic gRPC service and client on Fulcrum, over h2c: unary and
//! server-streaming calls, and an error status. tonic without its
//! `transport`: the generated server is served by `fulcrum::http::serve`,
//! the generated client runs over hyper-util's `Client` on Fulcrum's
//! `Connector` (`EchoClient::with_origin`). The code generated from
//! tests/proto/echo.proto is checked in (scripts/gen-grpc.sh regenerates
//! it), so the build needs no protoc.

mod web;

use std::pin::Pin;
use std::time::Duration;

use fulcrum::http::{Connector, FulcrumExecutor, FulcrumTimer, Shared};
use fulcrum::net::TcpListener;
use futures_util::{Stream, StreamExt};
use hyper_util::client::legacy::Client;
use tonic::{Code, Request, Response, Status};

#[allow(missing_docs, clippy::all)]
mod pb {
    include!("proto/echo.rs");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest};

struct EchoService;

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let req = request.into_inner();
        if req.message == "fail" {
            return Err(Status::invalid_argument("asked to fail"));
        }
        Ok(Response::new(EchoReply {
            message: format!("echo: {}", req.message),
            index: 0,
        }))
    }

    type StreamStream = ReplyStream;

    async fn stream(&self, request: Request<EchoRequest>) -> Result<Response<ReplyStream>, Status> {
        let req = request.into_inner();
        // One reply every 10 ms, timed by Fulcrum's timers.
        let replies = futures_util::stream::unfold(0u32, move |i| {
            let message = req.message.clone();
            async move {
                if i >= req.count {
                    return None;
                }
                fulcrum::time::sleep(Duration::from_millis(10)).await;
                let reply = EchoReply {
                    message: format!("{message} #{i}"),
                    index: i,
                };
                Some((Ok(reply), i + 1))
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

#[fulcrum::test]
async fn grpc_unary_and_server_streaming_over_h2c() {
    web::watch_panics();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = fulcrum::spawn(async move {
        fulcrum::http::serve(listener, Shared::new(EchoServer::new(EchoService))).await
    });

    let http: Client<Connector, tonic::body::Body> = Client::builder(FulcrumExecutor::new())
        .timer(FulcrumTimer::new())
        .pool_timer(FulcrumTimer::new())
        .http2_only(true)
        .build(Connector::new());
    let origin = format!("http://{addr}").parse().unwrap();
    let mut client = EchoClient::with_origin(http, origin);

    let reply = client
        .unary(EchoRequest {
            message: "hello".into(),
            count: 0,
        })
        .await
        .expect("unary call")
        .into_inner();
    assert_eq!(
        reply,
        EchoReply {
            message: "echo: hello".into(),
            index: 0
        }
    );

    let status = client
        .unary(EchoRequest {
            message: "fail".into(),
            count: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "asked to fail")
    );

    let mut stream = client
        .stream(EchoRequest {
            message: "tick".into(),
            count: 5,
        })
        .await
        .expect("streaming call")
        .into_inner();
    let mut got = Vec::new();
    while let Some(reply) = stream.next().await {
        let reply = reply.expect("stream item");
        got.push((reply.index, reply.message));
    }
    let want: Vec<(u32, String)> = (0..5).map(|i| (i, format!("tick #{i}"))).collect();
    assert_eq!(got, want);

    server.abort();
    web::assert_no_tokio_runtime();
}

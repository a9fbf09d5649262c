//! Section B of the contract with a real gRPC stack on both sides: tonic's client and server
//! halves over HTTP/2 (h2c and TLS with ALPN `h2`). The scenarios here are shared by the gateway
//! tests; the `harness_*` tests run them straight against the test service, so a failure through
//! the gateway is the gateway's.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use rustls_pki_types::CertificateDer;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::proxy::eventually;
use crate::support::grpc::{
    outbox, path, pattern, request, within, Bound, GrpcClient, GrpcUpstream, Method, Msg,
    FAIL_DETAIL, FAIL_DETAILS, FAIL_MESSAGE,
};
use crate::support::Pki;

const SHORT: Duration = Duration::from_secs(5);
const MIB: usize = 1024 * 1024;

async fn connect(addr: SocketAddr, ca: Option<&CertificateDer<'static>>) -> GrpcClient {
    match ca {
        Some(ca) => GrpcClient::tls(addr, ca).await,
        None => GrpcClient::h2c(addr).await,
    }
}

/// Adds `x-auth-subject: mallory`, which the gateway must replace with the token's subject.
fn spoofed<T>(mut req: tonic::Request<T>) -> tonic::Request<T> {
    req.metadata_mut()
        .insert("x-auth-subject", MetadataValue::from_static("mallory"));
    req
}

// ---------------------------------------------------------------------------------------------
// Scenarios shared by the gateway tests and the harness tests.

/// Unary, server, client and bidirectional streams on `service`, each proven unbuffered: a
/// streamed reply or message is seen on the other side before the sender finished.
async fn every_stream_kind(
    client: &GrpcClient,
    upstream: &GrpcUpstream,
    service: &str,
    token: Option<&str>,
) {
    // Unary, with response metadata.
    let p = path(service, Method::Unary);
    let sent = Msg {
        text: "hello".into(),
        payload: pattern(1000),
        ..Msg::default()
    };
    let reply = within(
        SHORT,
        &p,
        client.unary(&p, spoofed(request(sent.clone(), token))),
    )
    .await
    .unwrap_or_else(|s| panic!("{p}: {s:?}"));
    assert_eq!(reply.metadata().get("x-upstream").unwrap(), "grpc-echo");
    assert_eq!(reply.into_inner(), sent, "{p}: echo");

    // Server streaming: the first reply arrives while the upstream holds the rest back.
    let p = path(service, Method::ServerStream);
    let want = Msg {
        n: 3,
        size: 10,
        hold: true,
        ..Msg::default()
    };
    let mut replies = within(
        SHORT,
        &p,
        client.server_stream(&p, spoofed(request(want, token))),
    )
    .await
    .unwrap_or_else(|s| panic!("{p}: {s:?}"))
    .into_inner();
    let first = within(
        SHORT,
        "first streamed reply while the rest is held",
        replies.message(),
    )
    .await
    .unwrap_or_else(|s| panic!("{p}: {s:?}"))
    .expect("a first reply");
    assert_eq!(first.text, "0");
    upstream.release();
    for i in 1..3 {
        let m = within(SHORT, &p, replies.message())
            .await
            .unwrap_or_else(|s| panic!("{p}: {s:?}"))
            .expect("more replies");
        assert_eq!(m.text, i.to_string());
        assert_eq!(m.payload, pattern(10));
    }
    let end = within(SHORT, &p, replies.message()).await;
    assert!(matches!(end, Ok(None)), "{p}: clean end, got {end:?}");

    // Client streaming: the first message reaches the upstream before the client sends more.
    let p = path(service, Method::ClientStream);
    let (tx, rx) = outbox();
    let before = upstream.received();
    let call = {
        let (client, p, req) = (client.clone(), p.clone(), spoofed(request(rx, token)));
        tokio::spawn(async move { client.client_stream(&p, req).await })
    };
    let one = Msg {
        payload: pattern(100),
        ..Msg::default()
    };
    tx.send(one.clone()).await.expect("send");
    assert!(
        eventually(SHORT, || upstream.received() > before).await,
        "{p}: the first message never reached the upstream while the stream was open"
    );
    for _ in 0..4 {
        tx.send(one.clone()).await.expect("send");
    }
    drop(tx);
    let counted = within(SHORT, &p, call)
        .await
        .expect("task")
        .unwrap_or_else(|s| panic!("{p}: {s:?}"))
        .into_inner();
    assert_eq!((counted.n, counted.size), (5, 500), "{p}: count and sum");

    // Bidirectional: each reply arrives before the client sends its next message.
    let p = path(service, Method::Bidi);
    let (tx, rx) = outbox();
    tx.send(Msg::text("one")).await.expect("send");
    let mut replies = within(SHORT, &p, client.bidi(&p, spoofed(request(rx, token))))
        .await
        .unwrap_or_else(|s| panic!("{p}: {s:?}"))
        .into_inner();
    for word in ["one", "two", "three"] {
        if word != "one" {
            tx.send(Msg::text(word)).await.expect("send");
        }
        let m = within(
            SHORT,
            "bidi reply before the next message",
            replies.message(),
        )
        .await
        .unwrap_or_else(|s| panic!("{p}: {s:?}"))
        .expect("a reply");
        assert_eq!(m.text, word);
    }
    drop(tx);
    let end = within(SHORT, &p, replies.message()).await;
    assert!(matches!(end, Ok(None)), "{p}: clean end, got {end:?}");
}

/// An upstream `NOT_FOUND`, trailers-only (unary) and in real trailers after two messages.
async fn upstream_statuses(client: &GrpcClient, service: &str, token: Option<&str>) {
    let assert_fail = |p: &str, s: &Status| {
        assert_eq!(s.code(), Code::NotFound, "{p}: {s:?}");
        assert_eq!(s.message(), FAIL_MESSAGE, "{p}: grpc-message");
        assert_eq!(s.details(), FAIL_DETAILS, "{p}: grpc-status-details-bin");
        assert_eq!(
            s.metadata().get("x-detail").map(|v| v.to_str().unwrap()),
            Some(FAIL_DETAIL),
            "{p}: trailing metadata"
        );
    };
    let p = path(service, Method::Fail);
    let status = within(SHORT, &p, client.unary(&p, request(Msg::text("42"), token)))
        .await
        .expect_err("an upstream NOT_FOUND");
    assert_fail(&p, &status);

    let p = path(service, Method::FailStream);
    let mut replies = within(
        SHORT,
        &p,
        client.server_stream(&p, request(Msg::default(), token)),
    )
    .await
    .unwrap_or_else(|s| panic!("{p}: {s:?}"))
    .into_inner();
    for text in ["first", "second"] {
        let m = within(SHORT, &p, replies.message())
            .await
            .unwrap_or_else(|s| panic!("{p}: {s:?}"))
            .expect("a message before the status");
        assert_eq!(m.text, text);
    }
    let status = within(SHORT, &p, replies.message())
        .await
        .expect_err("NOT_FOUND in the trailers");
    assert_fail(&p, &status);
}

/// What stalls one of the 50 streams.
#[derive(Clone, Copy, Debug)]
enum Stall {
    /// A call to the method that never answers.
    Hang,
    /// A server stream of 32 MiB whose client reads nothing (flow control holds it).
    Unread,
}

/// 50 concurrent calls on `client`'s one connection, one of them stalled: the other 49 complete
/// within 10 s, and a second connection to `addr` is served meanwhile.
async fn fifty_streams_one_stalled(
    client: &GrpcClient,
    addr: SocketAddr,
    ca: Option<&CertificateDer<'static>>,
    upstream: &GrpcUpstream,
    service: &str,
    token: Option<&str>,
    stall: Stall,
) {
    let token = token.map(str::to_string);
    let mut held = None;
    let mut hanging = None;
    match stall {
        Stall::Hang => {
            let p = path(service, Method::Hang);
            let (c, t, p2) = (client.clone(), token.clone(), p.clone());
            hanging = Some(tokio::spawn(async move {
                tokio::time::timeout(
                    Duration::from_secs(60),
                    c.unary(&p2, request(Msg::default(), t.as_deref())),
                )
                .await
            }));
            assert!(
                eventually(SHORT, || upstream.calls_to(&p).len() == 1).await,
                "{p}: the stalled call never reached the upstream"
            );
        }
        Stall::Unread => {
            let p = path(service, Method::ServerStream);
            let want = Msg {
                n: 32,
                size: MIB as u64,
                ..Msg::default()
            };
            let replies = within(
                SHORT,
                &p,
                client.server_stream(&p, request(want, token.as_deref())),
            )
            .await
            .unwrap_or_else(|s| panic!("{p}: {s:?}"))
            .into_inner();
            // Long enough for the unread replies to fill every window on the way.
            tokio::time::sleep(Duration::from_millis(500)).await;
            held = Some(replies);
        }
    }

    let started = Instant::now();
    let mut calls = JoinSet::new();
    for i in 0..49 {
        let (c, t) = (client.clone(), token.clone());
        let p = path(service, Method::Unary);
        calls.spawn(async move {
            let r = c
                .unary(&p, request(Msg::text(&i.to_string()), t.as_deref()))
                .await;
            (i, r)
        });
    }
    let mut done = 0;
    within(
        Duration::from_secs(10),
        &format!("49 calls beside a stalled one ({stall:?})"),
        async {
            while let Some(joined) = calls.join_next().await {
                let (i, r) = joined.expect("task");
                let m = r.unwrap_or_else(|s| panic!("call {i} beside a stalled one: {s:?}"));
                assert_eq!(m.into_inner().text, i.to_string());
                done += 1;
            }
        },
    )
    .await;
    assert_eq!(done, 49);
    let elapsed = started.elapsed();

    let second = within(SHORT, "a second connection", connect(addr, ca)).await;
    let p = path(service, Method::Unary);
    let r = within(
        SHORT,
        "a call on a second connection",
        second.unary(&p, request(Msg::text("second"), token.as_deref())),
    )
    .await
    .unwrap_or_else(|s| panic!("second connection: {s:?}"));
    assert_eq!(r.into_inner().text, "second");

    if let Some(h) = &hanging {
        assert!(
            !h.is_finished(),
            "the stalled call ended early: {elapsed:?}"
        );
    }
    if let Some(h) = hanging {
        h.abort();
    }
    // The stalled stream itself was only held back, never broken: read it to its end now.
    if let Some(mut replies) = held {
        for i in 0..32 {
            let m = within(
                Duration::from_secs(10),
                "the unread stream, read late",
                replies.message(),
            )
            .await
            .unwrap_or_else(|s| panic!("unread stream, reply {i}: {s:?}"))
            .expect("all 32 replies");
            assert_eq!(m.text, i.to_string());
            assert_eq!(m.payload.len(), MIB);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The harness, straight against the test service: these must pass whatever the gateway does.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_every_stream_kind_direct_over_h2c_and_tls() {
    let h2c = GrpcUpstream::h2c().await;
    let client = GrpcClient::h2c(h2c.addr).await;
    every_stream_kind(&client, &h2c, "test.Echo", Some("t0ken")).await;
    // The assertions the gateway tests make would see these values without a gateway.
    let call = &h2c.calls_to("/test.Echo/Unary")[0];
    assert_eq!(call.values("x-auth-subject"), ["mallory"]);
    assert_eq!(call.values("authorization"), ["Bearer t0ken"]);
    assert_eq!(call.values("te"), ["trailers"]);

    let pki = Pki::new();
    let tls = Bound::new().await.tls(&pki);
    assert!(tls.url().starts_with("https://127.0.0.1:"));
    let client = GrpcClient::tls(tls.addr, &pki.ca_der).await;
    every_stream_kind(&client, &tls, "tls.Echo", None).await;
    assert_eq!(tls.alpn(), [Some(b"h2".to_vec())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_statuses_and_4mb_messages_direct() {
    let up = GrpcUpstream::h2c().await;
    let client = GrpcClient::h2c(up.addr).await;
    upstream_statuses(&client, "test.Echo", None).await;
    // The head checks `expect_grpc_denial` makes, on the test service's own trailers-only answer.
    let head = client.last_exchange("/test.Echo/Fail").expect("a head");
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-type"], "application/grpc");
    assert_eq!(head.headers["grpc-status"], "5");
    assert!(head.headers.contains_key("grpc-message"));
    let big = pattern(4 * MIB);
    let p = path("test.Echo", Method::Unary);
    let reply = within(
        Duration::from_secs(20),
        &p,
        client.unary(
            &p,
            request(
                Msg {
                    payload: big.clone(),
                    ..Msg::default()
                },
                None,
            ),
        ),
    )
    .await
    .expect("4 MiB echo");
    assert!(reply.into_inner().payload == big, "4 MiB echoed intact");
}

/// The test service never enforces `grpc-timeout` (tonic's transport would): through the gateway,
/// only the gateway can end the sleeping call with `DEADLINE_EXCEEDED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_test_service_ignores_grpc_timeout() {
    let up = GrpcUpstream::h2c().await;
    let client = GrpcClient::h2c(up.addr).await;
    let p = path("test.Echo", Method::Sleep);
    let mut req = request(
        Msg {
            n: 500,
            ..Msg::default()
        },
        None,
    );
    req.set_timeout(Duration::from_millis(100));
    let started = Instant::now();
    within(SHORT, &p, client.unary(&p, req))
        .await
        .expect("the test service answers after its sleep");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(
        up.calls_to(&p)[0].grpc_timeout(),
        Some(Duration::from_millis(100))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_goaway_and_restart_direct() {
    let up = GrpcUpstream::h2c().await;
    let client = GrpcClient::h2c(up.addr).await;
    let p = path("test.Echo", Method::Sleep);
    let in_flight = {
        let (c, p) = (client.clone(), p.clone());
        let req = request(
            Msg {
                n: 300,
                ..Msg::default()
            },
            None,
        );
        tokio::spawn(async move { c.unary(&p, req).await })
    };
    assert!(eventually(SHORT, || up.calls_to(&p).len() == 1).await);
    up.goaway();
    within(SHORT, "in-flight call across GOAWAY", in_flight)
        .await
        .expect("task")
        .expect("an in-flight call finishes after a graceful GOAWAY");
    assert!(
        eventually(SHORT, || client.is_closed()).await,
        "GOAWAY closes the connection"
    );
    let again = GrpcClient::h2c(up.addr).await;
    let unary = path("test.Echo", Method::Unary);
    within(
        SHORT,
        &unary,
        again.unary(&unary, request(Msg::text("a"), None)),
    )
    .await
    .expect("a new connection after GOAWAY");
    assert_eq!(up.connections(), 2);

    up.stop().await;
    assert_eq!(up.open_connections(), 0);
    assert!(tokio::net::TcpStream::connect(up.addr).await.is_err());
    let up2 = up.restart().await;
    let client = GrpcClient::h2c(up2.addr).await;
    within(
        SHORT,
        &unary,
        client.unary(&unary, request(Msg::text("b"), None)),
    )
    .await
    .expect("served again on the same port");
    assert_eq!(up2.calls_to(&unary).len(), 2, "one log across the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_fifty_streams_one_stalled_direct() {
    let up = GrpcUpstream::h2c().await;
    let client = GrpcClient::h2c(up.addr).await;
    for stall in [Stall::Hang, Stall::Unread] {
        fifty_streams_one_stalled(&client, up.addr, None, &up, "test.Echo", None, stall).await;
    }
}

//! Section B of the contract end to end, with a real gRPC stack on both sides: tonic's client and
//! server halves over HTTP/2 (h2c and TLS with ALPN `h2`), through the gateway to upstreams
//! reached with `upstream_protocol: http2` (h2c, prior knowledge) and `auto` (TLS, ALPN `h2`).
//! Each test asserts what the upstream received and what the client got. The `harness_*` tests
//! run the same scenarios straight against the test service, so a failure elsewhere is the
//! gateway's.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::proxy::{closed_port, eventually};
use crate::support::grpc::{
    outbox, path, pattern, request, within, Bound, GrpcClient, GrpcUpstream, Method, Msg,
    FAIL_DETAIL, FAIL_DETAILS, FAIL_MESSAGE,
};
use crate::support::rig::Backends;
use crate::support::yaml::provider;
use crate::support::{claims, metric, now, Issuer, Pki, SigningKey, TestGateway, Upstream};

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

// ---------------------------------------------------------------------------------------------
// Through the gateway.

/// How clients reach the gateway.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Front {
    /// `insecure_plaintext: true`, HTTP/2 with prior knowledge.
    H2c,
    /// TLS with ALPN `h2`.
    Tls,
}

/// The gateway with its upstreams, one route each (the gRPC service name picks the route):
///
/// | service     | route       | upstream                                   | auth      |
/// |-------------|-------------|--------------------------------------------|-----------|
/// | `test.Echo` | `grpc`      | `h2c`: `http://` + `http2`                 | protected |
/// | `tls.Echo`  | `grpc-tls`  | `tls`: `https://` + `auto` (ALPN `h2`)     | protected |
/// | `anon.Echo` | `grpc-anon` | `h2c`                                      | anonymous |
/// | `h1.Echo`   | `grpc-h1`   | `http1`: HTTP/1.1 only, `http://` + `auto` | anonymous |
/// | `h1x.Echo`  | `grpc-h1x`  | `h2c`, but `upstream_protocol: http1`      | anonymous |
/// | `down.Echo` | `grpc-down` | a closed port, `http2`                     | anonymous |
///
/// Protected: provider `test`, role `orders.read`, `sub` forwarded as `X-Auth-Subject`.
struct GrpcRig {
    gw: TestGateway,
    issuer: Issuer,
    key: SigningKey,
    h2c: GrpcUpstream,
    tls: GrpcUpstream,
    http1: Upstream,
}

const PROTECTED: &str = r#"    auth:
      providers: [test]
      require:
        - claim: realm_access.roles
          any_of: [orders.read]
    forward:
      claims:
        sub: X-Auth-Subject
"#;

impl GrpcRig {
    /// `limits` are extra lines under `server.limits` (4 spaces in), beside `request_timeout: 30s`.
    async fn start(front: Front, limits: &str) -> GrpcRig {
        let Backends { issuer, keys, .. } = Backends::es256().await;
        let key = keys[0].0.clone();
        let h2c = GrpcUpstream::h2c().await;
        let tls_port = Bound::new().await;
        let http1 = Upstream::start().await;
        let front_yaml = match front {
            Front::H2c => "  insecure_plaintext: true",
            Front::Tls => "  tls: { cert_file: gateway.crt, key_file: gateway.key }",
        };
        let providers = format!("providers:\n{}", provider(&issuer));
        let yaml = format!(
            r#"
server:
{front_yaml}
  limits:
    request_timeout: 30s
{limits}{providers}routes:
  - name: grpc
    match: {{ path_prefix: /test.Echo }}
    upstream: "{h2c}"
    upstream_protocol: http2
{PROTECTED}  - name: grpc-tls
    match: {{ path_prefix: /tls.Echo }}
    upstream: "https://{tls}"
    upstream_protocol: auto
{PROTECTED}  - name: grpc-anon
    match: {{ path_prefix: /anon.Echo }}
    upstream: "{h2c}"
    upstream_protocol: http2
    auth: anonymous
  - name: grpc-h1
    match: {{ path_prefix: /h1.Echo }}
    upstream: "{http1}"
    upstream_protocol: auto
    auth: anonymous
  - name: grpc-h1x
    match: {{ path_prefix: /h1x.Echo }}
    upstream: "{h2c}"
    upstream_protocol: http1
    auth: anonymous
  - name: grpc-down
    match: {{ path_prefix: /down.Echo }}
    upstream: "http://127.0.0.1:{down}"
    upstream_protocol: http2
    auth: anonymous
"#,
            providers = providers,
            h2c = h2c.url(),
            tls = tls_port.addr,
            http1 = http1.url(),
            down = closed_port(),
        );
        let gw = TestGateway::start(&yaml).await;
        // The TLS upstream's certificate comes from the CA the gateway trusts for upstreams.
        let tls = tls_port.tls(&gw.pki);
        GrpcRig {
            gw,
            issuer,
            key,
            h2c,
            tls,
            http1,
        }
    }

    /// A new client connection to the gateway, over whatever the front speaks.
    async fn client(&self) -> GrpcClient {
        connect(self.gw.addr, self.gw.tls.then_some(&self.gw.pki.ca_der)).await
    }

    /// A valid token for `alice` with role `orders.read`.
    fn token(&self) -> String {
        self.token_with(|_| {})
    }

    fn token_with(&self, change: impl FnOnce(&mut Value)) -> String {
        let mut c = claims(&self.issuer.iss(), "orders-api");
        change(&mut c);
        self.key.mint("ES256", &c)
    }

    /// No call reached any upstream.
    fn assert_no_upstream_call(&self, what: &str) {
        assert!(
            self.h2c.calls().is_empty(),
            "{what}: reached the h2c upstream"
        );
        assert!(
            self.tls.calls().is_empty(),
            "{what}: reached the TLS upstream"
        );
        assert_eq!(
            self.http1.requests(),
            0,
            "{what}: reached the HTTP/1.1 upstream"
        );
    }
}

/// Polls the gateway's `/metrics` until `series` reads `want` (5 s at most): a call's status is
/// counted once its trailers went by, which may be just after the client saw them.
async fn expect_metric(gw: &TestGateway, series: &str, want: f64) {
    let deadline = Instant::now() + SHORT;
    loop {
        let text = gw.metrics().await;
        let got = metric(&text, series);
        if got == Some(want) {
            return;
        }
        if Instant::now() >= deadline {
            let family = series.split('{').next().unwrap_or(series);
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(family)).collect();
            panic!(
                "{series}: want {want}, got {got:?}; {family} has:\n{}",
                lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The four calls of `every_stream_kind` as the upstream got them through the gateway: the token's
/// subject (not the spoofed one), no `Authorization`, `te: trailers`.
fn assert_forwarded(upstream: &GrpcUpstream, service: &str) {
    for m in [
        Method::Unary,
        Method::ServerStream,
        Method::ClientStream,
        Method::Bidi,
    ] {
        let p = path(service, m);
        let calls = upstream.calls_to(&p);
        assert_eq!(calls.len(), 1, "{p}: calls upstream");
        let call = &calls[0];
        assert_eq!(call.values("x-auth-subject"), ["alice"], "{p}");
        assert!(
            call.values("authorization").is_empty(),
            "{p}: Authorization must be stripped"
        );
        assert_eq!(call.values("te"), ["trailers"], "{p}");
        let ct = call.values("content-type");
        assert!(
            ct.len() == 1 && ct[0].starts_with("application/grpc"),
            "{p}: content-type {ct:?}"
        );
    }
}

/// Unary and all three stream kinds, h2c to the gateway, to an h2c and a TLS upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_kind_over_h2c_to_h2c_and_tls_upstreams() {
    let rig = GrpcRig::start(Front::H2c, "").await;
    let client = rig.client().await;
    let token = rig.token();
    every_stream_kind(&client, &rig.h2c, "test.Echo", Some(&token)).await;
    assert_forwarded(&rig.h2c, "test.Echo");
    every_stream_kind(&client, &rig.tls, "tls.Echo", Some(&token)).await;
    assert_forwarded(&rig.tls, "tls.Echo");
    assert!(
        !rig.tls.alpn().is_empty() && rig.tls.alpn().iter().all(|p| p.as_deref() == Some(b"h2")),
        "the gateway negotiates h2 with a TLS upstream: {:?}",
        rig.tls.alpn()
    );
}

/// The same over TLS with ALPN `h2` to the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_kind_over_tls_to_h2c_and_tls_upstreams() {
    let rig = GrpcRig::start(Front::Tls, "").await;
    let client = rig.client().await;
    let token = rig.token();
    every_stream_kind(&client, &rig.h2c, "test.Echo", Some(&token)).await;
    assert_forwarded(&rig.h2c, "test.Echo");
    every_stream_kind(&client, &rig.tls, "tls.Echo", Some(&token)).await;
    assert_forwarded(&rig.tls, "tls.Echo");
}

/// A 4 MiB request and a 4 MiB response, both upstream kinds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_mib_messages_both_ways() {
    let rig = GrpcRig::start(Front::H2c, "").await;
    let client = rig.client().await;
    let token = rig.token();
    let big = pattern(4 * MIB);
    for service in ["test.Echo", "tls.Echo"] {
        let p = path(service, Method::Unary);
        let sent = Msg {
            payload: big.clone(),
            ..Msg::default()
        };
        let reply = within(
            Duration::from_secs(20),
            &p,
            client.unary(&p, request(sent, Some(&token))),
        )
        .await
        .unwrap_or_else(|s| panic!("{p}: 4 MiB echo: {s:?}"));
        assert!(reply.into_inner().payload == big, "{p}: 4 MiB intact");

        let p = path(service, Method::ServerStream);
        let want = Msg {
            n: 1,
            size: (4 * MIB) as u64,
            ..Msg::default()
        };
        let mut replies = within(
            SHORT,
            &p,
            client.server_stream(&p, request(want, Some(&token))),
        )
        .await
        .unwrap_or_else(|s| panic!("{p}: {s:?}"))
        .into_inner();
        let m = within(Duration::from_secs(20), &p, replies.message())
            .await
            .unwrap_or_else(|s| panic!("{p}: 4 MiB reply: {s:?}"))
            .expect("one reply");
        assert!(m.payload == big, "{p}: 4 MiB reply intact");
        assert!(matches!(
            within(SHORT, &p, replies.message()).await,
            Ok(None)
        ));
    }
}

/// An upstream's non-OK status, message, details and trailing metadata reach the client as sent,
/// trailers-only and after messages; each status is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_status_and_trailing_metadata_reach_the_client() {
    let rig = GrpcRig::start(Front::H2c, "").await;
    let client = rig.client().await;
    let token = rig.token();
    for (service, route) in [("test.Echo", "grpc"), ("tls.Echo", "grpc-tls")] {
        let p = path(service, Method::Unary);
        within(
            SHORT,
            &p,
            client.unary(&p, request(Msg::text("ok"), Some(&token))),
        )
        .await
        .unwrap_or_else(|s| panic!("{p}: {s:?}"));
        upstream_statuses(&client, service, Some(&token)).await;

        let gw = &rig.gw;
        expect_metric(
            gw,
            &format!(r#"gateway_grpc_responses_total{{grpc_status="0",route="{route}"}}"#),
            1.0,
        )
        .await;
        expect_metric(
            gw,
            &format!(r#"gateway_grpc_responses_total{{grpc_status="5",route="{route}"}}"#),
            2.0,
        )
        .await;
        expect_metric(
            gw,
            &format!(r#"gateway_requests_total{{code="200",route="{route}"}}"#),
            3.0,
        )
        .await;
    }
}

/// Calls `path` and asserts the gateway refused it with exactly `code` as a trailers-only gRPC
/// response (HTTP 200, `application/grpc`, `grpc-status` and `grpc-message` in the head) and
/// that no upstream saw it.
async fn expect_grpc_denial(
    rig: &GrpcRig,
    client: &GrpcClient,
    path: &str,
    token: Option<&str>,
    code: Code,
) -> Status {
    expect_grpc_denial_of(rig, client, path, request(Msg::text("x"), token), code).await
}

async fn expect_grpc_denial_of(
    rig: &GrpcRig,
    client: &GrpcClient,
    path: &str,
    req: tonic::Request<Msg>,
    code: Code,
) -> Status {
    let status = match within(SHORT, path, client.unary(path, req)).await {
        Ok(r) => panic!("{path}: want {code:?}, the call passed: {r:?}"),
        Err(s) => s,
    };
    assert_eq!(status.code(), code, "{path}: {status:?}");
    let head = client
        .last_exchange(path)
        .unwrap_or_else(|| panic!("{path}: no response head"));
    assert_eq!(
        head.status,
        StatusCode::OK,
        "{path}: a gRPC denial is HTTP 200"
    );
    let ct = head.headers.get("content-type").map(|v| v.as_bytes());
    assert_eq!(ct, Some(&b"application/grpc"[..]), "{path}: content-type");
    assert_eq!(
        head.headers.get("grpc-status").map(|v| v.as_bytes()),
        Some((code as i32).to_string().as_bytes()),
        "{path}: trailers-only: grpc-status in the head"
    );
    assert!(
        head.headers.contains_key("grpc-message"),
        "{path}: grpc-message in the head"
    );
    rig.assert_no_upstream_call(path);
    status
}

fn challenge(status: &Status) -> String {
    status
        .metadata()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Every denial as a gRPC status (contract mapping), none reaching an upstream, each counted
/// under its HTTP code and its gRPC status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_are_grpc_statuses_and_reach_no_upstream() {
    let rig = GrpcRig::start(Front::H2c, "").await;
    let client = rig.client().await;
    let unary = path("test.Echo", Method::Unary);

    let s = expect_grpc_denial(&rig, &client, &unary, None, Code::Unauthenticated).await;
    assert_eq!(challenge(&s), r#"Bearer realm="jwt-gateway""#, "no token");

    let s = expect_grpc_denial(
        &rig,
        &client,
        &unary,
        Some("not.a.token"),
        Code::Unauthenticated,
    )
    .await;
    assert!(
        challenge(&s).starts_with(r#"Bearer error="invalid_token""#),
        "bad token: {:?}",
        challenge(&s)
    );

    let expired = rig.token_with(|c| {
        c["iat"] = json!(now() - 7200);
        c["nbf"] = json!(now() - 7200);
        c["exp"] = json!(now() - 600);
    });
    let s = expect_grpc_denial(&rig, &client, &unary, Some(&expired), Code::Unauthenticated).await;
    assert!(
        challenge(&s).starts_with(r#"Bearer error="invalid_token""#),
        "expired token: {:?}",
        challenge(&s)
    );

    let no_role = rig.token_with(|c| c["realm_access"]["roles"] = json!(["user"]));
    let s = expect_grpc_denial(
        &rig,
        &client,
        &unary,
        Some(&no_role),
        Code::PermissionDenied,
    )
    .await;
    assert!(
        challenge(&s).starts_with(r#"Bearer error="insufficient_scope""#),
        "missing role: {:?}",
        challenge(&s)
    );

    let mut two = request(Msg::text("x"), Some(&rig.token()));
    two.metadata_mut().append(
        "authorization",
        format!("Bearer {}", rig.token()).parse().unwrap(),
    );
    let s = expect_grpc_denial_of(&rig, &client, &unary, two, Code::InvalidArgument).await;
    assert!(
        challenge(&s).starts_with(r#"Bearer error="invalid_request""#),
        "two Authorization headers: {:?}",
        challenge(&s)
    );

    // tonic takes any path: an encoded `/` is an unsafe path, refused before routing.
    expect_grpc_denial(
        &rig,
        &client,
        "/anon.Echo/Un%2Fary",
        None,
        Code::InvalidArgument,
    )
    .await;

    let p = path("nope.Echo", Method::Unary);
    expect_grpc_denial(&rig, &client, &p, None, Code::Unimplemented).await;
    let p = path("h1.Echo", Method::Unary);
    expect_grpc_denial(&rig, &client, &p, None, Code::Unimplemented).await;
    let p = path("h1x.Echo", Method::Unary);
    expect_grpc_denial(&rig, &client, &p, None, Code::Unimplemented).await;
    let p = path("down.Echo", Method::Unary);
    expect_grpc_denial(&rig, &client, &p, None, Code::Unavailable).await;

    let gw = &rig.gw;
    for (series, want) in [
        (r#"gateway_requests_total{code="401",route="grpc"}"#, 3.0),
        (
            r#"gateway_grpc_responses_total{grpc_status="16",route="grpc"}"#,
            3.0,
        ),
        (r#"gateway_requests_total{code="403",route="grpc"}"#, 1.0),
        (
            r#"gateway_grpc_responses_total{grpc_status="7",route="grpc"}"#,
            1.0,
        ),
        (r#"gateway_requests_total{code="400",route="grpc"}"#, 1.0),
        (
            r#"gateway_grpc_responses_total{grpc_status="3",route="grpc"}"#,
            1.0,
        ),
        (r#"gateway_requests_total{code="400",route="none"}"#, 1.0),
        (
            r#"gateway_grpc_responses_total{grpc_status="3",route="none"}"#,
            1.0,
        ),
        (r#"gateway_requests_total{code="404",route="none"}"#, 1.0),
        (
            r#"gateway_grpc_responses_total{grpc_status="12",route="none"}"#,
            1.0,
        ),
        (
            r#"gateway_grpc_responses_total{grpc_status="12",route="grpc-h1"}"#,
            1.0,
        ),
        (
            r#"gateway_grpc_responses_total{grpc_status="12",route="grpc-h1x"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{code="502",route="grpc-down"}"#,
            1.0,
        ),
        (
            r#"gateway_grpc_responses_total{grpc_status="14",route="grpc-down"}"#,
            1.0,
        ),
    ] {
        expect_metric(gw, series, want).await;
    }
}

/// Past `auth_failures_per_minute`, calls get `RESOURCE_EXHAUSTED`, a valid token included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_calls_get_resource_exhausted() {
    let rig = GrpcRig::start(Front::H2c, "    auth_failures_per_minute: 3\n").await;
    let client = rig.client().await;
    let unary = path("test.Echo", Method::Unary);
    for _ in 0..3 {
        expect_grpc_denial(
            &rig,
            &client,
            &unary,
            Some("bad.to.ken"),
            Code::Unauthenticated,
        )
        .await;
    }
    expect_grpc_denial(
        &rig,
        &client,
        &unary,
        Some("bad.to.ken"),
        Code::ResourceExhausted,
    )
    .await;
    let token = rig.token();
    expect_grpc_denial(&rig, &client, &unary, Some(&token), Code::ResourceExhausted).await;
    let gw = &rig.gw;
    expect_metric(
        gw,
        r#"gateway_requests_total{code="429",route="grpc"}"#,
        2.0,
    )
    .await;
    expect_metric(
        gw,
        r#"gateway_grpc_responses_total{grpc_status="8",route="grpc"}"#,
        2.0,
    )
    .await;
    expect_metric(
        gw,
        r#"gateway_grpc_responses_total{grpc_status="16",route="grpc"}"#,
        3.0,
    )
    .await;
}

/// A 300 ms `grpc-timeout` ends a 2 s call with `DEADLINE_EXCEEDED` long before `request_timeout`
/// (30 s), and the upstream is told no more time than the client gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_expires_before_request_timeout() {
    let rig = GrpcRig::start(Front::H2c, "").await;
    let client = rig.client().await;
    let token = rig.token();
    let p = path("test.Echo", Method::Sleep);
    let mut req = request(
        Msg {
            n: 2000,
            ..Msg::default()
        },
        Some(&token),
    );
    req.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let result = within(SHORT, &p, client.unary(&p, req)).await;
    let elapsed = started.elapsed();
    let status = result.expect_err("the deadline passes before the upstream answers");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        elapsed < Duration::from_millis(1500),
        "ended after {elapsed:?}, not at the 300 ms deadline"
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "ended after {elapsed:?}, before the deadline"
    );
    let calls = rig.h2c.calls_to(&p);
    assert_eq!(calls.len(), 1);
    let forwarded = calls[0]
        .grpc_timeout()
        .unwrap_or_else(|| panic!("grpc-timeout forwarded: {:?}", calls[0].headers));
    assert!(
        forwarded <= Duration::from_millis(300) && !forwarded.is_zero(),
        "the upstream got grpc-timeout {forwarded:?}"
    );
    expect_metric(
        &rig.gw,
        r#"gateway_grpc_responses_total{grpc_status="4",route="grpc"}"#,
        1.0,
    )
    .await;
    expect_metric(
        &rig.gw,
        r#"gateway_requests_total{code="504",route="grpc"}"#,
        1.0,
    )
    .await;
}

/// The upstream sends GOAWAY on its pooled connection: the call in flight finishes, and the
/// calls sent afterwards succeed on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_goaway_fails_no_later_call() {
    let rig = GrpcRig::start(Front::H2c, "").await;
    let client = rig.client().await;
    let token = rig.token();
    let unary = path("test.Echo", Method::Unary);
    for i in 0..3 {
        within(
            SHORT,
            &unary,
            client.unary(&unary, request(Msg::text("warm"), Some(&token))),
        )
        .await
        .unwrap_or_else(|s| panic!("call {i} before GOAWAY: {s:?}"));
    }
    let before = rig.h2c.connections();

    let sleep = path("test.Echo", Method::Sleep);
    let in_flight = {
        let (c, p) = (client.clone(), sleep.clone());
        let req = request(
            Msg {
                n: 300,
                ..Msg::default()
            },
            Some(&token),
        );
        tokio::spawn(async move { c.unary(&p, req).await })
    };
    assert!(eventually(SHORT, || rig.h2c.calls_to(&sleep).len() == 1).await);
    rig.h2c.goaway();
    within(SHORT, "a call in flight across GOAWAY", in_flight)
        .await
        .expect("task")
        .unwrap_or_else(|s| panic!("the call in flight during GOAWAY: {s:?}"));
    assert!(
        eventually(SHORT, || rig.h2c.open_connections() == 0).await,
        "the upstream's connections closed after GOAWAY"
    );

    for i in 0..10 {
        within(
            SHORT,
            &unary,
            client.unary(&unary, request(Msg::text("after"), Some(&token))),
        )
        .await
        .unwrap_or_else(|s| panic!("call {i} after GOAWAY: {s:?}"));
    }
    let mut calls = JoinSet::new();
    for i in 0..10 {
        let (c, p, t) = (client.clone(), unary.clone(), token.clone());
        calls.spawn(async move { (i, c.unary(&p, request(Msg::text("many"), Some(&t))).await) });
    }
    within(SHORT, "concurrent calls after GOAWAY", async {
        while let Some(joined) = calls.join_next().await {
            let (i, r) = joined.expect("task");
            r.unwrap_or_else(|s| panic!("concurrent call {i} after GOAWAY: {s:?}"));
        }
    })
    .await;
    assert!(
        rig.h2c.connections() > before,
        "the gateway connected again after GOAWAY"
    );
}

/// The upstream shuts down gracefully and comes back on the same port: while nothing listens,
/// `UNAVAILABLE`; once it listens again, calls succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_restart_on_the_same_port_fails_no_later_call() {
    let rig = GrpcRig::start(Front::H2c, "").await;
    let client = rig.client().await;
    let token = rig.token();
    let unary = path("test.Echo", Method::Unary);
    within(
        SHORT,
        &unary,
        client.unary(&unary, request(Msg::text("a"), Some(&token))),
    )
    .await
    .unwrap_or_else(|s| panic!("before the restart: {s:?}"));

    rig.h2c.stop().await;
    assert_eq!(rig.h2c.open_connections(), 0);
    let down = within(
        SHORT,
        &unary,
        client.unary(&unary, request(Msg::text("b"), Some(&token))),
    )
    .await
    .expect_err("nothing listens");
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");

    let again = rig.h2c.restart().await;
    for i in 0..5 {
        within(
            SHORT,
            &unary,
            client.unary(&unary, request(Msg::text("c"), Some(&token))),
        )
        .await
        .unwrap_or_else(|s| panic!("call {i} after the restart: {s:?}"));
    }
    assert_eq!(again.calls_to(&unary).len(), 6);
}

/// 50 calls on one client connection, one of them never answered: the others and a second
/// connection are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_streams_on_one_connection_one_never_answered() {
    let rig = GrpcRig::start(Front::H2c, "").await;
    let client = rig.client().await;
    let token = rig.token();
    fifty_streams_one_stalled(
        &client,
        rig.gw.addr,
        None,
        &rig.h2c,
        "test.Echo",
        Some(&token),
        Stall::Hang,
    )
    .await;
}

/// 50 calls on one client connection, one of them a 32 MiB stream the client does not read: the
/// others and a second connection are served, and the stalled stream resumes when read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_streams_on_one_connection_one_unread() {
    let rig = GrpcRig::start(Front::H2c, "").await;
    let client = rig.client().await;
    let token = rig.token();
    fifty_streams_one_stalled(
        &client,
        rig.gw.addr,
        None,
        &rig.h2c,
        "test.Echo",
        Some(&token),
        Stall::Unread,
    )
    .await;
}

/// A client stream past `max_body_bytes` ends with `RESOURCE_EXHAUSTED`, and the upstream's stream
/// is reset: it never takes the cut-off upload for a complete one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_body_over_max_body_bytes_is_resource_exhausted() {
    let rig = GrpcRig::start(Front::H2c, "    max_body_bytes: 1048576\n").await;
    let client = rig.client().await;
    let token = rig.token();
    let p = path("test.Echo", Method::ClientStream);
    let (tx, rx) = outbox();
    let feeder = tokio::spawn(async move {
        for _ in 0..64 {
            let chunk = Msg {
                payload: pattern(64 * 1024),
                ..Msg::default()
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let result = within(
        Duration::from_secs(10),
        &p,
        client.client_stream(&p, request(rx, Some(&token))),
    )
    .await;
    feeder.abort();
    let status = result.expect_err("4 MiB over a 1 MiB limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    if !rig.h2c.calls_to(&p).is_empty() {
        assert!(
            eventually(SHORT, || !rig.h2c.client_stream_ends().is_empty()).await,
            "the upstream's stream was left open"
        );
    }
    for end in rig.h2c.client_stream_ends() {
        assert!(
            !end.clean,
            "the upstream took a cut-off upload as complete: {end:?}"
        );
        assert!(
            end.bytes <= MIB as u64,
            "the upstream got past the limit: {end:?}"
        );
    }
}

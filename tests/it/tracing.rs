//! CONTRACT F: W3C Trace Context through the gateway, spans exported over OTLP/HTTP to a
//! receiver here that decodes them with the `opentelemetry-proto` types, and the signed
//! assertion checked by an independent JWT library (Debian's PyJWT + cryptography) against the
//! JWKS the admin listener serves, across a key rotation on reload.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::yaml::{anonymous, basic, Config};
use crate::support::{metric, Rig, Seen, TestGateway, Upstream};

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver on loopback: decodes every POST to `/v1/traces`, answering after
/// `delay` (a slow collector).
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    posts: Arc<Mutex<usize>>,
}

impl Collector {
    async fn start(delay: Duration) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let posts: Arc<Mutex<usize>> = Arc::default();
        let (s, p) = (spans.clone(), posts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, p) = (s.clone(), p.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (s, p) = (s.clone(), p.clone());
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                            let body = req.into_body().collect().await.expect("body").to_bytes();
                            let export =
                                ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                            *p.lock().unwrap() += 1;
                            tokio::time::sleep(delay).await;
                            for rs in export.resource_spans {
                                let service = rs
                                    .resource
                                    .iter()
                                    .flat_map(|r| &r.attributes)
                                    .find(|kv| kv.key == "service.name")
                                    .and_then(|kv| string_of(kv.value.as_ref()?.value.as_ref()?));
                                assert_eq!(service.as_deref(), Some("jwt-gateway"));
                                for ss in rs.scope_spans {
                                    s.lock().unwrap().extend(ss.spans);
                                }
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector { addr, spans, posts }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until at least `n` spans arrived.
    async fn wait_for(&self, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans();
            if spans.len() >= n || Instant::now() > deadline {
                assert!(spans.len() >= n, "{} spans, wanted {n}", spans.len());
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn string_of(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let kv = span.attributes.iter().find(|kv| kv.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// `basic` plus `tracing: {...}` with `lines` inside.
fn traced(
    collector: &str,
    lines: &str,
) -> impl FnOnce(&crate::support::Issuer, &Upstream) -> Config {
    let section = format!("tracing: {{ otlp_endpoint: \"{collector}\", {lines} }}");
    move |i, u| basic(i, u).section(&section)
}

/// `GET path` with a token and extra headers; the status.
async fn get_with(
    gw: &TestGateway,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> u16 {
    let mut req = gw.client().get(gw.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request").status().as_u16()
}

/// The upstream's `traceparent`, split: (trace id, parent span id, flags).
fn upstream_traceparent(seen: &Seen) -> (String, String, String) {
    let tp = seen.headers["traceparent"]
        .to_str()
        .expect("ascii")
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00", "{tp}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_client_trace_is_continued_exported_and_propagated() {
    let collector = Collector::start(Duration::ZERO).await;
    // Ratio 0: only the client's sampled flag can make this request sampled.
    let rig = Rig::start(traced(&collector.url(), "sample_ratio: 0")).await;
    let token = rig.token();
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    for _ in 0..2 {
        let status = get_with(
            &rig.gw,
            "/api/x",
            Some(&token),
            &[("traceparent", &parent), ("tracestate", "vendor=opaque")],
        )
        .await;
        assert_eq!(status, 200);
    }
    let seen = rig.upstream.all();
    assert_eq!(seen.len(), 2);
    let spans = collector.wait_for(6).await;
    assert_eq!(
        spans.len(),
        6,
        "a request span and two children per request"
    );
    for (n, seen) in seen.iter().enumerate() {
        let (trace, parent_id, flags) = upstream_traceparent(seen);
        assert_eq!(trace, PARENT_TRACE, "the client's trace continues");
        assert_eq!(flags, "01", "exported, so sampled");
        assert_ne!(
            parent_id, PARENT_SPAN,
            "the gateway's own span is the upstream's parent"
        );
        assert_eq!(seen.headers["tracestate"], "vendor=opaque");
        let request = spans
            .iter()
            .find(|s| hex(&s.span_id) == parent_id)
            .expect("the upstream's parent span was exported");
        assert_eq!(request.name, "request");
        assert_eq!(hex(&request.trace_id), PARENT_TRACE);
        assert_eq!(hex(&request.parent_span_id), PARENT_SPAN);
        assert_eq!(attr(request, "route").as_deref(), Some("api"));
        assert_eq!(
            attr(request, "http.response.status_code").as_deref(),
            Some("200")
        );
        let children: Vec<&Span> = spans
            .iter()
            .filter(|s| s.parent_span_id == request.span_id)
            .collect();
        let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["authenticate", "upstream"]);
        let auth = children[0];
        let want_cache = if n == 0 { "miss" } else { "hit" };
        assert_eq!(attr(auth, "cache").as_deref(), Some(want_cache));
        assert_eq!(attr(auth, "reason").as_deref(), Some("ok"));
        assert!(auth.start_time_unix_nano >= request.start_time_unix_nano);
        assert!(children[1].end_time_unix_nano <= request.end_time_unix_nano);
        assert_eq!(hex(&children[1].trace_id), PARENT_TRACE);
    }
    // No claim value, token or secret in any attribute.
    for span in &spans {
        for kv in &span.attributes {
            let value = format!("{:?}", kv.value);
            assert!(
                !value.contains("alice") && !value.contains(&token[..20]),
                "{kv:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratio_one_starts_sampled_traces_and_refusals_are_traced_too() {
    let collector = Collector::start(Duration::ZERO).await;
    let rig = Rig::start(traced(&collector.url(), "sample_ratio: 1")).await;
    assert_eq!(
        get_with(&rig.gw, "/api/x", Some(&rig.token()), &[]).await,
        200
    );
    let (trace, parent_id, flags) = upstream_traceparent(&rig.upstream.last().expect("seen"));
    assert_eq!(flags, "01");
    assert_ne!(trace, "0".repeat(32));
    // A refusal: traced (a request span with its status and a failed authenticate), never
    // forwarded.
    assert_eq!(get_with(&rig.gw, "/api/x", None, &[]).await, 401);
    assert_eq!(
        rig.upstream.requests(),
        1,
        "the refusal never reached the upstream"
    );
    let spans = collector.wait_for(5).await;
    let request = spans
        .iter()
        .find(|s| hex(&s.span_id) == parent_id)
        .expect("exported");
    assert_eq!(hex(&request.trace_id), trace);
    assert!(
        request.parent_span_id.is_empty(),
        "a new trace has no parent"
    );
    let refused = spans
        .iter()
        .find(|s| {
            s.name == "request" && attr(s, "http.response.status_code").as_deref() == Some("401")
        })
        .expect("the refusal's span");
    let auth = spans
        .iter()
        .find(|s| s.parent_span_id == refused.span_id)
        .expect("its authenticate child");
    assert_eq!(auth.name, "authenticate");
    assert_eq!(attr(auth, "reason").as_deref(), Some("missing_token"));
    assert_eq!(attr(auth, "cache"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authenticate_span_covers_the_binding_check() {
    let collector = Collector::start(Duration::ZERO).await;
    let rig = Rig::start(traced(&collector.url(), "sample_ratio: 1")).await;
    // A certificate-bound token (RFC 8705) without a client certificate: a valid token whose
    // sender is not proven, so authentication fails at the binding stage.
    let mut claims = rig.claims();
    claims["cnf"] = serde_json::json!({"x5t#S256": "aUZ6A8Bx-LMcBEml4KgV5qR7tr2Gdr_w96vsyc0qPAE"});
    let bound = rig.mint(&claims);
    assert_eq!(get_with(&rig.gw, "/api/x", Some(&bound), &[]).await, 401);
    assert_eq!(rig.upstream.requests(), 0);
    let spans = collector.wait_for(2).await;
    let auth = spans
        .iter()
        .find(|s| s.name == "authenticate")
        .expect("the authenticate span");
    assert_eq!(attr(auth, "reason").as_deref(), Some("binding"));
    assert_eq!(
        attr(auth, "cache").as_deref(),
        Some("miss"),
        "the token itself verified"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratio_zero_and_an_unsampled_parent_export_nothing() {
    let collector = Collector::start(Duration::ZERO).await;
    let rig = Rig::start(traced(&collector.url(), "sample_ratio: 0")).await;
    assert_eq!(get_with(&rig.gw, "/public/x", None, &[]).await, 200);
    let (trace, _, flags) = upstream_traceparent(&rig.upstream.last().expect("seen"));
    assert_eq!(flags, "00", "not exported, so not sampled");
    assert_ne!(trace, PARENT_TRACE);
    // Parent-based: a parent's "not sampled" stands even at ratio 1.
    let rig = Rig::start(traced(&collector.url(), "sample_ratio: 1")).await;
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-00");
    assert_eq!(
        get_with(&rig.gw, "/public/x", None, &[("traceparent", &parent)]).await,
        200
    );
    let (trace, parent_id, flags) = upstream_traceparent(&rig.upstream.last().expect("seen"));
    assert_eq!((trace.as_str(), flags.as_str()), (PARENT_TRACE, "00"));
    assert_ne!(
        parent_id, PARENT_SPAN,
        "a new span id even when not recording"
    );
    // Past the exporter's flush delay: still nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(collector.spans().is_empty(), "{:?}", collector.spans());
    assert_eq!(*collector.posts.lock().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_is_replaced_and_its_tracestate_dropped() {
    let collector = Collector::start(Duration::ZERO).await;
    let rig = Rig::start(traced(&collector.url(), "sample_ratio: 0")).await;
    for bad in [
        "garbage",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        let status = get_with(
            &rig.gw,
            "/public/x",
            None,
            &[
                ("traceparent", bad),
                ("tracestate", "vendor=x"),
                ("trace_parent", bad),
            ],
        )
        .await;
        assert_eq!(status, 200);
        let seen = rig.upstream.last().expect("seen");
        let (trace, _, flags) = upstream_traceparent(&seen);
        assert_eq!(seen.headers.get_all("traceparent").iter().count(), 1);
        assert_ne!(trace, PARENT_TRACE.to_string(), "{bad}: a new trace");
        assert_eq!(flags, "00");
        assert!(seen.headers.get("tracestate").is_none(), "{bad}");
        assert!(seen.headers.get("trace_parent").is_none(), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_trace_headers_pass_through_untouched() {
    let rig = Rig::start(basic).await;
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let headers = [("traceparent", parent.as_str()), ("tracestate", "a=b")];
    assert_eq!(get_with(&rig.gw, "/public/x", None, &headers).await, 200);
    let seen = rig.upstream.last().expect("seen");
    assert_eq!(seen.headers["traceparent"], parent.as_str());
    assert_eq!(seen.headers["tracestate"], "a=b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_auth_decision_is_a_span_in_the_asking_proxys_trace() {
    let collector = Collector::start(Duration::ZERO).await;
    let shape = traced(&collector.url(), "sample_ratio: 0");
    let rig = Rig::start(move |i, u| shape(i, u).section("forward_auth: {}")).await;
    let decisions = rig.gw.decisions.expect("the decision listener");
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    // nginx's auth_request subrequest, carrying the trace context nginx propagates.
    let status = reqwest::Client::new()
        .get(format!("http://{decisions}/nginx"))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/api/x")
        .header("authorization", format!("Bearer {}", rig.token()))
        .header("traceparent", &parent)
        .send()
        .await
        .expect("decision")
        .status();
    assert_eq!(status, 200);
    let spans = collector.wait_for(2).await;
    let request = spans
        .iter()
        .find(|s| s.name == "request")
        .expect("the decision's span");
    assert_eq!(hex(&request.trace_id), PARENT_TRACE);
    assert_eq!(hex(&request.parent_span_id), PARENT_SPAN);
    assert_eq!(attr(request, "route").as_deref(), Some("api"));
    let children: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id == request.span_id)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(children, ["authenticate"], "no upstream call of its own");
    assert_eq!(rig.upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_tracing_on_and_off() {
    let collector = Collector::start(Duration::ZERO).await;
    let rig = Rig::start(basic).await;
    let reload = |config: Config| {
        let compiled =
            jwt_gateway::config::compile_str(&config.yaml(), rig.gw.dir.path()).expect("compiles");
        rig.gw.gateway.reload(compiled)
    };
    reload(traced(&collector.url(), "sample_ratio: 1")(
        &rig.issuer,
        &rig.upstream,
    ))
    .await
    .expect("reload with tracing");
    assert_eq!(get_with(&rig.gw, "/public/x", None, &[]).await, 200);
    let (trace, span, flags) = upstream_traceparent(&rig.upstream.last().expect("seen"));
    assert_eq!(flags, "01");
    let spans = collector.wait_for(1).await;
    let request = spans
        .iter()
        .find(|s| hex(&s.span_id) == span)
        .expect("the exporter started at boot sends once a reload names a collector");
    assert_eq!(hex(&request.trace_id), trace);

    reload(basic(&rig.issuer, &rig.upstream))
        .await
        .expect("reload without tracing");
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let headers = [("traceparent", parent.as_str())];
    assert_eq!(get_with(&rig.gw, "/public/x", None, &headers).await, 200);
    let seen = rig.upstream.last().expect("seen");
    assert_eq!(
        seen.headers["traceparent"],
        parent.as_str(),
        "passed on untouched"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        collector.spans().len(),
        spans.len(),
        "nothing exported once off"
    );
}

/// Sequential requests with a bounded wall time: a collector that held them up would show as
/// seconds, not the milliseconds loopback requests take.
async fn hundred_requests(gw: &TestGateway, token: &str) -> Duration {
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(get_with(gw, "/api/x", Some(token), &[]).await, 200);
    }
    started.elapsed()
}

async fn wait_metric(gw: &TestGateway, series: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(&gw.metrics().await, series).unwrap_or(0.0);
        if value > 0.0 || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_collector_costs_requests_nothing_and_is_counted() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let rig = Rig::start(traced(&format!("http://{closed}"), "sample_ratio: 1")).await;
    let took = hundred_requests(&rig.gw, &rig.token()).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    let errors = wait_metric(
        &rig.gw,
        "gateway_trace_export_errors_total{kind=\"transport\"}",
    )
    .await;
    assert!(errors >= 1.0, "export failures counted");
}

/// Waits (up to 10 s) until the collector has taken `n` POSTs.
async fn wait_posts(collector: &Collector, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while *collector.posts.lock().unwrap() < n {
        assert!(
            Instant::now() < deadline,
            "no span export reached the collector"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_never_slows_requests_and_times_out_counted() {
    // The collector takes every POST and answers only after a minute: an export in flight hangs.
    let collector = Collector::start(Duration::from_secs(60)).await;
    let rig = Rig::start(traced(
        &collector.url(),
        "sample_ratio: 1, export_timeout: 6s",
    ))
    .await;
    let token = rig.token();
    assert_eq!(get_with(&rig.gw, "/api/x", Some(&token), &[]).await, 200);
    wait_posts(&collector, 1).await;
    let timeouts = "gateway_trace_export_errors_total{kind=\"timeout\"}";
    let stalled = Instant::now();
    for _ in 0..50 {
        assert_eq!(get_with(&rig.gw, "/api/x", Some(&token), &[]).await, 200);
    }
    let took = stalled.elapsed();
    // Every one was answered while the export still hung (its timeout had not fired), and
    // within a bound a request waiting on the collector could not meet.
    assert_eq!(
        metric(&rig.gw.metrics().await, timeouts).unwrap_or(0.0),
        0.0,
        "the export gave up before the requests were done ({took:?})"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Then the stalled export is given up on, and counted.
    assert!(
        wait_metric(&rig.gw, timeouts).await >= 1.0,
        "the timeout counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_queue_is_bounded_and_drops_are_counted() {
    // With the one exporter stuck on a POST, finished spans wait in the queue (2,048 of them);
    // past that each is dropped and counted, and the requests go on.
    let collector = Collector::start(Duration::from_secs(60)).await;
    let rig = Rig::start(traced(
        &collector.url(),
        "sample_ratio: 1, export_timeout: 60s",
    ))
    .await;
    let token = rig.token();
    assert_eq!(get_with(&rig.gw, "/api/x", Some(&token), &[]).await, 200);
    wait_posts(&collector, 1).await;
    const QUEUE: usize = 2048;
    const EXTRA: usize = 64;
    const TASKS: usize = 16;
    let client = rig.gw.client();
    let url = rig.gw.url("/api/x");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        tasks.spawn(async move {
            for _ in 0..(QUEUE + EXTRA) / TASKS {
                let status = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("request")
                    .status();
                assert_eq!(status, 200);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("requests");
    }
    let dropped = metric(&rig.gw.metrics().await, "gateway_trace_spans_dropped_total");
    assert_eq!(
        dropped,
        Some(EXTRA as f64),
        "exactly the spans beyond the queue's 2,048"
    );
    assert_eq!(*collector.posts.lock().unwrap(), 1);
}

// ---- The signed assertion ----

/// A PKCS#8 PEM key (P-256 or Ed25519) written into `dir`; its absolute path.
fn key_file(dir: &std::path::Path, name: &str, alg: &'static rcgen::SignatureAlgorithm) -> String {
    let key = rcgen::KeyPair::generate_for(alg).expect("key");
    let path = dir.join(name);
    std::fs::write(&path, key.serialize_pem()).expect("write key");
    path.display().to_string()
}

fn assertion_config(
    key: &str,
    ttl: &str,
) -> impl FnOnce(&crate::support::Issuer, &Upstream) -> Config {
    let key = key.to_string();
    let ttl = ttl.to_string();
    move |i, u| {
        basic(i, u)
            .edit_route("api", |r| {
                r.forward("email", "X-Auth-Email")
                    .assertion(&format!("{{header: X-Gateway-Assertion, ttl: {ttl}}}"))
            })
            .section(&format!(
                "assertion: {{ issuer: \"https://gateway.test\", signing_key_file: \"{key}\" }}"
            ))
    }
}

/// Verifies `token` for audience `aud` the way the README tells an upstream to: PyJWT's own
/// `PyJWKClient` fetches the admin listener's `/.well-known/jwks.json` and picks the key by the
/// token's `kid`. The claims, or PyJWT's error.
async fn pyjwt_verify(gw: &TestGateway, token: &str, aud: &str) -> Result<Value, String> {
    const SCRIPT: &str = r#"
import json, sys, jwt
url, token, aud = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    key = jwt.PyJWKClient(url).get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["ES256", "EdDSA"], audience=aud,
                        issuer="https://gateway.test", options={"require": ["exp", "iat", "iss", "aud", "jti"]})
    print(json.dumps(claims))
except Exception as e:
    print("ERROR " + type(e).__name__ + ": " + str(e))
"#;
    let url = format!("http://{}/.well-known/jwks.json", gw.admin);
    let (token, aud) = (token.to_string(), aud.to_string());
    // Debian's python3 carries python3-jwt and python3-cryptography (tests/run.sh installs them).
    // Off the runtime's threads: the gateway serving the JWKS runs on them.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/python3")
            .args(["-c", SCRIPT, &url, &token, &aud])
            .env("NO_PROXY", "127.0.0.1")
            .output()
            .expect("run /usr/bin/python3")
    })
    .await
    .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match text.strip_prefix("ERROR ") {
        Some(e) => Err(e.to_string()),
        None => Ok(serde_json::from_str(&text).expect("claims JSON")),
    }
}

/// The `kid`s the admin listener publishes.
async fn published_kids(gw: &TestGateway) -> Vec<String> {
    let (status, body) = gw.admin_get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).expect("JWKS JSON");
    v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect()
}

fn assertion_of(seen: &Seen) -> String {
    let mut values = seen.headers.get_all("x-gateway-assertion").iter();
    let one = values
        .next()
        .expect("an assertion")
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(values.next().is_none(), "exactly one");
    one
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assertions_verify_against_the_jwks_across_a_key_rotation() {
    let keys = tempfile::tempdir().expect("tempdir");
    let old_key = key_file(keys.path(), "old.pem", &rcgen::PKCS_ECDSA_P256_SHA256);
    let rig = Rig::start(assertion_config(&old_key, "5s")).await;
    let token = rig.token();
    // A client's own assertion (and its `_` spelling) never reaches an upstream.
    let forged = [
        ("X-Gateway-Assertion", "forged"),
        ("X_Gateway_Assertion", "forged"),
    ];
    assert_eq!(get_with(&rig.gw, "/public/x", None, &forged).await, 200);
    let seen = rig.upstream.last().expect("seen");
    assert!(seen.headers.get("x-gateway-assertion").is_none());
    assert!(seen.headers.get("x_gateway_assertion").is_none());
    assert_eq!(
        get_with(&rig.gw, "/api/x", Some(&token), &forged).await,
        200
    );
    let old = assertion_of(&rig.upstream.last().expect("seen"));
    assert_ne!(old, "forged");

    let kids_before = published_kids(&rig.gw).await;
    assert_eq!(kids_before.len(), 1);
    let claims = pyjwt_verify(&rig.gw, &old, "api")
        .await
        .expect("PyJWT verifies the assertion");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["iss"], "https://gateway.test");
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!((1..=5).contains(&lifetime), "{lifetime}");
    assert!(
        pyjwt_verify(&rig.gw, &old, "public").await.is_err(),
        "aud is the route"
    );
    // Cached for half its life: the next request carries the same assertion.
    assert_eq!(get_with(&rig.gw, "/api/x", Some(&token), &[]).await, 200);
    assert_eq!(assertion_of(&rig.upstream.last().expect("seen")), old);
    // Refusals carry nothing upstream.
    let before = rig.upstream.requests();
    assert_eq!(
        get_with(&rig.gw, "/api/x", Some("not.a.token"), &[]).await,
        401
    );
    assert_eq!(rig.upstream.requests(), before);

    // Rotation: a new (Ed25519) key on reload.
    let new_key = key_file(keys.path(), "new.pem", &rcgen::PKCS_ED25519);
    let yaml = assertion_config(&new_key, "5s")(&rig.issuer, &rig.upstream).yaml();
    let compiled = jwt_gateway::config::compile_str(&yaml, rig.gw.dir.path()).expect("compiles");
    rig.gw.gateway.reload(compiled).await.expect("reload");
    assert_eq!(get_with(&rig.gw, "/api/x", Some(&token), &[]).await, 200);
    let new = assertion_of(&rig.upstream.last().expect("seen"));
    assert_ne!(new, old, "signed with the new key");
    let kids_during = published_kids(&rig.gw).await;
    assert_eq!(
        kids_during.len(),
        2,
        "the old key stays published while its assertions live"
    );
    assert!(kids_during.contains(&kids_before[0]));
    pyjwt_verify(&rig.gw, &old, "api")
        .await
        .expect("an old assertion still verifies");
    let claims = pyjwt_verify(&rig.gw, &new, "api")
        .await
        .expect("the new one verifies");
    assert_eq!(claims["sub"], "alice");
    // Past the old key's last assertion (ttl 5 s, plus 1 s of grace): gone from the JWKS.
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let kids_after = published_kids(&rig.gw).await;
    assert_eq!(kids_after.len(), 1);
    assert!(!kids_after.contains(&kids_before[0]));
    let err = pyjwt_verify(&rig.gw, &old, "api")
        .await
        .expect_err("the old key is gone");
    assert!(err.contains("Unable to find a signing key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assertion_without_a_signing_key_is_a_config_error() {
    let upstream = Upstream::start().await;
    let yaml = Config::new()
        .route(anonymous("public", "/public", &upstream.url()).assertion("{}"))
        .yaml();
    let err = TestGateway::try_start(&yaml).await.err().expect("refused");
    assert!(
        err.contains("routes[0].forward.assertion: needs a top-level assertion section"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_carry_the_trace_id() {
    use crate::support::process::{free_port, GatewayProcess};
    use crate::support::yaml::{anonymous, server};
    let collector = Collector::start(Duration::ZERO).await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, admin) = (free_port(), free_port());
    let yaml = Config::new()
        .server(server().listen(port))
        .admin(&format!("listen: \"127.0.0.1:{admin}\""))
        .section("log: { level: info, format: json }")
        .section(&format!(
            "tracing: {{ otlp_endpoint: \"{}\", sample_ratio: 0 }}",
            collector.url()
        ))
        .route(anonymous("public", "/public", &upstream.url()))
        .yaml();
    let mut gateway = GatewayProcess::spawn(dir.path(), &yaml, &[]);
    gateway.wait_until_ok(admin, "/healthz").await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/public/x");
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    for (id, traceparent) in [("log-continued", Some(parent.as_str())), ("log-new", None)] {
        let mut req = client.get(&url).header("x-request-id", id);
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        assert_eq!(req.send().await.expect("request").status(), 200);
    }
    let new_trace = upstream_traceparent(&upstream.last().expect("seen")).0;
    gateway.sigterm();
    assert_eq!(gateway.exit_status().await.code(), Some(0));
    let log = gateway.log();
    let trace_of = |id: &str| -> String {
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["target"] == "access" && l["request_id"] == id)
            .unwrap_or_else(|| panic!("no access line for {id}:\n{log}"))["trace_id"]
            .as_str()
            .expect("trace_id is a string")
            .to_string()
    };
    assert_eq!(trace_of("log-continued"), PARENT_TRACE);
    assert_eq!(trace_of("log-new"), new_trace);
    assert_eq!(new_trace.len(), 32);
}

//! Connection lifetimes: idle keep-alive and HTTP/2 connections closed after `idle_timeout` (and
//! only then), stalled bodies cut by the body idle timeout, the connection caps at accept, and
//! the admin listener over TLS. Timeouts are short (1-3 s) and every bound is generous: these
//! tests pin what happens, never how fast.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{eventually, raw};
use crate::support::{metric, Pki, TestGateway, Upstream};

/// A plaintext gateway with one anonymous route `/public` to `upstream` and these `limits`. The
/// route strips `/public`, so the test upstream's own paths (`/slow/<ms>`, `/download/<bytes>`)
/// work behind it.
fn yaml(upstream: &str, limits: &str) -> String {
    format!(
        r#"
server:
  insecure_plaintext: true
  limits: {{ {limits} }}
routes:
  - name: public
    match: {{ path_prefix: /public }}
    upstream: "{upstream}"
    strip_prefix: /public
    auth: anonymous
"#
    )
}

/// Reads one response (its head and its Content-Length body) off a keep-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return String::from_utf8_lossy(&got).into_owned();
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                panic!("closed mid-response: {:?}", String::from_utf8_lossy(&got))
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no response within 10 s"),
        }
    }
}

/// Reads until the server closes `stream`: how long that took and what came (None: still open
/// after `within`).
async fn read_until_closed(
    stream: &mut TcpStream,
    within: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some((started.elapsed(), got)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

async fn gauge(gw: &TestGateway, series: &str) -> f64 {
    metric(&gw.metrics().await, series).unwrap_or_else(|| panic!("no series {series}"))
}

async fn open_connections_become(gw: &TestGateway, n: f64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if gauge(gw, "gateway_open_connections").await == n {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const GET: &[u8] = b"GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_is_closed_after_idle_timeout_and_not_before() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(
        &upstream.url(),
        "idle_timeout: 2s, header_read_timeout: 1s",
    ))
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Longer than header_read_timeout, shorter than idle_timeout: hyper's own header timer
    // would have closed the connection by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(GET).await.unwrap();
    assert!(
        read_response(&mut stream).await.starts_with("HTTP/1.1 200"),
        "a second request inside idle_timeout is served on the same connection"
    );
    let (took, _) = read_until_closed(&mut stream, Duration::from_secs(8))
        .await
        .expect("an idle keep-alive connection is still open after 8 s");
    assert!(
        took >= Duration::from_millis(1800),
        "closed {took:?} after the second request: the idle wait did not restart at it"
    );
    assert_eq!(upstream.requests(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_head_that_stops_is_cut_by_header_read_timeout() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(
        &upstream.url(),
        "idle_timeout: 30s, header_read_timeout: 1s",
    ))
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    stream
        .write_all(b"GET /public/b HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let (took, _) = read_until_closed(&mut stream, Duration::from_secs(8))
        .await
        .expect("a keep-alive connection inside a stalled head is still open after 8 s");
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");
    assert_eq!(upstream.requests(), 1);
    gw.stop().await;
}

/// One HTTP/2 frame: 9-byte header, then the payload.
fn h2_frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream_id.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

const H2_SETTINGS: u8 = 0x4;
const H2_PING: u8 = 0x6;
const H2_GOAWAY: u8 = 0x7;
const H2_ACK: u8 = 0x1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connection_that_only_pings_gets_goaway_after_idle_timeout() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(&upstream.url(), "idle_timeout: 1s")).await;
    let (mut rd, mut wr) = TcpStream::connect(gw.addr).await.unwrap().into_split();
    wr.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    wr.write_all(&h2_frame(H2_SETTINGS, 0, 0, &[]))
        .await
        .unwrap();
    let started = Instant::now();
    let mut ping = tokio::time::interval(Duration::from_millis(200));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (mut buf, mut goaway_at, mut pongs) = (Vec::<u8>::new(), None, 0);
    let closed_at = loop {
        tokio::select! {
            _ = ping.tick(), if goaway_at.is_none() => {
                wr.write_all(&h2_frame(H2_PING, 0, 0, b"client!!")).await.unwrap();
            }
            read = rd.read_buf(&mut buf) => {
                if matches!(read, Ok(0) | Err(_)) {
                    break started.elapsed();
                }
                while buf.len() >= 9 {
                    let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
                    if buf.len() < 9 + len {
                        break;
                    }
                    let frame: Vec<u8> = buf.drain(..9 + len).collect();
                    let (kind, flags, payload) = (frame[3], frame[4], &frame[9..]);
                    match (kind, flags & H2_ACK) {
                        (H2_GOAWAY, _) => {
                            goaway_at.get_or_insert(started.elapsed());
                        }
                        (H2_PING, H2_ACK) => pongs += 1,
                        // The server pings once before its final GOAWAY: answer like a client.
                        (H2_PING, _) => wr.write_all(&h2_frame(H2_PING, H2_ACK, 0, payload)).await.unwrap(),
                        (H2_SETTINGS, 0) => wr.write_all(&h2_frame(H2_SETTINGS, H2_ACK, 0, &[])).await.unwrap(),
                        _ => {}
                    }
                }
            }
            () = tokio::time::sleep_until(deadline) => panic!("no close within 10 s (GOAWAY at {goaway_at:?})"),
        }
    };
    let goaway_at = goaway_at.expect("the server closed without a GOAWAY");
    assert!(
        pongs >= 3,
        "the server answered {pongs} PINGs: the connection was alive"
    );
    assert!(
        goaway_at >= Duration::from_millis(900),
        "GOAWAY after {goaway_at:?}, before idle_timeout"
    );
    assert!(
        closed_at >= goaway_at,
        "the server closes after its GOAWAY (at {closed_at:?})"
    );
    assert_eq!(upstream.requests(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_stream_open_longer_than_idle_timeout_is_not_cut() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(&upstream.url(), "idle_timeout: 1s")).await;
    let response = gw
        .h2_client()
        .get(gw.url("/public/slow/2500"))
        .send()
        .await
        .expect("a stream waiting 2.5 s on its upstream survives a 1 s idle_timeout");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("\"/slow/2500\""));
    // Once the stream is done the connection is idle like any other and closes.
    assert!(open_connections_become(&gw, 0.0, Duration::from_secs(8)).await);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_request_body_is_cut() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(&upstream.url(), "idle_timeout: 1s")).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"POST /public/up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let (took, answer) = read_until_closed(&mut stream, Duration::from_secs(8))
        .await
        .expect("a stalled request body still holds the connection after 8 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(took >= Duration::from_millis(900), "cut after {took:?}");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(answer.contains("invalid_request"), "{answer:?}");
    // The upstream saw its request end early (an aborted stream), not a complete one.
    assert!(eventually(Duration::from_secs(5), || upstream.requests() == 1).await);
    assert_eq!(upstream.last().unwrap().body_len, 10);
    assert!(open_connections_become(&gw, 0.0, Duration::from_secs(5)).await);
    gw.stop().await;
}

/// An upstream that answers a 1000-byte response with 100 bytes and then goes silent; reports
/// how long after those bytes the gateway closed the upstream connection.
async fn stalling_upstream() -> (SocketAddr, tokio::task::JoinHandle<Option<Duration>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
        response.extend_from_slice(&[b's'; 100]);
        stream.write_all(&response).await.unwrap();
        read_until_closed(&mut stream, Duration::from_secs(10))
            .await
            .map(|(took, _)| took)
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stalls_mid_response_body_is_cut() {
    let (upstream, released) = stalling_upstream().await;
    let gw = TestGateway::start(&yaml(&format!("http://{upstream}"), "idle_timeout: 1s")).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    let (took, got) = read_until_closed(&mut stream, Duration::from_secs(8))
        .await
        .expect("a stalled response still holds the client connection after 8 s");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    assert!(
        got.ends_with(&"s".repeat(100)),
        "the bytes that came were relayed: {got:?}"
    );
    assert!(took >= Duration::from_millis(900), "cut after {took:?}");
    let released = released.await.unwrap();
    assert!(
        released.is_some_and(|t| t >= Duration::from_millis(900)),
        "the upstream connection was released after {released:?}"
    );
    assert!(open_connections_become(&gw, 0.0, Duration::from_secs(5)).await);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_response_is_cut() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(&upstream.url(), "idle_timeout: 1s")).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    // 100 MB: far more than the socket buffers between us hold, and never read.
    stream
        .write_all(b"GET /public/download/104857600 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || upstream.requests() == 1).await);
    assert!(
        open_connections_become(&gw, 0.0, Duration::from_secs(15)).await,
        "a client that reads nothing still holds its connection"
    );
    drop(stream);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_at_accept() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(
        &upstream.url(),
        "max_connections: 2, max_connections_per_ip: 2",
    ))
    .await;
    assert_eq!(
        gauge(&gw, r#"gateway_connections_refused_total{reason="global"}"#).await,
        0.0
    );
    let held = [
        TcpStream::connect(gw.addr).await.unwrap(),
        TcpStream::connect(gw.addr).await.unwrap(),
    ];
    assert!(open_connections_become(&gw, 2.0, Duration::from_secs(5)).await);

    let refused = raw(
        gw.addr,
        b"GET /public/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        refused.status, 0,
        "refused at accept, unanswered: {refused:?}"
    );
    assert_eq!(
        upstream.requests(),
        0,
        "a refused connection's request reached the upstream"
    );
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"gateway_connections_refused_total{reason="global"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"gateway_connections_refused_total{reason="per_ip"}"#
        ),
        Some(0.0)
    );
    assert_eq!(metric(&text, "gateway_open_connections"), Some(2.0));

    drop(held);
    assert!(open_connections_become(&gw, 0.0, Duration::from_secs(5)).await);
    let r = raw(
        gw.addr,
        b"GET /public/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "closed connections free their slots");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_per_ip_refuses_at_accept() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(
        &upstream.url(),
        "max_connections: 10, max_connections_per_ip: 1",
    ))
    .await;
    let held = TcpStream::connect(gw.addr).await.unwrap();
    assert!(open_connections_become(&gw, 1.0, Duration::from_secs(5)).await);
    let refused = raw(
        gw.addr,
        b"GET /public/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        refused.status, 0,
        "refused at accept, unanswered: {refused:?}"
    );
    assert_eq!(upstream.requests(), 0);
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"gateway_connections_refused_total{reason="per_ip"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"gateway_connections_refused_total{reason="global"}"#
        ),
        Some(0.0)
    );
    drop(held);
    assert!(open_connections_become(&gw, 0.0, Duration::from_secs(5)).await);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tls_handshake_frees_its_slot() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(
        &yaml(
            &upstream.url(),
            "max_connections: 1, max_connections_per_ip: 1",
        )
        .replace(
            "insecure_plaintext: true",
            "tls: { cert_file: gateway.crt, key_file: gateway.key }",
        ),
    )
    .await;
    let plain = raw(
        gw.addr,
        b"GET /public/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_ne!(plain.status, 200, "{plain:?}");
    assert!(open_connections_become(&gw, 0.0, Duration::from_secs(5)).await);
    assert_eq!(
        gw.get("/public/a", None).await.status(),
        200,
        "the one slot is free again"
    );
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"gateway_connections_refused_total{reason="global"}"#
        ),
        Some(0.0)
    );
    gw.stop().await;
}

fn admin_client(ca: &Pki) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&ca.ca_der).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

const ADMIN_TOKEN_ENV: &str = "JWT_GATEWAY_CONNECTIONS_TEST_ADMIN_TOKEN";
const ADMIN_TOKEN: &str = "connections-test-admin-token-0123456789";

/// A gateway config with the admin listener over TLS (on `listen`, when given).
fn admin_tls_yaml(upstream: &Upstream, listen: Option<SocketAddr>) -> String {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| std::env::set_var(ADMIN_TOKEN_ENV, ADMIN_TOKEN));
    let listen = listen.map_or(String::new(), |a| format!("  listen: \"{a}\"\n"));
    format!(
        "{}admin:\n{listen}  token_env: {ADMIN_TOKEN_ENV}\n  tls: {{ cert_file: gateway.crt, key_file: gateway.key }}\n",
        yaml(&upstream.url(), "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_over_tls_serves_healthz_and_rereads_its_certificate() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&admin_tls_yaml(&upstream, None)).await;
    let url = format!("https://localhost:{}/healthz", gw.admin.port());
    let r = admin_client(&gw.pki).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_11);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    assert!(
        reqwest::get(format!("http://{}/healthz", gw.admin))
            .await
            .is_err(),
        "plain HTTP to the TLS admin listener must fail"
    );

    // `revoke`, reading its target from a config with admin.tls, talks HTTPS and trusts the
    // admin certificate's own chain.
    let cli_config = gw.dir.path().join("cli.yaml");
    std::fs::write(&cli_config, admin_tls_yaml(&upstream, Some(gw.admin))).unwrap();
    let list = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_jwt-gateway"))
            .arg("-c")
            .arg(&cli_config)
            .args(["revoke", "list"])
            .env(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
            .output()
            .expect("run jwt-gateway revoke")
    })
    .await
    .unwrap();
    assert!(
        list.status.success(),
        "revoke list over TLS: {}",
        String::from_utf8_lossy(&list.stderr)
    );

    let rotated = Pki::new();
    std::fs::write(gw.dir.path().join("gateway.crt"), &rotated.cert_pem).unwrap();
    std::fs::write(gw.dir.path().join("gateway.key"), &rotated.key_pem).unwrap();
    let config = jwt_gateway::config::load(&gw.config_path()).unwrap();
    gw.gateway.reload(config).await.unwrap();
    let r = admin_client(&rotated).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "a reload re-reads the admin certificate");
    assert!(admin_client(&gw.pki).get(&url).send().await.is_err());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_does_not_wait_for_connections_that_never_spoke() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(&yaml(&upstream.url(), "header_read_timeout: 30s")).await;
    let _silent = TcpStream::connect(gw.addr).await.unwrap();
    assert!(open_connections_become(&gw, 1.0, Duration::from_secs(5)).await);
    let started = Instant::now();
    gw.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown waited {:?} for a connection with no request",
        started.elapsed()
    );
}

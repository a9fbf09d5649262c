//! WebSocket upgrades pass through on routes that allow them; a protected route still wants its
//! token before anything reaches the upstream.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::yaml::{anonymous, protected, provider, Config};
use crate::support::{Rig, TestGateway, Upstream};

/// A WebSocket handshake for `target` on `api.example.com`, with `extra` header lines.
pub fn handshake(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade, X-Hop\r\nX-Hop: 1\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends the handshake; returns the response head and the still-open stream.
pub async fn upgrade(addr: SocketAddr, request: &str) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("handshake answer in time")
            .unwrap();
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).into_owned(), stream)
}

/// Writes `payload` and expects the same bytes back through the tunnel.
pub async fn echo_round_trip(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_echoes_through_the_gateway() {
    let rig = Rig::start(|i, u| {
        let up = u.url();
        Config::new()
            .provider(provider(i))
            .route(anonymous("ws", "/ws", &up))
            .route(protected("private-ws", "/private", &up).strip_prefix("/private"))
    })
    .await;
    let (gw, upstream) = (&rig.gw, &rig.upstream);

    let (head, mut stream) = upgrade(gw.addr, &handshake("/ws", "")).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    echo_round_trip(&mut stream, b"\x81\x05hello").await;
    echo_round_trip(&mut stream, &[0xA5; 100_000]).await;
    let seen = upstream.last().unwrap();
    assert_eq!(seen.path_and_query, "/ws");
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert!(seen.headers["connection"]
        .to_str()
        .unwrap()
        .eq_ignore_ascii_case("upgrade"));
    assert_eq!(
        seen.headers["sec-websocket-key"],
        "dGhlIHNhbXBsZSBub25jZQ=="
    );
    assert!(seen.headers.get("x-hop").is_none(), "named in Connection");
    drop(stream);

    // Protected route, no token: 401 and the upstream never hears of it.
    let (head, _stream) = upgrade(gw.addr, &handshake("/private/ws", "")).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert_eq!(upstream.requests(), 1);

    // With a valid token the same route upgrades.
    let token = rig.token();
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (head, mut stream) = upgrade(gw.addr, &handshake("/private/ws", &auth)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo_round_trip(&mut stream, b"with a token").await;
    assert_eq!(upstream.requests(), 2);
    assert!(upstream
        .last()
        .unwrap()
        .headers
        .get("authorization")
        .is_none());
    rig.stop().await;
}

/// The test upstream answers `/ws` with 101 whatever was asked. A 101 to a request that did not
/// ask to upgrade is an upstream protocol error: the client should get 502, not a 101 with no
/// protocol behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsolicited_101_from_the_upstream_is_a_bad_gateway() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::start(Config::new().route(anonymous("ws", "/ws", &upstream.url()))).await;
    for request in [
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        // `Upgrade` without the `Connection: upgrade` token is no upgrade request either.
        "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n",
    ] {
        let r = super::raw(gw.addr, request).await;
        assert_eq!(r.status, 502, "{request:?}: {r:?}");
    }
    assert_eq!(upstream.requests(), 2);
    assert_eq!(
        crate::support::metric(
            &gw.metrics().await,
            r#"gateway_upstream_errors_total{kind="protocol",route="ws"}"#
        ),
        Some(2.0)
    );
    gw.stop().await;
}

/// Reads until the gateway closes the tunnel; returns how long after `since` that was, or
/// panics when it stays open past `limit`.
async fn closed_within(
    stream: &mut TcpStream,
    since: std::time::Instant,
    limit: Duration,
) -> Duration {
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the tunnel was still open {limit:?} later"),
        }
    }
}

/// `/ws` behind provider `test`, trusting `issuer`.
fn private_ws_config(issuer: &crate::support::Issuer, upstream: &Upstream) -> Config {
    Config::new()
        .provider(provider(issuer))
        .route(protected("private-ws", "/ws", &upstream.url()))
}

/// A tunnel is authenticated once, at the handshake: it must not outlive its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnel_closes_when_its_token_expires() {
    let rig = Rig::start(private_ws_config).await;
    let gw = &rig.gw;
    let mut c = rig.claims();
    let exp = crate::support::now() + 2;
    c["exp"] = serde_json::json!(exp);
    let token = rig.mint(&c);
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (head, mut stream) = upgrade(gw.addr, &handshake("/ws", &auth)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo_round_trip(&mut stream, b"before exp").await;
    let started = std::time::Instant::now();
    let open_for = closed_within(&mut stream, started, Duration::from_secs(6)).await;
    // `exp` is whole seconds, so it lies 1-2 s after the handshake; closing came within a second
    // of it.
    assert!(
        open_for >= Duration::from_millis(900),
        "closed too early: {open_for:?}"
    );
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now_unix - exp as f64 <= 1.0,
        "closed {}s after exp",
        now_unix - exp as f64
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnel_closes_when_its_token_is_revoked() {
    use jwt_gateway::auth::revocation::Rule;
    let rig = Rig::start(private_ws_config).await;
    let (gw, upstream) = (&rig.gw, &rig.upstream);
    let keep = rig.token();
    let mut c = rig.claims();
    c["jti"] = serde_json::json!("revoke-me");
    let doomed = rig.mint(&c);
    let (_, mut kept) = upgrade(
        gw.addr,
        &handshake("/ws", &format!("Authorization: Bearer {keep}\r\n")),
    )
    .await;
    let (head, mut stream) = upgrade(
        gw.addr,
        &handshake("/ws", &format!("Authorization: Bearer {doomed}\r\n")),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo_round_trip(&mut stream, b"before the revocation").await;
    let started = std::time::Instant::now();
    gw.gateway
        .revocations
        .add(Rule::Jti {
            jti: "revoke-me".into(),
            exp: crate::support::now() as i64 + 3600,
            iss: None,
        })
        .await
        .expect("revoked");
    let took = closed_within(&mut stream, started, Duration::from_secs(3)).await;
    assert!(
        took <= Duration::from_secs(1),
        "closed {took:?} after the revocation"
    );
    echo_round_trip(&mut kept, b"another token's tunnel stays").await;
    // And the revoked token cannot open a new one.
    let (head, _) = upgrade(
        gw.addr,
        &handshake("/ws", &format!("Authorization: Bearer {doomed}\r\n")),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert_eq!(
        upstream.requests(),
        2,
        "the refused handshake reached no upstream"
    );
    rig.stop().await;
}

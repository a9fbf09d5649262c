//! `max_body_bytes` (413, by Content-Length or while a chunked body streams) and
//! `max_header_bytes` (431): refused requests never reach the upstream whole.

use std::time::Duration;

use super::raw;
use crate::support::yaml::{anonymous, server, Config};
use crate::support::{TestGateway, Upstream};

const LIMIT: usize = 1000;

async fn gateway(upstream: &Upstream) -> TestGateway {
    let limits = format!("max_body_bytes: {LIMIT}, max_header_bytes: 2048, max_token_bytes: 1024");
    TestGateway::start(
        Config::new()
            .server(server().limits(&limits))
            .route(anonymous("public", "/public", &upstream.url())),
    )
    .await
}

fn post_with_length(len: usize, sent: usize) -> Vec<u8> {
    let mut req = format!(
        "POST /public/up HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(b'b', sent));
    req
}

fn post_chunked(chunks: &[usize]) -> Vec<u8> {
    let mut req = b"POST /public/up HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for &n in chunks {
        req.extend(format!("{n:x}\r\n").into_bytes());
        req.extend(std::iter::repeat_n(b'c', n));
        req.extend(b"\r\n");
    }
    req.extend(b"0\r\n\r\n");
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_body_bytes_is_413() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream).await;

    // At the limit: forwarded whole.
    let r = raw(gw.addr, post_with_length(LIMIT, LIMIT)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(upstream.last().unwrap().body_len, LIMIT);
    let r = raw(gw.addr, post_chunked(&[400, 400, 200])).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(upstream.last().unwrap().body_len, LIMIT);
    assert_eq!(upstream.requests(), 2);

    // Declared too large: refused before a byte goes upstream.
    let r = raw(gw.addr, post_with_length(LIMIT + 1, 100)).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["error"], "body_too_large");
    let r = raw(gw.addr, post_with_length(5_000_000_000, 100)).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(upstream.requests(), 2, "nothing reached the upstream");

    // Chunked, found too large while streaming: the client gets 413 and the upstream at most a
    // truncated, aborted stream (never the bytes past the limit).
    let r = raw(gw.addr, post_chunked(&[600, 600, 600])).await;
    assert_eq!(r.status, 413, "{r:?}");
    let r = raw(gw.addr, post_chunked(&[5000])).await;
    assert_eq!(r.status, 413, "{r:?}");
    // HTTP/2 (h2c): the same limit on a declared length.
    let r = gw
        .h2_client()
        .post(gw.url("/public/h2"))
        .body(vec![b'b'; LIMIT + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for seen in upstream.all().iter().skip(2) {
        assert!(
            seen.body_len <= LIMIT,
            "upstream received {} bytes past a {LIMIT}-byte limit",
            seen.body_len
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_431() {
    let upstream = Upstream::start().await;
    let gw = gateway(&upstream).await;
    let with_header = |len: usize| {
        format!(
            "GET /public/h HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
            "v".repeat(len)
        )
    };
    let r = raw(gw.addr, with_header(1000)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(upstream.requests(), 1);
    // Over max_header_bytes (2048) but within hyper's read buffer: the gateway's own check.
    let r = raw(gw.addr, with_header(3000)).await;
    assert_eq!(r.status, 431, "{r:?}");
    // Far over: refused while parsing.
    let r = raw(gw.addr, with_header(64 * 1024)).await;
    assert_eq!(r.status, 431, "{r:?}");
    // Many small headers add up the same way.
    let many: String = (0..60)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(40)))
        .collect();
    let r = raw(
        gw.addr,
        format!("GET /public/h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{many}\r\n"),
    )
    .await;
    assert_eq!(r.status, 431, "{r:?}");
    assert_eq!(upstream.requests(), 1, "nothing reached the upstream");

    // HTTP/2 counts the header list against the same limit.
    let r = gw
        .h2_client()
        .get(gw.url("/public/h2"))
        .header("x-big", "v".repeat(3000))
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), 431),
        // h2 may refuse the stream outright instead of answering: also fine.
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }
    assert_eq!(upstream.requests(), 1, "nothing reached the upstream");
    gw.stop().await;
}

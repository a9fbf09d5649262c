//! What the upstream is told: no hop-by-hop fields (named in `Connection` or not), no
//! URL-override or identity headers from the client, and `X-Forwarded-*` / `X-Request-Id` set.

use super::raw;
use crate::support::yaml::{anonymous, public_and_api, server, Config};
use crate::support::{Rig, TestGateway, Upstream};

/// Headers a client sends that must never reach an upstream.
const NEVER_FORWARDED: &[&str] = &[
    "x-foo",
    "x-bar",
    "keep-alive",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "upgrade",
    "forwarded",
    "x-original-url",
    "x-rewrite-url",
    "x-auth-subject",
];

fn hostile_request(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\n\
         Host: api.example.com\r\n\
         Connection: close, X-Foo\r\n\
         Connection: X-Bar\r\n\
         X-Foo: hop\r\n\
         X-Bar: hop\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: gzip;q=0.5, Trailers\r\n\
         Trailer: X-Checksum\r\n\
         Proxy-Authorization: Basic YTpi\r\n\
         Proxy-Connection: keep-alive\r\n\
         Upgrade: websocket\r\n\
         Forwarded: for=6.6.6.6;host=evil.example\r\n\
         X-Original-URL: /admin\r\n\
         X-Rewrite-URL: /admin\r\n\
         X-Forwarded-For: 6.6.6.6\r\n\
         X-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: evil.example\r\n\
         X-Auth-Subject: mallory\r\n\
         X-Kept: yes\r\n\
         {extra}\r\n"
    )
}

/// `/public` anonymous and `/api` forwarding `sub` as `X-Auth-Subject`.
async fn gateway() -> Rig {
    Rig::start(|i, u| {
        public_and_api(i, u).edit_route("api", |r| r.forward("sub", "X-Auth-Subject"))
    })
    .await
}

fn assert_clean(seen: &crate::support::Seen) {
    for name in NEVER_FORWARDED {
        if *name == "x-auth-subject" {
            continue;
        }
        assert!(
            seen.headers.get(*name).is_none(),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert!(
        seen.headers.get("connection").is_none(),
        "the client's Connection header is hop-by-hop: {:?}",
        seen.headers
    );
    // `TE` is hop-by-hop, but its `trailers` is what gRPC and HTTP/2 upstreams need to hear;
    // nothing else of it travels.
    assert_eq!(
        seen.headers.get_all("te").iter().collect::<Vec<_>>(),
        ["trailers"]
    );
    assert_eq!(seen.headers["x-kept"], "yes");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_and_spoofable_headers_never_reach_the_upstream() {
    let rig = gateway().await;
    let (gw, upstream) = (&rig.gw, &rig.upstream);

    // Anonymous route: stripped all the same.
    let r = raw(gw.addr, hostile_request("/public/h", "")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = upstream.last().unwrap();
    assert_clean(&seen);
    assert!(
        seen.headers.get("x-auth-subject").is_none(),
        "an injectable identity header is removed on anonymous routes too"
    );

    // Protected route: the same, and the identity header is the gateway's alone.
    let token = rig.token();
    let r = raw(
        gw.addr,
        hostile_request("/api/h", &format!("Authorization: Bearer {token}\r\n")),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = upstream.last().unwrap();
    assert_clean(&seen);
    assert_eq!(seen.headers["x-auth-subject"], "alice");
    assert_eq!(seen.headers.get_all("x-auth-subject").iter().count(), 1);
    assert!(seen.headers.get("authorization").is_none());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_kept_when_well_formed_and_echoed_back() {
    let rig = gateway().await;
    let (gw, upstream) = (&rig.gw, &rig.upstream);
    let with_id = |id: &str| {
        format!(
            "GET /public/id HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Request-Id: {id}\r\n\r\n"
        )
    };
    let is_generated = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());

    let kept = "Abc-123_x.y:z";
    let r = raw(gw.addr, with_id(kept)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some(kept));
    assert_eq!(upstream.last().unwrap().headers["x-request-id"], kept);
    let longest = "a".repeat(128);
    let r = raw(gw.addr, with_id(&longest)).await;
    assert_eq!(r.header("x-request-id"), Some(longest.as_str()));

    for bad in [
        "has space",
        "semi;colon",
        "<script>",
        "quote\"d",
        &"a".repeat(129),
    ] {
        let r = raw(gw.addr, with_id(bad)).await;
        assert_eq!(r.status, 200, "{bad}: {r:?}");
        let upstream_id = upstream.last().unwrap().headers["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            is_generated(&upstream_id),
            "{bad:?} kept as {upstream_id:?}"
        );
        assert_eq!(r.header("x-request-id"), Some(upstream_id.as_str()));
    }

    // None sent: one is made, and the response and the upstream agree on it.
    let r = super::raw_get(gw.addr, "a", "/public/none").await;
    let id = upstream.last().unwrap().headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(is_generated(&id));
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));

    // Denials carry the id too, so a client can quote it.
    let r = raw(
        gw.addr,
        "GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Request-Id: trace-401\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-request-id"), Some("trace-401"));
    rig.stop().await;
}

/// An upstream that answers every request with `response`, byte for byte, then closes.
async fn fixed_upstream(response: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_of_the_response_stay_behind() {
    let upstream = fixed_upstream(
        "HTTP/1.1 200 OK\r\nConnection: close, X-Internal\r\nX-Internal: secret\r\n\
         Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-App: kept\r\n\
         Content-Length: 2\r\n\r\nok",
    )
    .await;
    let gw = TestGateway::start(Config::new().route(anonymous(
        "public",
        "/",
        &format!("http://{upstream}"),
    )))
    .await;
    let r = gw.get("/x", None).await;
    assert_eq!(r.status(), 200);
    for name in ["x-internal", "keep-alive", "proxy-authenticate"] {
        assert!(r.headers().get(name).is_none(), "{name}: {:?}", r.headers());
    }
    assert_eq!(r.headers()["x-app"], "kept");
    assert_eq!(r.text().await.unwrap(), "ok");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_appended_only_for_trusted_proxies() {
    let upstream = Upstream::start().await;
    let trusting = |proxies: &str| {
        Config::new()
            .server(server().line(&format!("trusted_proxies: [{proxies}]")))
            .route(anonymous("public", "/", &upstream.url()))
    };
    let request = "GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\
                   X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\
                   X-Forwarded-Host: shop.example\r\n\r\n";

    let gw = TestGateway::start(trusting("\"127.0.0.0/8\"")).await;
    assert_eq!(raw(gw.addr, request).await.status, 200);
    let seen = upstream.last().unwrap();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "shop.example");
    gw.stop().await;

    let gw = TestGateway::start(trusting("\"10.0.0.0/8\"")).await;
    assert_eq!(raw(gw.addr, request).await.status, 200);
    let seen = upstream.last().unwrap();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "a.example");
    gw.stop().await;
}

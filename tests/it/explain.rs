//! The explainer and the proxy are two backs of the same stages: on one table of requests
//! (allowed, refused at every stage, revoked, throttled, oversized, malformed) they must reach the
//! same decision, and an allowed request must reach the upstream with the head the explainer
//! printed.

use std::net::SocketAddr;

use http::request::Parts;
use http::Request;
use jwt_gateway::auth::revocation::Rule;
use jwt_gateway::proxy::explain::explain_request;
use jwt_gateway::proxy::pipeline::ConnInfo;

use crate::proxy::raw;
use crate::support::yaml::{basic, server};
use crate::support::{now, Rig};

/// One row: a request head, as the proxy gets it over a raw socket and the explainer as `Parts`.
struct Row {
    what: &'static str,
    method: &'static str,
    target: &'static str,
    headers: Vec<(String, String)>,
}

impl Row {
    fn new(what: &'static str, target: &'static str) -> Row {
        Row {
            what,
            method: "GET",
            target,
            headers: vec![("Host".into(), "api.example.com".into())],
        }
    }
    fn host(mut self, host: &str) -> Row {
        self.headers[0].1 = host.into();
        self
    }
    fn method(mut self, method: &'static str) -> Row {
        self.method = method;
        self
    }
    fn header(mut self, name: &str, value: impl Into<String>) -> Row {
        self.headers.push((name.into(), value.into()));
        self
    }
    fn token(self, token: &str) -> Row {
        self.header("Authorization", format!("Bearer {token}"))
    }

    fn wire(&self) -> String {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (n, v) in &self.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("Connection: close\r\n\r\n");
        out
    }

    fn parts(&self) -> Parts {
        let mut b = Request::builder().method(self.method).uri(self.target);
        for (n, v) in &self.headers {
            b = b.header(n.as_str(), v.as_str());
        }
        b.header("connection", "close")
            .body(())
            .expect("request")
            .into_parts()
            .0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explainer_and_proxy_decide_alike() {
    let rig = Rig::start(|i, u| {
        let base = format!("{}/base", u.url());
        basic(i, u)
            .server(server().limits(
                "max_header_bytes: 4096, max_body_bytes: 1000, auth_failures_per_minute: 4",
            ))
            .edit_route("api", |r| r.upstream(&base).strip_prefix("/api"))
    })
    .await;
    let (gw, upstream) = (&rig.gw, &rig.upstream);
    let good = rig.token();
    let mut c = rig.claims();
    c["realm_access"] = serde_json::json!({"roles": ["user"]});
    let no_role = rig.mint(&c);
    let mut c = rig.claims();
    c["exp"] = serde_json::json!(now() - 600);
    let expired = rig.mint(&c);
    let mut c = rig.claims();
    c["jti"] = serde_json::json!("explain-revoked");
    let revoked = rig.mint(&c);
    gw.gateway
        .revocations
        .add(Rule::Jti {
            jti: "explain-revoked".into(),
            exp: now() as i64 + 3600,
            iss: None,
        })
        .await
        .expect("revocation");

    let rows = vec![
        Row::new("anonymous", "/public/a/../b?q=1"),
        Row::new("allowed, strip_prefix onto the base path", "/api/orders/7").token(&good),
        Row::new("cached token, merged slashes", "//api//orders").token(&good),
        Row::new("no route", "/nowhere"),
        Row::new("unsafe path", "/public/%2e%2e%2fapi"),
        Row::new("case conflict", "/API/orders").token(&good),
        Row::new("bad host", "/public/x").host("b.corp.test:1@a.corp.test"),
        Row::new("forbidden", "/api/orders").token(&no_role),
        Row::new("revoked", "/api/orders").token(&revoked),
        Row::new("two Authorization headers", "/api/orders")
            .token(&good)
            .token(&good),
        Row::new("header over max_header_bytes", "/public/big").header("X-Big", "x".repeat(5000)),
        Row::new("declared body over max_body_bytes", "/api/upload")
            .method("POST")
            .token(&good)
            .header("Content-Length", "5000"),
        Row::new("CONNECT", "/public/x").method("CONNECT"),
        Row::new("unknown transfer coding", "/public/x")
            .method("POST")
            .header("Transfer-Encoding", "gzip, chunked"),
        // Four client-caused failures fill this client's budget (the revoked and two-header
        // rows above count too); then even a good token is throttled.
        Row::new("expired", "/api/orders").token(&expired),
        Row::new("no token", "/api/orders"),
        Row::new("throttled", "/api/orders").token(&good),
        Row::new("anonymous routes are never throttled", "/public/still"),
    ];
    // What each row must come to (None: forwarded), so agreeing on a wrong answer fails too.
    let want: [Option<u16>; 18] = [
        None,
        None,
        None,
        Some(404),
        Some(400),
        Some(400),
        Some(400),
        Some(403),
        Some(401),
        Some(400),
        Some(431),
        Some(413),
        Some(400),
        Some(501),
        Some(401),
        Some(401),
        Some(429),
        None,
    ];
    assert_eq!(rows.len(), want.len());

    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut failures = Vec::new();
    for (row, want) in rows.iter().zip(want) {
        // The explainer first: it must leave no state behind that changes the proxy's answer.
        let explained = explain_request(
            &gw.gateway,
            ConnInfo {
                peer,
                tls: false,
                client_cert: None,
            },
            row.parts(),
        )
        .await;
        let before = upstream.requests();
        let proxied = raw(gw.addr, row.wire()).await;
        let reached = upstream.requests() > before;
        let agree = match (&explained.outcome, reached) {
            (Err(denial), false) => denial.status().as_u16() == proxied.status,
            (Ok(head), true) => {
                let seen = upstream.last().expect("seen");
                let same_target =
                    seen.path_and_query == head.uri.path_and_query().map_or("", |pq| pq.as_str());
                let same_claims = ["x-auth-subject", "x-auth-roles", "x-forwarded-host"]
                    .iter()
                    .all(|h| seen.headers.get(*h) == head.headers.get(*h));
                proxied.status == 200 && same_target && same_claims
            }
            _ => false,
        };
        if !agree || explained.status().map(|s| s.as_u16()) != want {
            failures.push(format!(
                "{}: explainer {:?} / proxy {} (upstream reached: {reached})\n{}",
                row.what,
                explained.status(),
                proxied.status,
                explained.render()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    rig.stop().await;
}

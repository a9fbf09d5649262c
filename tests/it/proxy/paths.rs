//! Path normalization end to end, over raw sockets (HTTP clients normalize paths themselves).
//! Allowed paths reach the upstream exactly as routed; refused ones reach no upstream at all.

use super::raw_get;
use crate::support::yaml::{anonymous, public_and_api};
use crate::support::{Rig, Upstream};

/// Where a request must end up.
#[derive(Debug)]
enum Expect {
    /// Upstream `a` (routes `public`, `api`) receives this path and query.
    A(&'static str),
    /// Upstream `b` (routes `strip` with base path `/base`, and the catch-all `root`).
    B(&'static str),
    /// The gateway answers this status and no upstream hears of it.
    Refused(u16),
}

use Expect::{Refused, A, B};

const CASES: &[(&str, Expect)] = &[
    ("/public/x", A("/public/x")),
    // dot segments, raw and encoded, resolved before routing
    ("/public/a/../b", A("/public/b")),
    ("/public/./a/./b", A("/public/a/b")),
    ("/a/../b", B("/b")),
    ("/public/x/%2e%2e", A("/public/")),
    ("/public/%2E%2E/public/y", A("/public/y")),
    ("/x/%2e%2e/public/z", A("/public/z")),
    // climbing out of the anonymous prefix lands on the protected route, never served anonymously
    ("/public/%2e%2e/api", Refused(401)),
    ("/public/%2E%2E/api/orders", Refused(401)),
    ("/public/../api", Refused(401)),
    ("/public/.%2e/api", Refused(401)),
    // unreserved escapes decoded, others kept with upper-case hex
    ("/public/%7Euser", A("/public/~user")),
    ("/public/%41b", A("/public/Ab")),
    ("/public/a%3fb", A("/public/a%3Fb")),
    ("/public/a%20b", A("/public/a%20b")),
    // runs of slashes merged (server.path.merge_slashes defaults to true)
    ("/public//x", A("/public/x")),
    ("/public///", A("/public/")),
    ("//public/x", A("/public/x")),
    ("/x/..//public/y", A("/public/y")),
    ("//api", Refused(401)),
    ("/x/..//api/orders", Refused(401)),
    // `;` ends a segment for prefix matching
    ("/public;x", A("/public;x")),
    ("/public;jsessionid=1/y", A("/public;jsessionid=1/y")),
    ("/publicity", B("/publicity")),
    // the query string passes unchanged, whatever it holds
    (
        "/public/q?a=%2F..%2F&b=/../&c",
        A("/public/q?a=%2F..%2F&b=/../&c"),
    ),
    ("/public/a/../q?x=%2e%2e", A("/public/q?x=%2e%2e")),
    // strip_prefix, onto the upstream's base path
    ("/strip/x?y=1", B("/base/x?y=1")),
    ("/strip", B("/base/")),
    ("/strip/a/../b", B("/base/b")),
    // unsafe: 400, nothing forwarded
    ("/public/a%2Fb", Refused(400)),
    ("/public/a%2fb", Refused(400)),
    ("/public/%2e%2e%2fapi", Refused(400)),
    ("/public/a%5Cb", Refused(400)),
    ("/public/a%5cb", Refused(400)),
    ("/public/a\\b", Refused(400)),
    ("/public/..;/api", Refused(400)),
    ("/public/..;x/api", Refused(400)),
    ("/public/.;/x", Refused(400)),
    ("/public/%2e%2e;/api", Refused(400)),
    ("/public/..%3B/api", Refused(400)),
    ("/public/%00", Refused(400)),
    ("/public/a%00.jpg", Refused(400)),
    ("/public/%0d%0aX-Injected:%201", Refused(400)),
    ("/public/%1f", Refused(400)),
    ("/public/%7f", Refused(400)),
    ("/..", Refused(400)),
    ("/../public/x", Refused(400)),
    ("/public/../../etc/passwd", Refused(400)),
    ("/public/%2e%2e/%2e%2e/x", Refused(400)),
    ("/public/%", Refused(400)),
    ("/public/%zz", Refused(400)),
    ("/api%2Fx", Refused(400)),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_normalization_table() {
    let b = Upstream::start().await;
    let rig = Rig::start(|i, a| {
        public_and_api(i, a)
            .route(
                anonymous("strip", "/strip", &format!("{}/base", b.url())).strip_prefix("/strip"),
            )
            .route(anonymous("root", "/", &b.url()))
    })
    .await;
    let (gw, a) = (&rig.gw, &rig.upstream);

    let mut failures = Vec::new();
    for (target, expect) in CASES {
        let (before_a, before_b) = (a.requests(), b.requests());
        let r = raw_get(gw.addr, "api.example.com", target).await;
        let (got_a, got_b) = (a.requests() - before_a, b.requests() - before_b);
        let outcome = match expect {
            A(path) | B(path) => {
                let (upstream, hits, other) = match expect {
                    A(_) => (a, got_a, got_b),
                    _ => (&b, got_b, got_a),
                };
                let seen = upstream.last().map(|s| s.path_and_query);
                if r.status == 200 && hits == 1 && other == 0 && seen.as_deref() == Some(path) {
                    Ok(())
                } else {
                    Err(format!(
                        "status {} upstream hits a={got_a} b={got_b}, last path {seen:?}",
                        r.status
                    ))
                }
            }
            Refused(status) => {
                if r.status == *status && got_a == 0 && got_b == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "status {} upstream hits a={got_a} b={got_b}",
                        r.status
                    ))
                }
            }
        };
        if let Err(why) = outcome {
            failures.push(format!("{target:?}: expected {expect:?}, got {why}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // HTTP/2 requests are judged the same way.
    let h2 = gw.h2_client();
    let r = h2.get(gw.url("/public/a%2Fb")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = h2.get(gw.url("/public/a;x//b%7E")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(a.last().unwrap().path_and_query, "/public/a;x/b~");
    rig.stop().await;
}

//! Differential tests (issue 13, contract section A): the gateway in front of real upstream
//! servers (nginx, CPython's wsgiref, Tomcat; see `support::real_upstreams`), fed the requests of
//! the bypasses. Each test first sends the request straight to the server where that
//! shows the server would serve the bypass with nothing in front of it, then through the gateway,
//! and asserts what the server *resolved* (nginx's `$uri` and location, WSGI's `PATH_INFO` and
//! `HTTP_*` keys, the servlet mapping and path) and that every refusal reached no upstream.

use crate::support::real_upstreams::RealUpstream;

/// `GET target` with `Host: host`, `Connection: close` and `extra` header lines.
fn get(target: &str, host: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_real_upstream_serves_the_bypasses_when_nothing_stands_in_front() {
    // nginx merges slashes and resolves dot segments before choosing a location.
    let nginx = RealUpstream::nginx();
    for (target, path) in [
        ("//admin", "/admin"),
        ("/x/..//admin", "/admin"),
        ("///admin//x", "/admin/x"),
        ("/adm%69n", "/admin"),
    ] {
        let seen = nginx.direct(&get(target, "nginx", ""));
        assert_eq!(
            (
                seen.handler.as_str(),
                seen.path.as_str(),
                seen.target.as_str()
            ),
            ("admin", path, target),
            "nginx {target}"
        );
    }
    // nginx itself ignores header names with `_` (underscores_in_headers off).
    let seen = nginx.direct(&get("/x", "nginx", "X_Auth_Subject: admin\r\n"));
    assert_eq!(seen.header("x-auth-subject"), None, "{seen:?}");

    // wsgiref reads `X_Auth_Subject` as HTTP_X_AUTH_SUBJECT, and appends a second header of
    // the same key after a comma.
    let wsgi = RealUpstream::wsgiref();
    let seen = wsgi.direct(&get(
        "/public/x",
        "wsgi",
        "X_Auth_Subject: admin\r\nX-Forwarded-For: 127.0.0.1\r\nX_Forwarded_For: 1.2.3.4\r\n",
    ));
    assert!(seen.server.contains("CPython/3."), "{}", seen.server);
    assert_eq!(seen.header("X-Auth-Subject"), Some("admin"), "{seen:?}");
    assert_eq!(
        seen.header("X-Forwarded-For"),
        Some("127.0.0.1,1.2.3.4"),
        "{seen:?}"
    );

    // Tomcat drops `;` parameters from each segment before mapping, merges slashes, and reads
    // `%3B` as a literal `;` inside the segment (so `/secure%3B/data` is not `/secure/*`).
    let tomcat = RealUpstream::tomcat();
    for (target, servlet, path) in [
        ("/secure;jsessionid=x/data", "secure", "/secure/data"),
        ("/secure;/data", "secure", "/secure/data"),
        ("//secure/data", "secure", "/secure/data"),
        ("/secure%3B/data", "catch-all", "/secure;/data"),
    ] {
        let seen = tomcat.direct(&get(target, "tomcat", ""));
        assert_eq!(
            (
                seen.handler.as_str(),
                seen.path.as_str(),
                seen.target.as_str()
            ),
            (servlet, path, target),
            "Tomcat {target}"
        );
    }
}

//! Requests hyper parses but a reverse proxy must not act on, refused before the pipeline:
//!
//! - `CONNECT`: a tunnel request. hyper accepts it with an origin-form target too (which HTTP
//!   forbids), and the pipeline would then forward the method upstream as if it were a request.
//! - more than one `Host` (RFC 9112 3.2 asks for 400): routing reads one of them and another hop
//!   might read the other.
//! - an HTTP/1.1 request without `Host` (RFC 9112 3.2 asks for 400 as well): host-less routes
//!   would otherwise take requests that a host-aware hop in front never meant for them.
//! - a transfer coding other than `chunked` (RFC 9112 6.1 asks for 501): hyper decodes only
//!   `chunked`, and `gzip, chunked` would reach the upstream as if it were plain bytes.
//!
//! They are answered, counted and logged like a request refused before routing (`route="none"`).

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use tokio::time::Instant;

use crate::gateway::Gateway;
use crate::proxy::body::{full, ResponseBody};
use crate::proxy::headers::{request_id, X_REQUEST_ID};
use crate::proxy::pipeline::ConnInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    Connect,
    DuplicateHost,
    MissingHost,
    TransferCoding,
}

impl Malformed {
    fn status(self) -> StatusCode {
        match self {
            Malformed::Connect | Malformed::DuplicateHost | Malformed::MissingHost => {
                StatusCode::BAD_REQUEST
            }
            Malformed::TransferCoding => StatusCode::NOT_IMPLEMENTED,
        }
    }

    fn description(self) -> &'static str {
        match self {
            Malformed::Connect => "CONNECT is not supported",
            Malformed::DuplicateHost => "the request carries more than one Host header",
            Malformed::MissingHost => "an HTTP/1.1 request must carry a Host header",
            Malformed::TransferCoding => "only the chunked transfer coding is supported",
        }
    }
}

/// What is wrong with the request head, if it is one of the shapes above.
pub fn check<B>(request: &Request<B>) -> Option<Malformed> {
    if request.method() == Method::CONNECT {
        return Some(Malformed::Connect);
    }
    let headers = request.headers();
    match headers.get_all(header::HOST).iter().count() {
        0 if request.version() == Version::HTTP_11 => return Some(Malformed::MissingHost),
        0 | 1 => {}
        _ => return Some(Malformed::DuplicateHost),
    }
    // hyper has already refused a request whose last coding is not `chunked`.
    let other_coding = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|coding| !coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    other_coding.then_some(Malformed::TransferCoding)
}

/// The answer to a malformed request: a JSON error, counted under `route="none"`, with its
/// access-log line.
pub fn refuse<B>(
    gateway: &Gateway,
    conn: ConnInfo,
    request: &Request<B>,
    why: Malformed,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let id = request_id(request.headers());
    let body =
        serde_json::json!({"error": "invalid_request", "error_description": why.description()});
    let snapshot = gateway.snapshot();
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = why.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(&X_REQUEST_ID, id.clone());
    // The client may keep sending a tunnel or body we will not read: end the connection (an
    // HTTP/2 stream simply ends; its connection serves other streams).
    if request.version() < http::Version::HTTP_2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let (true, Some(hsts)) = (conn.tls, &snapshot.hsts) {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    let status = why.status().as_u16();
    snapshot.unrouted.count_response(status);
    let elapsed = started.elapsed().as_secs_f64();
    snapshot.unrouted.duration.observe(elapsed);
    let span = tracing::info_span!("request", id = %id.to_str().unwrap_or(""), route = "none");
    let _entered = span.enter();
    tracing::info!(
        target: "access",
        client = %conn.peer.ip(),
        route = "none",
        method = %request.method(),
        path = "",
        status,
        decision = "none",
        reason = "none",
        sub = "",
        jti = "",
        duration_ms = elapsed * 1000.0,
        upstream_ms = 0.0,
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/x");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn shapes_a_proxy_must_not_forward() {
        assert_eq!(check(&request("CONNECT", &[])), Some(Malformed::Connect));
        assert_eq!(
            check(&request("GET", &[("host", "a"), ("host", "b")])),
            Some(Malformed::DuplicateHost)
        );
        for te in ["gzip, chunked", "identity,chunked"] {
            assert_eq!(
                check(&request(
                    "POST",
                    &[("host", "a"), ("transfer-encoding", te)]
                )),
                Some(Malformed::TransferCoding),
                "{te}"
            );
        }
        assert_eq!(
            check(&request(
                "POST",
                &[
                    ("host", "a"),
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "gzip")
                ]
            )),
            Some(Malformed::TransferCoding)
        );
        assert_eq!(check(&request("GET", &[])), Some(Malformed::MissingHost));
        let mut http10 = request("GET", &[]);
        *http10.version_mut() = Version::HTTP_10;
        let mut http2 = request("GET", &[]);
        *http2.version_mut() = Version::HTTP_2;
        for fine in [
            request("GET", &[("host", "a")]),
            request("POST", &[("host", "a"), ("transfer-encoding", "Chunked")]),
            http10,
            http2,
        ] {
            assert_eq!(check(&fine), None);
        }
    }
}

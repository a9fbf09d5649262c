//! Request heads hyper parses but a reverse proxy must not act on:
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
//! They are the pipeline's first stage: refused as `Denial::BadRequest`, answered, counted and
//! logged like any request refused before routing (`route="none"`).

use http::header::{self, HeaderMap};
use http::{Method, Version};

use crate::denial::BadRequest;

/// What is wrong with the request head, if it is one of the shapes above.
pub fn check_shape(method: &Method, version: Version, headers: &HeaderMap) -> Option<BadRequest> {
    if method == Method::CONNECT {
        return Some(BadRequest::Connect);
    }
    match headers.get_all(header::HOST).iter().count() {
        0 if version == Version::HTTP_11 => return Some(BadRequest::MissingHost),
        0 | 1 => {}
        _ => return Some(BadRequest::DuplicateHost),
    }
    // hyper has already refused a request whose last coding is not `chunked`.
    let other_coding = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|coding| !coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    other_coding.then_some(BadRequest::TransferCoding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn check(request: &Request<()>) -> Option<BadRequest> {
        check_shape(request.method(), request.version(), request.headers())
    }

    fn request(method: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/x");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn shapes_a_proxy_must_not_forward() {
        assert_eq!(check(&request("CONNECT", &[])), Some(BadRequest::Connect));
        assert_eq!(
            check(&request("GET", &[("host", "a"), ("host", "b")])),
            Some(BadRequest::DuplicateHost)
        );
        for te in ["gzip, chunked", "identity,chunked"] {
            assert_eq!(
                check(&request(
                    "POST",
                    &[("host", "a"), ("transfer-encoding", te)]
                )),
                Some(BadRequest::TransferCoding),
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
            Some(BadRequest::TransferCoding)
        );
        assert_eq!(check(&request("GET", &[])), Some(BadRequest::MissingHost));
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

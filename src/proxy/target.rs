//! The URI a client used for a request, as a DPoP proof's `htu` must name it (RFC 9449 4.3): the
//! scheme and host the client connected with (behind `trusted_proxies`, the ones they forwarded in
//! `X-Forwarded-Proto` and `-Host`), and the path the gateway routed on. Both sides are compared
//! normalized (RFC 3986 6.2.2 and 6.2.3): scheme and host case, a trailing dot, the default port,
//! and the path as `normalize_path` reads it, so `HTTPS://API.example.com:443/a/./b` names
//! `https://api.example.com/a/b`. A query or fragment in `htu` is refused, as RFC 9449 leaves
//! both out.

use http::{HeaderMap, Uri};

use super::headers::{X_FORWARDED_HOST, X_FORWARDED_PROTO};
use super::host::{parse_host, RequestHost};
use crate::path::{normalize_path, PathPolicy};

/// What a request's `htu` must name.
pub struct ClientUri<'a> {
    https: bool,
    host: Option<RequestHost>,
    /// The normalized path, as routed.
    path: &'a str,
    policy: PathPolicy,
}

impl<'a> ClientUri<'a> {
    /// `tls`: the connection's; `from_trusted`: whether the peer may say what the client used;
    /// `routed`: the request's host as routing read it.
    pub fn new(
        headers: &HeaderMap,
        tls: bool,
        from_trusted: bool,
        routed: Option<&RequestHost>,
        path: &'a str,
        policy: PathPolicy,
    ) -> ClientUri<'a> {
        let forwarded = |name| from_trusted.then(|| single(headers, name)).flatten();
        let https = match forwarded(&X_FORWARDED_PROTO) {
            Some(p) if p.eq_ignore_ascii_case(b"https") => true,
            Some(p) if p.eq_ignore_ascii_case(b"http") => false,
            _ => tls,
        };
        let host = forwarded(&X_FORWARDED_HOST)
            .and_then(|h| parse_host(h).ok())
            .or_else(|| routed.cloned());
        ClientUri {
            https,
            host,
            path,
            policy,
        }
    }

    /// Whether `htu` names this URI once both are normalized.
    pub fn matches(&self, htu: &str) -> bool {
        let Some(expected) = &self.host else {
            return false;
        };
        if htu.contains(['?', '#']) {
            return false;
        }
        let Ok(uri) = htu.parse::<Uri>() else {
            return false;
        };
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return false,
        };
        let Some(Ok(host)) = uri.authority().map(|a| parse_host(a.as_str().as_bytes())) else {
            return false;
        };
        https == self.https
            && host.name() == expected.name()
            && port(&host, https) == port(expected, self.https)
            && normalize_path(uri.path(), self.policy).is_ok_and(|p| p == self.path)
    }
}

/// The one value of a header sent once; a list (two fields, or `a, b`) is no single answer.
fn single<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Option<&'h [u8]> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if !v.as_bytes().contains(&b',') => Some(v.as_bytes().trim_ascii()),
        _ => None,
    }
}

/// The port a host names, the scheme's default when it names none (RFC 3986 6.2.3).
fn port(host: &RequestHost, https: bool) -> u16 {
    let default = if https { 443 } else { 80 };
    host.as_str()[host.name().len()..]
        .strip_prefix(':')
        .map_or(Some(default), |p| p.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn uri<'a>(
        headers: &HeaderMap,
        tls: bool,
        trusted: bool,
        host: &str,
        path: &'a str,
    ) -> ClientUri<'a> {
        let routed = parse_host(host.as_bytes()).ok();
        ClientUri::new(
            headers,
            tls,
            trusted,
            routed.as_ref(),
            path,
            PathPolicy::default(),
        )
    }

    #[test]
    fn htu_is_compared_after_normalization() {
        let none = HeaderMap::new();
        let u = uri(&none, true, false, "api.example.com", "/orders/7");
        for htu in [
            "https://api.example.com/orders/7",
            "HTTPS://API.Example.COM/orders/7",
            "https://api.example.com:443/orders/7",
            "https://api.example.com./orders/7",
            "https://api.example.com/orders/./7",
            "https://api.example.com/orders/x/../7",
            "https://api.example.com/%6Frders/7",
            "https://api.example.com//orders/7",
        ] {
            assert!(u.matches(htu), "{htu}");
        }
        for htu in [
            "http://api.example.com/orders/7",
            "https://api.example.com:8443/orders/7",
            "https://other.example.com/orders/7",
            "https://api.example.com/orders/8",
            "https://api.example.com/orders/7?x=1",
            "https://api.example.com/orders/7#f",
            "https://api.example.com/orders/7/",
            "https://user@api.example.com/orders/7",
            "/orders/7",
            "api.example.com/orders/7",
            "ftp://api.example.com/orders/7",
            "",
        ] {
            assert!(!u.matches(htu), "{htu}");
        }
        let on_port = uri(&none, false, false, "api.example.com:8080", "/");
        assert!(on_port.matches("http://api.example.com:8080"));
        assert!(!on_port.matches("http://api.example.com/"));
        let default_port = uri(&none, false, false, "api.example.com:80", "/");
        assert!(default_port.matches("http://api.example.com/"));
    }

    #[test]
    fn forwarded_scheme_and_host_count_only_from_trusted_proxies() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("api.example.com"),
        );
        let behind = uri(&headers, false, true, "gateway.internal:8080", "/a");
        assert!(behind.matches("https://api.example.com/a"));
        assert!(!behind.matches("http://gateway.internal:8080/a"));
        let direct = uri(&headers, false, false, "gateway.internal:8080", "/a");
        assert!(direct.matches("http://gateway.internal:8080/a"));
        assert!(!direct.matches("https://api.example.com/a"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        let listed = uri(&headers, false, true, "gateway.internal", "/a");
        assert!(
            listed.matches("http://api.example.com/a"),
            "a list is no answer"
        );
    }
}

//! `routes[].cors`: the gateway answers a route's CORS preflights itself (a browser sends them
//! without credentials, so a token check would turn each into a 401) and puts the
//! `Access-Control-Allow-*` headers on every response of the route, its denials included, so a
//! page can read why it was refused.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use crate::config::{AllowedOrigins, CorsConfig};

const ANY: HeaderValue = HeaderValue::from_static("*");
const TRUE: HeaderValue = HeaderValue::from_static("true");
const ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

/// The method a CORS preflight asks about: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method` (Fetch standard, "CORS-preflight request").
pub fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(header::ORIGIN) {
        return None;
    }
    let asked = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(asked.as_bytes()).ok()
}

/// The `Access-Control-Allow-Origin` for this request's `Origin`, if the route allows it.
pub fn allowed_origin(cors: &CorsConfig, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    match &cors.allow_origins {
        AllowedOrigins::Any => Some(ANY),
        AllowedOrigins::List(list) => list
            .iter()
            .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
            .then(|| origin.clone()),
    }
}

/// The headers every response of a CORS route carries. `origin` is what [`allowed_origin`]
/// found; an origin echoed from a list makes the answer vary by `Origin`, for caches, whether
/// this one was allowed or not.
pub fn stamp(cors: &CorsConfig, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    if matches!(cors.allow_origins, AllowedOrigins::List(_)) {
        headers.append(header::VARY, ORIGIN);
    }
    let Some(origin) = origin else {
        return;
    };
    // The gateway's answer replaces whatever an upstream says: two `Allow-Origin` values fail
    // in every browser.
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if cors.allow_credentials {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
    }
    if let Some(expose) = &cors.expose_headers {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
    }
}

/// 204 to a preflight from an allowed origin, with what may follow; from another origin the
/// 204 comes without them and the browser stops there.
pub fn preflight_response(cors: &CorsConfig, allowed: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    if allowed {
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            cors.allow_methods.clone(),
        );
        if let Some(allow) = &cors.allow_headers {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow.clone());
        }
        if let Some(age) = &cors.max_age {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
    }
    response
}

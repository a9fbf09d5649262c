//! The admin listener: metrics, liveness, readiness. Never served on the public listener.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::gateway::Gateway;

pub async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => metrics(&gateway),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(&gateway),
        (_, "/metrics" | "/healthz" | "/readyz") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

fn metrics(gateway: &Gateway) -> Response<Full<Bytes>> {
    gateway
        .metrics
        .token_cache_entries
        .set(gateway.cache.entry_count() as i64);
    let mut response = Response::new(Full::new(Bytes::from(gateway.metrics.render())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// 200 when every provider can verify tokens; the body names each provider's state.
fn readyz(gateway: &Gateway) -> Response<Full<Bytes>> {
    let snapshot = gateway.snapshot();
    let providers: serde_json::Map<String, serde_json::Value> = snapshot
        .providers
        .iter()
        .map(|p| {
            let state = if p.is_ready() {
                "ready"
            } else {
                "no_usable_keys"
            };
            (p.config.name.clone(), serde_json::Value::from(state))
        })
        .collect();
    let ready = snapshot.providers.iter().all(|p| p.is_ready());
    let body = serde_json::json!({ "ready": ready, "providers": providers }).to_string();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

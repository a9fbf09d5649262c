//! The admin listener: metrics, liveness, readiness and the revocation API. Never served on the
//! public listener.

mod revocations;

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
    let path = request.uri().path().to_string();
    let response = match (request.method(), path.as_str()) {
        (&Method::GET, "/metrics") => metrics(&gateway),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(&gateway),
        // Public keys only, for upstreams verifying assertions: no credentials asked.
        (&Method::GET, "/.well-known/jwks.json") => {
            json(StatusCode::OK, &gateway.assertion_keys.jwks())
        }
        (_, "/metrics" | "/healthz" | "/readyz" | "/.well-known/jwks.json") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        (_, p) if p == "/revocations" || p.starts_with("/revocations/") => {
            revocations::handle(&gateway, request).await
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

/// 200 when every provider can verify tokens; the body names each provider's state and the
/// revocation store's (an unreachable Redis is reported, not fatal: known revocations still hold).
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
    let revocation = match gateway.revocations.connected() {
        None => "embedded",
        Some(true) => "connected",
        Some(false) => "unreachable",
    };
    let body = serde_json::json!({
        "ready": ready,
        "providers": providers,
        "revocation": {"backend": gateway.revocations.backend_name(), "state": revocation},
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &body)
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
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

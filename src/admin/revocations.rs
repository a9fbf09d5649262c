//! `POST /revocations`, `GET /revocations`, `DELETE /revocations/{id}`. Mutations need
//! `Authorization: Bearer <admin.token_env>`; without a configured token they are always refused.

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::json;
use crate::auth::revocation::{parse_rule, RevocationError};
use crate::gateway::Gateway;

/// Largest admin request body read; a revocation is well under 2 KiB.
const MAX_BODY: usize = 16 * 1024;

pub async fn handle(gateway: &Gateway, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    match (request.method().clone(), path.strip_prefix("/revocations")) {
        (Method::GET, Some("" | "/")) => {
            json(StatusCode::OK, &json!(gateway.revocations.entries()))
        }
        (Method::POST, Some("" | "/")) => {
            if !authorized(gateway, &request) {
                return unauthorized();
            }
            let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "the body could not be read or is too large",
                    )
                }
            };
            let rule = match parse_rule(&body) {
                Ok(rule) => rule,
                Err(why) => {
                    return error(StatusCode::BAD_REQUEST, "invalid_request", &why.to_string())
                }
            };
            match gateway.revocations.add(rule).await {
                Ok(entry) => {
                    tracing::info!(id = %entry.id, "revocation added");
                    json(StatusCode::CREATED, &json!(entry))
                }
                Err(e) => store_error(&e),
            }
        }
        (Method::DELETE, Some(rest)) if rest.len() > 1 => {
            if !authorized(gateway, &request) {
                return unauthorized();
            }
            match gateway.revocations.remove(&rest[1..]).await {
                Ok(true) => {
                    tracing::info!(id = %&rest[1..], "revocation removed");
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                }
                Ok(false) => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no revocation has this id",
                ),
                Err(e) => store_error(&e),
            }
        }
        (_, Some("" | "/")) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET or POST",
        ),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such admin resource"),
    }
}

/// Compares SHA-256 digests in constant time, so neither content nor length leaks by timing.
fn authorized(gateway: &Gateway, request: &Request<Incoming>) -> bool {
    let Some(expected) = &gateway.snapshot().config.admin.token else {
        return false;
    };
    let mut values = request.headers().get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some(presented) = value
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .or_else(|| value.as_bytes().strip_prefix(b"bearer "))
    else {
        return false;
    };
    let digest = |b: &[u8]| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    aws_lc_rs::constant_time::verify_slices_are_equal(
        digest(presented).as_ref(),
        digest(&expected.0).as_ref(),
    )
    .is_ok()
}

fn unauthorized() -> Response<Full<Bytes>> {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid admin bearer token is required",
    );
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="jwt-gateway-admin""#),
    );
    r
}

fn store_error(e: &RevocationError) -> Response<Full<Bytes>> {
    tracing::warn!(error = %e, "revocation not stored");
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the revocation store is unavailable; nothing was changed",
    );
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn error(status: StatusCode, code: &str, description: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &json!({"error": code, "error_description": description}),
    )
}

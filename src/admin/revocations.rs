//! `POST /revocations`, `GET /revocations`, `DELETE /revocations/{id}`. Every call needs
//! `Authorization: Bearer <admin.token_env>`; without a configured token they are all refused.

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::json;
use crate::auth::bearer::Credential;
use crate::auth::revocation::{
    parse_request, InvalidRule, RevocationError, RevocationRequest, Rule, MAX_ID_LEN,
};
use crate::auth::verify::{verify_token, Unverified};
use crate::denial::Reason;
use crate::gateway::Gateway;

/// Largest admin request body read; a revocation is well under 2 KiB.
const MAX_BODY: usize = 16 * 1024;

pub async fn handle(gateway: &Gateway, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    match (request.method().clone(), path.strip_prefix("/revocations")) {
        // Listing needs the token too: the list names subjects and token ids.
        (Method::GET, Some("" | "/")) => {
            if !authorized(gateway, &request) {
                return unauthorized();
            }
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
            let rule = match rule_from_body(gateway, &body).await {
                Ok(rule) => rule,
                Err(refused) => return refused.response(),
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

/// Why a `POST /revocations` body stores nothing. Descriptions are fixed texts: nothing of the
/// body (a token above all) is ever echoed.
#[derive(Clone, Copy, Debug)]
enum Refused {
    Body(InvalidRule),
    Invalid(&'static str),
    KeysUnavailable,
}

impl Refused {
    fn response(self) -> Response<Full<Bytes>> {
        match self {
            Refused::Body(why) => {
                error(StatusCode::BAD_REQUEST, "invalid_request", &why.to_string())
            }
            Refused::Invalid(description) => {
                error(StatusCode::BAD_REQUEST, "invalid_request", description)
            }
            Refused::KeysUnavailable => {
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the token's signing keys cannot be had right now; nothing was changed",
                );
                r.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
                r
            }
        }
    }
}

async fn rule_from_body(gateway: &Gateway, body: &[u8]) -> Result<Rule, Refused> {
    match parse_request(body).map_err(Refused::Body)? {
        RevocationRequest::Rule(rule) => known_issuer(gateway, rule),
        RevocationRequest::Token(token) => rule_from_token(gateway, &token).await,
    }
}

/// A rule scoped to an issuer no provider has would never match anything: most likely a typo
/// (a trailing `/`), which must not pass for a revocation in force.
fn known_issuer(gateway: &Gateway, rule: Rule) -> Result<Rule, Refused> {
    let snapshot = gateway.snapshot();
    match rule.issuer() {
        Some(iss) if !snapshot.providers.iter().any(|p| p.config.issuer == iss) => Err(
            Refused::Invalid("iss names no configured provider's issuer"),
        ),
        _ => Ok(rule),
    }
}

/// `{"token": ...}`: the token must verify exactly as the proxy would verify it (signature,
/// provider by `iss`, time claims with the provider's skew; the audience is not asked, as a
/// token is revoked for every route), and is revoked by its `jti` until its `exp`, scoped to its
/// issuer. An expired token is refused already, so it gets 400 and nothing is stored.
async fn rule_from_token(gateway: &Gateway, token: &str) -> Result<Rule, Refused> {
    let snapshot = gateway.snapshot();
    if token.len() > snapshot.config.server.limits.max_token_bytes {
        return Err(Refused::Invalid("the token is longer than max_token_bytes"));
    }
    let credential = Credential::from_token(token);
    let entry = match verify_token(&credential, &snapshot.providers, &gateway.cache).await {
        Ok((entry, _)) => entry,
        Err(Unverified::Token(Reason::Expired)) => {
            return Err(Refused::Invalid(
                "the token has expired: the gateway refuses it already; nothing was stored",
            ))
        }
        Err(Unverified::Token(Reason::KeysUnavailable)) => return Err(Refused::KeysUnavailable),
        Err(_) => {
            return Err(Refused::Invalid(
                "the token does not verify against any configured provider",
            ))
        }
    };
    let claims = &entry.claims;
    let Some(jti) = claims
        .jti
        .as_ref()
        .filter(|j| !j.is_empty() && j.len() <= MAX_ID_LEN)
    else {
        return Err(Refused::Invalid(
            "the token has no usable jti; revoke its subject with {\"sub\", \"not_before\"} instead",
        ));
    };
    Ok(Rule::Jti {
        jti: jti.clone(),
        // Without `exp` the token never expires, and neither does its revocation.
        exp: claims.exp.map_or(i64::MAX, |exp| exp.ceil() as i64),
        iss: Some(entry.provider.config.issuer.clone()),
    })
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

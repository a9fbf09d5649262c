//! Every way the gateway refuses a request, and the one place each becomes a status, a
//! `WWW-Authenticate` challenge, a JSON body and a metric reason. A new variant does not compile
//! until it has picked all four.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;

/// The `reason` label of `gateway_auth_decisions_total`, and what a denied token is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Ok,
    MissingToken,
    Malformed,
    BadSignature,
    UnknownKid,
    AlgNotAllowed,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    MissingClaim,
    InsufficientScope,
    Revoked,
    KeysUnavailable,
}

impl Reason {
    pub const ALL: [Reason; 14] = [
        Reason::Ok,
        Reason::MissingToken,
        Reason::Malformed,
        Reason::BadSignature,
        Reason::UnknownKid,
        Reason::AlgNotAllowed,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Issuer,
        Reason::Audience,
        Reason::MissingClaim,
        Reason::InsufficientScope,
        Reason::Revoked,
        Reason::KeysUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::MissingToken => "missing_token",
            Reason::Malformed => "malformed",
            Reason::BadSignature => "bad_signature",
            Reason::UnknownKid => "unknown_kid",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Issuer => "issuer",
            Reason::Audience => "audience",
            Reason::MissingClaim => "missing_claim",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::Revoked => "revoked",
            Reason::KeysUnavailable => "keys_unavailable",
        }
    }

    /// Generic by design: it names the failed check, never a claim value or key material.
    fn description(self) -> &'static str {
        match self {
            Reason::Ok => "the token is valid",
            Reason::MissingToken => "no bearer token was presented",
            Reason::Malformed => "the token is malformed",
            Reason::BadSignature => "the token signature is invalid",
            Reason::UnknownKid => "the token was signed by an unknown key",
            Reason::AlgNotAllowed => "the token algorithm is not allowed",
            Reason::Expired => "the token is expired",
            Reason::NotYetValid => "the token is not valid yet",
            Reason::Issuer => "the token issuer is not trusted here",
            Reason::Audience => "the token audience is not accepted here",
            Reason::MissingClaim => "the token lacks a required claim",
            Reason::InsufficientScope => "the token lacks a required role or scope",
            Reason::Revoked => "the token has been revoked",
            Reason::KeysUnavailable => "the issuer keys are unavailable",
        }
    }
}

/// A refused request. `Copy` and allocation-free: denials are normal traffic, not exceptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    NoRoute,
    UnsafePath,
    /// Two Authorization headers, a malformed one, or a token over `max_token_bytes`.
    BadAuthorization,
    NoToken,
    InvalidToken(Reason),
    Forbidden,
    KeysUnavailable {
        retry_after_secs: u32,
    },
    RateLimited {
        retry_after_secs: u32,
    },
    HeadersTooLarge,
    BodyTooLarge,
    /// The client's body broke while streaming (a bad chunk size, an early close).
    MalformedBody,
    UpstreamUnavailable,
    UpstreamTimeout,
}

impl Denial {
    pub fn status(self) -> StatusCode {
        match self {
            Denial::NoRoute => StatusCode::NOT_FOUND,
            Denial::UnsafePath | Denial::BadAuthorization | Denial::MalformedBody => {
                StatusCode::BAD_REQUEST
            }
            Denial::NoToken | Denial::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Denial::Forbidden => StatusCode::FORBIDDEN,
            Denial::KeysUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Denial::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Denial::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Denial::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Denial::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Denial::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The reason recorded as an authentication decision, for denials that are one.
    pub fn auth_reason(self) -> Option<Reason> {
        match self {
            Denial::BadAuthorization => Some(Reason::Malformed),
            Denial::NoToken => Some(Reason::MissingToken),
            Denial::InvalidToken(r) => Some(r),
            Denial::Forbidden => Some(Reason::InsufficientScope),
            Denial::KeysUnavailable { .. } => Some(Reason::KeysUnavailable),
            Denial::NoRoute
            | Denial::UnsafePath
            | Denial::RateLimited { .. }
            | Denial::HeadersTooLarge
            | Denial::BodyTooLarge
            | Denial::MalformedBody
            | Denial::UpstreamUnavailable
            | Denial::UpstreamTimeout => None,
        }
    }

    /// RFC 6750 section 3 challenges; `None` where the contract sends no challenge.
    pub fn challenge(self) -> Option<String> {
        match self {
            Denial::NoToken => Some(r#"Bearer realm="jwt-gateway""#.into()),
            Denial::BadAuthorization => Some(r#"Bearer error="invalid_request""#.into()),
            Denial::InvalidToken(r) => Some(format!(
                r#"Bearer error="invalid_token", error_description="{}""#,
                r.description()
            )),
            Denial::Forbidden => Some(r#"Bearer error="insufficient_scope""#.into()),
            Denial::NoRoute
            | Denial::UnsafePath
            | Denial::KeysUnavailable { .. }
            | Denial::RateLimited { .. }
            | Denial::HeadersTooLarge
            | Denial::BodyTooLarge
            | Denial::MalformedBody
            | Denial::UpstreamUnavailable
            | Denial::UpstreamTimeout => None,
        }
    }

    /// `(error, error_description)` of the JSON body.
    pub fn body_fields(self) -> (&'static str, &'static str) {
        match self {
            Denial::NoRoute => ("not_found", "no route matches this request"),
            Denial::UnsafePath => (
                "invalid_path",
                "the request path cannot be normalized safely",
            ),
            Denial::BadAuthorization => {
                ("invalid_request", "the Authorization header is malformed")
            }
            Denial::NoToken => ("unauthorized", Reason::MissingToken.description()),
            Denial::InvalidToken(r) => ("invalid_token", r.description()),
            Denial::Forbidden => (
                "insufficient_scope",
                Reason::InsufficientScope.description(),
            ),
            Denial::KeysUnavailable { .. } => (
                "temporarily_unavailable",
                Reason::KeysUnavailable.description(),
            ),
            Denial::RateLimited { .. } => (
                "too_many_requests",
                "too many failed authentication attempts",
            ),
            Denial::HeadersTooLarge => ("headers_too_large", "the request headers are too large"),
            Denial::BodyTooLarge => ("body_too_large", "the request body is too large"),
            Denial::MalformedBody => ("invalid_request", "the request body is malformed"),
            Denial::UpstreamUnavailable => ("bad_gateway", "the upstream service is unavailable"),
            Denial::UpstreamTimeout => (
                "gateway_timeout",
                "the upstream service did not answer in time",
            ),
        }
    }

    fn retry_after(self) -> Option<u32> {
        match self {
            Denial::KeysUnavailable { retry_after_secs }
            | Denial::RateLimited { retry_after_secs } => Some(retry_after_secs.max(1)),
            _ => None,
        }
    }

    pub fn to_response(self) -> Response<Full<Bytes>> {
        let (error, description) = self.body_fields();
        let body =
            serde_json::json!({ "error": error, "error_description": description }).to_string();
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(challenge) = self
            .challenge()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        if let Some(secs) = self.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins each denial to its row of the contract's status table.
    #[test]
    fn every_denial_matches_the_contract_table() {
        let table: &[(Denial, u16, Option<&str>)] = &[
            (Denial::NoRoute, 404, None),
            (Denial::NoToken, 401, Some(r#"Bearer realm="jwt-gateway""#)),
            (
                Denial::BadAuthorization,
                400,
                Some(r#"Bearer error="invalid_request""#),
            ),
            (
                Denial::InvalidToken(Reason::Expired),
                401,
                Some(r#"Bearer error="invalid_token", error_description="the token is expired""#),
            ),
            (
                Denial::Forbidden,
                403,
                Some(r#"Bearer error="insufficient_scope""#),
            ),
            (Denial::UnsafePath, 400, None),
            (Denial::HeadersTooLarge, 431, None),
            (Denial::BodyTooLarge, 413, None),
            (Denial::MalformedBody, 400, None),
            (
                Denial::RateLimited {
                    retry_after_secs: 60,
                },
                429,
                None,
            ),
            (
                Denial::KeysUnavailable {
                    retry_after_secs: 30,
                },
                503,
                None,
            ),
            (Denial::UpstreamUnavailable, 502, None),
            (Denial::UpstreamTimeout, 504, None),
        ];
        for &(denial, status, challenge) in table {
            let response = denial.to_response();
            assert_eq!(response.status().as_u16(), status, "{denial:?}");
            let got = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap());
            assert_eq!(got, challenge, "{denial:?}");
            let has_retry = response.headers().contains_key(RETRY_AFTER);
            assert_eq!(has_retry, status == 429 || status == 503, "{denial:?}");
        }
    }

    #[test]
    fn every_token_reason_has_a_generic_description() {
        for reason in Reason::ALL {
            let challenge = Denial::InvalidToken(reason).challenge().unwrap();
            assert!(HeaderValue::from_str(&challenge).is_ok());
            assert!(!reason.as_str().is_empty());
        }
    }
}

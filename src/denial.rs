//! Every way the gateway refuses a request, and the one place each becomes a status, a
//! `WWW-Authenticate` challenge, a JSON body, a metric reason and its connection handling. A new
//! variant does not compile until it has picked all of them. Every text is a `&'static str` made
//! at compile time: rendering a denial formats nothing and copies no byte.

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode, Version};
use http_body_util::Full;

use std::sync::OnceLock;

use crate::algorithm::AlgorithmSet;
use crate::grpc::{GrpcStatus, GRPC_MESSAGE, GRPC_STATUS};

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
    /// A sender-constrained token whose key or certificate the request does not prove, an unbound
    /// token where the route wants one, or a DPoP proof that fails a check.
    Binding,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
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
        Reason::Binding,
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
            Reason::Binding => "binding",
        }
    }

    /// Generic by design: it names the failed check, never a claim value or key material.
    pub fn description(self) -> &'static str {
        self.invalid_token().description
    }

    /// The `invalid_token` answer for this reason: challenge and body, written out once.
    fn invalid_token(self) -> &'static Text {
        match self {
            Reason::Ok => invalid_token!("the token is valid"),
            Reason::MissingToken => invalid_token!("no bearer token was presented"),
            Reason::Malformed => invalid_token!("the token is malformed"),
            Reason::BadSignature => invalid_token!("the token signature is invalid"),
            Reason::UnknownKid => invalid_token!("the token was signed by an unknown key"),
            Reason::AlgNotAllowed => invalid_token!("the token algorithm is not allowed"),
            Reason::Expired => invalid_token!("the token is expired"),
            Reason::NotYetValid => invalid_token!("the token is not valid yet"),
            Reason::Issuer => invalid_token!("the token issuer is not trusted here"),
            Reason::Audience => invalid_token!("the token audience is not accepted here"),
            Reason::MissingClaim => invalid_token!("the token lacks a required claim"),
            Reason::InsufficientScope => {
                invalid_token!("the token lacks a required role or scope")
            }
            Reason::Revoked => invalid_token!("the token has been revoked"),
            Reason::KeysUnavailable => invalid_token!("the issuer keys are unavailable"),
            Reason::Binding => invalid_token!(
                "the token is bound to a key or certificate this request does not prove"
            ),
        }
    }
}

/// Request heads hyper parses but a reverse proxy must not act on (found by `proxy::shape`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRequest {
    /// A tunnel request; hyper even accepts it with an origin-form target.
    Connect,
    /// More than one `Host` (RFC 9112 3.2): routing would read one, another hop the other.
    DuplicateHost,
    /// An HTTP/1.1 request without `Host` (RFC 9112 3.2).
    MissingHost,
    /// A transfer coding other than `chunked` (RFC 9112 6.1 asks for 501).
    TransferCoding,
    /// A `Host` (or `:authority`, or absolute-form target) that is not a host and port.
    InvalidHost,
    /// HTTP/2 `:authority` and `Host` name different hosts (RFC 9113 8.3.1).
    ConflictingHost,
    /// A header name with `_` under `headers_with_underscores: reject`.
    UnderscoreHeader,
    /// A forward-auth decision request without the headers its proxy must send.
    MissingOriginal,
}

/// Everything a denial says, as compile-time text.
#[derive(Debug)]
pub struct Text {
    /// The JSON body's `error`.
    pub error: &'static str,
    /// The JSON body's `error_description`: generic, never a claim value or key material.
    pub description: &'static str,
    /// The whole JSON body.
    pub json: &'static str,
    /// The `WWW-Authenticate` value, where the contract sends one (RFC 6750 section 3).
    pub challenge: Option<&'static str>,
}

/// A `&'static Text` from literals; the JSON body is assembled by `concat!`, so the literals must
/// need no JSON escaping (a unit test parses every body).
macro_rules! text {
    ($error:literal, $description:literal) => {
        text!($error, $description, None)
    };
    ($error:literal, $description:literal, $challenge:expr) => {{
        const TEXT: Text = Text {
            error: $error,
            description: $description,
            json: concat!(
                "{\"error\":\"",
                $error,
                "\",\"error_description\":\"",
                $description,
                "\"}"
            ),
            challenge: $challenge,
        };
        &TEXT
    }};
}

macro_rules! invalid_token {
    ($description:literal) => {
        text!(
            "invalid_token",
            $description,
            Some(concat!(
                "Bearer error=\"invalid_token\", error_description=\"",
                $description,
                "\""
            ))
        )
    };
}
use {invalid_token, text};

/// The challenges of every denial with RFC 9728's `resource_metadata` parameter appended,
/// rendered once per snapshot (`server.resource_metadata`), so a denial still formats nothing.
#[derive(Debug)]
pub struct MetadataChallenges {
    rendered: std::collections::HashMap<&'static str, HeaderValue, foldhash::fast::RandomState>,
    parameter: String,
}

impl MetadataChallenges {
    /// `url`: where the metadata document is served; it needs no quoting (an https URL).
    pub fn new(url: &str) -> MetadataChallenges {
        let parameter = format!(", resource_metadata=\"{url}\"");
        let rendered = Denial::challenges()
            .filter_map(|c| Some((c, HeaderValue::from_str(&format!("{c}{parameter}")).ok()?)))
            .collect();
        MetadataChallenges {
            rendered,
            parameter,
        }
    }

    /// Appends the parameter to each `WWW-Authenticate` of a denial's response.
    pub fn stamp(&self, headers: &mut http::HeaderMap) {
        let Some(challenge) = headers.get(WWW_AUTHENTICATE) else {
            return;
        };
        let stamped = match challenge.to_str().ok().and_then(|c| self.rendered.get(c)) {
            Some(rendered) => rendered.clone(),
            // A challenge rendered elsewhere (not from the table): format it here, once.
            None => {
                let mut bytes = challenge.as_bytes().to_vec();
                bytes.extend_from_slice(self.parameter.as_bytes());
                match HeaderValue::from_bytes(&bytes) {
                    Ok(value) => value,
                    Err(_) => return,
                }
            }
        };
        headers.insert(WWW_AUTHENTICATE, stamped);
    }
}

/// A refused request. `Copy` and allocation-free: denials are normal traffic, not exceptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// A request head the gateway will not act on at all (refused before routing).
    BadRequest(BadRequest),
    NoRoute,
    UnsafePath,
    /// The path matched one route as written and a protected other one as an upstream that
    /// ignores case or drops `;` parameters would read it.
    AmbiguousPath,
    /// Two Authorization headers, a malformed one, or a token over `max_token_bytes`.
    BadAuthorization,
    /// Two of the route's `auth.token_from` sources at once, a token cookie or query parameter
    /// given twice, or a query token that does not decode: the upstream might read another.
    SeveralTokens,
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
    /// A gRPC call on a route whose upstream speaks HTTP/1.1, which cannot carry it.
    GrpcNeedsHttp2,
    /// A forward-auth decision asked by a peer outside `forward_auth.trusted_proxies`.
    UntrustedPeer,
    /// A DPoP proof missing, doubled or failing a check (RFC 9449 4.3); the challenge names the
    /// token's provider's asymmetric algorithms.
    InvalidDpopProof(AlgorithmSet),
    /// The shared DPoP replay cache (Redis) cannot say whether a proof is new, or the embedded one
    /// is full: the proof is refused rather than accepted unchecked.
    ReplayUnavailable,
}

impl Denial {
    pub fn status(self) -> StatusCode {
        match self {
            Denial::BadRequest(BadRequest::TransferCoding) => StatusCode::NOT_IMPLEMENTED,
            Denial::NoRoute => StatusCode::NOT_FOUND,
            Denial::BadRequest(_)
            | Denial::UnsafePath
            | Denial::AmbiguousPath
            | Denial::BadAuthorization
            | Denial::SeveralTokens
            | Denial::MalformedBody => StatusCode::BAD_REQUEST,
            Denial::NoToken | Denial::InvalidToken(_) | Denial::InvalidDpopProof(_) => {
                StatusCode::UNAUTHORIZED
            }
            Denial::Forbidden | Denial::UntrustedPeer => StatusCode::FORBIDDEN,
            Denial::KeysUnavailable { .. } | Denial::ReplayUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Denial::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Denial::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Denial::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Denial::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Denial::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Denial::GrpcNeedsHttp2 => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The `grpc-status` of this refusal for a gRPC call (the contract's mapping from the HTTP
    /// status it stands for).
    pub fn grpc_status(self) -> GrpcStatus {
        match self.status().as_u16() {
            400 => GrpcStatus::InvalidArgument,
            401 => GrpcStatus::Unauthenticated,
            403 => GrpcStatus::PermissionDenied,
            404 | 501 => GrpcStatus::Unimplemented,
            413 | 429 | 431 => GrpcStatus::ResourceExhausted,
            502 | 503 => GrpcStatus::Unavailable,
            504 => GrpcStatus::DeadlineExceeded,
            _ => GrpcStatus::Unknown,
        }
    }

    /// The reason recorded as an authentication decision, for denials that are one.
    pub fn auth_reason(self) -> Option<Reason> {
        match self {
            Denial::BadAuthorization | Denial::SeveralTokens => Some(Reason::Malformed),
            Denial::NoToken => Some(Reason::MissingToken),
            Denial::InvalidToken(r) => Some(r),
            Denial::Forbidden => Some(Reason::InsufficientScope),
            Denial::KeysUnavailable { .. } => Some(Reason::KeysUnavailable),
            // An outage of the replay store is counted with the stage it stopped, not as a key
            // outage: the token's keys were there.
            Denial::InvalidDpopProof(_) | Denial::ReplayUnavailable => Some(Reason::Binding),
            Denial::BadRequest(_)
            | Denial::NoRoute
            | Denial::UnsafePath
            | Denial::AmbiguousPath
            | Denial::RateLimited { .. }
            | Denial::HeadersTooLarge
            | Denial::BodyTooLarge
            | Denial::MalformedBody
            | Denial::UpstreamUnavailable
            | Denial::UpstreamTimeout
            | Denial::GrpcNeedsHttp2
            | Denial::UntrustedPeer => None,
        }
    }

    /// The challenge, the JSON body and its fields.
    pub fn text(self) -> &'static Text {
        match self {
            Denial::BadRequest(BadRequest::Connect) => {
                text!("invalid_request", "CONNECT is not supported")
            }
            Denial::BadRequest(BadRequest::DuplicateHost) => text!(
                "invalid_request",
                "the request carries more than one Host header"
            ),
            Denial::BadRequest(BadRequest::MissingHost) => text!(
                "invalid_request",
                "an HTTP/1.1 request must carry a Host header"
            ),
            Denial::BadRequest(BadRequest::TransferCoding) => text!(
                "invalid_request",
                "only the chunked transfer coding is supported"
            ),
            Denial::BadRequest(BadRequest::InvalidHost) => {
                text!("invalid_request", "the Host header is not a valid host")
            }
            Denial::BadRequest(BadRequest::ConflictingHost) => text!(
                "invalid_request",
                "the Host header and the request target name different hosts"
            ),
            Denial::BadRequest(BadRequest::UnderscoreHeader) => text!(
                "invalid_request",
                "header names with underscores are not accepted"
            ),
            Denial::BadRequest(BadRequest::MissingOriginal) => text!(
                "invalid_request",
                "the decision request lacks the headers that describe the original request"
            ),
            Denial::NoRoute => text!("not_found", "no route matches this request"),
            Denial::UnsafePath => text!(
                "invalid_path",
                "the request path cannot be normalized safely"
            ),
            Denial::AmbiguousPath => text!(
                "invalid_path",
                "the request path names a protected route when read without case or parameters"
            ),
            Denial::BadAuthorization => text!(
                "invalid_request",
                "the Authorization header is malformed",
                Some("Bearer error=\"invalid_request\"")
            ),
            Denial::SeveralTokens => text!(
                "invalid_request",
                "the request carries more than one token, or one that cannot be decoded",
                Some("Bearer error=\"invalid_request\"")
            ),
            Denial::NoToken => text!(
                "unauthorized",
                "no bearer token was presented",
                Some("Bearer realm=\"jwt-gateway\"")
            ),
            Denial::InvalidToken(r) => r.invalid_token(),
            Denial::Forbidden => text!(
                "insufficient_scope",
                "the token lacks a required role or scope",
                Some("Bearer error=\"insufficient_scope\"")
            ),
            Denial::KeysUnavailable { .. } => {
                text!("temporarily_unavailable", "the issuer keys are unavailable")
            }
            Denial::RateLimited { .. } => text!(
                "too_many_requests",
                "too many failed authentication attempts"
            ),
            Denial::HeadersTooLarge => {
                text!("headers_too_large", "the request headers are too large")
            }
            Denial::BodyTooLarge => text!("body_too_large", "the request body is too large"),
            Denial::MalformedBody => text!("invalid_request", "the request body is malformed"),
            Denial::UpstreamUnavailable => {
                text!("bad_gateway", "the upstream service is unavailable")
            }
            Denial::UpstreamTimeout => text!(
                "gateway_timeout",
                "the upstream service did not answer in time"
            ),
            Denial::GrpcNeedsHttp2 => text!(
                "unimplemented",
                "this route's upstream does not speak HTTP/2, which gRPC needs"
            ),
            Denial::UntrustedPeer => text!(
                "forbidden",
                "this peer may not ask for authorization decisions"
            ),
            Denial::InvalidDpopProof(algs) => dpop_text(algs),
            Denial::ReplayUnavailable => text!(
                "temporarily_unavailable",
                "the DPoP replay cache is unavailable"
            ),
        }
    }

    /// Whether an HTTP/1.1 connection ends with this answer: the client may go on sending a
    /// tunnel or a body that will never be read. (Over HTTP/2 only the stream ends.)
    pub fn closes_connection(self) -> bool {
        match self {
            Denial::BadRequest(_) | Denial::MalformedBody => true,
            Denial::NoRoute
            | Denial::UnsafePath
            | Denial::AmbiguousPath
            | Denial::BadAuthorization
            | Denial::SeveralTokens
            | Denial::NoToken
            | Denial::InvalidToken(_)
            | Denial::Forbidden
            | Denial::KeysUnavailable { .. }
            | Denial::RateLimited { .. }
            | Denial::HeadersTooLarge
            | Denial::BodyTooLarge
            | Denial::UpstreamUnavailable
            | Denial::UpstreamTimeout
            | Denial::GrpcNeedsHttp2
            | Denial::UntrustedPeer
            | Denial::InvalidDpopProof(_)
            | Denial::ReplayUnavailable => false,
        }
    }

    /// Every `WWW-Authenticate` value a denial may carry, for what is rendered per snapshot
    /// around them (RFC 9728 `resource_metadata`).
    pub fn challenges() -> impl Iterator<Item = &'static str> {
        [
            Denial::BadAuthorization,
            Denial::SeveralTokens,
            Denial::NoToken,
            Denial::Forbidden,
        ]
        .into_iter()
        .chain(Reason::ALL.into_iter().map(Denial::InvalidToken))
        .filter_map(|d| d.text().challenge)
    }

    fn retry_after(self) -> Option<u32> {
        match self {
            Denial::KeysUnavailable { retry_after_secs }
            | Denial::RateLimited { retry_after_secs } => Some(retry_after_secs.max(1)),
            // The revocation store's own reconnect runs every 300 ms.
            Denial::ReplayUnavailable => Some(1),
            _ => None,
        }
    }

    /// The response to a request of `version`.
    pub fn to_response(self, version: Version) -> Response<Full<Bytes>> {
        let text = self.text();
        let mut response = Response::new(Full::new(Bytes::from_static(text.json.as_bytes())));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(challenge) = text.challenge {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(secs) = self.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.closes_connection() && version < Version::HTTP_2 {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// The trailers-only gRPC response to a gRPC call: HTTP 200, `grpc-status` and a generic
    /// `grpc-message` in the only HEADERS frame, with the challenge the HTTP answer would carry.
    pub fn to_grpc_response(self) -> Response<Full<Bytes>> {
        let text = self.text();
        let mut response = Response::new(Full::new(Bytes::new()));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            &GRPC_STATUS,
            HeaderValue::from_static(self.grpc_status().as_str()),
        );
        // Descriptions are printable ASCII without `%` (a unit test holds them to it), which is
        // already the percent-encoded form gRPC asks for.
        headers.insert(&GRPC_MESSAGE, HeaderValue::from_static(text.description));
        if let Some(challenge) = text.challenge {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(secs) = self.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The `invalid_dpop_proof` answer for proofs of a provider allowing `algs`. Its challenge names
/// the algorithms, so it cannot be a literal: each set's text is rendered the first time it is
/// asked for (the snapshot asks for every provider's when it is built) and kept for the process,
/// so a refusal still formats nothing. There are at most `AlgorithmSet::COUNT` (512) of them.
pub fn dpop_text(algs: AlgorithmSet) -> &'static Text {
    static CHALLENGES: [OnceLock<String>; AlgorithmSet::COUNT] =
        [const { OnceLock::new() }; AlgorithmSet::COUNT];
    static TEXTS: [OnceLock<Text>; AlgorithmSet::COUNT] =
        [const { OnceLock::new() }; AlgorithmSet::COUNT];
    let i = algs.index();
    TEXTS[i].get_or_init(|| {
        let challenge = CHALLENGES[i].get_or_init(|| {
            format!(
                "DPoP error=\"invalid_dpop_proof\", algs=\"{}\"",
                algs.names()
            )
        });
        Text {
            error: "invalid_dpop_proof",
            description: "the DPoP proof is missing or invalid",
            json: "{\"error\":\"invalid_dpop_proof\",\"error_description\":\"the DPoP proof is missing or invalid\"}",
            challenge: Some(challenge.as_str()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Algorithm;

    /// Pins each denial to its row of the contract's status table.
    #[test]
    fn every_denial_matches_the_contract_table() {
        let table: &[(Denial, u16, Option<&str>)] = &[
            (Denial::BadRequest(BadRequest::Connect), 400, None),
            (Denial::BadRequest(BadRequest::DuplicateHost), 400, None),
            (Denial::BadRequest(BadRequest::MissingHost), 400, None),
            (Denial::BadRequest(BadRequest::TransferCoding), 501, None),
            (Denial::BadRequest(BadRequest::InvalidHost), 400, None),
            (Denial::BadRequest(BadRequest::ConflictingHost), 400, None),
            (Denial::BadRequest(BadRequest::UnderscoreHeader), 400, None),
            (Denial::AmbiguousPath, 400, None),
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
            (Denial::GrpcNeedsHttp2, 501, None),
            (Denial::UntrustedPeer, 403, None),
            (
                Denial::SeveralTokens,
                400,
                Some(r#"Bearer error="invalid_request""#),
            ),
            (Denial::BadRequest(BadRequest::MissingOriginal), 400, None),
            (
                Denial::InvalidToken(Reason::Binding),
                401,
                Some(
                    r#"Bearer error="invalid_token", error_description="the token is bound to a key or certificate this request does not prove""#,
                ),
            ),
            (
                Denial::InvalidDpopProof(AlgorithmSet::asymmetric(&[
                    Algorithm::EdDSA,
                    Algorithm::HS256,
                    Algorithm::ES256,
                ])),
                401,
                Some(r#"DPoP error="invalid_dpop_proof", algs="ES256 EdDSA""#),
            ),
            (Denial::ReplayUnavailable, 503, None),
        ];
        for &(denial, status, challenge) in table {
            let response = denial.to_response(Version::HTTP_11);
            assert_eq!(response.status().as_u16(), status, "{denial:?}");
            let got = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap());
            assert_eq!(got, challenge, "{denial:?}");
            let has_retry = response.headers().contains_key(RETRY_AFTER);
            assert_eq!(has_retry, status == 429 || status == 503, "{denial:?}");
            let text = denial.text();
            let body: serde_json::Value = serde_json::from_str(text.json).unwrap();
            assert_eq!(body["error"], text.error, "{denial:?}");
            assert_eq!(body["error_description"], text.description, "{denial:?}");
            assert_eq!(body.as_object().unwrap().len(), 2, "{denial:?}");
            let closes = response.headers().contains_key(CONNECTION);
            assert_eq!(closes, denial.closes_connection(), "{denial:?}");
            let h2 = denial.to_response(Version::HTTP_2);
            assert!(!h2.headers().contains_key(CONNECTION), "{denial:?}");
        }
    }

    /// The contract's gRPC mapping, and that every description is already a valid
    /// `grpc-message` (printable ASCII, no `%`).
    #[test]
    fn grpc_denials_are_trailers_only_with_the_mapped_status() {
        use GrpcStatus::*;
        let table: &[(Denial, GrpcStatus)] = &[
            (Denial::UnsafePath, InvalidArgument),
            (Denial::BadAuthorization, InvalidArgument),
            (Denial::NoToken, Unauthenticated),
            (Denial::InvalidToken(Reason::Expired), Unauthenticated),
            (Denial::Forbidden, PermissionDenied),
            (Denial::NoRoute, Unimplemented),
            (Denial::GrpcNeedsHttp2, Unimplemented),
            (Denial::BodyTooLarge, ResourceExhausted),
            (
                Denial::RateLimited {
                    retry_after_secs: 5,
                },
                ResourceExhausted,
            ),
            (Denial::HeadersTooLarge, ResourceExhausted),
            (Denial::UpstreamUnavailable, Unavailable),
            (
                Denial::KeysUnavailable {
                    retry_after_secs: 5,
                },
                Unavailable,
            ),
            (Denial::UpstreamTimeout, DeadlineExceeded),
            (
                Denial::InvalidDpopProof(AlgorithmSet::asymmetric(&[Algorithm::PS256])),
                Unauthenticated,
            ),
            (Denial::ReplayUnavailable, Unavailable),
        ];
        for &(denial, want) in table {
            let r = denial.to_grpc_response();
            assert_eq!(r.status(), StatusCode::OK, "{denial:?}");
            assert_eq!(r.headers()["content-type"], "application/grpc");
            assert_eq!(r.headers()["grpc-status"], want.as_str(), "{denial:?}");
            assert_eq!(
                r.headers().get(WWW_AUTHENTICATE),
                denial
                    .to_response(Version::HTTP_2)
                    .headers()
                    .get(WWW_AUTHENTICATE),
                "{denial:?}"
            );
            assert!(http_body::Body::is_end_stream(r.body()), "{denial:?}");
            let d = denial.text().description;
            assert!(
                d.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'%'),
                "{d}"
            );
        }
        for reason in Reason::ALL {
            let d = Denial::InvalidToken(reason).text().description;
            assert!(
                d.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'%'),
                "{d}"
            );
        }
    }

    /// Every algorithm set renders a challenge that is a valid header value, once: asking again
    /// hands back the very same text.
    #[test]
    fn dpop_challenges_name_the_sets_algorithms_and_are_rendered_once() {
        for bits in 0..AlgorithmSet::COUNT {
            let algs: Vec<Algorithm> = AlgorithmSet::ASYMMETRIC
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, a)| *a)
                .collect();
            let set = AlgorithmSet::asymmetric(&algs);
            let text = Denial::InvalidDpopProof(set).text();
            let challenge = text.challenge.unwrap();
            assert!(HeaderValue::from_str(challenge).is_ok(), "{challenge}");
            assert_eq!(
                challenge,
                format!(r#"DPoP error="invalid_dpop_proof", algs="{}""#, set.names())
            );
            assert!(std::ptr::eq(text, Denial::InvalidDpopProof(set).text()));
            let body: serde_json::Value = serde_json::from_str(text.json).unwrap();
            assert_eq!(body["error"], "invalid_dpop_proof");
            assert_eq!(body["error_description"], text.description);
        }
    }

    #[test]
    fn every_token_reason_has_a_generic_description() {
        for reason in Reason::ALL {
            let text = Denial::InvalidToken(reason).text();
            let challenge = text.challenge.unwrap();
            assert!(HeaderValue::from_str(challenge).is_ok());
            let tail = format!(r#"error_description="{}""#, reason.description());
            assert!(challenge.ends_with(&tail), "{challenge}");
            let body: serde_json::Value = serde_json::from_str(text.json).unwrap();
            assert_eq!(body["error_description"], reason.description());
            assert!(!reason.as_str().is_empty());
        }
    }
}

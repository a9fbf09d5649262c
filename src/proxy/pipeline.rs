//! One request, start to finish. A *front* (the proxy listener; `check --request`) hands the
//! stages a [`RequestView`]; [`judge`] runs them in this order, each for a reason:
//!
//! 1. **shape**: a request head no proxy may act on (`CONNECT`, two `Host`s, an HTTP/1.1 request
//!    without `Host`, a coding other than `chunked`) is refused before anything reads it further.
//! 2. **limits**: header size, before anything reads a header's value; header names with `_`
//!    under `headers_with_underscores: reject`.
//! 3. **host**: the one host routing matches and `X-Forwarded-Host` carries, or 400.
//! 4. **normalize**: the path is made canonical (or refused) before routing, so route matching and
//!    the upstream see the same bytes and `/public/..;/admin` or `//admin` cannot pick a weaker
//!    route.
//! 5. **route**: first match wins; no match is 404 before any token is read; a path that is
//!    another, protected, route's in another letter case is 400.
//! 6. **throttle**: a client over its authentication-failure budget is refused before we spend a
//!    signature check on it.
//! 7. **authenticate**: bearer → cache → decode → keys → signature → claims; then the route's
//!    audience and revocation, which are checked after the cache so that a token revoked while
//!    cached is still refused; then the token's **binding** (DPoP proof, client certificate) and
//!    the route's `require_binding`, after the cache too, so a cached token still needs a fresh
//!    proof on every request.
//! 8. **authorize**: the route's claim rules (403, never 401, for a valid token lacking a role).
//! 9. **claims**: the claim headers are rendered, so a value that cannot travel faithfully denies
//!    instead of being altered.
//! 10. **declared body**: a `Content-Length` over `max_body_bytes` is 413 before any byte moves.
//!
//! A *back* consumes the [`Verdict`]: the proxy rewrites the head ([`rewrite_request`]: spoofable
//! headers go on every route, anonymous ones included) and forwards it, streaming both ways; the
//! explainer prints it. The stages read the request and never change it, count nothing and
//! remember nothing about the client: `handle` records the decision, the throttle's failure count
//! and the metrics, so a front that only explains leaves no trace. The one exception is a DPoP
//! proof's `jti`, which the binding stage must remember in the same step that finds it new (two
//! requests racing with one proof must not both pass); a narrated context only looks.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tracing::Instrument;

use super::cors;
use super::headers::{self, X_REQUEST_ID};
use super::host::{parse_host, RequestHost};
use super::shape::check_shape;
use super::target::ClientUri;
use crate::auth::bearer::{self, Credential, Scheme};
use crate::auth::binding::{self, check_binding, BindingFault, CertThumbprint, Proven};
use crate::auth::cache::CachedToken;
use crate::auth::replay::Mode;
use crate::auth::revocation::Revocations;
use crate::auth::throttle::client_ip;
use crate::auth::token::unix_now;
use crate::auth::token_source::{self, Ambiguity, Presented};
use crate::auth::verify::{self, CacheOutcome, Unverified};
use crate::body::{GrpcCall, LimitedBody, ResponseBody, UpstreamBody};
use crate::claims;
use crate::config::{
    ProtectedAuth, RouteAuth, TokenForwarding, TokenSource, UnderscoreHeaders, Upstream,
};
use crate::denial::{BadRequest, Denial, Reason};
use crate::gateway::Gateway;
use crate::grpc::{self, GrpcStatus};
use crate::metrics::UpstreamErrorKind;
use crate::path::normalize_path;
use crate::rules;
use crate::snapshot::{Route, RouteMiss, Snapshot};
use crate::trace::{EndedRequest, RequestTrace};
use crate::upstream::{UpstreamError, Wire};

/// Which front handed the request to the stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    /// The public listener, which forwards what it admits.
    Proxy,
    /// The forward-auth listener: another proxy asks, and forwards the request itself (so the
    /// body never passes here, and `forward_auth.trusted_proxies` are the hops to trust).
    Decision,
}

/// What the connection tells the request about itself.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The client certificate the TLS handshake verified (`server.tls.client_auth`), for
    /// mTLS-bound tokens.
    pub client_cert: Option<CertThumbprint>,
}

/// The head of a request as a front presents it to the stages; never its body.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub version: Version,
    /// Origin-form, or absolute-form / HTTP/2 with the authority the client named.
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

impl<'a> RequestView<'a> {
    pub fn of(parts: &'a Parts) -> RequestView<'a> {
        RequestView {
            method: &parts.method,
            version: parts.version,
            uri: &parts.uri,
            headers: &parts.headers,
        }
    }
}

/// What the stages concluded about a request they admit; the route, host and path are in the
/// `RequestCtx` that `judge` filled in.
pub struct Verdict {
    pub route: usize,
    /// The verified token; `None` on anonymous routes and optional ones without a token.
    pub identity: Option<Arc<CachedToken>>,
    /// The route's claim headers, rendered from `identity`.
    pub claim_headers: Vec<(HeaderName, HeaderValue)>,
    /// Set when the gateway answers the request itself instead of forwarding it.
    pub answer: Option<LocalAnswer>,
}

/// A request the gateway answers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalAnswer {
    /// A CORS preflight on a route with `cors`; `allowed`: its origin is one the route allows.
    Preflight { allowed: bool },
}

/// Per-request state handed from stage to stage, and read by `finish` for metrics and the log.
pub struct RequestCtx {
    pub request_id: HeaderValue,
    pub started: Instant,
    pub conn: ConnInfo,
    pub snapshot: Arc<Snapshot>,
    route: Option<usize>,
    method: Method,
    /// The canonical host and path, once the stages have read them.
    host: Option<RequestHost>,
    path: Option<String>,
    decision: Option<Reason>,
    denial: Option<Denial>,
    /// The verified token, for the access line's `sub` and `jti` (shared, not copied).
    verified: Option<Arc<CachedToken>>,
    upstream_time: Option<f64>,
    /// `Access-Control-Allow-Origin` for a CORS route's responses, when the origin is allowed.
    cors_origin: Option<HeaderValue>,
    /// One line per stage passed or failed, kept only when a front explains the request.
    narration: Option<Vec<String>>,
    /// A gRPC call: refused in gRPC's terms, counted by `grpc-status` too.
    pub grpc: bool,
    pub front: Front,
    /// The request's place in a trace; `None` untraced (tracing off and no client context).
    pub trace: Option<RequestTrace>,
}

impl RequestCtx {
    pub fn new(
        snapshot: Arc<Snapshot>,
        conn: ConnInfo,
        request_id: HeaderValue,
        method: Method,
    ) -> RequestCtx {
        RequestCtx {
            request_id,
            started: Instant::now(),
            conn,
            snapshot,
            route: None,
            method,
            host: None,
            path: None,
            decision: None,
            denial: None,
            verified: None,
            upstream_time: None,
            cors_origin: None,
            narration: None,
            grpc: false,
            front: Front::Proxy,
            trace: None,
        }
    }

    /// A context whose stages narrate themselves, for the explainer.
    pub fn narrated(snapshot: Arc<Snapshot>, conn: ConnInfo, method: Method) -> RequestCtx {
        let mut ctx = RequestCtx::new(snapshot, conn, HeaderValue::from_static("explain"), method);
        ctx.narration = Some(Vec::new());
        ctx
    }

    pub fn route(&self) -> Option<&Route> {
        self.route.map(|i| &self.snapshot.routes.routes()[i])
    }

    pub fn host(&self) -> Option<&RequestHost> {
        self.host.as_ref()
    }

    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    pub fn narration(&self) -> &[String] {
        self.narration.as_deref().unwrap_or_default()
    }

    /// The refusal the request was answered with, for the metrics.
    pub fn refused(&mut self, denial: Denial) {
        self.denial = Some(denial);
    }

    /// The peers whose `X-Forwarded-For` hops are followed to find the client.
    fn trusted_proxies(&self) -> &[ipnet::IpNet] {
        let config = &self.snapshot.config;
        match (self.front, &config.forward_auth) {
            (Front::Decision, Some(fa)) => &fa.trusted_proxies,
            _ => &config.server.trusted_proxies,
        }
    }

    /// Records a stage's outcome when narrating; `line` is not even built otherwise.
    fn narrate(&mut self, line: impl FnOnce() -> String) {
        if let Some(lines) = &mut self.narration {
            lines.push(line());
        }
    }
}

/// The service function: never fails, every problem becomes a response.
pub async fn handle(
    gateway: Arc<Gateway>,
    conn: ConnInfo,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let snapshot = gateway.snapshot();
    let request_id = headers::request_id(request.headers());
    let span = tracing::info_span!("request", id = %request_id.to_str().unwrap_or(""), route = tracing::field::Empty);
    let mut ctx = RequestCtx::new(snapshot, conn, request_id, request.method().clone());
    ctx.grpc = grpc::is_grpc(request.headers());
    ctx.trace = gateway
        .tracer
        .start(&ctx.snapshot.config.tracing, request.headers());
    let version = request.version();
    let response = match proxy(&gateway, &mut ctx, request)
        .instrument(span.clone())
        .await
    {
        Ok(response) => response,
        Err(denial) => {
            ctx.denial = Some(denial);
            let rendered = if ctx.grpc {
                denial.to_grpc_response()
            } else {
                denial.to_response(version)
            };
            rendered.map(Either::Left)
        }
    };
    let _entered = span.enter();
    Ok(finish(&ctx, response))
}

/// The proxy back: judge, then rewrite and forward what was admitted.
async fn proxy(
    gateway: &Gateway,
    ctx: &mut RequestCtx,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Denial> {
    let (mut parts, body) = request.into_parts();
    if let Some(document) = resource_metadata(ctx, &parts) {
        return Ok(document);
    }
    let verdict = judge(gateway, ctx, RequestView::of(&parts)).await;
    record_decision(gateway, ctx, &parts.headers, &verdict);
    let verdict = verdict?;
    let snapshot = ctx.snapshot.clone();
    let route = &snapshot.routes.routes()[verdict.route];
    tracing::Span::current().record("route", route.name());
    if let (Some(LocalAnswer::Preflight { allowed }), Some(cors)) =
        (verdict.answer, &route.config.cors)
    {
        return Ok(cors::preflight_response(cors, allowed).map(Either::Left));
    }
    let index = verdict.route;
    let identity = verdict.identity.clone();
    let websocket = headers::is_websocket_upgrade(&parts.method, parts.version, &parts.headers);
    let destination = proxied_upstream(route, ctx.grpc, websocket)?;
    let upgrade = websocket
        .then(|| parts.extensions.remove::<OnUpgrade>())
        .flatten();
    let tunnel = upgrade.map(|client| PendingTunnel {
        client,
        lifetime: verdict.identity.clone().map(|identity| TunnelLifetime {
            identity,
            revocations: gateway.revocations.clone(),
        }),
    });
    rewrite_request(ctx, route, destination, verdict, &mut parts, websocket)?;
    if let Some(forward) = &route.config.assertion {
        // After the rewrite, so the explainer (which shares it) never prints a signature.
        let value = snapshot
            .assertions
            .as_ref()
            .and_then(|m| {
                m.assertion(index, &route.config, forward, identity.as_ref())
                    .ok()
            })
            // Only a failing random source gets here: refuse rather than go unvouched.
            .ok_or(Denial::UpstreamUnavailable)?;
        parts.headers.insert(forward.header.clone(), value);
    }
    forward(ctx, route, destination.wire, parts, body, tunnel).await
}

/// RFC 9728 metadata, for anyone who asks: it says where to get a token, so it needs none.
fn resource_metadata(ctx: &mut RequestCtx, parts: &Parts) -> Option<Response<ResponseBody>> {
    let metadata = ctx.snapshot.config.server.resource_metadata.as_ref()?;
    if parts.uri.path() != metadata.path || !matches!(parts.method, Method::GET | Method::HEAD) {
        return None;
    }
    ctx.path = Some(metadata.path.clone());
    let mut response = Response::new(Either::Left(http_body_util::Full::new(
        bytes::Bytes::copy_from_slice(metadata.json.as_bytes()),
    )));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Browser-based clients discover it from any origin; it holds nothing secret.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    Some(response)
}

/// Every stage that reads the request head: no I/O except a JWKS refetch on an unknown kid.
///
/// # Errors
///
/// The [`Denial`] of the first stage that refuses the request.
pub async fn judge(
    gateway: &Gateway,
    ctx: &mut RequestCtx,
    view: RequestView<'_>,
) -> Result<Verdict, Denial> {
    let snapshot = ctx.snapshot.clone();
    let server = &snapshot.config.server;
    let limits = &server.limits;
    if let Some(why) = check_shape(view.method, view.version, view.headers) {
        ctx.narrate(|| format!("[FAIL] request head: {why:?}"));
        return Err(Denial::BadRequest(why));
    }
    let header_bytes = headers::header_bytes(view.headers);
    if header_bytes > limits.max_header_bytes {
        ctx.narrate(|| {
            format!(
                "[FAIL] headers: {header_bytes} bytes, over max_header_bytes {}",
                limits.max_header_bytes
            )
        });
        return Err(Denial::HeadersTooLarge);
    }
    if server.headers_with_underscores == UnderscoreHeaders::Reject
        && headers::has_underscore_names(view.headers)
    {
        ctx.narrate(|| {
            "[FAIL] header names: one holds '_' (headers_with_underscores: reject)".into()
        });
        return Err(Denial::BadRequest(BadRequest::UnderscoreHeader));
    }
    ctx.narrate(|| format!("[pass] request head well-formed, {header_bytes} header bytes"));
    let host = match canonical_host(&view) {
        Ok(host) => host,
        Err(denial) => {
            ctx.narrate(|| "[FAIL] host: not a host name or IP literal with a port".into());
            return Err(denial);
        }
    };
    let path = match normalize_path(view.uri.path(), server.path) {
        Ok(path) => path,
        Err(why) => {
            ctx.narrate(|| format!("[FAIL] path normalization ({why})"));
            return Err(Denial::UnsafePath);
        }
    };
    ctx.narrate(|| {
        format!(
            "[pass] host {}, path normalized to {path}",
            host.as_ref().map_or("(none)", RequestHost::as_str)
        )
    });
    let host_name = host.as_ref().map_or("", RequestHost::name);
    // A preflight is routed by the method it asks about; on a route without `cors` it is
    // an `OPTIONS` request like any other.
    let preflight = cors::preflight_method(view.method, view.headers);
    let matched = match &preflight {
        Some(asked) => match snapshot.routes.match_route(host_name, asked, &path) {
            Ok(i) if snapshot.routes.routes()[i].config.cors.is_some() => Ok(i),
            _ => snapshot.routes.match_route(host_name, view.method, &path),
        },
        None => snapshot.routes.match_route(host_name, view.method, &path),
    };
    ctx.host = host;
    ctx.path = Some(path);
    let index = match matched {
        Ok(index) => index,
        Err(miss) => {
            ctx.narrate(|| match miss {
                RouteMiss::NoRoute => "[FAIL] no route matches".into(),
                RouteMiss::Ambiguous => {
                    "[FAIL] the path is a protected route's when read without case or parameters"
                        .into()
                }
            });
            return Err(match miss {
                RouteMiss::NoRoute => Denial::NoRoute,
                RouteMiss::Ambiguous => Denial::AmbiguousPath,
            });
        }
    };
    ctx.route = Some(index);
    let route = &snapshot.routes.routes()[index];
    ctx.narrate(|| match &route.config.upstream {
        Some(upstream) => format!("[pass] route {:?} -> {}", route.name(), upstream.uri),
        None => format!("[pass] route {:?} (decisions only)", route.name()),
    });
    // A route that only answers decisions has nothing to proxy to: 404 before any token is read,
    // as for a request no route matches.
    if ctx.front == Front::Proxy && route.config.upstream.is_none() {
        ctx.narrate(|| "[FAIL] the route serves forward-auth decisions only".into());
        return Err(Denial::NoRoute);
    }
    if let Some(cors) = &route.config.cors {
        ctx.cors_origin = cors::allowed_origin(cors, view.headers);
        if preflight.is_some() {
            let allowed = ctx.cors_origin.is_some();
            ctx.narrate(|| {
                format!(
                    "[pass] CORS preflight answered by the gateway (origin {})",
                    if allowed { "allowed" } else { "not allowed" }
                )
            });
            return Ok(Verdict {
                route: index,
                identity: None,
                claim_headers: Vec::new(),
                answer: Some(LocalAnswer::Preflight { allowed }),
            });
        }
    }
    let identity = match &route.config.auth {
        RouteAuth::Anonymous => {
            ctx.narrate(|| "[pass] anonymous route: no token needed".into());
            None
        }
        RouteAuth::Protected(auth) => {
            let entry = admit(gateway, ctx, route, auth, &view).await?;
            ctx.verified.clone_from(&entry);
            entry
        }
    };
    let claim_headers = match render_claims(route, identity.as_deref()) {
        Ok(rendered) => rendered,
        Err(denial) => {
            ctx.narrate(|| "[FAIL] a claim cannot be carried faithfully in a header".into());
            return Err(denial);
        }
    };
    // A decision never sees the body: the proxy asking enforces its own limits on it.
    if ctx.front == Front::Proxy
        && declared_body_len(view.headers).is_some_and(|n| n > limits.max_body_bytes)
    {
        ctx.narrate(|| "[FAIL] Content-Length over max_body_bytes".into());
        return Err(Denial::BodyTooLarge);
    }
    Ok(Verdict {
        route: index,
        identity,
        claim_headers,
        answer: None,
    })
}

/// Throttle, authenticate, authorize: the stages of a protected route. `None`: an optional
/// route's request without a token, admitted anonymously.
///
/// # Errors
///
/// 429, 400/401/503 for the credential, 403 for the rules.
async fn admit(
    gateway: &Gateway,
    ctx: &mut RequestCtx,
    route: &Route,
    auth: &ProtectedAuth,
    view: &RequestView<'_>,
) -> Result<Option<Arc<CachedToken>>, Denial> {
    let snapshot = ctx.snapshot.clone();
    let server = &snapshot.config.server;
    let presented = token_source::presented(&auth.token_from, view.headers, view.uri.query());
    if auth.optional && presented == Ok(Presented::Absent) {
        ctx.narrate(|| "[pass] optional auth: no token, admitted anonymously".into());
        return Ok(None);
    }
    if let Some(limit) = server.limits.auth_failures_per_minute {
        let client = client_ip(ctx.conn.peer.ip(), view.headers, ctx.trusted_proxies());
        if let Some(retry_after_secs) = gateway.throttle.blocked(client, limit) {
            ctx.narrate(|| format!("[FAIL] client {client} is over auth_failures_per_minute"));
            return Err(Denial::RateLimited { retry_after_secs });
        }
    }
    let since = RequestTrace::mark(&ctx.trace);
    let authenticated = authenticate(
        gateway,
        route,
        auth,
        view.headers,
        presented,
        server.limits.max_token_bytes,
    )
    .await;
    let cache = authenticated.as_ref().ok().map(|&(_, _, cache)| cache);
    let (entry, credential) = match authenticated {
        Ok((entry, credential, _)) => (entry, credential),
        // Another scheme's `Authorization` (`Basic`) is no bearer token either.
        Err(Denial::NoToken) if auth.optional => {
            trace_authenticated(ctx, since, None, Some(Denial::NoToken));
            ctx.narrate(|| "[pass] optional auth: no bearer token, admitted anonymously".into());
            return Ok(None);
        }
        Err(denial) => {
            trace_authenticated(ctx, since, None, Some(denial));
            ctx.narrate(|| match denial.auth_reason() {
                Some(reason) => format!("[FAIL] authenticate: {}", reason.as_str()),
                None => format!("[FAIL] authenticate: {}", denial.text().error),
            });
            return Err(denial);
        }
    };
    ctx.narrate(|| {
        format!(
            "[pass] token verified by provider {:?}: signature, iss, exp/nbf/iat, required claims, audience, not revoked",
            entry.provider.config.name
        )
    });
    // The span covers the binding too: a token is only authenticated once its sender is.
    let bound = bind(gateway, ctx, auth, view, &entry, credential).await;
    trace_authenticated(ctx, since, cache, bound.as_ref().err().copied());
    bound?;
    if let Some(unmet) = rules::first_unmet(&auth.require, &entry.claims.claims) {
        ctx.narrate(|| format!("[FAIL] authorize: require[{unmet}] does not hold"));
        return Err(Denial::Forbidden);
    }
    ctx.narrate(|| format!("[pass] authorize: {} rule(s) hold", auth.require.len()));
    Ok(Some(entry))
}

/// Ends the trace's `authenticate` span begun at `since`: the token cache's outcome, and the
/// reason `denial` carries (none: `ok`).
fn trace_authenticated(
    ctx: &mut RequestCtx,
    since: Option<Instant>,
    cache: Option<CacheOutcome>,
    denial: Option<Denial>,
) {
    if let Some(trace) = &mut ctx.trace {
        let reason = denial.map_or(Reason::Ok, |d| d.auth_reason().unwrap_or(Reason::Malformed));
        trace.authenticated(since, cache, reason);
    }
}

/// Counts the stages' verdict: the decision for `finish`, and a client-caused failure for the
/// throttle. Kept out of the stages so a front that only explains changes no state.
pub fn record_decision(
    gateway: &Gateway,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    verdict: &Result<Verdict, Denial>,
) {
    // Admitted by authentication even if a later stage refused (a claim that cannot travel
    // excepted: that is a token fault, with its own reason).
    let authenticated = ctx.verified.is_some().then_some(Reason::Ok);
    match verdict {
        Ok(_) => ctx.decision = authenticated,
        Err(denial) => {
            if ctx.route.is_none() {
                return;
            }
            ctx.decision = denial.auth_reason().or(authenticated);
            let server = &ctx.snapshot.config.server;
            if server.limits.auth_failures_per_minute.is_some() && counts_as_failure(*denial) {
                let client = client_ip(ctx.conn.peer.ip(), headers, ctx.trusted_proxies());
                gateway.throttle.record_failure(client);
            }
        }
    }
}

/// Failures the client caused: a bad or missing credential, not an IdP or Redis outage.
fn counts_as_failure(denial: Denial) -> bool {
    matches!(
        denial,
        Denial::BadAuthorization
            | Denial::NoToken
            | Denial::InvalidToken(_)
            | Denial::InvalidDpopProof(_)
    )
}

/// Where and how a proxied request goes.
#[derive(Clone, Copy, Debug)]
pub struct Destination<'r> {
    pub upstream: &'r Upstream,
    pub wire: Wire,
}

/// The upstream of `route` and the wire a request to it takes: a WebSocket handshake, which
/// only HTTP/1.1 can carry, is never left to ALPN.
///
/// # Errors
///
/// 404 for a route that only answers decisions, UNIMPLEMENTED for gRPC to an HTTP/1.1 upstream.
pub fn proxied_upstream(
    route: &Route,
    grpc: bool,
    websocket: bool,
) -> Result<Destination<'_>, Denial> {
    let upstream = route.config.upstream.as_ref().ok_or(Denial::NoRoute)?;
    let https = upstream.scheme == http::uri::Scheme::HTTPS;
    let wire = match Wire::for_route(route.config.upstream_protocol, https, grpc) {
        Some(Wire::Negotiated) if websocket => Wire::Http1,
        Some(wire) => wire,
        None => return Err(Denial::GrpcNeedsHttp2),
    };
    Ok(Destination { upstream, wire })
}

/// The request's host: the absolute-form or HTTP/2 authority, else `Host`. Every `Host` present
/// must be a host, even one RFC 9112 says to ignore: no hop behind us gets to read another.
fn canonical_host(view: &RequestView<'_>) -> Result<Option<RequestHost>, Denial> {
    let invalid = |_| Denial::BadRequest(BadRequest::InvalidHost);
    let header = view
        .headers
        .get(header::HOST)
        .map(|h| parse_host(h.as_bytes()).map_err(invalid))
        .transpose()?;
    let Some(target) = view.uri.authority() else {
        return Ok(header);
    };
    let target = parse_host(target.as_str().as_bytes()).map_err(invalid)?;
    if view.version == Version::HTTP_2 && header.as_ref().is_some_and(|h| *h != target) {
        return Err(Denial::BadRequest(BadRequest::ConflictingHost));
    }
    // HTTP/1.1 absolute-form: the target's host wins over `Host` (RFC 9112 3.2.2).
    Ok(Some(target))
}

fn declared_body_len(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Who sent the request: a verified token, valid for this route's audience and not revoked,
/// with the `Authorization` credential it came in (its scheme and bytes, for the binding stage);
/// `None` for a token from a cookie or query parameter, which is a bearer token.
async fn authenticate<'h>(
    gateway: &Gateway,
    route: &Route,
    auth: &ProtectedAuth,
    headers: &'h HeaderMap,
    presented: Result<Presented<'_>, Ambiguity>,
    max_token_bytes: usize,
) -> Result<(Arc<CachedToken>, Option<Credential<'h>>, CacheOutcome), Denial> {
    let outside_header = matches!(presented, Ok(Presented::Value(_)));
    let value;
    let (credential, from_header) = match presented {
        Err(_) => return Err(Denial::SeveralTokens),
        Ok(Presented::Absent) => return Err(Denial::NoToken),
        Ok(Presented::Header) => match bearer::credential(headers, max_token_bytes) {
            Ok(Some(credential)) => (credential, Some(credential)),
            Ok(None) => return Err(Denial::NoToken),
            Err(_) => return Err(Denial::BadAuthorization),
        },
        // A cookie or parameter is the token itself: what is wrong with it is the token's fault.
        Ok(Presented::Value(v)) if v.len() > max_token_bytes => {
            return Err(Denial::InvalidToken(Reason::Malformed))
        }
        Ok(Presented::Value(v)) => {
            value = v;
            (Credential::from_token(&value), None)
        }
    };
    let verdict = verify::verify_token(&credential, &route.providers, &gateway.cache).await;
    match verdict {
        Ok((entry, cache)) => {
            entry
                .claims
                .check_audience(auth.audience.as_deref(), &entry.provider.config.audiences)
                .map_err(Denial::InvalidToken)?;
            // After the cache, so a token revoked while cached is still refused.
            if gateway.revocations.is_revoked(&entry.claims) {
                return Err(Denial::InvalidToken(Reason::Revoked));
            }
            Ok((entry, from_header, cache))
        }
        Err(Unverified::Credential(_)) if outside_header => {
            Err(Denial::InvalidToken(Reason::Malformed))
        }
        Err(Unverified::Credential(_)) => Err(Denial::BadAuthorization),
        Err(Unverified::Token(Reason::KeysUnavailable)) => {
            let retry_after_secs = route
                .providers
                .iter()
                .map(|p| p.retry_after_secs())
                .min()
                .unwrap_or(30);
            Err(Denial::KeysUnavailable { retry_after_secs })
        }
        Err(Unverified::Token(reason)) => Err(Denial::InvalidToken(reason)),
    }
}

/// The binding stage: what the token is bound to (`cnf`), proven by this very request, and the
/// route's `require_binding` (see `auth::binding`). `htu` is compared with the scheme and host
/// the client used, worked out only when a proof is there to compare. `credential`: the
/// `Authorization` one, `None` for a token from a cookie or query parameter (a bearer token).
async fn bind(
    gateway: &Gateway,
    ctx: &mut RequestCtx,
    auth: &ProtectedAuth,
    view: &RequestView<'_>,
    entry: &CachedToken,
    credential: Option<Credential<'_>>,
) -> Result<Proven, Denial> {
    let snapshot = ctx.snapshot.clone();
    let server = &snapshot.config.server;
    let from_trusted = ctx
        .trusted_proxies()
        .iter()
        .any(|net| net.contains(&ctx.conn.peer.ip()));
    let (tls, host, path) = (ctx.conn.tls, ctx.host.as_ref(), ctx.path.as_deref());
    let htu = |htu: &str| {
        let path = path.unwrap_or("/");
        ClientUri::new(view.headers, tls, from_trusted, host, path, server.path).matches(htu)
    };
    let presented = binding::Presented {
        scheme: credential.map_or(Scheme::Bearer, |c| c.scheme()),
        token: credential.map_or(&[][..], |c| c.bytes()),
        proofs: view.headers.get_all(&headers::DPOP),
        method: view.method,
        htu: &htu,
        client_cert: ctx.conn.client_cert,
        max_proof_bytes: server.limits.max_token_bytes,
        replay: match ctx.narration {
            Some(_) => Mode::LookOnly,
            None => Mode::Record,
        },
    };
    let checked = check_binding(
        entry,
        &presented,
        auth.require_binding,
        &gateway.replay,
        &gateway.revocations,
    )
    .await;
    match checked {
        Ok(proven) => {
            ctx.narrate(|| format!("[pass] binding: {}", proven.describe()));
            Ok(proven)
        }
        Err(fault) => {
            ctx.narrate(|| match fault {
                BindingFault::Token(why) => format!("[FAIL] binding: {why}"),
                BindingFault::Proof(why) => format!("[FAIL] DPoP proof: {}", why.as_str()),
                BindingFault::Replay(why) => format!("[FAIL] DPoP proof: {why}"),
            });
            Err(match fault {
                BindingFault::Token(_) => Denial::InvalidToken(Reason::Binding),
                BindingFault::Proof(_) => Denial::InvalidDpopProof(
                    entry
                        .provider
                        .config
                        .dpop
                        .as_ref()
                        .map(|d| d.algorithms)
                        .unwrap_or_default(),
                ),
                BindingFault::Replay(_) => Denial::ReplayUnavailable,
            })
        }
    }
}

/// The route's claim headers for a verified token; nothing for anonymous routes.
fn render_claims(
    route: &Route,
    identity: Option<&CachedToken>,
) -> Result<Vec<(HeaderName, HeaderValue)>, Denial> {
    let Some(entry) = identity else {
        return Ok(Vec::new());
    };
    let mut rendered = Vec::with_capacity(route.config.forward_claims.len());
    for ch in &route.config.forward_claims {
        if let Some(value) = ch.claim.lookup(&entry.claims.claims) {
            let value =
                claims::header_value(value).map_err(|_| Denial::InvalidToken(Reason::Malformed))?;
            rendered.push((ch.header.clone(), value));
        }
    }
    Ok(rendered)
}

/// Builds the upstream request in place: URI, identity headers, forwarding headers. `parts`
/// must be the head `judge` admitted with `verdict` for this `ctx`.
///
/// # Errors
///
/// `UnsafePath` should the rewritten target not form a URI (it always does for a normalized
/// path).
pub fn rewrite_request(
    ctx: &RequestCtx,
    route: &Route,
    destination: Destination<'_>,
    verdict: Verdict,
    parts: &mut Parts,
    websocket: bool,
) -> Result<(), Denial> {
    let snapshot = &ctx.snapshot;
    let server = &snapshot.config.server;
    let upstream = destination.upstream;
    let token_from = match &route.config.auth {
        RouteAuth::Protected(auth) => auth.token_from.as_slice(),
        RouteAuth::Anonymous => &[],
    };
    let query = forwarded_query(token_from, parts.uri.query());
    let uri = upstream_uri(
        route,
        upstream,
        ctx.path.as_deref().unwrap_or("/"),
        query.as_deref(),
    )
    .ok_or(Denial::UnsafePath)?;
    let headers = &mut parts.headers;
    rewrite_cookies(headers, token_from, route.config.forward_token);
    headers.remove(header::HOST);
    // `TE: trailers` says the client takes trailers, which gRPC and HTTP/2 upstreams need to
    // hear; every other transfer coding it might name is hop-by-hop.
    let takes_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    headers::strip_hop_by_hop(headers, websocket);
    if takes_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    match server.headers_with_underscores {
        // `judge` refused such a request already.
        UnderscoreHeaders::Reject => {}
        UnderscoreHeaders::Drop => {
            if headers::has_underscore_names(headers) {
                headers::strip_underscore_names(headers, true, &snapshot.injected_headers);
            }
        }
        UnderscoreHeaders::Allow => {
            if headers::has_underscore_names(headers) {
                headers::strip_underscore_names(headers, false, &snapshot.injected_headers);
            }
        }
    }
    let peer = ctx.conn.peer.ip();
    let from_trusted = server.trusted_proxies.iter().any(|net| net.contains(&peer));
    headers::strip_spoofable(headers, &snapshot.injected_headers, from_trusted);
    if route.config.forward_token == TokenForwarding::Strip {
        headers.remove(header::AUTHORIZATION);
    }
    let proto = if ctx.conn.tls { "https" } else { "http" };
    let forwarded_host = ctx.host.as_ref().and_then(RequestHost::header_value);
    headers::set_forwarded(headers, peer, from_trusted, proto, forwarded_host);
    if let Some(trace) = &ctx.trace {
        trace.propagate(headers);
    }
    headers.insert(&X_REQUEST_ID, ctx.request_id.clone());
    for (name, value) in verdict.claim_headers {
        headers.insert(name, value);
    }
    // HTTP/2 names the host in `:authority` (from the URI); a `Host` beside it is a duplicate to
    // nginx, which refuses the request. Where ALPN decides, the pool adds `Host` for HTTP/1.1.
    if destination.wire == Wire::Http1 {
        headers.insert(header::HOST, upstream.host_header.clone());
    }
    parts.uri = uri;
    // The pool picks the upstream's protocol (HTTP/2 takes any request version, HTTP/1.1 refuses
    // one marked HTTP/2), whatever the client spoke.
    parts.version = Version::HTTP_11;
    Ok(())
}

/// The query without the route's token parameters: a token in a URL would otherwise reach the
/// upstream's logs.
fn forwarded_query<'q>(token_from: &[TokenSource], query: Option<&'q str>) -> Option<Cow<'q, str>> {
    let mut query = Cow::Borrowed(query?);
    for source in token_from {
        if let TokenSource::Query(name) = source {
            if let Some(kept) = token_source::without_param(&query, name) {
                query = Cow::Owned(kept);
            }
        }
    }
    (!query.is_empty()).then_some(query)
}

/// One `Cookie` field for the upstream (HTTP/2 clients may split it, HTTP/1.1 allows one), and
/// without the token's cookie unless the route forwards the token.
fn rewrite_cookies(headers: &mut HeaderMap, token_from: &[TokenSource], forward: TokenForwarding) {
    let mut drop: Vec<&str> = Vec::new();
    if forward != TokenForwarding::Forward {
        for source in token_from {
            if let TokenSource::Cookie(name) = source {
                drop.push(name);
            }
        }
    }
    let mut fields = headers.get_all(header::COOKIE).iter();
    let several = fields.next().is_some() && fields.next().is_some();
    if !several && (drop.is_empty() || !headers.contains_key(header::COOKIE)) {
        return;
    }
    match token_source::rewritten_cookie(headers, &drop)
        .and_then(|joined| HeaderValue::from_str(&joined).ok())
    {
        Some(joined) => {
            headers.insert(header::COOKIE, joined);
        }
        None => {
            headers.remove(header::COOKIE);
        }
    }
}

/// The upstream sees exactly the matched (normalized) path, after `strip_prefix`.
fn upstream_uri(
    route: &Route,
    upstream: &Upstream,
    path: &str,
    query: Option<&str>,
) -> Option<Uri> {
    let stripped = match &route.config.strip_prefix {
        Some(prefix) => {
            let rest = path
                .strip_prefix(prefix.trim_end_matches('/'))
                .unwrap_or(path);
            if rest.starts_with('/') {
                rest
            } else if rest.is_empty() {
                "/"
            } else {
                // `/orders;x` stripped of `/orders` leaves `;x`: keep it a path.
                return build_uri(upstream, &format!("/{rest}"), query);
            }
        }
        None => path,
    };
    build_uri(upstream, stripped, query)
}

fn build_uri(upstream: &Upstream, path: &str, query: Option<&str>) -> Option<Uri> {
    let mut pq = String::with_capacity(
        upstream.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1),
    );
    pq.push_str(&upstream.base_path);
    pq.push_str(path);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(pq)
        .build()
        .ok()
}

/// A WebSocket handshake being passed through: the client's side of the switch, and how long
/// the tunnel may live.
struct PendingTunnel {
    client: OnUpgrade,
    lifetime: Option<TunnelLifetime>,
}

async fn forward(
    ctx: &mut RequestCtx,
    route: &Route,
    wire: Wire,
    parts: Parts,
    body: Incoming,
    tunnel: Option<PendingTunnel>,
) -> Result<Response<ResponseBody>, Denial> {
    let limits = &ctx.snapshot.config.server.limits;
    let (body, outcome) = LimitedBody::new(body, limits.max_body_bytes);
    // A body the client stops sending must not hold the upstream connection forever.
    let body = body.with_idle_timeout(limits.idle_timeout);
    let mut request = Request::from_parts(parts, body);
    let wait = if ctx.grpc {
        grpc_deadline(ctx, request.headers_mut(), limits.request_timeout)
    } else {
        limits.request_timeout
    };
    let upstream_started = Instant::now();
    let since = RequestTrace::mark(&ctx.trace);
    let result = ctx.snapshot.upstream.send(request, wire, wait).await;
    let elapsed = upstream_started.elapsed().as_secs_f64();
    if let Some(trace) = &mut ctx.trace {
        let outcome = match &result {
            Ok(response) => Ok(response.status().as_u16()),
            Err(UpstreamError::BodyTooLarge) => Err("body_too_large"),
            Err(UpstreamError::Failed(kind)) => Err(kind.as_str()),
        };
        trace.upstream_answered(since, outcome);
    }
    ctx.upstream_time = Some(elapsed);
    route.metrics.upstream_duration.observe(elapsed);
    let mut response = match result {
        Ok(response) => response,
        Err(UpstreamError::BodyTooLarge) => return Err(Denial::BodyTooLarge),
        Err(_) if outcome.exceeded() => return Err(Denial::BodyTooLarge),
        Err(_) if outcome.client_error() => return Err(Denial::MalformedBody),
        Err(UpstreamError::Failed(kind)) => {
            route.metrics.upstream_error(kind);
            return Err(match kind {
                UpstreamErrorKind::Timeout => Denial::UpstreamTimeout,
                _ => Denial::UpstreamUnavailable,
            });
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(tunnel) = tunnel {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(splice_upgraded(
                tunnel.client,
                upstream_upgrade,
                tunnel.lifetime,
            ));
            return Ok(response.map(|b| Either::Right(UpstreamBody::new(b, None))));
        }
    }
    headers::strip_hop_by_hop(response.headers_mut(), false);
    let call = ctx.grpc.then(|| {
        // A trailers-only response carries its status in the head.
        let head_status = response.headers().get(&grpc::GRPC_STATUS);
        if let Some(status) = head_status {
            route
                .metrics
                .grpc
                .count(GrpcStatus::from_header(status.as_bytes()));
        }
        GrpcCall {
            counters: route.metrics.grpc.clone(),
            request: outcome.clone(),
            status_seen: head_status.is_some(),
        }
    });
    Ok(response.map(|b| Either::Right(UpstreamBody::new(b, call))))
}

/// How long a gRPC call may wait for its response head: its `grpc-timeout` when shorter than
/// `request_timeout`, less the time already spent. The upstream is told what is left.
fn grpc_deadline(ctx: &RequestCtx, headers: &mut HeaderMap, request_timeout: Duration) -> Duration {
    let Some(asked) = grpc::timeout(headers) else {
        return request_timeout;
    };
    let left = asked.saturating_sub(ctx.started.elapsed());
    headers.insert(&grpc::GRPC_TIMEOUT, grpc::timeout_value(left));
    left.min(request_timeout)
}

/// How long an authenticated tunnel may live: no longer than its token, which may be revoked
/// while the tunnel is open.
struct TunnelLifetime {
    identity: Arc<CachedToken>,
    revocations: Arc<Revocations>,
}

impl TunnelLifetime {
    /// Resolves when the token expires or is revoked.
    async fn ended(self) {
        let mut changes = self.revocations.subscribe();
        let expiry = async {
            match self.identity.claims.exp {
                Some(exp) => {
                    let left = (exp - unix_now()).max(0.0);
                    tokio::time::sleep(Duration::from_secs_f64(left)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        loop {
            // A revocation may have landed between the verdict and the switch.
            if self.revocations.is_revoked(&self.identity.claims) {
                return;
            }
            tokio::select! {
                () = &mut expiry => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The list is gone with the gateway; only expiry is left to wait for.
                        return (&mut expiry).await;
                    }
                }
            }
        }
    }
}

/// Copies bytes both ways once client and upstream have both switched protocols, until either
/// side closes or the token's lifetime ends.
async fn splice_upgraded(client: OnUpgrade, upstream: OnUpgrade, lifetime: Option<TunnelLifetime>) {
    let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
        return;
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    match lifetime {
        None => {
            let _ = copy.await;
        }
        Some(lifetime) => {
            tokio::select! {
                _ = copy => {}
                () = lifetime.ended() => {
                    tracing::info!("closing a WebSocket tunnel: its token expired or was revoked");
                }
            }
        }
    }
}

/// Stamps the response, counts it and writes the access-log line.
pub fn finish<B>(ctx: &RequestCtx, mut response: Response<B>) -> Response<B> {
    // A gRPC refusal is an HTTP 200 on the wire and counts as the HTTP status it stands for.
    let status = match (ctx.grpc, ctx.denial) {
        (true, Some(denial)) => denial.status().as_u16(),
        _ => response.status().as_u16(),
    };
    let headers = response.headers_mut();
    headers.insert(&X_REQUEST_ID, ctx.request_id.clone());
    if let Some(cors) = ctx.route().and_then(|r| r.config.cors.as_ref()) {
        cors::stamp(cors, ctx.cors_origin.as_ref(), headers);
    }
    if let (Some(_), Some(challenges)) = (ctx.denial, &ctx.snapshot.metadata_challenges) {
        challenges.stamp(headers);
    }
    if ctx.conn.tls {
        if let Some(hsts) = &ctx.snapshot.hsts {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
    record(ctx, status);
    response
}

/// Counts an answered request and writes its access-log line; `status` is the HTTP status it
/// was answered with (or, for gRPC and decisions, stands for).
pub fn record(ctx: &RequestCtx, status: u16) {
    let route = ctx.route();
    let route_metrics = route.map_or(&ctx.snapshot.unrouted, |r| &r.metrics);
    let elapsed = ctx.started.elapsed().as_secs_f64();
    route_metrics.count_response(status);
    route_metrics.duration.observe(elapsed);
    match ctx.decision {
        Some(Reason::Ok) => route_metrics.allow(),
        Some(reason) => route_metrics.deny(reason),
        None => {}
    }
    if matches!(ctx.denial, Some(Denial::RateLimited { .. })) {
        route_metrics.rate_limited.inc();
    }
    if let (true, Some(denial)) = (ctx.grpc, ctx.denial) {
        route_metrics.grpc.count(denial.grpc_status());
    }
    if let Some(trace) = &ctx.trace {
        trace.end(EndedRequest {
            method: &ctx.method,
            route: route.map(Route::name),
            status,
            request_id: &ctx.request_id,
        });
    }
    tracing::info!(
        target: "access",
        client = %ctx.conn.peer.ip(),
        route = route.map_or("none", Route::name),
        method = %ctx.method,
        path = ctx.path.as_deref().unwrap_or(""),
        status,
        decision = ctx.decision.map(|r| if r == Reason::Ok { "allow" } else { "deny" }).unwrap_or("none"),
        reason = ctx.decision.map_or("none", Reason::as_str),
        sub = ctx.verified.as_ref().and_then(|v| v.claims.sub.as_deref()).unwrap_or(""),
        jti = ctx.verified.as_ref().and_then(|v| v.claims.jti.as_deref()).unwrap_or(""),
        duration_ms = elapsed * 1000.0,
        upstream_ms = ctx.upstream_time.map_or(0.0, |t| t * 1000.0),
        front = ctx.front.as_str(),
        trace_id = %crate::trace::log_id(ctx.trace.as_ref()),
    );
}

impl Front {
    fn as_str(self) -> &'static str {
        match self {
            Front::Proxy => "proxy",
            Front::Decision => "decision",
        }
    }
}

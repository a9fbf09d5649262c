//! One request, start to finish. The stages run in this order, each for a reason:
//!
//! 1. **shape**: a request head no proxy may act on (`CONNECT`, two `Host`s, an HTTP/1.1 request
//!    without `Host`, a coding other than `chunked`) is refused before anything reads it further.
//! 2. **limits**: header size, before anything reads a header's value.
//! 3. **normalize**: the path is made canonical (or refused) before routing, so route matching and
//!    the upstream see the same bytes and `/public/..;/admin` cannot pick a weaker route.
//! 4. **route**: first match wins; no match is 404 before any token is read.
//! 5. **throttle**: a client over its authentication-failure budget is refused before we spend a
//!    signature check on it.
//! 6. **authenticate**: bearer → cache → decode → keys → signature → claims; then the route's
//!    audience and revocation, which are checked after the cache so that a token revoked while
//!    cached is still refused.
//! 7. **authorize**: the route's claim rules (403, never 401, for a valid token lacking a role).
//! 8. **rewrite**: spoofable headers go on every route, anonymous ones included; claims are
//!    rendered last, so a value that cannot travel faithfully denies instead of being altered.
//! 9. **forward**: stream both ways; map upstream failures to 502/504 and oversize bodies to 413.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tracing::Instrument;

use super::headers::{self, X_REQUEST_ID};
use super::shape::check_shape;
use crate::auth::bearer;
use crate::auth::cache::CachedToken;
use crate::auth::rules;
use crate::auth::throttle::client_ip;
use crate::auth::verify::{self, Unverified};
use crate::body::{LimitedBody, ResponseBody};
use crate::claims;
use crate::config::{ProtectedAuth, RouteAuth, TokenForwarding};
use crate::denial::{Denial, Reason};
use crate::gateway::Gateway;
use crate::metrics::UpstreamErrorKind;
use crate::path::normalize_path;
use crate::snapshot::{request_host, Route, Snapshot};
use crate::upstream::UpstreamError;

/// What the connection tells the request about itself.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Per-request state handed from stage to stage, and read by `finish` for metrics and the log.
pub struct RequestCtx {
    pub request_id: HeaderValue,
    pub started: Instant,
    pub conn: ConnInfo,
    pub snapshot: Arc<Snapshot>,
    route: Option<usize>,
    method: Method,
    path: Option<String>,
    decision: Option<Reason>,
    /// The verified token, for the access line's `sub` and `jti` (shared, not copied).
    verified: Option<Arc<CachedToken>>,
    upstream_time: Option<f64>,
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
            path: None,
            decision: None,
            verified: None,
            upstream_time: None,
        }
    }

    fn route(&self) -> Option<&Route> {
        self.route.map(|i| &self.snapshot.routes.routes()[i])
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
    let version = request.version();
    let outcome = match check_shape(&request) {
        Some(why) => Err(Denial::BadRequest(why)),
        None => {
            handle_inner(&gateway, &mut ctx, request)
                .instrument(span.clone())
                .await
        }
    };
    let response = match outcome {
        Ok(response) => response,
        Err(denial) => {
            if let (Some(reason), Some(route)) = (denial.auth_reason(), ctx.route()) {
                route.metrics.deny(reason);
                ctx.decision = Some(reason);
            }
            denial.to_response(version).map(Either::Left)
        }
    };
    let _entered = span.enter();
    Ok(finish(&ctx, response))
}

async fn handle_inner(
    gateway: &Gateway,
    ctx: &mut RequestCtx,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Denial> {
    let (mut parts, body) = request.into_parts();
    let upgrade = is_upgrade(&parts)
        .then(|| parts.extensions.remove::<OnUpgrade>())
        .flatten();
    let snapshot = ctx.snapshot.clone();
    let index = prepare(gateway, ctx, &mut parts).await?;
    forward(
        gateway,
        ctx,
        &snapshot.routes.routes()[index],
        parts,
        body,
        upgrade,
    )
    .await
}

/// Every stage before the body moves: limits, normalize, route, authenticate, authorize,
/// rewrite. No I/O except a JWKS refetch on an unknown kid. Returns the matched route's index;
/// on success `parts` is the upstream request's head.
pub async fn prepare(
    gateway: &Gateway,
    ctx: &mut RequestCtx,
    parts: &mut Parts,
) -> Result<usize, Denial> {
    let snapshot = ctx.snapshot.clone();
    let limits = &snapshot.config.server.limits;
    if headers::header_bytes(&parts.headers) > limits.max_header_bytes {
        return Err(Denial::HeadersTooLarge);
    }
    let path = normalize_path(parts.uri.path()).map_err(|_| Denial::UnsafePath)?;
    let host = authority(parts).map(request_host).unwrap_or_default();
    let index = snapshot
        .routes
        .match_route_index(&host, &parts.method, &path)
        .ok_or(Denial::NoRoute)?;
    let route = &snapshot.routes.routes()[index];
    ctx.route = Some(index);
    ctx.path = Some(path);
    tracing::Span::current().record("route", route.name());
    let verified = match &route.config.auth {
        RouteAuth::Anonymous => None,
        RouteAuth::Protected(auth) => {
            let client = client_ip(
                ctx.conn.peer.ip(),
                &parts.headers,
                &snapshot.config.server.trusted_proxies,
            );
            if let Some(limit) = limits.auth_failures_per_minute {
                if let Some(retry_after_secs) = gateway.throttle.blocked(client, limit) {
                    route.metrics.rate_limited.inc();
                    return Err(Denial::RateLimited { retry_after_secs });
                }
            }
            let entry = authenticate(gateway, route, auth, &parts.headers, limits.max_token_bytes)
                .await
                .inspect_err(|denial| {
                    if limits.auth_failures_per_minute.is_some() && counts_as_failure(*denial) {
                        gateway.throttle.record_failure(client);
                    }
                })?;
            if rules::first_unmet(&auth.require, &entry.claims.claims).is_some() {
                return Err(Denial::Forbidden);
            }
            Some(entry)
        }
    };
    rewrite_request(ctx, &snapshot, route, verified.as_deref(), parts)?;
    if verified.is_some() {
        route.metrics.allow();
        ctx.decision = Some(Reason::Ok);
        ctx.verified = verified;
    }
    Ok(index)
}

/// Failures the client caused: a bad or missing credential, not an IdP outage.
fn counts_as_failure(denial: Denial) -> bool {
    matches!(
        denial,
        Denial::BadAuthorization | Denial::NoToken | Denial::InvalidToken(_)
    )
}

fn authority(parts: &Parts) -> Option<&str> {
    parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// Who sent the request: a verified token, valid for this route's audience and not revoked.
async fn authenticate(
    gateway: &Gateway,
    route: &Route,
    auth: &ProtectedAuth,
    headers: &HeaderMap,
    max_token_bytes: usize,
) -> Result<Arc<CachedToken>, Denial> {
    let credential = match bearer::credential(headers, max_token_bytes) {
        Ok(Some(credential)) => credential,
        Ok(None) => return Err(Denial::NoToken),
        Err(_) => return Err(Denial::BadAuthorization),
    };
    let verdict = verify::verify_token(&credential, &route.providers, &gateway.cache).await;
    match verdict {
        Ok((entry, _)) => {
            entry
                .claims
                .check_audience(auth.audience.as_deref(), &entry.provider.config.audiences)
                .map_err(Denial::InvalidToken)?;
            // After the cache, so a token revoked while cached is still refused.
            if gateway.revocations.is_revoked(&entry.claims) {
                return Err(Denial::InvalidToken(Reason::Revoked));
            }
            Ok(entry)
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

/// Builds the upstream request in place: URI, identity headers, forwarding headers.
fn rewrite_request(
    ctx: &RequestCtx,
    snapshot: &Snapshot,
    route: &Route,
    verified: Option<&CachedToken>,
    parts: &mut Parts,
) -> Result<(), Denial> {
    let upgrade = is_upgrade(parts);
    let uri = upstream_uri(route, ctx.path.as_deref().unwrap_or("/"), parts.uri.query())
        .ok_or(Denial::UnsafePath)?;
    let headers = &mut parts.headers;
    // The client's host, as routing saw it: an absolute-form target wins over `Host` (RFC 9112
    // 3.2.2). The header's own value is moved, not copied, into `X-Forwarded-Host`.
    let host_header = headers.remove(header::HOST);
    let original_host = match parts.uri.authority() {
        Some(target) => HeaderValue::from_str(target.as_str()).ok(),
        // A `Host` that routing could not read (not visible ASCII) is not passed on either.
        None => host_header.filter(|v| v.to_str().is_ok()),
    };
    headers::strip_hop_by_hop(headers, upgrade);
    headers::strip_spoofable(headers, &snapshot.injected_headers);
    if route.config.forward_token == TokenForwarding::Strip {
        headers.remove(header::AUTHORIZATION);
    }
    let proto = if ctx.conn.tls { "https" } else { "http" };
    headers::set_forwarded(
        headers,
        ctx.conn.peer.ip(),
        &snapshot.config.server.trusted_proxies,
        proto,
        original_host,
    );
    headers.insert(&X_REQUEST_ID, ctx.request_id.clone());
    if let Some(entry) = verified {
        for ch in &route.config.forward_claims {
            if let Some(value) = ch.claim.lookup(&entry.claims.claims) {
                let rendered = claims::header_value(value)
                    .map_err(|_| Denial::InvalidToken(Reason::Malformed))?;
                headers.insert(ch.header.clone(), rendered);
            }
        }
    }
    headers.insert(header::HOST, route.config.upstream.host_header.clone());
    parts.uri = uri;
    // HTTP/2 clients arrive as HTTP/2; the upstream pool speaks HTTP/1.1.
    parts.version = http::Version::HTTP_11;
    Ok(())
}

fn is_upgrade(parts: &Parts) -> bool {
    parts.version == http::Version::HTTP_11
        && parts.headers.contains_key(header::UPGRADE)
        && parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The upstream sees exactly the matched (normalized) path, after `strip_prefix`.
fn upstream_uri(route: &Route, path: &str, query: Option<&str>) -> Option<Uri> {
    let upstream = &route.config.upstream;
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

fn build_uri(upstream: &crate::config::Upstream, path: &str, query: Option<&str>) -> Option<Uri> {
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

async fn forward(
    gateway: &Gateway,
    ctx: &mut RequestCtx,
    route: &Route,
    parts: Parts,
    body: Incoming,
    client_upgrade: Option<OnUpgrade>,
) -> Result<Response<ResponseBody>, Denial> {
    let limits = &ctx.snapshot.config.server.limits;
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limits.max_body_bytes)
    {
        return Err(Denial::BodyTooLarge);
    }
    let (body, outcome) = LimitedBody::new(body, limits.max_body_bytes);
    let upstream_started = Instant::now();
    let result = gateway
        .upstream
        .send(Request::from_parts(parts, body), limits.request_timeout)
        .await;
    let elapsed = upstream_started.elapsed().as_secs_f64();
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
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(splice_upgraded(client_upgrade, upstream_upgrade));
            return Ok(response.map(Either::Right));
        }
    }
    headers::strip_hop_by_hop(response.headers_mut(), false);
    Ok(response.map(Either::Right))
}

/// Copies bytes both ways once client and upstream have both switched protocols.
async fn splice_upgraded(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
        return;
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Stamps the response, counts it and writes the access-log line.
fn finish(ctx: &RequestCtx, mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    let status = response.status().as_u16();
    let headers = response.headers_mut();
    headers.insert(&X_REQUEST_ID, ctx.request_id.clone());
    if ctx.conn.tls {
        if let Some(hsts) = &ctx.snapshot.hsts {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
    let route_metrics = ctx.route().map_or(&ctx.snapshot.unrouted, |r| &r.metrics);
    let elapsed = ctx.started.elapsed().as_secs_f64();
    route_metrics.count_response(status);
    route_metrics.duration.observe(elapsed);
    tracing::info!(
        target: "access",
        client = %ctx.conn.peer.ip(),
        route = ctx.route().map_or("none", |r| r.name()),
        method = %ctx.method,
        path = ctx.path.as_deref().unwrap_or(""),
        status,
        decision = ctx.decision.map(|r| if r == Reason::Ok { "allow" } else { "deny" }).unwrap_or("none"),
        reason = ctx.decision.map_or("none", Reason::as_str),
        sub = ctx.verified.as_ref().and_then(|v| v.claims.sub.as_deref()).unwrap_or(""),
        jti = ctx.verified.as_ref().and_then(|v| v.claims.jti.as_deref()).unwrap_or(""),
        duration_ms = elapsed * 1000.0,
        upstream_ms = ctx.upstream_time.map_or(0.0, |t| t * 1000.0),
    );
    response
}

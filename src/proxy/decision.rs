//! The decision front and back: a proxy that keeps its own routing (nginx `auth_request`,
//! Traefik/Caddy/HAProxy forward-auth, Envoy `ext_authz` over HTTP and gRPC) asks whether a
//! request may pass, and gets the proxy mode's own answer: the same stages, the same status,
//! challenge and body, and on success the route's claim headers.
//!
//! The endpoint's path says which proxy is asking, and only that proxy's headers describe the
//! original request: a client that sends `X-Original-URI` through Traefik, or `X-Forwarded-Uri`
//! through nginx, describes nothing. The body is never read.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderAppendAction, HeaderValue as EnvoyHeaderValue, HeaderValueOption, HttpResponse,
    HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use super::headers::{self, X_REQUEST_ID};
use super::host::parse_host;
use super::pipeline::{
    finish, judge, record, record_decision, ConnInfo, Front, RequestCtx, RequestView, Verdict,
};
use crate::denial::{BadRequest, Denial};
use crate::gateway::Gateway;
use crate::grpc;
use crate::snapshot::Snapshot;

/// Envoy's gRPC `ext_authz` method.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// A decision, or the gRPC `Check` service's own answer.
pub type DecisionBody = Either<Full<Bytes>, tonic::body::Body>;

static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// Which proxy's conventions describe the original request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asker {
    /// `X-Original-Method`, `X-Original-URI`, `Host`.
    Nginx,
    /// `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` (Traefik, Caddy, HAProxy).
    Traefik,
    /// The decision request's own method and `Host`; the path after `/envoy`.
    Envoy,
}

/// The forward-auth listener's service function.
pub async fn handle_decision(
    gateway: Arc<Gateway>,
    conn: ConnInfo,
    request: Request<Incoming>,
) -> Result<Response<DecisionBody>, Infallible> {
    let snapshot = gateway.snapshot();
    let trusted = snapshot.config.forward_auth.as_ref().is_some_and(|fa| {
        fa.trusted_proxies
            .iter()
            .any(|n| n.contains(&conn.peer.ip()))
    });
    let path = request.uri().path();
    if trusted && path == CHECK_PATH {
        return Ok(check_over_grpc(gateway, conn, request).await);
    }
    let asker = match path {
        "/nginx" => Some(Asker::Nginx),
        "/traefik" => Some(Asker::Traefik),
        p if p == "/envoy" || p.starts_with("/envoy/") => Some(Asker::Envoy),
        _ => None,
    };
    let mut ctx = RequestCtx::new(
        snapshot,
        conn,
        headers::request_id(request.headers()),
        request.method().clone(),
    );
    ctx.front = Front::Decision;
    ctx.grpc = grpc::is_grpc(request.headers());
    // A decision joins the asking proxy's trace as a span of its own, with its `authenticate`
    // child; there is no `upstream` child, the proxy makes that call itself.
    ctx.trace = gateway
        .tracer
        .start(&ctx.snapshot.config.tracing, request.headers());
    let (parts, _body) = request.into_parts();
    let outcome = match (trusted, asker) {
        (false, _) => Err(Denial::UntrustedPeer),
        (true, None) => Err(Denial::NoRoute),
        (true, Some(asker)) => decide(&gateway, &mut ctx, asker, parts).await,
    };
    let response = match outcome {
        Ok(verdict) => allowed(verdict),
        Err(denial) => {
            ctx.refused(denial);
            let rendered = if ctx.grpc {
                denial.to_grpc_response()
            } else {
                denial.to_response(http::Version::HTTP_11)
            };
            rendered.map(Either::Left)
        }
    };
    Ok(finish(&ctx, response))
}

/// Reads the original request as `asker` describes it, then runs the stages on it.
async fn decide(
    gateway: &Gateway,
    ctx: &mut RequestCtx,
    asker: Asker,
    mut parts: Parts,
) -> Result<Verdict, Denial> {
    original_request(asker, &mut parts)?;
    let verdict = judge(gateway, ctx, RequestView::of(&parts)).await;
    record_decision(gateway, ctx, &parts.headers, &verdict);
    verdict
}

/// Turns the decision request's head into the original request's: its method, target and host
/// from `asker`'s headers, everything else (the credential above all) as the proxy passed it.
fn original_request(asker: Asker, parts: &mut Parts) -> Result<(), Denial> {
    let missing = Denial::BadRequest(BadRequest::MissingOriginal);
    let one = |headers: &HeaderMap, name: &HeaderName| -> Result<HeaderValue, Denial> {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => Ok(v.clone()),
            _ => Err(missing),
        }
    };
    let (method, target) = match asker {
        Asker::Nginx => {
            own_host(parts)?;
            // nginx and Envoy name the original host in `Host`; an `X-Forwarded-Host` beside it
            // is the client's own, which the DPoP `htu` check must not believe.
            parts.headers.remove(&headers::X_FORWARDED_HOST);
            (
                Some(one(&parts.headers, &X_ORIGINAL_METHOD)?),
                one(&parts.headers, &X_ORIGINAL_URI)?,
            )
        }
        Asker::Traefik => {
            let host = one(&parts.headers, &headers::X_FORWARDED_HOST)?;
            // The decision request's own `Host` names this listener, not the original.
            parts.headers.insert(header::HOST, host);
            (
                Some(one(&parts.headers, &X_FORWARDED_METHOD)?),
                one(&parts.headers, &X_FORWARDED_URI)?,
            )
        }
        Asker::Envoy => {
            own_host(parts)?;
            parts.headers.remove(&headers::X_FORWARDED_HOST);
            let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let rest = pq.strip_prefix("/envoy").unwrap_or(pq);
            let target = if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            };
            (None, HeaderValue::from_str(&target).map_err(|_| missing)?)
        }
    };
    if let Some(method) = method {
        parts.method = Method::from_bytes(method.as_bytes()).map_err(|_| missing)?;
    }
    // Origin-form only: an absolute URI would name a host other than `Host`.
    let uri: Uri = std::str::from_utf8(target.as_bytes())
        .ok()
        .filter(|t| t.starts_with('/'))
        .and_then(|t| t.parse().ok())
        .ok_or(missing)?;
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    Ok(())
}

/// Moves the host the decision request names in its target (HTTP/2 `:authority`, or an
/// HTTP/1.1 absolute-form URI) into `Host`, before the original target replaces the URI: an
/// HTTP/2 client such as Envoy's names the original host there alone. Proxy mode's rules: the
/// absolute-form host wins over `Host`; an HTTP/2 `Host` that disagrees is a 400.
fn own_host(parts: &mut Parts) -> Result<(), Denial> {
    let Some(authority) = parts.uri.authority() else {
        return Ok(());
    };
    let Ok(named) = HeaderValue::from_str(authority.as_str()) else {
        return Err(Denial::BadRequest(BadRequest::InvalidHost));
    };
    if parts.version == http::Version::HTTP_2 {
        if let Some(host) = parts.headers.get(header::HOST) {
            return match (parse_host(host.as_bytes()), parse_host(named.as_bytes())) {
                (Ok(a), Ok(b)) if a != b => Err(Denial::BadRequest(BadRequest::ConflictingHost)),
                // The same host, or a `Host` the stages will refuse themselves.
                _ => Ok(()),
            };
        }
    }
    parts.headers.insert(header::HOST, named);
    Ok(())
}

/// 200 with the route's claim headers, for the asking proxy to copy onto the request.
fn allowed(verdict: Verdict) -> Response<DecisionBody> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
    let headers = response.headers_mut();
    for (name, value) in verdict.claim_headers {
        headers.insert(name, value);
    }
    response
}

/// Envoy's gRPC `Authorization/Check`, answered by the generated tonic server around [`Check`].
async fn check_over_grpc(
    gateway: Arc<Gateway>,
    conn: ConnInfo,
    request: Request<Incoming>,
) -> Response<DecisionBody> {
    let mut server = AuthorizationServer::new(Check { gateway, conn });
    match tower_service::Service::call(&mut server, request).await {
        Ok(response) => response.map(Either::Right),
        Err(never) => match never {},
    }
}

/// One `Check` call: the stages on the request Envoy describes.
struct Check {
    gateway: Arc<Gateway>,
    conn: ConnInfo,
}

#[tonic::async_trait]
impl Authorization for Check {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let gateway = &self.gateway;
        let snapshot = gateway.snapshot();
        let http = request
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http);
        let mut headers = HeaderMap::new();
        let parts = http.as_ref().and_then(|h| {
            for (name, value) in &h.headers {
                // Pseudo-headers (`:authority`, `:path`) are the fields below.
                if name.starts_with(':') {
                    continue;
                }
                let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) else {
                    return None;
                };
                headers.append(name, value);
            }
            headers.insert(header::HOST, HeaderValue::from_str(&h.host).ok()?);
            // Envoy names the original host in `host`; the client's own `X-Forwarded-Host` must
            // not stand in for it (the DPoP `htu` check reads it from trusted peers).
            headers.remove(&headers::X_FORWARDED_HOST);
            let mut builder = Request::builder()
                .method(Method::from_bytes(h.method.as_bytes()).ok()?)
                .uri(h.path.as_str());
            *builder.headers_mut()? = headers;
            builder.body(()).ok().map(|r| r.into_parts().0)
        });
        let request_id = parts.as_ref().map_or_else(
            || headers::request_id(&HeaderMap::new()),
            |p| headers::request_id(&p.headers),
        );
        let mut ctx = RequestCtx::new(snapshot.clone(), self.conn, request_id.clone(), Method::GET);
        ctx.front = Front::Decision;
        let verdict = match &parts {
            None => Err(Denial::BadRequest(BadRequest::MissingOriginal)),
            Some(parts) => {
                let verdict = judge(gateway, &mut ctx, RequestView::of(parts)).await;
                record_decision(gateway, &mut ctx, &parts.headers, &verdict);
                verdict
            }
        };
        let answer = match verdict {
            Ok(verdict) => {
                record(&ctx, 200);
                let injected = &snapshot.injected_headers;
                let set: Vec<HeaderName> = verdict
                    .claim_headers
                    .iter()
                    .map(|(n, _)| n.clone())
                    .collect();
                let mut headers: Vec<HeaderValueOption> = verdict
                    .claim_headers
                    .iter()
                    .map(|(n, v)| overwrite(n, v))
                    .collect();
                headers.push(overwrite(&X_REQUEST_ID, &request_id));
                CheckResponse {
                    status: Some(rpc::Status {
                        code: 0,
                        ..Default::default()
                    }),
                    http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                        headers,
                        // Envoy forwards the client's own headers: a claim header this token
                        // does not set must not arrive as the client wrote it.
                        headers_to_remove: injected
                            .iter()
                            .filter(|n| !set.contains(n))
                            .map(|n| n.as_str().to_string())
                            .collect(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }
            }
            Err(denial) => {
                ctx.refused(denial);
                record(&ctx, denial.status().as_u16());
                denied(denial, &request_id, &snapshot)
            }
        };
        Ok(tonic::Response::new(answer))
    }
}

fn overwrite(name: &HeaderName, value: &HeaderValue) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(EnvoyHeaderValue {
            key: name.as_str().to_string(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// The proxy mode's answer, as Envoy relays it to the client.
fn denied(denial: Denial, request_id: &HeaderValue, snapshot: &Snapshot) -> CheckResponse {
    let mut rendered = denial.to_response(http::Version::HTTP_11);
    if let Some(challenges) = &snapshot.metadata_challenges {
        challenges.stamp(rendered.headers_mut());
    }
    let mut headers: Vec<HeaderValueOption> = rendered
        .headers()
        .iter()
        .filter(|(name, _)| *name != header::CONNECTION)
        .map(|(n, v)| overwrite(n, v))
        .collect();
    headers.push(overwrite(&X_REQUEST_ID, request_id));
    let status: StatusCode = denial.status();
    CheckResponse {
        status: Some(rpc::Status {
            code: denial.grpc_status().as_code(),
            message: denial.text().description.to_string(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status.as_u16()),
            }),
            headers,
            body: denial.text().json.to_string(),
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: http::Version, uri: &str, host: Option<&str>) -> Parts {
        let mut b = Request::builder()
            .version(version)
            .uri(uri)
            .header("x-original-method", "GET")
            .header("x-original-uri", "/api/x");
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn host_of(parts: &Parts) -> Option<&str> {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    }

    #[test]
    fn an_http2_decision_names_the_original_host_in_its_authority() {
        for asker in [Asker::Nginx, Asker::Envoy] {
            let mut parts = head(
                http::Version::HTTP_2,
                "http://tenant.example.com/envoy/api/x",
                None,
            );
            original_request(asker, &mut parts).expect("a decision");
            assert_eq!(host_of(&parts), Some("tenant.example.com"), "{asker:?}");
            assert_eq!(parts.uri.authority(), None, "{asker:?}");
            assert_eq!(parts.uri.path(), "/api/x", "{asker:?}");

            let mut same = head(
                http::Version::HTTP_2,
                "http://tenant.example.com/envoy/api/x",
                Some("Tenant.Example.com"),
            );
            original_request(asker, &mut same).expect("the same host");

            let mut other = head(
                http::Version::HTTP_2,
                "http://tenant.example.com/envoy/api/x",
                Some("api.example.com"),
            );
            assert_eq!(
                original_request(asker, &mut other),
                Err(Denial::BadRequest(BadRequest::ConflictingHost)),
                "{asker:?}"
            );
        }
    }

    #[test]
    fn an_absolute_form_target_names_the_host_as_in_proxy_mode() {
        let mut parts = head(
            http::Version::HTTP_11,
            "http://tenant.example.com/nginx",
            Some("api.example.com"),
        );
        original_request(Asker::Nginx, &mut parts).expect("a decision");
        assert_eq!(host_of(&parts), Some("tenant.example.com"));
    }

    #[test]
    fn traefik_names_the_host_in_x_forwarded_host_alone() {
        let mut parts = head(http::Version::HTTP_2, "http://127.0.0.1:9902/traefik", None);
        parts
            .headers
            .insert("x-forwarded-method", HeaderValue::from_static("GET"));
        parts
            .headers
            .insert("x-forwarded-uri", HeaderValue::from_static("/api/x"));
        parts.headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("api.example.com"),
        );
        original_request(Asker::Traefik, &mut parts).expect("a decision");
        assert_eq!(host_of(&parts), Some("api.example.com"));
    }
}

//! `jwt-gateway check --request 'GET https://host/path' [--token JWT] [--header 'Name: value']`:
//! what the gateway would do with one request, told by the gateway's own stages against the live
//! JWKS and the configured revocations. It prints claim names, outcomes and the upstream head,
//! never the token, its signature or any key material.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use http::{Method, Request, Uri};

use super::{runtime, CliError};
use crate::config;
use crate::gateway::{Gateway, GatewayOptions};
use crate::proxy::explain::explain_request;
use crate::proxy::pipeline::ConnInfo;

/// The client the explained request comes from: a documentation address (RFC 5737), so it is
/// never one of the config's trusted proxies by accident.
const EXPLAINED_PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 50000);

pub fn explain(
    config_path: &Path,
    request: &str,
    token: Option<&str>,
    extra_headers: &[String],
) -> Result<(), CliError> {
    let config = config::load(config_path)?;
    let (method, uri) = parse_request(request)?;
    let tls = uri.scheme_str() == Some("https");
    let parts = request_head(method, uri, token, extra_headers)?;
    let report = runtime()?.block_on(async move {
        let gateway = Gateway::new(config, GatewayOptions::default())
            .map_err(|e| CliError::Runtime(e.to_string()))?;
        let mut out = format!("request: {} {}\n", parts.method, parts.uri);
        for provider in &gateway.snapshot().providers {
            if provider.has_remote_keys() {
                match provider.refresh().await {
                    Ok(_) => out.push_str(&format!(
                        "  [pass] provider {:?}: live JWKS fetched ({} usable keys)\n",
                        provider.config.name,
                        provider.snapshot().keys.len()
                    )),
                    Err(e) => out.push_str(&format!(
                        "  [FAIL] provider {:?}: live JWKS not fetched ({e})\n",
                        provider.config.name
                    )),
                }
            }
        }
        let conn = ConnInfo {
            peer: EXPLAINED_PEER,
            tls,
            // The explainer presents no client certificate: an mTLS-bound token is refused.
            client_cert: None,
        };
        out.push_str(&explain_request(&gateway, conn, parts).await.render());
        Ok::<_, CliError>(out)
    })?;
    print!("{report}");
    Ok(())
}

fn parse_request(text: &str) -> Result<(Method, Uri), CliError> {
    let usage = || {
        CliError::Usage(format!(
            "--request {text:?} must look like 'GET https://api.example.com/orders/7'"
        ))
    };
    let (method, url) = text.trim().split_once(' ').ok_or_else(usage)?;
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| usage())?;
    let uri: Uri = url.trim().parse().map_err(|_| usage())?;
    if uri.authority().is_none() {
        return Err(usage());
    }
    Ok((method, uri))
}

/// The head an HTTP/1.1 client would send for `uri`: origin-form target, `Host` from the URL,
/// the token as `Authorization: Bearer` (`DPoP` when a `DPoP` header is given), then the
/// `--header` lines as given.
fn request_head(
    method: Method,
    uri: Uri,
    token: Option<&str>,
    extra_headers: &[String],
) -> Result<http::request::Parts, CliError> {
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let target = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let mut builder = Request::builder().method(method).uri(target);
    let host = HeaderValue::from_str(&authority)
        .map_err(|_| CliError::Usage("the request URL's host is not a header value".into()))?;
    builder = builder.header(HOST, host);
    if let Some(t) = token {
        // With a `--header 'DPoP: <proof>'` the token goes as a DPoP-bound one (RFC 9449 7.1).
        let dpop = extra_headers.iter().any(|line| {
            line.split_once(':')
                .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("dpop"))
        });
        let scheme = if dpop { "DPoP" } else { "Bearer" };
        let value = HeaderValue::from_str(&format!("{scheme} {t}"))
            .map_err(|_| CliError::Usage("--token is not a valid header value".into()))?;
        builder = builder.header(AUTHORIZATION, value);
    }
    for line in extra_headers {
        let bad = || CliError::Usage(format!("--header {line:?} must look like 'Name: value'"));
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
        builder = builder.header(name, value);
    }
    let (parts, ()) = builder
        .body(())
        .map_err(|e| CliError::Usage(format!("cannot build the request: {e}")))?
        .into_parts();
    Ok(parts)
}

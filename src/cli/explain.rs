//! `jwt-gateway check --request 'GET https://host/path' [--token JWT]`: what the gateway would do
//! with one request, step by step, checked against the live JWKS. It prints claim names and
//! outcomes, never the token's signature or any key material.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use http::{Method, Uri};

use super::{runtime, CliError};
use crate::auth::bearer::{extract_bearer, Bearer};
use crate::auth::keyset::ProviderKeys;
use crate::auth::rules;
use crate::auth::token::{self, unix_now};
use crate::claims;
use crate::config::{self, Config, RouteAuth, TokenForwarding};
use crate::denial::{Denial, Reason};
use crate::metrics::Metrics;
use crate::path::normalize_path;
use crate::snapshot::{request_host, Route, RouteTable};

pub fn explain(config_path: &Path, request: &str, token: Option<&str>) -> Result<(), CliError> {
    let config = config::load(config_path)?;
    let (method, uri) = parse_request(request)?;
    let report = runtime()?.block_on(explain_request(&config, &method, &uri, token));
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

struct Report {
    out: String,
}

impl Report {
    fn line(&mut self, text: impl AsRef<str>) {
        self.out.push_str(text.as_ref());
        self.out.push('\n');
    }
    fn check(&mut self, passed: bool, what: impl AsRef<str>) {
        let _ = writeln!(
            self.out,
            "  [{}] {}",
            if passed { "pass" } else { "FAIL" },
            what.as_ref()
        );
    }
    fn verdict(mut self, denial: Option<Denial>) -> String {
        match denial {
            None => self.line("result: 200 (forwarded upstream; the upstream's answer is relayed)"),
            Some(d) => {
                let reason = d
                    .auth_reason()
                    .map(|r| format!(", reason {}", r.as_str()))
                    .unwrap_or_default();
                self.line(format!(
                    "result: {} {}{reason}",
                    d.status().as_u16(),
                    d.text().error
                ));
                if let Some(challenge) = d.text().challenge {
                    self.line(format!("  WWW-Authenticate: {challenge}"));
                }
            }
        }
        self.out
    }
}

async fn explain_request(
    config: &Config,
    method: &Method,
    uri: &Uri,
    token: Option<&str>,
) -> String {
    let mut r = Report { out: String::new() };
    r.line(format!("request: {method} {uri}"));
    let path = match normalize_path(uri.path()) {
        Ok(p) => p,
        Err(why) => {
            r.check(false, format!("path normalization ({})", why.as_str()));
            return r.verdict(Some(Denial::UnsafePath));
        }
    };
    r.check(true, format!("path normalized to {path}"));
    let metrics = Metrics::new();
    let jwks_http = reqwest::Client::new();
    let providers: Vec<Arc<ProviderKeys>> = config
        .providers
        .iter()
        .map(|p| {
            Arc::new(ProviderKeys::new(
                p.clone(),
                jwks_http.clone(),
                metrics.provider(&p.name),
            ))
        })
        .collect();
    let table = RouteTable::new(
        config
            .routes
            .iter()
            .map(|rc| Route {
                providers: match &rc.auth {
                    RouteAuth::Anonymous => Vec::new(),
                    RouteAuth::Protected(a) => {
                        a.providers.iter().map(|&i| providers[i].clone()).collect()
                    }
                },
                metrics: metrics.route(&rc.name),
                config: rc.clone(),
            })
            .collect(),
    );
    let host = request_host(uri.authority().map_or("", |a| a.as_str()));
    let Some(route) = table.match_route(&host, method, &path) else {
        r.check(false, "no route matches");
        return r.verdict(Some(Denial::NoRoute));
    };
    r.check(
        true,
        format!("route {:?} -> {}", route.name(), route.config.upstream.uri),
    );
    let RouteAuth::Protected(auth) = &route.config.auth else {
        r.line("auth: anonymous route, no token needed");
        upstream_headers(&mut r, route, None);
        return r.verdict(None);
    };
    let names: Vec<&str> = route
        .providers
        .iter()
        .map(|p| p.config.name.as_str())
        .collect();
    r.line(format!("auth: providers [{}]", names.join(", ")));
    let mut headers = HeaderMap::new();
    if let Some(t) = token {
        match HeaderValue::from_str(&format!("Bearer {t}")) {
            Ok(v) => {
                headers.insert(AUTHORIZATION, v);
            }
            Err(_) => {
                r.check(false, "token is not a valid header value");
                return r.verdict(Some(Denial::BadAuthorization));
            }
        }
    }
    let token = match extract_bearer(&headers, config.server.limits.max_token_bytes) {
        Ok(Bearer::Token(t)) => t,
        Ok(Bearer::Absent) => {
            r.check(false, "bearer token present");
            return r.verdict(Some(Denial::NoToken));
        }
        Err(why) => {
            r.check(
                false,
                format!("bearer token well-formed ({})", why.as_str()),
            );
            return r.verdict(Some(Denial::BadAuthorization));
        }
    };
    match verify(&mut r, token, route, auth).await {
        Ok(claims) => {
            upstream_headers(&mut r, route, Some(&claims));
            r.verdict(None)
        }
        Err(denial) => r.verdict(Some(denial)),
    }
}

async fn verify(
    r: &mut Report,
    token: &str,
    route: &Route,
    auth: &crate::config::ProtectedAuth,
) -> Result<serde_json::Map<String, serde_json::Value>, Denial> {
    let invalid = Denial::InvalidToken;
    let decoded = token::decode(token)
        .inspect_err(|reason| {
            r.check(
                false,
                format!("token decodes strictly ({})", reason.as_str()),
            )
        })
        .map_err(invalid)?;
    r.check(
        true,
        format!(
            "token decodes: alg {}, kid {}",
            decoded.alg,
            decoded
                .kid
                .as_deref()
                .map_or("(none)".into(), |k| format!("{k:?}"))
        ),
    );
    let iss = token::issuer(&decoded.claims)
        .inspect_err(|_| r.check(false, "iss claim present"))
        .map_err(invalid)?;
    let Some(provider) = route.providers.iter().find(|p| p.config.issuer == iss) else {
        r.check(false, "iss names one of the route's providers");
        return Err(invalid(Reason::Issuer));
    };
    r.check(
        true,
        format!("provider {:?} chosen by iss", provider.config.name),
    );
    if !provider.config.algorithms.contains(&decoded.alg) {
        r.check(
            false,
            format!("alg {} in the provider's allow-list", decoded.alg),
        );
        return Err(invalid(Reason::AlgNotAllowed));
    }
    r.check(
        true,
        format!("alg {} in the provider's allow-list", decoded.alg),
    );
    if provider.has_remote_keys() {
        match provider.refresh().await {
            Ok(_) => r.check(
                true,
                format!(
                    "live JWKS fetched ({} usable keys)",
                    provider.snapshot().keys.len()
                ),
            ),
            Err(e) => r.check(false, format!("live JWKS fetched ({e})")),
        }
    }
    let key = match provider.key_for(decoded.kid.as_deref(), decoded.alg).await {
        Ok(key) => key,
        Err(reason) => {
            r.check(false, format!("signing key found ({})", reason.as_str()));
            return Err(match reason {
                Reason::KeysUnavailable => Denial::KeysUnavailable {
                    retry_after_secs: provider.retry_after_secs(),
                },
                other => invalid(other),
            });
        }
    };
    r.check(true, "signing key found");
    if !key.verify(decoded.alg, decoded.signing_input, &decoded.signature) {
        r.check(false, "signature");
        return Err(invalid(Reason::BadSignature));
    }
    r.check(true, "signature");
    let verified = token::check_claims(decoded, &provider.config, unix_now())
        .inspect_err(|reason| {
            r.check(
                false,
                format!(
                    "claims: iss, exp, nbf, iat, required claims, typ ({})",
                    reason.as_str()
                ),
            )
        })
        .map_err(invalid)?;
    r.check(true, "claims: iss, exp, nbf, iat, required claims, typ");
    verified
        .check_audience(auth.audience.as_deref(), &provider.config.audiences)
        .inspect_err(|_| r.check(false, "audience"))
        .map_err(invalid)?;
    r.check(true, "audience");
    for (i, rule) in auth.require.iter().enumerate() {
        let held = rule.holds(&verified.claims);
        r.check(
            held,
            format!(
                "require[{i}]: claim {} any_of {:?} all_of {:?}",
                rule.claim, rule.any_of, rule.all_of
            ),
        );
    }
    if rules::first_unmet(&auth.require, &verified.claims).is_some() {
        return Err(Denial::Forbidden);
    }
    Ok(verified.claims)
}

fn upstream_headers(
    r: &mut Report,
    route: &Route,
    claims_map: Option<&serde_json::Map<String, serde_json::Value>>,
) {
    r.line(format!(
        "upstream: {} (X-Forwarded-For/-Proto/-Host and X-Request-Id set)",
        route.config.upstream.uri
    ));
    let Some(map) = claims_map else { return };
    for ch in &route.config.forward_claims {
        match ch.claim.lookup(map).map(claims::header_value) {
            None => r.line(format!(
                "  {}: (claim {} absent, header not sent)",
                ch.header, ch.claim
            )),
            Some(Ok(v)) => r.line(format!(
                "  {}: {}",
                ch.header,
                String::from_utf8_lossy(v.as_bytes())
            )),
            Some(Err(why)) => r.line(format!(
                "  {}: cannot be carried faithfully ({why:?}): the request would be denied",
                ch.header
            )),
        }
    }
    if route.config.forward_token == TokenForwarding::Forward {
        r.line("  Authorization: (forwarded as received)");
    }
}

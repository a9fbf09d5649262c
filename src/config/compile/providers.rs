//! `providers:`: trusted issuers, their keys and the claims their tokens must carry.

use std::time::Duration;

use serde_yaml::Value;

use super::{check_name, claim_path, read_env_secret};
use crate::algorithm::Algorithm;
use crate::claims::ClaimPath;
use crate::config::yaml::{index, Errors, Fields};
use crate::config::*;

/// Shortest key an HMAC provider may use: the contract's floor, raised by RFC 7518 3.2 to the
/// hash size of the strongest HS algorithm listed (48 bytes for HS384, 64 for HS512).
const MIN_SHARED_SECRET_BYTES: usize = 32;

/// What `providers:` compiled to. `broken` names the providers that have errors of their own, so
/// a route naming one is not also told that no such provider exists.
#[derive(Default)]
pub(super) struct Providers {
    pub compiled: Vec<ProviderConfig>,
    pub broken: Vec<String>,
}

pub(super) fn providers(root: &mut Fields, errors: &mut Errors) -> Providers {
    let Some(items) = root.list("providers", errors) else {
        return Providers::default();
    };
    let mut out: Vec<ProviderConfig> = Vec::new();
    let mut broken = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index("providers", i);
        let Some(p) = provider(&mut Fields::of(Some(item), path.clone(), errors), errors) else {
            broken.extend(item.get("name").and_then(Value::as_str).map(str::to_string));
            continue;
        };
        if out.iter().any(|o| o.name == p.name) {
            errors.push(
                &format!("{path}.name"),
                format!("duplicate provider name {:?}", p.name),
            );
        }
        if out.iter().any(|o| o.issuer == p.issuer) {
            errors.push(
                &format!("{path}.issuer"),
                "another provider already has this issuer; tokens choose their provider by `iss`",
            );
        }
        out.push(p);
    }
    Providers {
        compiled: out,
        broken,
    }
}

fn provider(f: &mut Fields, errors: &mut Errors) -> Option<ProviderConfig> {
    let before = errors.0.len();
    let name = f.required_string("name", errors);
    if let Some(n) = &name {
        check_name(n, &f.path_of("name"), errors);
    }
    let issuer = f.required_string("issuer", errors);
    if issuer.as_deref() == Some("") {
        errors.push(&f.path_of("issuer"), "must not be empty");
    }
    let allow_insecure = f.bool("allow_insecure_jwks_http", errors).unwrap_or(false);
    let jwks_url_path = f.path_of("jwks_url");
    let jwks_url = f
        .string("jwks_url", errors)
        .and_then(|u| key_url(&u, allow_insecure, &jwks_url_path, errors));
    let discovery = f.bool("discovery", errors).unwrap_or(false);

    let algorithms_path = f.path_of("algorithms");
    let mut algorithms = Vec::new();
    match f.strings("algorithms", errors) {
        None if !f.has_non_null("algorithms") => errors.push(
            &algorithms_path,
            "is required: list the algorithms this issuer signs with, e.g. [RS256]",
        ),
        None => {}
        Some(list) if list.is_empty() => {
            errors.push(&algorithms_path, "must name at least one algorithm")
        }
        Some(list) => {
            for (text, path) in list {
                match Algorithm::parse(&text) {
                    Some(a) if !algorithms.contains(&a) => algorithms.push(a),
                    Some(_) => errors.push(&path, format!("{text} is listed twice")),
                    None if text.eq_ignore_ascii_case("none") => {
                        errors.push(&path, "`none` is never accepted")
                    }
                    None => errors.push(
                        &path,
                        format!(
                            "unsupported algorithm {text:?}; use one of {}",
                            Algorithm::ALL_NAMES
                        ),
                    ),
                }
            }
        }
    }

    let secret_path = f.path_of("shared_secret_env");
    let min_secret = algorithms
        .iter()
        .map(|a| match a {
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => MIN_SHARED_SECRET_BYTES,
        })
        .max()
        .unwrap_or(MIN_SHARED_SECRET_BYTES);
    let shared_secret = f.string("shared_secret_env", errors).and_then(|var| match read_env_secret(&var) {
        Ok(bytes) if bytes.len() >= min_secret => Some(Secret(bytes)),
        Ok(bytes) => {
            errors.push(&secret_path, format!("environment variable {var} holds {} bytes; an HMAC key for these algorithms needs at least {min_secret}", bytes.len()));
            None
        }
        Err(why) => {
            errors.push(&secret_path, format!("environment variable {var} {why}"));
            None
        }
    });
    let has_hmac = algorithms.iter().any(|a| a.is_hmac());
    let has_public = algorithms.iter().any(|a| !a.is_hmac());
    if has_hmac && shared_secret.is_none() && !f.has_non_null("shared_secret_env") {
        errors.push(&algorithms_path, "HS256/HS384/HS512 need shared_secret_env");
    }
    if !has_hmac && f.has_non_null("shared_secret_env") {
        errors.push(
            &secret_path,
            "is set but algorithms lists no HS256/HS384/HS512",
        );
    }
    let keys = match (jwks_url, discovery, &issuer) {
        (Some(_), true, _) => {
            errors.push(
                &jwks_url_path,
                "set either jwks_url or discovery: true, not both",
            );
            None
        }
        (Some(url), false, _) => Some(KeysSource::JwksUrl(url)),
        (None, true, Some(iss)) => {
            let doc = format!(
                "{}/.well-known/openid-configuration",
                iss.trim_end_matches('/')
            );
            key_url(&doc, allow_insecure, &f.path_of("issuer"), errors).map(KeysSource::Discovery)
        }
        (None, _, _) => None,
    };
    if has_public && keys.is_none() && !f.has_non_null("jwks_url") && !discovery {
        errors.push(
            &jwks_url_path,
            "is required for RS/PS/ES/EdDSA algorithms (or set discovery: true)",
        );
    }

    let audiences = f
        .strings("audiences", errors)
        .unwrap_or_default()
        .into_iter()
        .map(|(a, _)| a)
        .collect::<Vec<_>>();
    let clock_skew = f
        .duration("clock_skew", errors)
        .unwrap_or(Duration::from_secs(30));
    if clock_skew > Duration::from_secs(600) {
        errors.push(&f.path_of("clock_skew"), "must be at most 10m");
    }
    let require_claims = match f.strings("require_claims", errors) {
        Some(list) => list
            .into_iter()
            .filter_map(|(text, path)| claim_path(&text, &path, errors))
            .collect(),
        None => vec![ClaimPath::parse("exp").ok()?],
    };
    let require_typ = f.string("require_typ", errors);
    let jwks = jwks_settings(&mut f.child("jwks", errors), errors);
    let dpop = super::binding::dpop(&mut f.child("dpop", errors), &algorithms, errors);
    f.end(errors);
    if errors.0.len() > before {
        return None;
    }
    Some(ProviderConfig {
        name: name?,
        issuer: issuer?,
        keys,
        algorithms,
        shared_secret,
        audiences,
        clock_skew,
        require_claims,
        require_typ,
        jwks,
        allow_insecure_jwks_http: allow_insecure,
        dpop,
    })
}

fn key_url(
    text: &str,
    allow_insecure: bool,
    path: &str,
    errors: &mut Errors,
) -> Option<reqwest::Url> {
    let url = match reqwest::Url::parse(text) {
        Ok(u) => u,
        Err(e) => {
            errors.push(path, format!("{text:?} is not a URL: {e}"));
            return None;
        }
    };
    match url.scheme() {
        "https" => Some(url),
        "http" if allow_insecure && is_loopback_host(&url) => Some(url),
        "http" if allow_insecure => {
            errors.push(path, "allow_insecure_jwks_http permits http:// only to a loopback host (127.0.0.0/8, [::1], localhost); anyone on the path to another host could supply signing keys");
            None
        }
        "http" => {
            errors.push(path, "must be https (keys fetched over plain HTTP can be forged in transit); allow_insecure_jwks_http: true is for loopback testing only");
            None
        }
        other => {
            errors.push(path, format!("unsupported scheme {other:?}; use https"));
            None
        }
    }
}

fn is_loopback_host(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

fn jwks_settings(f: &mut Fields, errors: &mut Errors) -> JwksSettings {
    let refresh_interval = f
        .duration("refresh_interval", errors)
        .unwrap_or(Duration::from_secs(300));
    let min_refresh = f
        .duration("min_refresh", errors)
        .unwrap_or(Duration::from_secs(30));
    let max_stale = f
        .duration("max_stale", errors)
        .unwrap_or(Duration::from_secs(86_400));
    let fetch_timeout = f
        .duration("fetch_timeout", errors)
        .unwrap_or(Duration::from_secs(5));
    // A floor below a second lets forged unknown-kid tokens turn into one JWKS fetch each.
    if min_refresh < Duration::from_secs(1) {
        errors.push(
            &f.path_of("min_refresh"),
            "must be at least 1s: it bounds how often unknown kids can make the gateway refetch",
        );
    }
    if min_refresh > refresh_interval {
        errors.push(&f.path_of("min_refresh"), "cannot exceed refresh_interval");
    }
    if refresh_interval.is_zero() {
        errors.push(&f.path_of("refresh_interval"), "must be longer than 0s");
    }
    if fetch_timeout.is_zero() {
        errors.push(&f.path_of("fetch_timeout"), "must be longer than 0s");
    }
    f.end(errors);
    JwksSettings {
        refresh_interval,
        min_refresh,
        max_stale,
        fetch_timeout,
    }
}

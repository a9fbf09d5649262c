//! `routes:`: matching, upstreams, per-route authentication, rules and forwarded claims.

use std::collections::HashSet;

use http::header::HeaderName;
use http::{Method, Uri};
use serde_yaml::Value;

use super::providers::Providers;
use super::{check_name, claim_path};
use crate::config::yaml::{describe, index, Errors, Fields};
use crate::config::*;
use crate::rules::Requirement;

/// Headers the gateway owns; a route may not inject claims under these names.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "forwarded",
    "cookie",
    "traceparent",
    "tracestate",
    "dpop",
];
/// `decisions_only_allowed`: a `forward_auth` section exists, so a route may omit `upstream`.
pub(super) fn routes(
    root: &mut Fields,
    providers: &Providers,
    decisions_only_allowed: bool,
    errors: &mut Errors,
    warnings: &mut Errors,
) -> Vec<RouteConfig> {
    let Some(items) = root.list("routes", errors) else {
        // A `routes:` of the wrong type has its error already; only a missing one is "required".
        if !root.has_non_null("routes") {
            errors.push("routes", "is required: at least one route");
        }
        return Vec::new();
    };
    if items.is_empty() {
        errors.push("routes", "must list at least one route");
    }
    let mut out: Vec<RouteConfig> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index("routes", i);
        if let Some(r) = route(
            &mut Fields::of(Some(item), path.clone(), errors),
            providers,
            decisions_only_allowed,
            errors,
            warnings,
        ) {
            if out.iter().any(|o| o.name == r.name) {
                errors.push(
                    &format!("{path}.name"),
                    format!("duplicate route name {:?}", r.name),
                );
            }
            if r.name == "none" {
                errors.push(
                    &format!("{path}.name"),
                    "`none` is reserved for requests that matched no route",
                );
            }
            if let Some(earlier) = out.iter().find(|o| shadows(o, &r)) {
                warnings.push(
                    &path,
                    format!(
                        "never matches: route {:?} above it catches every request it would",
                        earlier.name
                    ),
                );
            }
            out.push(r);
        }
    }
    out
}

/// Whether `earlier` matches every request `later` could, so `later` is dead code.
fn shadows(earlier: &RouteConfig, later: &RouteConfig) -> bool {
    let host_covers = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(a), Some(b)) => a == b,
        (Some(_), None) => false,
    };
    let methods_cover = match (&earlier.methods, &later.methods) {
        (None, _) => true,
        (Some(a), Some(b)) => b.iter().all(|m| a.contains(m)),
        (Some(_), None) => false,
    };
    host_covers
        && methods_cover
        && crate::path::prefix_matches(&later.path_prefix, &earlier.path_prefix)
}

fn route(
    f: &mut Fields,
    providers: &Providers,
    decisions_only_allowed: bool,
    errors: &mut Errors,
    warnings: &mut Errors,
) -> Option<RouteConfig> {
    let before = errors.0.len();
    let name = f.required_string("name", errors);
    if let Some(n) = &name {
        check_name(n, &f.path_of("name"), errors);
    }
    let mut m = f.child("match", errors);
    if !m.is_present() && !f.has("match") {
        errors.push(&f.path_of("match"), "is required (at least path_prefix)");
    }
    let host = m
        .string("host", errors)
        .and_then(|h| host_match(&h, &m.path_of("host"), errors));
    let prefix_path = m.path_of("path_prefix");
    let mut path_prefix = m
        .string("path_prefix", errors)
        .unwrap_or_else(|| "/".into());
    // `/secure/` would not guard `/secure;x/data` or `/secure%3B/data`, which servlet containers
    // serve as `/secure/data`: a prefix is a segment boundary, so the slash goes.
    if path_prefix.len() > 1 && path_prefix.ends_with('/') {
        let trimmed = path_prefix.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        warnings.push(
            &prefix_path,
            format!("{path_prefix:?} is read as {trimmed:?}: a prefix matches whole segments, so the trailing '/' is dropped"),
        );
        path_prefix = trimmed.to_string();
    }
    check_prefix(&path_prefix, &prefix_path, errors);
    let methods = m.strings("methods", errors).map(|list| {
        list.into_iter()
            .filter_map(|(text, path)| {
                let upper = text.to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(method) if text.bytes().all(|b| b.is_ascii_alphabetic()) => Some(method),
                    _ => {
                        errors.push(&path, format!("{text:?} is not an HTTP method"));
                        None
                    }
                }
            })
            .collect::<Vec<_>>()
    });
    if methods.as_ref().is_some_and(|m| m.is_empty()) {
        errors.push(
            &m.path_of("methods"),
            "must name at least one method (omit it to allow every method)",
        );
    }
    m.end(errors);

    let upstream_path = f.path_of("upstream");
    let upstream = match f.string("upstream", errors) {
        Some(u) => upstream(&u, &upstream_path, errors).map(Some),
        None if decisions_only_allowed => Some(None),
        None => {
            errors.push(
                &upstream_path,
                "is required (only with a forward_auth section may a route serve decisions alone)",
            );
            None
        }
    };
    let upstream_protocol = match f.string("upstream_protocol", errors).as_deref() {
        None | Some("auto") => UpstreamProtocol::Auto,
        Some("http1") => UpstreamProtocol::Http1,
        Some("http2") => UpstreamProtocol::Http2,
        Some(other) => {
            errors.push(
                &f.path_of("upstream_protocol"),
                format!("{other:?} is not one of auto, http1, http2"),
            );
            UpstreamProtocol::Auto
        }
    };
    let strip_path = f.path_of("strip_prefix");
    let strip_prefix = f.string("strip_prefix", errors);
    if let Some(s) = &strip_prefix {
        check_prefix(s, &strip_path, errors);
        if !crate::path::prefix_matches(&path_prefix, s) {
            errors.push(&strip_path, "must be a prefix of match.path_prefix, or some matched paths could not be stripped");
        }
    }

    let auth = route_auth(f, providers, errors, warnings);
    let cors = super::browser::cors(&mut f.child("cors", errors), errors);
    let (forward_claims, forward_token, assertion) =
        forward(&mut f.child("forward", errors), errors);
    f.end(errors);
    if errors.0.len() > before {
        return None;
    }
    Some(RouteConfig {
        name: name?,
        host,
        path_prefix,
        methods,
        upstream: upstream?,
        upstream_protocol,
        strip_prefix,
        auth: auth?,
        cors,
        forward_claims,
        forward_token,
        assertion,
    })
}

fn check_prefix(prefix: &str, path: &str, errors: &mut Errors) {
    if !prefix.starts_with('/') {
        errors.push(path, "must start with '/'");
        return;
    }
    match crate::path::normalize_path(prefix, crate::path::PathPolicy::default()) {
        Ok(n) if n == prefix => {}
        Ok(n) => errors.push(
            path,
            format!(
                "must be written normalized, as {n:?}: requests are matched after normalization"
            ),
        ),
        Err(why) => errors.push(path, format!("is not a safe path ({})", why.as_str())),
    }
    if prefix.contains(';') || prefix.contains('?') || prefix.contains('#') {
        errors.push(path, "must not contain ';', '?' or '#'");
    }
}

fn host_match(text: &str, path: &str, errors: &mut Errors) -> Option<HostMatch> {
    let lower = text.to_ascii_lowercase();
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        errors.push(
            path,
            format!("{text:?} is not a host name or *.suffix pattern (no port, no scheme)"),
        );
        return None;
    }
    Some(if suffix {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_string())
    })
}

fn upstream(text: &str, path: &str, errors: &mut Errors) -> Option<Upstream> {
    let uri: Uri = match text.parse() {
        Ok(u) => u,
        Err(_) => {
            errors.push(
                path,
                format!("{text:?} is not a URL like http://orders.internal:8080"),
            );
            return None;
        }
    };
    let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
        errors.push(
            path,
            format!("{text:?} needs a scheme and a host, e.g. http://orders.internal:8080"),
        );
        return None;
    };
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        errors.push(path, "scheme must be http or https");
        return None;
    }
    if authority.as_str().contains('@') {
        errors.push(path, "must not carry credentials");
        return None;
    }
    if uri.query().is_some() {
        errors.push(path, "must not carry a query");
        return None;
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    // An authority that parsed is visible ASCII, so it is always a valid header value.
    let Ok(host_header) = http::HeaderValue::from_str(authority.as_str()) else {
        errors.push(path, "host is not a valid Host header value");
        return None;
    };
    Some(Upstream {
        uri,
        scheme,
        authority,
        base_path,
        host_header,
    })
}

fn route_auth(
    f: &mut Fields,
    providers: &Providers,
    errors: &mut Errors,
    warnings: &mut Errors,
) -> Option<RouteAuth> {
    let path = f.path_of("auth");
    match f.value("auth") {
        None => {
            errors.push(&path, "is required: name the providers that may call this route, or write `auth: anonymous` to make it public");
            None
        }
        Some(Value::String(s)) if s == "anonymous" => Some(RouteAuth::Anonymous),
        Some(Value::String(s)) => {
            errors.push(&path, format!("{s:?} is not a keyword; use `anonymous` or a map with providers/audience/require"));
            None
        }
        Some(v @ Value::Mapping(_)) => protected_auth(
            &mut Fields::of(Some(v), path, errors),
            providers,
            errors,
            warnings,
        )
        .map(RouteAuth::Protected),
        Some(other) => {
            errors.push(
                &path,
                format!("must be `anonymous` or a map, found {}", describe(other)),
            );
            None
        }
    }
}

fn protected_auth(
    f: &mut Fields,
    providers: &Providers,
    errors: &mut Errors,
    warnings: &mut Errors,
) -> Option<ProtectedAuth> {
    let before = errors.0.len();
    let Providers {
        compiled: providers,
        broken,
    } = providers;
    // A broken provider already has its errors; the route adds none for it.
    let mut names_broken = false;
    let chosen: Vec<usize> = match f.strings("providers", errors) {
        Some(names) => names
            .into_iter()
            .filter_map(
                |(name, path)| match providers.iter().position(|p| p.name == name) {
                    Some(i) => Some(i),
                    None if broken.contains(&name) => {
                        names_broken = true;
                        None
                    }
                    None => {
                        errors.push(&path, format!("no provider named {name:?}"));
                        None
                    }
                },
            )
            .collect(),
        None => {
            names_broken = !broken.is_empty();
            if providers.len() > 1 {
                warnings.push(
                    &f.path_of("providers"),
                    format!("not set: every one of the {} providers may authenticate this route; name the ones that should", providers.len()),
                );
            }
            (0..providers.len()).collect()
        }
    };
    if chosen.is_empty() && errors.0.len() == before && !names_broken {
        errors.push(
            &f.path_of("providers"),
            "no provider can authenticate this route; define one under providers",
        );
    }
    let audience = f.string("audience", errors);
    if let Some(aud) = &audience {
        let narrows = chosen
            .iter()
            .all(|&i| providers[i].audiences.is_empty() || providers[i].audiences.contains(aud));
        if !narrows {
            errors.push(
                &f.path_of("audience"),
                format!("{aud:?} is not among the audiences of every provider of this route"),
            );
        }
    } else if chosen.iter().any(|&i| providers[i].audiences.is_empty()) {
        warnings.push(&f.path_of("audience"), "no audience is checked on this route: a token minted for any other service of the same issuer passes");
    }
    let require = match f.list("require", errors) {
        Some(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                requirement(
                    &mut Fields::of(Some(item), index(&f.path_of("require"), i), errors),
                    errors,
                )
            })
            .collect(),
        None => Vec::new(),
    };
    let require_binding = super::binding::require_binding(f, errors);
    let optional_path = f.path_of("optional");
    let optional = f.bool("optional", errors).unwrap_or(false);
    if optional && !require.is_empty() {
        errors.push(
            &optional_path,
            "cannot be combined with require: a request without a token would pass rules it never met",
        );
    }
    let token_from = super::browser::token_from(f, errors);
    f.end(errors);
    Some(ProtectedAuth {
        providers: chosen,
        audience,
        require,
        require_binding,
        optional,
        token_from,
    })
}

fn requirement(f: &mut Fields, errors: &mut Errors) -> Option<Requirement> {
    let claim_path_text = f.path_of("claim");
    let claim = f
        .required_string("claim", errors)
        .and_then(|c| claim_path(&c, &claim_path_text, errors));
    let any_of = f
        .strings("any_of", errors)
        .map(|l| l.into_iter().map(|(s, _)| s).collect::<Vec<_>>());
    let all_of = f
        .strings("all_of", errors)
        .map(|l| l.into_iter().map(|(s, _)| s).collect::<Vec<_>>());
    if any_of.is_none() && all_of.is_none() {
        errors.push(&f.path, "needs any_of or all_of");
    }
    if any_of.as_ref().is_some_and(|l| l.is_empty()) {
        errors.push(
            &f.path_of("any_of"),
            "must not be empty: an empty any_of could never hold",
        );
    }
    if all_of.as_ref().is_some_and(|l| l.is_empty()) {
        errors.push(
            &f.path_of("all_of"),
            "must not be empty: an empty all_of would always hold",
        );
    }
    f.end(errors);
    Some(Requirement {
        claim: claim?,
        any_of: any_of.unwrap_or_default(),
        all_of: all_of.unwrap_or_default(),
    })
}

fn forward(
    f: &mut Fields,
    errors: &mut Errors,
) -> (Vec<ClaimHeader>, TokenForwarding, Option<AssertionForward>) {
    let mut claims = Vec::new();
    let mut seen = HashSet::new();
    for (claim, value, path) in f.entries("claims", errors).unwrap_or_default() {
        let Some(claim) = claim_path(&claim, &path, errors) else {
            continue;
        };
        let Value::String(header_text) = value else {
            errors.push(
                &path,
                format!("must be a header name, found {}", describe(value)),
            );
            continue;
        };
        let header = match HeaderName::from_bytes(header_text.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                errors.push(&path, format!("{header_text:?} is not a valid header name"));
                continue;
            }
        };
        if RESERVED_HEADERS.contains(&header.as_str()) {
            errors.push(
                &path,
                format!("{header_text:?} is a header the gateway manages itself"),
            );
            continue;
        }
        if !seen.insert(header.clone()) {
            errors.push(
                &path,
                format!("header {header_text:?} is already fed by another claim"),
            );
            continue;
        }
        claims.push(ClaimHeader { claim, header });
    }
    let token = match f.string("token", errors).as_deref() {
        None | Some("strip") => TokenForwarding::Strip,
        Some("forward") => TokenForwarding::Forward,
        Some(other) => {
            errors.push(
                &f.path_of("token"),
                format!("{other:?} is not one of strip, forward"),
            );
            TokenForwarding::Strip
        }
    };
    let assertion = super::assertion::forward_assertion(
        &mut f.child("assertion", errors),
        &claims,
        RESERVED_HEADERS,
        errors,
    );
    f.end(errors);
    (claims, token, assertion)
}

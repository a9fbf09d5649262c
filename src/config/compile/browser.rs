//! What browsers and other non-curl clients need: `auth.token_from`, `routes[].cors` and
//! `server.resource_metadata` (RFC 9728).

use http::header::{HeaderName, HeaderValue};
use http::Method;

use crate::config::yaml::{Errors, Fields};
use crate::config::*;

/// `auth.token_from`: `header`, `cookie:NAME`, `query:NAME`; `[header]` when absent.
pub(super) fn token_from(f: &mut Fields, errors: &mut Errors) -> Vec<TokenSource> {
    let Some(items) = f.strings("token_from", errors) else {
        return vec![TokenSource::Header];
    };
    if items.is_empty() {
        errors.push(
            &f.path_of("token_from"),
            "must name at least one source (omit it for the Authorization header)",
        );
    }
    let mut sources: Vec<TokenSource> = Vec::new();
    for (text, path) in items {
        let source = match text.split_once(':') {
            None if text == "header" => TokenSource::Header,
            Some(("cookie", name)) if is_token(name) => TokenSource::Cookie(name.to_string()),
            Some(("query", name)) if is_query_name(name) => TokenSource::Query(name.to_string()),
            _ => {
                errors.push(
                    &path,
                    format!("{text:?} is not header, cookie:NAME or query:NAME"),
                );
                continue;
            }
        };
        if sources.contains(&source) {
            errors.push(&path, format!("{text:?} is listed twice"));
            continue;
        }
        sources.push(source);
    }
    sources
}

/// A cookie name is an RFC 9110 token.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A query parameter name the gateway can match without decoding it.
fn is_query_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// `routes[].cors`.
pub(super) fn cors(f: &mut Fields, errors: &mut Errors) -> Option<CorsConfig> {
    if !f.is_present() {
        f.end(errors);
        return None;
    }
    let before = errors.0.len();
    let origins_path = f.path_of("allow_origins");
    let allow_origins = match f.strings("allow_origins", errors) {
        None => {
            errors.push(&origins_path, "is required: the origins whose pages may call this route");
            AllowedOrigins::List(Vec::new())
        }
        Some(list) if list.len() == 1 && list[0].0 == "*" => AllowedOrigins::Any,
        Some(list) => AllowedOrigins::List(
            list.into_iter()
                .filter_map(|(text, path)| match origin(&text) {
                    Some(o) => Some(o),
                    None => {
                        errors.push(
                            &path,
                            format!("{text:?} is not an origin like https://app.example.com (or \"*\" alone)"),
                        );
                        None
                    }
                })
                .collect(),
        ),
    };
    let methods: Vec<String> = match f.strings("allow_methods", errors) {
        Some(list) => list
            .into_iter()
            .filter_map(|(text, path)| {
                let upper = text.to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(_) if text.bytes().all(|b| b.is_ascii_alphabetic()) => Some(upper),
                    _ => {
                        errors.push(&path, format!("{text:?} is not an HTTP method"));
                        None
                    }
                }
            })
            .collect(),
        None => ["GET", "HEAD", "POST"].map(String::from).to_vec(),
    };
    let headers = |f: &mut Fields, key: &'static str, errors: &mut Errors| {
        f.strings(key, errors).map(|list| {
            list.into_iter()
                .filter_map(
                    |(text, path)| match HeaderName::from_bytes(text.as_bytes()) {
                        Ok(name) => Some(name.as_str().to_string()),
                        Err(_) => {
                            errors.push(&path, format!("{text:?} is not a header name"));
                            None
                        }
                    },
                )
                .collect::<Vec<_>>()
        })
    };
    let allow_headers = headers(f, "allow_headers", errors);
    let expose_headers = headers(f, "expose_headers", errors);
    let credentials_path = f.path_of("allow_credentials");
    let allow_credentials = f.bool("allow_credentials", errors).unwrap_or(false);
    if allow_credentials && allow_origins == AllowedOrigins::Any {
        errors.push(
            &credentials_path,
            "cannot be combined with allow_origins: [\"*\"]: browsers refuse credentials to any origin; list the origins",
        );
    }
    let max_age = f.duration("max_age", errors);
    f.end(errors);
    if errors.0.len() > before {
        return None;
    }
    let joined = |list: &[String]| HeaderValue::from_str(&list.join(", ")).ok();
    Some(CorsConfig {
        allow_origins,
        allow_methods: joined(&methods)?,
        allow_headers: allow_headers.as_deref().and_then(joined),
        expose_headers: expose_headers.as_deref().and_then(joined),
        allow_credentials,
        max_age: max_age.map(|d| HeaderValue::from(d.as_secs())),
    })
}

/// A serialized origin, lower-cased: `scheme://host[:port]`, nothing else.
fn origin(text: &str) -> Option<String> {
    let uri: http::Uri = text.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    let plain = uri
        .path_and_query()
        .is_none_or(|pq| pq.as_str().is_empty() || pq.as_str() == "/")
        && !text.ends_with('/');
    (matches!(scheme, "http" | "https") && plain && !authority.as_str().contains('@'))
        .then(|| format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()))
}

/// `server.resource_metadata`: rendered whole here, served as it is.
pub(super) fn resource_metadata(f: &mut Fields, errors: &mut Errors) -> Option<ResourceMetadata> {
    if !f.is_present() {
        f.end(errors);
        return None;
    }
    let resource_path = f.path_of("resource");
    let resource = f.required_string("resource", errors);
    let servers = f
        .strings("authorization_servers", errors)
        .unwrap_or_default()
        .into_iter()
        .map(|(s, _)| s)
        .collect::<Vec<_>>();
    let scopes = f
        .strings("scopes_supported", errors)
        .map(|l| l.into_iter().map(|(s, _)| s).collect::<Vec<_>>());
    f.end(errors);
    let resource = resource?;
    let Some((origin, path)) = https_resource(&resource) else {
        errors.push(
            &resource_path,
            format!("{resource:?} is not an https:// URL without query or fragment"),
        );
        return None;
    };
    // RFC 9728 3.1: the well-known segment goes between the host and the resource's path.
    let well_known = format!("/.well-known/oauth-protected-resource{path}");
    let mut doc = serde_json::json!({
        "resource": resource,
        "authorization_servers": servers,
        "bearer_methods_supported": ["header"],
    });
    if let Some(scopes) = scopes {
        doc["scopes_supported"] = serde_json::json!(scopes);
    }
    Some(ResourceMetadata {
        url: format!("{origin}{well_known}"),
        path: well_known,
        json: doc.to_string(),
    })
}

/// `https://host[:port]` and the path (empty for `/`), for an https URL without query or
/// fragment.
fn https_resource(text: &str) -> Option<(String, String)> {
    if text.contains('#') {
        return None;
    }
    let uri: http::Uri = text.parse().ok()?;
    if uri.scheme_str() != Some("https") || uri.query().is_some() {
        return None;
    }
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let path = uri.path().trim_end_matches('/');
    Some((
        format!("https://{}", authority.as_str().to_ascii_lowercase()),
        path.to_string(),
    ))
}

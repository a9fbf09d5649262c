//! `server:`: listener, TLS, trusted proxies, limits, path and header policies.

use std::path::Path;
use std::time::Duration;

use super::socket_addr;
use crate::config::yaml::{Errors, Fields};
use crate::config::*;

pub(super) fn server(
    f: &mut Fields,
    base: &Path,
    errors: &mut Errors,
    warnings: &mut Errors,
) -> Option<ServerConfig> {
    let listen = socket_addr(f, "listen", "0.0.0.0:8443", errors);
    let mut tls_fields = f.child("tls", errors);
    let tls = if tls_fields.is_present() {
        let cert = tls_fields.required_string("cert_file", errors);
        let key = tls_fields.required_string("key_file", errors);
        let hsts_max_age = tls_fields.duration("hsts_max_age", errors);
        let client_auth =
            super::binding::client_auth(&mut tls_fields.child("client_auth", errors), base, errors);
        tls_fields.end(errors);
        match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert_file: base.join(cert),
                key_file: base.join(key),
                hsts_max_age,
                client_auth,
            }),
            _ => None,
        }
    } else {
        tls_fields.end(errors);
        None
    };
    let insecure_path = f.path_of("insecure_plaintext");
    let insecure = f.bool("insecure_plaintext", errors).unwrap_or(false);
    if tls.is_none() && !insecure && !errors.0.iter().any(|e| e.path.starts_with("server.tls")) {
        errors.push(
            &f.path_of("tls"),
            "is required: set tls.cert_file and tls.key_file, or insecure_plaintext: true to serve without TLS",
        );
    }
    if tls.is_some() && insecure {
        errors.push(&insecure_path, "cannot be combined with server.tls");
    }
    if insecure && tls.is_none() {
        warnings.push(
            &insecure_path,
            "serving without TLS: tokens travel in clear text",
        );
    }
    let trusted_proxies = f
        .strings("trusted_proxies", errors)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(text, path)| match parse_net(&text) {
            Some(net) => Some(net),
            None => {
                errors.push(
                    &path,
                    format!("{text:?} is not an IP address or CIDR block"),
                );
                None
            }
        })
        .collect();
    let limits = limits(&mut f.child("limits", errors), errors);
    let path = path_policy(&mut f.child("path", errors), errors);
    let headers_with_underscores = underscore_headers(f, errors);
    let resource_metadata =
        super::browser::resource_metadata(&mut f.child("resource_metadata", errors), errors);
    f.end(errors);
    Some(ServerConfig {
        listen: listen?,
        tls,
        trusted_proxies,
        limits,
        path,
        headers_with_underscores,
        resource_metadata,
    })
}

fn path_policy(f: &mut Fields, errors: &mut Errors) -> PathPolicy {
    let d = PathPolicy::default();
    let policy = PathPolicy {
        merge_slashes: f.bool("merge_slashes", errors).unwrap_or(d.merge_slashes),
        case_insensitive: f
            .bool("case_insensitive", errors)
            .unwrap_or(d.case_insensitive),
    };
    f.end(errors);
    policy
}

fn underscore_headers(f: &mut Fields, errors: &mut Errors) -> UnderscoreHeaders {
    match f.string("headers_with_underscores", errors).as_deref() {
        None | Some("drop") => UnderscoreHeaders::Drop,
        Some("reject") => UnderscoreHeaders::Reject,
        Some("allow") => UnderscoreHeaders::Allow,
        Some(other) => {
            errors.push(
                &f.path_of("headers_with_underscores"),
                format!("{other:?} is not one of drop, reject, allow"),
            );
            UnderscoreHeaders::Drop
        }
    }
}

pub(super) fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

fn limits(f: &mut Fields, errors: &mut Errors) -> Limits {
    let d = Limits::default();
    let positive_usize = |f: &mut Fields,
                          key: &'static str,
                          min: u64,
                          default: usize,
                          errors: &mut Errors|
     -> usize {
        match f.uint(key, errors) {
            Some(n) if n >= min && n <= u32::MAX as u64 => n as usize,
            Some(_) => {
                errors.push(
                    &f.path_of(key),
                    format!("must be between {min} and {}", u32::MAX),
                );
                default
            }
            None => default,
        }
    };
    let max_header_bytes = positive_usize(f, "max_header_bytes", 1024, d.max_header_bytes, errors);
    // The default token limit follows a lower header limit: a token can never be longer than the
    // headers that carry it, and setting one limit alone must not make the file invalid.
    let explicit_token_limit = f.has("max_token_bytes");
    let max_token_bytes = positive_usize(
        f,
        "max_token_bytes",
        64,
        d.max_token_bytes.min(max_header_bytes),
        errors,
    );
    let max_body_bytes = f.uint("max_body_bytes", errors).unwrap_or(d.max_body_bytes);
    let nonzero =
        |f: &mut Fields, key: &'static str, default: Duration, errors: &mut Errors| match f
            .duration(key, errors)
        {
            Some(t) if t.is_zero() => {
                errors.push(&f.path_of(key), "must be longer than 0s");
                default
            }
            Some(t) => t,
            None => default,
        };
    let header_read_timeout = nonzero(f, "header_read_timeout", d.header_read_timeout, errors);
    let request_timeout = nonzero(f, "request_timeout", d.request_timeout, errors);
    let upstream_connect_timeout = nonzero(
        f,
        "upstream_connect_timeout",
        d.upstream_connect_timeout,
        errors,
    );
    let max_concurrent_streams = match f.uint("max_concurrent_streams", errors) {
        Some(n) if (1..=65_535).contains(&n) => n as u32,
        Some(_) => {
            errors.push(
                &f.path_of("max_concurrent_streams"),
                "must be between 1 and 65535",
            );
            d.max_concurrent_streams
        }
        None => d.max_concurrent_streams,
    };
    let auth_failures_per_minute = match f.uint("auth_failures_per_minute", errors) {
        Some(n) if (1..=u32::MAX as u64).contains(&n) => Some(n as u32),
        Some(_) => {
            errors.push(
                &f.path_of("auth_failures_per_minute"),
                "must be at least 1 (omit it to disable the limit)",
            );
            None
        }
        None => None,
    };
    let idle_timeout = nonzero(f, "idle_timeout", d.idle_timeout, errors);
    let max_connections = positive_usize(f, "max_connections", 1, d.max_connections, errors);
    let max_connections_per_ip = positive_usize(
        f,
        "max_connections_per_ip",
        1,
        d.max_connections_per_ip,
        errors,
    );
    if max_connections_per_ip > max_connections {
        errors.push(
            &f.path_of("max_connections_per_ip"),
            "cannot exceed max_connections",
        );
    }
    if explicit_token_limit && max_token_bytes > max_header_bytes {
        errors.push(
            &f.path_of("max_token_bytes"),
            "cannot exceed max_header_bytes",
        );
    }
    f.end(errors);
    Limits {
        max_header_bytes,
        max_token_bytes,
        max_body_bytes,
        header_read_timeout,
        request_timeout,
        upstream_connect_timeout,
        max_concurrent_streams,
        auth_failures_per_minute,
        idle_timeout,
        max_connections,
        max_connections_per_ip,
    }
}

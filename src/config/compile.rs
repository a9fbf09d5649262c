//! Turns the YAML document into a checked `Config`, collecting every error with its path.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::{Method, Uri};
use serde_yaml::Value;

use super::yaml::{describe, index, parse_document, Errors, Fields};
use super::{
    AdminConfig, AdminTls, ClaimHeader, Config, ConfigError, HostMatch, JwksSettings, KeysSource,
    Limits, LogConfig, LogFormat, LogLevel, PathPolicy, ProtectedAuth, ProviderConfig,
    RevocationConfig, RouteAuth, RouteConfig, Secret, ServerConfig, TlsConfig, TokenCacheConfig,
    TokenForwarding, UnderscoreHeaders, Upstream,
};
use crate::algorithm::Algorithm;
use crate::claims::ClaimPath;
use crate::rules::Requirement;

/// Shortest key an HMAC provider may use: the contract's floor, raised by RFC 7518 3.2 to the
/// hash size of the strongest HS algorithm listed (48 bytes for HS384, 64 for HS512).
const MIN_SHARED_SECRET_BYTES: usize = 32;

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
];

/// Compiles a YAML document; `base` is the folder relative file paths resolve against.
pub fn compile_str(text: &str, base: &Path) -> Result<Config, Vec<ConfigError>> {
    let doc = parse_document(text).map_err(|e| vec![e])?;
    let mut errors = Errors::default();
    let mut warnings = Errors::default();
    let mut root = Fields::of(Some(&doc), String::new(), &mut errors);
    if !root.is_present() && errors.0.is_empty() {
        errors.push(
            "",
            "the file is empty; see the README for a minimal gateway.yaml",
        );
    }

    let server = server(
        &mut root.child("server", &mut errors),
        base,
        &mut errors,
        &mut warnings,
    );
    let token_cache = token_cache(&mut root.child("token_cache", &mut errors), &mut errors);
    let log = log(&mut root.child("log", &mut errors), &mut errors);
    let admin = admin(&mut root.child("admin", &mut errors), base, &mut errors);
    let providers = providers(&mut root, &mut errors);
    let routes = routes(&mut root, &providers, &mut errors, &mut warnings);
    let revocation = revocation(
        &mut root.child("revocation", &mut errors),
        base,
        &mut errors,
    );
    root.end(&mut errors);

    if !errors.0.is_empty() {
        return Err(errors.0);
    }
    match (server, admin) {
        (Some(server), Some(admin)) => {
            if server.listen == admin.listen {
                return Err(vec![ConfigError {
                    path: "admin.listen".into(),
                    message: "must differ from server.listen: the admin API is never served on the public listener".into(),
                }]);
            }
            Ok(Config {
                server,
                token_cache,
                log,
                admin,
                providers: providers.into_iter().map(Arc::new).collect(),
                routes,
                revocation,
                warnings: warnings.0,
            })
        }
        _ => Err(vec![ConfigError {
            path: String::new(),
            message: "invalid configuration".into(),
        }]),
    }
}

fn socket_addr(
    fields: &mut Fields,
    key: &'static str,
    default: &str,
    errors: &mut Errors,
) -> Option<SocketAddr> {
    let path = fields.path_of(key);
    let text = fields
        .string(key, errors)
        .unwrap_or_else(|| default.to_string());
    match text.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.push(
                &path,
                format!("{text:?} is not an address like 0.0.0.0:8443 or [::1]:8443"),
            );
            None
        }
    }
}

fn server(
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
        tls_fields.end(errors);
        match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert_file: base.join(cert),
                key_file: base.join(key),
                hsts_max_age,
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
    f.end(errors);
    Some(ServerConfig {
        listen: listen?,
        tls,
        trusted_proxies,
        limits,
        path,
        headers_with_underscores,
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

fn parse_net(text: &str) -> Option<ipnet::IpNet> {
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

fn token_cache(f: &mut Fields, errors: &mut Errors) -> TokenCacheConfig {
    let max_entries = f.uint("max_entries", errors).unwrap_or(100_000);
    f.end(errors);
    TokenCacheConfig { max_entries }
}

fn log(f: &mut Fields, errors: &mut Errors) -> LogConfig {
    let level = match f.string("level", errors).as_deref() {
        None | Some("info") => LogLevel::Info,
        Some("error") => LogLevel::Error,
        Some("warn") => LogLevel::Warn,
        Some("debug") => LogLevel::Debug,
        Some("trace") => LogLevel::Trace,
        Some(other) => {
            errors.push(
                &f.path_of("level"),
                format!("{other:?} is not one of error, warn, info, debug, trace"),
            );
            LogLevel::Info
        }
    };
    let format = match f.string("format", errors).as_deref() {
        None | Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => {
            errors.push(
                &f.path_of("format"),
                format!("{other:?} is not one of json, text"),
            );
            LogFormat::Json
        }
    };
    f.end(errors);
    LogConfig { level, format }
}

fn admin(f: &mut Fields, base: &Path, errors: &mut Errors) -> Option<AdminConfig> {
    let listen = socket_addr(f, "listen", "127.0.0.1:9901", errors);
    let mut tls_fields = f.child("tls", errors);
    let tls = if tls_fields.is_present() {
        let cert = tls_fields.required_string("cert_file", errors);
        let key = tls_fields.required_string("key_file", errors);
        match (cert, key) {
            (Some(cert), Some(key)) => Some(AdminTls {
                cert_file: base.join(cert),
                key_file: base.join(key),
            }),
            _ => None,
        }
    } else {
        None
    };
    tls_fields.end(errors);
    let token_path = f.path_of("token_env");
    let token = f
        .string("token_env", errors)
        .and_then(|var| match read_env_secret(&var) {
            Ok(bytes) if bytes.len() >= 16 => Some(Secret(bytes)),
            Ok(_) => {
                errors.push(
                    &token_path,
                    format!("environment variable {var} must hold at least 16 bytes"),
                );
                None
            }
            Err(why) => {
                errors.push(&token_path, format!("environment variable {var} {why}"));
                None
            }
        });
    f.end(errors);
    Some(AdminConfig {
        listen: listen?,
        tls,
        token,
    })
}

fn read_env_secret(var: &str) -> Result<Vec<u8>, &'static str> {
    use std::os::unix::ffi::OsStringExt;
    match std::env::var_os(var) {
        Some(v) if v.is_empty() => Err("is empty"),
        Some(v) => Ok(v.into_vec()),
        None => Err("is not set"),
    }
}

fn providers(root: &mut Fields, errors: &mut Errors) -> Vec<ProviderConfig> {
    let Some(items) = root.list("providers", errors) else {
        return Vec::new();
    };
    let mut out: Vec<ProviderConfig> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index("providers", i);
        if let Some(p) = provider(&mut Fields::of(Some(item), path.clone(), errors), errors) {
            if out.iter().any(|o| o.name == p.name) {
                errors.push(
                    &format!("{path}.name"),
                    format!("duplicate provider name {:?}", p.name),
                );
            }
            if out.iter().any(|o| o.issuer == p.issuer) {
                errors.push(&format!("{path}.issuer"), "another provider already has this issuer; tokens choose their provider by `iss`");
            }
            out.push(p);
        }
    }
    out
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
        None if !f.has("algorithms") => errors.push(
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
    if has_hmac && shared_secret.is_none() && !f.has("shared_secret_env") {
        errors.push(&algorithms_path, "HS256/HS384/HS512 need shared_secret_env");
    }
    if !has_hmac && f.has("shared_secret_env") {
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
    if has_public && keys.is_none() && !f.has("jwks_url") && !discovery {
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

fn check_name(name: &str, path: &str, errors: &mut Errors) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        errors.push(
            path,
            "must be 1 to 64 characters of A-Z a-z 0-9 - _ . (it becomes a metric label)",
        );
    }
}

fn claim_path(text: &str, path: &str, errors: &mut Errors) -> Option<ClaimPath> {
    match ClaimPath::parse(text) {
        Ok(p) => Some(p),
        Err(why) => {
            errors.push(path, why);
            None
        }
    }
}

fn routes(
    root: &mut Fields,
    providers: &[ProviderConfig],
    errors: &mut Errors,
    warnings: &mut Errors,
) -> Vec<RouteConfig> {
    let Some(items) = root.list("routes", errors) else {
        errors.push("routes", "is required: at least one route");
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
        && crate::proxy::normalize::prefix_matches(&later.path_prefix, &earlier.path_prefix)
}

fn route(
    f: &mut Fields,
    providers: &[ProviderConfig],
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
    let upstream = f
        .required_string("upstream", errors)
        .and_then(|u| upstream(&u, &upstream_path, errors));
    let strip_path = f.path_of("strip_prefix");
    let strip_prefix = f.string("strip_prefix", errors);
    if let Some(s) = &strip_prefix {
        check_prefix(s, &strip_path, errors);
        if !crate::proxy::normalize::prefix_matches(&path_prefix, s) {
            errors.push(&strip_path, "must be a prefix of match.path_prefix, or some matched paths could not be stripped");
        }
    }

    let auth = route_auth(f, providers, errors, warnings);
    let (forward_claims, forward_token) = forward(&mut f.child("forward", errors), errors);
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
        strip_prefix,
        auth: auth?,
        forward_claims,
        forward_token,
    })
}

fn check_prefix(prefix: &str, path: &str, errors: &mut Errors) {
    if !prefix.starts_with('/') {
        errors.push(path, "must start with '/'");
        return;
    }
    match crate::proxy::normalize::normalize_path(prefix) {
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
    providers: &[ProviderConfig],
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
    providers: &[ProviderConfig],
    errors: &mut Errors,
    warnings: &mut Errors,
) -> Option<ProtectedAuth> {
    let before = errors.0.len();
    let chosen: Vec<usize> = match f.strings("providers", errors) {
        Some(names) => names
            .into_iter()
            .filter_map(
                |(name, path)| match providers.iter().position(|p| p.name == name) {
                    Some(i) => Some(i),
                    None => {
                        errors.push(&path, format!("no provider named {name:?}"));
                        None
                    }
                },
            )
            .collect(),
        None => {
            if providers.len() > 1 {
                warnings.push(
                    &f.path_of("providers"),
                    format!("not set: every one of the {} providers may authenticate this route; name the ones that should", providers.len()),
                );
            }
            (0..providers.len()).collect()
        }
    };
    if chosen.is_empty() && errors.0.len() == before {
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
    f.end(errors);
    Some(ProtectedAuth {
        providers: chosen,
        audience,
        require,
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

fn forward(f: &mut Fields, errors: &mut Errors) -> (Vec<ClaimHeader>, TokenForwarding) {
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
    f.end(errors);
    (claims, token)
}

fn revocation(f: &mut Fields, base: &Path, errors: &mut Errors) -> RevocationConfig {
    let backend = f.string("backend", errors);
    let file = f.string("file", errors);
    let url_path = f.path_of("redis_url");
    let redis_url = f.string("redis_url", errors);
    let out = match backend.as_deref() {
        None | Some("memory") => {
            if redis_url.is_some() {
                errors.push(&url_path, "only applies to backend: redis");
            }
            RevocationConfig::Memory {
                file: file.map(|p| base.join(p)),
            }
        }
        Some("redis") => {
            if file.is_some() {
                errors.push(&f.path_of("file"), "only applies to backend: memory");
            }
            match redis_url {
                Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                    RevocationConfig::Redis { url }
                }
                Some(_) => {
                    errors.push(&url_path, "must be a redis:// or rediss:// URL");
                    RevocationConfig::Memory { file: None }
                }
                None => {
                    errors.push(&url_path, "is required with backend: redis");
                    RevocationConfig::Memory { file: None }
                }
            }
        }
        Some(other) => {
            errors.push(
                &f.path_of("backend"),
                format!("{other:?} is not one of memory, redis"),
            );
            RevocationConfig::Memory { file: None }
        }
    };
    f.end(errors);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid file; `extra` is spliced in at the top level, `provider` and `route`
    /// into the one provider and the one route.
    fn config(server: &str, provider: &str, route: &str) -> String {
        format!(
            r#"
server:
  listen: "127.0.0.1:8443"
  insecure_plaintext: true
{server}
providers:
  - name: corp
    issuer: "https://idp.test"
    jwks_url: "https://idp.test/certs"
    algorithms: [RS256]
    audiences: [api]
{provider}
routes:
  - name: r
    match:
      path_prefix: "/orders"
    upstream: "http://127.0.0.1:9"
    auth:
      providers: [corp]
{route}
"#
        )
    }

    fn errors_of(yaml: &str) -> Vec<String> {
        match compile_str(yaml, Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn compiled(yaml: &str) -> Config {
        let mut config = compile_str(yaml, Path::new(".")).unwrap_or_else(|e| panic!("{e:?}"));
        // Every config here serves plaintext; that warning is not what these tests look at.
        config
            .warnings
            .retain(|w| w.path != "server.insecure_plaintext");
        config
    }

    #[test]
    fn path_and_underscore_policies_default_and_parse() {
        let c = compiled(&config("", "", ""));
        assert_eq!(c.server.path, PathPolicy::default());
        assert!(c.server.path.merge_slashes && !c.server.path.case_insensitive);
        assert_eq!(c.server.headers_with_underscores, UnderscoreHeaders::Drop);
        let c = compiled(&config(
            "  path: {merge_slashes: false, case_insensitive: true}\n  headers_with_underscores: reject",
            "",
            "",
        ));
        assert!(!c.server.path.merge_slashes && c.server.path.case_insensitive);
        assert_eq!(c.server.headers_with_underscores, UnderscoreHeaders::Reject);
        assert_eq!(
            errors_of(&config("  headers_with_underscores: keep", "", "")),
            ["server.headers_with_underscores: \"keep\" is not one of drop, reject, allow"]
        );
        assert_eq!(
            errors_of(&config("  path: {merge: true}", "", "")),
            ["server.path.merge: unknown key"]
        );
    }

    #[test]
    fn token_limit_follows_a_lower_header_limit() {
        let c = compiled(&config("  limits: {max_header_bytes: 4096}", "", ""));
        assert_eq!(c.server.limits.max_token_bytes, 4096);
        let c = compiled(&config("  limits: {max_header_bytes: 65536}", "", ""));
        assert_eq!(c.server.limits.max_token_bytes, 8192);
        assert_eq!(
            errors_of(&config(
                "  limits: {max_header_bytes: 4096, max_token_bytes: 8192}",
                "",
                ""
            )),
            ["server.limits.max_token_bytes: cannot exceed max_header_bytes"]
        );
    }

    #[test]
    fn connection_limits_default_and_check() {
        let c = compiled(&config("", "", ""));
        assert_eq!(c.server.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.server.limits.max_connections, 10_000);
        assert_eq!(c.server.limits.max_connections_per_ip, 512);
        assert_eq!(
            errors_of(&config(
                "  limits: {max_connections: 10, max_connections_per_ip: 20, idle_timeout: 0s}",
                "",
                ""
            )),
            [
                "server.limits.idle_timeout: must be longer than 0s",
                "server.limits.max_connections_per_ip: cannot exceed max_connections",
            ]
        );
    }

    #[test]
    fn insecure_jwks_http_only_to_loopback() {
        for url in [
            "http://127.0.0.1:8080/certs",
            "http://127.9.9.9/certs",
            "http://[::1]:8080/certs",
            "http://localhost/certs",
        ] {
            let yaml = config("", "    allow_insecure_jwks_http: true", "")
                .replace("https://idp.test/certs", url);
            assert!(errors_of(&yaml).is_empty(), "{url}: {:?}", errors_of(&yaml));
        }
        for url in [
            "http://idp.test/certs",
            "http://10.0.0.1/certs",
            "http://localhost.evil.test/certs",
        ] {
            let yaml = config("", "    allow_insecure_jwks_http: true", "")
                .replace("https://idp.test/certs", url);
            let errors = errors_of(&yaml);
            assert!(
                errors[0].starts_with("providers[0].jwks_url: allow_insecure_jwks_http permits http:// only to a loopback host"),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn min_refresh_below_one_second_is_refused() {
        for (value, ok) in [("0s", false), ("1s", true), ("30s", true)] {
            let yaml = config("", &format!("    jwks: {{min_refresh: {value}}}"), "");
            let errors = errors_of(&yaml);
            assert_eq!(errors.is_empty(), ok, "{value}: {errors:?}");
            if !ok {
                assert!(errors[0].starts_with("providers[0].jwks.min_refresh: must be at least 1s"));
            }
        }
    }

    #[test]
    fn trailing_slash_prefix_is_trimmed_with_a_warning() {
        let yaml = config("", "", "").replace("\"/orders\"", "\"/orders/\"");
        let c = compiled(&yaml);
        assert_eq!(c.routes[0].path_prefix, "/orders");
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert_eq!(c.warnings[0].path, "routes[0].match.path_prefix");
        let c = compiled(&config("", "", "").replace("\"/orders\"", "\"/\""));
        assert_eq!(c.routes[0].path_prefix, "/");
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn route_without_providers_warns_when_several_exist() {
        let two = config("", "", "")
            .replace("      providers: [corp]\n", "      audience: api\n")
            .replace(
                "routes:",
                "  - name: other\n    issuer: \"https://other.test\"\n    jwks_url: \"https://other.test/certs\"\n    algorithms: [ES256]\n    audiences: [api]\nroutes:",
            );
        let c = compiled(&two);
        let paths: Vec<&str> = c.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(paths, ["routes[0].auth.providers"]);
        let one = config("", "", "").replace("      providers: [corp]\n", "      audience: api\n");
        assert!(compiled(&one).warnings.is_empty());
    }

    #[test]
    fn admin_tls_resolves_files_against_the_config_folder() {
        let yaml = config("", "", "")
            + "admin:\n  listen: \"127.0.0.1:9901\"\n  tls: {cert_file: a.crt, key_file: a.key}\n";
        let c = compile_str(&yaml, Path::new("/etc/gw")).unwrap_or_else(|e| panic!("{e:?}"));
        let tls = c.admin.tls.expect("admin tls");
        assert_eq!(tls.cert_file, Path::new("/etc/gw/a.crt"));
        assert_eq!(tls.key_file, Path::new("/etc/gw/a.key"));
        let missing = config("", "", "") + "admin:\n  tls: {cert_file: a.crt}\n";
        assert_eq!(errors_of(&missing), ["admin.tls.key_file: is required"]);
    }
}

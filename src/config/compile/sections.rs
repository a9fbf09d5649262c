//! The small top-level sections: `token_cache:`, `log:`, `admin:`, `revocation:`.

use std::path::Path;

use super::{read_env_secret, socket_addr};
use crate::config::yaml::{Errors, Fields};
use crate::config::*;

pub(super) fn token_cache(f: &mut Fields, errors: &mut Errors) -> TokenCacheConfig {
    let max_entries = f.uint("max_entries", errors).unwrap_or(100_000);
    f.end(errors);
    TokenCacheConfig { max_entries }
}

pub(super) fn log(f: &mut Fields, errors: &mut Errors) -> LogConfig {
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

pub(super) fn admin(f: &mut Fields, base: &Path, errors: &mut Errors) -> Option<AdminConfig> {
    let listen = socket_addr(f, "listen", "127.0.0.1:9901", errors);
    let mut tls_fields = f.child("tls", errors);
    let tls = if tls_fields.is_present() {
        let cert = tls_fields.required_string("cert_file", errors);
        let key = tls_fields.required_string("key_file", errors);
        match (cert, key) {
            (Some(cert), Some(key)) => Some(CertFiles {
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

pub(super) fn revocation(f: &mut Fields, base: &Path, errors: &mut Errors) -> RevocationConfig {
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

pub(super) fn upstream_tls(
    f: &mut Fields,
    base: &Path,
    errors: &mut Errors,
) -> Option<UpstreamTls> {
    if !f.is_present() {
        f.end(errors);
        return None;
    }
    let ca_file = f.required_string("ca_file", errors);
    f.end(errors);
    ca_file.map(|ca| UpstreamTls {
        ca_file: base.join(ca),
    })
}

pub(super) fn forward_auth(
    f: &mut Fields,
    base: &Path,
    errors: &mut Errors,
) -> Option<ForwardAuthConfig> {
    if !f.is_present() {
        f.end(errors);
        return None;
    }
    let listen = socket_addr(f, "listen", "127.0.0.1:9902", errors);
    let tls = cert_pair(&mut f.child("tls", errors), base, errors);
    let trusted_proxies = match f.strings("trusted_proxies", errors) {
        None => vec![
            "127.0.0.0/8".parse().expect("a CIDR literal"),
            "::1/128".parse().expect("a CIDR literal"),
        ],
        Some(list) => list
            .into_iter()
            .filter_map(|(text, path)| match super::server::parse_net(&text) {
                Some(net) => Some(net),
                None => {
                    errors.push(
                        &path,
                        format!("{text:?} is not an IP address or CIDR block"),
                    );
                    None
                }
            })
            .collect(),
    };
    f.end(errors);
    Some(ForwardAuthConfig {
        listen: listen?,
        tls,
        trusted_proxies,
    })
}

/// `{cert_file, key_file}`, both required when the map is there.
fn cert_pair(f: &mut Fields, base: &Path, errors: &mut Errors) -> Option<CertFiles> {
    if !f.is_present() {
        f.end(errors);
        return None;
    }
    let cert = f.required_string("cert_file", errors);
    let key = f.required_string("key_file", errors);
    f.end(errors);
    Some(CertFiles {
        cert_file: base.join(cert?),
        key_file: base.join(key?),
    })
}

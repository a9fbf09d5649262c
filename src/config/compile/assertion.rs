//! `assertion:` (the gateway's issuer name and signing key) and `routes[].forward.assertion`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;

use crate::config::yaml::{Errors, Fields};
use crate::config::{AssertionConfig, AssertionForward, ClaimHeader, RouteConfig};
use crate::signing_key::AssertionKey;

/// Longest `ttl` accepted: an assertion is a proof of the hop, not a session.
const MAX_TTL: Duration = Duration::from_secs(3600);

pub(super) fn assertion(
    f: &mut Fields,
    base: &Path,
    errors: &mut Errors,
) -> Option<AssertionConfig> {
    if !f.is_present() {
        return None;
    }
    let issuer_path = f.path_of("issuer");
    let issuer = f.required_string("issuer", errors);
    if issuer.as_ref().is_some_and(|i| i.trim().is_empty()) {
        errors.push(&issuer_path, "must not be empty");
    }
    let key_path = f.path_of("signing_key_file");
    let key = f
        .required_string("signing_key_file", errors)
        .and_then(|file| {
            let file = base.join(file);
            match std::fs::read(&file) {
                Ok(pem) => match AssertionKey::from_pem(&pem) {
                    Ok(key) => Some((file, key)),
                    Err(why) => {
                        errors.push(&key_path, format!("{}: {why}", file.display()));
                        None
                    }
                },
                Err(e) => {
                    errors.push(&key_path, format!("cannot read {}: {e}", file.display()));
                    None
                }
            }
        });
    f.end(errors);
    let (signing_key_file, key) = key?;
    Some(AssertionConfig {
        issuer: issuer?,
        signing_key_file,
        key: Arc::new(key),
    })
}

/// `forward.assertion: {header, ttl}`; both have defaults, so `assertion: {}` asks for one.
pub(super) fn forward_assertion(
    f: &mut Fields,
    claims: &[ClaimHeader],
    reserved: &[&str],
    errors: &mut Errors,
) -> Option<AssertionForward> {
    if !f.is_present() {
        return None;
    }
    let header_path = f.path_of("header");
    let header_text = f
        .string("header", errors)
        .unwrap_or_else(|| "X-Gateway-Assertion".into());
    let header = match HeaderName::from_bytes(header_text.as_bytes()) {
        Ok(h) if reserved.contains(&h.as_str()) => {
            errors.push(
                &header_path,
                format!("{header_text:?} is a header the gateway manages itself"),
            );
            None
        }
        Ok(h) if claims.iter().any(|c| c.header == h) => {
            errors.push(
                &header_path,
                format!("{header_text:?} is already a claim header of this route"),
            );
            None
        }
        Ok(h) => Some(h),
        Err(_) => {
            errors.push(
                &header_path,
                format!("{header_text:?} is not a valid header name"),
            );
            None
        }
    };
    let ttl_path = f.path_of("ttl");
    let ttl = f.duration("ttl", errors).unwrap_or(Duration::from_secs(60));
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        errors.push(&ttl_path, "must be from 1s to 1h");
    }
    f.end(errors);
    Some(AssertionForward {
        header: header?,
        ttl,
    })
}

/// A route that asks for an assertion needs the key to sign it with. Run on routes that all
/// compiled, so their indexes are their YAML indexes.
pub(super) fn check_key_present(
    routes: &[RouteConfig],
    assertion: Option<&AssertionConfig>,
    errors: &mut Errors,
) {
    if assertion.is_some() {
        return;
    }
    for (i, route) in routes.iter().enumerate() {
        if route.assertion.is_some() {
            errors.push(
                &format!("routes[{i}].forward.assertion"),
                "needs a top-level assertion section (issuer, signing_key_file) to sign with",
            );
        }
    }
}

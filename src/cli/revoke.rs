//! `jwt-gateway revoke ...`: a client of the admin API's `/revocations`.

use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use super::{runtime, CliError};
use crate::config;
use crate::tls;

#[derive(Subcommand, Debug)]
pub enum RevokeCommand {
    /// Revoke one token by jti (until --exp), every token of --sub issued up to --not-before, or
    /// the token given with --token.
    Add {
        #[arg(long, requires = "exp", conflicts_with_all = ["sub", "not_before"])]
        jti: Option<String>,
        /// The token's exp (Unix seconds): the entry is kept until then.
        #[arg(long)]
        exp: Option<i64>,
        #[arg(long, requires = "not_before")]
        sub: Option<String>,
        /// Tokens of --sub with iat up to and including this (Unix seconds) are refused.
        #[arg(long = "not-before")]
        not_before: Option<i64>,
        /// Only for tokens of this issuer (default: every provider).
        #[arg(long)]
        iss: Option<String>,
        /// A token to revoke: the gateway verifies it and revokes its jti, for its issuer, until
        /// its exp. `-` reads it from stdin (keeps it out of the process list).
        #[arg(long, conflicts_with_all = ["jti", "exp", "sub", "not_before", "iss"])]
        token: Option<String>,
    },
    /// List the revocations in force.
    List,
    /// Remove a revocation by its id.
    Remove { id: String },
}

pub struct AdminTarget {
    pub base: String,
    pub token: Option<String>,
    /// With `admin.tls`, the certificates of its own chain are trusted too: the admin listener
    /// is often served with a private or self-signed certificate that no platform store holds.
    pub roots: Vec<reqwest::Certificate>,
}

/// The admin URL and token: flags first, else the config's `admin.listen` (`https://` with
/// `admin.tls`) and `admin.token_env`.
fn target(
    config_path: &Path,
    admin: Option<&str>,
    token_env: Option<&str>,
) -> Result<AdminTarget, CliError> {
    let loaded = if admin.is_none() || token_env.is_none() {
        Some(config::load(config_path)?)
    } else {
        None
    };
    let base = match (admin, &loaded) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, Some(c)) => {
            let mut addr = c.admin.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let scheme = if c.admin.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{addr}")
        }
        (None, None) => {
            return Err(CliError::Usage(
                "--admin is required without a config file".into(),
            ))
        }
    };
    let token = match (token_env, &loaded) {
        (Some(var), _) => std::env::var(var).ok(),
        (None, Some(c)) => c
            .admin
            .token
            .as_ref()
            .map(|s| String::from_utf8_lossy(&s.0).into_owned()),
        (None, None) => None,
    };
    let roots = match loaded.as_ref().and_then(|c| c.admin.tls.as_ref()) {
        Some(admin_tls) => tls::load_certs(&admin_tls.cert_file)
            .map_err(|e| CliError::Runtime(e.to_string()))?
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok())
            .collect(),
        None => Vec::new(),
    };
    Ok(AdminTarget { base, token, roots })
}

pub fn revoke(
    config_path: &Path,
    admin: Option<&str>,
    token_env: Option<&str>,
    command: RevokeCommand,
) -> Result<(), CliError> {
    let target = target(config_path, admin, token_env)?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .tls_certs_merge(target.roots.clone())
        .build()
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    let request = match command {
        RevokeCommand::Add {
            token: Some(token), ..
        } => client
            .post(format!("{}/revocations", target.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(json!({"token": token_argument(token)?}).to_string()),
        RevokeCommand::Add {
            jti: Some(jti),
            exp: Some(exp),
            iss,
            ..
        } => client
            .post(format!("{}/revocations", target.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(scoped(json!({"jti": jti, "exp": exp}), iss).to_string()),
        RevokeCommand::Add {
            sub: Some(sub),
            not_before: Some(nb),
            iss,
            ..
        } => client
            .post(format!("{}/revocations", target.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(scoped(json!({"sub": sub, "not_before": nb}), iss).to_string()),
        RevokeCommand::Add { .. } => {
            return Err(CliError::Usage(
                "revoke add needs --jti with --exp, --sub with --not-before, or --token".into(),
            ))
        }
        RevokeCommand::List => client.get(format!("{}/revocations", target.base)),
        RevokeCommand::Remove { id } => client.delete(format!("{}/revocations/{id}", target.base)),
    };
    let request = match &target.token {
        Some(t) => request.bearer_auth(t),
        None => request,
    };
    runtime()?.block_on(async move {
        let response = request.send().await.map_err(|e| {
            CliError::Runtime(format!(
                "cannot reach the admin API at {}: {}",
                target.base,
                e.without_url()
            ))
        })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            if !body.is_empty() {
                println!("{body}");
            }
            Ok(())
        } else {
            Err(CliError::Runtime(format!(
                "the admin API answered {status}: {}",
                body.trim()
            )))
        }
    })
}

fn scoped(mut rule: serde_json::Value, iss: Option<String>) -> serde_json::Value {
    if let (Some(iss), Some(obj)) = (iss, rule.as_object_mut()) {
        obj.insert("iss".into(), iss.into());
    }
    rule
}

/// The token itself, or `-`: read from stdin, surrounding whitespace trimmed.
fn token_argument(token: String) -> Result<String, CliError> {
    if token != "-" {
        return Ok(token);
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|e| CliError::Usage(format!("cannot read the token from stdin: {e}")))?;
    Ok(text.trim().to_string())
}

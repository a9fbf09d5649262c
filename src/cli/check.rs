//! `jwt-gateway check`: validate the config and print the route table.

use std::path::Path;

use super::CliError;
use crate::config::{self, Config, ConfigError, LoadError, RouteAuth};
use crate::tls::{self, TlsError};

pub fn check(config_path: &Path) -> Result<(), CliError> {
    let config = config::load(config_path)?;
    let (errors, file_warnings) = check_files(&config);
    if !errors.is_empty() {
        return Err(LoadError::Invalid {
            path: config_path.to_path_buf(),
            errors,
        }
        .into());
    }
    print!("{}", route_table(&config));
    for warning in config.warnings.iter().chain(&file_warnings) {
        println!("warning: {warning}");
    }
    println!(
        "{}: OK ({} providers, {} routes)",
        config_path.display(),
        config.providers.len(),
        config.routes.len()
    );
    Ok(())
}

/// The files the config names, read the way `run` will read them: a certificate or key that
/// exists but does not load is an error. A missing one is only a warning, since deployments
/// often mount them at start (a Kubernetes Secret) while `check` runs in CI without them.
fn check_files(config: &Config) -> (Vec<ConfigError>, Vec<ConfigError>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let Some(tls_config) = &config.server.tls else {
        return (errors, warnings);
    };
    let named = [
        ("server.tls.cert_file", &tls_config.cert_file),
        ("server.tls.key_file", &tls_config.key_file),
    ];
    let mut all_there = true;
    for (path, file) in named {
        if !file.exists() {
            all_there = false;
            warnings.push(ConfigError {
                path: path.to_string(),
                message: format!(
                    "{} does not exist; `run` exits 2 until it does",
                    file.display()
                ),
            });
        }
    }
    if all_there {
        if let Err(e) = tls::acceptor(tls_config) {
            let path = match e {
                TlsError::Certificate { .. }
                | TlsError::NoCertificate(_)
                | TlsError::Config(rustls::Error::InvalidCertificate(_)) => "server.tls.cert_file",
                TlsError::Key { .. } => "server.tls.key_file",
                TlsError::Config(_) => "server.tls",
            };
            errors.push(ConfigError {
                path: path.to_string(),
                message: e.to_string(),
            });
        }
    }
    (errors, warnings)
}

/// One line per route, in matching order.
pub fn route_table(config: &Config) -> String {
    let rows: Vec<[String; 6]> = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let methods = r.methods.as_ref().map_or("*".to_string(), |m| {
                m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
            });
            let auth = match &r.auth {
                RouteAuth::Anonymous => "anonymous".to_string(),
                RouteAuth::Protected(a) => {
                    let names: Vec<&str> = a
                        .providers
                        .iter()
                        .map(|&p| config.providers[p].name.as_str())
                        .collect();
                    let mut text = names.join(",");
                    if !a.require.is_empty() {
                        text.push_str(&format!(" +{} rule(s)", a.require.len()));
                    }
                    text
                }
            };
            [
                format!("{i}"),
                r.name.clone(),
                r.host.as_ref().map_or("*".to_string(), ToString::to_string),
                format!("{} {}", methods, r.path_prefix),
                auth,
                r.upstream.uri.to_string(),
            ]
        })
        .collect();
    let header = ["#", "ROUTE", "HOST", "MATCH", "AUTH", "UPSTREAM"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

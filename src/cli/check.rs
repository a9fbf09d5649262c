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
    let mut found = Found::default();
    if let Some(t) = &config.server.tls {
        let mut files = vec![("cert_file", &*t.cert_file), ("key_file", &*t.key_file)];
        if let Some(clients) = &t.client_auth {
            files.push(("client_auth.ca_file", &*clients.ca_file));
        }
        check_pair("server.tls", &files, || tls::acceptor(t), &mut found);
    }
    if let Some(t) = &config.admin.tls {
        check_pair(
            "admin.tls",
            &[("cert_file", &t.cert_file), ("key_file", &t.key_file)],
            || tls::admin_acceptor(t),
            &mut found,
        );
    }
    if let Some(u) = &config.upstream_tls {
        if !u.ca_file.exists() {
            found.warnings.push(ConfigError {
                path: "upstream_tls.ca_file".into(),
                message: format!(
                    "{} does not exist; `run` exits 2 until it does",
                    u.ca_file.display()
                ),
            });
        } else if let Err(e) = tls::load_certs(&u.ca_file) {
            found.errors.push(ConfigError {
                path: "upstream_tls.ca_file".into(),
                message: e.to_string(),
            });
        }
    }
    (found.errors, found.warnings)
}

#[derive(Default)]
struct Found {
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

/// One certificate and key pair under `section` (`server.tls`, `admin.tls`), with the other
/// files its acceptor reads (`client_auth.ca_file`), each under its key.
fn check_pair(
    section: &str,
    files: &[(&str, &Path)],
    load: impl FnOnce() -> Result<tokio_rustls::TlsAcceptor, TlsError>,
    found: &mut Found,
) {
    let mut all_there = true;
    for &(key, file) in files {
        if !file.exists() {
            all_there = false;
            found.warnings.push(ConfigError {
                path: format!("{section}.{key}"),
                message: format!(
                    "{} does not exist; `run` exits 2 until it does",
                    file.display()
                ),
            });
        }
    }
    if !all_there {
        return;
    }
    if let Err(e) = load() {
        let key = match e {
            TlsError::Certificate { .. }
            | TlsError::NoCertificate(_)
            | TlsError::Config(rustls::Error::InvalidCertificate(_)) => ".cert_file",
            TlsError::Key { .. } => ".key_file",
            TlsError::ClientCa { .. } => ".client_auth.ca_file",
            TlsError::Config(_) => "",
        };
        found.errors.push(ConfigError {
            path: format!("{section}{key}"),
            message: e.to_string(),
        });
    }
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
                r.upstream
                    .as_ref()
                    .map_or("(decisions only)".to_string(), |u| u.uri.to_string()),
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

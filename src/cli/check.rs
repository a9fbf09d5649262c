//! `jwt-gateway check`: validate the config and print the route table.

use std::path::Path;

use super::CliError;
use crate::config::{self, Config, RouteAuth};

pub fn check(config_path: &Path) -> Result<(), CliError> {
    let config = config::load(config_path)?;
    print!("{}", route_table(&config));
    for warning in &config.warnings {
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

//! `tracing:`: the OTLP collector spans go to, the head-sampling ratio, the export timeout.

use serde_yaml::Value;

use crate::config::yaml::{describe, Errors, Fields};
use crate::config::TracingConfig;

pub(super) fn tracing(f: &mut Fields, errors: &mut Errors) -> TracingConfig {
    let defaults = TracingConfig::default();
    let endpoint_path = f.path_of("otlp_endpoint");
    let traces_url = f
        .string("otlp_endpoint", errors)
        .and_then(|text| traces_url(&text, &endpoint_path, errors));
    let ratio_path = f.path_of("sample_ratio");
    let sample_ratio = match f.value("sample_ratio") {
        None => defaults.sample_ratio,
        Some(Value::Number(n)) if n.as_f64().is_some_and(|r| (0.0..=1.0).contains(&r)) => {
            n.as_f64().unwrap_or(defaults.sample_ratio)
        }
        Some(other) => {
            errors.push(
                &ratio_path,
                format!("must be a number from 0 to 1, found {}", shown(other)),
            );
            defaults.sample_ratio
        }
    };
    let timeout_path = f.path_of("export_timeout");
    let export_timeout = f
        .duration("export_timeout", errors)
        .unwrap_or(defaults.export_timeout);
    if export_timeout.is_zero() {
        errors.push(&timeout_path, "must be longer than 0s");
    }
    f.end(errors);
    TracingConfig {
        traces_url,
        sample_ratio,
        export_timeout,
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        other => describe(other).to_string(),
    }
}

/// The collector's base URL (`http://collector:4318`) with `/v1/traces` appended to its path,
/// as the OTLP/HTTP exporter spec does with `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_url(text: &str, path: &str, errors: &mut Errors) -> Option<reqwest::Url> {
    let url = match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
        _ => {
            errors.push(
                path,
                format!("{text:?} is not an http(s) URL like http://collector:4318"),
            );
            return None;
        }
    };
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        errors.push(path, "must not carry a query, a fragment or credentials");
        return None;
    }
    let mut traces = url;
    let base = traces.path().trim_end_matches('/').to_string();
    traces.set_path(&format!("{base}/v1/traces"));
    Some(traces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_appended_to_the_base() {
        let mut errors = Errors::default();
        for (base, want) in [
            ("http://collector:4318", "http://collector:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            (
                "https://otel.example/prefix/",
                "https://otel.example/prefix/v1/traces",
            ),
        ] {
            let url = traces_url(base, "p", &mut errors).map(|u| u.to_string());
            assert_eq!(url.as_deref(), Some(want));
        }
        assert!(errors.0.is_empty());
    }
}

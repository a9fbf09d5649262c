//! Denial assertions pinned to the contract's status table: status, `WWW-Authenticate`, the JSON
//! body, the upstream untouched, and one more `gateway_auth_decisions_total` sample for the reason.

use std::future::Future;

use super::{metric, TestGateway, Upstream};

/// What the contract says a refused request gets back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// 401 `Bearer realm="jwt-gateway"`, reason `missing_token`.
    NoToken,
    /// 400 `Bearer error="invalid_request"`, reason `malformed`.
    BadRequest,
    /// 401 `Bearer error="invalid_token", error_description="..."` with this reason.
    Invalid(&'static str),
    /// 403 `Bearer error="insufficient_scope"`.
    Forbidden,
    /// 503 with `Retry-After`, reason `keys_unavailable`.
    Unavailable,
}

impl Want {
    pub fn status(self) -> u16 {
        match self {
            Want::NoToken | Want::Invalid(_) => 401,
            Want::BadRequest => 400,
            Want::Forbidden => 403,
            Want::Unavailable => 503,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Want::NoToken => "missing_token",
            Want::BadRequest => "malformed",
            Want::Invalid(reason) => reason,
            Want::Forbidden => "insufficient_scope",
            Want::Unavailable => "keys_unavailable",
        }
    }
}

/// `gateway_auth_decisions_total{decision, reason, route}`, 0 when the series does not exist yet.
pub async fn decisions(gw: &TestGateway, decision: &str, reason: &str, route: &str) -> f64 {
    let text = gw.metrics().await;
    metric(
        &text,
        &format!(
            r#"gateway_auth_decisions_total{{decision="{decision}",reason="{reason}",route="{route}"}}"#
        ),
    )
    .unwrap_or(0.0)
}

/// Sends one request and asserts it was refused exactly as `want` says: status, challenge, JSON
/// body, nothing forwarded, and the deny counter of `route` up by one for the reason.
pub async fn expect_denied<F>(
    gw: &TestGateway,
    upstream: &Upstream,
    route: &str,
    want: Want,
    what: &str,
    send: F,
) where
    F: Future<Output = reqwest::Response>,
{
    let before_upstream = upstream.requests();
    let before = decisions(gw, "deny", want.reason(), route).await;
    let response = send.await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, want.status(), "{what}: status (body {body})");
    let challenge = headers
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ASCII challenge").to_string());
    match want {
        Want::NoToken => assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer realm="jwt-gateway""#),
            "{what}"
        ),
        Want::BadRequest => assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer error="invalid_request""#),
            "{what}"
        ),
        Want::Invalid(_) => {
            let c = challenge.unwrap_or_default();
            assert!(
                c.starts_with(r#"Bearer error="invalid_token", error_description=""#)
                    && c.ends_with('"'),
                "{what}: challenge {c:?}"
            );
        }
        Want::Forbidden => assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer error="insufficient_scope""#),
            "{what}"
        ),
        Want::Unavailable => {
            assert_eq!(challenge, None, "{what}: 503 carries no challenge");
            let retry = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            assert!(
                retry.is_some_and(|s| s >= 1),
                "{what}: Retry-After {retry:?}"
            );
        }
    }
    let json: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body}"));
    let error = json["error"].as_str().unwrap_or_default();
    let description = json["error_description"].as_str().unwrap_or_default();
    assert!(
        !error.is_empty() && !description.is_empty(),
        "{what}: body {body}"
    );
    match want {
        Want::Invalid(_) => assert_eq!(error, "invalid_token", "{what}"),
        Want::BadRequest => assert_eq!(error, "invalid_request", "{what}"),
        Want::Forbidden => assert_eq!(error, "insufficient_scope", "{what}"),
        Want::NoToken | Want::Unavailable => {}
    }
    assert_eq!(
        upstream.requests(),
        before_upstream,
        "{what}: a denial never reaches the upstream"
    );
    let after = decisions(gw, "deny", want.reason(), route).await;
    assert_eq!(
        after,
        before + 1.0,
        "{what}: gateway_auth_decisions_total{{decision=\"deny\",reason=\"{}\",route=\"{route}\"}}",
        want.reason()
    );
}

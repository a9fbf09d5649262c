//! The explaining back: the very stages `handle` runs, narrated, and the upstream head the proxy
//! would send, printed instead of sent. What it tells is what the gateway does, because it is the
//! same code: `judge` for the decision, `rewrite_request` for the upstream head.

use std::fmt::Write as _;

use http::request::Parts;
use http::{HeaderMap, StatusCode};

use super::headers;
use super::pipeline::{
    judge, proxied_upstream, rewrite_request, ConnInfo, LocalAnswer, RequestCtx, RequestView,
};
use crate::denial::Denial;
use crate::gateway::Gateway;

/// What the gateway would do with one request.
pub struct Explanation {
    /// One line per stage, `[pass]` or `[FAIL]`.
    pub stages: Vec<String>,
    /// The upstream request head, or the refusal.
    pub outcome: Result<Parts, Denial>,
    /// Set when the gateway answers an admitted request itself (then `outcome` holds the
    /// request as it came, and nothing goes upstream).
    pub answered: Option<LocalAnswer>,
}

impl Explanation {
    /// The status the client would get from the gateway itself; `None` when the request goes
    /// upstream and the upstream's answer is relayed.
    pub fn status(&self) -> Option<StatusCode> {
        if let Some(LocalAnswer::Preflight { .. }) = self.answered {
            return Some(StatusCode::NO_CONTENT);
        }
        self.outcome.as_ref().err().map(|d| d.status())
    }

    /// The report `check --request` prints. Claim headers show their values (that is what the
    /// upstream gets); the token itself, its signature and key material never appear.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.stages {
            let _ = writeln!(out, "  {line}");
        }
        match &self.outcome {
            Ok(_) if self.answered.is_some() => {
                out.push_str("result: 204, a CORS preflight answered by the gateway\n");
                out.push_str("  (nothing is sent upstream)\n");
            }
            Ok(upstream) => {
                let _ = writeln!(
                    out,
                    "upstream request: {} {}",
                    upstream.method, upstream.uri
                );
                render_headers(&mut out, &upstream.headers);
                out.push_str("result: forwarded upstream; the upstream's answer is relayed\n");
            }
            Err(denial) => {
                let text = denial.text();
                let reason = denial
                    .auth_reason()
                    .map(|r| format!(", reason {}", r.as_str()))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "result: {} {}{reason}",
                    denial.status().as_u16(),
                    text.error
                );
                if let Some(challenge) = text.challenge {
                    let _ = writeln!(out, "  WWW-Authenticate: {challenge}");
                }
                out.push_str("  (nothing is sent upstream)\n");
            }
        }
        out
    }
}

fn render_headers(out: &mut String, headers: &HeaderMap) {
    for (name, value) in headers {
        if name == http::header::AUTHORIZATION {
            let _ = writeln!(out, "  {name}: (forwarded as received)");
        } else if name != headers::X_REQUEST_ID {
            let _ = writeln!(
                out,
                "  {name}: {}",
                String::from_utf8_lossy(value.as_bytes())
            );
        }
    }
    let _ = writeln!(
        out,
        "  x-request-id: (the client's, if well-formed, or a new one)"
    );
}

/// Runs the stages on `parts` as a request from `conn`, without counting it, throttling it or
/// sending it anywhere. The throttle's and revocations' current state is read as for a request.
pub async fn explain_request(gateway: &Gateway, conn: ConnInfo, mut parts: Parts) -> Explanation {
    let mut ctx = RequestCtx::narrated(gateway.snapshot(), conn, parts.method.clone());
    let verdict = judge(gateway, &mut ctx, RequestView::of(&parts)).await;
    let answered = verdict.as_ref().ok().and_then(|v| v.answer);
    let outcome = match verdict {
        Err(denial) => Err(denial),
        Ok(_) if answered.is_some() => Ok(parts),
        Ok(verdict) => {
            let snapshot = ctx.snapshot.clone();
            let route = &snapshot.routes.routes()[verdict.route];
            let websocket =
                headers::is_websocket_upgrade(&parts.method, parts.version, &parts.headers);
            let grpc = crate::grpc::is_grpc(&parts.headers);
            proxied_upstream(route, grpc, websocket).and_then(|destination| {
                rewrite_request(&ctx, route, destination, verdict, &mut parts, websocket)
                    .map(|()| parts)
            })
        }
    };
    Explanation {
        stages: ctx.narration().to_vec(),
        outcome,
        answered,
    }
}

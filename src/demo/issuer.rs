//! The demo's identity provider: fresh ES256 keys at every start, a JWKS endpoint, and a token
//! endpoint that mints tokens for a few demo users.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use super::mint::{random_id, user_claims, SigningKey};
use crate::config::ProviderConfig;

pub struct DemoUser {
    pub name: &'static str,
    pub description: &'static str,
    roles: &'static [&'static str],
    scope: &'static str,
}

pub const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        name: "alice",
        description: "reads orders",
        roles: &["orders.read"],
        scope: "orders:read profile",
    },
    DemoUser {
        name: "bob",
        description: "signed in, no order role",
        roles: &["user"],
        scope: "profile",
    },
    DemoUser {
        name: "carol",
        description: "admin, may write",
        roles: &["admin", "orders.read"],
        scope: "orders:read orders:write profile",
    },
];

#[derive(Clone)]
pub struct DemoIssuer {
    inner: Arc<Inner>,
}

struct Inner {
    key: SigningKey,
    issuer: String,
    audience: Option<String>,
}

impl DemoIssuer {
    pub fn new(provider: &ProviderConfig) -> Result<DemoIssuer, aws_lc_rs::error::Unspecified> {
        let key = SigningKey::try_p256(&format!("demo-{}", random_id()))?;
        Ok(DemoIssuer {
            inner: Arc::new(Inner {
                key,
                issuer: provider.issuer.clone(),
                audience: provider.audiences.first().cloned(),
            }),
        })
    }

    pub fn jwks(&self) -> serde_json::Value {
        let mut jwk = self.inner.key.jwk();
        jwk["alg"] = json!("ES256");
        json!({ "keys": [jwk] })
    }

    pub fn mint(&self, user: &DemoUser) -> String {
        let claims = user_claims(
            &self.inner.issuer,
            self.inner.audience.as_deref(),
            user.name,
            user.roles,
            user.scope,
        );
        self.inner.key.mint("ES256", &claims)
    }

    pub async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let issuer = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| issuer.clone().answer(req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn answer(self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let (status, body) = match request.uri().path() {
            "/jwks" => (StatusCode::OK, self.jwks().to_string()),
            "/token" => {
                let wanted = request
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("user=")))
                    .unwrap_or("alice");
                match DEMO_USERS
                    .iter()
                    .find(|u| u.name == wanted)
                    .map(|u| self.mint(u))
                {
                    Some(token) => (StatusCode::OK, token),
                    None => (
                        StatusCode::NOT_FOUND,
                        "unknown demo user; try alice, bob or carol\n".into(),
                    ),
                }
            }
            _ => (
                StatusCode::NOT_FOUND,
                "try /token?user=alice or /jwks\n".into(),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        Ok(response)
    }
}

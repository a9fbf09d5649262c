//! The demo's identity provider: fresh ES256 keys at every start, a JWKS endpoint, and a token
//! endpoint that mints tokens for a few demo users.

use std::convert::Infallible;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::auth::token::unix_now;
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
    key: EcdsaKeyPair,
    kid: String,
    issuer: String,
    audience: Option<String>,
}

impl DemoIssuer {
    pub fn new(provider: &ProviderConfig) -> Result<DemoIssuer, aws_lc_rs::error::Unspecified> {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)?;
        let mut kid_bytes = [0u8; 6];
        aws_lc_rs::rand::fill(&mut kid_bytes)?;
        Ok(DemoIssuer {
            inner: Arc::new(Inner {
                key,
                kid: format!("demo-{}", URL_SAFE_NO_PAD.encode(kid_bytes)),
                issuer: provider.issuer.clone(),
                audience: provider.audiences.first().cloned(),
            }),
        })
    }

    pub fn jwks(&self) -> serde_json::Value {
        let point = self.inner.key.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.inner.kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
    }

    pub fn mint(&self, user: &DemoUser) -> Option<String> {
        let now = unix_now() as u64;
        let mut jti = [0u8; 12];
        aws_lc_rs::rand::fill(&mut jti).ok()?;
        let mut claims = json!({
            "iss": self.inner.issuer,
            "sub": user.name,
            "email": format!("{}@example.com", user.name),
            "iat": now, "nbf": now, "exp": now + 3600,
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "realm_access": {"roles": user.roles},
            "scope": user.scope,
        });
        if let Some(aud) = &self.inner.audience {
            claims["aud"] = json!(aud);
        }
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.inner.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .inner
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .ok()?;
        Some(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
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
                    .and_then(|u| self.mint(u))
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

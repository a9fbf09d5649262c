//! One rig: an issuer publishing signing keys, a recording upstream, and the gateway in front of
//! that upstream on the config a test picks (see `yaml`), with what tests then ask of it:
//! tokens, requests to `/api/x`, denials checked against the contract, a second instance.
//!
//! ```ignore
//! let rig = Rig::start(basic).await;                        // P-256 key `k1`, ES256
//! let rig = Rig::start(|i, u| every_rule(i, u).server(server().limits("max_token_bytes: 99"))).await;
//! let backends = Backends::start(&[(&key, "ES256")]).await; // change the issuer first
//! backends.issuer.set_status(500);
//! let rig = backends.gateway(basic).await;
//! ```

use serde_json::Value;

use super::denials::{expect_denied, Want};
use super::keys::{claims, SigningKey};
use super::servers::{Issuer, Seen, Upstream};
use super::yaml::Config;
use super::TestGateway;

/// The issuer and upstream of a rig before its gateway starts: for a test that changes what the
/// issuer answers, or mints a token, before the gateway's first key fetch.
pub struct Backends {
    pub issuer: Issuer,
    pub upstream: Upstream,
    /// What the issuer publishes, each key with its algorithm; tokens are signed by the first.
    pub keys: Vec<(SigningKey, &'static str)>,
}

impl Backends {
    /// An issuer publishing `keys` (with their `alg`) and an upstream, both on loopback.
    pub async fn start(keys: &[(&SigningKey, &'static str)]) -> Backends {
        Backends {
            issuer: Issuer::start(keys).await,
            upstream: Upstream::start().await,
            keys: keys.iter().map(|&(k, alg)| (k.clone(), alg)).collect(),
        }
    }

    /// An issuer publishing a fresh P-256 key `k1` for ES256, and an upstream.
    pub async fn es256() -> Backends {
        Backends::start(&[(&SigningKey::p256("k1"), "ES256")]).await
    }

    /// A valid token (`claims` for this issuer and `orders-api`) from the first key.
    pub fn token(&self) -> String {
        let (key, alg) = first(&self.keys);
        key.mint(alg, &claims(&self.issuer.iss(), "orders-api"))
    }

    /// Starts the gateway on `shape(issuer, upstream)`.
    pub async fn gateway(self, shape: impl FnOnce(&Issuer, &Upstream) -> Config) -> Rig {
        let config = shape(&self.issuer, &self.upstream);
        let gw = TestGateway::start(&config).await;
        self.into_rig(gw, config)
    }

    /// The gateway on `shape(issuer, upstream)`, or why it refused to start.
    pub async fn try_gateway(
        self,
        shape: impl FnOnce(&Issuer, &Upstream) -> Config,
    ) -> Result<Rig, String> {
        let config = shape(&self.issuer, &self.upstream);
        let gw = TestGateway::try_start(&config).await?;
        Ok(self.into_rig(gw, config))
    }

    fn into_rig(self, gw: TestGateway, config: Config) -> Rig {
        Rig {
            gw,
            issuer: self.issuer,
            upstream: self.upstream,
            keys: self.keys,
            config,
        }
    }
}

/// The default signer and its algorithm: the first key published.
fn first<'a>(keys: &'a [(SigningKey, &'static str)]) -> (&'a SigningKey, &'static str) {
    let (key, alg) = keys
        .first()
        .expect("the rig was started with a signing key");
    (key, *alg)
}

/// A gateway on `config`, in front of `upstream`, trusting `issuer`.
pub struct Rig {
    pub gw: TestGateway,
    pub issuer: Issuer,
    pub upstream: Upstream,
    /// What the issuer publishes, each key with its algorithm; tokens are signed by the first.
    pub keys: Vec<(SigningKey, &'static str)>,
    /// What the gateway started from: a second instance or a restart takes the same.
    pub config: Config,
}

impl Rig {
    /// `shape(issuer, upstream)` with an issuer publishing a fresh P-256 key `k1` for ES256.
    pub async fn start(shape: impl FnOnce(&Issuer, &Upstream) -> Config) -> Rig {
        Backends::es256().await.gateway(shape).await
    }

    /// `shape(issuer, upstream)` with an issuer publishing `keys`; the first signs tokens.
    pub async fn with_keys(
        keys: &[(&SigningKey, &'static str)],
        shape: impl FnOnce(&Issuer, &Upstream) -> Config,
    ) -> Rig {
        Backends::start(keys).await.gateway(shape).await
    }

    /// The key that signs `token`, `mint` and `sign`.
    pub fn key(&self) -> &SigningKey {
        first(&self.keys).0
    }

    /// The published key with this `kid`.
    pub fn key_of(&self, kid: &str) -> &SigningKey {
        self.keys
            .iter()
            .map(|(k, _)| k)
            .find(|k| k.kid == kid)
            .unwrap_or_else(|| panic!("no published key {kid}"))
    }

    /// Claims this gateway accepts: `support::claims` for the issuer and `orders-api`.
    pub fn claims(&self) -> Value {
        claims(&self.issuer.iss(), "orders-api")
    }

    /// A valid token from the first key.
    pub fn token(&self) -> String {
        self.mint(&self.claims())
    }

    /// A token of `claims` from the first key.
    pub fn mint(&self, claims: &Value) -> String {
        let (key, alg) = first(&self.keys);
        key.mint(alg, claims)
    }

    /// `mint` with header members added (or removed, by `null`).
    pub fn mint_with(&self, extra_header: Value, claims: &Value) -> String {
        let (key, alg) = first(&self.keys);
        key.mint_with(alg, extra_header, claims)
    }

    /// The first key's signature over `input`, for tokens assembled by hand.
    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        let (key, alg) = first(&self.keys);
        key.sign(alg, input)
    }

    /// A token of `claims()` signed by `key` as `alg`, published or not.
    pub fn token_of(&self, key: &SigningKey, alg: &str) -> String {
        key.mint(alg, &self.claims())
    }

    /// An HTTP/1.1 client for the gateway (see `TestGateway::client`).
    pub fn client(&self) -> reqwest::Client {
        self.gw.client()
    }

    /// The status of `GET /api/x` with `token`: every shape has route `api` under `/api`.
    pub async fn status(&self, token: &str) -> u16 {
        self.gw.get("/api/x", Some(token)).await.status().as_u16()
    }

    /// `GET /api/x` with `token` is refused as `want` says (see `expect_denied`).
    pub async fn denied(&self, want: Want, what: &str, token: &str) {
        self.denied_at("api", "/api/x", want, what, token).await;
    }

    /// `GET path` with `token` is refused by route `route` as `want` says.
    pub async fn denied_at(&self, route: &str, path: &str, want: Want, what: &str, token: &str) {
        expect_denied(
            &self.gw,
            &self.upstream,
            route,
            want,
            what,
            self.gw.get(path, Some(token)),
        )
        .await;
    }

    /// `GET path` with `token` is answered 200 by the upstream, once; returns what it saw.
    pub async fn allowed(&self, path: &str, token: &str, what: &str) -> Seen {
        let before = self.upstream.requests();
        let r = self.gw.get(path, Some(token)).await;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{what}: {body}");
        assert_eq!(self.upstream.requests(), before + 1, "{what}");
        self.upstream.last().expect("request seen upstream")
    }

    /// Another gateway on the same config, issuer and upstream: a fleet, or a restart.
    pub async fn another(&self) -> TestGateway {
        TestGateway::start(&self.config).await
    }

    /// Stops the gateway, then starts another on the same config: what survives a restart.
    pub async fn restart(self) -> Rig {
        let Rig {
            gw,
            issuer,
            upstream,
            keys,
            config,
        } = self;
        gw.stop().await;
        let gw = TestGateway::start(&config).await;
        Rig {
            gw,
            issuer,
            upstream,
            keys,
            config,
        }
    }

    pub async fn stop(self) {
        self.gw.stop().await;
    }
}

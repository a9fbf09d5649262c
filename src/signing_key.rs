//! The gateway's own signing key for assertions: read from a PKCS#8 PEM, published as a JWK.
//! A leaf: the config reads it at load without reaching the signer (`assertion`).

use std::fmt;

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde_json::{json, Map, Value};

/// A key file that cannot sign assertions.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("holds no PKCS#8 private key (PEM \"PRIVATE KEY\")")]
    NotPkcs8,
    #[error("is neither a P-256 (ES256) nor an Ed25519 (EdDSA) key")]
    Unsupported,
}

enum Pair {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

/// The gateway's signing key: ES256 or EdDSA, named by its RFC 7638 thumbprint, so the same
/// file read again on a reload is the same `kid` and no rotation.
pub struct AssertionKey {
    pair: Pair,
    kid: String,
    /// The public JWK, without `kid` and `alg`.
    public: Map<String, Value>,
    rng: SystemRandom,
}

impl fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssertionKey({} {})", self.alg(), self.kid)
    }
}

pub(crate) fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl AssertionKey {
    /// Reads a PKCS#8 PEM private key: P-256 for ES256, Ed25519 (v1 or v2) for EdDSA.
    pub fn from_pem(pem: &[u8]) -> Result<AssertionKey, KeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|_| KeyError::NotPkcs8)?;
        let der = der.secret_pkcs8_der();
        let (pair, public) =
            if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
                // Uncompressed point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                let (x, y) = point[1..].split_at(32);
                let mut public = Map::new();
                // RFC 7638 order: the thumbprint hashes these members sorted by name.
                public.insert("crv".into(), "P-256".into());
                public.insert("kty".into(), "EC".into());
                public.insert("x".into(), b64(x).into());
                public.insert("y".into(), b64(y).into());
                (Pair::Es256(pair), public)
            } else if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                let mut public = Map::new();
                public.insert("crv".into(), "Ed25519".into());
                public.insert("kty".into(), "OKP".into());
                public.insert("x".into(), b64(pair.public_key().as_ref()).into());
                (Pair::EdDsa(pair), public)
            } else {
                return Err(KeyError::Unsupported);
            };
        // serde_json's Map keeps keys sorted, which is the order RFC 7638 hashes them in.
        let canonical = Value::Object(public.clone()).to_string();
        let kid = b64(digest(&SHA256, canonical.as_bytes()));
        Ok(AssertionKey {
            pair,
            kid,
            public,
            rng: SystemRandom::new(),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Es256(_) => "ES256",
            Pair::EdDsa(_) => "EdDSA",
        }
    }

    /// The public half as a JWK, as the JWKS serves it.
    pub fn jwk(&self) -> Value {
        let mut jwk = self.public.clone();
        jwk.insert("kid".into(), self.kid.clone().into());
        jwk.insert("alg".into(), self.alg().into());
        jwk.insert("use".into(), "sig".into());
        Value::Object(jwk)
    }

    /// A compact JWS of `payload`.
    pub(crate) fn sign(&self, payload: &Value) -> Option<String> {
        let header = json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid});
        let mut jws = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
        let signature = match &self.pair {
            Pair::Es256(pair) => pair.sign(&self.rng, jws.as_bytes()).ok()?.as_ref().to_vec(),
            Pair::EdDsa(pair) => pair.sign(jws.as_bytes()).as_ref().to_vec(),
        };
        jws.push('.');
        jws.push_str(&b64(signature));
        Some(jws)
    }
}

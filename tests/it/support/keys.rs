//! Signing keys for every algorithm the gateway verifies, their JWKs, and token minting.
//! Keys are generated once per test process (RSA generation is slow) and shared.

use std::sync::{Arc, OnceLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Clone)]
pub enum Material {
    Rsa(Arc<RsaKeyPair>),
    P256(Arc<EcdsaKeyPair>),
    P384(Arc<EcdsaKeyPair>),
    Ed25519(Arc<Ed25519KeyPair>),
    Hmac(Vec<u8>),
}

/// A signing key with its `kid`; signs with whichever algorithm a token names.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub material: Material,
}

fn rsa_key(slot: &'static OnceLock<Arc<RsaKeyPair>>) -> Arc<RsaKeyPair> {
    slot.get_or_init(|| {
        Arc::new(RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generation"))
    })
    .clone()
}

static RSA_A: OnceLock<Arc<RsaKeyPair>> = OnceLock::new();
static RSA_B: OnceLock<Arc<RsaKeyPair>> = OnceLock::new();

impl TestKey {
    /// The shared RSA key "a" (2048 bits) under `kid`.
    pub fn rsa(kid: &str) -> TestKey {
        TestKey {
            kid: kid.into(),
            material: Material::Rsa(rsa_key(&RSA_A)),
        }
    }
    /// A second RSA key, for rotation and wrong-key tests.
    pub fn rsa_other(kid: &str) -> TestKey {
        TestKey {
            kid: kid.into(),
            material: Material::Rsa(rsa_key(&RSA_B)),
        }
    }
    pub fn p256(kid: &str) -> TestKey {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key");
        TestKey {
            kid: kid.into(),
            material: Material::P256(Arc::new(key)),
        }
    }
    pub fn p384(kid: &str) -> TestKey {
        let key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).expect("P-384 key");
        TestKey {
            kid: kid.into(),
            material: Material::P384(Arc::new(key)),
        }
    }
    pub fn ed25519(kid: &str) -> TestKey {
        let key = Ed25519KeyPair::generate().expect("Ed25519 key");
        TestKey {
            kid: kid.into(),
            material: Material::Ed25519(Arc::new(key)),
        }
    }
    pub fn hmac(secret: &[u8]) -> TestKey {
        TestKey {
            kid: "hmac".into(),
            material: Material::Hmac(secret.to_vec()),
        }
    }

    /// The public JWK (no `alg` member unless added by the caller).
    pub fn jwk(&self) -> Value {
        match &self.material {
            Material::Rsa(k) => {
                let public = k.public_key();
                json!({"kty": "RSA", "kid": self.kid, "use": "sig",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero())})
            }
            Material::P256(k) | Material::P384(k) => {
                let point = k.public_key().as_ref();
                let width = (point.len() - 1) / 2;
                let crv = if width == 32 { "P-256" } else { "P-384" };
                json!({"kty": "EC", "crv": crv, "kid": self.kid, "use": "sig",
                    "x": b64(&point[1..1 + width]), "y": b64(&point[1 + width..])})
            }
            Material::Ed25519(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "use": "sig", "x": b64(k.public_key().as_ref())})
            }
            Material::Hmac(_) => json!({"kty": "oct", "kid": self.kid}),
        }
    }

    /// Signs `input` as `alg` would; panics on a combination the key cannot do (a test bug).
    pub fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match (&self.material, alg) {
            (Material::Rsa(k), _) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    other => panic!("RSA key cannot sign {other}"),
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(padding, &rng, input, &mut sig).expect("RSA sign");
                sig
            }
            (Material::P256(k) | Material::P384(k), _) => {
                k.sign(&rng, input).expect("ECDSA sign").as_ref().to_vec()
            }
            (Material::Ed25519(k), _) => k.sign(input).as_ref().to_vec(),
            (Material::Hmac(secret), _) => {
                let h = match alg {
                    "HS256" => aws_lc_rs::hmac::HMAC_SHA256,
                    "HS384" => aws_lc_rs::hmac::HMAC_SHA384,
                    "HS512" => aws_lc_rs::hmac::HMAC_SHA512,
                    other => panic!("HMAC key cannot sign {other}"),
                };
                aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(h, secret), input)
                    .as_ref()
                    .to_vec()
            }
        }
    }

    /// A compact JWS with header `{"alg", "kid", "typ": "JWT"}` merged with `extra_header`.
    pub fn mint_with(&self, alg: &str, extra_header: Value, claims: &Value) -> String {
        let mut header = json!({"alg": alg, "typ": "JWT", "kid": self.kid});
        if let (Some(h), Some(extra)) = (header.as_object_mut(), extra_header.as_object()) {
            for (k, v) in extra {
                if v.is_null() {
                    h.remove(k);
                } else {
                    h.insert(k.clone(), v.clone());
                }
            }
        }
        mint_raw(&header.to_string(), &claims.to_string(), |input| {
            self.sign(alg, input)
        })
    }

    pub fn mint(&self, alg: &str, claims: &Value) -> String {
        self.mint_with(alg, json!({}), claims)
    }
}

/// A token from literal header and payload JSON text (for duplicate-member and other raw cases).
pub fn mint_raw(header_json: &str, payload_json: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header_json), b64(payload_json));
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64(sig))
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Claims that pass a provider with `issuer` and audience `aud`, valid for an hour.
pub fn claims(issuer: &str, aud: &str) -> Value {
    let now = now();
    json!({"iss": issuer, "aud": aud, "sub": "alice", "iat": now, "nbf": now, "exp": now + 3600,
           "jti": format!("jti-{}", rand_suffix()), "email": "alice@example.com",
           "realm_access": {"roles": ["orders.read", "user"]}, "scope": "orders:read profile"})
}

pub fn rand_suffix() -> String {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("rng");
    b64(bytes)
}

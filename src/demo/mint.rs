//! Signs JWTs for the demo issuer, the integration tests and the benches: a key for every
//! algorithm the gateway verifies, its public JWK, and compact JWS tokens, signed with aws-lc-rs
//! directly. It never calls the gateway's decode or verify code, so a token it mints checks the
//! gateway rather than agreeing with it by construction. Not used on any request path.
//!
//! Generation and signing panic when aws-lc-rs cannot get randomness, and signing panics on an
//! algorithm the key cannot do: both are a broken machine or a caller's bug, never input.

use std::sync::{Arc, OnceLock};

use aws_lc_rs::error::Unspecified;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

/// Unpadded base64url, the encoding of every JWS part.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The private half of a key, shared between clones.
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
pub struct SigningKey {
    pub kid: String,
    pub material: Material,
}

/// RSA keys are generated once per process and shared: 2048-bit generation is the slowest
/// step of a test run's setup, and no caller needs a key nobody else holds.
fn shared_rsa(slot: &'static OnceLock<Arc<RsaKeyPair>>) -> Arc<RsaKeyPair> {
    slot.get_or_init(|| {
        Arc::new(RsaKeyPair::generate(KeySize::Rsa2048).expect("aws-lc-rs generates an RSA key"))
    })
    .clone()
}

static RSA_A: OnceLock<Arc<RsaKeyPair>> = OnceLock::new();
static RSA_B: OnceLock<Arc<RsaKeyPair>> = OnceLock::new();

impl SigningKey {
    fn new(kid: &str, material: Material) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            material,
        }
    }

    /// The shared RSA key "a" (2048 bits) under `kid`.
    pub fn rsa(kid: &str) -> SigningKey {
        SigningKey::new(kid, Material::Rsa(shared_rsa(&RSA_A)))
    }

    /// A second shared RSA key, for rotation and wrong-key cases.
    pub fn rsa_other(kid: &str) -> SigningKey {
        SigningKey::new(kid, Material::Rsa(shared_rsa(&RSA_B)))
    }

    /// A fresh P-256 key, or aws-lc-rs's error (for the demo, which reports it in a sentence).
    pub fn try_p256(kid: &str) -> Result<SigningKey, Unspecified> {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)?;
        Ok(SigningKey::new(kid, Material::P256(Arc::new(key))))
    }

    /// A fresh P-256 key.
    pub fn p256(kid: &str) -> SigningKey {
        SigningKey::try_p256(kid).expect("aws-lc-rs generates a P-256 key")
    }

    /// A fresh P-384 key.
    pub fn p384(kid: &str) -> SigningKey {
        let key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
            .expect("aws-lc-rs generates a P-384 key");
        SigningKey::new(kid, Material::P384(Arc::new(key)))
    }

    /// A fresh Ed25519 key.
    pub fn ed25519(kid: &str) -> SigningKey {
        let key = Ed25519KeyPair::generate().expect("aws-lc-rs generates an Ed25519 key");
        SigningKey::new(kid, Material::Ed25519(Arc::new(key)))
    }

    /// A shared secret for HS256/384/512, under kid `hmac`.
    pub fn hmac(secret: &[u8]) -> SigningKey {
        SigningKey::new("hmac", Material::Hmac(secret.to_vec()))
    }

    /// The same key material under another `kid`.
    pub fn with_kid(&self, kid: &str) -> SigningKey {
        SigningKey::new(kid, self.material.clone())
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
                json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "use": "sig",
                    "x": b64(k.public_key().as_ref())})
            }
            Material::Hmac(_) => json!({"kty": "oct", "kid": self.kid}),
        }
    }

    /// The public key as aws-lc-rs's verifiers read it: PKCS#1 `RSAPublicKey` DER, the
    /// uncompressed EC point, or the raw Ed25519 key. `None` for a shared secret.
    pub fn public_key(&self) -> Option<Vec<u8>> {
        match &self.material {
            Material::Rsa(k) => Some(k.public_key().as_ref().to_vec()),
            Material::P256(k) | Material::P384(k) => Some(k.public_key().as_ref().to_vec()),
            Material::Ed25519(k) => Some(k.public_key().as_ref().to_vec()),
            Material::Hmac(_) => None,
        }
    }

    /// Signs `input` as `alg` would; ECDSA signatures are fixed-width `r || s` (RFC 7518 3.4).
    pub fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.material {
            Material::Rsa(k) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    other => panic!("an RSA key cannot sign {other}"),
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(padding, &rng, input, &mut sig)
                    .expect("aws-lc-rs signs with RSA");
                sig
            }
            Material::P256(k) | Material::P384(k) => k
                .sign(&rng, input)
                .expect("aws-lc-rs signs with ECDSA")
                .as_ref()
                .to_vec(),
            Material::Ed25519(k) => k.sign(input).as_ref().to_vec(),
            Material::Hmac(secret) => {
                let h = match alg {
                    "HS256" => aws_lc_rs::hmac::HMAC_SHA256,
                    "HS384" => aws_lc_rs::hmac::HMAC_SHA384,
                    "HS512" => aws_lc_rs::hmac::HMAC_SHA512,
                    other => panic!("an HMAC key cannot sign {other}"),
                };
                aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(h, secret), input)
                    .as_ref()
                    .to_vec()
            }
        }
    }

    /// A compact JWS with header `{"alg", "typ": "JWT", "kid"}` merged with `extra_header`, in
    /// which a `null` member removes that member.
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

    /// A compact JWS with header `{"alg", "typ": "JWT", "kid"}`.
    pub fn mint(&self, alg: &str, claims: &Value) -> String {
        self.mint_with(alg, json!({}), claims)
    }
}

/// A token from literal header and payload JSON text (for duplicate members and other shapes a
/// JSON serializer would not write), signed by `sign` over the signing input.
pub fn mint_raw(header_json: &str, payload_json: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header_json), b64(payload_json));
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64(sig))
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Eight random bytes in base64url: a fresh `jti`, or a name nothing else uses.
pub fn random_id() -> String {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("aws-lc-rs has randomness");
    b64(bytes)
}

/// The claims of user `sub` signed in at `iss`: valid from now for an hour, a fresh `jti`, an
/// e-mail address, realm `roles` (Keycloak's `realm_access.roles`) and an OAuth `scope`.
/// No `aud` when `aud` is `None`.
pub fn user_claims(iss: &str, aud: Option<&str>, sub: &str, roles: &[&str], scope: &str) -> Value {
    let now = now();
    let mut claims = json!({"iss": iss, "sub": sub, "iat": now, "nbf": now, "exp": now + 3600,
        "jti": random_id(), "email": format!("{sub}@example.com"),
        "realm_access": {"roles": roles}, "scope": scope});
    if let Some(aud) = aud {
        claims["aud"] = json!(aud);
    }
    claims
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{UnparsedPublicKey, VerificationAlgorithm};

    use super::*;

    /// Every algorithm's signature checks out under aws-lc-rs's own verifier and the key's
    /// `public_key()` bytes, the way a bench's baseline verifies it.
    #[test]
    fn signatures_verify_under_the_published_public_key() {
        use signature::{
            ECDSA_P256_SHA256_FIXED as ES256, ECDSA_P384_SHA384_FIXED as ES384, ED25519,
            RSA_PKCS1_2048_8192_SHA256 as RS256, RSA_PSS_2048_8192_SHA256 as PS256,
        };
        let rsa = SigningKey::rsa("r");
        let cases: [(SigningKey, &str, &'static dyn VerificationAlgorithm); 5] = [
            (rsa.clone(), "RS256", &RS256),
            (rsa, "PS256", &PS256),
            (SigningKey::p256("e"), "ES256", &ES256),
            (SigningKey::p384("e"), "ES384", &ES384),
            (SigningKey::ed25519("d"), "EdDSA", &ED25519),
        ];
        for (key, alg, verifier) in cases {
            let token = key.mint(alg, &user_claims("iss", Some("aud"), "alice", &[], ""));
            let (input, sig) = token.rsplit_once('.').expect("three parts");
            let sig = URL_SAFE_NO_PAD.decode(sig).expect("base64url");
            let public = key.public_key().expect("public key");
            assert!(
                UnparsedPublicKey::new(verifier, &public)
                    .verify(input.as_bytes(), &sig)
                    .is_ok(),
                "{alg}"
            );
        }
    }

    #[test]
    fn a_null_member_removes_a_header_member() {
        let key = SigningKey::hmac(&[7; 32]);
        let token = key.mint_with("HS256", json!({"kid": null, "typ": "at+jwt"}), &json!({}));
        let header = token.split('.').next().expect("header");
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url"))
                .expect("JSON");
        assert_eq!(header, json!({"alg": "HS256", "typ": "at+jwt"}));
    }
}

//! JWKS documents turned into ready verifying keys, once per fetch rather than once per request.
//!
//! Each key is bound at load to the algorithms it may verify: its `kty`/`crv`/`alg`/`use` must fit
//! and the provider must allow the algorithm, so a token's `alg` can never make an RSA key act as
//! an HMAC secret or a P-256 key verify a P-384 signature. Entries that do not fit are skipped with
//! a reason; the rest still load.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use serde_json::{Map, Value};

use super::token::b64_decode;
use super::{Algorithm, KeyType};

/// Largest number of keys taken from one JWKS; a bigger set is an IdP bug or an attack.
pub const MAX_KEYS: usize = 64;

static NEXT_KEY_ID: AtomicU64 = AtomicU64::new(1);

/// A key ready to verify signatures with every algorithm it was bound to at load.
pub struct VerifyingKey {
    /// Unique for the life of the process; a cached token remembers it so that the token dies
    /// with its key.
    pub id: u64,
    pub kid: Option<String>,
    key_type: KeyType,
    /// What identifies the key material, so a refresh that returns the same key keeps its `id`.
    fingerprint: Vec<u8>,
    verifiers: Vec<(Algorithm, Verifier)>,
}

enum Verifier {
    Public(ParsedPublicKey),
    Hmac(Box<hmac::Key>),
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algs: Vec<&str> = self.verifiers.iter().map(|(a, _)| a.as_str()).collect();
        f.debug_struct("VerifyingKey")
            .field("id", &self.id)
            .field("kid", &self.kid)
            .field("key_type", &self.key_type)
            .field("algorithms", &algs)
            .finish()
    }
}

impl VerifyingKey {
    pub fn supports(&self, alg: Algorithm) -> bool {
        self.verifiers.iter().any(|(a, _)| *a == alg)
    }

    pub fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.verifiers.iter().map(|(a, _)| *a)
    }

    pub fn same_material(&self, other: &VerifyingKey) -> bool {
        self.kid == other.kid
            && self.fingerprint == other.fingerprint
            && self.algorithms().eq(other.algorithms())
    }

    /// Verifies a JWS signature; `false` for an algorithm this key was not bound to.
    pub fn verify(&self, alg: Algorithm, signing_input: &[u8], signature: &[u8]) -> bool {
        let Some((_, verifier)) = self.verifiers.iter().find(|(a, _)| *a == alg) else {
            return false;
        };
        match verifier {
            Verifier::Public(key) => key.verify_sig(signing_input, signature).is_ok(),
            Verifier::Hmac(key) => hmac::verify(key, signing_input, signature).is_ok(),
        }
    }

    /// The provider's `shared_secret_env` key, bound to the HS algorithms it allows.
    pub fn shared_secret(secret: &[u8], allowed: &[Algorithm]) -> Option<VerifyingKey> {
        let verifiers: Vec<(Algorithm, Verifier)> = allowed
            .iter()
            .filter_map(|&alg| {
                let h = match alg {
                    Algorithm::HS256 => hmac::HMAC_SHA256,
                    Algorithm::HS384 => hmac::HMAC_SHA384,
                    Algorithm::HS512 => hmac::HMAC_SHA512,
                    _ => return None,
                };
                Some((alg, Verifier::Hmac(Box::new(hmac::Key::new(h, secret)))))
            })
            .collect();
        (!verifiers.is_empty()).then(|| VerifyingKey {
            id: NEXT_KEY_ID.fetch_add(1, Ordering::Relaxed),
            kid: None,
            key_type: KeyType::Oct,
            fingerprint: Vec::new(),
            verifiers,
        })
    }
}

/// Why one JWKS entry was not loaded; logged, never fatal for the rest of the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skipped {
    NotAnObject,
    UnsupportedKeyType(String),
    NotForSignatures,
    PrivateKeyMaterial,
    AlgorithmNotAllowed(String),
    AlgorithmDoesNotFitKey(String),
    Malformed(&'static str),
    RsaKeyTooSmall(usize),
    DuplicateKid,
    TooManyKeys,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::NotAnObject => f.write_str("entry is not a JSON object"),
            Skipped::UnsupportedKeyType(k) => write!(f, "unsupported key type {k:?}"),
            Skipped::NotForSignatures => f.write_str("key is not for signatures (use/key_ops)"),
            Skipped::PrivateKeyMaterial => f.write_str("entry publishes private key material"),
            Skipped::AlgorithmNotAllowed(a) => {
                write!(f, "alg {a:?} is not in the provider's allow-list")
            }
            Skipped::AlgorithmDoesNotFitKey(a) => {
                write!(f, "alg {a:?} does not fit the key type or curve")
            }
            Skipped::Malformed(why) => write!(f, "malformed key: {why}"),
            Skipped::RsaKeyTooSmall(bits) => {
                write!(f, "RSA key of {bits} bits; at least 2048 are required")
            }
            Skipped::DuplicateKid => f.write_str("kid already used by an earlier key of the set"),
            Skipped::TooManyKeys => write!(f, "more than {MAX_KEYS} keys in the set"),
        }
    }
}

#[derive(Debug)]
pub struct ParsedJwks {
    pub keys: Vec<VerifyingKey>,
    /// `(kid or position, why)` for every entry left out.
    pub skipped: Vec<(String, Skipped)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the document is not JSON")]
    NotJson,
    #[error("the document has no `keys` array")]
    NoKeysArray,
}

/// Parses a JWKS document; keys the provider cannot use are skipped, not fatal.
pub fn parse_jwks(body: &[u8], allowed: &[Algorithm]) -> Result<ParsedJwks, JwksError> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| JwksError::NotJson)?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::NoKeysArray)?;
    let mut keys: Vec<VerifyingKey> = Vec::new();
    let mut skipped = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let label = entry
            .get("kid")
            .and_then(Value::as_str)
            .map(|k| format!("kid {k:?}"))
            .unwrap_or_else(|| format!("keys[{i}]"));
        if keys.len() >= MAX_KEYS {
            skipped.push((label, Skipped::TooManyKeys));
            continue;
        }
        match parse_jwk(entry, allowed) {
            Ok(key) if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) => {
                skipped.push((label, Skipped::DuplicateKid));
            }
            Ok(key) => keys.push(key),
            Err(why) => skipped.push((label, why)),
        }
    }
    Ok(ParsedJwks { keys, skipped })
}

/// The public key a DPoP proof carries in its `jwk` header, for the proof's own `alg`: held to
/// the rules of a JWKS entry (key type and curve fit `alg`, no private members, RSA of 2048 bits
/// and more).
pub(crate) fn proof_key(jwk: &Value, alg: Algorithm) -> Result<VerifyingKey, Skipped> {
    parse_jwk(jwk, &[alg])
}

fn parse_jwk(entry: &Value, allowed: &[Algorithm]) -> Result<VerifyingKey, Skipped> {
    let obj = entry.as_object().ok_or(Skipped::NotAnObject)?;
    let kty = str_member(obj, "kty")?.ok_or(Skipped::Malformed("missing kty"))?;
    if let Some(usage) = str_member(obj, "use")? {
        if usage != "sig" {
            return Err(Skipped::NotForSignatures);
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let verify = ops
            .as_array()
            .ok_or(Skipped::Malformed("key_ops is not an array"))?
            .iter()
            .any(|op| op.as_str() == Some("verify"));
        if !verify {
            return Err(Skipped::NotForSignatures);
        }
    }
    // A JWKS is public; an entry carrying `d` (or RSA primes) leaks its signing key, so it is
    // treated as compromised rather than used.
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| obj.contains_key(*m))
    {
        return Err(Skipped::PrivateKeyMaterial);
    }
    let kid = str_member(obj, "kid")?.map(str::to_string);
    let (key_type, material) = match kty {
        "RSA" => rsa_material(obj)?,
        "EC" => ec_material(obj)?,
        "OKP" => okp_material(obj)?,
        other => return Err(Skipped::UnsupportedKeyType(other.to_string())),
    };
    let algorithms: Vec<Algorithm> = match str_member(obj, "alg")? {
        Some(name) => {
            let alg = Algorithm::parse(name)
                .ok_or_else(|| Skipped::AlgorithmNotAllowed(name.to_string()))?;
            if alg.key_type() != key_type {
                return Err(Skipped::AlgorithmDoesNotFitKey(name.to_string()));
            }
            if !allowed.contains(&alg) {
                return Err(Skipped::AlgorithmNotAllowed(name.to_string()));
            }
            vec![alg]
        }
        None => allowed
            .iter()
            .copied()
            .filter(|a| a.key_type() == key_type)
            .collect(),
    };
    if algorithms.is_empty() {
        return Err(Skipped::AlgorithmNotAllowed(format!("any for kty {kty}")));
    }
    let verifiers = algorithms
        .into_iter()
        .map(|alg| {
            let parsed = ParsedPublicKey::new(verification_algorithm(alg), &material)
                .map_err(|_| Skipped::Malformed("public key rejected by the crypto library"))?;
            Ok((alg, Verifier::Public(parsed)))
        })
        .collect::<Result<Vec<_>, Skipped>>()?;
    Ok(VerifyingKey {
        id: NEXT_KEY_ID.fetch_add(1, Ordering::Relaxed),
        kid,
        key_type,
        fingerprint: material,
        verifiers,
    })
}

fn verification_algorithm(alg: Algorithm) -> &'static dyn VerificationAlgorithm {
    match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        // JWS carries ECDSA signatures as fixed-width r||s (RFC 7518 3.4); the DER form is refused.
        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &signature::ED25519,
        // Never reached: HMAC keys are built by `shared_secret`, and a JWKS `oct` key is skipped.
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => &signature::ED25519,
    }
}

fn str_member<'a>(
    obj: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, Skipped> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Skipped::Malformed(match name {
            "kty" => "kty is not a string",
            "use" => "use is not a string",
            "kid" => "kid is not a string",
            "alg" => "alg is not a string",
            "crv" => "crv is not a string",
            _ => "member is not a string",
        })),
    }
}

fn bytes_member(
    obj: &Map<String, Value>,
    name: &'static str,
    why: &'static str,
) -> Result<Vec<u8>, Skipped> {
    let text = str_member(obj, name)?.ok_or(Skipped::Malformed(why))?;
    b64_decode(text).ok_or(Skipped::Malformed(why))
}

/// RSA keys as PKCS#1 `RSAPublicKey` DER, the form the crypto library parses once at load.
fn rsa_material(obj: &Map<String, Value>) -> Result<(KeyType, Vec<u8>), Skipped> {
    let n = bytes_member(obj, "n", "missing or invalid n")?;
    let e = bytes_member(obj, "e", "missing or invalid e")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    if n.is_empty() || e.is_empty() || e.len() > 4 {
        return Err(Skipped::Malformed("invalid RSA modulus or exponent"));
    }
    let bits = n.len() * 8 - n[0].leading_zeros() as usize;
    if bits < 2048 {
        return Err(Skipped::RsaKeyTooSmall(bits));
    }
    let mut body = der_integer(n);
    body.extend(der_integer(e));
    Ok((KeyType::Rsa, der_tlv(0x30, &body)))
}

fn ec_material(obj: &Map<String, Value>) -> Result<(KeyType, Vec<u8>), Skipped> {
    let crv = str_member(obj, "crv")?.ok_or(Skipped::Malformed("missing crv"))?;
    let (key_type, width) = match crv {
        "P-256" => (KeyType::EcP256, 32),
        "P-384" => (KeyType::EcP384, 48),
        other => return Err(Skipped::UnsupportedKeyType(format!("EC {other}"))),
    };
    let x = bytes_member(obj, "x", "missing or invalid x")?;
    let y = bytes_member(obj, "y", "missing or invalid y")?;
    // RFC 7518 6.2.1.2: coordinates are exactly the curve's width, so a short one is malformed.
    if x.len() != width || y.len() != width {
        return Err(Skipped::Malformed(
            "EC coordinate of the wrong length for its curve",
        ));
    }
    let mut point = Vec::with_capacity(1 + 2 * width);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok((key_type, point))
}

fn okp_material(obj: &Map<String, Value>) -> Result<(KeyType, Vec<u8>), Skipped> {
    let crv = str_member(obj, "crv")?.ok_or(Skipped::Malformed("missing crv"))?;
    if crv != "Ed25519" {
        return Err(Skipped::UnsupportedKeyType(format!("OKP {crv}")));
    }
    let x = bytes_member(obj, "x", "missing or invalid x")?;
    if x.len() != 32 {
        return Err(Skipped::Malformed("Ed25519 key of the wrong length"));
    }
    Ok((KeyType::Ed25519, x))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn der_integer(magnitude: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_some_and(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(magnitude);
    der_tlv(0x02, &content)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

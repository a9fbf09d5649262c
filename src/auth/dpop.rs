//! DPoP proofs (RFC 9449 4.3): the JWS a client signs with its own key for each request, proving
//! it holds the key its access token is bound to (`cnf.jkt`).
//!
//! Pure and strict like the token decoder: three canonical base64url parts, JSON objects without
//! repeated members, no `crit`. The checks run cheapest first, so a forged or stale proof costs no
//! signature check: `typ`, `alg`, the `jwk` and its RFC 7638 thumbprint against the token's
//! `jkt`, `htm`, `htu`, `iat`, `ath`, `jti`, and last the signature. Whether the `jti` was seen
//! before is the replay cache's question (`auth::replay`), asked after every check here passed.

use aws_lc_rs::digest;
use http::Method;
use serde_json::{Map, Value};

use super::jwk::{proof_key, Skipped};
use super::token::{b64_decode, decode_object, media_type_eq};
use super::Algorithm;
use crate::algorithm::AlgorithmSet;

/// Longest `jti` taken: real ones are 16 to 64 characters; the replay cache stores a hash of it.
pub const MAX_JTI_LEN: usize = 512;

/// Why a proof was refused. Every one is answered alike (401 `invalid_dpop_proof`); the variant
/// names the failed check for `check --request` and the tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofFault {
    /// No `DPoP` header with a token that needs one.
    Missing,
    /// More than one `DPoP` header (RFC 9449 4.3 check 1).
    Duplicate,
    /// Not a compact JWS of canonical base64url JSON objects (repeated members and `crit`
    /// included), or over the size limit.
    Malformed,
    /// `typ` is not `dpop+jwt`.
    Type,
    /// `alg` is not an asymmetric algorithm of the provider's.
    Algorithm,
    /// No `jwk`, or not a public key of a type and curve that fits `alg`.
    Key,
    /// The `jwk` carries private key members.
    PrivateKey,
    /// The `jwk`'s thumbprint is not the token's `cnf.jkt`, or the token has none.
    Thumbprint,
    /// `htm` is not the request's method.
    Method,
    /// `htu` is not the request's URI (scheme, host, path), or carries a query or fragment.
    Uri,
    /// `iat` missing, or outside `max_age` (plus `clock_skew`) of now.
    Time,
    /// `ath` missing or not the hash of the token presented.
    TokenHash,
    /// `jti` missing, empty or too long.
    Id,
    /// The signature does not verify with the `jwk`.
    Signature,
    /// A proof already accepted within its window (the replay cache).
    Replayed,
}

impl ProofFault {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ProofFault::Missing => "no DPoP proof",
            ProofFault::Duplicate => "more than one DPoP header",
            ProofFault::Malformed => "malformed proof",
            ProofFault::Type => "typ is not dpop+jwt",
            ProofFault::Algorithm => "alg is not allowed",
            ProofFault::Key => "jwk is not a usable public key",
            ProofFault::PrivateKey => "jwk holds private key material",
            ProofFault::Thumbprint => "jwk is not the key the token is bound to (cnf.jkt)",
            ProofFault::Method => "htm is not the request method",
            ProofFault::Uri => "htu is not the request URI",
            ProofFault::Time => "iat is outside max_age",
            ProofFault::TokenHash => "ath is not the hash of the token",
            ProofFault::Id => "jti is missing or invalid",
            ProofFault::Signature => "signature does not verify",
            ProofFault::Replayed => "jti already used",
        }
    }
}

/// What the request a proof must be for looks like.
pub struct Expected<'a> {
    pub method: &'a Method,
    /// Whether the proof's `htu` names this request's target (the caller normalizes both).
    pub htu: &'a (dyn Fn(&str) -> bool + Sync),
    /// The access token exactly as presented, for `ath`.
    pub token: &'a [u8],
    /// The token's `cnf.jkt`; `None` when it has none (then no proof can match).
    pub jkt: Option<&'a str>,
    pub algorithms: AlgorithmSet,
    /// Seconds since the epoch.
    pub now: f64,
    pub max_age: f64,
    pub clock_skew: f64,
    /// Longest proof taken.
    pub max_bytes: usize,
}

/// A proof that passed every check but the replay cache.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AcceptedProof {
    /// What the replay cache remembers: a hash of the key's thumbprint and the `jti`, so one
    /// client's `jti` can never collide with (and block) another's.
    pub replay_key: [u8; 16],
    /// The last second this proof could pass the `iat` check: it need not be remembered longer.
    pub usable_until: f64,
}

/// Checks a `DPoP` header value against the request it came with.
///
/// # Errors
///
/// The first [`ProofFault`] found, cheapest checks first.
pub fn verify_proof(proof: &[u8], expected: &Expected<'_>) -> Result<AcceptedProof, ProofFault> {
    if proof.len() > expected.max_bytes {
        return Err(ProofFault::Malformed);
    }
    let proof = std::str::from_utf8(proof).map_err(|_| ProofFault::Malformed)?;
    let mut parts = proof.splitn(4, '.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofFault::Malformed);
    };
    let header = decode_object(header_b64).map_err(|_| ProofFault::Malformed)?;
    if header.contains_key("crit") {
        return Err(ProofFault::Malformed);
    }
    match header.get("typ") {
        Some(Value::String(typ)) if media_type_eq(typ, "dpop+jwt") => {}
        _ => return Err(ProofFault::Type),
    }
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Algorithm::parse(name).ok_or(ProofFault::Algorithm)?,
        _ => return Err(ProofFault::Algorithm),
    };
    if !expected.algorithms.contains(alg) {
        return Err(ProofFault::Algorithm);
    }
    let jwk = match header.get("jwk") {
        Some(jwk @ Value::Object(members)) => {
            if PRIVATE_MEMBERS.iter().any(|m| members.contains_key(*m)) {
                return Err(ProofFault::PrivateKey);
            }
            jwk
        }
        _ => return Err(ProofFault::Key),
    };
    let thumbprint = jwk_thumbprint(jwk).ok_or(ProofFault::Key)?;
    let bound = expected.jkt.and_then(b64_decode);
    if bound.as_deref() != Some(thumbprint.as_slice()) {
        return Err(ProofFault::Thumbprint);
    }
    let claims = decode_object(payload_b64).map_err(|_| ProofFault::Malformed)?;
    match claims.get("htm") {
        Some(Value::String(htm)) if htm == expected.method.as_str() => {}
        _ => return Err(ProofFault::Method),
    }
    match claims.get("htu") {
        Some(Value::String(htu)) if (expected.htu)(htu) => {}
        _ => return Err(ProofFault::Uri),
    }
    let iat = match claims.get("iat") {
        Some(Value::Number(n)) => n.as_f64().filter(|t| t.is_finite()),
        _ => None,
    }
    .ok_or(ProofFault::Time)?;
    let oldest = expected.now - expected.max_age - expected.clock_skew;
    if iat < oldest || iat > expected.now + expected.clock_skew {
        return Err(ProofFault::Time);
    }
    let token_hash = digest::digest(&digest::SHA256, expected.token);
    match claims
        .get("ath")
        .and_then(Value::as_str)
        .and_then(b64_decode)
    {
        Some(ath) if ath == token_hash.as_ref() => {}
        _ => return Err(ProofFault::TokenHash),
    }
    let jti = match claims.get("jti") {
        Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_LEN => jti,
        _ => return Err(ProofFault::Id),
    };
    let signature = b64_decode(signature_b64).ok_or(ProofFault::Malformed)?;
    let key = proof_key(jwk, alg).map_err(|why| match why {
        Skipped::PrivateKeyMaterial => ProofFault::PrivateKey,
        _ => ProofFault::Key,
    })?;
    let signing_input = &proof.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    if !key.verify(alg, signing_input, &signature) {
        return Err(ProofFault::Signature);
    }
    Ok(AcceptedProof {
        replay_key: replay_key(&thumbprint, jti),
        usable_until: iat + expected.max_age + expected.clock_skew,
    })
}

/// JWK members that are private key material (RFC 7518 6.2.2, 6.3.2, 6.4; RFC 8037 2): a proof
/// carrying one has leaked its key, so it proves nothing.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The RFC 7638 thumbprint of a public JWK: SHA-256 over the key type's required members, in
/// lexicographic order, as JSON without whitespace (RFC 8037 2 for `OKP`). `None` for another key
/// type or a required member that is not a string.
pub fn jwk_thumbprint(jwk: &Value) -> Option<[u8; 32]> {
    let members: &[&str] = match jwk.get("kty")?.as_str()? {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = Map::new();
    for name in members {
        let value = jwk.get(*name)?;
        if !value.is_string() {
            return None;
        }
        canonical.insert((*name).to_string(), value.clone());
    }
    // serde_json's map is ordered by key (no `preserve_order`), and writes no whitespace.
    let text = serde_json::to_vec(&Value::Object(canonical)).ok()?;
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, &text).as_ref());
    Some(out)
}

fn replay_key(thumbprint: &[u8; 32], jti: &str) -> [u8; 16] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(thumbprint);
    ctx.update(jti.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&ctx.finish().as_ref()[..16]);
    out
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;

    use super::*;
    use crate::demo::mint::SigningKey;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// RFC 7638 3.1's example key and its thumbprint.
    #[test]
    fn rfc_7638_example_thumbprint() {
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let thumbprint = jwk_thumbprint(&jwk).expect("an RSA key");
        assert_eq!(
            b64(&thumbprint),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    /// RFC 8037 A.3's Ed25519 example: members other than the required ones do not count.
    #[test]
    fn rfc_8037_example_thumbprint() {
        let jwk = json!({
            "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "use": "sig"
        });
        let thumbprint = jwk_thumbprint(&jwk).expect("an OKP key");
        assert_eq!(
            b64(&thumbprint),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        assert!(jwk_thumbprint(&json!({"kty": "oct", "k": "c2VjcmV0"})).is_none());
        assert!(jwk_thumbprint(&json!({"kty": "EC", "crv": "P-256", "x": "AA"})).is_none());
        assert!(jwk_thumbprint(&json!({"kty": "OKP", "crv": "Ed25519", "x": 5})).is_none());
    }

    const TOKEN: &[u8] = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";
    const HTU: &str = "https://api.example.com/orders";
    const NOW: f64 = 1_767_225_600.0;

    struct Client {
        key: SigningKey,
        jwk: Value,
        jkt: String,
    }

    fn client() -> Client {
        let key = SigningKey::p256("client");
        let mut jwk = key.jwk();
        let members = jwk.as_object_mut().expect("object");
        members.retain(|k, _| ["kty", "crv", "x", "y"].contains(&k.as_str()));
        let jkt = b64(&jwk_thumbprint(&jwk).expect("EC"));
        Client { key, jwk, jkt }
    }

    /// A proof by `c` with `header` and `claims` members changed (`null` removes one).
    fn proof(c: &Client, header: Value, claims: Value) -> String {
        let mut h = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": c.jwk});
        let mut p = json!({
            "jti": "j-1", "htm": "GET", "htu": HTU, "iat": NOW,
            "ath": b64(digest::digest(&digest::SHA256, TOKEN).as_ref()),
        });
        for (target, changes) in [(&mut h, header), (&mut p, claims)] {
            for (k, v) in changes.as_object().expect("object") {
                match v {
                    Value::Null => target.as_object_mut().expect("object").remove(k),
                    v => target
                        .as_object_mut()
                        .expect("object")
                        .insert(k.clone(), v.clone()),
                };
            }
        }
        let input = format!(
            "{}.{}",
            b64(h.to_string().as_bytes()),
            b64(p.to_string().as_bytes())
        );
        let signature = c.key.sign("ES256", input.as_bytes());
        format!("{input}.{}", b64(&signature))
    }

    fn check(c: &Client, proof: &str) -> Result<AcceptedProof, ProofFault> {
        let method = Method::GET;
        let htu = |u: &str| u == HTU;
        verify_proof(
            proof.as_bytes(),
            &Expected {
                method: &method,
                htu: &htu,
                token: TOKEN,
                jkt: Some(&c.jkt),
                algorithms: AlgorithmSet::asymmetric(&[Algorithm::ES256, Algorithm::EdDSA]),
                now: NOW,
                max_age: 60.0,
                clock_skew: 5.0,
                max_bytes: 8192,
            },
        )
    }

    #[test]
    fn a_valid_proof_passes_and_names_its_replay_window() {
        let c = client();
        let accepted = check(&c, &proof(&c, json!({}), json!({}))).expect("valid");
        assert_eq!(accepted.usable_until, NOW + 65.0);
        let other_jti = check(&c, &proof(&c, json!({}), json!({"jti": "j-2"}))).expect("valid");
        assert_ne!(accepted.replay_key, other_jti.replay_key);
        let media_type = proof(&c, json!({"typ": "application/DPoP+JWT"}), json!({}));
        assert!(check(&c, &media_type).is_ok(), "RFC 7515 4.1.9 media type");
        // Members beyond the required ones (`kid`, `use`) change neither key nor thumbprint.
        let decorated = proof(&c, json!({"jwk": c.key.jwk()}), json!({}));
        assert!(check(&c, &decorated).is_ok());
        let fractional = proof(&c, json!({}), json!({"iat": NOW - 0.5, "nonce": "ignored"}));
        assert!(check(&c, &fractional).is_ok());
    }

    #[test]
    fn every_fault_is_named() {
        let c = client();
        let other = client();
        let faults: Vec<(&str, String, ProofFault)> = vec![
            ("not a JWS", "abc.def".into(), ProofFault::Malformed),
            (
                "four parts",
                format!("{}.x", proof(&c, json!({}), json!({}))),
                ProofFault::Malformed,
            ),
            (
                "crit",
                proof(&c, json!({"crit": ["htm"]}), json!({})),
                ProofFault::Malformed,
            ),
            (
                "typ jwt",
                proof(&c, json!({"typ": "JWT"}), json!({})),
                ProofFault::Type,
            ),
            (
                "no typ",
                proof(&c, json!({"typ": null}), json!({})),
                ProofFault::Type,
            ),
            (
                "alg none",
                proof(&c, json!({"alg": "none"}), json!({})),
                ProofFault::Algorithm,
            ),
            (
                "alg HS256",
                proof(&c, json!({"alg": "HS256"}), json!({})),
                ProofFault::Algorithm,
            ),
            (
                "alg not allowed",
                proof(&c, json!({"alg": "RS256"}), json!({})),
                ProofFault::Algorithm,
            ),
            (
                "no jwk",
                proof(&c, json!({"jwk": null}), json!({})),
                ProofFault::Key,
            ),
            (
                "jwk oct",
                proof(
                    &c,
                    json!({"jwk": {"kty": "oct", "k": "c2VjcmV0"}}),
                    json!({}),
                ),
                ProofFault::PrivateKey,
            ),
            (
                "jwk a string",
                proof(&c, json!({"jwk": "key"}), json!({})),
                ProofFault::Key,
            ),
            (
                "jwk of no known kty",
                proof(&c, json!({"jwk": {"kty": "XYZ", "x": "AA"}}), json!({})),
                ProofFault::Key,
            ),
            (
                "another key",
                proof(&other, json!({}), json!({})),
                ProofFault::Thumbprint,
            ),
            (
                "htm",
                proof(&c, json!({}), json!({"htm": "POST"})),
                ProofFault::Method,
            ),
            (
                "htm lower case",
                proof(&c, json!({}), json!({"htm": "get"})),
                ProofFault::Method,
            ),
            (
                "htu",
                proof(
                    &c,
                    json!({}),
                    json!({"htu": "https://api.example.com/other"}),
                ),
                ProofFault::Uri,
            ),
            (
                "no iat",
                proof(&c, json!({}), json!({"iat": null})),
                ProofFault::Time,
            ),
            (
                "iat a string",
                proof(&c, json!({}), json!({"iat": "1767225600"})),
                ProofFault::Time,
            ),
            (
                "stale",
                proof(&c, json!({}), json!({"iat": NOW - 66.0})),
                ProofFault::Time,
            ),
            (
                "future",
                proof(&c, json!({}), json!({"iat": NOW + 6.0})),
                ProofFault::Time,
            ),
            (
                "no ath",
                proof(&c, json!({}), json!({"ath": null})),
                ProofFault::TokenHash,
            ),
            (
                "ath of another token",
                proof(&c, json!({}), json!({"ath": b64(&[0; 32])})),
                ProofFault::TokenHash,
            ),
            (
                "no jti",
                proof(&c, json!({}), json!({"jti": null})),
                ProofFault::Id,
            ),
            (
                "empty jti",
                proof(&c, json!({}), json!({"jti": ""})),
                ProofFault::Id,
            ),
            (
                "long jti",
                proof(&c, json!({}), json!({"jti": "j".repeat(MAX_JTI_LEN + 1)})),
                ProofFault::Id,
            ),
        ];
        for (what, p, want) in faults {
            assert_eq!(check(&c, &p), Err(want), "{what}");
        }
        // The private key itself in `jwk`: refused before its thumbprint is even compared.
        let mut leaked = c.key.jwk();
        leaked["d"] = json!("AAAA");
        let p = proof(&c, json!({"jwk": leaked}), json!({}));
        assert_eq!(check(&c, &p), Err(ProofFault::PrivateKey));
        // A signature by another key over a proof naming ours.
        let good = proof(&c, json!({}), json!({}));
        let (input, _) = good.rsplit_once('.').expect("JWS");
        let forged = format!(
            "{input}.{}",
            b64(&other.key.sign("ES256", input.as_bytes()))
        );
        assert_eq!(check(&c, &forged), Err(ProofFault::Signature));
        // A token without cnf.jkt: no proof can match it.
        let method = Method::GET;
        let htu = |u: &str| u == HTU;
        let unbound = Expected {
            method: &method,
            htu: &htu,
            token: TOKEN,
            jkt: None,
            algorithms: AlgorithmSet::asymmetric(&[Algorithm::ES256]),
            now: NOW,
            max_age: 60.0,
            clock_skew: 5.0,
            max_bytes: 8192,
        };
        assert_eq!(
            verify_proof(good.as_bytes(), &unbound),
            Err(ProofFault::Thumbprint)
        );
        let tiny = Expected {
            max_bytes: 100,
            ..unbound
        };
        assert_eq!(
            verify_proof(good.as_bytes(), &tiny),
            Err(ProofFault::Malformed)
        );
    }

    /// The fuzz seeds, signed by Python's `cryptography` and PyJWT (ES256, EdDSA, RS256), verify
    /// here, and stop verifying when one byte of the signed part changes.
    #[test]
    fn proofs_made_by_another_implementation_verify() {
        for seed in [
            include_str!("../../fuzz/seeds/dpop_proof/00-es256"),
            include_str!("../../fuzz/seeds/dpop_proof/01-eddsa"),
            include_str!("../../fuzz/seeds/dpop_proof/02-rs256"),
        ] {
            let header = seed.split('.').next().expect("header");
            let header: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64"))
                    .expect("JSON");
            let jkt = b64(&jwk_thumbprint(&header["jwk"]).expect("jwk"));
            let method = Method::GET;
            let htu = |u: &str| u == "https://fuzz.example/p";
            let expected = Expected {
                method: &method,
                htu: &htu,
                token: b"fuzz-token",
                jkt: Some(&jkt),
                algorithms: AlgorithmSet::asymmetric(&Algorithm::ALL),
                now: 1_767_225_600.0,
                max_age: 60.0,
                clock_skew: 30.0,
                max_bytes: 8192,
            };
            assert!(verify_proof(seed.as_bytes(), &expected).is_ok(), "{seed}");
            let (input, signature) = seed.rsplit_once('.').expect("JWS");
            let (h, p) = input.split_once('.').expect("JWS");
            let mut claims: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("b64")).expect("JSON");
            claims["jti"] = json!("another");
            let altered = format!("{h}.{}.{signature}", b64(claims.to_string().as_bytes()));
            assert_eq!(
                verify_proof(altered.as_bytes(), &expected),
                Err(ProofFault::Signature)
            );
        }
    }

    #[test]
    fn repeated_members_are_refused() {
        let c = client();
        let good = proof(&c, json!({}), json!({}));
        let (h, rest) = good.split_once('.').expect("JWS");
        let header = String::from_utf8(URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
        let doubled = header.replacen("{", "{\"typ\":\"dpop+jwt\",", 1);
        let p = format!("{}.{rest}", b64(doubled.as_bytes()));
        assert_eq!(check(&c, &p), Err(ProofFault::Malformed));
    }
}

//! Project Wycheproof vectors (JWS, JWK sets, ECDSA P1363) through the gateway's own validation
//! code: `auth::jwk::parse_jwks` for key sets, `auth::token::decode` for the compact form and
//! `VerifyingKey::verify` for signatures, with the key chosen the way `ProviderKeys` chooses it.
//!
//! The vectors are read at test time from `tests/vectors/wycheproof` (vendored with their
//! Apache-2.0 notice, so a clone tests itself with nothing beside it). A case the gateway cannot express is skipped with its reason, and every
//! skip is printed; a valid vector the contract deliberately refuses is asserted refused.
//!
//! Most Wycheproof JWS payloads are not JSON (`foo`, `Test`, raw bytes), while the gateway only
//! takes JWTs. For those, the header and signature go through `decode` with the payload part
//! replaced by `e30` (`{}`), the payload part through the same canonical base64url decoder, and
//! the signature is verified over the original signing input.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jwt_gateway::auth::jwk::{parse_jwks, VerifyingKey};
use jwt_gateway::auth::token::{b64_decode, decode};
use jwt_gateway::auth::Algorithm;
use serde_json::{json, Value};

use crate::support::keys::b64;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/wycheproof");

fn load(name: &str) -> Value {
    let path = PathBuf::from(VECTORS).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "Wycheproof vectors are missing: cannot read {} ({e}); they are part of the \
             repository under tests/vectors/wycheproof.",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Every public-key algorithm: the most permissive provider an operator could configure, so a
/// refusal below comes from the key or the token, never from a narrow allow-list.
const PUBLIC_ALGS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Default)]
struct Tally {
    ran: usize,
    passed: usize,
    skipped: BTreeMap<String, usize>,
    /// Valid per Wycheproof, refused per the contract (asserted refused).
    stricter: BTreeMap<String, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn skip(&mut self, why: &str) {
        *self.skipped.entry(why.to_string()).or_default() += 1;
    }

    fn check(&mut self, id: String, expect_valid: bool, verdict: Result<(), String>) {
        self.ran += 1;
        match (expect_valid, verdict) {
            (true, Ok(())) | (false, Err(_)) => self.passed += 1,
            (true, Err(why)) => self.failures.push(format!("{id}: valid, refused ({why})")),
            (false, Ok(())) => self.failures.push(format!("{id}: invalid, accepted")),
        }
    }

    /// A valid vector that the contract refuses on purpose: counted as a deliberate refusal.
    fn stricter(&mut self, id: String, why: &str, verdict: Result<(), String>) {
        self.ran += 1;
        match verdict {
            Err(_) => {
                self.passed += 1;
                *self.stricter.entry(why.to_string()).or_default() += 1;
            }
            Ok(()) => self
                .failures
                .push(format!("{id}: the contract refuses this ({why}), accepted")),
        }
    }

    fn report(&self, name: &str) {
        let skipped: usize = self.skipped.values().sum();
        println!(
            "wycheproof {name}: ran {}, passed {}, skipped {skipped}",
            self.ran, self.passed
        );
        for (why, n) in &self.skipped {
            println!("  skipped {n}: {why}");
        }
        for (why, n) in &self.stricter {
            println!("  valid per Wycheproof, refused per the contract {n}: {why}");
        }
        for f in &self.failures {
            println!("  FAILED {f}");
        }
        assert!(self.ran > 0, "{name}: no Wycheproof case ran");
        assert!(
            self.failures.is_empty(),
            "{name}: {} Wycheproof cases failed:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// What a provider built from a vector's keys holds: the JWKS keys, and the HMAC secret when the
/// vector's key would be configured through `shared_secret_env`.
struct Keys {
    jwks: Vec<VerifyingKey>,
    secret: Option<VerifyingKey>,
}

impl Keys {
    /// The key `ProviderKeys::key_for` would pick, or the reason it picks none.
    fn pick(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyingKey, String> {
        if alg.is_hmac() {
            return self
                .secret
                .as_ref()
                .filter(|k| k.supports(alg))
                .ok_or_else(|| "alg_not_allowed (no shared secret)".to_string());
        }
        match kid {
            Some(kid) => match self.jwks.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(k) if k.supports(alg) => Ok(k),
                Some(_) => Err("alg_not_allowed (key not bound to alg)".into()),
                None => Err("unknown_kid".into()),
            },
            None => {
                let mut fit = self.jwks.iter().filter(|k| k.supports(alg));
                match (fit.next(), fit.next()) {
                    (Some(k), None) => Ok(k),
                    _ => Err("unknown_kid (no unambiguous key)".into()),
                }
            }
        }
    }
}

/// The gateway's verdict on one compact JWS (see the module comment for non-JSON payloads).
fn verdict(jws: &str, keys: &Keys) -> Result<(), String> {
    let parts: Vec<&str> = jws.split('.').collect();
    let payload_is_object = parts.len() == 3
        && b64_decode(parts[1])
            .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
            .is_some_and(|v| v.is_object());
    let (alg, kid, signature, signing_input) = if parts.len() != 3 || payload_is_object {
        let token = decode(jws).map_err(|r| r.as_str().to_string())?;
        (
            token.alg,
            token.kid,
            token.signature,
            token.signing_input.to_vec(),
        )
    } else {
        b64_decode(parts[1]).ok_or("malformed payload encoding")?;
        let stand_in = format!("{}.e30.{}", parts[0], parts[2]);
        let token = decode(&stand_in).map_err(|r| r.as_str().to_string())?;
        let input = format!("{}.{}", parts[0], parts[1]).into_bytes();
        (token.alg, token.kid, token.signature, input)
    };
    let key = keys.pick(kid.as_deref(), alg)?;
    if key.verify(alg, &signing_input, &signature) {
        Ok(())
    } else {
        Err("bad_signature".into())
    }
}

/// The minimum the config accepts for `shared_secret_env` (see `hs_secret_under_32_bytes...`).
const MIN_SHARED_SECRET: usize = 32;

enum KeyPlan {
    Keys(Keys),
    Skip(&'static str),
    /// The gateway refuses this key at config time, so every token under it is refused.
    RefusedByConfig,
}

/// Turns a vector's key (a JWK or a JWK set, public if given, else private) into what a provider
/// would hold. An `oct` key is what an operator would put in `shared_secret_env`; a JWKS cannot
/// deliver an HMAC secret (its `oct` entries are skipped as private material).
fn plan(key: &Value) -> KeyPlan {
    let set = if key.get("keys").is_some() {
        key.clone()
    } else {
        json!({ "keys": [key] })
    };
    let entries = set["keys"].as_array().cloned().unwrap_or_default();
    let octs: Vec<&Value> = entries.iter().filter(|e| e["kty"] == "oct").collect();
    if octs.len() > 1 && octs.len() == entries.len() {
        return KeyPlan::Skip(
            "several HMAC keys: the gateway takes one shared secret per provider, not a set",
        );
    }
    let secret = match (octs.len() == 1 && entries.len() == 1).then(|| octs[0]) {
        None => None,
        Some(oct) => {
            let Some(bytes) = oct["k"].as_str().and_then(b64_decode) else {
                return KeyPlan::RefusedByConfig;
            };
            if bytes.len() < MIN_SHARED_SECRET {
                return KeyPlan::RefusedByConfig;
            }
            match oct["alg"].as_str().and_then(Algorithm::parse) {
                Some(alg) if alg.is_hmac() => VerifyingKey::shared_secret(&bytes, &[alg]),
                // An AES key (A256GCM, A256KW...) is not an HMAC secret: nothing to configure.
                _ => None,
            }
        }
    };
    let parsed = match parse_jwks(set.to_string().as_bytes(), &PUBLIC_ALGS) {
        Ok(p) => p.keys,
        Err(_) => Vec::new(),
    };
    KeyPlan::Keys(Keys {
        jwks: parsed,
        secret,
    })
}

fn jws_text(case: &Value) -> String {
    match &case["jws"] {
        Value::String(s) => s.clone(),
        // JSON serialization: the gateway reads only the compact form from a header.
        other => other.to_string(),
    }
}

/// Cases whose expected result the gateway's design overrides, with the reason.
fn override_for(file: &str, case: &Value, group: &Value) -> Option<(&'static str, bool)> {
    let comment = case["comment"].as_str().unwrap_or_default();
    let jws = jws_text(case);
    let valid = case["result"] == "valid";
    let header_alg = jws
        .split('.')
        .next()
        .and_then(b64_decode)
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .and_then(|h| h["alg"].as_str().map(str::to_string));
    let key_alg = group["public"]["alg"].as_str().map(str::to_string);
    if valid && comment.starts_with("InvalidCharacterInserted") {
        return Some((
            "contract: a token must be canonical base64url (a lax decoder skips the character)",
            true,
        ));
    }
    if valid && header_alg.as_deref() == Some("ES512") {
        return Some(("ES512 / P-521 is not a gateway algorithm", true));
    }
    if valid
        && key_alg.is_some()
        && header_alg.is_some()
        && key_alg != header_alg
        && file == "json_web_signature_test.json"
    {
        return Some((
            "the JWK's `alg` binds the key to that algorithm (PS256 key, PS384 token)",
            true,
        ));
    }
    None
}

fn run_jws_file(file: &str, tally: &mut Tally) {
    let doc = load(file);
    for group in doc["testGroups"].as_array().expect("testGroups") {
        let key = if group["public"].is_null() {
            &group["private"]
        } else {
            &group["public"]
        };
        let plan = plan(key);
        let valid_texts: Vec<String> = group["tests"]
            .as_array()
            .expect("tests")
            .iter()
            .filter(|c| c["result"] == "valid")
            .map(jws_text)
            .collect();
        for case in group["tests"].as_array().expect("tests") {
            let id = format!(
                "{file} tcId {} ({})",
                case["tcId"],
                case["comment"].as_str().unwrap_or_default()
            );
            let valid = case["result"] == "valid";
            let jws = jws_text(case);
            let keys = match &plan {
                KeyPlan::Skip(why) => {
                    tally.skip(why);
                    continue;
                }
                KeyPlan::RefusedByConfig => {
                    if valid {
                        tally.skip("HMAC key the config refuses (under 32 bytes)");
                    } else {
                        tally.ran += 1;
                        tally.passed += 1;
                    }
                    continue;
                }
                KeyPlan::Keys(keys) => keys,
            };
            if !valid && valid_texts.contains(&jws) {
                // tcId 367 and 370 ("invalidBase64Padding") carry the very token of the valid
                // tcId 357: the padding they describe is not in the vector.
                tally.skip("vector defect: byte-identical to a valid vector of its group");
                continue;
            }
            if !valid && case["comment"] == "rejectsKeyWithRocaVulnerability" {
                tally.skip("ROCA-weak RSA keys are not detected (the key is well-formed 2048-bit)");
                continue;
            }
            if let Some((why, refused)) = override_for(file, case, group) {
                if refused {
                    tally.stricter(id, why, verdict(&jws, keys));
                }
                continue;
            }
            // RFC 7518 3.2 wants an HMAC key at least as long as the hash; the contract's floor
            // is 32 bytes for every HS algorithm, so a 47-byte HS384 key is accepted (reported).
            if !valid && case["comment"] == "key_too_short" && keys.secret.is_some() {
                tally.skip(
                    "HS384/HS512 key shorter than its hash: the contract's floor is 32 bytes",
                );
                continue;
            }
            tally.check(id, valid, verdict(&jws, keys));
        }
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A big-endian integer as exactly `width` bytes (Wycheproof prints a sign byte when needed).
fn fixed_width(bytes: &[u8], width: usize) -> Option<Vec<u8>> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let trimmed = &bytes[first..];
    (trimmed.len() <= width).then(|| {
        let mut out = vec![0u8; width - trimmed.len()];
        out.extend_from_slice(trimmed);
        out
    })
}

fn run_p1363_file(file: &str, alg: Algorithm, crv: &str, width: usize, tally: &mut Tally) {
    let doc = load(file);
    for group in doc["testGroups"].as_array().expect("testGroups") {
        let public = &group["publicKey"];
        let (Some(x), Some(y)) = (
            public["wx"]
                .as_str()
                .map(hex)
                .and_then(|x| fixed_width(&x, width)),
            public["wy"]
                .as_str()
                .map(hex)
                .and_then(|y| fixed_width(&y, width)),
        ) else {
            for _ in group["tests"].as_array().expect("tests") {
                tally.skip("public key coordinate wider than the curve");
            }
            continue;
        };
        let jwk = json!({"kty": "EC", "crv": crv, "kid": "p1363", "use": "sig",
                         "alg": alg.as_str(), "x": b64(&x), "y": b64(&y)});
        let parsed = parse_jwks(json!({ "keys": [jwk] }).to_string().as_bytes(), &[alg])
            .expect("a JWKS document");
        let key = parsed.keys.first();
        for case in group["tests"].as_array().expect("tests") {
            let id = format!(
                "{file} tcId {} ({})",
                case["tcId"],
                case["comment"].as_str().unwrap_or_default()
            );
            let valid = case["result"] == "valid";
            let msg = hex(case["msg"].as_str().expect("msg"));
            let sig = hex(case["sig"].as_str().expect("sig"));
            let verdict = match key {
                Some(key) if key.verify(alg, &msg, &sig) => Ok(()),
                Some(_) => Err("bad_signature".to_string()),
                None => Err(format!("key skipped: {:?}", parsed.skipped)),
            };
            tally.check(id, valid, verdict);
        }
    }
}

#[test]
fn wycheproof_json_web_signature_vectors() {
    let mut tally = Tally::default();
    run_jws_file("json_web_signature_test.json", &mut tally);
    tally.report("json_web_signature_test.json");
}

#[test]
fn wycheproof_json_web_key_vectors() {
    let mut tally = Tally::default();
    run_jws_file("json_web_key_test.json", &mut tally);
    tally.report("json_web_key_test.json");
}

#[test]
fn wycheproof_ecdsa_p1363_vectors() {
    let mut p256 = Tally::default();
    run_p1363_file(
        "ecdsa_secp256r1_sha256_p1363_test.json",
        Algorithm::ES256,
        "P-256",
        32,
        &mut p256,
    );
    p256.report("ecdsa_secp256r1_sha256_p1363_test.json");
    let mut p384 = Tally::default();
    run_p1363_file(
        "ecdsa_secp384r1_sha384_p1363_test.json",
        Algorithm::ES384,
        "P-384",
        48,
        &mut p384,
    );
    p384.report("ecdsa_secp384r1_sha384_p1363_test.json");
}

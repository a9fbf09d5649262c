//! `auth::dpop::verify_proof` on any bytes as the `DPoP` header: no panic, and nothing verifies
//! whose own `jwk` did not sign it. So that runs get past the thumbprint check, the token's
//! `cnf.jkt` is taken to be the thumbprint of whatever `jwk` the input's header holds; the request
//! is `GET https://fuzz.example/p` at the seeds' `iat` with the seeds' token.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::Method;
use jwt_gateway::auth::dpop::{jwk_thumbprint, verify_proof, Expected};
use jwt_gateway::auth::{Algorithm, AlgorithmSet};
use libfuzzer_sys::fuzz_target;

const NOW: f64 = 1_767_225_600.0;
const TOKEN: &[u8] = b"fuzz-token";

fuzz_target!(|proof: &[u8]| {
    let jkt = std::str::from_utf8(proof)
        .ok()
        .and_then(|p| p.split('.').next())
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .and_then(|h| h.get("jwk").and_then(jwk_thumbprint))
        .map(|t| URL_SAFE_NO_PAD.encode(t));
    let method = Method::GET;
    let htu = |u: &str| u == "https://fuzz.example/p";
    let expected = Expected {
        method: &method,
        htu: &htu,
        token: TOKEN,
        jkt: jkt.as_deref(),
        algorithms: AlgorithmSet::asymmetric(&Algorithm::ALL),
        now: NOW,
        max_age: 60.0,
        clock_skew: 30.0,
        max_bytes: 8192,
    };
    let _ = verify_proof(proof, &expected);
});

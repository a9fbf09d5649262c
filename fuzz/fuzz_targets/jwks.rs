//! JWKS parsing with every algorithm allowed, so every key type's branch is reachable.
#![no_main]

use jwt_gateway::auth::jwk::{parse_jwks, MAX_KEYS};
use jwt_gateway::auth::Algorithm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(parsed) = parse_jwks(body, &Algorithm::ALL) {
        assert!(parsed.keys.len() <= MAX_KEYS);
    }
});

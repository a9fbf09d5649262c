//! Strict JWS compact decoding: no panic, and a token that decodes is in its one canonical form
//! (the signature re-encodes to exactly the bytes it came from).
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_gateway::auth::token::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|token: &str| {
    let Ok(decoded) = decode(token) else {
        return;
    };
    let rebuilt = format!(
        "{}.{}",
        String::from_utf8_lossy(decoded.signing_input),
        URL_SAFE_NO_PAD.encode(&decoded.signature)
    );
    assert_eq!(rebuilt, token);
});

//! Signature checking against one real ES256 key: starting from a valid token, no mutation of it
//! may verify. Decodes and verifies the way the gateway does (`parse_jwks`, `token::decode`,
//! `VerifyingKey::verify`); claims and times are not this target's concern.
//!
//! The first input byte picks how the rest becomes a candidate token, so that most runs reach the
//! signature check rather than dying in base64 or JSON:
//! - 0: the rest is the whole token text;
//! - 1: the rest is the raw signature, put behind the real header and payload;
//! - 2: the rest is a list of edits to the real token, 3 bytes each: position (u16, little
//!   endian, modulo the length) and the byte to xor there.
//!
//! The key and tokens were minted once by `fuzz/mint_es256.py`; its private key was discarded.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_gateway::auth::jwk::{parse_jwks, VerifyingKey};
use jwt_gateway::auth::token::decode;
use jwt_gateway::auth::Algorithm;
use libfuzzer_sys::fuzz_target;

const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","use":"sig","alg":"ES256","kid":"fuzz-es256","x":"TByYg3AEdyp0L7WTZ3g9_IhHMgHsSSRp5wPusY6zDfA","y":"vwSiarmD0x8LVAfLck6NxrdGG2NCiHszdunnA7Iz9Fo"}]}"#;
const TOKEN: &str = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImZ1enotZXMyNTYifQ.eyJpc3MiOiJodHRwczovL2Z1enouZXhhbXBsZSIsInN1YiI6ImZ1enoiLCJhdWQiOiJmdXp6LWFwaSIsImV4cCI6NDEwMjQ0NDgwMH0.RiEhVor1p9G-YW6mMg-1u7zwXIw4HiQmo8yv72lBiQpRbgOuNJJONsKLXRtYWXjtL-rLzdSH1G11jK8D1wl-TA";
const TWIN: &str = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImZ1enotZXMyNTYifQ.eyJpc3MiOiJodHRwczovL2Z1enouZXhhbXBsZSIsInN1YiI6ImZ1enoiLCJhdWQiOiJmdXp6LWFwaSIsImV4cCI6NDEwMjQ0NDgwMH0.RiEhVor1p9G-YW6mMg-1u7zwXIw4HiQmo8yv72lBiQqukfxQy22xyj10ouSnpocSjPwu39KPyhd-LRu_JVmnBQ";

fn key() -> &'static VerifyingKey {
    static KEY: OnceLock<VerifyingKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut parsed =
            parse_jwks(JWKS.as_bytes(), &Algorithm::ALL).expect("JWKS constant parses");
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        let key = parsed.keys.pop().expect("JWKS constant holds one key");
        // Both constants must verify, or this target checks nothing.
        for good in [TOKEN, TWIN] {
            let token = decode(good).expect("token constant decodes");
            assert!(key.verify(token.alg, token.signing_input, &token.signature));
        }
        key
    })
}

fn candidate(data: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    Some(match mode % 3 {
        0 => rest.to_vec(),
        1 => {
            let signed = TOKEN.rsplit_once('.')?.0;
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(rest)).into_bytes()
        }
        _ => {
            let mut token = TOKEN.as_bytes().to_vec();
            for edit in rest.chunks_exact(3) {
                let at = usize::from(u16::from_le_bytes([edit[0], edit[1]])) % token.len();
                token[at] ^= edit[2];
            }
            token
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let key = key();
    let Some(bytes) = candidate(data) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return;
    };
    let Ok(token) = decode(text) else {
        return;
    };
    // Every algorithm is tried, not only the one the token names: a key must refuse any algorithm
    // it was not bound to.
    for alg in Algorithm::ALL {
        if key.verify(alg, token.signing_input, &token.signature) {
            assert_eq!(alg, Algorithm::ES256);
            assert_eq!(token.alg, Algorithm::ES256);
            // ECDSA itself accepts (r, s) and (r, n - s); the gateway does not insist on low s
            // because many IdPs' signers do not produce it, so the twin is the one other spelling.
            assert!(
                text == TOKEN || text == TWIN,
                "a token other than the one signed verified: {text:?}"
            );
        }
    }
});

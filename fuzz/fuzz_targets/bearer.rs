//! `extract_bearer` on one or two `Authorization` values: the input's first two lines (a newline
//! can never be part of a header value). `Bearer` and `DPoP` credentials share one syntax.
#![no_main]

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use jwt_gateway::auth::bearer::{extract_bearer, BadAuthorization, Bearer};
use libfuzzer_sys::fuzz_target;

/// Small, so the fuzzer reaches the length check as well as the character scan.
const MAX_TOKEN_BYTES: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n').take(2) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(AUTHORIZATION, value);
        }
    }
    let values = headers.get_all(AUTHORIZATION).iter().count();
    match extract_bearer(&headers, MAX_TOKEN_BYTES) {
        Ok(Bearer::Token(token) | Bearer::Dpop(token)) => {
            assert_eq!(values, 1);
            assert!(
                !token.is_empty() && token.len() <= MAX_TOKEN_BYTES,
                "{token:?}"
            );
            let body = token.trim_end_matches('=');
            assert!(
                !body.is_empty()
                    && body.bytes().all(|b| b.is_ascii_alphanumeric()
                        || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')),
                "{token:?} is not a b64token"
            );
        }
        Ok(Bearer::Absent) => assert!(values <= 1),
        Err(BadAuthorization::Duplicate) => assert_eq!(values, 2),
        Err(_) => assert_eq!(values, 1),
    }
});

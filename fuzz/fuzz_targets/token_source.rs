//! `auth.token_from` reading on any query and cookie bytes: no panic; the target the upstream
//! gets holds no parameter that decodes to the token's name, keeps the other parameters in order
//! and byte for byte, and the forwarded `Cookie` holds no token cookie; read again, neither
//! yields a token.
#![no_main]

use http::{HeaderMap, HeaderValue};
use jwt_gateway::auth::token_source::{presented, rewritten_cookie, without_param, Presented};
use jwt_gateway::config::TokenSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let text = String::from_utf8_lossy(raw);
    let (query, cookie) = text.split_once('\n').unwrap_or((&text, ""));
    let sources = [
        TokenSource::Cookie("at".into()),
        TokenSource::Query("access_token".into()),
    ];
    let mut headers = HeaderMap::new();
    for field in cookie.split('\n') {
        if let Ok(value) = HeaderValue::from_str(field) {
            headers.append(http::header::COOKIE, value);
        }
    }
    let _ = presented(&sources, &headers, Some(query));

    if let Some(kept) = without_param(query, "access_token") {
        let only_query = [TokenSource::Query("access_token".into())];
        assert_eq!(
            presented(&only_query, &HeaderMap::new(), Some(&kept)),
            Ok(Presented::Absent),
            "{query:?} -> {kept:?}"
        );
        // What is kept is the other segments, in order, each as it was.
        let mut rest = query;
        for segment in kept.split(['&', ';']) {
            let at = rest.find(segment).unwrap_or_else(|| panic!("{query:?} -> {kept:?}"));
            rest = &rest[at + segment.len()..];
        }
    }
    if let Some(joined) = rewritten_cookie(&headers, &["at"]) {
        let mut forwarded = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&joined) {
            forwarded.insert(http::header::COOKIE, value);
        }
        let only_cookie = [TokenSource::Cookie("at".into())];
        assert_eq!(
            presented(&only_cookie, &forwarded, None),
            Ok(Presented::Absent),
            "{cookie:?} -> {joined:?}"
        );
    }
});

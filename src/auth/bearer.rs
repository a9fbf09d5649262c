//! Bearer-token extraction, strict enough that the gateway and an upstream can never pick
//! different credentials out of one request.
//!
//! Only `Authorization: Bearer <token>` (RFC 6750 2.1) and `Authorization: DPoP <token>` (RFC
//! 9449 7.1, the same syntax; the token must then come with a proof) count; tokens in query
//! strings or bodies are never looked at, so they cannot leak through URLs into logs. Anything
//! ambiguous (two headers, two words, odd whitespace) is refused rather than interpreted.

use std::fmt;

use http::header::AUTHORIZATION;
use http::HeaderMap;

/// What the Authorization header(s) of a request yield.
#[derive(Debug, PartialEq, Eq)]
pub enum Bearer<'a> {
    Token(&'a str),
    /// A token presented under the `DPoP` scheme: sender-constrained, proven by a `DPoP` header.
    Dpop(&'a str),
    Absent,
}

/// The scheme a token came under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

/// Why the Authorization header was refused (answered 400 `invalid_request` by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadAuthorization {
    Duplicate,
    NotAscii,
    Malformed,
    TooLong,
}

impl BadAuthorization {
    /// Short `snake_case` label, stable enough to use in logs and metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            BadAuthorization::Duplicate => "duplicate",
            BadAuthorization::NotAscii => "not_ascii",
            BadAuthorization::Malformed => "malformed",
            BadAuthorization::TooLong => "too_long",
        }
    }
}

impl fmt::Display for BadAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Finds the bearer token of a request, if it carries one.
///
/// Another scheme (e.g. `Basic`) yields [`Bearer::Absent`]: such credentials are meant for the
/// upstream, not for the gateway.
///
/// # Errors
///
/// [`BadAuthorization`] when the header is duplicated, not visible ASCII, not a well-formed
/// `Bearer` credential, or carries a token longer than `max_token_bytes`.
pub fn extract_bearer(
    headers: &HeaderMap,
    max_token_bytes: usize,
) -> Result<Bearer<'_>, BadAuthorization> {
    match credential(headers, max_token_bytes)? {
        Some(credential) => {
            let token = credential.checked()?;
            Ok(match credential.scheme {
                Scheme::Bearer => Bearer::Token(token),
                Scheme::Dpop => Bearer::Dpop(token),
            })
        }
        None => Ok(Bearer::Absent),
    }
}

/// A `Bearer` credential whose scheme, spacing, count and length are checked, but not yet the
/// token's characters: the proxy first asks the verified-token cache, where a hit is a string
/// that passed [`Credential::checked`] before, and scans only on a miss.
#[derive(Clone, Copy, Debug)]
pub struct Credential<'a> {
    /// The whole header value it came from, to tell a non-ASCII header from a malformed one.
    value: &'a [u8],
    token: &'a [u8],
    scheme: Scheme,
}

impl<'a> Credential<'a> {
    /// A token that arrived outside an `Authorization` header (the admin API's `{"token"}`).
    #[must_use]
    pub fn from_token(token: &'a str) -> Credential<'a> {
        Credential {
            value: token.as_bytes(),
            token: token.as_bytes(),
            scheme: Scheme::Bearer,
        }
    }

    #[must_use]
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The token as sent; not yet known to be a b64token.
    #[must_use]
    pub fn bytes(&self) -> &'a [u8] {
        self.token
    }

    /// The token, once its characters are the b64token ones (RFC 6750 2.1).
    ///
    /// # Errors
    ///
    /// [`BadAuthorization::NotAscii`] or [`BadAuthorization::Malformed`].
    pub fn checked(&self) -> Result<&'a str, BadAuthorization> {
        if !is_b64token(self.token) {
            return Err(refusal(self.value, BadAuthorization::Malformed));
        }
        // b64token characters are ASCII, so this cannot fail; no unsafe needed to say so.
        std::str::from_utf8(self.token).map_err(|_| BadAuthorization::Malformed)
    }
}

/// The request's `Bearer` credential, `None` when it has none (or another scheme's).
///
/// # Errors
///
/// As [`extract_bearer`], except for the token's characters ([`Credential::checked`]).
pub fn credential(
    headers: &HeaderMap,
    max_token_bytes: usize,
) -> Result<Option<Credential<'_>>, BadAuthorization> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    // With two headers the gateway might validate one token while the upstream honours the
    // other, whatever their schemes.
    if values.next().is_some() {
        return Err(BadAuthorization::Duplicate);
    }
    // A well-formed bearer credential is visible ASCII by construction, so the ASCII check runs
    // only when the value is about to be refused or passed over: one scan of the token, not two.
    match bearer_token(value.as_bytes(), max_token_bytes) {
        Ok(Some((scheme, token))) => Ok(Some(Credential {
            value: value.as_bytes(),
            token,
            scheme,
        })),
        Ok(None) if value.to_str().is_ok() => Ok(None),
        Ok(None) => Err(BadAuthorization::NotAscii),
        Err(bad) => Err(refusal(value.as_bytes(), bad)),
    }
}

/// A refused value that is not even visible ASCII is reported as such, whatever else is wrong.
fn refusal(value: &[u8], bad: BadAuthorization) -> BadAuthorization {
    // What `HeaderValue::to_str` accepts: visible ASCII, space and tab.
    if !value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        BadAuthorization::NotAscii
    } else {
        bad
    }
}

/// The token of a `Bearer` or `DPoP` credential, `None` for another scheme.
fn bearer_token(
    value: &[u8],
    max_token_bytes: usize,
) -> Result<Option<(Scheme, &[u8])>, BadAuthorization> {
    // Splitting at tabs as well keeps `Bearer<TAB>token` from passing as an unknown scheme
    // (and so as an anonymous request) instead of being refused.
    let at = value
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(at);
    if scheme.is_empty() {
        // Empty, blank, or starting with whitespace: not a credential of any scheme.
        return Err(BadAuthorization::Malformed);
    }
    let scheme = if scheme.eq_ignore_ascii_case(b"bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case(b"dpop") {
        Scheme::Dpop
    } else {
        return Ok(None);
    };
    // RFC 6750 asks for `1*SP`: no tabs, and no scheme without a token.
    let Some(rest) = rest.strip_prefix(b" ") else {
        return Err(BadAuthorization::Malformed);
    };
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    let token = &rest[start..];
    // Checked before the character scan so an oversized header costs nothing more.
    if token.len() > max_token_bytes {
        return Err(BadAuthorization::TooLong);
    }
    Ok(Some((scheme, token)))
}

/// RFC 6750 2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
///
/// Anything else, trailing whitespace and a second word included, makes the header ambiguous.
/// Every token the cache does not know is scanned whole here, so the scan is branch-free per byte
/// and folds 32-byte chunks, which the compiler turns into vector code.
fn is_b64token(token: &[u8]) -> bool {
    let end = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let body = &token[..end];
    !body.is_empty()
        && body
            .chunks(32)
            .all(|chunk| chunk.iter().fold(true, |ok, &b| ok & is_b64token_byte(b)))
}

#[inline(always)]
fn is_b64token_byte(b: u8) -> bool {
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    letter
        | digit
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    const MAX: usize = 64;

    fn one(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        headers
    }

    fn extract(value: &str) -> Result<Bearer<'_>, BadAuthorization> {
        // Leaking keeps the borrowed token comparable in tables; fine in tests.
        let headers: &'static HeaderMap = Box::leak(Box::new(one(value.as_bytes())));
        extract_bearer(headers, MAX)
    }

    #[test]
    fn a_credential_is_scanned_only_when_asked() {
        let read = |value: &[u8]| -> Option<(Vec<u8>, Result<String, BadAuthorization>)> {
            let headers = one(value);
            credential(&headers, MAX)
                .unwrap()
                .map(|c| (c.bytes().to_vec(), c.checked().map(str::to_string)))
        };
        assert_eq!(
            read(b"Bearer abc!"),
            Some((b"abc!".to_vec(), Err(BadAuthorization::Malformed)))
        );
        assert_eq!(
            read(b"Bearer abc\xff"),
            Some((b"abc\xff".to_vec(), Err(BadAuthorization::NotAscii)))
        );
        assert_eq!(
            read(b"Bearer abc"),
            Some((b"abc".to_vec(), Ok("abc".into())))
        );
        assert_eq!(read(b"Basic abc"), None);
    }

    #[test]
    fn no_header_is_absent() {
        assert_eq!(extract_bearer(&HeaderMap::new(), MAX), Ok(Bearer::Absent));
    }

    #[test]
    fn other_headers_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "proxy-authorization",
            HeaderValue::from_static("Bearer abc"),
        );
        headers.insert("x-access-token", HeaderValue::from_static("abc"));
        assert_eq!(extract_bearer(&headers, MAX), Ok(Bearer::Absent));
    }

    #[test]
    fn tokens_table() {
        let cases: &[(&str, &str)] = &[
            ("Bearer abc", "abc"),
            ("bearer abc", "abc"),
            ("BEARER abc", "abc"),
            ("bEaReR abc", "abc"),
            ("Bearer  abc", "abc"),
            ("Bearer     abc", "abc"),
            ("Bearer a", "a"),
            (
                "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
                "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
            ),
            ("Bearer AZaz09-._~+/", "AZaz09-._~+/"),
            ("Bearer abc=", "abc="),
            ("Bearer abc==", "abc=="),
            ("Bearer a===", "a==="),
            ("Bearer ...", "..."),
            ("Bearer //", "//"),
        ];
        for (value, token) in cases {
            assert_eq!(
                extract(value),
                Ok(Bearer::Token(token)),
                "value = {value:?}"
            );
        }
    }

    /// `DPoP` takes the syntax of `Bearer` (RFC 9449 7.1), its malformations included.
    #[test]
    fn dpop_credentials_are_read_like_bearer_ones() {
        for (value, token) in [
            ("DPoP eyJ.eyJ.sig", "eyJ.eyJ.sig"),
            ("dpop abc", "abc"),
            ("DPOP  abc=", "abc="),
        ] {
            assert_eq!(extract(value), Ok(Bearer::Dpop(token)), "{value:?}");
        }
        for value in ["DPoP", "DPoP ", "DPoP\tabc", "DPoP abc def", "DPoP a!b"] {
            assert_eq!(
                extract(value),
                Err(BadAuthorization::Malformed),
                "{value:?}"
            );
        }
        let long = format!("DPoP {}", "a".repeat(MAX + 1));
        assert_eq!(extract(&long), Err(BadAuthorization::TooLong));
        let headers = one(b"DPoP abc");
        let c = credential(&headers, MAX).unwrap().unwrap();
        assert_eq!((c.scheme(), c.checked()), (Scheme::Dpop, Ok("abc")));
    }

    #[test]
    fn other_schemes_are_absent() {
        for value in [
            "Basic dXNlcjpwYXNz",
            "basic dXNlcjpwYXNz",
            "Digest username=\"u\", realm=\"r\"",
            "Negotiate YIIB",
            "DPoPx abc",
            "Token abc",
            "Bearerx abc",
            "Bearer-x abc",
            "Bear abc",
            "Bearer,abc",
            "Bearer:abc",
            "xBearer abc",
            "Basic",
            "Basic ",
            "Basic  a b  c  ",
            "Basic\tx",
            "Bearerabc",
            "abc",
        ] {
            assert_eq!(extract(value), Ok(Bearer::Absent), "value = {value:?}");
        }
    }

    #[test]
    fn malformed_table() {
        for value in [
            "",
            " ",
            "   ",
            "\t",
            " \t ",
            " Bearer abc",
            "\tBearer abc",
            " Basic abc",
            "Bearer",
            "bearer",
            "Bearer ",
            "Bearer  ",
            "Bearer\t",
            "Bearer\tabc",
            "Bearer \tabc",
            "Bearer abc ",
            "Bearer abc\t",
            "Bearer abc def",
            "Bearer abc  def",
            "Bearer abc\tdef",
            "Bearer abc,def",
            "Bearer abc, Basic x",
            "Bearer =",
            "Bearer ==",
            "Bearer =abc",
            "Bearer a=b",
            "Bearer abc=def",
            "Bearer a\"b",
            "Bearer \"abc\"",
            "Bearer a:b",
            "Bearer a;b",
            "Bearer a%2Eb",
            "Bearer a@b",
            "Bearer a!b",
            "Bearer a*b",
        ] {
            assert_eq!(
                extract(value),
                Err(BadAuthorization::Malformed),
                "value = {value:?}"
            );
        }
    }

    #[test]
    fn not_ascii() {
        for value in [
            "Bearer \u{e9}".as_bytes(),
            b"Bearer abc\xff",
            b"Bearer \x80",
            b"Basic \xc3\xa9",
            b"\xff",
            b"Bearer\xa0abc",
        ] {
            let headers = one(value);
            assert_eq!(
                extract_bearer(&headers, MAX),
                Err(BadAuthorization::NotAscii),
                "value = {value:?}"
            );
        }
    }

    #[test]
    fn duplicates_are_refused_whatever_their_schemes() {
        for (a, b) in [
            ("Bearer abc", "Bearer abc"),
            ("Bearer abc", "Bearer def"),
            ("Bearer abc", "Basic dXNlcjpwYXNz"),
            ("Basic dXNlcjpwYXNz", "Bearer abc"),
            ("Basic a", "Basic b"),
            ("", ""),
            ("Bearer abc", "\u{e9}"),
        ] {
            let mut headers = HeaderMap::new();
            headers.append(
                AUTHORIZATION,
                HeaderValue::from_bytes(a.as_bytes()).unwrap(),
            );
            headers.append(
                AUTHORIZATION,
                HeaderValue::from_bytes(b.as_bytes()).unwrap(),
            );
            assert_eq!(
                extract_bearer(&headers, MAX),
                Err(BadAuthorization::Duplicate),
                "values = {a:?}, {b:?}"
            );
        }
        let mut headers = HeaderMap::new();
        for _ in 0..3 {
            headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        }
        assert_eq!(
            extract_bearer(&headers, MAX),
            Err(BadAuthorization::Duplicate)
        );
    }

    #[test]
    fn length_limit_is_inclusive_and_checked_first() {
        let at = format!("Bearer {}", "a".repeat(MAX));
        let over = format!("Bearer {}", "a".repeat(MAX + 1));
        assert_eq!(extract(&at), Ok(Bearer::Token(&at[7..])));
        assert_eq!(extract(&over), Err(BadAuthorization::TooLong));
        // The limit applies before the characters are judged.
        let junk = format!("Bearer {}", "!".repeat(MAX + 1));
        assert_eq!(extract(&junk), Err(BadAuthorization::TooLong));
        // Padding counts towards the length; separating spaces do not.
        let padded = format!("Bearer {}=", "a".repeat(MAX));
        assert_eq!(extract(&padded), Err(BadAuthorization::TooLong));
        let spaced = format!("Bearer     {}", "a".repeat(MAX));
        assert_eq!(extract(&spaced), Ok(Bearer::Token(&spaced[11..])));
        // A zero limit refuses every token but still tells a missing one apart.
        let headers = one(b"Bearer a");
        assert_eq!(extract_bearer(&headers, 0), Err(BadAuthorization::TooLong));
        let headers = one(b"Bearer ");
        assert_eq!(
            extract_bearer(&headers, 0),
            Err(BadAuthorization::Malformed)
        );
        let headers = one(b"Basic a");
        assert_eq!(extract_bearer(&headers, 0), Ok(Bearer::Absent));
    }

    #[test]
    fn token_borrows_from_the_header() {
        let headers = one(b"Bearer abc");
        let Ok(Bearer::Token(token)) = extract_bearer(&headers, MAX) else {
            panic!("expected a token");
        };
        let value = headers.get(AUTHORIZATION).unwrap().as_bytes();
        assert!(value.as_ptr_range().contains(&token.as_ptr()));
    }

    #[test]
    fn labels_are_distinct_snake_case() {
        use BadAuthorization::*;
        let all = [Duplicate, NotAscii, Malformed, TooLong];
        let mut labels: Vec<&str> = all.iter().map(|e| e.as_str()).collect();
        for l in &labels {
            assert!(
                l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{l}"
            );
        }
        assert_eq!(TooLong.to_string(), "too_long");
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }

    fn b64token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._~+/-]{1,40}={0,3}"
    }

    fn bearer_scheme() -> impl Strategy<Value = String> {
        // Spelled out: `(?i:...)` would also draw Unicode case variants such as U+017F.
        "[Bb][Ee][Aa][Rr][Ee][Rr]"
    }

    /// Header values that look enough like credentials to reach every branch, with any byte
    /// `HeaderValue` can hold (tabs, obs-text) mixed in.
    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        let noise = prop::collection::vec(
            prop_oneof![
                6 => 0x20u8..0x7F,
                1 => Just(b'\t'),
                1 => 0x80u8..=0xFF,
                1 => any::<u8>(),
            ],
            0..48,
        );
        let prefix = prop_oneof![
            Just(String::new()),
            bearer_scheme().prop_map(|s| format!("{s} ")),
            Just("Basic ".to_owned()),
        ];
        (prefix, noise).prop_map(|(p, n)| [p.into_bytes(), n].concat())
    }

    fn candidate() -> impl Strategy<Value = String> {
        let scheme = prop_oneof![Just(String::new()), bearer_scheme(), "[Bb]asic|x"];
        (
            "[ \t]{0,2}",
            scheme,
            "[ \t]{0,3}",
            "[A-Za-z0-9._~+/=\\- ,\t]{0,12}",
        )
            .prop_map(|(a, b, c, d)| format!("{a}{b}{c}{d}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn never_panics(
            values in prop::collection::vec(header_value(), 0..3),
            max in 0usize..64,
        ) {
            let mut headers = HeaderMap::new();
            for v in &values {
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    headers.append(AUTHORIZATION, v);
                }
            }
            let _ = extract_bearer(&headers, max);
        }

        #[test]
        fn any_returned_token_is_valid_and_within_the_limit(
            value in candidate(),
            max in 0usize..16,
        ) {
            let headers = one(value.as_bytes());
            match extract_bearer(&headers, max) {
                Ok(Bearer::Token(token)) => {
                    prop_assert!(token.len() <= max);
                    prop_assert!(is_b64token(token.as_bytes()));
                    let (scheme, rest) = value.split_at(6);
                    prop_assert!(scheme.eq_ignore_ascii_case("bearer"));
                    prop_assert!(rest.starts_with(' '));
                    prop_assert_eq!(rest.trim_start_matches(' '), token);
                }
                Ok(Bearer::Dpop(_)) => prop_assert!(false, "no DPoP scheme is drawn"),
                Ok(Bearer::Absent) => {
                    let scheme = value.split([' ', '\t']).next().unwrap_or_default();
                    prop_assert!(!scheme.is_empty());
                    prop_assert!(!scheme.eq_ignore_ascii_case("bearer"));
                }
                Err(e) => prop_assert!(matches!(
                    e,
                    BadAuthorization::Malformed | BadAuthorization::TooLong
                )),
            }
        }

        #[test]
        fn well_formed_tokens_round_trip(
            token in b64token(),
            scheme in bearer_scheme(),
            spaces in " {1,4}",
        ) {
            let value = format!("{scheme}{spaces}{token}");
            let headers = one(value.as_bytes());
            let fits = extract_bearer(&headers, token.len());
            prop_assert_eq!(fits, Ok(Bearer::Token(token.as_str())));
            let too_long = extract_bearer(&headers, token.len() - 1);
            prop_assert_eq!(too_long, Err(BadAuthorization::TooLong));
            // Re-extracting from a header rebuilt around the token gives the token back.
            let rebuilt = one(format!("Bearer {token}").as_bytes());
            prop_assert_eq!(extract_bearer(&rebuilt, MAX), Ok(Bearer::Token(token.as_str())));
        }

        #[test]
        fn anything_after_the_token_is_malformed(
            token in b64token(),
            tail in "[ \t][ \t!-~]{0,8}",
        ) {
            let value = format!("Bearer {token}{tail}");
            let headers = one(value.as_bytes());
            prop_assert_eq!(extract_bearer(&headers, MAX), Err(BadAuthorization::Malformed));
        }
    }
}

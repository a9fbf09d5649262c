//! Strict JWS compact decoding and the token checks that do not depend on the route.
//!
//! Strict means: exactly three canonical base64url parts, JSON objects without repeated member
//! names, no `crit`, an `alg` from the provider's allow-list and never from the token's own say.
//! `jku`, `x5u`, `jwk` and `x5c` are ignored: nothing a token names is fetched or trusted.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Algorithm;
use crate::config::ProviderConfig;
use crate::denial::Reason;

/// Canonical, unpadded base64url only: a second spelling of the same bytes is refused, so a token
/// has exactly one form (and one cache entry).
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// A token split and parsed, signature not yet checked.
pub struct UnverifiedToken<'t> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub claims: Map<String, Value>,
    pub signing_input: &'t [u8],
    pub signature: Vec<u8>,
}

impl fmt::Debug for UnverifiedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnverifiedToken")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

pub fn decode(token: &str) -> Result<UnverifiedToken<'_>, Reason> {
    let mut parts = token.splitn(4, '.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::Malformed);
    };
    let header = decode_object(header_b64)?;
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Algorithm::parse(name).ok_or(Reason::AlgNotAllowed)?,
        _ => return Err(Reason::Malformed),
    };
    if header.contains_key("crit") {
        return Err(Reason::Malformed);
    }
    let kid = optional_string(&header, "kid")?;
    let typ = optional_string(&header, "typ")?;
    let claims = decode_object(payload_b64)?;
    let signature = b64_decode(signature_b64).ok_or(Reason::Malformed)?;
    if signature.is_empty() {
        return Err(Reason::BadSignature);
    }
    let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    Ok(UnverifiedToken {
        alg,
        kid,
        typ,
        claims,
        signing_input,
        signature,
    })
}

fn optional_string(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, Reason> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Reason::Malformed),
    }
}

/// One base64url part as a JSON object, refusing repeated member names (also a DPoP proof's).
pub(crate) fn decode_object(part: &str) -> Result<Map<String, Value>, Reason> {
    let bytes = b64_decode(part).ok_or(Reason::Malformed)?;
    match serde_json::from_slice::<StrictJson>(&bytes) {
        Ok(StrictJson(Value::Object(map))) => Ok(map),
        _ => Err(Reason::Malformed),
    }
}

/// JSON that refuses repeated member names at any depth: parsers disagree on which copy wins, and
/// that disagreement is how a token says one thing to the gateway and another to the service.
struct StrictJson(Value);

impl<'de> Deserialize<'de> for StrictJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON without repeated member names")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let StrictJson(value) = access.next_value()?;
            if map.insert(key, value).is_some() {
                return Err(de::Error::custom("repeated member name"));
            }
        }
        Ok(Value::Object(map))
    }
}

/// Seconds since the epoch, as JWT numeric dates count them.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the gateway keeps of a token whose signature and provider-level claims passed.
#[derive(Clone, Debug)]
pub struct VerifiedClaims {
    pub claims: Map<String, Value>,
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
    pub audiences: Vec<String>,
    pub sub: Option<String>,
    pub jti: Option<String>,
    pub iat: Option<f64>,
}

impl VerifiedClaims {
    /// Time checks run on every request, cache hits included: an entry may outlive a skewed `nbf`
    /// window or be read in the second its `exp` passes.
    pub fn check_times(&self, now: f64, skew: f64) -> Result<(), Reason> {
        if let Some(exp) = self.exp {
            if now - skew >= exp {
                return Err(Reason::Expired);
            }
        }
        if let Some(nbf) = self.nbf {
            if now + skew < nbf {
                return Err(Reason::NotYetValid);
            }
        }
        if let Some(iat) = self.iat {
            if iat > now + skew {
                return Err(Reason::NotYetValid);
            }
        }
        Ok(())
    }

    /// The route's audience if it sets one, else any of the provider's; no check when neither does.
    pub fn check_audience(&self, route: Option<&str>, provider: &[String]) -> Result<(), Reason> {
        let ok = match route {
            Some(aud) => self.audiences.iter().any(|a| a == aud),
            None if provider.is_empty() => true,
            None => self.audiences.iter().any(|a| provider.contains(a)),
        };
        ok.then_some(()).ok_or(Reason::Audience)
    }
}

/// The `iss` claim, read before verification only to choose which provider's keys to try.
pub fn issuer(claims: &Map<String, Value>) -> Result<&str, Reason> {
    match claims.get("iss") {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Reason::Malformed),
        None => Err(Reason::Issuer),
    }
}

/// Checks the provider-level claims of a token whose signature has been verified.
pub fn check_claims(
    token: UnverifiedToken<'_>,
    provider: &ProviderConfig,
    now: f64,
) -> Result<VerifiedClaims, Reason> {
    let claims = token.claims;
    if issuer(&claims)? != provider.issuer {
        return Err(Reason::Issuer);
    }
    let exp = numeric_date(&claims, "exp")?;
    let nbf = numeric_date(&claims, "nbf")?;
    let iat = numeric_date(&claims, "iat")?;
    for required in &provider.require_claims {
        if required.lookup(&claims).is_none() {
            return Err(Reason::MissingClaim);
        }
    }
    if let Some(expected) = &provider.require_typ {
        let typ = token.typ.as_deref().ok_or(Reason::Malformed)?;
        if !media_type_eq(typ, expected) {
            return Err(Reason::Malformed);
        }
    }
    let audiences = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or(Reason::Malformed))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Reason::Malformed),
    };
    let sub = string_claim(&claims, "sub")?;
    let jti = string_claim(&claims, "jti")?;
    let verified = VerifiedClaims {
        claims,
        exp,
        nbf,
        audiences,
        sub,
        jti,
        iat,
    };
    verified.check_times(now, provider.clock_skew.as_secs_f64())?;
    Ok(verified)
}

fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, Reason> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or(Reason::Malformed),
        Some(_) => Err(Reason::Malformed),
    }
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, Reason> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Reason::Malformed),
    }
}

/// RFC 7515 4.1.9: `typ` may omit the `application/` prefix, and media types are case-insensitive.
pub(crate) fn media_type_eq(got: &str, expected: &str) -> bool {
    fn short(t: &str) -> &str {
        // Compared as bytes: a client's `typ` may hold a multi-byte character across byte 12,
        // where slicing the str would panic. An ASCII prefix makes byte 12 a char boundary.
        let prefixed = t
            .as_bytes()
            .get(..12)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"application/"));
        if t.len() > 12 && prefixed {
            &t[12..]
        } else {
            t
        }
    }
    short(got).eq_ignore_ascii_case(short(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typ_with_a_multibyte_character_across_byte_12_is_compared_not_sliced() {
        // Found by the dpop_proof fuzz target: slicing at byte 12 panicked.
        assert!(!media_type_eq("f뮺뮺뮺뮺pop+jwt", "dpop+jwt"));
        assert!(media_type_eq("Application/DPoP+JWT", "dpop+jwt"));
        assert!(media_type_eq("JWT", "application/jwt"));
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    #[test]
    fn decodes_a_well_formed_token() {
        let t = token(
            r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#,
            r#"{"iss":"a","sub":"b"}"#,
        );
        let u = decode(&t).unwrap();
        assert_eq!(u.alg, Algorithm::ES256);
        assert_eq!(u.kid.as_deref(), Some("k1"));
        assert_eq!(u.signature, b"sig");
        assert_eq!(u.signing_input, t.rsplit_once('.').unwrap().0.as_bytes());
    }

    #[test]
    fn refuses_structural_tricks() {
        let ok_payload = r#"{"iss":"a"}"#;
        let cases = [
            (
                token(r#"{"alg":"RS256","alg":"none"}"#, ok_payload),
                Reason::Malformed,
            ),
            (
                token(r#"{"alg":"RS256"}"#, r#"{"iss":"a","iss":"b"}"#),
                Reason::Malformed,
            ),
            (
                token(r#"{"alg":"RS256"}"#, r#"{"x":{"a":1,"a":2}}"#),
                Reason::Malformed,
            ),
            (
                token(r#"{"alg":"RS256","crit":["exp"]}"#, ok_payload),
                Reason::Malformed,
            ),
            (
                token(r#"{"alg":"none"}"#, ok_payload),
                Reason::AlgNotAllowed,
            ),
            (
                token(r#"{"alg":"None"}"#, ok_payload),
                Reason::AlgNotAllowed,
            ),
            (
                token(r#"{"alg":"rs256"}"#, ok_payload),
                Reason::AlgNotAllowed,
            ),
            (token(r#"{"kid":"x"}"#, ok_payload), Reason::Malformed),
            (
                token(r#"{"alg":"RS256","kid":5}"#, ok_payload),
                Reason::Malformed,
            ),
            (token(r#"["alg"]"#, ok_payload), Reason::Malformed),
            (token(r#"{"alg":"RS256"}"#, "[1]"), Reason::Malformed),
            (
                format!("{}.{}.", b64(r#"{"alg":"RS256"}"#), b64(ok_payload)),
                Reason::BadSignature,
            ),
            (
                format!("{}.{}", b64(r#"{"alg":"RS256"}"#), b64(ok_payload)),
                Reason::Malformed,
            ),
            (
                format!("{}.{}.c2ln.x", b64(r#"{"alg":"RS256"}"#), b64(ok_payload)),
                Reason::Malformed,
            ),
            (
                format!("{}=.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(ok_payload)),
                Reason::Malformed,
            ),
        ];
        for (t, want) in cases {
            assert_eq!(decode(&t).map(|_| ()), Err(want), "{t}");
        }
    }

    #[test]
    fn refuses_non_canonical_base64() {
        // "c2lnAA" and "c2lnAB" would decode to the same bytes in a lax decoder.
        assert!(b64_decode("c2lnAA").is_some());
        assert!(b64_decode("c2lnAB").is_none());
        assert!(b64_decode("c2ln+w").is_none(), "standard alphabet");
        assert!(b64_decode("c2lnAA==").is_none(), "padding");
    }

    #[test]
    fn media_types_compare_like_rfc_7515_says() {
        assert!(media_type_eq("at+jwt", "at+jwt"));
        assert!(media_type_eq("application/AT+JWT", "at+jwt"));
        assert!(!media_type_eq("JWT", "at+jwt"));
    }
}

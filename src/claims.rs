//! Claim paths and claim values as the gateway reads them: for rules (`rules`) and for the
//! headers injected upstream (`proxy::headers`). Shared here so both agree on what a path means.

use std::fmt;

use http::HeaderValue;
use serde_json::{Map, Value};

/// A claim named by a dotted path into nested objects (`realm_access.roles`), compiled at load.
///
/// A top-level claim whose own name contains dots (`https://example.com/roles`, as Auth0 writes
/// namespaced claims) is found too: the whole text is tried as one name before it is split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimPath {
    text: Box<str>,
    segments: Box<[Box<str>]>,
}

impl ClaimPath {
    pub fn parse(text: &str) -> Result<ClaimPath, String> {
        if text.is_empty() {
            return Err("empty claim path".into());
        }
        let segments: Vec<Box<str>> = text.split('.').map(Box::from).collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(format!("{text:?}: empty path segment"));
        }
        Ok(ClaimPath {
            text: text.into(),
            segments: segments.into_boxed_slice(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The claim's value; JSON `null` counts as absent.
    pub fn lookup<'v>(&self, claims: &'v Map<String, Value>) -> Option<&'v Value> {
        if self.segments.len() > 1 {
            if let Some(v) = claims.get(&*self.text) {
                return non_null(v);
            }
        }
        let (first, rest) = self.segments.split_first()?;
        let mut current = claims.get(&**first)?;
        for segment in rest {
            current = current.as_object()?.get(&**segment)?;
        }
        non_null(current)
    }
}

fn non_null(v: &Value) -> Option<&Value> {
    (!v.is_null()).then_some(v)
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a claim value cannot travel upstream as a header without being altered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unrepresentable {
    ControlCharacter,
    CommaInArrayElement,
    SurroundingWhitespace,
}

/// Renders a claim for a header: strings as they are, numbers and booleans as JSON text, arrays of
/// scalars joined with `,`, objects (and arrays holding objects or arrays) as compact JSON.
/// A value that the header would carry altered is refused instead of being split or trimmed.
pub fn header_value(value: &Value) -> Result<HeaderValue, Unrepresentable> {
    let text = match value {
        Value::String(s) => {
            check_text(s)?;
            s.clone()
        }
        Value::Number(_) | Value::Bool(_) | Value::Null => value.to_string(),
        Value::Array(items) if items.iter().all(is_scalar) => {
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item {
                    Value::String(s) => {
                        check_text(s)?;
                        if s.contains(',') {
                            return Err(Unrepresentable::CommaInArrayElement);
                        }
                        out.push_str(s);
                    }
                    other => out.push_str(&other.to_string()),
                }
            }
            out
        }
        // serde_json escapes every control character, so compact JSON is always a safe header value.
        Value::Array(_) | Value::Object(_) => value.to_string(),
    };
    // The rendered String becomes the header's buffer: one allocation per value, not two.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .map_err(|_| Unrepresentable::ControlCharacter)
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn check_text(s: &str) -> Result<(), Unrepresentable> {
    if s.chars().any(char::is_control) {
        return Err(Unrepresentable::ControlCharacter);
    }
    if s.starts_with([' ', '\t']) || s.ends_with([' ', '\t']) {
        return Err(Unrepresentable::SurroundingWhitespace);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test input is an object"),
        }
    }

    #[test]
    fn dotted_paths_reach_nested_objects() {
        let c = claims(json!({"realm_access": {"roles": ["a", "b"]}, "sub": "u1", "n": null}));
        let p = ClaimPath::parse("realm_access.roles").unwrap();
        assert_eq!(p.lookup(&c), Some(&json!(["a", "b"])));
        assert_eq!(
            ClaimPath::parse("sub").unwrap().lookup(&c),
            Some(&json!("u1"))
        );
        assert_eq!(
            ClaimPath::parse("realm_access.missing").unwrap().lookup(&c),
            None
        );
        assert_eq!(ClaimPath::parse("sub.x").unwrap().lookup(&c), None);
        assert_eq!(
            ClaimPath::parse("n").unwrap().lookup(&c),
            None,
            "null is absent"
        );
    }

    #[test]
    fn namespaced_claim_names_with_dots_are_found_whole() {
        let c = claims(json!({"https://example.com/roles": ["admin"]}));
        let p = ClaimPath::parse("https://example.com/roles").unwrap();
        assert_eq!(p.lookup(&c), Some(&json!(["admin"])));
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["", ".a", "a.", "a..b"] {
            assert!(ClaimPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn header_rendering_follows_the_contract() {
        let ok = |v: Value| header_value(&v).map(|h| h.to_str().unwrap().to_string());
        assert_eq!(ok(json!("alice")).unwrap(), "alice");
        assert_eq!(ok(json!(42)).unwrap(), "42");
        assert_eq!(ok(json!(1.5)).unwrap(), "1.5");
        assert_eq!(ok(json!(true)).unwrap(), "true");
        assert_eq!(ok(json!(["a", "b", "c"])).unwrap(), "a,b,c");
        assert_eq!(ok(json!([1, 2])).unwrap(), "1,2");
        assert_eq!(ok(json!([])).unwrap(), "");
        assert_eq!(ok(json!({"a": [1, "x"]})).unwrap(), r#"{"a":[1,"x"]}"#);
        assert_eq!(ok(json!([{"a": 1}])).unwrap(), r#"[{"a":1}]"#);
        assert_eq!(ok(json!({"nl": "a\nb"})).unwrap(), r#"{"nl":"a\nb"}"#);
        let utf8 = header_value(&json!("José")).unwrap();
        assert_eq!(
            utf8.as_bytes(),
            "José".as_bytes(),
            "UTF-8 travels as its bytes"
        );
    }

    #[test]
    fn values_that_would_be_altered_are_refused() {
        assert_eq!(
            header_value(&json!("a\r\nX-Evil: 1")),
            Err(Unrepresentable::ControlCharacter)
        );
        assert_eq!(
            header_value(&json!("a\tb")),
            Err(Unrepresentable::ControlCharacter)
        );
        assert_eq!(
            header_value(&json!("a\u{0}")),
            Err(Unrepresentable::ControlCharacter)
        );
        assert_eq!(
            header_value(&json!(["a,b", "c"])),
            Err(Unrepresentable::CommaInArrayElement)
        );
        assert_eq!(
            header_value(&json!(["ok", "x\ny"])),
            Err(Unrepresentable::ControlCharacter)
        );
        assert_eq!(
            header_value(&json!(" padded")),
            Err(Unrepresentable::SurroundingWhitespace)
        );
    }
}

//! Per-route authorization rules (a leaf: config compiles them, auth and the proxy apply them) over verified claims: every requirement must hold (AND); within
//! one, `any_of` needs one listed value and `all_of` needs every one.

use serde_json::{Map, Value};

use crate::claims::ClaimPath;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub claim: ClaimPath,
    pub any_of: Vec<String>,
    pub all_of: Vec<String>,
}

impl Requirement {
    /// A missing claim, or one that is neither a string nor an array of strings, fails the rule.
    pub fn holds(&self, claims: &Map<String, Value>) -> bool {
        let Some(value) = self.claim.lookup(claims) else {
            return false;
        };
        let has = |wanted: &String| claim_has(value, wanted);
        (self.any_of.is_empty() || self.any_of.iter().any(has)) && self.all_of.iter().all(has)
    }
}

/// Whether the claim holds `wanted` as a whole word: a space-separated string is a list (RFC 8693
/// `scope`), so `orders:readwrite` never satisfies `orders:read`.
fn claim_has(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(s) => s.split(' ').any(|word| !word.is_empty() && word == wanted),
        Value::Array(items) => items.iter().any(|item| item.as_str() == Some(wanted)),
        _ => false,
    }
}

/// The index of the first requirement that fails, if any (for `check --request` to name it).
pub fn first_unmet(requirements: &[Requirement], claims: &Map<String, Value>) -> Option<usize> {
    requirements.iter().position(|r| !r.holds(claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(claim: &str, any_of: &[&str], all_of: &[&str]) -> Requirement {
        Requirement {
            claim: ClaimPath::parse(claim).unwrap(),
            any_of: any_of.iter().map(|s| s.to_string()).collect(),
            all_of: all_of.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn scope_strings_are_word_lists() {
        let c = claims(json!({"scope": "orders:readwrite profile"}));
        assert!(!req("scope", &[], &["orders:read"]).holds(&c));
        assert!(req("scope", &[], &["orders:readwrite", "profile"]).holds(&c));
        assert!(req("scope", &["x", "profile"], &[]).holds(&c));
        let odd = claims(json!({"scope": "a  b"}));
        assert!(!req("scope", &[""], &[]).holds(&claims(json!({"scope": "a"}))));
        assert!(req("scope", &["b"], &[]).holds(&odd));
    }

    #[test]
    fn arrays_and_nesting() {
        let c = claims(json!({"realm_access": {"roles": ["orders.read", "user"]}, "n": 5}));
        assert!(req("realm_access.roles", &["admin", "orders.read"], &[]).holds(&c));
        assert!(!req("realm_access.roles", &[], &["orders.read", "admin"]).holds(&c));
        assert!(!req("realm_access.missing", &["x"], &[]).holds(&c));
        assert!(!req("n", &["5"], &[]).holds(&c), "numbers are not words");
    }

    #[test]
    fn any_of_and_all_of_combine_with_and() {
        let c = claims(json!({"roles": ["a", "b"]}));
        assert!(req("roles", &["a"], &["b"]).holds(&c));
        assert!(!req("roles", &["z"], &["b"]).holds(&c));
        let rules = [req("roles", &["a"], &[]), req("roles", &["z"], &[])];
        assert_eq!(first_unmet(&rules, &c), Some(1));
        assert_eq!(first_unmet(&rules[..1], &c), None);
    }
}

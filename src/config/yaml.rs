//! The only place that touches YAML: a walker over `serde_yaml::Value` that records every problem
//! with its path instead of stopping at the first one, as a derived `Deserialize` would.

use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::duration::parse_duration;
use super::ConfigError;

#[derive(Default)]
pub(super) struct Errors(pub Vec<ConfigError>);

impl Errors {
    pub fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.to_string(),
            message: message.into(),
        });
    }
}

pub(super) fn parse_document(text: &str) -> Result<Value, ConfigError> {
    serde_yaml::from_str::<Value>(text).map_err(|e| ConfigError {
        path: String::new(),
        message: format!("not valid YAML: {e}"),
    })
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub(super) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The keys of one YAML map, read one by one; whatever is left unread at `end` is an unknown key,
/// because a typo must never silently switch a security setting off.
pub(super) struct Fields<'a> {
    map: Option<&'a Mapping>,
    pub path: String,
    read: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// A missing or null section reads as an empty map, so every key takes its default.
    pub fn of(value: Option<&'a Value>, path: String, errors: &mut Errors) -> Self {
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Mapping(m)) => Some(m),
            Some(other) => {
                errors.push(&path, format!("must be a map, found {}", describe(other)));
                None
            }
        };
        Fields {
            map,
            path,
            read: Vec::new(),
        }
    }

    pub fn is_present(&self) -> bool {
        self.map.is_some()
    }

    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The raw value of `key`; null counts as absent.
    pub fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        self.read.push(key);
        match self.map?.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.is_some_and(|m| m.contains_key(key))
    }

    pub fn child(&mut self, key: &'static str, errors: &mut Errors) -> Fields<'a> {
        let value = self.value(key);
        Fields::of(value, self.path_of(key), errors)
    }

    pub fn string(&mut self, key: &'static str, errors: &mut Errors) -> Option<String> {
        let value = self.value(key)?;
        as_string(value, &self.path_of(key), errors)
    }

    pub fn required_string(&mut self, key: &'static str, errors: &mut Errors) -> Option<String> {
        let found = self.string(key, errors);
        if found.is_none() && !self.has_non_null(key) {
            errors.push(&self.path_of(key), "is required");
        }
        found
    }

    /// Whether `key` holds a value; unlike `has`, an empty `key:` (null) does not count.
    pub fn has_non_null(&self, key: &str) -> bool {
        self.map
            .and_then(|m| m.get(key))
            .is_some_and(|v| !v.is_null())
    }

    pub fn bool(&mut self, key: &'static str, errors: &mut Errors) -> Option<bool> {
        match self.value(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                errors.push(
                    &self.path_of(key),
                    format!("must be true or false, found {}", describe(other)),
                );
                None
            }
        }
    }

    pub fn uint(&mut self, key: &'static str, errors: &mut Errors) -> Option<u64> {
        match self.value(key)? {
            Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
            other => {
                errors.push(
                    &self.path_of(key),
                    format!("must be a whole number, found {}", describe(other)),
                );
                None
            }
        }
    }

    pub fn duration(&mut self, key: &'static str, errors: &mut Errors) -> Option<Duration> {
        let path = self.path_of(key);
        let text = match self.value(key)? {
            Value::String(s) => s,
            other => {
                errors.push(
                    &path,
                    format!(
                        "must be a duration such as 30s, 5m or 1h, found {}",
                        describe(other)
                    ),
                );
                return None;
            }
        };
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(why) => {
                errors.push(&path, format!("invalid duration {text:?}: {why}"));
                None
            }
        }
    }

    /// A list of strings, each with its own path for later errors.
    pub fn strings(
        &mut self,
        key: &'static str,
        errors: &mut Errors,
    ) -> Option<Vec<(String, String)>> {
        let path = self.path_of(key);
        let items = self.list(key, errors)?;
        Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let p = index(&path, i);
                    as_string(v, &p, errors).map(|s| (s, p))
                })
                .collect(),
        )
    }

    pub fn list(&mut self, key: &'static str, errors: &mut Errors) -> Option<&'a [Value]> {
        match self.value(key)? {
            Value::Sequence(items) => Some(items),
            other => {
                errors.push(
                    &self.path_of(key),
                    format!("must be a list, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// The entries of a map whose keys are data (e.g. `forward.claims`), in file order.
    pub fn entries(
        &mut self,
        key: &'static str,
        errors: &mut Errors,
    ) -> Option<Vec<(String, &'a Value, String)>> {
        let path = self.path_of(key);
        match self.value(key)? {
            Value::Mapping(m) => Some(
                m.iter()
                    .filter_map(|(k, v)| match k {
                        Value::String(k) => Some((k.clone(), v, join(&path, k))),
                        other => {
                            errors.push(
                                &path,
                                format!("keys must be strings, found {}", describe(other)),
                            );
                            None
                        }
                    })
                    .collect(),
            ),
            other => {
                errors.push(&path, format!("must be a map, found {}", describe(other)));
                None
            }
        }
    }

    /// Reports every key that no reader asked for.
    pub fn end(&self, errors: &mut Errors) {
        let Some(map) = self.map else { return };
        for key in map.keys() {
            match key {
                Value::String(k) if self.read.contains(&k.as_str()) => {}
                Value::String(k) => {
                    let hint = closest(k, &self.read)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    errors.push(&join(&self.path, k), format!("unknown key{hint}"));
                }
                other => errors.push(
                    &self.path,
                    format!("keys must be strings, found {}", describe(other)),
                ),
            }
        }
    }
}

pub(super) fn as_string(value: &Value, path: &str, errors: &mut Errors) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        other => {
            errors.push(path, format!("must be a string, found {}", describe(other)));
            None
        }
    }
}

/// The known key a typo most likely meant, by edit distance.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

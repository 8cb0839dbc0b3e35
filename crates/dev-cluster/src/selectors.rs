//! Label and field selectors: parsing the query syntax and matching objects.
//!
//! Label selectors support `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`,
//! `!k`, `k>n` and `k<n`. Field selectors support `f=v`, `f==v` and `f!=v` on the fields a
//! resource declares selectable, plus `metadata.name` and `metadata.namespace`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::registry::ResourceDef;
use crate::util::{get_path, meta};

/// Why a selector could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SelectorError {
    /// The label selector text is malformed.
    #[error("unable to parse requirement: {0}")]
    Label(String),
    /// The field selector text is malformed.
    #[error("invalid selector: {0}")]
    Field(String),
    /// The field selector names a field the resource cannot select on.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOp {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Greater(i64),
    Less(i64),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector {
    reqs: Vec<(String, LabelOp)>,
}

/// Splits at top-level commas (commas inside parentheses belong to a set).
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "unbalanced ')'".to_owned())?
            }
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    out.push(&text[start..]);
    Ok(out)
}

fn valid_label_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 316
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("found '{rest}', expected: '('"))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
    if let Some(bad) = values.iter().find(|v| !valid_label_value(v)) {
        return Err(format!("invalid label value: {bad:?}"));
    }
    Ok(values)
}

impl LabelSelector {
    /// Parses the `labelSelector` query value.
    pub(crate) fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let mut reqs = Vec::new();
        if text.trim().is_empty() {
            return Ok(LabelSelector { reqs });
        }
        for raw in split_requirements(text).map_err(SelectorError::Label)? {
            let req = raw.trim();
            if req.is_empty() {
                return Err(SelectorError::Label(
                    "found '', expected: identifier".into(),
                ));
            }
            let (key, op) = parse_label_requirement(req).map_err(SelectorError::Label)?;
            if !valid_label_key(&key) {
                return Err(SelectorError::Label(format!("invalid label key {key:?}")));
            }
            reqs.push((key, op));
        }
        Ok(LabelSelector { reqs })
    }

    /// Whether `labels` satisfy every requirement.
    pub(crate) fn matches(&self, labels: &BTreeMap<&str, &str>) -> bool {
        self.reqs.iter().all(|(key, op)| {
            let have = labels.get(key.as_str()).copied();
            match op {
                LabelOp::Equals(v) => have == Some(v.as_str()),
                LabelOp::NotEquals(v) => have != Some(v.as_str()),
                LabelOp::In(set) => have.is_some_and(|h| set.iter().any(|v| v == h)),
                LabelOp::NotIn(set) => have.is_none_or(|h| set.iter().all(|v| v != h)),
                LabelOp::Exists => have.is_some(),
                LabelOp::DoesNotExist => have.is_none(),
                LabelOp::Greater(n) => have
                    .and_then(|h| h.parse::<i64>().ok())
                    .is_some_and(|h| h > *n),
                LabelOp::Less(n) => have
                    .and_then(|h| h.parse::<i64>().ok())
                    .is_some_and(|h| h < *n),
            }
        })
    }

    /// Reads a `metav1.LabelSelector` object: `matchLabels` and `matchExpressions` (`In`,
    /// `NotIn`, `Exists`, `DoesNotExist`). A missing or null selector matches everything.
    pub(crate) fn from_json(selector: &Value) -> Result<LabelSelector, SelectorError> {
        let bad = |m: String| SelectorError::Label(m);
        let mut reqs = Vec::new();
        if selector.is_null() {
            return Ok(LabelSelector { reqs });
        }
        let map = selector
            .as_object()
            .ok_or_else(|| bad("a label selector must be an object".into()))?;
        for (key, value) in map
            .get("matchLabels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let value = value
                .as_str()
                .ok_or_else(|| bad(format!("matchLabels[{key}] must be a string")))?;
            if !valid_label_key(key) || !valid_label_value(value) {
                return Err(bad(format!("invalid label {key}={value}")));
            }
            reqs.push((key.clone(), LabelOp::Equals(value.to_owned())));
        }
        let expressions = map.get("matchExpressions").and_then(Value::as_array);
        for expr in expressions.into_iter().flatten() {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
            if !valid_label_key(key) {
                return Err(bad(format!("invalid label key {key:?}")));
            }
            let values: Vec<String> = expr
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            let operator = expr.get("operator").and_then(Value::as_str).unwrap_or("");
            let op = match (operator, values.is_empty()) {
                ("In", false) => LabelOp::In(values),
                ("NotIn", false) => LabelOp::NotIn(values),
                ("Exists", true) => LabelOp::Exists,
                ("DoesNotExist", true) => LabelOp::DoesNotExist,
                ("In" | "NotIn", true) => {
                    return Err(bad(format!(
                        "for 'in', 'notin' operators, values set can't be empty ({key})"
                    )));
                }
                ("Exists" | "DoesNotExist", false) => {
                    return Err(bad(format!(
                        "values set must be empty for exists and does not exist ({key})"
                    )));
                }
                (other, _) => {
                    return Err(bad(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            reqs.push((key.to_owned(), op));
        }
        Ok(LabelSelector { reqs })
    }

    /// Whether the selector has no requirement.
    pub(crate) fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub(crate) fn matches_object(&self, obj: &Value) -> bool {
        if self.reqs.is_empty() {
            return true;
        }
        let labels: BTreeMap<&str, &str> = meta(obj)
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }
}

/// Builds an operator from the value text after it.
type MakeOp = fn(&str) -> Result<LabelOp, String>;

fn parse_label_requirement(req: &str) -> Result<(String, LabelOp), String> {
    if let Some(key) = req.strip_prefix('!') {
        return Ok((key.trim().to_owned(), LabelOp::DoesNotExist));
    }
    for (token, ctor) in [(" notin ", true), (" in ", false)] {
        if let Some(pos) = req.find(token) {
            let key = req[..pos].trim().to_owned();
            let set = parse_set(&req[pos + token.len()..])?;
            return Ok((
                key,
                if ctor {
                    LabelOp::NotIn(set)
                } else {
                    LabelOp::In(set)
                },
            ));
        }
    }
    let ops: [(&str, MakeOp); 6] = [
        ("!=", |v| Ok(LabelOp::NotEquals(v.to_owned()))),
        ("==", |v| Ok(LabelOp::Equals(v.to_owned()))),
        ("=", |v| Ok(LabelOp::Equals(v.to_owned()))),
        (">", |v| {
            v.parse()
                .map(LabelOp::Greater)
                .map_err(|_| format!("invalid number {v:?}"))
        }),
        ("<", |v| {
            v.parse()
                .map(LabelOp::Less)
                .map_err(|_| format!("invalid number {v:?}"))
        }),
        ("", |_| Ok(LabelOp::Exists)),
    ];
    for (token, make) in ops {
        if token.is_empty() {
            if req.contains(char::is_whitespace) || req.contains('(') {
                return Err(format!(
                    "found '{req}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
            return Ok((req.to_owned(), make("")?));
        }
        if let Some(pos) = req.find(token) {
            let key = req[..pos].trim().to_owned();
            let value = req[pos + token.len()..].trim();
            if !valid_label_value(value) {
                return Err(format!("invalid label value: {value:?}"));
            }
            return Ok((key, make(value)?));
        }
    }
    Err(format!("found '{req}', expected: identifier"))
}

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    /// (selector label, JSON path, wanted value, negated)
    reqs: Vec<(String, String, String, bool)>,
}

/// Splits at commas not escaped with a backslash, and unescapes `\,`, `\=` and `\\`.
fn split_escaped(text: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next()
                    && let Some(last) = out.last_mut()
                {
                    if next != sep {
                        last.push('\\');
                    }
                    last.push(next);
                }
            }
            c if c == sep => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

impl FieldSelector {
    /// Parses the `fieldSelector` query value for `def`.
    pub(crate) fn parse(text: &str, def: &ResourceDef) -> Result<FieldSelector, SelectorError> {
        let mut reqs = Vec::new();
        if text.trim().is_empty() {
            return Ok(FieldSelector { reqs });
        }
        for req in split_escaped(text, ',') {
            let (field, value, negated) = if let Some(pos) = req.find("!=") {
                (&req[..pos], &req[pos + 2..], true)
            } else if let Some(pos) = req.find("==") {
                (&req[..pos], &req[pos + 2..], false)
            } else if let Some(pos) = req.find('=') {
                (&req[..pos], &req[pos + 1..], false)
            } else {
                return Err(SelectorError::Field(format!("{req:?}: no operator")));
            };
            let field = field.trim();
            let path = match field {
                "metadata.name" | "metadata.namespace" => field.to_owned(),
                other => def
                    .selectable
                    .iter()
                    .find(|(label, _)| *label == other)
                    .map(|(_, path)| (*path).to_owned())
                    .ok_or_else(|| SelectorError::UnsupportedField(other.to_owned()))?,
            };
            reqs.push((field.to_owned(), path, value.replace("\\\\", "\\"), negated));
        }
        Ok(FieldSelector { reqs })
    }

    /// Whether the selector has no requirement.
    pub(crate) fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object (in the resource's own shape) matches.
    pub(crate) fn matches_object(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(_, path, want, negated)| {
            let have = match get_path(obj, path) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (have == *want) != *negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;
    use serde_json::json;

    fn labels(pairs: &[(&'static str, &'static str)]) -> BTreeMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn label_selector_table() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (web,db)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("app in (web, db),tier", true),
            ("n>4", true),
            ("n<4", false),
        ];
        for (text, want) in cases {
            let sel = LabelSelector::parse(text).expect(text);
            assert_eq!(sel.matches(&l), want, "{text}");
        }
    }

    #[test]
    fn label_selector_objects() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let cases = [
            (json!(null), true),
            (json!({}), true),
            (json!({"matchLabels": {"app": "web"}}), true),
            (json!({"matchLabels": {"app": "db"}}), false),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "In",
                                             "values": ["front", "back"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn",
                                             "values": ["front"]}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "missing", "operator": "DoesNotExist"}]}),
                true,
            ),
            (
                json!({"matchLabels": {"app": "web"},
                       "matchExpressions": [{"key": "missing", "operator": "Exists"}]}),
                false,
            ),
        ];
        for (selector, want) in cases {
            let sel = LabelSelector::from_json(&selector).expect("valid selector");
            assert_eq!(sel.matches(&l), want, "{selector}");
        }
        for bad in [
            json!([]),
            json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}),
            json!({"matchLabels": {"a": 1}}),
        ] {
            assert!(LabelSelector::from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_selector_rejects_garbage() {
        for text in ["app in web", "a b", "app=(", "in (x", ",", "app=has space"] {
            assert!(LabelSelector::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn field_selectors_on_declared_fields_only() {
        let Some(def) = lookup("cert-manager.io", "v1", "certificaterequests") else {
            panic!("certificaterequests registered");
        };
        let obj = json!({"metadata": {"name": "cr-1", "namespace": "ns"},
                         "spec": {"issuerRef": {"name": "my-issuer"}}});
        let sel = FieldSelector::parse("spec.issuerRef.name=my-issuer", def).expect("valid");
        assert!(sel.matches_object(&obj));
        let sel = FieldSelector::parse("metadata.name!=cr-1", def).expect("valid");
        assert!(!sel.matches_object(&obj));
        let sel = FieldSelector::parse("spec.issuerRef.kind=", def).expect("valid");
        assert!(
            sel.matches_object(&obj),
            "a missing field equals the empty string"
        );
        assert_eq!(
            FieldSelector::parse("spec.username=alice", def),
            Err(SelectorError::UnsupportedField("spec.username".into()))
        );
    }
}

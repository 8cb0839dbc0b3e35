//! Which requests a policy is for: issuer patterns (compared after cert-manager's defaults)
//! and namespace names or labels.

use std::collections::BTreeMap;

use nico_policy::{DEFAULT_ISSUER_GROUP, DEFAULT_ISSUER_KIND, IssuerName};

use crate::spec::SelectorSpec;
use crate::wildcard::Wildcard;

/// A checked `spec.selector`.
#[derive(Clone, Debug)]
pub(crate) struct Selector {
    issuer: Option<IssuerPatterns>,
    names: Option<Vec<Wildcard>>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug)]
struct IssuerPatterns {
    name: Option<Wildcard>,
    kind: Option<Wildcard>,
    group: Option<Wildcard>,
}

impl Selector {
    /// Checks a selector: it must say something, since a policy for every request is more
    /// likely a mistake than a wish (write `issuerRef: {}` to mean it).
    pub(crate) fn load(spec: Option<&SelectorSpec>) -> Result<Self, (&'static str, String)> {
        let Some(spec) = spec else {
            return Err(("spec.selector", "required".to_owned()));
        };
        if spec.issuer_ref.is_none() && spec.namespace.is_none() {
            return Err((
                "spec.selector",
                "must define issuerRef or namespace (issuerRef: {} selects every issuer)"
                    .to_owned(),
            ));
        }
        // An explicitly empty kind or group means the default, as on the request side.
        let defaulted = |value: &Option<String>, default: &str| {
            value.as_deref().map(|v| match v {
                "" => Wildcard::new(default),
                v => Wildcard::new(v),
            })
        };
        let issuer = spec.issuer_ref.as_ref().map(|i| IssuerPatterns {
            name: i.name.as_deref().map(Wildcard::new),
            kind: defaulted(&i.kind, DEFAULT_ISSUER_KIND),
            group: defaulted(&i.group, DEFAULT_ISSUER_GROUP),
        });
        let namespace = spec.namespace.as_ref();
        Ok(Self {
            issuer,
            names: namespace
                .and_then(|n| n.match_names.as_ref())
                .map(|names| names.iter().map(Wildcard::new).collect()),
            labels: namespace.and_then(|n| n.match_labels.clone()),
        })
    }

    /// Whether the namespace's labels are needed to decide.
    pub(crate) fn needs_labels(&self) -> bool {
        self.labels.as_ref().is_some_and(|l| !l.is_empty())
    }

    /// Whether the policy is for a request to `issuer` in `namespace`. `labels` are the
    /// namespace's; when they are needed but `None`, the policy does not select.
    pub(crate) fn selects(
        &self,
        issuer: &IssuerName,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        if let Some(patterns) = &self.issuer {
            let fits = |pattern: &Option<Wildcard>, value: &str| {
                pattern.as_ref().is_none_or(|p| p.matches(value))
            };
            if !(fits(&patterns.name, issuer.name())
                && fits(&patterns.kind, issuer.kind())
                && fits(&patterns.group, issuer.group()))
            {
                return false;
            }
        }
        if let Some(names) = &self.names
            && !names.iter().any(|n| n.matches(namespace))
        {
            return false;
        }
        if self.needs_labels() {
            let (Some(wanted), Some(labels)) = (&self.labels, labels) else {
                return false;
            };
            return wanted.iter().all(|(k, v)| labels.get(k) == Some(v));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PolicySpec;
    use serde_json::json;

    fn selector(spec: serde_json::Value) -> Selector {
        let spec = PolicySpec::from_json(&json!({ "selector": spec })).unwrap();
        Selector::load(spec.selector.as_ref()).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn issuer_refs_match_with_wildcards_after_defaults() {
        let issuer = |name, kind, group| IssuerName::new(name, kind, group);
        let rows = [
            (json!({"issuerRef": {}}), issuer("x", None, None), true),
            (
                json!({"issuerRef": {"name": "ca"}}),
                issuer("ca", Some("ClusterIssuer"), None),
                true,
            ),
            (
                json!({"issuerRef": {"name": "ca"}}),
                issuer("cb", None, None),
                false,
            ),
            (
                json!({"issuerRef": {"name": "team-*"}}),
                issuer("team-a", None, None),
                true,
            ),
            // The request's empty kind and group are Issuer and cert-manager.io.
            (
                json!({"issuerRef": {"kind": "Issuer", "group": "cert-manager.io"}}),
                issuer("x", Some(""), None),
                true,
            ),
            (
                json!({"issuerRef": {"kind": "ClusterIssuer"}}),
                issuer("x", None, None),
                false,
            ),
            // And so are the selector's explicitly empty ones.
            (
                json!({"issuerRef": {"kind": "", "group": ""}}),
                issuer("x", None, None),
                true,
            ),
            (
                json!({"issuerRef": {"kind": ""}}),
                issuer("x", Some("ClusterIssuer"), None),
                false,
            ),
            (
                json!({"issuerRef": {"group": "*.example.com"}}),
                issuer("x", Some("VaultIssuer"), Some("pki.example.com")),
                true,
            ),
        ];
        for (spec, issuer, expected) in rows {
            let s = selector(spec.clone());
            assert_eq!(
                s.selects(&issuer, "demo", None),
                expected,
                "{spec} / {issuer}"
            );
        }
    }

    #[test]
    fn namespaces_match_by_name_pattern_and_labels() {
        let any = IssuerName::new("x", None, None);
        let by_name = selector(json!({"namespace": {"matchNames": ["team-*", "ops"]}}));
        assert!(by_name.selects(&any, "team-a", None));
        assert!(by_name.selects(&any, "ops", None));
        assert!(!by_name.selects(&any, "opsx", None));
        assert!(!by_name.needs_labels());

        let by_label = selector(json!({"namespace": {"matchLabels": {"tls": "on"}}}));
        assert!(by_label.needs_labels());
        assert!(by_label.selects(&any, "a", Some(&labels(&[("tls", "on"), ("x", "y")]))));
        assert!(!by_label.selects(&any, "a", Some(&labels(&[("tls", "off")]))));
        assert!(!by_label.selects(&any, "a", Some(&labels(&[]))));
        assert!(!by_label.selects(&any, "a", None));

        let both = selector(json!({
            "issuerRef": {"name": "ca"},
            "namespace": {"matchNames": ["team-*"], "matchLabels": {"tls": "on"}}
        }));
        let ca = IssuerName::new("ca", None, None);
        let on = labels(&[("tls", "on")]);
        assert!(both.selects(&ca, "team-a", Some(&on)));
        assert!(!both.selects(&ca, "ops", Some(&on)));
        assert!(!both.selects(&any, "team-a", Some(&on)));
    }

    #[test]
    fn a_selector_must_say_something() {
        let spec = PolicySpec::from_json(&json!({})).unwrap();
        assert_eq!(
            Selector::load(spec.selector.as_ref()).unwrap_err(),
            ("spec.selector", "required".to_owned())
        );
        let spec = PolicySpec::from_json(&json!({"selector": {}})).unwrap();
        assert!(Selector::load(spec.selector.as_ref()).is_err());
    }
}

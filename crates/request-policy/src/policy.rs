//! [`RequestPolicy`]: a CertificateRequestPolicy checked and compiled, ready to select and
//! judge requests. Loading reports every problem at once, each with the field to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use nico_policy::IssuerName;
use nico_policy::duration::parse_go_duration;

use crate::cel::{DEFAULT_COST_LIMIT, Rule, Sample};
use crate::selector::Selector;
use crate::spec::{AllowedString, AllowedStrings, PolicySpec, PrivateKeySpec, ValidationRule};
use crate::wildcard::Wildcard;

/// The usages cert-manager knows, in its spelling.
pub(crate) const KNOWN_USAGES: [&str; 23] = [
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// Limits applied when policies load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest estimated cost of one CEL rule.
    pub cel_cost: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cel_cost: DEFAULT_COST_LIMIT,
        }
    }
}

/// One problem with a policy: the policy field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// The field, e.g. `spec.allowed.dnsNames.validations[0].rule`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Every problem found while loading a policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("failed to load policy: {}", join(.0))]
pub struct LoadErrors(pub Vec<LoadError>);

fn join(errors: &[LoadError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A key algorithm family as cert-manager names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyFamily {
    Rsa,
    Ecdsa,
    Ed25519,
}

impl KeyFamily {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::Ecdsa => "ECDSA",
            Self::Ed25519 => "Ed25519",
        }
    }
}

/// A checked `allowed.<field>`: patterns (absent means "no pattern restriction"),
/// required, rules.
#[derive(Clone, Debug)]
pub(crate) struct FieldRule {
    /// `spec.allowed.<field>`.
    pub(crate) path: &'static str,
    /// A single-valued field (`value`), not a list (`values`).
    pub(crate) single: bool,
    /// `values`, or `[value]` for single-valued fields.
    pub(crate) patterns: Option<Vec<Wildcard>>,
    pub(crate) required: bool,
    pub(crate) rules: Vec<Rule>,
}

/// A checked `spec.allowed`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Allowed {
    pub(crate) common_name: Option<FieldRule>,
    pub(crate) dns_names: Option<FieldRule>,
    pub(crate) ip_addresses: Option<FieldRule>,
    pub(crate) uris: Option<FieldRule>,
    pub(crate) email_addresses: Option<FieldRule>,
    pub(crate) is_ca: bool,
    pub(crate) usages: BTreeSet<String>,
    /// By subject attribute short name (`O`, `OU`, ...), as the CSR parser spells them.
    pub(crate) subject: BTreeMap<&'static str, FieldRule>,
}

/// A checked `spec.constraints`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Constraints {
    pub(crate) min_duration: Option<Duration>,
    pub(crate) max_duration: Option<Duration>,
    pub(crate) key_family: Option<KeyFamily>,
    pub(crate) min_key_size: Option<usize>,
    pub(crate) max_key_size: Option<usize>,
}

/// A loaded policy.
#[derive(Clone, Debug)]
pub struct RequestPolicy {
    name: String,
    selector: Selector,
    pub(crate) allowed: Allowed,
    pub(crate) constraints: Constraints,
    rules: usize,
    max_cost: u64,
    uses_services: bool,
}

/// A subject attribute a policy can allow.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SubjectField {
    /// The short name the CSR parser gives it.
    pub(crate) short: &'static str,
    /// The policy field.
    pub(crate) policy: &'static str,
    /// The request field.
    pub(crate) request: &'static str,
    /// What one value is called in messages.
    pub(crate) word: &'static str,
}

const fn subject(
    short: &'static str,
    policy: &'static str,
    request: &'static str,
    word: &'static str,
) -> SubjectField {
    SubjectField {
        short,
        policy,
        request,
        word,
    }
}

/// The multi-valued subject attributes, in `spec.allowed.subject` order.
pub(crate) const SUBJECT_FIELDS: [SubjectField; 7] = [
    subject(
        "O",
        "spec.allowed.subject.organizations",
        "csr.subject.organizations",
        "organization",
    ),
    subject(
        "C",
        "spec.allowed.subject.countries",
        "csr.subject.countries",
        "country",
    ),
    subject(
        "OU",
        "spec.allowed.subject.organizationalUnits",
        "csr.subject.organizationalUnits",
        "organizational unit",
    ),
    subject(
        "L",
        "spec.allowed.subject.localities",
        "csr.subject.localities",
        "locality",
    ),
    subject(
        "ST",
        "spec.allowed.subject.provinces",
        "csr.subject.provinces",
        "province",
    ),
    subject(
        "streetAddress",
        "spec.allowed.subject.streetAddresses",
        "csr.subject.streetAddresses",
        "street address",
    ),
    subject(
        "postalCode",
        "spec.allowed.subject.postalCodes",
        "csr.subject.postalCodes",
        "postal code",
    ),
];

/// Collects load errors while a policy is read.
struct Loader {
    limits: Limits,
    errors: Vec<LoadError>,
    rules: usize,
    max_cost: u64,
    uses_services: bool,
}

impl Loader {
    fn fail(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(LoadError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn rules(&mut self, path: &str, rules: Option<&[ValidationRule]>, sample: &str) -> Vec<Rule> {
        let mut loaded = Vec::new();
        for (i, rule) in rules.unwrap_or_default().iter().enumerate() {
            let sample = Sample { value: sample };
            match Rule::load(
                &rule.rule,
                rule.message.as_deref(),
                self.limits.cel_cost,
                sample,
            ) {
                Ok(compiled) => {
                    self.rules += 1;
                    self.max_cost = self.max_cost.max(compiled.cost());
                    self.uses_services |= compiled.uses_services();
                    loaded.push(compiled);
                }
                Err(reason) => self.fail(format!("{path}.validations[{i}].rule"), reason),
            }
        }
        loaded
    }

    fn strings(
        &mut self,
        path: &'static str,
        spec: Option<&AllowedStrings>,
        sample: &str,
    ) -> Option<FieldRule> {
        let spec = spec?;
        Some(FieldRule {
            path,
            single: false,
            patterns: spec
                .values
                .as_ref()
                .map(|values| values.iter().map(Wildcard::new).collect()),
            required: spec.required.unwrap_or(false),
            rules: self.rules(path, spec.validations.as_deref(), sample),
        })
    }

    fn string(
        &mut self,
        path: &'static str,
        spec: Option<&AllowedString>,
        sample: &str,
    ) -> Option<FieldRule> {
        let spec = spec?;
        Some(FieldRule {
            path,
            single: true,
            patterns: spec.value.as_ref().map(|v| vec![Wildcard::new(v)]),
            required: spec.required.unwrap_or(false),
            rules: self.rules(path, spec.validations.as_deref(), sample),
        })
    }

    fn duration(&mut self, path: &str, text: Option<&String>) -> Option<Duration> {
        let text = text?;
        match parse_go_duration(text) {
            Ok(duration) => Some(duration),
            Err(e) => {
                self.fail(path, e.to_string());
                None
            }
        }
    }

    fn key_size(&mut self, path: &str, size: Option<i64>) -> Option<usize> {
        let size = size?;
        match usize::try_from(size) {
            Ok(size) if size > 0 => Some(size),
            _ => {
                self.fail(
                    path,
                    format!("{size} is not a key size: expected a positive number"),
                );
                None
            }
        }
    }

    fn constraints(&mut self, spec: &PolicySpec) -> Constraints {
        let Some(c) = &spec.constraints else {
            return Constraints::default();
        };
        let min_duration = self.duration("spec.constraints.minDuration", c.min_duration.as_ref());
        let max_duration = self.duration("spec.constraints.maxDuration", c.max_duration.as_ref());
        if let (Some(min), Some(max)) = (min_duration, max_duration)
            && min > max
        {
            self.fail(
                "spec.constraints.minDuration",
                "is longer than spec.constraints.maxDuration",
            );
        }
        let key = c.private_key.clone().unwrap_or_default();
        let PrivateKeySpec {
            algorithm,
            min_size,
            max_size,
        } = key;
        let key_family = algorithm.and_then(|a| match a.as_str() {
            "RSA" => Some(KeyFamily::Rsa),
            "ECDSA" => Some(KeyFamily::Ecdsa),
            "Ed25519" => Some(KeyFamily::Ed25519),
            other => {
                self.fail(
                    "spec.constraints.privateKey.algorithm",
                    format!("unknown algorithm {other:?}: expected RSA, ECDSA or Ed25519"),
                );
                None
            }
        });
        let min_key_size = self.key_size("spec.constraints.privateKey.minSize", min_size);
        let max_key_size = self.key_size("spec.constraints.privateKey.maxSize", max_size);
        if let (Some(min), Some(max)) = (min_key_size, max_key_size)
            && min > max
        {
            self.fail(
                "spec.constraints.privateKey.minSize",
                "is larger than spec.constraints.privateKey.maxSize",
            );
        }
        Constraints {
            min_duration,
            max_duration,
            key_family,
            min_key_size,
            max_key_size,
        }
    }

    fn allowed(&mut self, spec: &PolicySpec) -> Allowed {
        let Some(a) = &spec.allowed else {
            return Allowed::default();
        };
        let mut usages = BTreeSet::new();
        for (i, usage) in a.usages.iter().flatten().enumerate() {
            if KNOWN_USAGES.contains(&usage.as_str()) {
                usages.insert(usage.clone());
            } else {
                self.fail(
                    format!("spec.allowed.usages[{i}]"),
                    format!("unknown usage {usage:?}"),
                );
            }
        }
        let subject = a.subject.clone().unwrap_or_default();
        let lists = [
            subject.organizations.as_ref(),
            subject.countries.as_ref(),
            subject.organizational_units.as_ref(),
            subject.localities.as_ref(),
            subject.provinces.as_ref(),
            subject.street_addresses.as_ref(),
            subject.postal_codes.as_ref(),
        ];
        let mut subject_rules = BTreeMap::new();
        for (field, spec) in SUBJECT_FIELDS.iter().zip(lists) {
            if let Some(rule) = self.strings(field.policy, spec, "Example") {
                subject_rules.insert(field.short, rule);
            }
        }
        let serial = "spec.allowed.subject.serialNumber";
        if let Some(rule) = self.string(serial, subject.serial_number.as_ref(), "1234") {
            subject_rules.insert("serialNumber", rule);
        }
        Allowed {
            common_name: self.string(
                "spec.allowed.commonName",
                a.common_name.as_ref(),
                "example.com",
            ),
            dns_names: self.strings("spec.allowed.dnsNames", a.dns_names.as_ref(), "example.com"),
            ip_addresses: self.strings(
                "spec.allowed.ipAddresses",
                a.ip_addresses.as_ref(),
                "192.0.2.1",
            ),
            uris: self.strings("spec.allowed.uris", a.uris.as_ref(), "https://example.com/"),
            email_addresses: self.strings(
                "spec.allowed.emailAddresses",
                a.email_addresses.as_ref(),
                "someone@example.com",
            ),
            is_ca: a.is_ca.unwrap_or(false),
            usages,
            subject: subject_rules,
        }
    }
}

impl RequestPolicy {
    /// Loads the policy `name` from its spec: the selector must say something, durations
    /// and key constraints must be consistent, usages known, no plugin named, and every CEL
    /// rule must compile, stay within the cost limit and pass a trial evaluation.
    pub fn load(name: &str, spec: &PolicySpec, limits: Limits) -> Result<Self, LoadErrors> {
        crate::cel::on_deep_stack(|| Self::load_here(name, spec, limits)).unwrap_or_else(|e| {
            Err(LoadErrors(vec![LoadError {
                field: "spec".to_owned(),
                reason: e,
            }]))
        })
    }

    fn load_here(name: &str, spec: &PolicySpec, limits: Limits) -> Result<Self, LoadErrors> {
        let mut loader = Loader {
            limits,
            errors: Vec::new(),
            rules: 0,
            max_cost: 0,
            uses_services: false,
        };
        let selector = Selector::load(spec.selector.as_ref())
            .map_err(|(field, reason)| loader.fail(field, reason))
            .ok();
        for plugin in spec.plugins.iter().flatten().map(|(name, _)| name) {
            loader.fail(
                format!("spec.plugins.{plugin}"),
                "plugins are not supported: remove it or move its checks into validations",
            );
        }
        let allowed = loader.allowed(spec);
        let constraints = loader.constraints(spec);
        match selector {
            Some(selector) if loader.errors.is_empty() => Ok(Self {
                name: name.to_owned(),
                selector,
                allowed,
                constraints,
                rules: loader.rules,
                max_cost: loader.max_cost,
                uses_services: loader.uses_services,
            }),
            _ => Err(LoadErrors(loader.errors)),
        }
    }

    /// Reads and loads a spec in its JSON form.
    pub fn from_json(
        name: &str,
        spec: &serde_json::Value,
        limits: Limits,
    ) -> Result<Self, LoadErrors> {
        let spec = PolicySpec::from_json(spec).map_err(|e| {
            LoadErrors(vec![LoadError {
                field: "spec".to_owned(),
                reason: e.0,
            }])
        })?;
        Self::load(name, &spec, limits)
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many CEL rules it holds.
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// The highest estimated cost among its CEL rules.
    pub fn max_rule_cost(&self) -> u64 {
        self.max_cost
    }

    /// Whether judging needs the namespace's Services ([`crate::ClusterFacts::services`]).
    pub fn needs_services(&self) -> bool {
        self.uses_services
    }

    /// Whether selecting needs the namespace's labels.
    pub fn needs_namespace_labels(&self) -> bool {
        self.selector.needs_labels()
    }

    /// Whether the policy is for a request to `issuer` in `namespace` (whose labels are
    /// given when [`RequestPolicy::needs_namespace_labels`]). Whether the requester may
    /// use it is a separate question, answered by RBAC.
    pub fn selects(
        &self,
        issuer: &IssuerName,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        self.selector.selects(issuer, namespace, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(spec: serde_json::Value) -> Result<RequestPolicy, LoadErrors> {
        RequestPolicy::from_json("p", &spec, Limits::default())
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let err = load(json!({
            "allowed": {
                "dnsNames": {"validations": [{"rule": "self.endsWith("}, {"rule": "nosuch()"}]},
                "usages": ["server auth", "world domination"]
            },
            "constraints": {
                "minDuration": "2h", "maxDuration": "1h",
                "privateKey": {"algorithm": "DSA", "minSize": 0}
            },
            "plugins": {"rego": {"values": {}}},
            "selector": {}
        }))
        .unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.selector",
                "spec.plugins.rego",
                "spec.allowed.usages[1]",
                "spec.allowed.dnsNames.validations[0].rule",
                "spec.allowed.dnsNames.validations[1].rule",
                "spec.constraints.minDuration",
                "spec.constraints.privateKey.algorithm",
                "spec.constraints.privateKey.minSize",
            ]
        );
        let text = err.to_string();
        assert!(
            text.starts_with("failed to load policy: spec.selector: must define"),
            "{text}"
        );
    }

    #[test]
    fn a_good_policy_loads_and_reports_what_it_needs() {
        let policy = load(json!({
            "allowed": {"dnsNames": {"values": ["*"], "validations": [
                {"rule": "services.exists(s, self.startsWith(s + '.'))"},
                {"rule": "self.endsWith('.svc')"}
            ]}},
            "selector": {"issuerRef": {}, "namespace": {"matchLabels": {"a": "b"}}}
        }))
        .unwrap();
        assert_eq!(policy.name(), "p");
        assert_eq!(policy.rule_count(), 2);
        assert!(policy.needs_services());
        assert!(policy.needs_namespace_labels());
        let plain = load(json!({"selector": {"issuerRef": {}}})).unwrap();
        assert!(!plain.needs_services() && !plain.needs_namespace_labels());
    }

    #[test]
    fn unreadable_specs_are_reported_on_spec() {
        let err = load(json!({"selector": {"issuerRef": {}}, "allowed": {"dnsName": {}}}));
        let err = err.unwrap_err();
        assert_eq!(err.0[0].field, "spec");
        assert!(err.0[0].reason.contains("unknown field `dnsName`"), "{err}");
    }
}

//! The `spec` of a CertificateRequestPolicy (`policy.cert-manager.io/v1alpha1`) as written
//! by its author, field for field, before anything is checked.
//!
//! Unknown fields are refused rather than ignored: a misspelt `constraint` would otherwise
//! silently drop a restriction, and fields of newer approver-policy versions that this
//! engine does not implement (`otherNames`, `subject.otherAttributes`) must not be mistaken
//! for "nothing allowed here".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A policy's `spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// What a request may contain; anything not allowed must be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<AllowedSpec>,
    /// What a request must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<ConstraintsSpec>,
    /// approver-policy plugins; none are implemented, so a policy naming one never loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<BTreeMap<String, serde_json::Value>>,
    /// Which requests the policy is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<SelectorSpec>,
}

/// `spec.allowed`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedSpec {
    /// The subject common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<AllowedString>,
    /// DNS SANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_names: Option<AllowedStrings>,
    /// IP SANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_addresses: Option<AllowedStrings>,
    /// URI SANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uris: Option<AllowedStrings>,
    /// E-mail SANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_addresses: Option<AllowedStrings>,
    /// Whether `spec.isCA: true` may be requested.
    #[serde(default, rename = "isCA", skip_serializing_if = "Option::is_none")]
    pub is_ca: Option<bool>,
    /// The usages `spec.usages` may contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usages: Option<Vec<String>>,
    /// Subject attributes other than the common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<AllowedSubject>,
}

/// An allowed single value: a `*` pattern, whether it is required, CEL validations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedString {
    /// The pattern the value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Whether the value must be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Rules the value must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validations: Option<Vec<ValidationRule>>,
}

/// Allowed values of a list: `*` patterns, whether one is required, CEL validations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedStrings {
    /// The patterns each value must match one of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// Whether at least one value must be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Rules every value must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validations: Option<Vec<ValidationRule>>,
}

/// One CEL rule and the message shown when it fails.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidationRule {
    /// The CEL expression; `true` passes.
    pub rule: String,
    /// Shown instead of the rule when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `spec.allowed.subject`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedSubject {
    /// `O`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizations: Option<AllowedStrings>,
    /// `C`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub countries: Option<AllowedStrings>,
    /// `OU`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizational_units: Option<AllowedStrings>,
    /// `L`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localities: Option<AllowedStrings>,
    /// `ST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provinces: Option<AllowedStrings>,
    /// `street`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street_addresses: Option<AllowedStrings>,
    /// `postalCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_codes: Option<AllowedStrings>,
    /// `serialNumber`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<AllowedString>,
}

/// `spec.constraints`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConstraintsSpec {
    /// Shortest lifetime, Go duration syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration: Option<String>,
    /// Longest lifetime, Go duration syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
    /// The key's algorithm and size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<PrivateKeySpec>,
}

/// `spec.constraints.privateKey`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrivateKeySpec {
    /// `RSA`, `ECDSA` or `Ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// Smallest key size in bits, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<i64>,
    /// Largest key size in bits, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<i64>,
}

/// `spec.selector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelectorSpec {
    /// Issuers the policy is for; `{}` means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRefSelectorSpec>,
    /// Namespaces the policy is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<NamespaceSelectorSpec>,
}

/// `spec.selector.issuerRef`: `*` patterns; an omitted field matches anything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssuerRefSelectorSpec {
    /// Issuer name pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Issuer kind pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Issuer group pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// `spec.selector.namespace`: names (`*` patterns) and labels, both of which must match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSelectorSpec {
    /// The namespace's name must match one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_names: Option<Vec<String>>,
    /// The namespace must carry all of these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
}

/// A spec that does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("failed to read spec: {0}")]
pub struct SpecError(pub String);

impl PolicySpec {
    /// Reads a spec from its JSON form (the `spec` of the object as the API server serves
    /// it). Unknown fields and wrong types are refused, with serde's message naming them.
    pub fn from_json(spec: &serde_json::Value) -> Result<Self, SpecError> {
        serde_json::from_value(spec.clone()).map_err(|e| SpecError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_approver_policy_spec_reads() {
        let spec = json!({
            "allowed": {
                "commonName": {"value": "*.example.com", "required": false},
                "dnsNames": {"values": ["*.example.com"], "required": true,
                             "validations": [{"rule": "self.endsWith('.com')",
                                              "message": "must end in .com"}]},
                "ipAddresses": {"values": ["10.0.0.*"]},
                "uris": {"values": ["spiffe://example.org/*"]},
                "emailAddresses": {"values": ["*@example.com"]},
                "isCA": false,
                "usages": ["server auth"],
                "subject": {"organizations": {"values": ["Example"]},
                            "serialNumber": {"value": "*"}}
            },
            "constraints": {"minDuration": "1h", "maxDuration": "24h",
                            "privateKey": {"algorithm": "RSA", "minSize": 2048, "maxSize": 4096}},
            "selector": {"issuerRef": {"name": "ca", "kind": "Issuer", "group": "cert-manager.io"},
                         "namespace": {"matchNames": ["team-*"], "matchLabels": {"a": "b"}}}
        });
        let read = PolicySpec::from_json(&spec).unwrap();
        assert_eq!(serde_json::to_value(&read).unwrap(), spec);
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_named() {
        let typo = json!({"constraint": {}, "selector": {"issuerRef": {}}});
        let err = PolicySpec::from_json(&typo).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `constraint`"),
            "{err}"
        );
        let newer = json!({"allowed": {"otherNames": []}, "selector": {}});
        let err = PolicySpec::from_json(&newer).unwrap_err();
        assert!(err.to_string().contains("`otherNames`"), "{err}");
        let wrong = json!({"allowed": {"dnsNames": {"values": "x"}}, "selector": {}});
        let err = PolicySpec::from_json(&wrong).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }
}

//! The cert-manager `CertificateRequest` (`cert-manager.io/v1`).

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;

/// Annotation carrying the SPIFFE ID a request was made for (the key csi-driver-spiffe uses, so
/// existing tooling keeps recognising our requests).
pub const IDENTITY_ANNOTATION: &str = "spiffe.csi.cert-manager.io/identity";

/// In driver-account mode (the node driver creates requests as itself), the name of the pod
/// the request is for; the pod lives in the request's namespace.
pub const POD_NAME_ANNOTATION: &str = "identity.nico.io/pod-name";

/// In driver-account mode, the uid of the pod the request is for.
pub const POD_UID_ANNOTATION: &str = "identity.nico.io/pod-uid";

/// The usages every SPIFFE SVID request carries, spelled as cert-manager spells them.
pub const SPIFFE_USAGES: [&str; 4] = [
    "digital signature",
    "key encipherment",
    "server auth",
    "client auth",
];

/// A request for a certificate, signed by the issuer its `issuerRef` names once approved.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "CertificateRequest",
    plural = "certificaterequests",
    namespaced,
    status = "CertificateRequestStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestSpec {
    /// The PEM CSR, base64-encoded on the wire (Go `[]byte`).
    #[serde(with = "base64_bytes")]
    pub request: Vec<u8>,
    /// The issuer that should sign this request.
    pub issuer_ref: IssuerRef,
    /// Requested lifetime in Go duration syntax (`1h`, `90m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Requested key usages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usages: Option<Vec<String>>,
    /// Whether a CA certificate is requested.
    #[serde(default, rename = "isCA", skip_serializing_if = "Option::is_none")]
    pub is_ca: Option<bool>,
    /// The requester, recorded by admission on create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The requester's uid, recorded by admission on create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The requester's groups, recorded by admission on create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Extra attributes of the requester (pod name and uid for pod-bound tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<BTreeMap<String, Vec<String>>>,
}

/// A reference to an issuer. Empty `kind` means `Issuer`, empty `group` means `cert-manager.io`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerRef {
    /// The issuer's name.
    pub name: String,
    /// The issuer's kind, `Issuer` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The issuer's API group, `cert-manager.io` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl IssuerRef {
    /// The kind after cert-manager's defaulting.
    pub fn kind_or_default(&self) -> &str {
        match self.kind.as_deref() {
            None | Some("") => "Issuer",
            Some(kind) => kind,
        }
    }

    /// The group after cert-manager's defaulting.
    pub fn group_or_default(&self) -> &str {
        match self.group.as_deref() {
            None | Some("") => "cert-manager.io",
            Some(group) => group,
        }
    }

    /// Whether two references name the same issuer once defaults are applied.
    pub fn same_issuer(&self, other: &IssuerRef) -> bool {
        self.name == other.name
            && self.kind_or_default() == other.kind_or_default()
            && self.group_or_default() == other.group_or_default()
    }
}

impl std::fmt::Display for IssuerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}/{}",
            self.kind_or_default(),
            self.group_or_default(),
            self.name
        )
    }
}

/// What the approver and the issuer write back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestStatus {
    /// Approved, Denied, Ready and InvalidRequest conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// The signed certificate and intermediates, PEM, base64 on the wire.
    #[serde(
        default,
        with = "base64_bytes_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate: Option<Vec<u8>>,
    /// The root(s) of the chain, PEM, base64 on the wire.
    #[serde(
        default,
        with = "base64_bytes_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca: Option<Vec<u8>>,
    /// When the request failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

impl CertificateRequest {
    /// The conditions, empty when there is no status yet.
    pub fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
    }
}

/// Go's `[]byte` JSON encoding: standard base64 with padding.
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = Option::<String>::deserialize(d)?.unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// Like [`base64_bytes`], for optional fields.
mod base64_bytes_opt {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_recorded_object_and_round_trips() {
        let json = serde_json::json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "CertificateRequest",
            "metadata": {"name": "cr-1", "namespace": "demo"},
            "spec": {
                "request": "aGVsbG8=",
                "issuerRef": {"name": "nico", "kind": "ClusterIssuer", "group": "cert-manager.io"},
                "duration": "1h",
                "usages": ["digital signature"],
                "isCA": false
            },
            "status": {"conditions": [{"type": "Approved", "status": "True"}], "ca": "Y2E="}
        });
        let cr: CertificateRequest = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(cr.spec.request, b"hello");
        assert_eq!(cr.spec.is_ca, Some(false));
        assert_eq!(cr.status.as_ref().unwrap().ca.as_deref(), Some(&b"ca"[..]));
        assert_eq!(cr.conditions().len(), 1);
        assert_eq!(serde_json::to_value(&cr).unwrap(), json);
    }

    #[test]
    fn issuer_refs_compare_after_defaults() {
        let bare = IssuerRef {
            name: "x".into(),
            kind: None,
            group: Some(String::new()),
        };
        let full = IssuerRef {
            name: "x".into(),
            kind: Some("Issuer".into()),
            group: Some("cert-manager.io".into()),
        };
        assert!(bare.same_issuer(&full));
        let cluster = IssuerRef {
            kind: Some("ClusterIssuer".into()),
            ..full.clone()
        };
        assert!(!cluster.same_issuer(&full));
        assert_eq!(bare.to_string(), "Issuer.cert-manager.io/x");
    }
}

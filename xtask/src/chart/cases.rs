//! The values the chart is rendered with, and values its schema must refuse.

use serde_json::{Value, json};

/// The release every case is rendered as.
pub(crate) const RELEASE: &str = "nico-identity";
/// Its namespace.
pub(crate) const RELEASE_NAMESPACE: &str = "nico-identity";

/// One rendering of the chart.
#[derive(Debug)]
pub(crate) struct Case {
    /// The snapshot's name.
    pub(crate) name: &'static str,
    /// The values given on top of the defaults.
    pub(crate) values: Value,
    /// The roles whose workloads it must render, by component label.
    pub(crate) roles: &'static [&'static str],
    /// Whether `helm lint --strict` runs on it too.
    pub(crate) lint: bool,
}

/// The defaults, each role alone, everything on, and the driver-account variant.
pub(crate) fn rendered() -> Vec<Case> {
    let only = |role: &str| {
        let mut values = json!({
            "csiNode": {"enabled": false},
            "approver": {"enabled": false},
            "issuer": {"enabled": false},
            "webhook": {"enabled": false},
        });
        values[role]["enabled"] = json!(true);
        values
    };
    vec![
        Case {
            name: "defaults",
            values: json!({}),
            roles: &["csi-node", "approver", "issuer", "webhook"],
            lint: true,
        },
        Case {
            name: "csi-node",
            values: only("csiNode"),
            roles: &["csi-node"],
            lint: false,
        },
        Case {
            name: "approver",
            values: only("approver"),
            roles: &["approver"],
            lint: false,
        },
        Case {
            name: "issuer",
            values: only("issuer"),
            roles: &["issuer"],
            lint: false,
        },
        Case {
            name: "webhook",
            values: only("webhook"),
            roles: &["webhook"],
            lint: false,
        },
        Case {
            name: "everything",
            values: json!({
                "crds": {
                    "certificateRequest": {"enabled": true},
                    "certificateRequestPolicy": {"enabled": true},
                },
                "samplePolicy": {"serviceTLS": {"enabled": true}},
                "serviceMonitor": {"enabled": true},
                "networkPolicy": {"enabled": true},
            }),
            roles: &["csi-node", "approver", "issuer", "webhook"],
            lint: true,
        },
        Case {
            name: "driver-mode",
            values: json!({
                "requestIdentity": "driver",
                "trustDomain": "cluster.example",
                "idTemplate": "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}",
                "csiNode": {
                    "allowedKeyAlgorithms": ["ecdsa-p384", "rsa-3072"],
                    "issuerConfigMap": "nico-identity-csi-issuer",
                    "trustBundle": {"configMap": {"name": "trust", "namespace": "trust-manager"}},
                    "config": {"publish_timeout": "30s", "files": {"ca": "bundle.pem"}},
                },
                "approver": {
                    "replicas": 1,
                    "config": {"non_spiffe": "ignore", "max_duration": "2h"},
                },
                "issuer": {
                    "localCA": {"generate": false},
                    "vaultToken": {"enabled": true},
                    "extraIssuers": [{
                        "name": "vault",
                        "vault": {
                            "address": "https://vault.vault.svc:8200",
                            "role": "spiffe",
                            "auth": {"method": "kubernetes", "role": "nico-identity"},
                        },
                    }],
                },
            }),
            roles: &["csi-node", "approver", "issuer", "webhook"],
            lint: true,
        },
    ]
}

/// Values the schema must reject: a name, the values, and the field the error must name.
pub(crate) fn rejected() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        ("unknown top-level key", json!({"replicas": 3}), "replicas"),
        (
            "a chart-owned config key",
            json!({"csiNode": {"config": {"node_id": "x"}}}),
            "node_id",
        ),
        (
            "unknown request identity",
            json!({"requestIdentity": "both"}),
            "requestIdentity",
        ),
        (
            "a duration that is not Go syntax",
            json!({"approver": {"config": {"max_duration": "1 day"}}}),
            "max_duration",
        ),
        (
            "unknown key algorithm",
            json!({"csiNode": {"keyAlgorithm": "dsa"}}),
            "keyAlgorithm",
        ),
        (
            "no replicas",
            json!({"approver": {"replicas": 0}}),
            "replicas",
        ),
        (
            "a tag as digest",
            json!({"image": {"digest": "latest"}}),
            "digest",
        ),
        (
            "a Vault address without scheme",
            json!({"issuer": {"extraIssuers": [{"name": "v", "vault": {
                "address": "vault:8200", "role": "r", "auth": {"method": "token"},
            }}]}}),
            "address",
        ),
    ]
}

//! The MutatingWebhookConfiguration and ValidatingWebhookConfiguration that send reviews
//! here: what they hold when this role manages them, and keeping their `caBundle` equal to
//! the CA bundle.
//!
//! Writes are `PUT`s carrying the resourceVersion they were computed from; a 409 reads the
//! object again. Several replicas writing the same bundle therefore converge.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::{INJECT_LABEL, Settings};
use crate::review::Endpoint;

/// Why a configuration could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigurationError {
    /// The API server refused or failed a request.
    #[error("failed to {action} {kind} {name}: {source}")]
    Kube {
        /// What was being done.
        action: &'static str,
        /// MutatingWebhookConfiguration or ValidatingWebhookConfiguration.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// With `manage_configurations = false`, the configuration must exist.
    #[error(
        "{kind} {name} does not exist: create it (the chart does) or set \
         webhook.manage_configurations = true"
    )]
    Missing {
        /// The kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The object could not be converted to or from JSON.
    #[error("failed to convert {kind} {name}: {source}")]
    Convert {
        /// The kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Another writer kept changing the object.
    #[error("{kind} {name} kept changing while it was being written")]
    Contended {
        /// The kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
}

/// Whether a configuration had to be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// It already held what it should.
    Unchanged,
    /// It was created or updated.
    Updated,
}

/// The webhooks of both configurations, as this role builds them.
#[derive(Clone, Debug)]
pub(crate) struct Desired {
    namespace: String,
    settings: Settings,
}

fn rule(operations: &[&str], group: &str, version: &str, resources: &[&str], scope: &str) -> Value {
    json!({
        "operations": operations,
        "apiGroups": [group],
        "apiVersions": [version],
        "resources": resources,
        "scope": scope,
    })
}

impl Desired {
    pub(crate) fn new(settings: &Settings, role_namespace: &str) -> Self {
        Self {
            namespace: settings.service_namespace(role_namespace).to_owned(),
            settings: settings.clone(),
        }
    }

    fn webhook(&self, endpoint: Endpoint, ca_bundle: &str, mutating: bool) -> Value {
        let (rules, object_selector) = match endpoint {
            Endpoint::CertificateRequestIdentity => (
                vec![rule(
                    &["CREATE"],
                    "cert-manager.io",
                    "v1",
                    &["certificaterequests"],
                    "Namespaced",
                )],
                json!({}),
            ),
            Endpoint::CertificateRequestValidation => (
                vec![rule(
                    &["CREATE", "UPDATE"],
                    "cert-manager.io",
                    "v1",
                    &["certificaterequests", "certificaterequests/status"],
                    "Namespaced",
                )],
                json!({}),
            ),
            Endpoint::PolicyValidation => (
                vec![rule(
                    &["CREATE", "UPDATE"],
                    "policy.cert-manager.io",
                    "v1alpha1",
                    &["certificaterequestpolicies"],
                    "Cluster",
                )],
                json!({}),
            ),
            Endpoint::PodInjection => (
                vec![rule(&["CREATE"], "", "v1", &["pods"], "Namespaced")],
                json!({"matchLabels": {INJECT_LABEL: "true"}}),
            ),
        };
        let mut webhook = json!({
            "name": endpoint.webhook_name(),
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": self.settings.timeout_seconds,
            "namespaceSelector": {},
            "objectSelector": object_selector,
            "rules": rules,
            "clientConfig": {
                "service": {
                    "namespace": self.namespace,
                    "name": self.settings.service_name,
                    "port": self.settings.service_port,
                    "path": endpoint.path(),
                },
                "caBundle": ca_bundle,
            },
        });
        if mutating {
            webhook["reinvocationPolicy"] = "Never".into();
        }
        webhook
    }

    /// The mutating webhooks, trusting `ca_bundle` (base64 of the PEM bundle).
    pub(crate) fn mutating(&self, ca_bundle: &str) -> Value {
        let mut endpoints = vec![Endpoint::CertificateRequestIdentity];
        if self.settings.inject.is_some() {
            endpoints.push(Endpoint::PodInjection);
        }
        let hooks: Vec<Value> = endpoints
            .into_iter()
            .map(|e| self.webhook(e, ca_bundle, true))
            .collect();
        Value::Array(hooks)
    }

    /// The validating webhooks, trusting `ca_bundle` (base64 of the PEM bundle).
    pub(crate) fn validating(&self, ca_bundle: &str) -> Value {
        let hooks: Vec<Value> = [
            Endpoint::CertificateRequestValidation,
            Endpoint::PolicyValidation,
        ]
        .into_iter()
        .map(|e| self.webhook(e, ca_bundle, false))
        .collect();
        Value::Array(hooks)
    }
}

/// Whether every field of `wanted` is in `stored` with the same value; the API server adds
/// defaults of its own, which do not count as a difference. Lists must match item by item.
pub(crate) fn holds(stored: &Value, wanted: &Value) -> bool {
    match (stored, wanted) {
        (Value::Object(stored), Value::Object(wanted)) => wanted
            .iter()
            .all(|(k, w)| stored.get(k).is_some_and(|s| holds(s, w))),
        (Value::Array(stored), Value::Array(wanted)) => {
            stored.len() == wanted.len() && stored.iter().zip(wanted).all(|(s, w)| holds(s, w))
        }
        (stored, wanted) => stored == wanted,
    }
}

/// Writes the configurations' webhooks (managed) or only their `caBundle`.
#[derive(Clone)]
pub(crate) struct Configurations {
    client: kube::Client,
    name: String,
    desired: Option<Desired>,
}

impl std::fmt::Debug for Configurations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configurations")
            .field("name", &self.name)
            .field("managed", &self.desired.is_some())
            .finish()
    }
}

/// How often a write is retried after a conflict.
const ATTEMPTS: usize = 5;

impl Configurations {
    pub(crate) fn new(client: kube::Client, settings: &Settings, role_namespace: &str) -> Self {
        Self {
            client,
            name: settings.configuration_name.clone(),
            desired: settings
                .manage_configurations
                .then(|| Desired::new(settings, role_namespace)),
        }
    }

    /// Makes both configurations trust `bundle_pem`.
    pub(crate) async fn ensure(&self, bundle_pem: &str) -> Result<Written, ConfigurationError> {
        let ca_bundle = STANDARD.encode(bundle_pem);
        let mutating = self.desired.as_ref().map(|d| d.mutating(&ca_bundle));
        let validating = self.desired.as_ref().map(|d| d.validating(&ca_bundle));
        let first = self
            .ensure_one::<MutatingWebhookConfiguration>(
                "MutatingWebhookConfiguration",
                mutating,
                &ca_bundle,
            )
            .await?;
        let second = self
            .ensure_one::<ValidatingWebhookConfiguration>(
                "ValidatingWebhookConfiguration",
                validating,
                &ca_bundle,
            )
            .await?;
        Ok(
            if first == Written::Unchanged && second == Written::Unchanged {
                Written::Unchanged
            } else {
                Written::Updated
            },
        )
    }

    async fn ensure_one<K>(
        &self,
        kind: &'static str,
        desired: Option<Value>,
        ca_bundle: &str,
    ) -> Result<Written, ConfigurationError>
    where
        K: kube::Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + Serialize
            + DeserializeOwned,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let name = self.name.clone();
        let kube_error = |action: &'static str| {
            let name = name.clone();
            move |source| ConfigurationError::Kube {
                action,
                kind,
                name,
                source,
            }
        };
        let convert = |source| ConfigurationError::Convert {
            kind,
            name: name.clone(),
            source,
        };
        for _ in 0..ATTEMPTS {
            let Some(stored) = api.get_opt(&name).await.map_err(kube_error("read"))? else {
                let Some(webhooks) = &desired else {
                    return Err(ConfigurationError::Missing {
                        kind,
                        name: name.clone(),
                    });
                };
                let labels = json!({"app.kubernetes.io/component": "webhook"});
                let object = json!({
                    "metadata": {"name": name, "labels": labels},
                    "webhooks": webhooks,
                });
                let object: K = serde_json::from_value(object).map_err(convert)?;
                match api.create(&PostParams::default(), &object).await {
                    Ok(_) => return Ok(Written::Updated),
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    Err(source) => return Err(kube_error("create")(source)),
                }
            };
            let mut object = serde_json::to_value(&stored).map_err(convert)?;
            let current = object.get("webhooks").cloned().unwrap_or(Value::Null);
            match &desired {
                Some(webhooks) if holds(&current, webhooks) => return Ok(Written::Unchanged),
                Some(webhooks) => object["webhooks"] = webhooks.clone(),
                None => {
                    let hooks = object
                        .get_mut("webhooks")
                        .and_then(Value::as_array_mut)
                        .map(Vec::as_mut_slice)
                        .unwrap_or_default();
                    let mut changed = false;
                    for hook in hooks {
                        if hook["clientConfig"]["caBundle"] != ca_bundle {
                            hook["clientConfig"]["caBundle"] = ca_bundle.into();
                            changed = true;
                        }
                    }
                    if !changed {
                        return Ok(Written::Unchanged);
                    }
                }
            }
            let object: K = serde_json::from_value(object).map_err(convert)?;
            match api.replace(&name, &PostParams::default(), &object).await {
                Ok(_) => return Ok(Written::Updated),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(source) => return Err(kube_error("update")(source)),
            }
        }
        Err(ConfigurationError::Contended { kind, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_defaults_are_not_differences_but_changed_or_extra_webhooks_are() {
        let settings = crate::Config::default().validate().unwrap();
        let desired = Desired::new(&settings, "nico").mutating("Q0E=");
        let mut stored = desired.clone();
        stored[0]["clientConfig"]["service"]["extra"] = "defaulted".into();
        stored[1]["someNewField"] = json!({});
        assert!(holds(&stored, &desired));
        let mut other_bundle = stored.clone();
        other_bundle[0]["clientConfig"]["caBundle"] = "T0xE".into();
        assert!(!holds(&other_bundle, &desired));
        let mut extra = stored.clone();
        extra
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "foreign.example.com"}));
        assert!(!holds(&extra, &desired));
        assert!(!holds(&Value::Null, &desired));
    }

    #[test]
    fn the_webhooks_point_at_the_service_and_match_what_they_review() {
        let settings = crate::Config::default().validate().unwrap();
        let desired = Desired::new(&settings, "nico");
        let mutating = desired.mutating("Q0E=");
        let validating = desired.validating("Q0E=");
        let names: Vec<&str> = mutating
            .as_array()
            .unwrap()
            .iter()
            .chain(validating.as_array().unwrap())
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "requester.certificaterequests.identity.nico.io",
                "inject.pods.identity.nico.io",
                "certificaterequests.identity.nico.io",
                "certificaterequestpolicies.identity.nico.io",
            ]
        );
        let service = &validating[0]["clientConfig"]["service"];
        assert_eq!(service["namespace"], "nico");
        assert_eq!(service["name"], "nico-identity-webhook");
        assert_eq!(service["path"], "/validate/certificaterequests");
        assert_eq!(
            validating[0]["rules"][0]["resources"],
            json!(["certificaterequests", "certificaterequests/status"])
        );
        assert_eq!(
            mutating[1]["objectSelector"],
            json!({"matchLabels": {"identity.nico.io/inject": "true"}})
        );
        let mut off = settings.clone();
        off.inject = None;
        assert_eq!(
            Desired::new(&off, "nico")
                .mutating("Q0E=")
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}

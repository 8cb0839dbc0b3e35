//! Issuer configuration and its validation.

use std::path::PathBuf;
use std::time::Duration;

use nico_k8s_types::IssuerRef;
use serde::{Deserialize, Serialize};

/// The issuer section of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The issuers this process signs for. A request naming any other issuer is left to
    /// whoever serves it (cert-manager, another nico-identity).
    pub issuers: Vec<IssuerConfig>,
}

/// One named issuer and its backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Name in `issuerRef.name`.
    pub name: String,
    /// Kind in `issuerRef.kind`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Group in `issuerRef.group`.
    #[serde(default = "default_group")]
    pub group: String,
    /// Sign with a local CA.
    pub local_ca: Option<LocalCaConfig>,
}

/// A CA whose key and certificate are files on this host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalCaConfig {
    /// PEM certificate of the CA.
    pub certificate: PathBuf,
    /// PEM PKCS#8 key of the CA.
    pub key: PathBuf,
    /// Create a self-signed CA when both files are absent (development only).
    #[serde(default)]
    pub generate: bool,
    /// Lifetime of a generated CA, Go duration syntax.
    #[serde(default = "default_ca_validity")]
    pub validity: String,
}

fn default_kind() -> String {
    "ClusterIssuer".to_owned()
}

fn default_group() -> String {
    "cert-manager.io".to_owned()
}

fn default_ca_validity() -> String {
    "8760h".to_owned()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            issuers: vec![IssuerConfig {
                name: "nico-identity".to_owned(),
                kind: default_kind(),
                group: default_group(),
                local_ca: Some(LocalCaConfig {
                    certificate: PathBuf::from("/etc/nico-identity/ca/tls.crt"),
                    key: PathBuf::from("/etc/nico-identity/ca/tls.key"),
                    generate: false,
                    validity: default_ca_validity(),
                }),
            }],
        }
    }
}

/// A configuration value that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("invalid issuer configuration: {key}: {reason}")]
pub struct ConfigError {
    /// The configuration key.
    pub key: String,
    /// What is wrong and what is expected.
    pub reason: String,
}

/// One validated issuer.
#[derive(Clone, Debug)]
pub struct IssuerSettings {
    /// The reference requests must carry.
    pub issuer_ref: IssuerRef,
    /// Its local CA.
    pub local_ca: ValidLocalCa,
}

/// A validated local CA configuration.
#[derive(Clone, Debug)]
pub struct ValidLocalCa {
    /// Certificate path.
    pub certificate: PathBuf,
    /// Key path.
    pub key: PathBuf,
    /// Whether to generate when absent.
    pub generate: bool,
    /// Lifetime of a generated CA.
    pub validity: Duration,
}

/// Validated issuer settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Every configured issuer.
    pub issuers: Vec<IssuerSettings>,
}

impl Config {
    /// Checks every value and returns the typed settings, or the first bad key.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        if self.issuers.is_empty() {
            return Err(ConfigError {
                key: "issuer.issuers".into(),
                reason: "at least one issuer is required".into(),
            });
        }
        let mut issuers: Vec<IssuerSettings> = Vec::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            let key = |field: &str| format!("issuer.issuers[{i}].{field}");
            let invalid = |field: &str, reason: String| ConfigError {
                key: key(field),
                reason,
            };
            if issuer.name.is_empty() {
                return Err(invalid("name", "required".into()));
            }
            let issuer_ref = IssuerRef {
                name: issuer.name.clone(),
                kind: Some(issuer.kind.clone()).filter(|k| !k.is_empty()),
                group: Some(issuer.group.clone()).filter(|g| !g.is_empty()),
            };
            if issuers
                .iter()
                .any(|other| other.issuer_ref.same_issuer(&issuer_ref))
            {
                return Err(invalid("name", format!("{issuer_ref} is configured twice")));
            }
            let Some(ca) = &issuer.local_ca else {
                return Err(invalid(
                    "local_ca",
                    "required: the backend that signs".into(),
                ));
            };
            let validity = nico_policy::duration::parse_go_duration(&ca.validity)
                .map_err(|e| invalid("local_ca.validity", e.to_string()))?;
            issuers.push(IssuerSettings {
                issuer_ref,
                local_ca: ValidLocalCa {
                    certificate: ca.certificate.clone(),
                    key: ca.key.clone(),
                    generate: ca.generate,
                    validity,
                },
            });
        }
        Ok(Settings { issuers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let settings = Config::default().validate().unwrap();
        assert_eq!(settings.issuers.len(), 1);
        assert_eq!(
            settings.issuers[0].issuer_ref.kind_or_default(),
            "ClusterIssuer"
        );
    }

    #[test]
    fn duplicates_and_missing_backends_are_named() {
        let mut config = Config::default();
        config.issuers.push(config.issuers[0].clone());
        assert_eq!(config.validate().unwrap_err().key, "issuer.issuers[1].name");
        let mut config = Config::default();
        config.issuers[0].local_ca = None;
        assert_eq!(
            config.validate().unwrap_err().key,
            "issuer.issuers[0].local_ca"
        );
        let mut config = Config::default();
        config.issuers[0].local_ca.as_mut().unwrap().validity = "forever".into();
        assert_eq!(
            config.validate().unwrap_err().key,
            "issuer.issuers[0].local_ca.validity"
        );
    }
}

//! Approver configuration and its validation.

use std::time::Duration;

use nico_csr::KeyAlgorithm;
use nico_k8s_types::IssuerRef;
use nico_policy::{AllowedKey, DurationBounds, IssuerName, SpiffePolicy};
use nico_spiffe_id::{IdTemplate, TrustDomain};
use serde::{Deserialize, Serialize};

/// The approver section of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The only trust domain approved.
    pub trust_domain: String,
    /// How a namespace and service account map to the one ID they may request.
    pub id_template: String,
    /// The issuer that signs SPIFFE requests; requests aimed at it are judged as SPIFFE
    /// requests even without the identity annotation.
    pub issuer: IssuerConfig,
    /// Shortest lifetime approved, Go duration syntax.
    pub min_duration: String,
    /// Longest lifetime approved, Go duration syntax.
    pub max_duration: String,
    /// Key algorithms approved.
    pub key_algorithms: Vec<String>,
}

/// An issuer reference in the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssuerConfig {
    /// Issuer name.
    pub name: String,
    /// Issuer kind.
    pub kind: String,
    /// Issuer API group.
    pub group: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            trust_domain: nico_spiffe_id::DEFAULT_TRUST_DOMAIN.to_owned(),
            id_template: nico_spiffe_id::DEFAULT_TEMPLATE.to_owned(),
            issuer: IssuerConfig::default(),
            min_duration: "10m".to_owned(),
            max_duration: "24h".to_owned(),
            key_algorithms: vec![KeyAlgorithm::EcdsaP256.as_str().to_owned()],
        }
    }
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self {
            name: "nico-identity".to_owned(),
            kind: "ClusterIssuer".to_owned(),
            group: "cert-manager.io".to_owned(),
        }
    }
}

/// A configuration value that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("invalid approver configuration: {key}: {reason}")]
pub struct ConfigError {
    /// The configuration key.
    pub key: &'static str,
    /// What is wrong and what is expected.
    pub reason: String,
}

fn invalid(key: &'static str, reason: impl ToString) -> ConfigError {
    ConfigError {
        key,
        reason: reason.to_string(),
    }
}

/// Validated approver settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The SPIFFE issuer.
    pub issuer: IssuerRef,
    /// The request policy.
    pub policy: SpiffePolicy,
}

impl Config {
    /// Checks every value and returns the typed settings, or the first bad key.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let trust_domain = TrustDomain::parse(&self.trust_domain)
            .map_err(|e| invalid("approver.trust_domain", e))?;
        let template =
            IdTemplate::parse(&self.id_template).map_err(|e| invalid("approver.id_template", e))?;
        if self.issuer.name.is_empty() {
            return Err(invalid("approver.issuer.name", "required"));
        }
        let min = duration("approver.min_duration", &self.min_duration)?;
        let max = duration("approver.max_duration", &self.max_duration)?;
        if min > max {
            return Err(invalid(
                "approver.min_duration",
                format!(
                    "{} is longer than max_duration {}",
                    self.min_duration, self.max_duration
                ),
            ));
        }
        if self.key_algorithms.is_empty() {
            return Err(invalid(
                "approver.key_algorithms",
                "at least one algorithm is required",
            ));
        }
        let key_algorithms = self
            .key_algorithms
            .iter()
            .map(|a| a.parse::<AllowedKey>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("approver.key_algorithms", e))?;
        Ok(Settings {
            issuer: IssuerRef {
                name: self.issuer.name.clone(),
                kind: Some(self.issuer.kind.clone()).filter(|k| !k.is_empty()),
                group: Some(self.issuer.group.clone()).filter(|g| !g.is_empty()),
            },
            policy: SpiffePolicy::new(trust_domain, template)
                .map_err(|e| invalid("approver.id_template", e))?
                .with_durations(
                    DurationBounds::new(min, max)
                        .map_err(|e| invalid("approver.min_duration", e))?,
                )
                .with_issuer(IssuerName::new(
                    self.issuer.name.clone(),
                    Some(&self.issuer.kind),
                    Some(&self.issuer.group),
                ))
                .with_allowed_keys(key_algorithms)
                .map_err(|e| invalid("approver.key_algorithms", e))?,
        })
    }
}

fn duration(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    nico_policy::duration::parse_go_duration(value).map_err(|e| invalid(key, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let settings = Config::default().validate().unwrap();
        assert_eq!(
            settings.policy.durations().max(),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                Config {
                    trust_domain: "UPPER".into(),
                    ..Config::default()
                },
                "approver.trust_domain",
            ),
            (
                Config {
                    min_duration: "2d".into(),
                    ..Config::default()
                },
                "approver.min_duration",
            ),
            (
                Config {
                    min_duration: "48h".into(),
                    ..Config::default()
                },
                "approver.min_duration",
            ),
            (
                Config {
                    key_algorithms: vec![],
                    ..Config::default()
                },
                "approver.key_algorithms",
            ),
        ];
        for (config, key) in cases {
            assert_eq!(config.validate().unwrap_err().key, key);
        }
    }
}

//! Approver configuration and its validation.

use std::collections::BTreeSet;
use std::time::Duration;

use nico_policy::{AllowedKey, DurationBounds, IssuerName, RequesterMode, SpiffePolicy};
use nico_request_policy::Limits;
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
    /// requests even without the identity annotation, and SPIFFE requests must name it.
    pub issuer: IssuerConfig,
    /// Shortest lifetime approved, Go duration syntax.
    pub min_duration: String,
    /// Longest lifetime approved, Go duration syntax.
    pub max_duration: String,
    /// Key algorithms and sizes approved: `ecdsa-p256`, `ecdsa-p384`, `ecdsa-p521`,
    /// `ed25519`, `rsa-<bits>`.
    pub key_algorithms: Vec<String>,
    /// Who creates SPIFFE requests: `pod` (the pod's own account, as nico-identity's node
    /// driver does) or `driver` (the node driver's account, naming the pod).
    pub requester: RequesterKind,
    /// In `pod` mode, deny tokens that are not bound to a pod.
    pub require_pod_bound_token: bool,
    /// In `driver` mode, the driver's accounts, `system:serviceaccount:<ns>:<name>`.
    pub driver_accounts: Vec<String>,
    /// What happens to requests that are not SPIFFE requests.
    pub non_spiffe: NonSpiffeMode,
    /// The largest estimated cost of one CEL rule of a CertificateRequestPolicy.
    pub cel_cost_limit: u64,
    /// Run as one of several replicas, acting only while holding the Lease.
    pub leader_election: bool,
    /// The Lease's name (in the role's namespace).
    pub lease_name: String,
}

/// An issuer reference in the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssuerConfig {
    /// Issuer name.
    pub name: String,
    /// Issuer kind; empty means `Issuer`.
    pub kind: String,
    /// Issuer API group; empty means `cert-manager.io`.
    pub group: String,
}

/// Who creates SPIFFE requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequesterKind {
    /// The pod's own service account.
    #[default]
    Pod,
    /// The node driver's account on the pod's behalf.
    Driver,
}

/// The compatibility switch for requests that are not SPIFFE requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NonSpiffeMode {
    /// Judge them by CertificateRequestPolicy objects (what approver-policy does).
    #[default]
    Policy,
    /// Approve only SPIFFE requests; leave the others for another approver (what the
    /// csi-driver-spiffe approver does).
    Ignore,
    /// Approve them when the CSR carries no SPIFFE ID (what cert-manager's built-in
    /// approver beside the csi-driver-spiffe approver amounts to).
    Approve,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            trust_domain: nico_spiffe_id::DEFAULT_TRUST_DOMAIN.to_owned(),
            id_template: nico_spiffe_id::DEFAULT_TEMPLATE.to_owned(),
            issuer: IssuerConfig::default(),
            min_duration: "10m".to_owned(),
            max_duration: "24h".to_owned(),
            key_algorithms: vec![AllowedKey::EcdsaP256.to_string()],
            requester: RequesterKind::Pod,
            require_pod_bound_token: false,
            driver_accounts: Vec::new(),
            non_spiffe: NonSpiffeMode::Policy,
            cel_cost_limit: nico_request_policy::DEFAULT_COST_LIMIT,
            leader_election: true,
            lease_name: "nico-identity-approver".to_owned(),
        }
    }
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self {
            name: nico_policy::DEFAULT_SPIFFE_ISSUER.to_owned(),
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
    /// The SPIFFE request policy (issuer, trust domain, template, bounds, keys, requester).
    pub policy: SpiffePolicy,
    /// What happens to other requests.
    pub non_spiffe: NonSpiffeMode,
    /// Limits for loading CertificateRequestPolicies.
    pub limits: Limits,
    /// The Lease to hold, or `None` to act without leader election.
    pub lease_name: Option<String>,
}

impl Settings {
    /// The SPIFFE issuer.
    pub fn issuer(&self) -> &IssuerName {
        self.policy.issuer()
    }
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
        let bounds =
            DurationBounds::new(min, max).map_err(|e| invalid("approver.min_duration", e))?;
        if self.key_algorithms.is_empty() {
            return Err(invalid(
                "approver.key_algorithms",
                "at least one algorithm is required",
            ));
        }
        let keys = self
            .key_algorithms
            .iter()
            .map(|a| a.parse::<AllowedKey>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("approver.key_algorithms", e))?;
        let requester = match self.requester {
            RequesterKind::Pod => {
                if !self.driver_accounts.is_empty() {
                    return Err(invalid(
                        "approver.driver_accounts",
                        "only used with requester = \"driver\"",
                    ));
                }
                RequesterMode::PodAccount {
                    require_pod_bound: self.require_pod_bound_token,
                }
            }
            RequesterKind::Driver => {
                if self.require_pod_bound_token {
                    return Err(invalid(
                        "approver.require_pod_bound_token",
                        "only used with requester = \"pod\"",
                    ));
                }
                RequesterMode::DriverAccount {
                    accounts: self
                        .driver_accounts
                        .iter()
                        .cloned()
                        .collect::<BTreeSet<_>>(),
                }
            }
        };
        if self.cel_cost_limit == 0 {
            return Err(invalid(
                "approver.cel_cost_limit",
                "must be greater than zero",
            ));
        }
        let lease_name = if self.leader_election {
            if self.lease_name.is_empty() {
                return Err(invalid(
                    "approver.lease_name",
                    "required with leader_election",
                ));
            }
            Some(self.lease_name.clone())
        } else {
            None
        };
        let issuer = IssuerName::new(
            self.issuer.name.clone(),
            Some(&self.issuer.kind),
            Some(&self.issuer.group),
        );
        let policy = SpiffePolicy::new(trust_domain, template)
            .map_err(|e| invalid("approver.id_template", e))?
            .with_issuer(issuer)
            .with_durations(bounds)
            .with_allowed_keys(keys)
            .map_err(|e| invalid("approver.key_algorithms", e))?
            .with_requester(requester)
            .map_err(|e| invalid("approver.driver_accounts", e))?;
        Ok(Settings {
            policy,
            non_spiffe: self.non_spiffe,
            limits: Limits {
                cel_cost: self.cel_cost_limit,
            },
            lease_name,
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
        assert_eq!(
            settings.issuer().to_string(),
            "ClusterIssuer.cert-manager.io/nico-identity"
        );
        assert_eq!(settings.non_spiffe, NonSpiffeMode::Policy);
        assert_eq!(
            settings.lease_name.as_deref(),
            Some("nico-identity-approver")
        );
    }

    #[test]
    fn empty_issuer_kind_and_group_mean_the_defaults() {
        let config = Config {
            issuer: IssuerConfig {
                name: "ca".into(),
                kind: String::new(),
                group: String::new(),
            },
            ..Config::default()
        };
        let settings = config.validate().unwrap();
        assert_eq!(settings.issuer().to_string(), "Issuer.cert-manager.io/ca");
    }

    #[test]
    fn driver_mode_takes_the_driver_accounts() {
        let config = Config {
            requester: RequesterKind::Driver,
            driver_accounts: vec!["system:serviceaccount:nico:csi".into()],
            ..Config::default()
        };
        let settings = config.validate().unwrap();
        assert!(matches!(
            settings.policy.requester(),
            RequesterMode::DriverAccount { accounts } if accounts.len() == 1
        ));
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
            (
                Config {
                    key_algorithms: vec!["rsa-1024".into()],
                    ..Config::default()
                },
                "approver.key_algorithms",
            ),
            (
                Config {
                    requester: RequesterKind::Driver,
                    ..Config::default()
                },
                "approver.driver_accounts",
            ),
            (
                Config {
                    driver_accounts: vec!["system:serviceaccount:a:b".into()],
                    ..Config::default()
                },
                "approver.driver_accounts",
            ),
            (
                Config {
                    requester: RequesterKind::Driver,
                    driver_accounts: vec!["csi".into()],
                    ..Config::default()
                },
                "approver.driver_accounts",
            ),
            (
                Config {
                    cel_cost_limit: 0,
                    ..Config::default()
                },
                "approver.cel_cost_limit",
            ),
            (
                Config {
                    lease_name: String::new(),
                    ..Config::default()
                },
                "approver.lease_name",
            ),
        ];
        for (config, key) in cases {
            assert_eq!(config.validate().unwrap_err().key, key, "{config:?}");
        }
    }
}

//! [`SpiffePolicy`]: what an approvable SPIFFE request looks like, checked for consistency
//! when it is built so that a misconfiguration fails at start-up, not on every request.

use std::collections::BTreeSet;
use std::time::Duration;

use nico_spiffe_id::{DEFAULT_TRUST_DOMAIN, IdTemplate, TrustDomain};

use crate::duration::format_go_duration;
use crate::{AllowedKey, IssuerName, RequesterMode};

/// Why a policy configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The minimum duration is zero.
    #[error("minimum duration must be greater than zero")]
    ZeroMinimum,

    /// The bounds are upside down.
    #[error("minimum duration {min} is greater than maximum duration {max}")]
    MinAboveMax {
        /// The configured minimum, Go syntax.
        min: String,
        /// The configured maximum, Go syntax.
        max: String,
    },

    /// The template names a trust domain other than the configured one, so no ID could ever
    /// be approved.
    #[error(
        "template {template} is fixed to trust domain {fixed}, but the trust domain is {configured}"
    )]
    TemplateTrustDomain {
        /// The template.
        template: String,
        /// The trust domain written in the template.
        fixed: TrustDomain,
        /// The configured trust domain.
        configured: TrustDomain,
    },

    /// No key algorithm is allowed, so every request would be denied.
    #[error("at least one key algorithm must be allowed")]
    NoKeyAlgorithms,

    /// Driver-account mode names no driver account, so every request would be denied.
    #[error("driver-account mode needs at least one driver account")]
    NoDriverAccounts,

    /// A driver account is not a service account name.
    #[error(
        "driver account {presented:?} is not a service account: expected \
         system:serviceaccount:<namespace>:<name>"
    )]
    BadDriverAccount {
        /// The account as configured.
        presented: String,
    },
}

/// Inclusive bounds on the requested certificate duration, minimum above zero and not above
/// the maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationBounds {
    min: Duration,
    max: Duration,
}

impl DurationBounds {
    /// The default minimum, 10 minutes: the node driver renews at two thirds of the lifetime,
    /// so shorter certificates would mean a renewal (a CR, an approval, a signature) every few
    /// minutes per pod, load on the API server and the CA for little gain.
    pub const DEFAULT_MIN: Duration = Duration::from_secs(10 * 60);

    /// The default maximum, 24 hours: a stolen SVID key stays useful at most a day, while the
    /// node driver's default request of 1 hour sits comfortably inside.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(24 * 60 * 60);

    /// Bounds from `min` to `max`, both inclusive.
    pub fn new(min: Duration, max: Duration) -> Result<Self, ConfigError> {
        if min.is_zero() {
            return Err(ConfigError::ZeroMinimum);
        }
        if min > max {
            return Err(ConfigError::MinAboveMax {
                min: format_go_duration(min),
                max: format_go_duration(max),
            });
        }
        Ok(Self { min, max })
    }

    /// The shortest acceptable duration.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The longest acceptable duration.
    pub fn max(&self) -> Duration {
        self.max
    }
}

impl Default for DurationBounds {
    fn default() -> Self {
        Self {
            min: Self::DEFAULT_MIN,
            max: Self::DEFAULT_MAX,
        }
    }
}

/// The issuer SPIFFE requests must name unless configured otherwise.
pub const DEFAULT_SPIFFE_ISSUER: &str = "nico-identity";

/// The approval policy for SPIFFE requests. Build it with [`SpiffePolicy::new`] or take the
/// [`Default`] (trust domain `nico.local`, the default template, the ClusterIssuer
/// `nico-identity`, 10m to 24h, ECDSA P-256 only, requests made by the pod's own account),
/// then judge requests with [`SpiffePolicy::evaluate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpiffePolicy {
    pub(crate) trust_domain: TrustDomain,
    pub(crate) template: IdTemplate,
    pub(crate) issuer: IssuerName,
    pub(crate) durations: DurationBounds,
    pub(crate) allowed_keys: BTreeSet<AllowedKey>,
    pub(crate) requester: RequesterMode,
}

impl SpiffePolicy {
    /// A policy for `trust_domain` and `template`, with the default issuer, durations, key
    /// algorithms and requester mode. Fails when the template is fixed to another trust
    /// domain.
    pub fn new(trust_domain: TrustDomain, template: IdTemplate) -> Result<Self, ConfigError> {
        if let Some(fixed) = template.fixed_trust_domain()
            && *fixed != trust_domain
        {
            return Err(ConfigError::TemplateTrustDomain {
                template: template.to_string(),
                fixed: fixed.clone(),
                configured: trust_domain,
            });
        }
        Ok(Self {
            trust_domain,
            template,
            issuer: IssuerName::new(DEFAULT_SPIFFE_ISSUER, Some("ClusterIssuer"), None),
            durations: DurationBounds::default(),
            allowed_keys: BTreeSet::from([AllowedKey::EcdsaP256]),
            requester: RequesterMode::default(),
        })
    }

    /// Replaces the issuer SPIFFE requests must name.
    pub fn with_issuer(mut self, issuer: IssuerName) -> Self {
        self.issuer = issuer;
        self
    }

    /// Replaces who creates requests. Driver-account mode needs at least one account, each
    /// a service account name.
    pub fn with_requester(mut self, requester: RequesterMode) -> Result<Self, ConfigError> {
        if let RequesterMode::DriverAccount { accounts } = &requester {
            if accounts.is_empty() {
                return Err(ConfigError::NoDriverAccounts);
            }
            if let Some(bad) = accounts
                .iter()
                .find(|a| crate::evaluate::service_account(a).is_none())
            {
                return Err(ConfigError::BadDriverAccount {
                    presented: bad.clone(),
                });
            }
        }
        self.requester = requester;
        Ok(self)
    }

    /// Replaces the duration bounds.
    pub fn with_durations(mut self, durations: DurationBounds) -> Self {
        self.durations = durations;
        self
    }

    /// Replaces the allowed key shapes; at least one is required.
    pub fn with_allowed_keys(
        mut self,
        keys: impl IntoIterator<Item = AllowedKey>,
    ) -> Result<Self, ConfigError> {
        let keys: BTreeSet<_> = keys.into_iter().collect();
        if keys.is_empty() {
            return Err(ConfigError::NoKeyAlgorithms);
        }
        self.allowed_keys = keys;
        Ok(self)
    }

    /// The trust domain every approved ID must belong to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The template IDs are rendered from.
    pub fn template(&self) -> &IdTemplate {
        &self.template
    }

    /// The accepted durations.
    pub fn durations(&self) -> DurationBounds {
        self.durations
    }

    /// The issuer requests must name.
    pub fn issuer(&self) -> &IssuerName {
        &self.issuer
    }

    /// The accepted key shapes.
    pub fn allowed_keys(&self) -> &BTreeSet<AllowedKey> {
        &self.allowed_keys
    }

    /// Who creates requests.
    pub fn requester(&self) -> &RequesterMode {
        &self.requester
    }
}

impl Default for SpiffePolicy {
    fn default() -> Self {
        // invariant: DEFAULT_TRUST_DOMAIN is a valid trust domain (tested in nico-spiffe-id)
        // and the default template uses the {trust_domain} placeholder, so `new` accepts it.
        let trust_domain = TrustDomain::parse(DEFAULT_TRUST_DOMAIN).expect("valid default");
        Self::new(trust_domain, IdTemplate::default()).expect("consistent default")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let policy = SpiffePolicy::default();
        assert_eq!(policy.trust_domain().as_str(), "nico.local");
        assert_eq!(policy.template().as_str(), nico_spiffe_id::DEFAULT_TEMPLATE);
        assert_eq!(policy.durations().min(), Duration::from_secs(600));
        assert_eq!(policy.durations().max(), Duration::from_secs(86_400));
        assert_eq!(
            policy.allowed_keys().iter().collect::<Vec<_>>(),
            [&AllowedKey::EcdsaP256]
        );
        assert_eq!(
            policy.issuer().to_string(),
            "ClusterIssuer.cert-manager.io/nico-identity"
        );
        assert_eq!(policy.requester(), &RequesterMode::default());
    }

    #[test]
    fn inconsistent_configurations_are_refused() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            DurationBounds::new(Duration::ZERO, hour),
            Err(ConfigError::ZeroMinimum)
        );
        assert_eq!(
            DurationBounds::new(hour * 2, hour).unwrap_err().to_string(),
            "minimum duration 2h0m0s is greater than maximum duration 1h0m0s"
        );
        assert!(DurationBounds::new(hour, hour).is_ok());

        let td = TrustDomain::parse("nico.local").unwrap();
        let fixed = IdTemplate::parse("spiffe://other.test/{namespace}/{service_account}").unwrap();
        assert!(matches!(
            SpiffePolicy::new(td.clone(), fixed),
            Err(ConfigError::TemplateTrustDomain { .. })
        ));
        let same = IdTemplate::parse("spiffe://nico.local/{namespace}/{service_account}").unwrap();
        assert!(SpiffePolicy::new(td, same).is_ok());

        let err = SpiffePolicy::default().with_allowed_keys([]).unwrap_err();
        assert_eq!(err, ConfigError::NoKeyAlgorithms);

        let driver = |accounts: &[&str]| RequesterMode::DriverAccount {
            accounts: accounts.iter().map(|a| (*a).to_owned()).collect(),
        };
        let err = SpiffePolicy::default().with_requester(driver(&[]));
        assert_eq!(err.unwrap_err(), ConfigError::NoDriverAccounts);
        let err = SpiffePolicy::default().with_requester(driver(&["csi-driver"]));
        assert!(matches!(
            err.unwrap_err(),
            ConfigError::BadDriverAccount { .. }
        ));
        let good = driver(&["system:serviceaccount:nico:csi"]);
        assert!(SpiffePolicy::default().with_requester(good).is_ok());
    }
}

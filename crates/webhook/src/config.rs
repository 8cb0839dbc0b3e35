//! Webhook configuration and its validation.

use std::net::SocketAddr;
use std::time::Duration;

use nico_policy::duration::parse_go_duration;
use serde::{Deserialize, Serialize};

/// The CSI driver the injected volume names (csi-node's default).
pub const DEFAULT_DRIVER_NAME: &str = "spiffe.csi.cert-manager.io";

/// The label that asks for injection, with the value `"true"`.
pub const INJECT_LABEL: &str = "identity.nico.io/inject";

/// The shortest serving certificate lifetime accepted (tests rotate this fast).
const MIN_SERVING_VALIDITY: Duration = Duration::from_secs(2);

/// The smallest review size limit accepted: a Pod with a few containers must fit.
const MIN_REVIEW_BYTES: usize = 64 * 1024;

/// The webhook section of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the HTTPS server listens.
    pub listen_address: SocketAddr,
    /// The Service in front of the webhook: its name is in the serving certificate and in
    /// the webhook configurations.
    pub service_name: String,
    /// The Service's namespace; empty means the role's own (`pod_namespace`).
    pub service_namespace: String,
    /// The Service port the API server calls.
    pub service_port: u16,
    /// The cluster's DNS domain, for the `<service>.<namespace>.svc.<domain>` name.
    pub cluster_domain: String,
    /// More DNS names for the serving certificate.
    pub extra_dns_names: Vec<String>,
    /// The name of the MutatingWebhookConfiguration and of the
    /// ValidatingWebhookConfiguration.
    pub configuration_name: String,
    /// Create the configurations and keep their webhooks as built (`true`), or only write
    /// the `caBundle` of configurations someone else created (`false`).
    pub manage_configurations: bool,
    /// The Secret (in the role's namespace) that holds the CA every replica shares.
    pub ca_secret: String,
    /// The CA's lifetime, Go duration syntax; it is replaced when a third is left.
    pub ca_validity: String,
    /// The serving certificate's lifetime; it is renewed when a third is left.
    pub serving_validity: String,
    /// How often the CA Secret and the configurations are checked.
    pub resync_interval: String,
    /// How long the API server waits for an answer, in seconds (1 to 30).
    pub timeout_seconds: i32,
    /// The largest AdmissionReview read, in bytes.
    pub max_review_bytes: usize,
    /// The largest estimated cost of one CEL rule in a CertificateRequestPolicy (keep it
    /// equal to the approver's).
    pub cel_cost_limit: u64,
    /// How long open connections may finish their requests at shutdown.
    pub shutdown_grace: String,
    /// Pod injection.
    pub inject: InjectConfig,
}

/// Pod injection settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InjectConfig {
    /// Register the pod webhook.
    pub enabled: bool,
    /// The CSI driver of the injected volume.
    pub driver_name: String,
    /// The injected volume's name.
    pub volume_name: String,
    /// Where each container gets the volume, read-only.
    pub mount_path: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen_address: SocketAddr::from(([0, 0, 0, 0], 9443)),
            service_name: "nico-identity-webhook".to_owned(),
            service_namespace: String::new(),
            service_port: 443,
            cluster_domain: "cluster.local".to_owned(),
            extra_dns_names: Vec::new(),
            configuration_name: "nico-identity-webhook".to_owned(),
            manage_configurations: true,
            ca_secret: "nico-identity-webhook-ca".to_owned(),
            ca_validity: "43800h".to_owned(),
            serving_validity: "168h".to_owned(),
            resync_interval: "1m".to_owned(),
            timeout_seconds: 10,
            max_review_bytes: 7 * 1024 * 1024,
            cel_cost_limit: nico_request_policy::DEFAULT_COST_LIMIT,
            shutdown_grace: "10s".to_owned(),
            inject: InjectConfig::default(),
        }
    }
}

impl Default for InjectConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            driver_name: DEFAULT_DRIVER_NAME.to_owned(),
            volume_name: "spiffe".to_owned(),
            mount_path: "/var/run/secrets/spiffe.io".to_owned(),
        }
    }
}

/// A configuration value that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("invalid webhook configuration: {key}: {reason}")]
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

/// Validated webhook settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Where the HTTPS server listens.
    pub listen_address: SocketAddr,
    /// The Service's name.
    pub service_name: String,
    /// The Service's namespace; `None` means the role's own.
    pub service_namespace: Option<String>,
    /// The Service port.
    pub service_port: u16,
    /// The cluster DNS domain.
    pub cluster_domain: String,
    /// More DNS names for the serving certificate.
    pub extra_dns_names: Vec<String>,
    /// The configurations' name.
    pub configuration_name: String,
    /// Whether the configurations are created and kept as built.
    pub manage_configurations: bool,
    /// The CA Secret's name.
    pub ca_secret: String,
    /// The CA lifetime.
    pub ca_validity: Duration,
    /// The serving certificate lifetime.
    pub serving_validity: Duration,
    /// How often the Secret and the configurations are checked.
    pub resync_interval: Duration,
    /// The API server's timeout for one call, in seconds.
    pub timeout_seconds: i32,
    /// The largest AdmissionReview read.
    pub max_review_bytes: usize,
    /// The CEL cost limit for policies.
    pub cel_cost_limit: u64,
    /// How long connections may finish at shutdown.
    pub shutdown_grace: Duration,
    /// Pod injection, when enabled.
    pub inject: Option<Injection>,
}

/// Validated pod injection settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    /// The CSI driver.
    pub driver_name: String,
    /// The volume's name.
    pub volume_name: String,
    /// The mount path in each container.
    pub mount_path: String,
}

impl Default for Injection {
    fn default() -> Self {
        let config = InjectConfig::default();
        Self {
            driver_name: config.driver_name,
            volume_name: config.volume_name,
            mount_path: config.mount_path,
        }
    }
}

impl Settings {
    /// The Service namespace, given the role's own.
    pub fn service_namespace<'a>(&'a self, role_namespace: &'a str) -> &'a str {
        self.service_namespace.as_deref().unwrap_or(role_namespace)
    }

    /// The DNS names the serving certificate carries for a Service in `namespace`, the
    /// name the API server checks (`<service>.<namespace>.svc`) first.
    pub fn dns_names(&self, namespace: &str) -> Vec<String> {
        let service = &self.service_name;
        let mut names = vec![
            format!("{service}.{namespace}.svc"),
            service.clone(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc.{}", self.cluster_domain),
        ];
        for name in &self.extra_dns_names {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }
}

fn duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    let value = parse_go_duration(text).map_err(|e| invalid(key, e))?;
    if value.is_zero() {
        return Err(invalid(key, "must be longer than zero"));
    }
    Ok(value)
}

/// A DNS label (RFC 1123): what Service, Secret and volume names must be.
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A DNS subdomain (RFC 1123): dot-separated labels, at most 253 bytes.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

fn label(key: &'static str, value: &str) -> Result<(), ConfigError> {
    if is_dns_label(value) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{value:?} is not a DNS label (lower-case letters, digits and '-')"),
        ))
    }
}

fn subdomain(key: &'static str, value: &str) -> Result<(), ConfigError> {
    if is_dns_subdomain(value) {
        Ok(())
    } else {
        Err(invalid(key, format!("{value:?} is not a DNS name")))
    }
}

impl InjectConfig {
    fn validate(&self) -> Result<Option<Injection>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        subdomain("webhook.inject.driver_name", &self.driver_name)?;
        label("webhook.inject.volume_name", &self.volume_name)?;
        let path = &self.mount_path;
        if !path.starts_with('/') || path.contains(':') || path.split('/').any(|p| p == "..") {
            return Err(invalid(
                "webhook.inject.mount_path",
                format!("{path:?} must be an absolute path without ':' or '..'"),
            ));
        }
        Ok(Some(Injection {
            driver_name: self.driver_name.clone(),
            volume_name: self.volume_name.clone(),
            mount_path: path.clone(),
        }))
    }
}

impl Config {
    /// Checks every value and returns the typed settings, or the first bad key.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        label("webhook.service_name", &self.service_name)?;
        if !self.service_namespace.is_empty() {
            label("webhook.service_namespace", &self.service_namespace)?;
        }
        if self.service_port == 0 {
            return Err(invalid("webhook.service_port", "must not be 0"));
        }
        subdomain("webhook.cluster_domain", &self.cluster_domain)?;
        for name in &self.extra_dns_names {
            subdomain("webhook.extra_dns_names", name)?;
        }
        subdomain("webhook.configuration_name", &self.configuration_name)?;
        subdomain("webhook.ca_secret", &self.ca_secret)?;
        let ca_validity = duration("webhook.ca_validity", &self.ca_validity)?;
        let serving_validity = duration("webhook.serving_validity", &self.serving_validity)?;
        if serving_validity < MIN_SERVING_VALIDITY {
            return Err(invalid(
                "webhook.serving_validity",
                format!("must be at least {}s", MIN_SERVING_VALIDITY.as_secs()),
            ));
        }
        // A CA is replaced when a third of its life is left: a serving certificate of full
        // length must still fit in what is left of it.
        if serving_validity.saturating_mul(3) > ca_validity {
            return Err(invalid(
                "webhook.serving_validity",
                "must be at most a third of webhook.ca_validity",
            ));
        }
        let resync_interval = duration("webhook.resync_interval", &self.resync_interval)?;
        if !(1..=30).contains(&self.timeout_seconds) {
            return Err(invalid(
                "webhook.timeout_seconds",
                format!("{} is outside 1 to 30", self.timeout_seconds),
            ));
        }
        if self.max_review_bytes < MIN_REVIEW_BYTES {
            return Err(invalid(
                "webhook.max_review_bytes",
                format!("must be at least {MIN_REVIEW_BYTES}"),
            ));
        }
        if self.cel_cost_limit == 0 {
            return Err(invalid("webhook.cel_cost_limit", "must be above 0"));
        }
        let shutdown_grace = parse_go_duration(&self.shutdown_grace)
            .map_err(|e| invalid("webhook.shutdown_grace", e))?;
        Ok(Settings {
            listen_address: self.listen_address,
            service_name: self.service_name.clone(),
            service_namespace: Some(self.service_namespace.clone()).filter(|n| !n.is_empty()),
            service_port: self.service_port,
            cluster_domain: self.cluster_domain.clone(),
            extra_dns_names: self.extra_dns_names.clone(),
            configuration_name: self.configuration_name.clone(),
            manage_configurations: self.manage_configurations,
            ca_secret: self.ca_secret.clone(),
            ca_validity,
            serving_validity,
            resync_interval,
            timeout_seconds: self.timeout_seconds,
            max_review_bytes: self.max_review_bytes,
            cel_cost_limit: self.cel_cost_limit,
            shutdown_grace,
            inject: self.inject.validate()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_validate() {
        let settings = Config::default().validate().unwrap();
        assert_eq!(settings.serving_validity, Duration::from_secs(168 * 3600));
        assert_eq!(settings.service_namespace("nico"), "nico");
        assert_eq!(
            settings.dns_names("nico"),
            [
                "nico-identity-webhook.nico.svc",
                "nico-identity-webhook",
                "nico-identity-webhook.nico",
                "nico-identity-webhook.nico.svc.cluster.local",
            ]
        );
        assert_eq!(settings.inject, Some(Injection::default()));
    }

    #[test]
    fn each_bad_value_is_named_by_its_key() {
        type Edit = fn(&mut Config);
        let cases: [(Edit, &str); 11] = [
            (
                |c| c.service_name = "Web_hook".into(),
                "webhook.service_name",
            ),
            (|c| c.service_port = 0, "webhook.service_port"),
            (|c| c.ca_validity = "forever".into(), "webhook.ca_validity"),
            (
                |c| c.serving_validity = "1s".into(),
                "webhook.serving_validity",
            ),
            (
                |c| c.serving_validity = "20000h".into(),
                "webhook.serving_validity",
            ),
            (
                |c| c.resync_interval = "0s".into(),
                "webhook.resync_interval",
            ),
            (|c| c.timeout_seconds = 31, "webhook.timeout_seconds"),
            (|c| c.max_review_bytes = 10, "webhook.max_review_bytes"),
            (
                |c| c.inject.volume_name = "a.b".into(),
                "webhook.inject.volume_name",
            ),
            (
                |c| c.inject.mount_path = "relative".into(),
                "webhook.inject.mount_path",
            ),
            (
                |c| c.extra_dns_names = vec!["x..y".into()],
                "webhook.extra_dns_names",
            ),
        ];
        for (edit, key) in cases {
            let mut config = Config::default();
            edit(&mut config);
            let err = config.validate().unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }

    #[test]
    fn injection_can_be_turned_off_and_namespaces_set() {
        let mut config = Config::default();
        config.inject.enabled = false;
        config.inject.mount_path = "ignored when off".into();
        config.service_namespace = "identity".into();
        let settings = config.validate().unwrap();
        assert_eq!(settings.inject, None);
        assert_eq!(settings.service_namespace("nico"), "identity");
    }
}

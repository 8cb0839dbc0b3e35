//! csi-node configuration: what the file, environment and flags may set, and its validation.

use std::path::PathBuf;
use std::time::Duration;

use nico_csr::KeyAlgorithm;
use nico_k8s_types::IssuerRef;
use nico_spiffe_id::{IdTemplate, TrustDomain};
use serde::{Deserialize, Serialize};

/// The driver name csi-driver-spiffe registers, kept so pod specs need no change.
pub const DEFAULT_DRIVER_NAME: &str = "spiffe.csi.cert-manager.io";

/// The csi-node section of the configuration, as written by the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// CSI driver name; pods name it in `volumes[].csi.driver`.
    pub driver_name: String,
    /// This node's name (the chart passes `spec.nodeName`). Required.
    pub node_id: String,
    /// Unix socket kubelet connects to.
    pub endpoint: PathBuf,
    /// Trust domain of the SPIFFE IDs this node requests.
    pub trust_domain: String,
    /// How a pod's namespace and service account become its SPIFFE ID.
    pub id_template: String,
    /// The issuer every CertificateRequest names.
    pub issuer: IssuerConfig,
    /// Requested certificate lifetime, Go duration syntax.
    pub duration: String,
    /// Key algorithm of the per-volume keys.
    pub key_algorithm: String,
    /// The audience of the pod token the driver uses (the CSIDriver's `tokenRequests`);
    /// empty means the API server's own audience.
    pub token_audience: String,
    /// Longest time a NodePublishVolume waits for a signed certificate.
    pub publish_timeout: String,
    /// File names inside the volume.
    pub files: FileNames,
    /// Key algorithms a volume may ask for with the `identity.nico.io/key-algorithm` volume
    /// attribute, besides `key_algorithm`. Empty: volumes always get `key_algorithm`.
    pub allowed_key_algorithms: Vec<String>,
    /// Where per-volume metadata (never tokens) and, when mounting, each volume's tmpfs live.
    /// Must survive driver restarts and, when mounting, be on a host path mounted with
    /// bidirectional propagation (the chart uses the plugin directory under kubelet's root).
    pub state_dir: PathBuf,
    /// The only directories target paths may lie under; nothing elsewhere is ever touched.
    pub target_roots: Vec<PathBuf>,
    /// Mount a tmpfs per volume and bind it read-only at the target path (needs privileges).
    /// `false` writes the files into the target directory instead, for unprivileged
    /// environments and tests.
    pub mount: bool,
    /// Who creates the CertificateRequests: `pod` (the pod's own service account, with the
    /// token kubelet passes) or `driver` (the driver's account, naming the pod in annotations,
    /// for clusters that do not grant pods `create certificaterequests`).
    pub request_identity: RequestIdentity,
    /// The shortest certificate lifetime accepted from an issuer (Go duration syntax); shorter
    /// answers are refused. Never more than half the requested duration.
    pub min_lifetime: String,
    /// kubelet plugin registration, served in-process.
    pub registration: RegistrationConfig,
    /// A ConfigMap whose `issuer-name`, `issuer-kind` and `issuer-group` keys override
    /// `issuer` at runtime.
    pub issuer_config_map: Option<ObjectName>,
    /// Where `ca.crt` comes from. Unset: each issuer answer's `status.ca`.
    pub trust_bundle: TrustBundleConfig,
}

/// Who authenticates the CertificateRequests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestIdentity {
    /// The pod's own service account (its token from kubelet).
    #[default]
    Pod,
    /// The driver's service account, the pod named in annotations.
    Driver,
}

/// kubelet plugin registration settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Serve the registration socket (instead of a node-driver-registrar sidecar).
    pub enabled: bool,
    /// The registration socket, in kubelet's `plugins_registry` directory.
    pub socket: PathBuf,
    /// The CSI socket path as kubelet sees it on the node.
    pub kubelet_endpoint: PathBuf,
}

/// A namespaced object name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Where the trust bundle comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustBundleConfig {
    /// A PEM file watched for changes.
    pub file: Option<PathBuf>,
    /// A ConfigMap key holding PEM, watched for changes.
    pub config_map: Option<ConfigMapKey>,
}

/// A key of a ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigMapKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The data key.
    #[serde(default = "default_bundle_key")]
    pub key: String,
}

fn default_bundle_key() -> String {
    "ca.crt".to_owned()
}

/// The issuer reference written into every request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssuerConfig {
    /// Issuer name.
    pub name: String,
    /// `Issuer` or `ClusterIssuer` (or another issuer kind).
    pub kind: String,
    /// The issuer's API group.
    pub group: String,
}

/// The names of the three files written into each volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileNames {
    /// Leaf certificate and intermediates.
    pub certificate: String,
    /// The private key, PKCS#8 PEM.
    pub key: String,
    /// The trust bundle (the roots).
    pub ca: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            driver_name: DEFAULT_DRIVER_NAME.to_owned(),
            node_id: String::new(),
            endpoint: PathBuf::from(format!(
                "/var/lib/kubelet/plugins/{DEFAULT_DRIVER_NAME}/csi.sock"
            )),
            trust_domain: nico_spiffe_id::DEFAULT_TRUST_DOMAIN.to_owned(),
            id_template: nico_spiffe_id::DEFAULT_TEMPLATE.to_owned(),
            issuer: IssuerConfig::default(),
            duration: "1h".to_owned(),
            key_algorithm: KeyAlgorithm::EcdsaP256.as_str().to_owned(),
            token_audience: String::new(),
            publish_timeout: "60s".to_owned(),
            files: FileNames::default(),
            allowed_key_algorithms: Vec::new(),
            state_dir: PathBuf::from(format!("/var/lib/kubelet/plugins/{DEFAULT_DRIVER_NAME}")),
            target_roots: vec![PathBuf::from("/var/lib/kubelet/pods")],
            mount: true,
            request_identity: RequestIdentity::Pod,
            min_lifetime: "5m".to_owned(),
            registration: RegistrationConfig::default(),
            issuer_config_map: None,
            trust_bundle: TrustBundleConfig::default(),
        }
    }
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: PathBuf::from(format!("/registration/{DEFAULT_DRIVER_NAME}-reg.sock")),
            kubelet_endpoint: PathBuf::from(format!(
                "/var/lib/kubelet/plugins/{DEFAULT_DRIVER_NAME}/csi.sock"
            )),
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

impl Default for FileNames {
    fn default() -> Self {
        Self {
            certificate: "tls.crt".into(),
            key: "tls.key".into(),
            ca: "ca.crt".into(),
        }
    }
}

/// A configuration value that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("invalid csi-node configuration: {key}: {reason}")]
pub struct ConfigError {
    /// The configuration key, e.g. `csi_node.duration`.
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

/// Validated settings the driver runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// CSI driver name.
    pub driver_name: String,
    /// This node's name.
    pub node_id: String,
    /// Unix socket path.
    pub endpoint: PathBuf,
    /// Trust domain.
    pub trust_domain: TrustDomain,
    /// ID template.
    pub id_template: IdTemplate,
    /// Issuer reference for every request.
    pub issuer: IssuerRef,
    /// Requested lifetime.
    pub duration: Duration,
    /// Key algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// Audience of the token used to create requests.
    pub token_audience: String,
    /// Bound on one publish.
    pub publish_timeout: Duration,
    /// File names.
    pub files: FileNames,
    /// Algorithms a volume may choose (always includes `key_algorithm`).
    pub allowed_key_algorithms: Vec<KeyAlgorithm>,
    /// State directory.
    pub state_dir: PathBuf,
    /// Allowed roots of target paths.
    pub target_roots: Vec<PathBuf>,
    /// Whether volumes are tmpfs mounts.
    pub mount: bool,
    /// Who creates requests.
    pub request_identity: RequestIdentity,
    /// Shortest lifetime accepted.
    pub min_lifetime: Duration,
    /// Registration settings; `None` when disabled.
    pub registration: Option<RegistrationConfig>,
    /// Runtime issuer override.
    pub issuer_config_map: Option<ObjectName>,
    /// Trust bundle source.
    pub trust_bundle: TrustBundleConfig,
}

impl Config {
    /// Checks every value and returns the typed settings, or the first bad key.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        if self.node_id.is_empty() {
            return Err(invalid(
                "csi_node.node_id",
                "required: set it to the node's name",
            ));
        }
        if self.driver_name.is_empty() || self.driver_name.len() > 63 {
            return Err(invalid(
                "csi_node.driver_name",
                "must be 1 to 63 characters",
            ));
        }
        let trust_domain = TrustDomain::parse(&self.trust_domain)
            .map_err(|e| invalid("csi_node.trust_domain", e))?;
        let id_template =
            IdTemplate::parse(&self.id_template).map_err(|e| invalid("csi_node.id_template", e))?;
        if self.issuer.name.is_empty() {
            return Err(invalid("csi_node.issuer.name", "required"));
        }
        let duration = parse_duration("csi_node.duration", &self.duration)?;
        if duration < Duration::from_secs(10) {
            return Err(invalid("csi_node.duration", "must be at least 10s"));
        }
        let publish_timeout = parse_duration("csi_node.publish_timeout", &self.publish_timeout)?;
        let key_algorithm = self
            .key_algorithm
            .parse::<KeyAlgorithm>()
            .map_err(|e| invalid("csi_node.key_algorithm", e))?;
        for (key, name) in [
            ("csi_node.files.certificate", &self.files.certificate),
            ("csi_node.files.key", &self.files.key),
            ("csi_node.files.ca", &self.files.ca),
        ] {
            check_file_name(key, name)?;
        }
        let names = [&self.files.certificate, &self.files.key, &self.files.ca];
        if names[0] == names[1] || names[1] == names[2] || names[0] == names[2] {
            return Err(invalid(
                "csi_node.files",
                "the three file names must differ",
            ));
        }
        let mut allowed_key_algorithms = vec![key_algorithm];
        for name in &self.allowed_key_algorithms {
            let algorithm = name
                .parse::<KeyAlgorithm>()
                .map_err(|e| invalid("csi_node.allowed_key_algorithms", e))?;
            if !allowed_key_algorithms.contains(&algorithm) {
                allowed_key_algorithms.push(algorithm);
            }
        }
        let target_roots = self
            .target_roots
            .iter()
            .map(|root| check_root("csi_node.target_roots", root))
            .collect::<Result<Vec<_>, _>>()?;
        if target_roots.is_empty() {
            return Err(invalid(
                "csi_node.target_roots",
                "at least one root is required",
            ));
        }
        let state_dir = check_root("csi_node.state_dir", &self.state_dir)?;
        if target_roots
            .iter()
            .any(|root| state_dir.starts_with(root) || root.starts_with(&state_dir))
        {
            return Err(invalid(
                "csi_node.state_dir",
                "must not overlap a target root: pods must never see driver state",
            ));
        }
        let min_lifetime = parse_duration("csi_node.min_lifetime", &self.min_lifetime)?;
        let registration = if self.registration.enabled {
            for (key, path) in [
                ("csi_node.registration.socket", &self.registration.socket),
                (
                    "csi_node.registration.kubelet_endpoint",
                    &self.registration.kubelet_endpoint,
                ),
            ] {
                check_root(key, path)?;
            }
            Some(self.registration.clone())
        } else {
            None
        };
        if let Some(bundle) = &self.trust_bundle.config_map
            && (bundle.namespace.is_empty() || bundle.name.is_empty() || bundle.key.is_empty())
        {
            return Err(invalid(
                "csi_node.trust_bundle.config_map",
                "namespace, name and key are required",
            ));
        }
        if self.trust_bundle.file.is_some() && self.trust_bundle.config_map.is_some() {
            return Err(invalid(
                "csi_node.trust_bundle",
                "set either file or config_map, not both",
            ));
        }
        if let Some(map) = &self.issuer_config_map
            && (map.namespace.is_empty() || map.name.is_empty())
        {
            return Err(invalid(
                "csi_node.issuer_config_map",
                "namespace and name are required",
            ));
        }
        Ok(Settings {
            allowed_key_algorithms,
            state_dir,
            target_roots,
            mount: self.mount,
            request_identity: self.request_identity,
            min_lifetime: min_lifetime.min(duration / 2),
            registration,
            issuer_config_map: self.issuer_config_map.clone(),
            trust_bundle: self.trust_bundle.clone(),
            driver_name: self.driver_name.clone(),
            node_id: self.node_id.clone(),
            endpoint: self.endpoint.clone(),
            trust_domain,
            id_template,
            issuer: IssuerRef {
                name: self.issuer.name.clone(),
                kind: Some(self.issuer.kind.clone()).filter(|k| !k.is_empty()),
                group: Some(self.issuer.group.clone()).filter(|g| !g.is_empty()),
            },
            duration,
            key_algorithm,
            token_audience: self.token_audience.clone(),
            publish_timeout,
            files: self.files.clone(),
        })
    }
}

fn parse_duration(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    nico_policy::duration::parse_go_duration(value).map_err(|e| invalid(key, e))
}

/// A configured directory must be absolute and free of `.` and `..`, so that prefix checks on
/// it mean what they say.
fn check_root(key: &'static str, path: &std::path::Path) -> Result<PathBuf, ConfigError> {
    use std::path::Component;
    let plain = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && path.components().count() > 1;
    if plain {
        Ok(path.to_owned())
    } else {
        Err(invalid(
            key,
            format!(
                "{} must be an absolute path without '.' or '..'",
                path.display()
            ),
        ))
    }
}

/// A file name must be one plain path component that cannot collide with the `..data`
/// machinery of the atomic writer.
fn check_file_name(key: &'static str, name: &str) -> Result<(), ConfigError> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if plain {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{name:?} is not a plain file name ([A-Za-z0-9._-], no leading dot)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config {
            node_id: "node-1".into(),
            ..Config::default()
        }
    }

    #[test]
    fn defaults_with_a_node_id_validate() {
        let settings = valid().validate().unwrap();
        assert_eq!(settings.duration, Duration::from_secs(3600));
        assert_eq!(settings.files.certificate, "tls.crt");
        assert_eq!(settings.issuer.kind_or_default(), "ClusterIssuer");
    }

    #[test]
    fn each_bad_value_names_its_key() {
        let cases: Vec<(Config, &str)> = vec![
            (Config::default(), "csi_node.node_id"),
            (
                Config {
                    trust_domain: "Bad.Domain".into(),
                    ..valid()
                },
                "csi_node.trust_domain",
            ),
            (
                Config {
                    id_template: "spiffe://{x}/a".into(),
                    ..valid()
                },
                "csi_node.id_template",
            ),
            (
                Config {
                    duration: "soon".into(),
                    ..valid()
                },
                "csi_node.duration",
            ),
            (
                Config {
                    duration: "5s".into(),
                    ..valid()
                },
                "csi_node.duration",
            ),
            (
                Config {
                    key_algorithm: "dsa".into(),
                    ..valid()
                },
                "csi_node.key_algorithm",
            ),
            (
                Config {
                    files: FileNames {
                        key: "../evil".into(),
                        ..FileNames::default()
                    },
                    ..valid()
                },
                "csi_node.files.key",
            ),
            (
                Config {
                    files: FileNames {
                        key: "tls.crt".into(),
                        ..FileNames::default()
                    },
                    ..valid()
                },
                "csi_node.files",
            ),
        ];
        for (config, key) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }
}

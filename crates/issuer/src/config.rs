//! Issuer configuration and its validation into typed [`Settings`].

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
    /// The shortest remaining lifetime a signed certificate may have; a backend returning
    /// less (a Vault role's `max_ttl` cutting the request short) fails the request. Go
    /// duration syntax.
    pub min_lifetime: String,
    /// Elect one active replica through a Lease; the others stand by.
    pub leader_election: bool,
    /// Name of that Lease, in the role's namespace.
    pub lease_name: String,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ca: Option<LocalCaConfig>,
    /// Sign with a Vault or OpenBao PKI mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultConfig>,
}

/// A CA held by this process: its key and certificate come from files or a Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalCaConfig {
    /// PEM file: the CA certificate, then (for an intermediate) its chain up to the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    /// PEM PKCS#8 key of the CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// `namespace/name` of a Secret holding `tls.crt` (certificate and chain), `tls.key` and
    /// optionally `ca.crt` (the root) and `retired.crt` (roots kept after a rotation).
    /// Replaces `certificate` and `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Create a self-signed CA when none exists, and rotate it before it expires
    /// (development only).
    #[serde(default)]
    pub generate: bool,
    /// Lifetime of a generated CA, Go duration syntax.
    #[serde(default = "default_ca_validity")]
    pub validity: String,
    /// How often the files or Secret are read again, so a CA the operator replaced is
    /// used without a restart (and a generated one is checked for rotation). Go duration
    /// syntax, between 1s and 24h.
    #[serde(default = "default_ca_reload_interval")]
    pub reload_interval: String,
}

/// A Vault or OpenBao PKI secrets engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// `http://` or `https://` address of the server.
    pub address: String,
    /// Path of the PKI mount, e.g. `pki`.
    #[serde(default = "default_pki_mount")]
    pub mount: String,
    /// The PKI role that signs (`<mount>/sign/<role>`).
    pub role: String,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// PEM bundle of the CAs that may have signed the server's TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `client_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// Timeout of one HTTP request, Go duration syntax.
    #[serde(default = "default_vault_timeout")]
    pub timeout: String,
    /// The most signing requests sent to Vault at once; the rest wait their turn.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How the issuer logs in.
    pub auth: VaultAuthConfig,
}

/// How the issuer obtains a Vault token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum VaultAuthConfig {
    /// Kubernetes auth with a projected service-account token.
    Kubernetes {
        /// The Vault role to log in as.
        role: String,
        /// Mount path of the auth method.
        #[serde(default = "default_kubernetes_mount")]
        mount: String,
        /// The projected token file (re-read at every login: kubelet rotates it).
        #[serde(default = "default_kubernetes_token_file")]
        token_file: PathBuf,
    },
    /// AppRole auth.
    #[serde(rename = "approle")]
    AppRole {
        /// The role ID.
        role_id: String,
        /// File holding the secret ID (re-read at every login).
        secret_id_file: PathBuf,
        /// Mount path of the auth method.
        #[serde(default = "default_approle_mount")]
        mount: String,
    },
    /// A token read from a file (re-read whenever the cached one stops working).
    Token {
        /// The file.
        token_file: PathBuf,
    },
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

fn default_ca_reload_interval() -> String {
    "1m".to_owned()
}

fn default_pki_mount() -> String {
    "pki".to_owned()
}

fn default_vault_timeout() -> String {
    "10s".to_owned()
}

fn default_max_in_flight() -> usize {
    32
}

fn default_kubernetes_mount() -> String {
    "kubernetes".to_owned()
}

fn default_kubernetes_token_file() -> PathBuf {
    PathBuf::from("/var/run/secrets/tokens/vault-token")
}

fn default_approle_mount() -> String {
    "approle".to_owned()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            issuers: vec![IssuerConfig {
                name: "nico-identity".to_owned(),
                kind: default_kind(),
                group: default_group(),
                local_ca: Some(LocalCaConfig {
                    certificate: Some(PathBuf::from("/etc/nico-identity/ca/tls.crt")),
                    key: Some(PathBuf::from("/etc/nico-identity/ca/tls.key")),
                    secret: None,
                    generate: false,
                    validity: default_ca_validity(),
                    reload_interval: default_ca_reload_interval(),
                }),
                vault: None,
            }],
            min_lifetime: "1m".to_owned(),
            leader_election: true,
            lease_name: "nico-identity-issuer".to_owned(),
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

/// Validated issuer settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Every configured issuer.
    pub issuers: Vec<IssuerSettings>,
    /// The shortest remaining lifetime accepted from a backend.
    pub min_lifetime: Duration,
    /// The Lease to hold while signing, or `None` to sign without an election.
    pub lease_name: Option<String>,
}

/// One validated issuer.
#[derive(Clone, Debug)]
pub struct IssuerSettings {
    /// The reference requests must carry.
    pub issuer_ref: IssuerRef,
    /// What signs for it.
    pub backend: BackendSettings,
}

/// A validated backend.
#[derive(Clone, Debug)]
pub enum BackendSettings {
    /// A local CA.
    LocalCa(ValidLocalCa),
    /// Vault or OpenBao.
    Vault(ValidVault),
}

/// Where a local CA is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSource {
    /// Two PEM files.
    Files {
        /// Certificate (and chain) path.
        certificate: PathBuf,
        /// Key path.
        key: PathBuf,
    },
    /// A Kubernetes Secret.
    Secret {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// A validated local CA configuration.
#[derive(Clone, Debug)]
pub struct ValidLocalCa {
    /// Where the CA lives.
    pub source: CaSource,
    /// Whether to generate (and rotate) it.
    pub generate: bool,
    /// Lifetime of a generated CA.
    pub validity: Duration,
    /// How often the stored CA is read again and checked for rotation.
    pub reload_interval: Duration,
}

/// A validated Vault configuration.
#[derive(Clone, Debug)]
pub struct ValidVault {
    /// Server address, checked to be an http(s) URL.
    pub address: String,
    /// PKI mount path, without surrounding slashes.
    pub mount: String,
    /// PKI role.
    pub role: String,
    /// Namespace header.
    pub namespace: Option<String>,
    /// TLS trust for the server.
    pub ca_bundle: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Concurrent signing requests.
    pub max_in_flight: usize,
    /// Login method.
    pub auth: VaultAuthConfig,
}

impl Config {
    /// Checks every value and returns the typed settings, or the first bad key.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let top = |field: &str, reason: String| ConfigError {
            key: format!("issuer.{field}"),
            reason,
        };
        if self.issuers.is_empty() {
            return Err(top("issuers", "at least one issuer is required".into()));
        }
        let min_lifetime =
            parse_duration(&self.min_lifetime).map_err(|reason| top("min_lifetime", reason))?;
        if self.leader_election && self.lease_name.is_empty() {
            return Err(top(
                "lease_name",
                "required when leader_election is on".into(),
            ));
        }
        let mut issuers: Vec<IssuerSettings> = Vec::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            let invalid = |field: &str, reason: String| ConfigError {
                key: format!("issuer.issuers[{i}].{field}"),
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
            let backend = match (&issuer.local_ca, &issuer.vault) {
                (Some(ca), None) => BackendSettings::LocalCa(validate_local_ca(ca, &invalid)?),
                (None, Some(vault)) => BackendSettings::Vault(validate_vault(vault, &invalid)?),
                (None, None) => {
                    return Err(invalid(
                        "local_ca",
                        "a backend is required: set local_ca or vault".into(),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "vault",
                        "set either local_ca or vault, not both".into(),
                    ));
                }
            };
            issuers.push(IssuerSettings {
                issuer_ref,
                backend,
            });
        }
        Ok(Settings {
            issuers,
            min_lifetime,
            lease_name: self.leader_election.then(|| self.lease_name.clone()),
        })
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    nico_policy::duration::parse_go_duration(text).map_err(|e| e.to_string())
}

fn validate_local_ca(
    ca: &LocalCaConfig,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<ValidLocalCa, ConfigError> {
    let validity =
        parse_duration(&ca.validity).map_err(|reason| invalid("local_ca.validity", reason))?;
    if validity < Duration::from_secs(3600) {
        return Err(invalid(
            "local_ca.validity",
            "must be at least 1h: leaves never outlive their CA".into(),
        ));
    }
    let reload_interval = parse_duration(&ca.reload_interval)
        .map_err(|reason| invalid("local_ca.reload_interval", reason))?;
    if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&reload_interval) {
        return Err(invalid(
            "local_ca.reload_interval",
            format!("{:?} is outside 1s to 24h", ca.reload_interval),
        ));
    }
    let source = match (&ca.secret, &ca.certificate, &ca.key) {
        (Some(secret), None, None) => {
            let Some((namespace, name)) = secret.split_once('/') else {
                return Err(invalid(
                    "local_ca.secret",
                    format!("{secret:?} is not of the form namespace/name"),
                ));
            };
            if namespace.is_empty() || name.is_empty() || name.contains('/') {
                return Err(invalid(
                    "local_ca.secret",
                    format!("{secret:?} is not of the form namespace/name"),
                ));
            }
            CaSource::Secret {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }
        }
        (None, Some(certificate), Some(key)) => CaSource::Files {
            certificate: certificate.clone(),
            key: key.clone(),
        },
        (Some(_), _, _) => {
            return Err(invalid(
                "local_ca.secret",
                "set either secret or certificate and key, not both".into(),
            ));
        }
        (None, None, _) => {
            return Err(invalid(
                "local_ca.certificate",
                "required (or set secret)".into(),
            ));
        }
        (None, Some(_), None) => {
            return Err(invalid("local_ca.key", "required with certificate".into()));
        }
    };
    Ok(ValidLocalCa {
        source,
        generate: ca.generate,
        validity,
        reload_interval,
    })
}

fn validate_vault(
    vault: &VaultConfig,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<ValidVault, ConfigError> {
    let address_ok = vault.address.parse::<http::Uri>().ok().is_some_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
    });
    if !address_ok {
        return Err(invalid(
            "vault.address",
            format!("{:?} is not an http:// or https:// URL", vault.address),
        ));
    }
    let mount = vault.mount.trim_matches('/');
    if mount.is_empty() {
        return Err(invalid("vault.mount", "required".into()));
    }
    if vault.role.is_empty() || vault.role.contains('/') {
        return Err(invalid(
            "vault.role",
            "required: the name of a PKI role, without slashes".into(),
        ));
    }
    let timeout =
        parse_duration(&vault.timeout).map_err(|reason| invalid("vault.timeout", reason))?;
    if timeout.is_zero() {
        return Err(invalid("vault.timeout", "must be longer than zero".into()));
    }
    if vault.max_in_flight == 0 {
        return Err(invalid("vault.max_in_flight", "must be at least 1".into()));
    }
    let client_identity = match (&vault.client_certificate, &vault.client_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "vault.client_key",
                "required with client_certificate".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "vault.client_certificate",
                "required with client_key".into(),
            ));
        }
    };
    match &vault.auth {
        VaultAuthConfig::Kubernetes { role, mount, .. } if role.is_empty() || mount.is_empty() => {
            return Err(invalid(
                "vault.auth.role",
                "role and mount are required".into(),
            ));
        }
        VaultAuthConfig::AppRole { role_id, mount, .. }
            if role_id.is_empty() || mount.is_empty() =>
        {
            return Err(invalid(
                "vault.auth.role_id",
                "role_id and mount are required".into(),
            ));
        }
        _ => {}
    }
    Ok(ValidVault {
        address: vault.address.trim_end_matches('/').to_owned(),
        mount: mount.to_owned(),
        role: vault.role.clone(),
        namespace: vault.namespace.clone().filter(|ns| !ns.is_empty()),
        ca_bundle: vault.ca_bundle.clone(),
        client_identity,
        timeout,
        max_in_flight: vault.max_in_flight,
        auth: vault.auth.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> VaultConfig {
        VaultConfig {
            address: "https://vault.example:8200".into(),
            mount: "pki".into(),
            role: "spiffe".into(),
            namespace: None,
            ca_bundle: None,
            client_certificate: None,
            client_key: None,
            timeout: "10s".into(),
            max_in_flight: 32,
            auth: VaultAuthConfig::Token {
                token_file: "/run/token".into(),
            },
        }
    }

    #[test]
    fn defaults_validate() {
        let settings = Config::default().validate().unwrap();
        assert_eq!(settings.issuers.len(), 1);
        assert_eq!(
            settings.issuers[0].issuer_ref.kind_or_default(),
            "ClusterIssuer"
        );
        assert_eq!(settings.lease_name.as_deref(), Some("nico-identity-issuer"));
        assert_eq!(settings.min_lifetime, Duration::from_secs(60));
    }

    #[test]
    fn bad_values_are_named_by_key() {
        type Edit = fn(&mut Config);
        let cases: &[(Edit, &str)] = &[
            (
                |c| c.issuers.push(c.issuers[0].clone()),
                "issuer.issuers[1].name",
            ),
            (
                |c| c.issuers[0].local_ca = None,
                "issuer.issuers[0].local_ca",
            ),
            (
                |c| c.issuers[0].vault = Some(vault()),
                "issuer.issuers[0].vault",
            ),
            (
                |c| c.issuers[0].local_ca.as_mut().unwrap().validity = "forever".into(),
                "issuer.issuers[0].local_ca.validity",
            ),
            (
                |c| c.issuers[0].local_ca.as_mut().unwrap().reload_interval = "0s".into(),
                "issuer.issuers[0].local_ca.reload_interval",
            ),
            (
                |c| c.issuers[0].local_ca.as_mut().unwrap().reload_interval = "48h".into(),
                "issuer.issuers[0].local_ca.reload_interval",
            ),
            (
                |c| c.issuers[0].local_ca.as_mut().unwrap().reload_interval = "often".into(),
                "issuer.issuers[0].local_ca.reload_interval",
            ),
            (
                |c| c.issuers[0].local_ca.as_mut().unwrap().secret = Some("ns/x".into()),
                "issuer.issuers[0].local_ca.secret",
            ),
            (
                |c| c.issuers[0].local_ca.as_mut().unwrap().key = None,
                "issuer.issuers[0].local_ca.key",
            ),
            (|c| c.min_lifetime = "soon".into(), "issuer.min_lifetime"),
            (|c| c.lease_name = String::new(), "issuer.lease_name"),
            (
                |c| {
                    let ca = c.issuers[0].local_ca.as_mut().unwrap();
                    (ca.certificate, ca.key) = (None, None);
                    ca.secret = Some("no-slash".into());
                },
                "issuer.issuers[0].local_ca.secret",
            ),
        ];
        for (edit, key) in cases {
            let mut config = Config::default();
            edit(&mut config);
            assert_eq!(config.validate().unwrap_err().key, *key);
        }
    }

    #[test]
    fn vault_values_are_checked() {
        type Edit = fn(&mut VaultConfig);
        let cases: &[(Edit, &str)] = &[
            (|v| v.address = "vault:8200".into(), "vault.address"),
            (|v| v.address = "ftp://vault".into(), "vault.address"),
            (|v| v.mount = "/".into(), "vault.mount"),
            (|v| v.role = "a/b".into(), "vault.role"),
            (|v| v.timeout = "0s".into(), "vault.timeout"),
            (|v| v.max_in_flight = 0, "vault.max_in_flight"),
            (
                |v| v.client_key = Some("k".into()),
                "vault.client_certificate",
            ),
            (
                |v| {
                    v.auth = VaultAuthConfig::AppRole {
                        role_id: String::new(),
                        secret_id_file: "s".into(),
                        mount: "approle".into(),
                    }
                },
                "vault.auth.role_id",
            ),
        ];
        for (edit, key) in cases {
            let mut config = Config::default();
            config.issuers[0].local_ca = None;
            let mut v = vault();
            edit(&mut v);
            config.issuers[0].vault = Some(v);
            let err = config.validate().unwrap_err();
            assert_eq!(err.key, format!("issuer.issuers[0].{key}"), "{err}");
        }
        let mut config = Config::default();
        config.issuers[0].local_ca = None;
        config.issuers[0].vault = Some(VaultConfig {
            mount: "/pki_int/".into(),
            ..vault()
        });
        let settings = config.validate().unwrap();
        let BackendSettings::Vault(v) = &settings.issuers[0].backend else {
            panic!("expected a vault backend");
        };
        assert_eq!(v.mount, "pki_int");
    }

    #[test]
    fn auth_methods_read_from_toml() {
        let text = r#"
            address = "http://127.0.0.1:8200"
            role = "spiffe"
            [auth]
            method = "approle"
            role_id = "abc"
            secret_id_file = "/run/secret-id"
        "#;
        let parsed: VaultConfig = toml_like(text);
        assert_eq!(parsed.mount, "pki");
        assert_eq!(
            parsed.auth,
            VaultAuthConfig::AppRole {
                role_id: "abc".into(),
                secret_id_file: "/run/secret-id".into(),
                mount: "approle".into()
            }
        );
    }

    fn toml_like(text: &str) -> VaultConfig {
        use figment::providers::Format as _;
        figment::Figment::from(figment::providers::Toml::string(text))
            .extract()
            .unwrap()
    }
}

//! Building kube clients: the role's own identity, and a pod's identity from its token.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use secrecy::SecretString;

/// Failures to set up access to the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeAccessError {
    /// The kubeconfig file could not be read or understood.
    #[error("failed to load kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file named by the flag or `KUBECONFIG`.
        path: PathBuf,
        /// Why it failed.
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor the in-cluster environment was usable.
    #[error(
        "failed to find cluster credentials: pass --kubeconfig, set KUBECONFIG, or run in a pod \
         ({0})"
    )]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("failed to build a kube client: {0}")]
    Client(#[source] kube::Error),
    /// A token cannot be sent in an HTTP header.
    #[error("the token holds characters an HTTP header cannot carry")]
    Token,
}

/// A service-account token. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct BearerToken(SecretString);

impl BearerToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(SecretString::from(token.into()))
    }

    /// The token itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        use secrecy::ExposeSecret as _;
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Where the API server is and how to authenticate to it.
///
/// Holds the role's own configuration so that clients acting as a pod (with the pod's token)
/// reach the same server with the same trust roots. Those clients share one HTTPS connection
/// pool: a client per pod would otherwise pay a TLS handshake for every request it makes.
#[derive(Clone)]
pub struct KubeAccess {
    config: kube::Config,
    shared: Arc<OnceLock<SharedHttp>>,
}

/// Idle connections kept to the API server by the pod-token clients.
const IDLE_CONNECTIONS: usize = 4;

type SharedHttp = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    kube::client::Body,
>;

impl std::fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAccess")
            .field("cluster_url", &self.config.cluster_url)
            .finish()
    }
}

impl KubeAccess {
    /// From an explicit kubeconfig, or else `KUBECONFIG`, `~/.kube/config` or the in-cluster
    /// service account, in kube's usual order.
    pub async fn load(kubeconfig: Option<&Path>) -> Result<Self, KubeAccessError> {
        let config = match kubeconfig {
            Some(path) => {
                let file =
                    Kubeconfig::read_from(path).map_err(|source| KubeAccessError::Kubeconfig {
                        path: path.to_owned(),
                        source,
                    })?;
                kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .map_err(|source| KubeAccessError::Kubeconfig {
                        path: path.to_owned(),
                        source,
                    })?
            }
            None => kube::Config::infer()
                .await
                .map_err(KubeAccessError::Infer)?,
        };
        Ok(Self::from_config(config))
    }

    /// From a ready configuration (tests, the dev environment).
    pub fn from_config(config: kube::Config) -> Self {
        Self {
            config,
            shared: Arc::default(),
        }
    }

    /// The API server's URL.
    pub fn cluster_url(&self) -> String {
        self.config.cluster_url.to_string()
    }

    /// A client with the role's own credentials.
    pub fn client(&self) -> Result<kube::Client, KubeAccessError> {
        kube::Client::try_from(self.config.clone()).map_err(KubeAccessError::Client)
    }

    /// The same server and trust roots, authenticating with `token` and nothing else (tests
    /// and the dev environment run roles under service accounts this way).
    pub fn with_token(&self, token: &BearerToken) -> KubeAccess {
        let mut config = self.config.clone();
        config.auth_info = AuthInfo {
            token: Some(token.0.clone()),
            ..AuthInfo::default()
        };
        Self::from_config(config)
    }

    /// A client that authenticates with `token` and nothing else: the role's own client
    /// certificate, token file or exec plugin are dropped, so the API server sees the token's
    /// owner and only them.
    ///
    /// The client rides on a connection pool shared by every such client of this access.
    pub fn client_with_token(&self, token: &BearerToken) -> Result<kube::Client, KubeAccessError> {
        use kube::client::ConfigExt as _;
        use tower::ServiceBuilder;

        let http = match self.shared.get() {
            Some(http) => http.clone(),
            None => {
                let connector = self
                    .config
                    .rustls_https_connector()
                    .map_err(KubeAccessError::Client)?;
                // A burst of publishes opens one connection each (HTTP/1.1); keep only a few
                // of them afterwards, and not for long, so the node driver stays small.
                let http = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .pool_max_idle_per_host(IDLE_CONNECTIONS)
                .pool_idle_timeout(std::time::Duration::from_secs(30))
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build(connector);
                self.shared.get_or_init(|| http).clone()
            }
        };
        let mut authorization = http::HeaderValue::try_from(format!("Bearer {}", token.expose()))
            .map_err(|_| KubeAccessError::Token)?;
        authorization.set_sensitive(true);
        let service = ServiceBuilder::new()
            .layer(self.config.base_uri_layer())
            .map_request(move |mut request: http::Request<kube::client::Body>| {
                request
                    .headers_mut()
                    .insert(http::header::AUTHORIZATION, authorization.clone());
                request
            })
            .service(http);
        Ok(kube::Client::new(
            service,
            self.config.default_namespace.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_reach_debug_output() {
        let token = BearerToken::new("eyJhbGciOi.secret.part");
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
        assert_eq!(token.expose(), "eyJhbGciOi.secret.part");
    }

    #[tokio::test]
    async fn a_broken_kubeconfig_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, "not: [valid").unwrap();
        let err = KubeAccess::load(Some(&path)).await.unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}

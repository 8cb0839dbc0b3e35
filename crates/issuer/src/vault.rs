//! The Vault/OpenBao backend: `POST <mount>/sign/<role>` with the CSR and its SANs, the
//! approved duration as `ttl`.
//!
//! One token is shared by every signature. It is obtained by a login (Kubernetes, AppRole)
//! or read from a file, renewed at two thirds of its TTL by a maintenance task, and replaced
//! by a fresh login only when it can no longer be renewed or stops working. The same task
//! polls `sys/health` and drives the issuer's readiness.
//!
//! Errors are sorted into two kinds: the server refused this request (HTTP 400: the role
//! does not allow it) is permanent and fails the request; everything else (unreachable,
//! sealed, standby without forwarding, 5xx, a token that stopped working) is transient and
//! retried with backoff, never written into the request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nico_csr::San;
use nico_runtime::ReadyFlag;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vaultrs::api::pki::requests::SignCertificateRequest;
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use crate::config::{ValidVault, VaultAuthConfig};
use crate::local_ca::{Issued, SignRequest};
use crate::metrics::Metrics;

/// How often `sys/health` is polled.
const HEALTH_PERIOD: Duration = Duration::from_secs(5);
/// A token this close to expiry (or a fifth of its TTL, when shorter) is not used; a new
/// one is obtained first.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// Why Vault did not sign.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The server refused this request (HTTP 400): permanent.
    #[error("vault refused to sign: {0}")]
    Rejected(String),
    /// The request cannot be expressed to Vault: permanent.
    #[error("spec.request: {0}")]
    Unsupported(String),
    /// Logging in failed: transient (the credentials may be fixed or rotated).
    #[error("failed to log in to vault with {method}: {reason}")]
    Login {
        /// The auth method.
        method: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The token was refused (HTTP 403) even after a fresh login: transient.
    #[error("vault refused the token: {0}")]
    Forbidden(String),
    /// Vault could not be reached or answered with a server error: transient.
    #[error("failed to reach vault: {0}")]
    Unavailable(String),
    /// The client could not be set up (bad CA bundle, client certificate): transient, as a
    /// mounted file may still appear.
    #[error("failed to set up the vault client: {0}")]
    Setup(String),
}

impl VaultError {
    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Rejected(_) | Self::Unsupported(_))
    }
}

/// A token and the client that sends it. `Debug` hides the token.
struct Session {
    client: Arc<VaultClient>,
    obtained: Instant,
    /// `None`: the token does not expire (a root token).
    expires: Option<Instant>,
    renewable: bool,
    /// The TTL asked for at login, used as the renewal increment.
    ttl: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("expires", &self.expires)
            .field("renewable", &self.renewable)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn usable(&self, now: Instant) -> bool {
        // Short-lived tokens get a proportionate margin, or they would never be usable.
        let margin = EXPIRY_MARGIN.min(self.ttl / 5);
        self.expires.is_none_or(|at| at > now + margin)
    }

    /// When the maintenance task should renew (or replace) the token.
    fn refresh_at(&self) -> Option<Instant> {
        let expires = self.expires?;
        let life = expires.saturating_duration_since(self.obtained);
        Some(self.obtained + life * 2 / 3)
    }
}

/// One Vault issuer.
pub struct VaultBackend {
    name: String,
    settings: ValidVault,
    /// A client without a token: logins and health.
    anonymous: VaultClient,
    session: Mutex<Option<Arc<Session>>>,
    login: tokio::sync::Mutex<()>,
    /// Bounds the signing requests in flight, so a backlog does not flood the server.
    in_flight: tokio::sync::Semaphore,
    metrics: Metrics,
}

impl std::fmt::Debug for VaultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultBackend")
            .field("name", &self.name)
            .field("address", &self.settings.address)
            .field("mount", &self.settings.mount)
            .field("role", &self.settings.role)
            .finish_non_exhaustive()
    }
}

impl VaultBackend {
    /// Prepares a backend on its own (no metrics registered); nothing is sent yet. The
    /// issuer builds its backends itself; this is for embedding and benchmarks.
    pub fn new(name: impl Into<String>, settings: ValidVault) -> Result<Self, VaultError> {
        Self::with_metrics(name.into(), settings, Metrics::default())
    }

    /// Prepares the backend, counting logins and renewals in `metrics`.
    pub(crate) fn with_metrics(
        name: String,
        settings: ValidVault,
        metrics: Metrics,
    ) -> Result<Self, VaultError> {
        let anonymous = client(&settings, "")?;
        Ok(Self {
            name,
            in_flight: tokio::sync::Semaphore::new(settings.max_in_flight),
            settings,
            anonymous,
            session: Mutex::new(None),
            login: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    fn current(&self) -> Option<Arc<Session>> {
        // Each critical section is one assignment or clone: a poisoned lock is consistent.
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, session: Option<Arc<Session>>) {
        *self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = session;
    }

    /// A usable session: the cached one, or a fresh login (one at a time).
    async fn session(&self) -> Result<Arc<Session>, VaultError> {
        if let Some(session) = self.current().filter(|s| s.usable(Instant::now())) {
            return Ok(session);
        }
        let _one_login = self.login.lock().await;
        if let Some(session) = self.current().filter(|s| s.usable(Instant::now())) {
            return Ok(session);
        }
        let session = Arc::new(self.log_in().await?);
        self.replace(Some(session.clone()));
        Ok(session)
    }

    /// Drops `stale` if it is still the cached session, so the next call logs in.
    fn forget(&self, stale: &Arc<Session>) {
        let mut guard = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.as_ref().is_some_and(|s| Arc::ptr_eq(s, stale)) {
            *guard = None;
        }
    }

    async fn log_in(&self) -> Result<Session, VaultError> {
        let method = match &self.settings.auth {
            VaultAuthConfig::Kubernetes { .. } => "kubernetes",
            VaultAuthConfig::AppRole { .. } => "approle",
            VaultAuthConfig::Token { .. } => "token",
        };
        let failed = |reason: String| VaultError::Login { method, reason };
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .map_err(|e| failed(format!("failed to read {}: {e}", path.display())))
        };
        let obtained = Instant::now();
        let (token, ttl, renewable) = match &self.settings.auth {
            VaultAuthConfig::Kubernetes {
                role,
                mount,
                token_file,
            } => {
                let jwt = read(token_file)?;
                let auth = vaultrs::auth::kubernetes::login(&self.anonymous, mount, role, &jwt)
                    .await
                    .map_err(|e| failed(describe(&e)))?;
                (auth.client_token, auth.lease_duration, auth.renewable)
            }
            VaultAuthConfig::AppRole {
                role_id,
                secret_id_file,
                mount,
            } => {
                let secret_id = read(secret_id_file)?;
                let auth =
                    vaultrs::auth::approle::login(&self.anonymous, mount, role_id, &secret_id)
                        .await
                        .map_err(|e| failed(describe(&e)))?;
                (auth.client_token, auth.lease_duration, auth.renewable)
            }
            VaultAuthConfig::Token { token_file } => {
                let token = read(token_file)?;
                let probe = client(&self.settings, &token)?;
                let looked = probe.lookup().await.map_err(|e| failed(describe(&e)))?;
                (token, looked.ttl, looked.renewable.unwrap_or(false))
            }
        };
        let client = Arc::new(client(&self.settings, &token)?);
        self.metrics.vault_login(&self.name);
        info!(issuer = %self.name, method, ttl_secs = ttl, renewable, "logged in to vault");
        let ttl = Duration::from_secs(ttl);
        Ok(Session {
            client,
            obtained,
            expires: (!ttl.is_zero()).then(|| obtained + ttl),
            renewable,
            ttl,
        })
    }

    /// Renews the cached token, or logs in again when it cannot be renewed.
    async fn refresh(&self) -> Result<(), VaultError> {
        let _one_login = self.login.lock().await;
        let Some(session) = self.current() else {
            let fresh = self.log_in().await?;
            self.replace(Some(Arc::new(fresh)));
            return Ok(());
        };
        if session.renewable && session.usable(Instant::now()) {
            let increment = format!("{}s", session.ttl.as_secs());
            match session.client.renew(Some(&increment)).await {
                Ok(auth) => {
                    let now = Instant::now();
                    let granted = Duration::from_secs(auth.lease_duration);
                    self.metrics.vault_renewal(&self.name);
                    debug!(
                        issuer = %self.name,
                        ttl_secs = auth.lease_duration,
                        "renewed the vault token"
                    );
                    // A renewal capped by the token's max TTL leaves less than a third of a
                    // normal life: log in now rather than run into the cap.
                    if granted >= session.ttl / 3 {
                        self.replace(Some(Arc::new(Session {
                            client: session.client.clone(),
                            obtained: now,
                            expires: Some(now + granted),
                            renewable: auth.renewable,
                            ttl: session.ttl,
                        })));
                        return Ok(());
                    }
                }
                Err(error) => {
                    warn!(
                        issuer = %self.name,
                        error = %describe(&error),
                        "failed to renew the vault token; logging in again"
                    );
                }
            }
        }
        let fresh = self.log_in().await?;
        self.replace(Some(Arc::new(fresh)));
        Ok(())
    }

    /// Polls health and keeps the token fresh until `shutdown`. Each time the server serves
    /// again after it did not, `recovered` is bumped so waiting requests are retried at
    /// once rather than when their backoff ends.
    pub(crate) async fn maintain(
        self: Arc<Self>,
        ready: ReadyFlag,
        recovered: Arc<tokio::sync::watch::Sender<u64>>,
        shutdown: CancellationToken,
    ) {
        let mut next_refresh = Instant::now();
        let mut was_healthy = true;
        loop {
            let healthy = self.healthy().await;
            ready.set(healthy);
            if healthy && !was_healthy {
                info!(issuer = %self.name, "vault serves again; retrying waiting requests");
                recovered.send_modify(|count| *count = count.wrapping_add(1));
            }
            was_healthy = healthy;
            if healthy && Instant::now() >= next_refresh {
                next_refresh = match self.refresh().await {
                    Ok(()) => self
                        .current()
                        .and_then(|s| s.refresh_at())
                        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
                    Err(error) => {
                        warn!(
                            issuer = %self.name,
                            %error,
                            "failed to obtain a vault token; retrying"
                        );
                        Instant::now() + HEALTH_PERIOD
                    }
                };
            }
            let wake = (Instant::now() + HEALTH_PERIOD).min(next_refresh);
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// `sys/health`: active, standby and performance standby serve (standbys forward);
    /// sealed, uninitialised, DR secondaries and unreachable servers do not.
    async fn healthy(&self) -> bool {
        // sys/health belongs to the server, not to a namespace: it is asked without the
        // namespace header, which it would refuse.
        let url = format!("{}/v1/sys/health", self.settings.address);
        let code = match self.anonymous.http.http.get(url).send().await {
            Ok(response) => response.status().as_u16(),
            Err(error) => {
                debug!(issuer = %self.name, %error, "vault health check failed");
                return false;
            }
        };
        let (healthy, state) = health_state(code);
        if !healthy {
            debug!(issuer = %self.name, code, state, "vault is not ready");
        }
        healthy
    }

    /// Signs one request, logging in first when there is no usable token. The answer is
    /// not checked: pass it to [`crate::check_result`].
    pub async fn sign(&self, request: &SignRequest<'_>) -> Result<Issued, VaultError> {
        if request.is_ca {
            return Err(VaultError::Unsupported(
                "spec.isCA: this issuer signs only end-entity certificates".into(),
            ));
        }
        let csr = std::str::from_utf8(request.csr_pem)
            .map_err(|_| VaultError::Unsupported("the CSR is not PEM text".into()))?;
        let (mut uris, mut names, mut ips) = (Vec::new(), Vec::new(), Vec::new());
        for san in request.csr.sans() {
            let text = match san {
                San::Uri(uri) => uri.clone(),
                San::Dns(dns) | San::Email(dns) => dns.clone(),
                San::Ip(ip) => ip.to_string(),
                San::Other(other) => {
                    return Err(VaultError::Unsupported(format!(
                        "subject alternative name {other} is not supported"
                    )));
                }
            };
            if text.contains(',') {
                return Err(VaultError::Unsupported(format!(
                    "subject alternative name {text:?} contains a comma"
                )));
            }
            match san {
                San::Uri(_) => uris.push(text),
                San::Ip(_) => ips.push(text),
                _ => names.push(text),
            }
        }
        let common_name = request
            .csr
            .subject()
            .attributes()
            .iter()
            .find(|a| a.kind == "CN")
            .map(|a| a.value.clone());
        let mut builder = SignCertificateRequest::builder();
        builder
            .mount(self.settings.mount.as_str())
            .role(self.settings.role.as_str())
            .csr(csr)
            .ttl(format!("{}s", request.duration.as_secs().max(1)))
            .exclude_cn_from_sans(true)
            .format("pem");
        if let Some(cn) = common_name {
            builder.common_name(cn);
        }
        if !uris.is_empty() {
            builder.uri_sans(uris.join(","));
        }
        if !names.is_empty() {
            builder.alt_names(names.join(","));
        }
        if !ips.is_empty() {
            builder.ip_sans(ips.join(","));
        }
        let endpoint = builder
            .build()
            .map_err(|e| VaultError::Unsupported(e.to_string()))?;

        // The semaphore is never closed, so this only waits for a free slot.
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|e| VaultError::Unavailable(e.to_string()))?;
        let mut retried_login = false;
        let response = loop {
            let session = self.session().await?;
            let attempt =
                vaultrs::api::exec_with_result(session.client.as_ref(), clone_request(&endpoint))
                    .await;
            match attempt {
                Ok(response) => break response,
                Err(ClientError::APIError { code: 403, errors }) if !retried_login => {
                    // The token may have been revoked or expired early: one fresh login.
                    debug!(
                        issuer = %self.name,
                        errors = ?errors,
                        "vault refused the token; logging in again"
                    );
                    self.forget(&session);
                    retried_login = true;
                }
                Err(ClientError::APIError { code: 403, errors }) => {
                    return Err(VaultError::Forbidden(errors.join("; ")));
                }
                Err(ClientError::APIError { code: 400, errors }) => {
                    return Err(VaultError::Rejected(errors.join("; ")));
                }
                Err(error) => return Err(VaultError::Unavailable(describe(&error))),
            }
        };
        let mut certificates = Vec::new();
        let pems = std::iter::once(&response.certificate)
            .chain(std::iter::once(&response.issuing_ca))
            .chain(response.ca_chain.iter().flatten());
        for pem in pems {
            if pem.trim().is_empty() {
                continue;
            }
            let ders = nico_csr::pem_to_ders(pem.as_bytes())
                .map_err(|e| VaultError::Rejected(format!("the response is not PEM: {e}")))?;
            certificates.extend(ders);
        }
        Ok(Issued {
            certificates,
            extra_roots: Vec::new(),
        })
    }
}

/// What a `sys/health` status code means, and whether the server can sign.
fn health_state(code: u16) -> (bool, &'static str) {
    match code {
        200 => (true, "active"),
        429 => (true, "standby"),
        473 => (true, "performance standby"),
        472 => (false, "disaster recovery secondary"),
        501 => (false, "not initialised"),
        503 => (false, "sealed"),
        _ => (false, "unexpected status"),
    }
}

/// `SignCertificateRequest` is not `Clone`; a retry needs a second copy.
fn clone_request(request: &SignCertificateRequest) -> SignCertificateRequest {
    SignCertificateRequest {
        mount: request.mount.clone(),
        role: request.role.clone(),
        alt_names: request.alt_names.clone(),
        common_name: request.common_name.clone(),
        csr: request.csr.clone(),
        exclude_cn_from_sans: request.exclude_cn_from_sans,
        format: request.format.clone(),
        ip_sans: request.ip_sans.clone(),
        other_sans: request.other_sans.clone(),
        serial_number: request.serial_number.clone(),
        ttl: request.ttl.clone(),
        uri_sans: request.uri_sans.clone(),
        remove_roots_from_chain: request.remove_roots_from_chain,
    }
}

/// A vaultrs error with the server's own words; its `Display` hides them.
fn describe(error: &ClientError) -> String {
    match error {
        ClientError::APIError { code, errors } => format!("HTTP {code}: {}", errors.join("; ")),
        ClientError::RestClientError { source } => format!("{source}"),
        other => format!("{other}"),
    }
}

fn client(settings: &ValidVault, token: &str) -> Result<VaultClient, VaultError> {
    let mut builder = VaultClientSettingsBuilder::default();
    // invariant: the address was checked to be an http(s) URL by config validation, so the
    // setter (which panics on a bad URL) accepts it.
    builder
        .address(&settings.address)
        .token(token)
        .timeout(Some(settings.timeout))
        .verify(true)
        .ca_certs(
            settings
                .ca_bundle
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        );
    match &settings.client_identity {
        Some((cert, key)) => {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|e| {
                    VaultError::Setup(format!("failed to read {}: {e}", path.display()))
                })
            };
            let mut pem = read(cert)?;
            pem.extend(read(key)?);
            let identity = vaultrs::client::Identity::from_pem(&pem).map_err(|e| {
                VaultError::Setup(format!(
                    "client certificate {} and key {} are unusable: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            builder.identity(Some(identity));
        }
        None => {
            builder.identity(None);
        }
    }
    match &settings.namespace {
        Some(namespace) => builder.set_namespace(namespace.clone()),
        None => builder.namespace(None),
    };
    let built = builder
        .build()
        .map_err(|e| VaultError::Setup(e.to_string()))?;
    VaultClient::new(built).map_err(|e| VaultError::Setup(describe(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_codes_map_to_readiness() {
        let cases = [
            (200, true, "active"),
            (429, true, "standby"),
            (473, true, "performance standby"),
            (472, false, "disaster recovery secondary"),
            (501, false, "not initialised"),
            (503, false, "sealed"),
            (500, false, "unexpected status"),
        ];
        for (code, ready, state) in cases {
            assert_eq!(health_state(code), (ready, state), "{code}");
        }
    }

    #[test]
    fn only_refusals_of_the_request_are_permanent() {
        let permanent = [
            VaultError::Rejected("role does not allow".into()),
            VaultError::Unsupported("comma".into()),
        ];
        let transient = [
            VaultError::Login {
                method: "approle",
                reason: "down".into(),
            },
            VaultError::Forbidden("denied".into()),
            VaultError::Unavailable("refused".into()),
            VaultError::Setup("bad bundle".into()),
        ];
        assert!(permanent.iter().all(|e| !e.is_transient()));
        assert!(transient.iter().all(VaultError::is_transient));
    }

    #[test]
    fn short_tokens_get_a_proportionate_margin_and_renew_at_two_thirds() {
        // reqwest needs a rustls provider; the binary installs it first thing in main.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let settings = ValidVault {
            address: "http://127.0.0.1:1".into(),
            mount: "pki".into(),
            role: "r".into(),
            namespace: None,
            ca_bundle: None,
            client_identity: None,
            timeout: Duration::from_secs(1),
            max_in_flight: 1,
            auth: VaultAuthConfig::Token {
                token_file: "/nonexistent".into(),
            },
        };
        let now = Instant::now();
        let session = |ttl: u64| Session {
            client: Arc::new(client(&settings, "t").unwrap()),
            obtained: now,
            expires: Some(now + Duration::from_secs(ttl)),
            renewable: true,
            ttl: Duration::from_secs(ttl),
        };
        // A 6 s token is usable until 1.2 s before it ends, not 5 s.
        assert!(session(6).usable(now + Duration::from_secs(4)));
        assert!(!session(6).usable(now + Duration::from_millis(4900)));
        // An hour-long one stops being used 5 s before.
        assert!(!session(3600).usable(now + Duration::from_secs(3596)));
        assert_eq!(
            session(3600).refresh_at(),
            Some(now + Duration::from_secs(2400))
        );
        let forever = Session {
            expires: None,
            ..session(0)
        };
        assert!(forever.usable(now + Duration::from_secs(1 << 30)));
        assert_eq!(forever.refresh_at(), None);
        assert!(!format!("{forever:?}").contains("\"t\""));
    }
}

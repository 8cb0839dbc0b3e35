//! kubelet plugin registration, served in-process.
//!
//! kubelet watches its `plugins_registry` directory for sockets, asks each for `GetInfo`, then
//! reports whether registration worked. Serving this ourselves replaces the
//! node-driver-registrar sidecar.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::config::RegistrationConfig;
use crate::proto::pluginregistration::{
    self as reg, registration_server::Registration, registration_server::RegistrationServer,
};
use crate::server::{ServeError, bind_socket};

/// The CSI versions served, as kubelet expects them listed.
const SUPPORTED_VERSIONS: [&str; 1] = ["1.0.0"];

#[derive(Debug)]
struct RegistrationService {
    driver_name: String,
    endpoint: String,
    registered: Arc<AtomicBool>,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(
        &self,
        _request: Request<reg::InfoRequest>,
    ) -> Result<Response<reg::PluginInfo>, Status> {
        Ok(Response::new(reg::PluginInfo {
            r#type: "CSIPlugin".to_owned(),
            name: self.driver_name.clone(),
            endpoint: self.endpoint.clone(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<reg::RegistrationStatus>,
    ) -> Result<Response<reg::RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        self.registered
            .store(status.plugin_registered, Ordering::Release);
        if status.plugin_registered {
            tracing::info!(driver = %self.driver_name, "registered with kubelet");
        } else {
            tracing::error!(
                driver = %self.driver_name,
                error = %status.error,
                "kubelet refused the registration"
            );
        }
        Ok(Response::new(reg::RegistrationStatusResponse {}))
    }
}

/// Serves the registration socket until `shutdown`; `registered` follows kubelet's verdict.
pub(crate) async fn serve_registration(
    config: &RegistrationConfig,
    driver_name: &str,
    registered: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let listener: UnixListener = bind_socket(&config.socket)?;
    let service = RegistrationService {
        driver_name: driver_name.to_owned(),
        endpoint: config.kubelet_endpoint.display().to_string(),
        registered,
    };
    tracing::info!(socket = %config.socket.display(), "serving kubelet plugin registration");
    let served = tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(service))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await
        .map_err(ServeError::Transport);
    remove_socket(&config.socket);
    served
}

/// kubelet treats a socket that is still present as a plugin to register: remove ours on exit.
fn remove_socket(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(
            socket = %path.display(),
            %error,
            "failed to remove the registration socket"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pluginregistration::registration_client::RegistrationClient;
    use hyper_util::rt::TokioIo;

    #[tokio::test]
    async fn kubelet_gets_the_driver_info_and_its_verdict_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = RegistrationConfig {
            enabled: true,
            socket: dir.path().join("spiffe.csi.cert-manager.io-reg.sock"),
            kubelet_endpoint: "/var/lib/kubelet/plugins/spiffe.csi.cert-manager.io/csi.sock".into(),
        };
        let registered = Arc::new(AtomicBool::new(false));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn({
            let (config, registered, shutdown) =
                (config.clone(), registered.clone(), shutdown.clone());
            async move {
                serve_registration(&config, "spiffe.csi.cert-manager.io", registered, shutdown)
                    .await
            }
        });
        let socket = config.socket.clone();
        let channel = loop {
            let socket = socket.clone();
            let connected = tonic::transport::Endpoint::from_static("http://[::1]:1")
                .connect_with_connector(tower::service_fn(move |_| {
                    let socket = socket.clone();
                    async move {
                        tokio::net::UnixStream::connect(socket)
                            .await
                            .map(TokioIo::new)
                    }
                }))
                .await;
            if let Ok(channel) = connected {
                break channel;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        let mut kubelet = RegistrationClient::new(channel);
        let info = kubelet
            .get_info(reg::InfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.r#type, "CSIPlugin");
        assert_eq!(info.name, "spiffe.csi.cert-manager.io");
        assert_eq!(info.endpoint, config.kubelet_endpoint.display().to_string());
        assert_eq!(info.supported_versions, ["1.0.0"]);
        let status = reg::RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        };
        kubelet.notify_registration_status(status).await.unwrap();
        assert!(registered.load(Ordering::Acquire));
        shutdown.cancel();
        server.await.unwrap().unwrap();
        assert!(!config.socket.exists(), "the socket is removed on exit");
    }
}

//! The CSI Identity and Node services on a unix socket, as kubelet calls them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::driver::Driver;
use crate::proto::csi::{self, identity_server, node_server, node_service_capability};
use crate::registration::serve_registration;
use crate::request::{check_target_path, check_volume_id, parse_publish};

/// Failures to start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be created.
    #[error("failed to listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server stopped with an error.
    #[error("CSI gRPC server failed: {0}")]
    Transport(#[source] tonic::transport::Error),
}

/// Serves the driver on `socket` until `shutdown` fires. A stale socket file from an earlier
/// run is removed first.
pub async fn serve(
    driver: Driver,
    socket: &Path,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let listener = bind_socket(socket)?;
    if let Some(registration) = driver.settings().registration.clone() {
        let (name, shutdown) = (driver.settings().driver_name.clone(), shutdown.clone());
        tokio::spawn(async move {
            let registered = Arc::new(AtomicBool::new(false));
            if let Err(e) = serve_registration(&registration, &name, registered, shutdown).await {
                tracing::error!(error = %e, "kubelet registration socket failed");
            }
        });
    }
    tracing::info!(
        socket = %socket.display(),
        driver = %driver.settings().driver_name,
        "CSI server listening"
    );
    tonic::transport::Server::builder()
        .add_service(identity_server::IdentityServer::new(IdentityService {
            driver: driver.clone(),
        }))
        .add_service(node_server::NodeServer::new(NodeService { driver }))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await
        .map_err(ServeError::Transport)
}

/// Binds a unix socket, replacing a stale socket file left by an earlier run.
pub(crate) fn bind_socket(socket: &Path) -> Result<UnixListener, ServeError> {
    let listen_error = |source| ServeError::Listen {
        path: socket.display().to_string(),
        source,
    };
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(listen_error)?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_error(e)),
    }
    UnixListener::bind(socket).map_err(listen_error)
}

#[derive(Debug)]
struct IdentityService {
    driver: Driver,
}

#[tonic::async_trait]
impl identity_server::Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: self.driver.settings().driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        // Node plugin only: no controller service, no topology.
        Ok(Response::new(csi::GetPluginCapabilitiesResponse {
            capabilities: Vec::new(),
        }))
    }

    async fn probe(
        &self,
        _request: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        Ok(Response::new(csi::ProbeResponse {
            ready: Some(self.driver.is_ready()),
        }))
    }
}

#[derive(Debug)]
struct NodeService {
    driver: Driver,
}

#[tonic::async_trait]
impl node_server::Node for NodeService {
    async fn node_publish_volume(
        &self,
        request: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let span = tracing::info_span!(
            "publish",
            volume_id = %request.volume_id,
            pod_uid = request.volume_context.get("csi.storage.k8s.io/pod.uid").map(String::as_str),
        );
        async {
            let parsed = parse_publish(&request, self.driver.request_rules())?;
            self.driver.publish(parsed).await?;
            Ok(Response::new(csi::NodePublishVolumeResponse {}))
        }
        .instrument(span)
        .await
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let span = tracing::info_span!("unpublish", volume_id = %request.volume_id);
        async {
            check_volume_id(&request.volume_id)?;
            let target =
                check_target_path(&request.target_path, &self.driver.settings().target_roots)?;
            self.driver.unpublish(&request.volume_id, &target).await?;
            Ok(Response::new(csi::NodeUnpublishVolumeResponse {}))
        }
        .instrument(span)
        .await
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        let capability = |kind: node_service_capability::rpc::Type| csi::NodeServiceCapability {
            r#type: Some(node_service_capability::Type::Rpc(
                node_service_capability::Rpc {
                    r#type: kind as i32,
                },
            )),
        };
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities: vec![capability(
                node_service_capability::rpc::Type::VolumeMountGroup,
            )],
        }))
    }

    async fn node_get_info(
        &self,
        _request: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.driver.settings().node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}

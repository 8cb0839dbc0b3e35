//! A stand-in for kubelet: it mints the pod's token with a TokenRequest and calls the CSI
//! plugin over its unix socket with exactly the request kubelet sends for an inline volume.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use nico_csi_node::FileNames;
use nico_csi_node::csi::{self, node_client::NodeClient, volume_capability};
use tonic::transport::{Channel, Endpoint};

/// Why the kubelet stand-in failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// It could not be set up.
    #[error("failed to set up the kubelet stand-in: {0}")]
    Setup(String),
    /// The CSI socket could not be reached.
    #[error("failed to connect to the CSI socket: {0}")]
    Connect(#[source] tonic::transport::Error),
    /// TokenRequest failed.
    #[error("failed to request a token for {namespace}/{service_account}: {source}")]
    Token {
        /// Namespace.
        namespace: String,
        /// Service account.
        service_account: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The CSI call failed.
    #[error("{}: {}", .0.code(), .0.message())]
    Csi(tonic::Status),
}

/// One pod's CSI volume, as kubelet knows it.
#[derive(Debug, Clone)]
pub struct PodVolume {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod_name: String,
    /// Pod uid.
    pub pod_uid: String,
    /// The pod's service account.
    pub service_account: String,
    /// CSI volume id (kubelet's `csi-<hash>` form).
    pub volume_id: String,
    /// Where kubelet asks the driver to put the volume.
    pub target_path: PathBuf,
    files: FileNames,
}

impl PodVolume {
    /// Describes a pod's volume.
    pub fn new(
        namespace: &str,
        pod_name: &str,
        pod_uid: &str,
        service_account: &str,
        target_path: PathBuf,
        files: FileNames,
    ) -> Self {
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            format!("{pod_uid}/spiffe").as_bytes(),
        );
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Self {
            namespace: namespace.to_owned(),
            pod_name: pod_name.to_owned(),
            pod_uid: pod_uid.to_owned(),
            service_account: service_account.to_owned(),
            volume_id: format!("csi-{hex}"),
            target_path,
            files,
        }
    }

    /// Path of one of the volume's files.
    pub fn file(&self, which: VolumeFile) -> PathBuf {
        let name = match which {
            VolumeFile::Certificate => &self.files.certificate,
            VolumeFile::Key => &self.files.key,
            VolumeFile::Ca => &self.files.ca,
        };
        self.target_path.join(name)
    }

    /// The serial of the certificate in the volume, if any.
    pub fn current_serial(&self) -> Option<String> {
        let pem = std::fs::read(self.file(VolumeFile::Certificate)).ok()?;
        let ders = nico_csr::pem_to_ders(&pem).ok()?;
        let leaf = nico_csr::parse_certificate(ders.first()?).ok()?;
        Some(leaf.serial_hex().to_owned())
    }

    /// Lines describing the volume's certificate, for the dev command's output.
    pub fn describe(&self) -> Result<Vec<String>, String> {
        let path = self.file(VolumeFile::Certificate);
        let pem =
            std::fs::read(&path).map_err(|e| format!("failed to read {}: {e}", path.display()))?;
        let ders = nico_csr::pem_to_ders(&pem).map_err(|e| e.to_string())?;
        let leaf = ders.first().ok_or("empty certificate file")?;
        let leaf = nico_csr::parse_certificate(leaf).map_err(|e| e.to_string())?;
        let ids: Vec<&str> = leaf.uri_sans().collect();
        Ok(vec![
            format!("pod {}/{}", self.namespace, self.pod_name),
            format!("  spiffe id: {}", ids.join(", ")),
            format!("  serial:    {}", leaf.serial_hex()),
            format!("  expires:   {}", leaf.not_after()),
            format!("  tls.crt:   {}", path.display()),
            format!("  tls.key:   {}", self.file(VolumeFile::Key).display()),
            format!("  ca.crt:    {}", self.file(VolumeFile::Ca).display()),
        ])
    }
}

/// The files of a volume.
#[derive(Debug, Clone, Copy)]
pub enum VolumeFile {
    /// `tls.crt`.
    Certificate,
    /// `tls.key`.
    Key,
    /// `ca.crt`.
    Ca,
}

/// The kubelet stand-in.
#[derive(Clone)]
pub struct Kubelet {
    client: kube::Client,
    node: NodeClient<Channel>,
    driver_name: String,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("driver_name", &self.driver_name)
            .finish_non_exhaustive()
    }
}

/// Connects a gRPC channel to a unix socket, as kubelet does.
pub async fn csi_channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_owned();
    // The URI is required by the API but unused: every connection goes to the socket.
    Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
}

impl Kubelet {
    /// Connects to the CSI socket.
    pub async fn connect(
        socket: &Path,
        client: kube::Client,
        driver_name: String,
    ) -> Result<Self, KubeletError> {
        let channel = csi_channel(socket).await.map_err(KubeletError::Connect)?;
        Ok(Self {
            client,
            node: NodeClient::new(channel),
            driver_name,
        })
    }

    /// The driver this kubelet publishes for.
    pub fn driver_name(&self) -> &str {
        &self.driver_name
    }

    /// Mints a token for the pod's service account, bound to the pod, for the API server's
    /// own audience (the CSIDriver's `tokenRequests: [{audience: ""}]`).
    pub async fn pod_token(&self, volume: &PodVolume) -> Result<(String, String), KubeletError> {
        self.token_for(volume, &volume.service_account).await
    }

    /// Mints a token for any service account of the pod's namespace, bound to the pod (tests
    /// use this to present a token that does not belong to the pod's declared account).
    pub async fn token_for(
        &self,
        volume: &PodVolume,
        service_account: &str,
    ) -> Result<(String, String), KubeletError> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &volume.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(3600),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(volume.pod_name.clone()),
                    uid: Some(volume.pod_uid.clone()),
                }),
            },
            ..Default::default()
        };
        let answer = accounts
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .map_err(|source| KubeletError::Token {
                namespace: volume.namespace.clone(),
                service_account: service_account.to_owned(),
                source,
            })?;
        let status = answer.status.ok_or_else(|| {
            KubeletError::Setup("the TokenRequest answer carries no status".to_owned())
        })?;
        let expires = status.expiration_timestamp.0.to_string();
        Ok((status.token, expires))
    }

    /// NodePublishVolume with a fresh pod token.
    pub async fn publish(&self, volume: &PodVolume) -> Result<(), KubeletError> {
        let (token, expires) = self.pod_token(volume).await?;
        self.publish_with(publish_request(volume, &token, &expires))
            .await
    }

    /// NodePublishVolume with a request built by the caller.
    pub async fn publish_with(
        &self,
        request: csi::NodePublishVolumeRequest,
    ) -> Result<(), KubeletError> {
        self.node
            .clone()
            .node_publish_volume(request)
            .await
            .map_err(KubeletError::Csi)?;
        Ok(())
    }

    /// NodeUnpublishVolume.
    pub async fn unpublish(&self, volume: &PodVolume) -> Result<(), KubeletError> {
        let request = csi::NodeUnpublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            target_path: volume.target_path.display().to_string(),
        };
        self.node
            .clone()
            .node_unpublish_volume(request)
            .await
            .map_err(KubeletError::Csi)?;
        Ok(())
    }
}

/// The NodePublishVolume request kubelet sends for an inline, read-only volume of a driver
/// with `podInfoOnMount` and `tokenRequests: [{audience: ""}]`.
pub fn publish_request(
    volume: &PodVolume,
    token: &str,
    expires: &str,
) -> csi::NodePublishVolumeRequest {
    let tokens = serde_json::json!({ "": { "token": token, "expirationTimestamp": expires } });
    let context: HashMap<String, String> = [
        ("csi.storage.k8s.io/ephemeral", "true".to_owned()),
        ("csi.storage.k8s.io/pod.name", volume.pod_name.clone()),
        ("csi.storage.k8s.io/pod.namespace", volume.namespace.clone()),
        ("csi.storage.k8s.io/pod.uid", volume.pod_uid.clone()),
        (
            "csi.storage.k8s.io/serviceAccount.name",
            volume.service_account.clone(),
        ),
        (
            "csi.storage.k8s.io/serviceAccount.tokens",
            tokens.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    csi::NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: volume.target_path.display().to_string(),
        volume_capability: Some(csi::VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(Default::default())),
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
            }),
        }),
        readonly: true,
        volume_context: context,
        ..Default::default()
    }
}

//! Who may create a SPIFFE request, and the pod it is bound to: [`RequesterMode`],
//! [`PodFacts`] (a pod as the caller found it) and [`OwnerPod`].

use std::collections::BTreeSet;
use std::fmt;

/// `spec.extra` key naming the pod a service-account token is bound to.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";

/// `spec.extra` key carrying the uid of the pod a token is bound to.
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// `spec.extra` key naming the node a token is bound to (pod-bound tokens carry it since
/// Kubernetes 1.30).
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";

/// Who creates SPIFFE requests, which decides whose account the SPIFFE ID must name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequesterMode {
    /// The pod's own service account creates the request (nico-identity's csi-node does,
    /// with the token kubelet hands it). When the token was bound to a pod, that pod must
    /// exist, run as the account and have the bound uid.
    PodAccount {
        /// Refuse tokens that are not bound to a pod (legacy Secret-based tokens).
        require_pod_bound: bool,
    },
    /// A CSI driver creates requests with its own account on behalf of the pod named by
    /// the request's pod annotations. The requester must be one of these accounts, its
    /// token must be bound to a node, and the pod must run on that node.
    DriverAccount {
        /// The driver accounts, `system:serviceaccount:<namespace>:<name>`.
        accounts: BTreeSet<String>,
    },
}

impl Default for RequesterMode {
    fn default() -> Self {
        Self::PodAccount {
            require_pod_bound: false,
        }
    }
}

/// A pod's identity as the caller read it from the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.serviceAccountName`, `default` when the pod names none.
    pub service_account: String,
    /// `spec.nodeName`, empty while the pod is not scheduled.
    pub node_name: String,
}

/// Annotation naming the pod a driver-made request is for (in the request's namespace).
pub const POD_NAME_ANNOTATION: &str = "identity.nico.io/pod-name";

/// Annotation carrying the uid of the pod a driver-made request is for.
pub const POD_UID_ANNOTATION: &str = "identity.nico.io/pod-uid";

/// The pod the caller must look up, in the request's namespace, before judging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodQuery<'a> {
    /// The pod's name.
    pub name: &'a str,
}

impl fmt::Display for PodQuery<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

//! What the approver reads from the API server while judging: the pod a request is bound
//! to, the Services and labels of a namespace, and whether a requester may use a policy.
//! Behind a trait so the judging logic is tested without a cluster.

use std::collections::BTreeMap;
use std::future::Future;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use nico_k8s_types::{POLICY_GROUP, POLICY_RESOURCE, POLICY_USE_VERB};
use nico_policy::PodFacts;
use nico_request_policy::MAX_LIST_ITEMS;

/// The identity that created a request, as admission recorded it in the spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Requester {
    pub(crate) username: String,
    pub(crate) uid: Option<String>,
    pub(crate) groups: Vec<String>,
    pub(crate) extra: BTreeMap<String, Vec<String>>,
}

/// A read that failed; the request is judged again later.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} {target}: {source}")]
pub(crate) struct ClusterError {
    /// What was being read.
    pub(crate) action: &'static str,
    /// Which object.
    pub(crate) target: String,
    /// The cause.
    #[source]
    pub(crate) source: kube::Error,
}

/// Reads the judging needs.
pub(crate) trait Cluster: Send + Sync {
    /// The pod `namespace/name`, or `None` when it does not exist.
    fn pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<PodFacts>, ClusterError>> + Send;

    /// The names of the Services in `namespace`; at most [`MAX_LIST_ITEMS`] + 1, so that a
    /// namespace with too many is noticed without reading them all.
    fn service_names(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<Vec<String>, ClusterError>> + Send;

    /// The labels of `namespace` (empty when it does not exist).
    fn namespace_labels(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, ClusterError>> + Send;

    /// Whether `requester` may `use` the CertificateRequestPolicy `policy` for a request in
    /// `namespace`, by RBAC.
    fn may_use_policy(
        &self,
        requester: &Requester,
        policy: &str,
        namespace: &str,
    ) -> impl Future<Output = Result<bool, ClusterError>> + Send;
}

/// [`Cluster`] over the approver's own kube client.
#[derive(Clone)]
pub(crate) struct KubeCluster {
    pub(crate) client: kube::Client,
}

impl Cluster for KubeCluster {
    async fn pod(&self, namespace: &str, name: &str) -> Result<Option<PodFacts>, ClusterError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = pods.get_opt(name).await.map_err(|source| ClusterError {
            action: "read pod",
            target: format!("{namespace}/{name}"),
            source,
        })?;
        Ok(pod.map(|pod| {
            let spec = pod.spec.unwrap_or_default();
            PodFacts {
                namespace: namespace.to_owned(),
                name: pod.metadata.name.unwrap_or_default(),
                uid: pod.metadata.uid.unwrap_or_default(),
                service_account: spec
                    .service_account_name
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| "default".to_owned()),
                node_name: spec.node_name.unwrap_or_default(),
            }
        }))
    }

    async fn service_names(&self, namespace: &str) -> Result<Vec<String>, ClusterError> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        // One more than a validation may see: enough to tell that there are too many.
        let limit = u32::try_from(MAX_LIST_ITEMS + 1).unwrap_or(u32::MAX);
        let list = services
            .list_metadata(&ListParams::default().limit(limit))
            .await
            .map_err(|source| ClusterError {
                action: "list services in namespace",
                target: namespace.to_owned(),
                source,
            })?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect())
    }

    async fn namespace_labels(
        &self,
        namespace: &str,
    ) -> Result<BTreeMap<String, String>, ClusterError> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let found = namespaces
            .get_opt(namespace)
            .await
            .map_err(|source| ClusterError {
                action: "read namespace",
                target: namespace.to_owned(),
                source,
            })?;
        Ok(found.and_then(|n| n.metadata.labels).unwrap_or_default())
    }

    async fn may_use_policy(
        &self,
        requester: &Requester,
        policy: &str,
        namespace: &str,
    ) -> Result<bool, ClusterError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(requester.username.clone()),
                uid: requester.uid.clone(),
                groups: Some(requester.groups.clone()),
                extra: Some(requester.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(POLICY_GROUP.to_owned()),
                    resource: Some(POLICY_RESOURCE.to_owned()),
                    verb: Some(POLICY_USE_VERB.to_owned()),
                    name: Some(policy.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviews: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| ClusterError {
                action: "review access to certificaterequestpolicy",
                target: policy.to_owned(),
                source,
            })?;
        Ok(answer
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true)))
    }
}

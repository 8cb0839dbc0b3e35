//! Who may approve: adding an `Approved` or `Denied` condition needs the `approve` verb on
//! `signers` in group `cert-manager.io` for the request's issuer, as cert-manager checks it.
//!
//! The resource name is `<kind plural>.<group>/<namespace>.<name>` for a namespaced issuer
//! and `<kind plural>.<group>/<name>` for a cluster-scoped one; `<kind plural>.<group>/*`
//! (a literal `*`) grants every issuer of that kind. A namespaced issuer's review carries
//! the request's namespace, so a RoleBinding there may grant it; a cluster-scoped one's
//! needs a ClusterRoleBinding. The kind's plural and scope come from API discovery, except
//! for cert-manager's own two kinds.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::discovery::Scope;
use nico_k8s_types::IssuerRef;

use crate::certificate_request::Requester;

/// The API group of `signers`.
pub(crate) const SIGNERS_GROUP: &str = "cert-manager.io";

/// How an issuer kind is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IssuerResource {
    /// The kind's plural, e.g. `clusterissuers`.
    pub(crate) plural: String,
    /// Whether issuers of this kind live in a namespace.
    pub(crate) namespaced: bool,
}

/// Why the permission could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// API discovery failed.
    #[error("failed to discover kind {kind} in group {group}: {source}")]
    Discovery {
        /// The issuer kind.
        kind: String,
        /// The issuer group.
        group: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The SubjectAccessReview failed.
    #[error("failed to review access to signer {name}: {source}")]
    Review {
        /// The signer resource name.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// Answers the two questions an approval needs; behind a trait so that validation is
/// tested without a cluster.
pub(crate) trait Authorizer: Send + Sync + 'static {
    /// How issuers of `kind` in `group` are served, or `None` when they are not.
    fn issuer_resource(
        &self,
        group: &str,
        kind: &str,
    ) -> impl Future<Output = Result<Option<IssuerResource>, AuthorizeError>> + Send;

    /// Whether `requester` may `approve` the signer `name` (in `namespace`, if given).
    fn may_approve(
        &self,
        requester: &Requester,
        name: &str,
        namespace: Option<&str>,
    ) -> impl Future<Output = Result<bool, AuthorizeError>> + Send;
}

/// The signer of a request's issuer, in RBAC's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Signer {
    /// The resource name for this issuer.
    pub(crate) name: String,
    /// The resource name for every issuer of its kind.
    pub(crate) wildcard: String,
    /// The namespace of the review: the request's, for namespaced issuers.
    pub(crate) namespace: Option<String>,
}

impl Signer {
    /// The signer for `issuer`, named by a request in `namespace`.
    pub(crate) fn new(issuer: &IssuerRef, namespace: &str, resource: &IssuerResource) -> Self {
        let prefix = format!("{}.{}", resource.plural, issuer.group_or_default());
        if resource.namespaced {
            Signer {
                name: format!("{prefix}/{namespace}.{}", issuer.name),
                wildcard: format!("{prefix}/*"),
                namespace: Some(namespace.to_owned()),
            }
        } else {
            Signer {
                name: format!("{prefix}/{}", issuer.name),
                wildcard: format!("{prefix}/*"),
                namespace: None,
            }
        }
    }
}

/// cert-manager's own issuer kinds, known without discovery.
fn builtin(group: &str, kind: &str) -> Option<IssuerResource> {
    let (plural, namespaced) = match (group, kind) {
        ("cert-manager.io", "Issuer") => ("issuers", true),
        ("cert-manager.io", "ClusterIssuer") => ("clusterissuers", false),
        _ => return None,
    };
    Some(IssuerResource {
        plural: plural.to_owned(),
        namespaced,
    })
}

/// [`Authorizer`] over the webhook's own kube client.
#[derive(Clone)]
pub(crate) struct KubeAuthorizer {
    client: kube::Client,
    discovered: Arc<Mutex<HashMap<(String, String), IssuerResource>>>,
}

impl std::fmt::Debug for KubeAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAuthorizer").finish_non_exhaustive()
    }
}

impl KubeAuthorizer {
    pub(crate) fn new(client: kube::Client) -> Self {
        Self {
            client,
            discovered: Arc::default(),
        }
    }

    fn cached(&self, key: &(String, String)) -> Option<IssuerResource> {
        // Each critical section is one map operation: a poisoned map is still consistent.
        self.discovered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

impl Authorizer for KubeAuthorizer {
    async fn issuer_resource(
        &self,
        group: &str,
        kind: &str,
    ) -> Result<Option<IssuerResource>, AuthorizeError> {
        if let Some(known) = builtin(group, kind) {
            return Ok(Some(known));
        }
        let key = (group.to_owned(), kind.to_owned());
        if let Some(known) = self.cached(&key) {
            return Ok(Some(known));
        }
        let found = match kube::discovery::group(&self.client, group).await {
            Ok(found) => found,
            Err(kube::Error::Discovery(_)) => return Ok(None),
            Err(source) => {
                return Err(AuthorizeError::Discovery {
                    kind: kind.to_owned(),
                    group: group.to_owned(),
                    source,
                });
            }
        };
        let Some((resource, capabilities)) = found.recommended_kind(kind) else {
            return Ok(None);
        };
        let resource = IssuerResource {
            plural: resource.plural,
            namespaced: capabilities.scope == Scope::Namespaced,
        };
        self.discovered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, resource.clone());
        Ok(Some(resource))
    }

    async fn may_approve(
        &self,
        requester: &Requester,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<bool, AuthorizeError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(requester.username.clone()),
                uid: requester.uid.clone(),
                groups: Some(requester.groups.clone()),
                extra: Some(requester.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(SIGNERS_GROUP.to_owned()),
                    resource: Some("signers".to_owned()),
                    verb: Some("approve".to_owned()),
                    name: Some(name.to_owned()),
                    namespace: namespace.map(str::to_owned),
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
            .map_err(|source| AuthorizeError::Review {
                name: name.to_owned(),
                source,
            })?;
        Ok(answer
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_names_follow_cert_manager() {
        let issuer = |name: &str, kind: Option<&str>, group: Option<&str>| IssuerRef {
            name: name.into(),
            kind: kind.map(Into::into),
            group: group.map(Into::into),
        };
        let namespaced = builtin("cert-manager.io", "Issuer").unwrap();
        let cluster = builtin("cert-manager.io", "ClusterIssuer").unwrap();
        let external = IssuerResource {
            plural: "awspcaissuers".into(),
            namespaced: true,
        };
        let cases = [
            (
                issuer("ca", None, None),
                &namespaced,
                "issuers.cert-manager.io/demo.ca",
                "issuers.cert-manager.io/*",
                Some("demo"),
            ),
            (
                issuer("nico", Some("ClusterIssuer"), Some("cert-manager.io")),
                &cluster,
                "clusterissuers.cert-manager.io/nico",
                "clusterissuers.cert-manager.io/*",
                None,
            ),
            (
                issuer("pca", Some("AWSPCAIssuer"), Some("awspca.cert-manager.io")),
                &external,
                "awspcaissuers.awspca.cert-manager.io/demo.pca",
                "awspcaissuers.awspca.cert-manager.io/*",
                Some("demo"),
            ),
        ];
        for (issuer, resource, name, wildcard, namespace) in cases {
            let signer = Signer::new(&issuer, "demo", resource);
            assert_eq!(signer.name, name);
            assert_eq!(signer.wildcard, wildcard);
            assert_eq!(signer.namespace.as_deref(), namespace);
        }
        assert_eq!(builtin("example.com", "Issuer"), None);
    }
}

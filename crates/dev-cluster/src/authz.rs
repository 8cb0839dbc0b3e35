//! Authorization: may this user do this?
//!
//! Every request passes through [`authorize`] after authentication and before anything is
//! read or written, as on a real API server, so RBAC is checked before existence (kube-wire
//! 11d). The same decision answers SubjectAccessReviews. The chain is kube-apiserver's with
//! `--authorization-mode=RBAC`: members of `system:masters` are allowed outright, then RBAC
//! looks for a binding that grants the request; nothing is ever denied explicitly, so a
//! refusal carries no reason.

use crate::rbac;
use crate::status::{ApiError, Details, qualified};
use crate::store::Store;

/// How the dev cluster decides whether a request may go on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Authorization {
    /// RBAC over the stored Roles, ClusterRoles and their bindings, with `system:masters`
    /// allowed everything, like kube-apiserver with `--authorization-mode=RBAC`.
    #[default]
    Rbac,
    /// Every authenticated user may do everything.
    AllowAll,
}

/// The group whose members skip RBAC, as on every kube-apiserver.
pub(crate) const MASTERS: &str = "system:masters";

/// Who asks: the parts of a user that authorization looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub(crate) username: &'a str,
    pub(crate) groups: &'a [String],
}

/// A request on a resource, in RBAC's terms. Empty strings mean "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResourceAttributes<'a> {
    /// get, list, watch, create, update, patch, delete, deletecollection, or any other
    /// verb a review asks about (`approve`, `use`).
    pub(crate) verb: &'a str,
    pub(crate) group: &'a str,
    pub(crate) resource: &'a str,
    pub(crate) subresource: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attributes<'a> {
    /// A request on a resource.
    Resource(ResourceAttributes<'a>),
    /// A request on a path outside the resource tree (`/version`, `/apis`).
    NonResource { verb: &'a str, path: &'a str },
}

impl Attributes<'_> {
    fn namespace(&self) -> &str {
        match self {
            Attributes::Resource(r) => r.namespace,
            Attributes::NonResource { .. } => "",
        }
    }
}

/// The answer: allowed or not, and the reason the allowing authorizer gave ("" when none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    pub(crate) reason: String,
}

impl Decision {
    fn allow(reason: impl Into<String>) -> Decision {
        Decision {
            allowed: true,
            reason: reason.into(),
        }
    }
}

/// Decides a request, as kube-apiserver's authorizer chain would.
pub(crate) fn decide(
    mode: Authorization,
    subject: Subject<'_>,
    attrs: &Attributes<'_>,
    store: &Store,
) -> Decision {
    if mode == Authorization::AllowAll {
        return Decision::allow("");
    }
    if subject.groups.iter().any(|g| g == MASTERS) {
        return Decision::allow("");
    }
    let st = store.lock();
    match rbac::evaluate(&st, subject, attrs) {
        Some(reason) => Decision::allow(reason),
        None => Decision {
            allowed: false,
            reason: String::new(),
        },
    }
}

/// `Ok` to go on, or the 403 to answer (kube-wire 11a, 11d, 11e).
pub(crate) fn authorize(
    mode: Authorization,
    subject: Subject<'_>,
    attrs: &Attributes<'_>,
    store: &Store,
) -> Result<(), ApiError> {
    let decision = decide(mode, subject, attrs, store);
    if decision.allowed {
        return Ok(());
    }
    tracing::debug!(
        user = subject.username,
        namespace = attrs.namespace(),
        "forbidden"
    );
    Err(forbidden(subject.username, attrs, &decision.reason))
}

/// The API server's 403: what was refused, for whom, and where.
fn forbidden(username: &str, attrs: &Attributes<'_>, reason: &str) -> ApiError {
    let mut what = match attrs {
        Attributes::NonResource { verb, path } => {
            format!("User {username:?} cannot {verb} path {path:?}")
        }
        Attributes::Resource(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.to_owned()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace {:?}", r.namespace)
            };
            format!(
                "User {username:?} cannot {} resource {resource:?} in API group {:?} {scope}",
                r.verb, r.group
            )
        }
    };
    if !reason.is_empty() {
        what = format!("{what}: {reason}");
    }
    match attrs {
        Attributes::NonResource { .. } => {
            ApiError::forbidden(format!("forbidden: {what}"), Details::default())
        }
        Attributes::Resource(r) => {
            let subject = qualified(r.resource, r.group);
            let message = if r.name.is_empty() {
                format!("{subject} is forbidden: {what}")
            } else {
                format!("{subject} {:?} is forbidden: {what}", r.name)
            };
            ApiError::forbidden(message, Details::object(r.name, r.group, r.resource))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource<'a>(verb: &'a str, sub: &'a str, ns: &'a str, name: &'a str) -> Attributes<'a> {
        Attributes::Resource(ResourceAttributes {
            verb,
            group: "cert-manager.io",
            resource: "certificaterequests",
            subresource: sub,
            namespace: ns,
            name,
        })
    }

    #[test]
    fn forbidden_messages_have_the_api_server_shape() {
        let user = "system:serviceaccount:kube-wire:app";
        let cases = [
            (
                resource("create", "", "kube-wire", ""),
                "certificaterequests.cert-manager.io is forbidden: User \
                 \"system:serviceaccount:kube-wire:app\" cannot create resource \
                 \"certificaterequests\" in API group \"cert-manager.io\" in the namespace \
                 \"kube-wire\"",
            ),
            (
                resource("patch", "status", "kube-wire", "sa-cr-1"),
                "certificaterequests.cert-manager.io \"sa-cr-1\" is forbidden: User \
                 \"system:serviceaccount:kube-wire:app\" cannot patch resource \
                 \"certificaterequests/status\" in API group \"cert-manager.io\" in the \
                 namespace \"kube-wire\"",
            ),
            (
                resource("list", "", "", ""),
                "certificaterequests.cert-manager.io is forbidden: User \
                 \"system:serviceaccount:kube-wire:app\" cannot list resource \
                 \"certificaterequests\" in API group \"cert-manager.io\" at the cluster scope",
            ),
            (
                Attributes::NonResource {
                    verb: "get",
                    path: "/apis",
                },
                "forbidden: User \"system:serviceaccount:kube-wire:app\" cannot get path \
                 \"/apis\"",
            ),
        ];
        for (attrs, want) in cases {
            let err = forbidden(user, &attrs, "");
            assert_eq!(err.code, 403);
            assert_eq!(err.message, want);
        }
    }

    #[test]
    fn details_name_the_plural_resource_and_the_object() {
        let err = forbidden("u", &resource("get", "", "ns", "cr-1"), "");
        let details = err.details.expect("details");
        assert_eq!(details.name.as_deref(), Some("cr-1"));
        assert_eq!(details.kind.as_deref(), Some("certificaterequests"));
        assert_eq!(details.group.as_deref(), Some("cert-manager.io"));
    }

    #[test]
    fn masters_and_allow_all_skip_rbac() {
        let store = Store::new(10);
        let masters = vec![MASTERS.to_owned()];
        let nobody: Vec<String> = vec!["system:authenticated".to_owned()];
        let attrs = resource("delete", "", "ns", "x");
        let who = |groups| Subject {
            username: "someone",
            groups,
        };
        assert!(decide(Authorization::Rbac, who(&masters), &attrs, &store).allowed);
        assert!(decide(Authorization::AllowAll, who(&nobody), &attrs, &store).allowed);
        assert!(!decide(Authorization::Rbac, who(&nobody), &attrs, &store).allowed);
    }
}

//! Authorization: may this user do this?
//!
//! Every request passes through [`Authorizer::authorize`] after authentication and before
//! anything is read or written, as on a real API server (RBAC is checked before
//! existence). For now every authenticated user may do everything.
//!
//! TODO(#4): RBAC objects and SubjectAccessReview. Roles, ClusterRoles and their bindings
//! become stored resources, an RBAC authorizer replaces [`AllowAll`], and denials answer
//! 403 with the message shape of kube-wire 11a/11d/11e.

use crate::auth::UserInfo;
use crate::status::ApiError;

/// What a request wants to do, in RBAC's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attributes<'a> {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub(crate) verb: &'a str,
    pub(crate) group: &'a str,
    pub(crate) resource: &'a str,
    pub(crate) subresource: Option<&'a str>,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
}

/// Decides whether a user may act.
pub(crate) trait Authorizer: Send + Sync + std::fmt::Debug {
    /// `Ok` to go on, or the 403 to answer.
    fn authorize(&self, user: &UserInfo, attrs: &Attributes<'_>) -> Result<(), ApiError>;
}

/// Lets every authenticated user do everything.
#[derive(Debug, Default)]
pub(crate) struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _user: &UserInfo, _attrs: &Attributes<'_>) -> Result<(), ApiError> {
        Ok(())
    }
}

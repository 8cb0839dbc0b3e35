//! The table of resources the dev cluster serves.
//!
//! Each row says where a resource lives on the URL space, how it is stored, and which
//! behaviours it has (status subresource, generation, CRD semantics, selectable fields).
//! Adding a kind is adding a row; kind-specific defaulting and validation hang off
//! [`Hooks`] in `kinds.rs`.

/// Which verbs a resource answers, as listed in discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verbs {
    /// Everything, in the order the API server lists built-in resources.
    BuiltIn,
    /// Everything but deletecollection (namespaces).
    BuiltInNoCollection,
    /// Everything, in the order listed for custom resources.
    Custom,
}

impl Verbs {
    pub(crate) fn list(self) -> &'static [&'static str] {
        match self {
            Verbs::BuiltIn => &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
            Verbs::BuiltInNoCollection => &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ],
            Verbs::Custom => &[
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "create",
                "update",
                "watch",
            ],
        }
    }
}

/// Kind-specific behaviour: defaulting, validation and shape conversion in `kinds.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hooks {
    None,
    Namespace,
    Pod,
    Secret,
    Lease,
    CoreEvent,
    EventsV1Event,
    CertificateRequest,
    Service,
    /// Roles and ClusterRoles.
    Role,
    /// RoleBindings and ClusterRoleBindings.
    Binding,
    MutatingWebhooks,
    ValidatingWebhooks,
}

/// One served resource.
#[derive(Debug)]
pub(crate) struct ResourceDef {
    /// API group, "" for core.
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) singular: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) namespaced: bool,
    /// Custom resource (CRD) semantics: `continue: ""` on lists, kind on list items, `"."`
    /// members in managedFields for every object node, 415 for strategic merge patch.
    pub(crate) custom: bool,
    /// Has a `status` subresource: main writes drop status, status writes drop the rest.
    pub(crate) status_subresource: bool,
    /// Keeps `metadata.generation`.
    pub(crate) generation: bool,
    /// PUT must carry a resourceVersion (true for every kind served so far).
    pub(crate) update_needs_rv: bool,
    /// Pods: DELETE answers with the object instead of a `Status`.
    pub(crate) return_deleted_object: bool,
    /// Storage bucket; two resources share one when they are two shapes of the same data.
    pub(crate) storage: &'static str,
    pub(crate) short_names: &'static [&'static str],
    pub(crate) categories: &'static [&'static str],
    pub(crate) verbs: Verbs,
    /// Field selectors beyond metadata.name/namespace: (selector label, dotted JSON path in
    /// this resource's own shape).
    pub(crate) selectable: &'static [(&'static str, &'static str)],
    /// Built-in fields (dotted paths) that count as set members themselves in
    /// managedFields: maps, and optional structs and keyed lists absent from a new object.
    pub(crate) map_fields: &'static [&'static str],
    /// Struct fields managed as one unit in managedFields.
    pub(crate) atomic_fields: &'static [&'static str],
    pub(crate) hooks: Hooks,
    pub(crate) storage_version_hash: &'static str,
}

impl ResourceDef {
    /// `group/version`, or just the version for core.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `<Kind>List`.
    pub(crate) fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

const BASE: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    plural: "",
    singular: "",
    kind: "",
    namespaced: true,
    custom: false,
    status_subresource: false,
    generation: false,
    update_needs_rv: true,
    return_deleted_object: false,
    storage: "",
    short_names: &[],
    categories: &[],
    verbs: Verbs::BuiltIn,
    selectable: &[],
    map_fields: &[],
    atomic_fields: &[],
    hooks: Hooks::None,
    storage_version_hash: "",
};

/// The shape used for managedFields of create-only endpoints (built-in type rules).
pub(crate) const REVIEW_DEF: ResourceDef = ResourceDef {
    group: "authentication.k8s.io",
    plural: "tokenreviews",
    kind: "TokenReview",
    storage: "none",
    ..BASE
};

const CUSTOM: ResourceDef = ResourceDef {
    custom: true,
    status_subresource: true,
    generation: true,
    verbs: Verbs::Custom,
    ..BASE
};

const EVENT_ATOMIC: &[&str] = &["involvedObject", "regarding", "related"];

/// A webhook configuration: webhooks keyed by name, their clientConfig a member, the
/// selectors atomic (`x-kubernetes-map-type: atomic`).
const WEBHOOKS: ResourceDef = ResourceDef {
    group: "admissionregistration.k8s.io",
    namespaced: false,
    generation: true,
    categories: &["api-extensions"],
    map_fields: &[
        "webhooks",
        "webhooks.clientConfig",
        "webhooks.clientConfig.service",
    ],
    atomic_fields: &["webhooks.namespaceSelector", "webhooks.objectSelector"],
    ..BASE
};

const RBAC: ResourceDef = ResourceDef {
    group: "rbac.authorization.k8s.io",
    ..BASE
};

/// Every stored resource. Order is the order of discovery documents.
pub(crate) static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        status_subresource: true,
        storage: "namespaces",
        short_names: &["ns"],
        verbs: Verbs::BuiltInNoCollection,
        hooks: Hooks::Namespace,
        storage_version_hash: "Q3oi5N2YM8M=",
        ..BASE
    },
    ResourceDef {
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        status_subresource: true,
        storage: "nodes",
        short_names: &["no"],
        storage_version_hash: "XwShjMxG9Fs=",
        ..BASE
    },
    ResourceDef {
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        storage: "serviceaccounts",
        short_names: &["sa"],
        storage_version_hash: "pbx9ZvyFpBE=",
        ..BASE
    },
    ResourceDef {
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        status_subresource: true,
        generation: true,
        return_deleted_object: true,
        storage: "pods",
        short_names: &["po"],
        categories: &["all"],
        selectable: &[
            ("spec.nodeName", "spec.nodeName"),
            ("spec.serviceAccountName", "spec.serviceAccountName"),
            ("status.phase", "status.phase"),
        ],
        map_fields: &["spec.nodeSelector"],
        hooks: Hooks::Pod,
        storage_version_hash: "xPOwRZ+Yhw8=",
        ..BASE
    },
    ResourceDef {
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        storage: "configmaps",
        short_names: &["cm"],
        map_fields: &["data", "binaryData"],
        storage_version_hash: "qFsyl6wFWjQ=",
        ..BASE
    },
    ResourceDef {
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        storage: "secrets",
        selectable: &[("type", "type")],
        map_fields: &["data", "stringData"],
        hooks: Hooks::Secret,
        storage_version_hash: "S6u1pOWzb84=",
        ..BASE
    },
    ResourceDef {
        plural: "services",
        singular: "service",
        kind: "Service",
        status_subresource: true,
        storage: "services",
        short_names: &["svc"],
        categories: &["all"],
        map_fields: &["spec.selector"],
        hooks: Hooks::Service,
        storage_version_hash: "0/CO1lhkEBI=",
        ..BASE
    },
    ResourceDef {
        plural: "events",
        singular: "event",
        kind: "Event",
        storage: "events",
        short_names: &["ev"],
        selectable: &[
            ("involvedObject.kind", "involvedObject.kind"),
            ("involvedObject.namespace", "involvedObject.namespace"),
            ("involvedObject.name", "involvedObject.name"),
            ("involvedObject.uid", "involvedObject.uid"),
            ("involvedObject.apiVersion", "involvedObject.apiVersion"),
            (
                "involvedObject.resourceVersion",
                "involvedObject.resourceVersion",
            ),
            ("involvedObject.fieldPath", "involvedObject.fieldPath"),
            ("reason", "reason"),
            ("reportingComponent", "reportingComponent"),
            ("source", "source.component"),
            ("type", "type"),
        ],
        atomic_fields: EVENT_ATOMIC,
        hooks: Hooks::CoreEvent,
        storage_version_hash: "r2yiGXH7wu8=",
        ..BASE
    },
    ResourceDef {
        group: "events.k8s.io",
        plural: "events",
        singular: "event",
        kind: "Event",
        storage: "events",
        short_names: &["ev"],
        selectable: &[
            ("regarding.kind", "regarding.kind"),
            ("regarding.namespace", "regarding.namespace"),
            ("regarding.name", "regarding.name"),
            ("regarding.uid", "regarding.uid"),
            ("regarding.apiVersion", "regarding.apiVersion"),
            ("regarding.resourceVersion", "regarding.resourceVersion"),
            ("regarding.fieldPath", "regarding.fieldPath"),
            ("reason", "reason"),
            ("reportingController", "reportingController"),
            ("type", "type"),
        ],
        atomic_fields: EVENT_ATOMIC,
        hooks: Hooks::EventsV1Event,
        storage_version_hash: "r2yiGXH7wu8=",
        ..BASE
    },
    ResourceDef {
        group: "coordination.k8s.io",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        storage: "leases",
        hooks: Hooks::Lease,
        storage_version_hash: "gqkMMb/YqFM=",
        ..BASE
    },
    ResourceDef {
        group: "cert-manager.io",
        plural: "certificaterequests",
        singular: "certificaterequest",
        kind: "CertificateRequest",
        storage: "certificaterequests",
        short_names: &["cr", "crs"],
        categories: &["cert-manager"],
        selectable: &[
            ("spec.issuerRef.name", "spec.issuerRef.name"),
            ("spec.issuerRef.kind", "spec.issuerRef.kind"),
            ("spec.issuerRef.group", "spec.issuerRef.group"),
        ],
        hooks: Hooks::CertificateRequest,
        storage_version_hash: "tuxiikMaACg=",
        ..CUSTOM
    },
    ResourceDef {
        group: "cert-manager.io",
        plural: "certificates",
        singular: "certificate",
        kind: "Certificate",
        storage: "certificates",
        short_names: &["cert", "certs"],
        categories: &["cert-manager"],
        storage_version_hash: "QwYBQGuMyKo=",
        ..CUSTOM
    },
    ResourceDef {
        group: "cert-manager.io",
        plural: "issuers",
        singular: "issuer",
        kind: "Issuer",
        storage: "issuers",
        short_names: &["iss"],
        categories: &["cert-manager"],
        storage_version_hash: "P8OOH0cQiDA=",
        ..CUSTOM
    },
    ResourceDef {
        group: "cert-manager.io",
        plural: "clusterissuers",
        singular: "clusterissuer",
        kind: "ClusterIssuer",
        namespaced: false,
        storage: "clusterissuers",
        short_names: &["ciss"],
        categories: &["cert-manager"],
        storage_version_hash: "IJyJPITm/AY=",
        ..CUSTOM
    },
    ResourceDef {
        group: "policy.cert-manager.io",
        version: "v1alpha1",
        plural: "certificaterequestpolicies",
        singular: "certificaterequestpolicy",
        kind: "CertificateRequestPolicy",
        namespaced: false,
        storage: "certificaterequestpolicies",
        short_names: &["crp"],
        storage_version_hash: "7MFcKQd2oqA=",
        ..CUSTOM
    },
    ResourceDef {
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        storage: "clusterrolebindings",
        hooks: Hooks::Binding,
        storage_version_hash: "48tpQ8gZHFc=",
        ..RBAC
    },
    ResourceDef {
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        storage: "clusterroles",
        hooks: Hooks::Role,
        storage_version_hash: "bYE5ZWDrJ44=",
        ..RBAC
    },
    ResourceDef {
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        storage: "rolebindings",
        hooks: Hooks::Binding,
        storage_version_hash: "eGsCzGH6b1g=",
        ..RBAC
    },
    ResourceDef {
        plural: "roles",
        singular: "role",
        kind: "Role",
        storage: "roles",
        hooks: Hooks::Role,
        storage_version_hash: "7FuwZcIIItM=",
        ..RBAC
    },
    ResourceDef {
        plural: "mutatingwebhookconfigurations",
        singular: "mutatingwebhookconfiguration",
        kind: "MutatingWebhookConfiguration",
        storage: "mutatingwebhookconfigurations",
        hooks: Hooks::MutatingWebhooks,
        storage_version_hash: "Sqi0GUgDaX0=",
        ..WEBHOOKS
    },
    ResourceDef {
        plural: "validatingwebhookconfigurations",
        singular: "validatingwebhookconfiguration",
        kind: "ValidatingWebhookConfiguration",
        storage: "validatingwebhookconfigurations",
        hooks: Hooks::ValidatingWebhooks,
        storage_version_hash: "B0wHjQmsGNk=",
        ..WEBHOOKS
    },
];

/// A create-only endpoint that stores nothing (reviews).
#[derive(Debug)]
pub(crate) struct VirtualDef {
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) namespaced: bool,
}

/// Create-only endpoints, listed in discovery.
pub(crate) static VIRTUAL: &[VirtualDef] = &[
    VirtualDef {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "selfsubjectreviews",
        kind: "SelfSubjectReview",
        namespaced: false,
    },
    VirtualDef {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "tokenreviews",
        kind: "TokenReview",
        namespaced: false,
    },
    VirtualDef {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "localsubjectaccessreviews",
        kind: "LocalSubjectAccessReview",
        namespaced: true,
    },
    VirtualDef {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
    },
    VirtualDef {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "subjectaccessreviews",
        kind: "SubjectAccessReview",
        namespaced: false,
    },
];

/// The resource served at `group/version/plural`.
pub(crate) fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|d| d.group == group && d.version == version && d.plural == plural)
}

/// Every `group/version` served, core excluded, in first-seen order.
pub(crate) fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let all = RESOURCES
        .iter()
        .map(|d| (d.group, d.version))
        .chain(VIRTUAL.iter().map(|v| (v.group, v.version)));
    for gv in all {
        if !gv.0.is_empty() && !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_complete_and_unique() {
        for (i, d) in RESOURCES.iter().enumerate() {
            assert!(!d.plural.is_empty() && !d.kind.is_empty() && !d.storage.is_empty());
            for other in &RESOURCES[i + 1..] {
                assert!(
                    (d.group, d.plural) != (other.group, other.plural),
                    "{}",
                    d.plural
                );
            }
        }
    }

    #[test]
    fn both_event_apis_share_storage() {
        let core = lookup("", "v1", "events").map(|d| d.storage);
        let v1 = lookup("events.k8s.io", "v1", "events").map(|d| d.storage);
        assert_eq!(core, v1);
    }
}

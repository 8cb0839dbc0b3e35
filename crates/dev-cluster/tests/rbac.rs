//! RBAC through the real kube client: what a service account may do before and after it is
//! bound, in which namespaces, through which kinds of binding; the access reviews that
//! answer the same questions; and the allow-all switch.

mod common;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    LocalSubjectAccessReview, SelfSubjectAccessReview, SubjectAccessReview,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use nico_dev_cluster::{Authorization, DevCluster, DevClusterConfig};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

async fn cluster(authorization: Authorization) -> DevCluster {
    common::install_provider();
    DevCluster::start(DevClusterConfig {
        authorization,
        ..DevClusterConfig::default()
    })
    .await
    .expect("dev cluster starts")
}

fn typed<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

async fn create<K>(api: &Api<K>, v: Value) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &typed(v))
        .await
        .expect("created")
}

/// A token for `ns/app` (the account is made first).
async fn account_token(admin: &kube::Client, ns: &str) -> String {
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    if ns != "default" {
        create(&namespaces, json!({"metadata": {"name": ns}})).await;
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    create(&accounts, json!({"metadata": {"name": "app"}})).await;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create_token_request("app", &PostParams::default(), &request)
        .await
        .expect("token")
        .status
        .expect("status")
        .token
}

fn code(result: Result<impl std::fmt::Debug, kube::Error>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(kube::Error::Api(status)) => status.code,
        Err(other) => panic!("not an API answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_can_do_what_their_bindings_grant() {
    let cluster = cluster(Authorization::Rbac).await;
    let admin = common::admin(&cluster).await;
    let token = account_token(&admin, "team").await;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    create(&namespaces, json!({"metadata": {"name": "elsewhere"}})).await;
    let as_app = common::with_token(&cluster, &token).await;
    let team_cms: Api<ConfigMap> = Api::namespaced(as_app.clone(), "team");
    let other_cms: Api<ConfigMap> = Api::namespaced(as_app.clone(), "elsewhere");
    let list = ListParams::default();

    let refused = team_cms.list(&list).await.expect_err("nothing granted yet");
    match refused {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403);
            assert_eq!(
                status.message,
                "configmaps is forbidden: User \"system:serviceaccount:team:app\" cannot list \
                 resource \"configmaps\" in API group \"\" in the namespace \"team\""
            );
        }
        other => panic!("{other:?}"),
    }

    // A namespaced Role: its namespace only, its verbs only.
    let roles: Api<Role> = Api::namespaced(admin.clone(), "team");
    create(
        &roles,
        json!({"metadata": {"name": "cm-reader"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                          "verbs": ["get", "list"]}]}),
    )
    .await;
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "team");
    create(
        &bindings,
        json!({"metadata": {"name": "app-reads"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "cm-reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "app"}]}),
    )
    .await;
    assert_eq!(code(team_cms.list(&list).await), 200);
    assert_eq!(code(other_cms.list(&list).await), 403);
    let cm: ConfigMap = typed(json!({"metadata": {"name": "c"}}));
    assert_eq!(
        code(team_cms.create(&PostParams::default(), &cm).await),
        403
    );

    // A ClusterRole bound in one namespace grants there only.
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    create(
        &cluster_roles,
        json!({"metadata": {"name": "cm-writer"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                          "verbs": ["create", "patch"]}]}),
    )
    .await;
    let elsewhere_bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "elsewhere");
    create(
        &elsewhere_bindings,
        json!({"metadata": {"name": "app-writes"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "cm-writer"},
               "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "team"}]}),
    )
    .await;
    assert_eq!(
        code(other_cms.create(&PostParams::default(), &cm).await),
        200
    );
    assert_eq!(
        code(team_cms.create(&PostParams::default(), &cm).await),
        403
    );

    // A ClusterRoleBinding to a group: everywhere, here to every service account.
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    create(
        &cluster_bindings,
        json!({"metadata": {"name": "all-accounts-write"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "cm-writer"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                             "name": "system:serviceaccounts"}]}),
    )
    .await;
    assert_eq!(
        code(team_cms.create(&PostParams::default(), &cm).await),
        200
    );

    // Status is a resource of its own.
    let patch = Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}}));
    assert_eq!(
        code(team_cms.patch("c", &PatchParams::default(), &patch).await),
        200
    );
    let namespaces_as_app: Api<Namespace> = Api::all(as_app.clone());
    assert_eq!(code(namespaces_as_app.get_status("team").await), 403);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_may_discover_the_api_and_review_itself() {
    let cluster = cluster(Authorization::Rbac).await;
    let admin = common::admin(&cluster).await;
    let token = account_token(&admin, "default").await;
    let as_app = common::with_token(&cluster, &token).await;
    as_app
        .apiserver_version()
        .await
        .expect("version is public to users");
    let groups = as_app.list_api_groups().await.expect("discovery");
    assert!(groups.groups.iter().any(|g| g.name == "cert-manager.io"));
    let review: SelfSubjectAccessReview = typed(json!({"spec": {"resourceAttributes":
        {"verb": "list", "resource": "secrets", "namespace": "default"}}}));
    let answer = Api::<SelfSubjectAccessReview>::all(as_app.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("self reviews are open to every user");
    assert!(!answer.status.expect("status").allowed);
    // Reviews about others are not.
    let about_others: SubjectAccessReview = typed(json!({"spec": {"user": "x",
        "resourceAttributes": {"verb": "get", "resource": "pods"}}}));
    let refused = Api::<SubjectAccessReview>::all(as_app)
        .create(&PostParams::default(), &about_others)
        .await;
    assert_eq!(code(refused), 403);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_reviews_name_the_binding_that_allows() {
    let cluster = cluster(Authorization::Rbac).await;
    let admin = common::admin(&cluster).await;
    let roles: Api<Role> = Api::namespaced(admin.clone(), "default");
    create(
        &roles,
        json!({"metadata": {"name": "signer-user"},
               "rules": [{"apiGroups": ["policy.cert-manager.io"],
                          "resources": ["certificaterequestpolicies"],
                          "verbs": ["use"], "resourceNames": ["services"]}]}),
    )
    .await;
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "default");
    create(
        &bindings,
        json!({"metadata": {"name": "web-uses-services"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "signer-user"},
               "subjects": [{"kind": "ServiceAccount", "name": "web"}]}),
    )
    .await;
    let ask = |name: &str, namespace: &str| -> SubjectAccessReview {
        typed(json!({"spec": {
            "user": "system:serviceaccount:default:web",
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {"verb": "use", "group": "policy.cert-manager.io",
                                   "resource": "certificaterequestpolicies",
                                   "name": name, "namespace": namespace}}}))
    };
    let reviews: Api<SubjectAccessReview> = Api::all(admin.clone());
    let yes = reviews
        .create(&PostParams::default(), &ask("services", "default"))
        .await
        .expect("reviewed")
        .status
        .expect("status");
    assert!(yes.allowed);
    assert_eq!(
        yes.reason.as_deref(),
        Some(
            "RBAC: allowed by RoleBinding \"web-uses-services/default\" of Role \
             \"signer-user\" to ServiceAccount \"web/default\""
        )
    );
    for (name, namespace) in [("other-policy", "default"), ("services", "kube-system")] {
        let no = reviews
            .create(&PostParams::default(), &ask(name, namespace))
            .await
            .expect("reviewed")
            .status
            .expect("status");
        assert!(!no.allowed, "{name} in {namespace}");
        assert_eq!(no.reason, None, "RBAC gives no reason for a refusal");
        assert_eq!(no.denied, None);
    }
    let local: LocalSubjectAccessReview = typed(json!({
        "metadata": {"namespace": "default"},
        "spec": {"user": "system:serviceaccount:default:web",
                 "resourceAttributes": {"verb": "use", "group": "policy.cert-manager.io",
                                        "resource": "certificaterequestpolicies",
                                        "name": "services", "namespace": "default"}}}));
    let answer = Api::<LocalSubjectAccessReview>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &local)
        .await
        .expect("reviewed");
    assert!(answer.status.expect("status").allowed);
    let mismatched: LocalSubjectAccessReview = typed(json!({
        "spec": {"user": "u", "resourceAttributes": {"verb": "get", "namespace": "other"}}}));
    let refused = Api::<LocalSubjectAccessReview>::namespaced(admin, "default")
        .create(&PostParams::default(), &mismatched)
        .await;
    assert_eq!(code(refused), 422);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_are_validated_and_keep_their_role() {
    let cluster = cluster(Authorization::Rbac).await;
    let admin = common::admin(&cluster).await;
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "default");
    let created = create(
        &bindings,
        json!({"metadata": {"name": "b"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "r"},
               "subjects": [{"kind": "ServiceAccount", "name": "app"}]}),
    )
    .await;
    let mut changed = created.clone();
    changed.role_ref.name = "other".into();
    let refused = bindings
        .replace("b", &PostParams::default(), &changed)
        .await
        .expect_err("roleRef is immutable");
    match refused {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422);
            assert!(
                status.message.contains("roleRef: Invalid value"),
                "{}",
                status.message
            );
            assert!(
                status.message.contains("cannot change roleRef"),
                "{}",
                status.message
            );
        }
        other => panic!("{other:?}"),
    }
    let roles: Api<Role> = Api::namespaced(admin, "default");
    let bad: Role = typed(json!({"metadata": {"name": "bad"},
        "rules": [{"verbs": ["get"], "resources": ["pods"]}]}));
    let refused = roles.create(&PostParams::default(), &bad).await;
    match refused {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            assert!(
                status.message.contains("rules[0].apiGroups"),
                "{}",
                status.message
            );
        }
        other => panic!("{other:?}"),
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_all_lets_every_authenticated_user_in() {
    let cluster = cluster(Authorization::AllowAll).await;
    let admin = common::admin(&cluster).await;
    let token = account_token(&admin, "default").await;
    let as_app = common::with_token(&cluster, &token).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::all(as_app);
    assert_eq!(code(secrets.list(&ListParams::default()).await), 200);
    let anonymous = common::with_token(&cluster, "not-a-token").await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::all(anonymous);
    assert_eq!(code(secrets.list(&ListParams::default()).await), 401);
    cluster.shutdown().await;
}

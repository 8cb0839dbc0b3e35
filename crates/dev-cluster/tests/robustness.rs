//! Hostile input never takes the dev cluster down: random paths, methods, content types
//! and bodies always get an answer, and every error answer is a `Status` whose `code` is
//! the HTTP status. Also the fixed cases: unknown paths, oversized bodies, no token.

mod common;

use nico_dev_cluster::{DevCluster, DevClusterConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

async fn send(
    cluster: &DevCluster,
    method: &str,
    path: &str,
    content_type: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut headers = vec![("content-type", content_type.to_owned())];
    if let Some(token) = token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    let answer = common::send(cluster, method, path, &headers, Some(body)).await;
    (answer.status, answer.body)
}

fn assert_status_object(code: u16, body: &[u8]) {
    if code < 300 {
        return;
    }
    let status: Value = serde_json::from_slice(body).expect("errors are JSON");
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["code"], u64::from(code), "{status}");
}

const PATHS: &[&str] = &[
    "/api/v1/namespaces",
    "/api/v1/namespaces/default",
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces/default/pods/p",
    "/api/v1/namespaces/default/pods/p/status",
    "/api/v1/namespaces/default/serviceaccounts/default/token",
    "/api/v1/namespaces/default/configmaps/c",
    "/api/v1/namespaces/default/events",
    "/apis/events.k8s.io/v1/namespaces/default/events",
    "/apis/coordination.k8s.io/v1/namespaces/default/leases/l",
    "/apis/cert-manager.io/v1/namespaces/default/certificaterequests",
    "/apis/cert-manager.io/v1/namespaces/default/certificaterequests/cr",
    "/apis/cert-manager.io/v1/namespaces/default/certificaterequests/cr/status",
    "/apis/authentication.k8s.io/v1/tokenreviews",
    "/apis/authentication.k8s.io/v1/selfsubjectreviews",
    "/apis/authorization.k8s.io/v1/subjectaccessreviews",
    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    "/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews",
    "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/b",
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/v",
    "/api/v1/namespaces/default/services",
    "/apis/policy.cert-manager.io/v1alpha1/certificaterequestpolicies/p/status",
    "/apis",
    "/api",
    "/version",
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    "text/plain",
];

const QUERIES: &[&str] = &[
    "",
    "?watch=1&timeoutSeconds=0",
    "?labelSelector=a%20in%20(b",
    "?fieldSelector=metadata.name%3D%3D",
    "?limit=-1",
    "?continue=%%%",
    "?resourceVersion=abc&resourceVersionMatch=Exact",
    "?dryRun=All&fieldManager=x&force=true",
    "?gracePeriodSeconds=x",
];

fn json_bodies() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z/.:-]{0,12}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_owned()),
                    Just("spec".to_owned()),
                    Just("status".to_owned()),
                    Just("name".to_owned()),
                    Just("op".to_owned()),
                    Just("path".to_owned()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        value.prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn random_requests_never_break_the_server() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = rt
        .block_on(DevCluster::start(DevClusterConfig::default()))
        .expect("starts");
    let token = cluster.admin_token().to_owned();
    let mut runner = TestRunner::new(Config {
        cases: 400,
        ..Config::default()
    });
    let strategy = (
        prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        prop_oneof![
            prop::sample::select(PATHS.to_vec()).prop_map(str::to_owned),
            "/[a-z0-9./-]{0,40}",
        ],
        prop::sample::select(QUERIES.to_vec()),
        prop::sample::select(CONTENT_TYPES.to_vec()),
        json_bodies(),
    );
    let result = runner.run(&strategy, |(method, path, query, content_type, body)| {
        let uri = format!("{path}{query}");
        let (code, answer) = rt.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                send(&cluster, method, &uri, content_type, Some(&token), body),
            )
            .await
            .expect("answered in time")
        });
        assert_status_object(code, &answer);
        Ok(())
    });
    rt.block_on(cluster.shutdown());
    result.expect("no request broke the server");
}

#[tokio::test]
async fn fixed_hostile_cases() {
    let config = DevClusterConfig {
        max_body_bytes: 1024,
        ..DevClusterConfig::default()
    };
    let cluster = DevCluster::start(config).await.expect("starts");
    let token = cluster.admin_token().to_owned();
    let cms = "/api/v1/namespaces/default/configmaps";

    let (code, body) = send(&cluster, "GET", "/no/such/path", "", Some(&token), vec![]).await;
    assert_eq!(code, 404);
    assert_status_object(code, &body);

    let big = vec![b' '; 4096];
    let (code, body) = send(&cluster, "POST", cms, "application/json", Some(&token), big).await;
    assert_eq!(code, 413);
    assert_status_object(code, &body);

    let (code, body) = send(&cluster, "GET", cms, "", None, vec![]).await;
    assert_eq!(code, 401);
    assert_status_object(code, &body);

    let (code, _) = send(&cluster, "GET", "/healthz", "", None, vec![]).await;
    assert_eq!(code, 200, "health needs no credentials");

    let (code, body) = send(
        &cluster,
        "PATCH",
        cms,
        "application/json",
        Some(&token),
        vec![],
    )
    .await;
    assert_eq!(code, 405);
    assert_status_object(code, &body);

    let err = DevCluster::start(DevClusterConfig {
        bind: "0.0.0.0:0".parse().expect("address"),
        ..DevClusterConfig::default()
    })
    .await
    .expect_err("only 127.0.0.1");
    assert!(err.to_string().contains("127.0.0.1"));
    cluster.shutdown().await;
}

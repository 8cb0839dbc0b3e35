//! The router in process (`oneshot`, no sockets): paths, bad bodies, answers, metrics.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use crate::approval::{AuthorizeError, IssuerResource};
use crate::certificate_request::Requester;
use crate::test_support::review_body;

/// Knows no issuer and allows nobody.
pub(crate) struct Nobody;

impl Authorizer for Nobody {
    async fn issuer_resource(
        &self,
        _group: &str,
        _kind: &str,
    ) -> Result<Option<IssuerResource>, AuthorizeError> {
        Ok(None)
    }

    async fn may_approve(
        &self,
        _requester: &Requester,
        _name: &str,
        _namespace: Option<&str>,
    ) -> Result<bool, AuthorizeError> {
        Ok(false)
    }
}

pub(crate) fn app(limit: usize) -> (Router, Metrics) {
    let metrics = Metrics::default();
    let app = Arc::new(App {
        authorizer: Nobody,
        limits: Limits::default(),
        injection: Some(Injection::default()),
        max_review_bytes: limit,
        metrics: metrics.clone(),
    });
    (router(app), metrics)
}

pub(crate) async fn post(router: &Router, path: &str, body: Vec<u8>) -> (StatusCode, String) {
    let request = Request::post(path).body(Body::from(body)).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn pod_review() -> Vec<u8> {
    review_body(json!({
        "uid": "pod-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": "web-0", "namespace": "demo", "operation": "CREATE",
        "userInfo": {"username": "alice"},
        "object": {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "web-0", "labels": {"identity.nico.io/inject": "true"}},
                   "spec": {"containers": [{"name": "app", "image": "x"}]}},
    }))
}

#[tokio::test]
async fn bad_bodies_get_a_clear_400_and_good_ones_an_answer() {
    let (router, metrics) = app(64 * 1024);
    let cases: [(Vec<u8>, &str); 3] = [
        (
            vec![b'x'; 64 * 1024 + 1],
            "AdmissionReview is larger than 65536 bytes\n",
        ),
        (
            b"{".to_vec(),
            "malformed AdmissionReview: EOF while parsing an object",
        ),
        (
            br#"{"apiVersion":"v1","kind":"Status"}"#.to_vec(),
            "expected an admission.k8s.io/v1 AdmissionReview, got \"v1\" \"Status\"\n",
        ),
    ];
    for (body, expected) in cases {
        let (status, text) = post(&router, "/mutate/pods", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.starts_with(expected), "{text}");
    }
    let (status, text) = post(&router, "/mutate/pods", pod_review()).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["response"]["uid"], "pod-1");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");

    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("malformed_reviews_total 3"), "{text}");
    assert!(
        text.contains("admissions_total{webhook=\"pod_injection\",result=\"patched\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("admission_duration_seconds_count{webhook=\"pod_injection\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_review_for_another_resource_is_refused_and_unknown_paths_are_404() {
    let (router, _) = app(64 * 1024);
    let (status, text) = post(&router, "/validate/certificaterequests", pod_review()).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("reviews certificaterequests"), "{message}");
    let (status, _) = post(&router, "/validate/pods", pod_review()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = router
        .clone()
        .oneshot(Request::get("/mutate/pods").body(Body::empty()).unwrap())
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn without_injection_the_pod_route_is_absent() {
    let app = Arc::new(App {
        authorizer: Nobody,
        limits: Limits::default(),
        injection: None,
        max_review_bytes: 64 * 1024,
        metrics: Metrics::default(),
    });
    let (status, _) = post(&router(app), "/mutate/pods", pod_review()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Hostile bytes never crash a handler: every answer is a 400 or an AdmissionReview.
    #[test]
    fn hostile_bodies_never_crash(body in proptest::collection::vec(any::<u8>(), 0..2048),
                                  path in proptest::sample::select(vec![
                                      "/mutate/certificaterequests",
                                      "/validate/certificaterequests",
                                      "/validate/certificaterequestpolicies",
                                      "/mutate/pods",
                                  ])) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (router, _) = app(64 * 1024);
        let (status, text) = runtime.block_on(post(&router, path, body));
        prop_assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::OK, "{status}");
        if status == StatusCode::OK {
            let answer: Value = serde_json::from_str(&text).unwrap();
            prop_assert!(answer["response"]["uid"].is_string());
        }
    }

    /// Reviews that are well-formed JSON but carry odd objects are answered, not crashed on.
    #[test]
    fn odd_objects_are_answered(object in arbitrary_json(),
                                old in arbitrary_json(),
                                operation in proptest::sample::select(vec!["CREATE", "UPDATE"]),
                                endpoint in proptest::sample::select(Endpoint::ALL.to_vec())) {
        let (group, resource) = endpoint.resource();
        let body = review_body(json!({
            "uid": "odd",
            "kind": {"group": group, "version": "v1", "kind": "X"},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "name": "x", "namespace": "demo", "operation": operation,
            "userInfo": {"username": "alice"},
            "object": object, "oldObject": old,
        }));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (router, _) = app(64 * 1024);
        let (status, _) = runtime.block_on(post(&router, endpoint.path(), body));
        prop_assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::OK, "{status}");
    }
}

/// JSON objects shaped loosely like Kubernetes objects, with surprises at every level.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z./ -]{0,12}".prop_map(Value::from),
        "[A-Za-z0-9+/=]{0,40}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(
                proptest::sample::select(vec![
                    "spec",
                    "status",
                    "metadata",
                    "request",
                    "usages",
                    "isCA",
                    "conditions",
                    "type",
                    "containers",
                    "volumes",
                    "volumeMounts",
                    "labels",
                    "annotations",
                    "name",
                    "username",
                    "groups",
                    "extra",
                    "selector",
                    "allowed",
                    "csi",
                ])
                .prop_map(str::to_owned),
                inner,
                0..5,
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    });
    value.prop_map(|v| match v {
        Value::Object(mut map) => {
            map.insert("apiVersion".into(), "v1".into());
            map.insert("kind".into(), "X".into());
            Value::Object(map)
        }
        other => other,
    })
}

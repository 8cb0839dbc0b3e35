//! Admission webhooks through the dev cluster, each against a test webhook on 127.0.0.1
//! with its own CA: what is sent where and when, patches, denials, failure policies,
//! timeouts, trust in the caBundle only, Services, and how the built-in requester stamp
//! composes with a mutating webhook.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestCa, TestWebhook, WebhookAnswer, allow, deny, patch, send_json};
use nico_dev_cluster::{DevCluster, DevClusterConfig, ServiceRef};
use serde_json::{Value, json};

const CRS: &str = "/apis/cert-manager.io/v1/namespaces/default/certificaterequests";
const MUTATING: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";
const VALIDATING: &str = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";
const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";

async fn cluster(stamp: bool) -> DevCluster {
    common::install_provider();
    DevCluster::start(DevClusterConfig {
        stamp_requester_identity: stamp,
        ..DevClusterConfig::default()
    })
    .await
    .expect("dev cluster starts")
}

fn cr(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": name, "labels": labels},
        "spec": {"request": "cmVx", "issuerRef": {"name": "i"}, "usages": ["client auth"]}})
}

struct Admin<'a>(&'a DevCluster);

impl Admin<'_> {
    async fn call(
        &self,
        method: &str,
        path: &str,
        ct: &str,
        body: Option<Value>,
    ) -> common::Answer {
        send_json(self.0, self.0.admin_token(), method, path, ct, body).await
    }

    async fn configure(&self, collection: &str, body: Value) {
        let a = self.call("POST", collection, JSON, Some(body)).await;
        assert_eq!(a.status, 201, "{}", a.text());
    }

    async fn create(&self, name: &str) -> common::Answer {
        self.call("POST", CRS, JSON, Some(cr(name, json!({}))))
            .await
    }
}

fn url_config(webhook: &TestWebhook, path: &str) -> Value {
    json!({"url": webhook.url(path), "caBundle": webhook.ca.ca_bundle()})
}

fn answering(f: fn(&str, &Value) -> WebhookAnswer) -> common::Responder {
    Arc::new(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_then_validating_with_the_review_kube_apiserver_sends() {
    let cluster = cluster(false).await;
    let admin = Admin(&cluster);
    let webhook = TestWebhook::start(answering(|path, review| match path {
        "/mutate" => patch(
            review,
            json!([{"op": "add", "path": "/metadata/annotations",
                    "value": {"mutated": "yes"}}]),
        ),
        _ => allow(review),
    }))
    .await;
    let mutating = common::webhook_configuration(
        "MutatingWebhookConfiguration",
        "m",
        "mutate.nico.test",
        url_config(&webhook, "/mutate"),
        json!({}),
    );
    admin.configure(MUTATING, mutating).await;
    let validating = common::webhook_configuration(
        "ValidatingWebhookConfiguration",
        "v",
        "validate.nico.test",
        url_config(&webhook, "/validate"),
        json!({"timeoutSeconds": 7}),
    );
    admin.configure(VALIDATING, validating).await;

    let created = admin.create("cr-1").await;
    assert_eq!(created.status, 201, "{}", created.text());
    let body = created.json();
    assert_eq!(body["metadata"]["annotations"]["mutated"], "yes");
    let managed = body["metadata"]["managedFields"].to_string();
    assert!(
        !managed.contains("mutated"),
        "webhook changes are nobody's: {managed}"
    );

    let received = webhook.received();
    let paths: Vec<&str> = received.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/mutate", "/validate"]);
    assert_eq!(
        received[0].query, "timeout=10s",
        "timeoutSeconds defaults to 10"
    );
    assert_eq!(received[1].query, "timeout=7s");
    let header = |i: usize, name: &str| {
        received[i]
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header(0, "user-agent").as_deref(),
        Some("kube-apiserver-admission")
    );
    assert_eq!(
        header(0, "accept").as_deref(),
        Some("application/json, */*")
    );
    assert_eq!(
        header(0, "content-type").as_deref(),
        Some("application/json")
    );
    let seen_by_mutating = &received[0].review["request"];
    assert_eq!(seen_by_mutating["operation"], "CREATE");
    assert_eq!(seen_by_mutating["name"], "cr-1");
    assert_eq!(seen_by_mutating["namespace"], "default");
    assert_eq!(seen_by_mutating["userInfo"]["username"], "nico-dev-admin");
    assert_eq!(seen_by_mutating["oldObject"], Value::Null);
    assert_eq!(seen_by_mutating["options"]["kind"], "CreateOptions");
    assert!(seen_by_mutating["object"]["metadata"].get("uid").is_none());
    let seen_by_validating = &received[1].review["request"];
    assert_eq!(
        seen_by_validating["object"]["metadata"]["annotations"]["mutated"],
        "yes"
    );
    assert_eq!(
        seen_by_validating["object"]["metadata"]["uid"],
        body["metadata"]["uid"]
    );
    assert!(
        seen_by_validating["object"]["metadata"]
            .get("resourceVersion")
            .is_none()
    );
    assert_ne!(seen_by_mutating["uid"], seen_by_validating["uid"]);
    webhook.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_carries_the_webhook_status_and_stores_nothing() {
    let cluster = cluster(false).await;
    let admin = Admin(&cluster);
    let webhook = TestWebhook::start(answering(|_, review| {
        common::answer(
            review,
            json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden",
                                                "message": "not today"}}),
        )
    }))
    .await;
    let config = common::webhook_configuration(
        "ValidatingWebhookConfiguration",
        "v",
        "validate.nico.test",
        url_config(&webhook, "/validate"),
        json!({}),
    );
    admin.configure(VALIDATING, config).await;
    let refused = admin.create("cr-1").await;
    assert_eq!(refused.status, 403);
    let status = refused.json();
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "admission webhook \"validate.nico.test\" denied the request: not today"
    );
    let gone = admin.call("GET", &format!("{CRS}/cr-1"), JSON, None).await;
    assert_eq!(gone.status, 404);
    webhook.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_selectors_decide_which_writes_are_sent() {
    let cluster = cluster(false).await;
    let admin = Admin(&cluster);
    let webhook = TestWebhook::start(answering(|_, review| allow(review))).await;
    let rule = |ops: Value, resources: Value, scope: &str| {
        json!({"rules": [{"operations": ops, "apiGroups": ["cert-manager.io"],
                          "apiVersions": ["v1"], "resources": resources, "scope": scope}]})
    };
    // One webhook per question; each answers on its own path so the log tells them apart.
    let cases = [
        (
            "/update-only",
            rule(json!(["UPDATE"]), json!(["certificaterequests"]), "*"),
        ),
        (
            "/create",
            rule(json!(["CREATE"]), json!(["certificaterequests"]), "*"),
        ),
        (
            "/status",
            rule(
                json!(["UPDATE"]),
                json!(["certificaterequests/status"]),
                "*",
            ),
        ),
        (
            "/cluster-scope",
            rule(json!(["*"]), json!(["certificaterequests"]), "Cluster"),
        ),
        (
            "/other-namespace",
            json!({"namespaceSelector": {"matchLabels":
                       {"kubernetes.io/metadata.name": "kube-system"}}}),
        ),
        (
            "/labelled",
            json!({"objectSelector": {"matchLabels": {"team": "identity"}}}),
        ),
    ];
    for (i, (path, extra)) in cases.iter().enumerate() {
        let config = common::webhook_configuration(
            "ValidatingWebhookConfiguration",
            &format!("v{i}"),
            &format!("w{i}.nico.test"),
            url_config(&webhook, path),
            extra.clone(),
        );
        admin.configure(VALIDATING, config).await;
    }
    let plain = admin.create("plain").await;
    assert_eq!(plain.status, 201, "{}", plain.text());
    let labelled = admin
        .call(
            "POST",
            CRS,
            JSON,
            Some(cr("labelled", json!({"team": "identity"}))),
        )
        .await;
    assert_eq!(labelled.status, 201);
    let status = json!({"status": {"conditions": [{"type": "Approved", "status": "True"}]}});
    let patched = admin
        .call("PATCH", &format!("{CRS}/plain/status"), MERGE, Some(status))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());

    let seen = |path: &str| -> Vec<(String, String)> {
        webhook
            .received()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| {
                let req = &r.review["request"];
                let op = req["operation"].as_str().unwrap_or("").to_owned();
                let sub = req["subResource"].as_str().unwrap_or("").to_owned();
                (format!("{}:{op}", req["name"].as_str().unwrap_or("")), sub)
            })
            .collect()
    };
    let s = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    assert_eq!(seen("/update-only"), s(&[]));
    assert_eq!(
        seen("/create"),
        s(&[("plain:CREATE", ""), ("labelled:CREATE", "")])
    );
    assert_eq!(seen("/status"), s(&[("plain:UPDATE", "status")]));
    assert_eq!(seen("/cluster-scope"), s(&[]));
    assert_eq!(seen("/other-namespace"), s(&[]));
    assert_eq!(seen("/labelled"), s(&[("labelled:CREATE", "")]));
    let status_review = webhook
        .received()
        .into_iter()
        .find(|r| r.path == "/status")
        .expect("a status review");
    let req = &status_review.review["request"];
    assert_eq!(req["requestSubResource"], "status");
    assert_eq!(req["options"]["kind"], "UpdateOptions");
    assert!(req["oldObject"].get("status").is_none());
    assert_eq!(req["object"]["status"]["conditions"][0]["type"], "Approved");
    webhook.stop().await;
    cluster.shutdown().await;
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_policies_decide_about_unreachable_webhooks() {
    let cluster = cluster(false).await;
    let admin = Admin(&cluster);
    let port = closed_port();
    let ca = TestCa::new(&["127.0.0.1"]);
    let config = |policy: &str| {
        common::webhook_configuration(
            "MutatingWebhookConfiguration",
            "down",
            "down.nico.test",
            json!({"url": format!("https://127.0.0.1:{port}/mutate"),
                   "caBundle": ca.ca_bundle()}),
            json!({"failurePolicy": policy}),
        )
    };
    admin.configure(MUTATING, config("Ignore")).await;
    let ignored = admin.create("ignored").await;
    assert_eq!(ignored.status, 201, "{}", ignored.text());
    let deleted = admin
        .call("DELETE", &format!("{MUTATING}/down"), JSON, None)
        .await;
    assert_eq!(deleted.status, 200);
    admin.configure(MUTATING, config("Fail")).await;
    let failed = admin.create("failed").await;
    assert_eq!(failed.status, 500);
    let status = failed.json();
    let cause = format!(
        "failed calling webhook \"down.nico.test\": failed to call webhook: Post \
         \"https://127.0.0.1:{port}/mutate?timeout=10s\": dial tcp 127.0.0.1:{port}: connect: \
         connection refused"
    );
    assert_eq!(status["reason"], "InternalError");
    assert_eq!(
        status["message"],
        format!("Internal error occurred: {cause}")
    );
    assert_eq!(status["details"]["causes"], json!([{"message": cause}]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_webhook_runs_out_of_time() {
    let cluster = cluster(false).await;
    let admin = Admin(&cluster);
    let webhook = TestWebhook::start(answering(|_, review| WebhookAnswer {
        delay: Duration::from_secs(4),
        ..allow(review)
    }))
    .await;
    let config = |policy: &str| {
        common::webhook_configuration(
            "ValidatingWebhookConfiguration",
            "slow",
            "slow.nico.test",
            url_config(&webhook, "/validate"),
            json!({"timeoutSeconds": 1, "failurePolicy": policy}),
        )
    };
    admin.configure(VALIDATING, config("Fail")).await;
    let failed = admin.create("late").await;
    assert_eq!(failed.status, 500, "{}", failed.text());
    assert!(
        failed.json()["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("?timeout=1s\": context deadline exceeded")),
        "{}",
        failed.text()
    );
    let deleted = admin
        .call("DELETE", &format!("{VALIDATING}/slow"), JSON, None)
        .await;
    assert_eq!(deleted.status, 200);
    admin.configure(VALIDATING, config("Ignore")).await;
    let passed = admin.create("late").await;
    assert_eq!(passed.status, 201, "{}", passed.text());
    webhook.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_ca_bundle_is_trusted() {
    let cluster = cluster(false).await;
    let admin = Admin(&cluster);
    let webhook = TestWebhook::start(answering(|_, review| allow(review))).await;
    let stranger = TestCa::new(&["127.0.0.1"]);
    let wrong_name = TestWebhook::start_for(&["localhost"], answering(|_, r| allow(r))).await;
    let cases = [
        (
            "other-ca",
            json!({"url": webhook.url("/v"), "caBundle": stranger.ca_bundle()}),
            "x509: certificate signed by unknown authority",
        ),
        (
            "no-bundle",
            json!({"url": webhook.url("/v")}),
            "x509: certificate signed by unknown authority",
        ),
        (
            "wrong-name",
            json!({"url": wrong_name.url("/v"), "caBundle": wrong_name.ca.ca_bundle()}),
            "tls: failed to verify certificate",
        ),
    ];
    for (name, client_config, want) in cases {
        let config = common::webhook_configuration(
            "ValidatingWebhookConfiguration",
            name,
            "trust.nico.test",
            client_config,
            json!({}),
        );
        admin.configure(VALIDATING, config).await;
        let refused = admin.create(&format!("cr-{name}")).await;
        assert_eq!(refused.status, 500, "{name}: {}", refused.text());
        assert!(refused.text().contains(want), "{name}: {}", refused.text());
        let path = format!("{VALIDATING}/{name}");
        assert_eq!(admin.call("DELETE", &path, JSON, None).await.status, 200);
    }
    assert!(
        webhook.received().is_empty() && wrong_name.received().is_empty(),
        "no review reaches an untrusted server"
    );
    webhook.stop().await;
    wrong_name.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_reached_through_their_routes() {
    let cluster = cluster(false).await;
    let admin = Admin(&cluster);
    // The certificate names the Service, as a webhook behind a Service has it.
    let webhook = TestWebhook::start_for(
        &["nico-webhook.nico.svc"],
        answering(|_, review| deny(review, "seen through the Service")),
    )
    .await;
    let config = common::webhook_configuration(
        "ValidatingWebhookConfiguration",
        "svc",
        "svc.nico.test",
        json!({"service": {"namespace": "nico", "name": "nico-webhook", "path": "/validate",
                           "port": 8443},
               "caBundle": webhook.ca.ca_bundle()}),
        json!({}),
    );
    admin.configure(VALIDATING, config).await;
    let unrouted = admin.create("unrouted").await;
    assert_eq!(unrouted.status, 500);
    assert!(
        unrouted
            .text()
            .contains("no endpoints available for service \\\"nico-webhook\\\""),
        "{}",
        unrouted.text()
    );
    cluster
        .route_service(ServiceRef::new("nico", "nico-webhook", 8443), webhook.addr)
        .expect("a loopback route");
    let denied = admin.create("routed").await;
    assert_eq!(denied.status, 400, "{}", denied.text());
    assert_eq!(
        denied.json()["message"],
        "admission webhook \"svc.nico.test\" denied the request: seen through the Service"
    );
    assert_eq!(webhook.received()[0].path, "/validate");
    let far = "10.0.0.1:443".parse().expect("address");
    assert!(
        cluster
            .route_service(ServiceRef::new("nico", "x", 443), far)
            .is_err()
    );
    webhook.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requester_stamp_runs_before_mutating_webhooks() {
    let cluster = cluster(true).await;
    let admin = Admin(&cluster);
    let webhook = TestWebhook::start(answering(|_, review| {
        // Copies the stamped username into an annotation: proof it saw the stamp.
        let username = review["request"]["object"]["spec"]["username"].clone();
        patch(
            review,
            json!([{"op": "add", "path": "/metadata/annotations",
                    "value": {"seen-username": username}}]),
        )
    }))
    .await;
    let config = common::webhook_configuration(
        "MutatingWebhookConfiguration",
        "m",
        "mutate.nico.test",
        url_config(&webhook, "/mutate"),
        json!({}),
    );
    admin.configure(MUTATING, config).await;
    let mut forged = cr("forged", json!({}));
    forged["spec"]["username"] = "system:admin".into();
    let created = admin.call("POST", CRS, JSON, Some(forged)).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let body = created.json();
    assert_eq!(body["spec"]["username"], "nico-dev-admin");
    assert_eq!(
        body["metadata"]["annotations"]["seen-username"],
        "nico-dev-admin"
    );
    webhook.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_reach_webhooks_that_ask_for_them() {
    let cluster = cluster(false).await;
    let admin = Admin(&cluster);
    let webhook = TestWebhook::start(answering(|_, review| match review["request"]["operation"]
        .as_str()
    {
        Some("DELETE") => deny(review, "keep it"),
        _ => allow(review),
    }))
    .await;
    let config = common::webhook_configuration(
        "ValidatingWebhookConfiguration",
        "keeper",
        "keeper.nico.test",
        url_config(&webhook, "/validate"),
        json!({"rules": [{"operations": ["DELETE"], "apiGroups": ["cert-manager.io"],
                          "apiVersions": ["v1"], "resources": ["certificaterequests"]}]}),
    );
    admin.configure(VALIDATING, config).await;
    assert_eq!(admin.create("kept").await.status, 201);
    let refused = admin
        .call("DELETE", &format!("{CRS}/kept"), JSON, None)
        .await;
    assert_eq!(refused.status, 400);
    let refused_all = admin.call("DELETE", CRS, JSON, None).await;
    assert_eq!(refused_all.status, 400);
    let still = admin.call("GET", &format!("{CRS}/kept"), JSON, None).await;
    assert_eq!(still.status, 200);
    let received = webhook.received();
    assert_eq!(received.len(), 2, "only deletes are sent");
    let req = &received[0].review["request"];
    assert_eq!(req["operation"], "DELETE");
    assert_eq!(req["object"], Value::Null);
    assert_eq!(req["oldObject"]["metadata"]["name"], "kept");
    assert_eq!(req["options"]["kind"], "DeleteOptions");
    // Webhook configurations never go through webhooks, so a bad one can be removed.
    let removed = admin
        .call("DELETE", &format!("{VALIDATING}/keeper"), JSON, None)
        .await;
    assert_eq!(removed.status, 200);
    webhook.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonsense_answers_fail_the_request() {
    let cluster = cluster(false).await;
    let admin = Admin(&cluster);
    let webhook = TestWebhook::start(answering(|path, review| match path {
        "/wrong-uid" => WebhookAnswer {
            body: json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                         "response": {"uid": "not-the-request", "allowed": true}}),
            ..allow(review)
        },
        "/bad-patch" => patch(review, json!([{"op": "remove", "path": "/spec/missing"}])),
        _ => WebhookAnswer {
            status: 500,
            ..allow(review)
        },
    }))
    .await;
    for (path, want) in [
        (
            "/wrong-uid",
            "received invalid webhook response: expected response.uid=",
        ),
        ("/bad-patch", "failed to apply the JSON patch of webhook"),
        ("/error", "the server responded with the status code 500"),
    ] {
        let name = path.trim_start_matches('/');
        let config = common::webhook_configuration(
            "MutatingWebhookConfiguration",
            name,
            "odd.nico.test",
            url_config(&webhook, path),
            json!({}),
        );
        admin.configure(MUTATING, config).await;
        let failed = admin.create(name).await;
        assert_eq!(failed.status, 500, "{path}: {}", failed.text());
        assert!(failed.text().contains(want), "{path}: {}", failed.text());
        let config_path = format!("{MUTATING}/{name}");
        assert_eq!(
            admin.call("DELETE", &config_path, JSON, None).await.status,
            200
        );
    }
    webhook.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configurations_are_refused_with_the_field_named() {
    let cluster = cluster(false).await;
    let admin = Admin(&cluster);
    let config = common::webhook_configuration(
        "ValidatingWebhookConfiguration",
        "bad",
        "two.parts",
        json!({"url": "http://127.0.0.1:1/x"}),
        json!({"timeoutSeconds": 60}),
    );
    let refused = admin.call("POST", VALIDATING, JSON, Some(config)).await;
    assert_eq!(refused.status, 422);
    let fields: Vec<String> = refused.json()["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["field"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        fields,
        [
            "webhooks[0].name",
            "webhooks[0].clientConfig.url",
            "webhooks[0].timeoutSeconds"
        ]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_webhook_adds_gets_its_defaults() {
    let cluster = cluster(false).await;
    let admin = Admin(&cluster);
    let webhook = TestWebhook::start(answering(|_, review| {
        patch(
            review,
            json!([{"op": "add", "path": "/spec/ports/-",
                    "value": {"name": "extra", "port": 8443}}]),
        )
    }))
    .await;
    let config = common::webhook_configuration(
        "MutatingWebhookConfiguration",
        "ports",
        "ports.nico.test",
        url_config(&webhook, "/mutate"),
        json!({"rules": [{"operations": ["CREATE"], "apiGroups": [""],
                          "apiVersions": ["v1"], "resources": ["services"]}]}),
    );
    admin.configure(MUTATING, config).await;
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "https", "port": 443}]}});
    let created = admin
        .call(
            "POST",
            "/api/v1/namespaces/default/services",
            JSON,
            Some(service),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let extra = &created.json()["spec"]["ports"][1];
    assert_eq!(extra["protocol"], "TCP");
    assert_eq!(extra["targetPort"], 8443);
    webhook.stop().await;
    cluster.shutdown().await;
}

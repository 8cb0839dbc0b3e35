//! The webhook end to end, in `nico-identity dev`: the dev cluster calls it over HTTPS
//! through its Service exactly as kube-apiserver would, trusting the caBundle it wrote.
//! Forged requesters, frozen specs, guarded approvals, every condition rule, CSRs that
//! disagree with their request, invalid policies, pod injection (snapshots, idempotence)
//! and a serving certificate rotated under load without one failed request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::core::Status;
use nico_identity_cli::dev::DevEnvironment;
use nico_identity_tests::requests::{TLS_USAGES, csr_pem, request, tls_csr};
use nico_identity_tests::{dev_environment, dev_environment_with, eventually};
use nico_runtime::BearerToken;
use rcgen::{ExtendedKeyUsagePurpose as Eku, KeyUsagePurpose as Ku};
use serde_json::{Value, json};

const NS: &str = "demo";
const CRS: &str = "/apis/cert-manager.io/v1/namespaces/demo/certificaterequests";
const POLICIES: &str = "/apis/policy.cert-manager.io/v1alpha1/certificaterequestpolicies";
const PODS: &str = "/api/v1/namespaces/demo/pods";
const MERGE: &str = "application/merge-patch+json";
const JSON: &str = "application/json";
/// A ClusterIssuer neither the dev approver nor the dev issuer acts for: its requests stay
/// as the test leaves them.
const OTHER: &str = "other";

/// Raw API calls, to see the API server's errors as they are.
struct Caller(kube::Client);

impl Caller {
    async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Value, Box<Status>> {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(serde_json::to_vec(body).unwrap())
            .unwrap();
        match self.0.request::<Value>(request).await {
            Ok(value) => Ok(value),
            Err(kube::Error::Api(status)) => Err(status),
            Err(other) => panic!("{method} {path}: {other}"),
        }
    }

    async fn create(&self, collection: &str, body: &Value) -> Result<Value, Box<Status>> {
        self.call("POST", collection, JSON, body).await
    }

    async fn merge(&self, path: &str, body: &Value) -> Result<Value, Box<Status>> {
        self.call("PATCH", path, MERGE, body).await
    }
}

/// The message of a refusal, after checking its code.
fn refused(result: Result<Value, Box<Status>>, code: u16) -> String {
    match result {
        Ok(value) => panic!("expected {code}, got {value}"),
        Err(status) => {
            assert_eq!(status.code, code, "{}", status.message);
            status.message
        }
    }
}

async fn admin(env: &DevEnvironment) -> Caller {
    let client = env.access.client().unwrap();
    let caller = Caller(client);
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    let _ = caller.create("/api/v1/namespaces", &namespace).await;
    caller
}

/// A service account in `demo` bound to `rules` there (and to `cluster_rules` cluster-wide),
/// and a client that is that account and nobody else.
async fn account(
    env: &DevEnvironment,
    name: &str,
    rules: Value,
    cluster_rules: Option<Value>,
) -> Caller {
    let admin = admin(env).await;
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}});
    admin
        .create("/api/v1/namespaces/demo/serviceaccounts", &sa)
        .await
        .unwrap();
    let subject = json!([{"kind": "ServiceAccount", "name": name, "namespace": NS}]);
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    let role = json!({"metadata": {"name": name}, "rules": rules});
    admin
        .create(&format!("{rbac}/namespaces/demo/roles"), &role)
        .await
        .unwrap();
    let binding = json!({"metadata": {"name": name}, "subjects": subject,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}});
    admin
        .create(&format!("{rbac}/namespaces/demo/rolebindings"), &binding)
        .await
        .unwrap();
    if let Some(rules) = cluster_rules {
        let role = json!({"metadata": {"name": name}, "rules": rules});
        admin
            .create(&format!("{rbac}/clusterroles"), &role)
            .await
            .unwrap();
        let binding = json!({"metadata": {"name": name}, "subjects": subject,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": name}});
        admin
            .create(&format!("{rbac}/clusterrolebindings"), &binding)
            .await
            .unwrap();
    }
    let token = Api::<ServiceAccount>::namespaced(env.access.client().unwrap(), NS)
        .create_token_request(name, &PostParams::default(), &Default::default())
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    Caller(
        env.access
            .client_with_token(&BearerToken::new(token))
            .unwrap(),
    )
}

fn create_requests() -> Value {
    json!([{"apiGroups": ["cert-manager.io"], "resources": ["certificaterequests"],
            "verbs": ["create", "get"]}])
}

fn write_status() -> Value {
    json!([{"apiGroups": ["cert-manager.io"], "resources": ["certificaterequests/status"],
            "verbs": ["get", "update", "patch"]}])
}

fn conditions(conditions: Value) -> Value {
    json!({"status": {"conditions": conditions}})
}

fn approved(reason: &str) -> Value {
    json!({"type": "Approved", "status": "True", "reason": reason, "message": "test"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_requester_is_overwritten_with_the_real_one() {
    let (env, _workdir) = dev_environment().await;
    let intruder = account(&env, "intruder", create_requests(), None).await;
    let mut forged = request("forged", OTHER, &tls_csr("web.demo.svc"));
    forged["spec"]["username"] = "system:serviceaccount:demo:web".into();
    forged["spec"]["uid"] = "0000".into();
    forged["spec"]["groups"] = json!(["system:masters"]);
    forged["spec"]["extra"] = json!({"authentication.kubernetes.io/pod-name": ["web-0"]});
    let stored = intruder.create(CRS, &forged).await.unwrap();
    let spec = &stored["spec"];
    assert_eq!(spec["username"], "system:serviceaccount:demo:intruder");
    assert_eq!(
        spec["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:demo",
            "system:authenticated"
        ])
    );
    assert_ne!(spec["uid"], "0000");
    let extra = spec["extra"].as_object().unwrap();
    let keys: Vec<&String> = extra.keys().collect();
    assert_eq!(
        keys,
        ["authentication.kubernetes.io/credential-id"],
        "{spec}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_and_cert_manager_annotations_are_frozen_after_create() {
    let (env, _workdir) = dev_environment().await;
    let admin = admin(&env).await;
    let mut cr = request("frozen", OTHER, &tls_csr("web.demo.svc"));
    cr["metadata"]["annotations"] = json!({"cert-manager.io/certificate-name": "web"});
    admin.create(CRS, &cr).await.unwrap();
    let path = format!("{CRS}/frozen");
    let cases = [
        (
            json!({"spec": {"duration": "720h"}}),
            "spec.duration: is immutable after create",
        ),
        (
            json!({"spec": {"username": "someone-else"}}),
            "spec.username: is immutable after create",
        ),
        (
            json!({"metadata": {"annotations": {"cert-manager.io/certificate-name": "db"}}}),
            "metadata.annotations[cert-manager.io/certificate-name]: cert-manager.io \
             annotations are immutable after create",
        ),
    ];
    for (patch, expected) in cases {
        let message = refused(admin.merge(&path, &patch).await, 422);
        assert_eq!(
            message,
            format!(
                "admission webhook \"certificaterequests.identity.nico.io\" denied the \
                 request: {expected}"
            )
        );
    }
    let labelled = json!({"metadata": {"labels": {"team": "web"},
                                       "annotations": {"example.com/note": "fine"}}});
    let stored = admin.merge(&path, &labelled).await.unwrap();
    assert_eq!(stored["metadata"]["labels"]["team"], "web");
    assert_eq!(stored["spec"]["duration"], "1h");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_those_who_may_approve_for_the_signer_can_approve_or_deny() {
    let (env, _workdir) = dev_environment().await;
    let admin = admin(&env).await;
    for name in ["cluster-issued", "namespace-issued"] {
        let mut cr = request(name, OTHER, &tls_csr("web.demo.svc"));
        if name == "namespace-issued" {
            cr["spec"]["issuerRef"] = json!({"name": "local-ca"});
        }
        admin.create(CRS, &cr).await.unwrap();
    }
    let meddler = account(&env, "meddler", write_status(), None).await;
    let signers = |names: &[&str]| {
        json!([{"apiGroups": ["cert-manager.io"], "resources": ["signers"],
                "verbs": ["approve"], "resourceNames": names}])
    };
    let cluster_reviewer = account(
        &env,
        "cluster-reviewer",
        write_status(),
        Some(signers(&["clusterissuers.cert-manager.io/other"])),
    )
    .await;
    let mut namespace_rules = write_status();
    namespace_rules.as_array_mut().unwrap().extend(
        signers(&["issuers.cert-manager.io/demo.local-ca"])
            .as_array()
            .cloned()
            .unwrap(),
    );
    let namespace_reviewer = account(&env, "namespace-reviewer", namespace_rules, None).await;

    let cluster_status = format!("{CRS}/cluster-issued/status");
    let namespace_status = format!("{CRS}/namespace-issued/status");
    let approve = conditions(json!([approved("Looked")]));
    let deny = conditions(json!([{"type": "Denied", "status": "True", "reason": "No"}]));
    for (path, body, issuer) in [
        (
            &cluster_status,
            &approve,
            "ClusterIssuer.cert-manager.io/other",
        ),
        (
            &cluster_status,
            &deny,
            "ClusterIssuer.cert-manager.io/other",
        ),
        (
            &namespace_status,
            &approve,
            "Issuer.cert-manager.io/local-ca",
        ),
    ] {
        let message = refused(meddler.merge(path, body).await, 403);
        assert!(
            message.contains(&format!(
                "status.conditions: user \"system:serviceaccount:demo:meddler\" may not \
                 approve or deny requests for {issuer}"
            )),
            "{message}"
        );
    }
    // Each reviewer may approve for its own issuer only.
    refused(
        namespace_reviewer.merge(&cluster_status, &approve).await,
        403,
    );
    refused(
        cluster_reviewer.merge(&namespace_status, &approve).await,
        403,
    );
    let stored = cluster_reviewer
        .merge(&cluster_status, &approve)
        .await
        .unwrap();
    assert_eq!(stored["status"]["conditions"][0]["type"], "Approved");
    let stored = namespace_reviewer
        .merge(&namespace_status, &deny)
        .await
        .unwrap();
    assert_eq!(stored["status"]["conditions"][0]["type"], "Denied");
    // Writing other conditions next to a decision needs no permission to approve.
    let ready = conditions(json!([approved("Looked"),
        {"type": "Ready", "status": "False", "reason": "Pending"}]));
    meddler.merge(&cluster_status, &ready).await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_condition_rule_holds_through_the_api() {
    let (env, _workdir) = dev_environment().await;
    let admin = admin(&env).await;
    admin
        .create(CRS, &request("ruled", OTHER, &tls_csr("web.demo.svc")))
        .await
        .unwrap();
    let path = format!("{CRS}/ruled/status");
    let denied = json!({"type": "Denied", "status": "True", "reason": "No"});
    let before = [
        (
            json!([approved("A"), denied.clone()]),
            "status.conditions: a request may not be both Approved and Denied",
        ),
        (
            json!([{"type": "Approved", "status": "False", "reason": "A"}]),
            "status.conditions[0].status: Approved may only be True, not \"False\"",
        ),
        (
            json!([{"type": "Denied", "status": "Unknown", "reason": "D"}]),
            "status.conditions[0].status: Denied may only be True, not \"Unknown\"",
        ),
        (
            json!([approved("A"), approved("A")]),
            "status.conditions: 2 Approved conditions: at most one is allowed",
        ),
    ];
    for (list, expected) in before {
        let message = refused(admin.merge(&path, &conditions(list)).await, 422);
        assert!(message.ends_with(expected), "{message}");
    }
    admin
        .merge(&path, &conditions(json!([approved("A")])))
        .await
        .unwrap();
    let after = [
        (
            json!([]),
            "status.conditions: the Approved condition may not be removed",
        ),
        (
            json!([approved("B")]),
            "status.conditions: the Approved condition may not be changed",
        ),
        (
            json!([approved("A"), denied]),
            "status.conditions: a request may not be both Approved and Denied",
        ),
    ];
    for (list, expected) in after {
        let message = refused(admin.merge(&path, &conditions(list)).await, 422);
        assert!(message.ends_with(expected), "{message}");
    }
    let ready = json!([approved("A"), {"type": "Ready", "status": "False", "reason": "Pending"}]);
    admin.merge(&path, &conditions(ready)).await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_that_disagrees_with_its_request_is_refused() {
    let (env, _workdir) = dev_environment().await;
    let admin = admin(&env).await;
    let server_only = csr_pem(
        "web.demo.svc",
        &[Ku::DigitalSignature, Ku::KeyEncipherment],
        &[Eku::ServerAuth],
        false,
    );
    let ca = csr_pem(
        "web.demo.svc",
        &[Ku::DigitalSignature, Ku::KeyEncipherment],
        &[Eku::ServerAuth, Eku::ClientAuth],
        true,
    );
    let cases = [
        (
            request("eku", OTHER, &server_only),
            "spec.usages: extended key usages [serverAuth, clientAuth] do not agree with the \
             CSR's [serverAuth]",
        ),
        (
            request("ca", OTHER, &ca),
            "spec.isCA: is false but the CSR's basic constraints ask for a CA certificate",
        ),
        (
            request(
                "garbage",
                OTHER,
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n",
            ),
            "spec.request: ",
        ),
    ];
    for (cr, expected) in cases {
        let message = refused(admin.create(CRS, &cr).await, 422);
        assert!(message.contains(expected), "{message}");
    }
    let mut fewer = request("fewer", OTHER, &server_only);
    fewer["spec"]["usages"] = json!(["digital signature", "key encipherment", "server auth"]);
    admin.create(CRS, &fewer).await.unwrap();
    assert_eq!(TLS_USAGES.len(), 4);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policies_are_refused_with_the_field_named() {
    let (env, _workdir) = dev_environment().await;
    let admin = admin(&env).await;
    let policy = |name: &str, spec: Value| {
        json!({"apiVersion": "policy.cert-manager.io/v1alpha1",
               "kind": "CertificateRequestPolicy", "metadata": {"name": name}, "spec": spec})
    };
    let cases = [
        (
            json!({"selector": {"issuerRef": {}},
                   "allowed": {"dnsNames": {"validations": [{"rule": "self.endsWith("}]}}}),
            "spec.allowed.dnsNames.validations[0].rule: ",
        ),
        (
            json!({"selector": {"issuerRef": {}},
                   "allowed": {"dnsNames": {"validations": [{"rule": "size(self)"}]}}}),
            "spec.allowed.dnsNames.validations[0].rule: must evaluate to a boolean",
        ),
        (
            json!({"selector": {"issuerRef": {}},
                   "constraints": {"minDuration": "48h", "maxDuration": "1h"}}),
            "spec.constraints.minDuration: is longer than spec.constraints.maxDuration",
        ),
        (
            json!({"selector": {"issuerRef": {}}, "constraints": {"maxDuration": "1 week"}}),
            "spec.constraints.maxDuration: ",
        ),
        (
            json!({"selector": {}}),
            "spec.selector: must define issuerRef or namespace",
        ),
        (
            json!({"selector": {"namespace": {"matchLabels": {"team": "a b"}}}}),
            "spec.selector.namespace.matchLabels[team]: is not a label value",
        ),
    ];
    for (i, (spec, expected)) in cases.into_iter().enumerate() {
        let message = refused(
            admin
                .create(POLICIES, &policy(&format!("bad-{i}"), spec))
                .await,
            422,
        );
        assert!(message.contains(expected), "{expected}: {message}");
        assert!(message.starts_with(
            "admission webhook \"certificaterequestpolicies.identity.nico.io\" denied"
        ));
    }
    let good = json!({"selector": {"issuerRef": {"name": "service-tls"}},
                      "allowed": {"dnsNames": {"values": ["*.svc"], "validations": [
                          {"rule": "self.endsWith('.demo.svc')", "message": "own namespace"}]}},
                      "constraints": {"minDuration": "1h", "maxDuration": "24h"}});
    admin.create(POLICIES, &policy("good", good)).await.unwrap();
    let broken = json!({"spec": {"constraints": {"minDuration": "48h"}}});
    let message = refused(admin.merge(&format!("{POLICIES}/good"), &broken).await, 422);
    assert!(
        message.contains("spec.constraints.minDuration"),
        "{message}"
    );
    env.stop().await;
}

/// What injection is about in a stored pod: volumes and each container's mounts.
fn injected_parts(pod: &Value) -> Value {
    let mounts = |list: &str| {
        pod["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| json!({"name": c["name"], "volumeMounts": c["volumeMounts"]}))
            .collect::<Vec<_>>()
    };
    json!({
        "volumes": pod["spec"]["volumes"],
        "initContainers": mounts("initContainers"),
        "containers": mounts("containers"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_pods_get_the_identity_volume_once() {
    let (env, _workdir) = dev_environment().await;
    let admin = admin(&env).await;
    let container = |name: &str| json!({"name": name, "image": "registry.k8s.io/pause:3.10"});
    let pod = |name: &str, labels: Value, spec: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "labels": labels}, "spec": spec})
    };
    let inject = json!({"identity.nico.io/inject": "true", "app": "web"});
    let spec = json!({
        "initContainers": [container("setup")],
        "containers": [container("app"), container("proxy")],
        "volumes": [{"name": "data", "emptyDir": {}}],
    });
    let first = admin
        .create(PODS, &pod("injected", inject.clone(), spec))
        .await
        .unwrap();
    let parts = injected_parts(&first);
    insta::assert_json_snapshot!("injected_pod", parts);

    // A pod that already carries what injection adds is stored as sent.
    let mut again = first["spec"].clone();
    for key in ["nodeName", "serviceAccountName"] {
        again.as_object_mut().unwrap().remove(key);
    }
    let second = admin
        .create(PODS, &pod("injected-again", inject.clone(), again))
        .await
        .unwrap();
    assert_eq!(injected_parts(&second), parts);

    let plain = admin
        .create(
            PODS,
            &pod(
                "plain",
                json!({"app": "web"}),
                json!({"containers": [container("app")]}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        injected_parts(&plain),
        json!({"volumes": null, "initContainers": [],
               "containers": [{"name": "app", "volumeMounts": null}]})
    );
    let clash = json!({"containers": [container("app")],
                       "volumes": [{"name": "spiffe", "emptyDir": {}}]});
    let message = refused(admin.create(PODS, &pod("clash", inject, clash)).await, 422);
    assert!(
        message.contains("spec.volumes: a volume named \"spiffe\" exists"),
        "{message}"
    );
    env.stop().await;
}

/// A TLS client that trusts `bundle_pem` and calls the webhook as its Service name.
fn client_config(bundle_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in nico_csr::pem_to_ders(bundle_pem.as_bytes()).unwrap() {
        roots.add(der.into()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("nico-identity-webhook.default.svc").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap()
}

fn pod_review(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("review-{i}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web", "namespace": NS, "operation": "CREATE",
            "userInfo": {"username": "load"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "web", "labels": {"identity.nico.io/inject": "true"}},
                       "spec": {"containers": [{"name": "app", "image": "x"}]}},
        },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_serving_certificate_under_load_drops_no_request() {
    // Renewed every two seconds.
    let (env, _workdir) =
        dev_environment_with(|o| o.config.webhook.serving_validity = "3s".into()).await;
    let admin = admin(&env).await;
    let addr = env.webhook.as_ref().unwrap().local_addr();
    let secret = Api::<Secret>::namespaced(env.access.client().unwrap(), "default")
        .get("nico-identity-webhook-ca")
        .await
        .unwrap();
    let bundle = String::from_utf8(secret.data.unwrap()["ca.crt"].0.clone()).unwrap();
    let tls = client_config(&bundle);
    let run_for = Duration::from_secs(8);
    let deadline = tokio::time::Instant::now() + run_for;
    let (through_api, direct) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));

    // Through the API server: every create calls the mutating and the validating webhook,
    // each over a new connection.
    let csr = tls_csr("web.demo.svc");
    let mut tasks = Vec::new();
    for worker in 0..3 {
        let (caller, csr) = (Caller(admin.0.clone()), csr.clone());
        let (count, failures) = (through_api.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while tokio::time::Instant::now() < deadline {
                let cr = request(&format!("load-{worker}-{i}"), OTHER, &csr);
                match caller.create(&format!("{CRS}?dryRun=All"), &cr).await {
                    Ok(stored) if stored["spec"]["username"] == "nico-dev-admin" => {}
                    Ok(stored) => failures
                        .lock()
                        .unwrap()
                        .push(format!("unstamped: {stored}")),
                    Err(status) => failures.lock().unwrap().push(status.message),
                }
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    // Straight to the webhook on one kept-alive connection, opened before any rotation.
    {
        let (tls, count, failures) = (tls.clone(), direct.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let stream = connect(addr, tls).await;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let mut i = 0;
            while tokio::time::Instant::now() < deadline {
                let request = http::Request::post("/mutate/pods")
                    .header("host", "nico-identity-webhook.default.svc")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(pod_review(i))))
                    .unwrap();
                match sender.send_request(request).await {
                    Ok(response) if response.status() == 200 => {
                        let body = response.into_body().collect().await.unwrap().to_bytes();
                        let answer: Value = serde_json::from_slice(&body).unwrap();
                        if answer["response"]["uid"] != format!("review-{i}") {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("wrong answer: {answer}"));
                        }
                    }
                    Ok(response) => failures
                        .lock()
                        .unwrap()
                        .push(format!("direct: HTTP {}", response.status())),
                    Err(error) => failures.lock().unwrap().push(format!("direct: {error}")),
                }
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    // New handshakes see each renewed certificate.
    let mut serials = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let stream = connect(addr, tls.clone()).await;
        let peer = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        let serial = nico_csr::parse_certificate(&peer)
            .unwrap()
            .serial_hex()
            .to_owned();
        if serials.last() != Some(&serial) {
            serials.push(serial);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let (through_api, direct) = (
        through_api.load(Ordering::Relaxed),
        direct.load(Ordering::Relaxed),
    );
    eprintln!(
        "{through_api} creates through the API server, {direct} direct reviews, {} serving \
         certificates",
        serials.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..5.min(failures.len())]
    );
    assert!(
        serials.len() >= 3,
        "only {} serving certificates seen",
        serials.len()
    );
    assert!(
        through_api >= 100 && direct >= 100,
        "{through_api} and {direct} requests"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_environment_waits_for_its_webhook() {
    let (env, _workdir) = dev_environment().await;
    let handle = env.webhook.as_ref().unwrap();
    assert!(handle.is_serving() && handle.is_installed());
    let (status, metrics) = nico_identity_tests::http_get(env.health, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("nico_identity_webhook_serving_certificate_renewals_total 1"),
        "{metrics}"
    );
    // Every role registers its own check; the webhook's passes once it serves.
    eventually("/readyz", Duration::from_secs(30), || async {
        let (status, _) = nico_identity_tests::http_get(env.health, "/readyz").await;
        (status == 200).then_some(())
    })
    .await;
    env.stop().await;
}

//! Replays every exchange recorded from a real kube-apiserver (`shared/testdata/kube-wire`)
//! against a dev cluster, in file order, and compares status codes, the headers that
//! matter and bodies: `Status` objects field by field (messages literally once the varying
//! numbers and uids are normalised), objects and lists by shape (same keys recursively,
//! same literal values where nothing varies), watches by event types and object shapes.
//!
//! Recorded uids and resourceVersions are bound to the dev cluster's as they first appear
//! and substituted into later requests, so one run reproduces the recording's story. Every
//! exchange is replayed and must pass.
//!
//! The admission webhook exchanges (14) run against a test webhook on 127.0.0.1 with its
//! own CA, answering as the recorded one did; the AdmissionReviews it receives are compared
//! with the recorded ones (14c-14f). The recording's admin authenticated with a client
//! certificate and this one with a token, so where a review carries the admin's userInfo
//! it is compared with the userInfo the dev cluster reports for its admin.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Answer, TestWebhook};
use nico_dev_cluster::{DevCluster, DevClusterConfig};
use serde_json::{Value, json};

/// How long the success cache lasts in the replay (kube-apiserver: 10 s), so that 16o sees
/// a just-deleted pod's token still accepted and 16p, after a wait, refused.
const TOKEN_CACHE: Duration = Duration::from_millis(1500);
/// Watches are cut to this (bookmark watches a little longer) to keep the suite quick.
const WATCH_CAP: u64 = 2;
const RECORDER_UA: &str = "kube-wire-recorder/0.1";

fn transcript_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/kube-wire"
    ))
}

/// Recorded value -> the dev cluster's value, for uids, resourceVersions, continue tokens.
#[derive(Debug, Default)]
struct Mapper {
    map: HashMap<String, String>,
}

impl Mapper {
    fn bind(&mut self, recorded: &str, actual: &str, errs: &mut Vec<String>, at: &str) {
        match self.map.get(recorded) {
            Some(bound) if bound != actual => {
                errs.push(format!(
                    "{at}: recorded {recorded} is {bound} here, got {actual}"
                ));
            }
            Some(_) => {}
            None => {
                self.map.insert(recorded.to_owned(), actual.to_owned());
            }
        }
    }

    fn substitute(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Some(actual) = self.map.get(s.as_str()) {
                    *s = actual.clone();
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.substitute(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.substitute(i)),
            _ => {}
        }
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Replaces uuids by `U` and runs of digits by `N`, for comparing messages.
fn normalise(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while !rest.is_empty() {
        if rest.len() >= 36 && is_uuid(&rest[..36]) {
            out.push('U');
            rest = &rest[36..];
            continue;
        }
        let mut chars = rest.chars();
        let c = chars.next().unwrap_or(' ');
        if c.is_ascii_digit() {
            let n = rest
                .find(|ch: char| !ch.is_ascii_digit())
                .unwrap_or(rest.len());
            out.push('N');
            rest = &rest[n..];
        } else {
            out.push(c);
            rest = chars.as_str();
        }
    }
    out
}

const TIME_KEYS: &[&str] = &[
    "creationTimestamp",
    "time",
    "deletionTimestamp",
    "expirationTimestamp",
];

/// Compares a recorded body with the dev cluster's, binding varying values.
fn compare(exp: &Value, act: &Value, at: &str, key: &str, m: &mut Mapper, errs: &mut Vec<String>) {
    match (exp, act) {
        (Value::String(e), Value::String(a)) if key == "resourceVersion" || key == "uid" => {
            m.bind(e, a, errs, at);
        }
        // A recorded value that stands for one of this run's (a webhook URL, a caBundle).
        (Value::String(e), Value::String(a)) if m.map.get(e) == Some(a) => {}
        (Value::String(_), Value::String(a)) if TIME_KEYS.contains(&key) => {
            if a.parse::<jiff::Timestamp>().is_err() {
                errs.push(format!("{at}: {a:?} is not a time"));
            }
        }
        (Value::String(e), Value::String(a)) if key == "continue" => {
            if e.is_empty() != a.is_empty() {
                errs.push(format!("{at}: continue {e:?} vs {a:?}"));
            } else if !e.is_empty() {
                m.bind(e, a, errs, at);
            }
        }
        (Value::String(e), Value::String(a)) if e == "<token>" => {
            if a.split('.').count() != 3 {
                errs.push(format!("{at}: not a JWT"));
            }
        }
        (Value::String(e), Value::String(a)) if is_uuid(e) => m.bind(e, a, errs, at),
        (Value::String(e), Value::String(a)) if e.starts_with("JTI=") => {
            if !a.starts_with("JTI=") {
                errs.push(format!("{at}: {a:?} is not a JTI credential id"));
            }
        }
        (Value::String(e), Value::String(a)) if key == "message" || key == "error" => {
            if normalise(e) != normalise(a) {
                errs.push(format!("{at}: message\n   recorded: {e}\n   dev:      {a}"));
            }
        }
        (Value::Object(e), Value::Object(a)) => {
            let ek: BTreeSet<&String> = e.keys().collect();
            let ak: BTreeSet<&String> = a.keys().collect();
            for missing in ek.difference(&ak) {
                errs.push(format!("{at}.{missing}: missing"));
            }
            for extra in ak.difference(&ek) {
                errs.push(format!("{at}.{extra}: unexpected"));
            }
            for (k, ev) in e {
                if let Some(av) = a.get(k) {
                    compare(ev, av, &format!("{at}.{k}"), k, m, errs);
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                errs.push(format!(
                    "{at}: {} items recorded, {} here",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                compare(ev, av, &format!("{at}[{i}]"), key, m, errs);
            }
        }
        (e, a) if e == a => {}
        (e, a) => errs.push(format!("{at}: recorded {e}, here {a}")),
    }
}

/// Method, path with query, headers and body of a request to send.
type RequestParts = (String, String, Vec<(&'static str, String)>, Option<Vec<u8>>);

struct Harness {
    cluster: DevCluster,
    map: Mapper,
    api_token: Option<String>,
    custom_token: Option<String>,
    /// The lowest resourceVersion seen in the recording; anything lower was compacted.
    oldest_recorded_rv: u64,
    /// The test webhook of the 14 exchanges, while it runs.
    webhook: Option<TestWebhook>,
    /// The admin's userInfo as the dev cluster reports it.
    admin_user: Value,
}

fn rv_of(v: &Value) -> String {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

impl Harness {
    async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        common::send(&self.cluster, method, path_and_query, headers, body).await
    }

    /// A request as the admin with the recorder's User-Agent.
    async fn admin(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<Value>,
    ) -> Answer {
        let headers = vec![
            (
                "authorization",
                format!("Bearer {}", self.cluster.admin_token()),
            ),
            ("user-agent", RECORDER_UA.to_owned()),
            ("content-type", content_type.to_owned()),
            ("accept", "application/json".to_owned()),
        ];
        self.send(
            method,
            path,
            &headers,
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
    }

    fn token_for(&self, auth: &str) -> Option<String> {
        if auth.starts_with("x509") {
            Some(self.cluster.admin_token().to_owned())
        } else if auth.contains("invalid bearer token") {
            Some("eyJhbGciOiJFUzI1NiJ9.e30.invalid".to_owned())
        } else if auth.contains("pod-bound ServiceAccount token") {
            self.api_token.clone()
        } else {
            None
        }
    }

    /// Builds the request of an exchange, with recorded values substituted.
    fn request_parts(&self, ex: &Value) -> RequestParts {
        let req = &ex["request"];
        let method = req["method"].as_str().unwrap_or("GET").to_owned();
        let mut query: Vec<(String, String)> = Vec::new();
        for (k, v) in req["query"].as_object().into_iter().flatten() {
            let mut v = v.clone();
            self.map.substitute(&mut v);
            let mut text = v.as_str().unwrap_or("").to_owned();
            if k == "resourceVersion"
                && text != "0"
                && !self.map.map.values().any(|x| *x == text)
                && text
                    .parse::<u64>()
                    .is_ok_and(|n| n < self.oldest_recorded_rv)
            {
                // Compacted on the recording server: ask for a revision compacted here.
                text = "1".to_owned();
            }
            query.push((k.clone(), text));
        }
        let mut path = req["path"].as_str().unwrap_or("/").to_owned();
        if !query.is_empty() {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", encode(v)))
                .collect();
            path = format!("{path}?{}", q.join("&"));
        }
        let mut headers: Vec<(&'static str, String)> = Vec::new();
        for (k, v) in req["headers"].as_object().into_iter().flatten() {
            let v = v.as_str().unwrap_or("").to_owned();
            match k.as_str() {
                "Accept" => headers.push(("accept", v)),
                "Content-Type" => headers.push(("content-type", v)),
                "User-Agent" => headers.push(("user-agent", v)),
                _ => {}
            }
        }
        if let Some(token) = self.token_for(req["auth"].as_str().unwrap_or("")) {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        let body = match &req["body"] {
            Value::Null => None,
            Value::String(raw) => Some(raw.clone().into_bytes()),
            other => {
                let mut b = other.clone();
                self.map.substitute(&mut b);
                self.fill_review_token(ex, &mut b);
                Some(b.to_string().into_bytes())
            }
        };
        (method, path, headers, body)
    }

    /// TokenReviews carry `<token>`: the custom-audience token when the review is for that
    /// audience and succeeded, else the API-audience one.
    fn fill_review_token(&self, ex: &Value, body: &mut Value) {
        if body.pointer("/spec/token").and_then(Value::as_str) != Some("<token>") {
            return;
        }
        let for_custom = body.pointer("/spec/audiences") == Some(&json!(["kube-wire-test"]))
            && ex.pointer("/response/body/status/authenticated") == Some(&json!(true));
        let token = if for_custom {
            &self.custom_token
        } else {
            &self.api_token
        };
        body["spec"]["token"] = json!(token.clone().unwrap_or_default());
    }
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

const STD_SPEC: &str = r#"{
  "request":"LS0tLS1CRUdJTi...<redacted base64 of a PEM CERTIFICATE REQUEST, 572 chars>",
  "issuerRef":{"name":"my-issuer","kind":"ClusterIssuer","group":"cert-manager.io"},
  "usages":["digital signature","key encipherment","client auth","server auth"],
  "duration":"1h","isCA":false}"#;

fn cr_body(name: &str, ns: &str, finalizers: &[&str]) -> Value {
    let mut body = json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": ns, "labels": {"kube-wire.test/set": "golden"}},
        "spec": serde_json::from_str::<Value>(STD_SPEC).unwrap_or_default()});
    if !finalizers.is_empty() {
        body["metadata"]["finalizers"] = json!(finalizers);
    }
    body
}

fn crs_path(ns: &str) -> String {
    format!("/apis/cert-manager.io/v1/namespaces/{ns}/certificaterequests")
}

const MERGE: &str = "application/merge-patch+json";
const JSON: &str = "application/json";

/// Brings the cluster to the state the exchange `id` implies but the recording does not show.
async fn setup(h: &mut Harness, id: &str, ex: &Value) -> Result<(), String> {
    let expect = |a: &Answer, code: u16, what: &str| {
        if a.status == code {
            Ok(())
        } else {
            Err(format!(
                "setup {what}: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            ))
        }
    };
    match id {
        "01a" => {
            for ns in ["kube-wire", "kube-wire-2"] {
                let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
                    "labels": {"kube-wire.test/skip-identity-map": "true"}}});
                let a = h
                    .admin("POST", "/api/v1/namespaces", JSON, Some(body))
                    .await;
                expect(&a, 201, "namespace")?;
            }
        }
        "03a" => {
            let a = h
                .admin(
                    "POST",
                    &crs_path("kube-wire-2"),
                    JSON,
                    Some(cr_body("cr-other-ns", "kube-wire-2", &[])),
                )
                .await;
            expect(&a, 201, "cr-other-ns")?;
            let patch = json!({"metadata": {"labels": {"kube-wire.test/touched": "1"}}});
            let a = h
                .admin(
                    "PATCH",
                    &format!("{}/cr-1", crs_path("kube-wire")),
                    MERGE,
                    Some(patch),
                )
                .await;
            expect(&a, 200, "touch cr-1")?;
            let mut errs = Vec::new();
            let recorded = ex["side_requests"][0]["resourceVersion"]
                .as_str()
                .unwrap_or("");
            h.map
                .bind(recorded, &rv_of(&a.json()), &mut errs, "03a side request");
            if !errs.is_empty() {
                return Err(errs.join("; "));
            }
        }
        "06c" => {
            let a = h
                .admin(
                    "DELETE",
                    &format!("{}/watch-bm", crs_path("kube-wire")),
                    JSON,
                    None,
                )
                .await;
            expect(&a, 200, "delete watch-bm")?;
        }
        "07a" => {
            let a = h
                .admin(
                    "POST",
                    &crs_path("kube-wire"),
                    JSON,
                    Some(cr_body("cr-status", "kube-wire", &[])),
                )
                .await;
            expect(&a, 201, "cr-status")?;
            // 07l watches from this create's resourceVersion.
            h.map.map.insert("45659".into(), rv_of(&a.json()));
        }
        "08b" => {
            let body =
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "kube-wire-node"}});
            let a = h.admin("POST", "/api/v1/nodes", JSON, Some(body)).await;
            expect(&a, 201, "node")?;
        }
        "10b" => {
            // The ClusterRole and binding the recorder created between 10a and 10b.
            let rbac = &ex["rbac_objects"];
            let role = json!({"apiVersion": RBAC_V1, "kind": "ClusterRole",
                "metadata": {"name": "kube-wire-approver"},
                "rules": rbac["clusterRole_rules"]});
            let a = h
                .admin(
                    "POST",
                    &format!("{RBAC_PATH}/clusterroles"),
                    JSON,
                    Some(role),
                )
                .await;
            expect(&a, 201, "clusterrole")?;
            let mut binding = rbac["clusterRoleBinding"].clone();
            binding["apiVersion"] = RBAC_V1.into();
            binding["kind"] = "ClusterRoleBinding".into();
            binding["metadata"] = json!({"name": "kube-wire-approver"});
            let a = h
                .admin(
                    "POST",
                    &format!("{RBAC_PATH}/clusterrolebindings"),
                    JSON,
                    Some(binding),
                )
                .await;
            expect(&a, 201, "clusterrolebinding")?;
        }
        "11b" => {
            // 11b's notes: Role cr-creator bound to the ServiceAccount.
            let role = json!({"apiVersion": RBAC_V1, "kind": "Role",
                "metadata": {"name": "cr-creator", "namespace": "kube-wire"},
                "rules": [{"apiGroups": ["cert-manager.io"], "resources": ["certificaterequests"],
                           "verbs": ["create", "get", "list", "watch", "delete"]}]});
            let roles = format!("{RBAC_PATH}/namespaces/kube-wire/roles");
            let a = h.admin("POST", &roles, JSON, Some(role)).await;
            expect(&a, 201, "role")?;
            let binding = json!({"apiVersion": RBAC_V1, "kind": "RoleBinding",
                "metadata": {"name": "cr-creator", "namespace": "kube-wire"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": "cr-creator"},
                "subjects": [{"kind": "ServiceAccount", "name": "app",
                              "namespace": "kube-wire"}]});
            let bindings = format!("{RBAC_PATH}/namespaces/kube-wire/rolebindings");
            let a = h.admin("POST", &bindings, JSON, Some(binding)).await;
            expect(&a, 201, "rolebinding")?;
        }
        "14a" => {
            let webhook = TestWebhook::start(recorded_webhook()).await;
            // What the recording redacted or ran on another port stands for ours.
            let hook = &ex["request"]["body"]["webhooks"][0]["clientConfig"];
            let recorded_url = hook["url"].as_str().unwrap_or("");
            let recorded_bundle = hook["caBundle"].as_str().unwrap_or("");
            h.map
                .map
                .insert(recorded_url.to_owned(), webhook.url("/mutate"));
            h.map
                .map
                .insert(recorded_bundle.to_owned(), webhook.ca.ca_bundle());
            // The validating webhook of 14d, 14f and 14h, which the recording does not show
            // being configured: the same rules, on /validate.
            let mut validating = ex["request"]["body"].clone();
            validating["kind"] = "ValidatingWebhookConfiguration".into();
            validating["metadata"] = json!({"name": "kube-wire-validator"});
            let w = &mut validating["webhooks"][0];
            w["name"] = "validate.kube-wire.test".into();
            w["clientConfig"] = json!({"url": webhook.url("/validate"),
                                       "caBundle": webhook.ca.ca_bundle()});
            if let Some(w) = w.as_object_mut() {
                w.remove("reinvocationPolicy");
            }
            let a = h
                .admin("POST", WEBHOOKS_VALIDATING, JSON, Some(validating))
                .await;
            expect(&a, 201, "validating webhook configuration")?;
            h.webhook = Some(webhook);
        }
        "14j" => {
            // The webhook server is down.
            if let Some(webhook) = h.webhook.take() {
                webhook.stop().await;
            }
        }
        "16a" => {
            let crs = crs_path("kube-wire");
            for (name, fins) in [
                ("del-bg", &[][..]),
                ("del-fg", &[]),
                ("del-orphan", &[]),
                ("del-fin", &["kube-wire.test/hold"]),
                ("del-od", &["kube-wire.test/hold"]),
                ("del-pre", &[]),
                ("del-uid", &[]),
            ] {
                let a = h
                    .admin("POST", &crs, JSON, Some(cr_body(name, "kube-wire", fins)))
                    .await;
                expect(&a, 201, name)?;
                let created = a.json();
                let uid = created
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match name {
                    "del-pre" => {
                        h.map.map.insert("45694".into(), rv_of(&created));
                    }
                    "del-uid" => {
                        h.map.map.insert("45695".into(), rv_of(&created));
                        h.map
                            .map
                            .insert("e70b95e1-21b2-42ac-a281-7895adf9b6f2".into(), uid.into());
                    }
                    _ => {}
                }
            }
            let patch = json!({"metadata": {"labels": {"kube-wire.test/moved": "1"}}});
            let a = h
                .admin("PATCH", &format!("{crs}/del-pre"), MERGE, Some(patch))
                .await;
            expect(&a, 200, "move del-pre on")?;
        }
        "16p" => tokio::time::sleep(TOKEN_CACHE + Duration::from_millis(200)).await,
        _ => {}
    }
    Ok(())
}

const RBAC_V1: &str = "rbac.authorization.k8s.io/v1";
const RBAC_PATH: &str = "/apis/rbac.authorization.k8s.io/v1";
const WEBHOOKS_MUTATING: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";
const WEBHOOKS_VALIDATING: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";

/// Undoes what an exchange left that later exchanges did not see in the recording.
async fn teardown(h: &mut Harness, id: &str) -> Result<(), String> {
    if id == "14j" {
        // The recorder removed its webhooks before going on.
        for path in [
            format!("{WEBHOOKS_MUTATING}/kube-wire-mutator"),
            format!("{WEBHOOKS_VALIDATING}/kube-wire-validator"),
        ] {
            let a = h.admin("DELETE", &path, JSON, None).await;
            if a.status != 200 {
                return Err(format!("teardown {path}: {}", a.status));
            }
        }
    }
    Ok(())
}

/// Answers as the recorded webhook did: the mutating one stamps the requester into the
/// spec on create (14c's decoded_patch); the validating one denies objects carrying the
/// `kube-wire.test/deny` annotation (14h) and allows the rest.
fn recorded_webhook() -> common::Responder {
    Arc::new(|path: &str, review: &Value| {
        let request = &review["request"];
        match (path, request["operation"].as_str()) {
            ("/mutate", Some("CREATE")) => {
                let user = &request["userInfo"];
                common::patch(
                    review,
                    json!([
                        {"op": "add", "path": "/spec/username", "value": user["username"]},
                        {"op": "add", "path": "/spec/uid", "value": user["uid"]},
                        {"op": "add", "path": "/spec/groups", "value": user["groups"]},
                        {"op": "add", "path": "/spec/extra", "value": user["extra"]},
                    ]),
                )
            }
            ("/validate", _) => {
                let why = request
                    .pointer("/object/metadata/annotations/kube-wire.test~1deny")
                    .and_then(Value::as_str);
                match why {
                    Some(why) => common::deny(review, &format!("kube-wire test webhook: {why}")),
                    None => common::allow(review),
                }
            }
            _ => common::allow(review),
        }
    })
}

/// Compares an AdmissionReview the test webhook received with the recorded one.
fn replay_review(h: &mut Harness, ex: &Value) -> Vec<String> {
    let want = &ex["request"];
    let path = want["path"].as_str().unwrap_or("");
    let request = &want["body"]["request"];
    let Some(webhook) = &h.webhook else {
        return vec!["the test webhook is not running".into()];
    };
    let got = webhook.received().into_iter().find(|r| {
        let g = &r.review["request"];
        r.path == path
            && g["operation"] == request["operation"]
            && g.get("subResource") == request.get("subResource")
            && g["name"] == request["name"]
    });
    let Some(got) = got else {
        return vec![format!(
            "the webhook received no {} review of {} on {path}",
            request["operation"], request["name"]
        )];
    };
    let mut errs = Vec::new();
    if Some(got.query.as_str()) != want["query"].as_str() {
        errs.push(format!(
            "query: recorded {}, here {:?}",
            want["query"], got.query
        ));
    }
    for (recorded, here) in [
        ("User-Agent", http::header::USER_AGENT),
        ("Accept", http::header::ACCEPT),
        ("Content-Type", http::header::CONTENT_TYPE),
    ] {
        let have = got.headers.get(&here).and_then(|v| v.to_str().ok());
        if have != want["headers"][recorded].as_str() {
            errs.push(format!(
                "header {recorded}: recorded {}, here {have:?}",
                want["headers"][recorded]
            ));
        }
    }
    let host = got
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok());
    if host != Some(webhook.addr.to_string().as_str()) {
        errs.push(format!("header Host: {host:?}"));
    }
    let mut expected = want["body"].clone();
    if request["userInfo"]["username"] == "realk8s-admin" {
        expected["request"]["userInfo"] = h.admin_user.clone();
    }
    compare(&expected, &got.review, "review", "", &mut h.map, &mut errs);
    errs
}

/// The writes a watch exchange saw, rebuilt from its events.
async fn watch_side_requests(h: &Harness, id: &str, ex: &Value) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let crs = crs_path("kube-wire");
    let events = ex["response"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let check = |a: Answer, code: u16| {
        if a.status == code {
            Ok(())
        } else {
            Err(format!("side request answered {}", a.status))
        }
    };
    match id {
        "06a" => {
            check(
                h.admin(
                    "POST",
                    &crs,
                    JSON,
                    Some(cr_body("watch-me", "kube-wire", &[])),
                )
                .await,
                201,
            )?;
            let status = json!({"status": events[1]["object"]["status"].clone()});
            check(
                h.admin(
                    "PATCH",
                    &format!("{crs}/watch-me/status"),
                    MERGE,
                    Some(status),
                )
                .await,
                200,
            )?;
            check(
                h.admin("DELETE", &format!("{crs}/watch-me"), JSON, None)
                    .await,
                200,
            )?;
        }
        "06b" => check(
            h.admin(
                "POST",
                &crs,
                JSON,
                Some(cr_body("watch-bm", "kube-wire", &[])),
            )
            .await,
            201,
        )?,
        _ => {}
    }
    Ok(())
}

fn check_headers(exp: &Value, a: &Answer, errs: &mut Vec<String>) {
    let get = |k: &str| a.headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    for k in ["Content-Type", "Cache-Control"] {
        if let Some(want) = exp[k].as_str()
            && get(k) != want
        {
            errs.push(format!("header {k}: recorded {want:?}, here {:?}", get(k)));
        }
    }
    for k in [
        "Audit-Id",
        "X-Kubernetes-Pf-Flowschema-Uid",
        "X-Kubernetes-Pf-Prioritylevel-Uid",
    ] {
        if !is_uuid(get(k)) {
            errs.push(format!("header {k} missing"));
        }
    }
}

async fn replay_plain(h: &mut Harness, id: &str, ex: &Value) -> Vec<String> {
    let (method, path, headers, body) = h.request_parts(ex);
    let a = h.send(&method, &path, &headers, body).await;
    let resp = &ex["response"];
    let mut errs = Vec::new();
    let want = resp["status"].as_u64().unwrap_or(0) as u16;
    if a.status != want {
        errs.push(format!(
            "status: recorded {want}, here {} ({})",
            a.status,
            String::from_utf8_lossy(&a.body)
        ));
        return errs;
    }
    if id == "15d" {
        // Aggregated discovery is answered in the legacy form on purpose, so clients fall back.
        let got = a.json();
        if got["kind"] != "APIGroupList"
            || a.headers.get("content-type").map(|v| v.as_bytes()) != Some(b"application/json")
        {
            errs.push("aggregated discovery must fall back to a plain APIGroupList".into());
        }
        return errs;
    }
    check_headers(&resp["headers"], &a, &mut errs);
    let ends = a.body.last() == Some(&b'\n');
    if resp["body_ends_with_newline"].as_bool() != Some(ends) {
        errs.push(format!(
            "trailing newline: recorded {}, here {ends}",
            resp["body_ends_with_newline"]
        ));
    }
    let got = a.json();
    match id {
        "15a" | "15b" => compare_resource_list(&resp["body"], &got, &mut h.map, &mut errs),
        "15c" => compare_group_list(&resp["body"], &got, &mut errs),
        "15e" => {
            let keys = |v: &Value| {
                v.as_object()
                    .map(|m| m.keys().cloned().collect::<BTreeSet<_>>())
            };
            if keys(&resp["body"]) != keys(&got) {
                errs.push("version info keys differ".into());
            }
            if !String::from_utf8_lossy(&a.body).contains("\n  \"") {
                errs.push("/version is not pretty-printed".into());
            }
        }
        _ => compare(&resp["body"], &got, "body", "", &mut h.map, &mut errs),
    }
    if let Some(after) = ex.get("verify_get_after") {
        let name = got
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let p = format!("{}/{name}", ex["request"]["path"].as_str().unwrap_or(""));
        let check = h.admin("GET", &p, JSON, None).await;
        if Some(u64::from(check.status)) != after["status"].as_u64() {
            errs.push(format!("GET after answered {}", check.status));
        }
    }
    // Remember tokens for the exchanges that use them.
    if let Some(token) = got.pointer("/status/token").and_then(Value::as_str) {
        if got.pointer("/spec/audiences") == Some(&json!(["kube-wire-test"])) {
            h.custom_token = Some(token.to_owned());
        } else {
            h.api_token = Some(token.to_owned());
        }
    }
    errs
}

fn compare_resource_list(exp: &Value, got: &Value, m: &mut Mapper, errs: &mut Vec<String>) {
    let by_name = |v: &Value| -> BTreeMap<String, Value> {
        v["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (r["name"].as_str().unwrap_or("").to_owned(), r.clone()))
            .collect()
    };
    let (want, have) = (by_name(exp), by_name(got));
    for (name, entry) in &want {
        match have.get(name) {
            Some(mine) => compare(entry, mine, &format!("resources[{name}]"), "", m, errs),
            // Subresources the dev cluster does not serve (exec, log, proxy, ...) are absent.
            None if name.contains('/') => {}
            None => errs.push(format!("resource {name} missing")),
        }
    }
    for key in ["kind", "groupVersion", "apiVersion"] {
        if exp.get(key) != got.get(key) {
            errs.push(format!(
                "{key}: recorded {:?}, here {:?}",
                exp.get(key),
                got.get(key)
            ));
        }
    }
}

fn compare_group_list(exp: &Value, got: &Value, errs: &mut Vec<String>) {
    let groups = |v: &Value| -> BTreeMap<String, Value> {
        v["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| (g["name"].as_str().unwrap_or("").to_owned(), g.clone()))
            .collect()
    };
    let (want, have) = (groups(exp), groups(got));
    for (name, entry) in &want {
        match have.get(name) {
            Some(mine) if mine == entry => {}
            Some(mine) => errs.push(format!("group {name}: recorded {entry}, here {mine}")),
            None => errs.push(format!("group {name} missing")),
        }
    }
}

/// Reads a watch answer to its end: the status, the headers and the lines.
async fn read_watch(
    h: &Harness,
    path: &str,
    headers: &[(&'static str, String)],
) -> Result<(Answer, Vec<Value>, bool), String> {
    let a = tokio::time::timeout(Duration::from_secs(20), h.send("GET", path, headers, None))
        .await
        .map_err(|_| "the watch did not end".to_owned())?;
    let text = String::from_utf8_lossy(&a.body).into_owned();
    let lines_ok = text.is_empty() || text.ends_with('\n');
    let events = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect();
    Ok((a, events, lines_ok))
}

async fn replay_watch(h: &mut Harness, id: &str, ex: &Value) -> Vec<String> {
    let (_, mut path, headers, _) = h.request_parts(ex);
    let cap = if ex["request"]["query"]["allowWatchBookmarks"] == "true" {
        WATCH_CAP + 1
    } else {
        WATCH_CAP
    };
    if let Some(pos) = path.find("timeoutSeconds=") {
        let end = path[pos..].find('&').map(|e| pos + e).unwrap_or(path.len());
        path.replace_range(pos..end, &format!("timeoutSeconds={cap}"));
    }
    let (watched, side) = tokio::join!(
        read_watch(h, &path, &headers),
        watch_side_requests(h, id, ex)
    );
    let mut errs = Vec::new();
    if let Err(e) = side {
        errs.push(e);
    }
    let (a, events, lines_ok) = match watched {
        Ok(w) => w,
        Err(e) => return vec![e],
    };
    let resp = &ex["response"];
    if u64::from(a.status) != resp["status"].as_u64().unwrap_or(0) {
        errs.push(format!("status {}", a.status));
    }
    check_headers(&resp["headers"], &a, &mut errs);
    if a.headers.get("content-length").is_some() {
        errs.push("a watch must be chunked".into());
    }
    if !lines_ok {
        errs.push("events must be lines ending in a newline".into());
    }
    // Bookmarks are best-effort: a run of them counts as one.
    let collapse = |evs: Vec<Value>| -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        for e in evs {
            if e["type"] == "BOOKMARK" && out.last().is_some_and(|l| l["type"] == "BOOKMARK") {
                continue;
            }
            out.push(e);
        }
        out
    };
    let want = collapse(resp["events"].as_array().cloned().unwrap_or_default());
    let have = collapse(events);
    let types = |v: &[Value]| {
        v.iter()
            .map(|e| e["type"].as_str().unwrap_or("?").to_owned())
            .collect::<Vec<_>>()
    };
    if types(&want) != types(&have) {
        errs.push(format!(
            "event types: recorded {:?}, here {:?}",
            types(&want),
            types(&have)
        ));
        return errs;
    }
    for (i, (e, g)) in want.iter().zip(&have).enumerate() {
        if e["type"] == "BOOKMARK" {
            let mut e = e.clone();
            let mut g = g.clone();
            for v in [&mut e, &mut g] {
                if let Some(meta) = v
                    .pointer_mut("/object/metadata")
                    .and_then(Value::as_object_mut)
                {
                    meta.remove("resourceVersion");
                }
            }
            compare(&e, &g, &format!("event[{i}]"), "", &mut h.map, &mut errs);
        } else {
            compare(e, g, &format!("event[{i}]"), "", &mut h.map, &mut errs);
        }
    }
    errs
}

fn lowest_rv(v: &Value, low: &mut u64) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                if k == "resourceVersion"
                    && let Some(n) = x.as_str().and_then(|s| s.parse::<u64>().ok())
                    && n > 1000
                {
                    *low = (*low).min(n);
                }
                lowest_rv(x, low);
            }
        }
        Value::Array(items) => items.iter().for_each(|x| lowest_rv(x, low)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_wire_transcripts() {
    common::install_provider();
    let mut files: Vec<PathBuf> = std::fs::read_dir(transcript_dir())
        .expect("the kube-wire transcripts are beside the repository")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 111, "every recorded exchange is replayed");

    let mut exchanges: Vec<(String, String, Value)> = files
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(p).expect("readable transcript");
            let value: Value = serde_json::from_str(&text).expect("transcript is JSON");
            (name[..3].to_owned(), name, value)
        })
        .collect();
    // 14e and 14f are what the webhooks saw during 14g: replay 14g first.
    if let (Some(g), Some(e)) = (
        exchanges.iter().position(|x| x.0 == "14g"),
        exchanges.iter().position(|x| x.0 == "14e"),
    ) {
        let moved = exchanges.remove(g);
        exchanges.insert(e, moved);
    }
    let mut oldest = u64::MAX;
    for (_, _, ex) in &exchanges {
        lowest_rv(ex, &mut oldest);
    }

    let config = DevClusterConfig {
        stamp_requester_identity: false,
        token_success_cache: TOKEN_CACHE,
        ..DevClusterConfig::default()
    };
    let cluster = DevCluster::start(config).await.expect("dev cluster starts");
    let mut h = Harness {
        cluster,
        map: Mapper::default(),
        api_token: None,
        custom_token: None,
        oldest_recorded_rv: oldest,
        webhook: None,
        admin_user: Value::Null,
    };
    let me = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let who = h
        .admin(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            JSON,
            Some(me),
        )
        .await;
    h.admin_user = who.json()["status"]["userInfo"].clone();

    let mut failures: Vec<String> = Vec::new();
    let mut passed = 0usize;
    for (id, name, ex) in &exchanges {
        let mut errs = match setup(&mut h, id, ex).await {
            Ok(()) => Vec::new(),
            Err(e) => vec![e],
        };
        if errs.is_empty() {
            errs = if matches!(id.as_str(), "14c" | "14d" | "14e" | "14f") {
                replay_review(&mut h, ex)
            } else if ex["response"].get("events").is_some() {
                replay_watch(&mut h, id, ex).await
            } else {
                replay_plain(&mut h, id, ex).await
            };
        }
        if let Err(e) = teardown(&mut h, id).await {
            errs.push(e);
        }
        if errs.is_empty() {
            passed += 1;
        } else {
            failures.push(format!("{name}:\n  {}", errs.join("\n  ")));
        }
    }
    if let Some(webhook) = h.webhook.take() {
        webhook.stop().await;
    }
    h.cluster.shutdown().await;

    eprintln!("kube-wire: {} exchanges, {passed} passing", exchanges.len());
    assert!(
        failures.is_empty(),
        "{} exchanges failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

//! Replays every exchange recorded from a real kube-apiserver (`shared/testdata/kube-wire`)
//! against a dev cluster, in file order, and compares status codes, the headers that
//! matter and bodies: `Status` objects field by field (messages literally once the varying
//! numbers and uids are normalised), objects and lists by shape (same keys recursively,
//! same literal values where nothing varies), watches by event types and object shapes.
//!
//! Recorded uids and resourceVersions are bound to the dev cluster's as they first appear
//! and substituted into later requests, so one run reproduces the recording's story.
//! Every exchange has a row below: `Supported` rows must pass; `Deferred` rows name the
//! issue that will make them pass and are not replayed (they are not passing).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use nico_dev_cluster::{DevCluster, DevClusterConfig};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy)]
enum Row {
    Supported,
    Deferred {
        reason: &'static str,
        todo: &'static str,
    },
}

const RBAC: Row = Row::Deferred {
    reason: "needs RBAC objects and SubjectAccessReview; every user may do everything so far",
    todo: "#4",
};
const WEBHOOK: Row = Row::Deferred {
    reason: "needs admission webhooks (configurations, AdmissionReview calls, failurePolicy)",
    todo: "#6",
};
const S: Row = Row::Supported;

/// One row per exchange, by file-name prefix.
const ROWS: &[(&str, Row)] = &[
    ("01a", S),
    ("01b", S),
    ("01c", S),
    ("02a", S),
    ("02b", S),
    ("02c", S),
    ("02d", S),
    ("02e", S),
    ("02f", S),
    ("03a", S),
    ("03b", S),
    ("03c", S),
    ("04a", S),
    ("04b", S),
    ("04c", S),
    ("05a", S),
    ("05b", S),
    ("05c", S),
    ("05d", S),
    ("05e", S),
    ("05f", S),
    ("05g", S),
    ("05h", S),
    ("05i", S),
    ("06a", S),
    ("06b", S),
    ("06c", S),
    ("06d", S),
    ("06e", S),
    ("06f", S),
    ("06g", S),
    ("06h", S),
    ("07a", S),
    ("07b", S),
    ("07c", S),
    ("07d", S),
    ("07e", S),
    ("07f", S),
    ("07g", S),
    ("07h", S),
    ("07i", S),
    ("07j", S),
    ("07k", S),
    ("07l", S),
    ("08a", S),
    ("08b", S),
    ("08c", S),
    ("08d", S),
    ("08e", S),
    ("08f", S),
    ("08g", S),
    ("09a", S),
    ("09b", S),
    ("09c", S),
    ("09d", S),
    ("09e", S),
    ("09f", S),
    ("10a", RBAC),
    ("10b", RBAC),
    ("10c", RBAC),
    ("10d", RBAC),
    ("10e", RBAC),
    ("10f", RBAC),
    ("11a", RBAC),
    ("11b", S),
    ("11c", S),
    ("11d", RBAC),
    ("11e", RBAC),
    ("12a", S),
    ("12b", S),
    ("12c", S),
    ("12d", S),
    ("12e", S),
    ("13a", S),
    ("13b", S),
    ("13c", S),
    ("13d", S),
    ("13e", S),
    ("14a", WEBHOOK),
    ("14b", WEBHOOK),
    ("14c", WEBHOOK),
    ("14d", WEBHOOK),
    ("14e", WEBHOOK),
    ("14f", WEBHOOK),
    ("14g", WEBHOOK),
    ("14h", WEBHOOK),
    ("14i", WEBHOOK),
    ("14j", WEBHOOK),
    ("15a", S),
    ("15b", S),
    ("15c", S),
    ("15d", S),
    ("15e", S),
    ("16a", S),
    ("16b", S),
    ("16c", S),
    ("16d", S),
    ("16e", S),
    ("16f", S),
    ("16g", S),
    ("16h", S),
    ("16i", S),
    ("16j", S),
    ("16k", S),
    ("16l", S),
    ("16m", S),
    ("16n", S),
    ("16o", S),
    ("16p", S),
    ("16q", S),
    ("17a", S),
];

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

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
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
        let addr = self.cluster.url().trim_start_matches("http://").to_owned();
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = http::Request::builder().method(method).uri(path_and_query);
        req = req.header("host", addr.as_str());
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        Answer {
            status,
            headers,
            body,
        }
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
    // Groups of deferred work: authorization and RBAC (#4), admission registration (#6).
    let later = [
        "authorization.k8s.io",
        "rbac.authorization.k8s.io",
        "admissionregistration.k8s.io",
    ];
    for (name, entry) in &want {
        match have.get(name) {
            Some(mine) if mine == entry => {}
            Some(mine) => errs.push(format!("group {name}: recorded {entry}, here {mine}")),
            None if later.contains(&name.as_str()) => {}
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

#[tokio::test]
async fn kube_wire_transcripts() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(transcript_dir())
        .expect("the kube-wire transcripts are beside the repository")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), ROWS.len(), "one row per transcript file");

    let exchanges: Vec<(String, String, Value)> = files
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
    };

    let mut failures: Vec<String> = Vec::new();
    let (mut passed, mut deferred) = (0usize, BTreeMap::<&str, Vec<String>>::new());
    for (id, name, ex) in &exchanges {
        let row = ROWS.iter().find(|(p, _)| p == id).map(|(_, r)| *r);
        let Some(row) = row else {
            failures.push(format!("{name}: no row in the table"));
            continue;
        };
        if let Row::Deferred { reason, todo } = row {
            deferred
                .entry(todo)
                .or_default()
                .push(format!("{name} ({reason})"));
            continue;
        }
        let mut errs = match setup(&mut h, id, ex).await {
            Ok(()) => Vec::new(),
            Err(e) => vec![e],
        };
        if errs.is_empty() {
            errs = if ex["response"].get("events").is_some() {
                replay_watch(&mut h, id, ex).await
            } else {
                replay_plain(&mut h, id, ex).await
            };
        }
        if errs.is_empty() {
            passed += 1;
        } else {
            failures.push(format!("{name}:\n  {}", errs.join("\n  ")));
        }
    }
    h.cluster.shutdown().await;

    let supported = ROWS
        .iter()
        .filter(|(_, r)| matches!(r, Row::Supported))
        .count();
    let deferred_count: usize = deferred.values().map(Vec::len).sum();
    eprintln!(
        "kube-wire: {supported} supported ({passed} passing), \
         {deferred_count} deferred (not passing):"
    );
    for (todo, rows) in &deferred {
        eprintln!("  deferred to {todo}: {}", rows.len());
        for row in rows {
            eprintln!("    {row}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} supported exchanges failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

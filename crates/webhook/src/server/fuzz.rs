//! Fuzz targets: AdmissionReview bodies through the router, in process. Whatever arrives,
//! the answer is a 400 saying in one short line what is wrong, or a well-formed
//! AdmissionReview for the request's uid: allowed, patched with a base64 JSON patch, or
//! denied with a 403, 422 (one cause per field) or 503 and a message. Never a panic, never
//! another status.
//!
//! Corpus: `tests/corpus/admission_review/` (reviews of CertificateRequests, policies and
//! pods as the API server sends them, from this crate's tests, and hostile bodies: other
//! versions and kinds, deep nesting, huge numbers, lone surrogates, duplicate keys, a BOM).
//! `fuzz_admission_review` mutates the bytes; `fuzz_admission_review_fields` keeps the JSON
//! valid and changes one value, so the webhooks' own rules see the surprise.
//! `cargo xtask fuzz --target webhook` runs these for longer.

#[path = "../../../../tests/support/fuzzing.rs"]
mod fuzzing;

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

use super::tests::{app, post};
use crate::review::Endpoint;

/// The body limit of the router under test; every corpus entry is below it.
const LIMIT: usize = 64 * 1024;

/// The longest 400 body: one sentence, whatever the input.
const MAX_REFUSAL_LEN: usize = 1024;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/admission_review")
}

fn paths() -> Vec<&'static str> {
    Endpoint::ALL
        .iter()
        .map(|endpoint| endpoint.path())
        .collect()
}

/// Posts `body` to `path` and checks the answer's shape.
fn check(path: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (router, _) = app(LIMIT);
    // serde skips the fields it ignores without checking their UTF-8 or the range of their
    // numbers, so a review may be read that a JSON parser refuses: then the uid is the one
    // the review reader found.
    let sent: Option<Value> = serde_json::from_slice(&body).ok().or_else(|| {
        let request = crate::review::read(&body).ok()?;
        Some(serde_json::json!({"request": {"uid": request.uid}}))
    });
    let (status, text) = runtime.block_on(post(&router, path, body));
    match status {
        StatusCode::BAD_REQUEST => {
            prop_assert!(
                text.ends_with('\n') && text.lines().count() == 1,
                "{text:?}"
            );
            prop_assert!(
                text.len() <= MAX_REFUSAL_LEN,
                "a {}-byte refusal: {}...",
                text.len(),
                text.chars().take(200).collect::<String>()
            );
            Ok(())
        }
        StatusCode::OK => {
            let answer: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("answer is not JSON: {e}")))?;
            let uid = sent
                .as_ref()
                .and_then(|review| review.pointer("/request/uid"));
            check_review(&answer, uid)
        }
        other => Err(TestCaseError::fail(format!("answered {other}: {text}"))),
    }
}

fn check_review(answer: &Value, uid: Option<&Value>) -> Result<(), TestCaseError> {
    prop_assert_eq!(&answer["apiVersion"], "admission.k8s.io/v1");
    prop_assert_eq!(&answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    prop_assert!(uid.is_some(), "answered a body without a request uid");
    prop_assert_eq!(Some(&response["uid"]), uid, "answered another uid");
    let allowed = response["allowed"].as_bool();
    prop_assert!(allowed.is_some(), "no allowed: {answer}");
    if allowed == Some(false) {
        let status = &response["status"];
        let code = status["code"].as_u64();
        prop_assert!(
            matches!(code, Some(403 | 422 | 503)),
            "denied with {status}"
        );
        prop_assert!(status["message"].as_str().is_some_and(|m| !m.is_empty()));
        if code == Some(422) {
            let causes = status["details"]["causes"].as_array();
            prop_assert!(causes.is_some_and(|c| !c.is_empty()), "422 without causes");
            for cause in causes.into_iter().flatten() {
                prop_assert!(cause["field"].as_str().is_some_and(|f| !f.is_empty()));
            }
        }
        prop_assert!(response.get("patch").is_none(), "a denial with a patch");
    }
    if let Some(patch) = response.get("patch") {
        prop_assert_eq!(&response["patchType"], "JSONPatch");
        let bytes = STANDARD
            .decode(patch.as_str().unwrap_or_default())
            .map_err(|e| TestCaseError::fail(format!("patch is not base64: {e}")))?;
        let operations: Vec<Value> = serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("patch is not a JSON list: {e}")))?;
        for operation in operations {
            prop_assert!(operation["op"].is_string() && operation["path"].is_string());
        }
    }
    Ok(())
}

/// A change to one value of a review.
#[derive(Clone, Debug)]
enum Change {
    /// The value's text (a string's contents, or the JSON of anything else), mutated, as a
    /// string.
    Text(fuzzing::Mutation),
    /// Another value altogether.
    Replace(Value),
}

fn change() -> impl Strategy<Value = Change> {
    let replacements = vec![
        Value::Null,
        Value::Bool(true),
        Value::from(-1),
        Value::from(u64::MAX),
        Value::from(0.5),
        Value::from(""),
        Value::from("x".repeat(1000)),
        Value::Array(vec![]),
        Value::Object(Default::default()),
        serde_json::json!([{"type": "Approved", "status": "True"}]),
    ];
    prop_oneof![
        3 => fuzzing::mutation().prop_map(Change::Text),
        2 => prop::sample::select(replacements).prop_map(Change::Replace),
    ]
}

/// JSON pointers to every value of `value`, containers included.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let key = key.replace('~', "~0").replace('/', "~1");
                pointers(child, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{index}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// `review` with the value at one of its pointers changed.
fn changed(mut review: Value, which: Index, change: &Change) -> Value {
    let mut all = Vec::new();
    pointers(&review, String::new(), &mut all);
    let pointer = &all[which.index(all.len())];
    if let Some(target) = review.pointer_mut(pointer) {
        *target = match change {
            Change::Replace(value) => value.clone(),
            Change::Text(mutation) => {
                let text = match &*target {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                let bytes = mutation.apply(text.clone().into_bytes(), &[text.into_bytes()]);
                Value::from(String::from_utf8_lossy(&bytes).into_owned())
            }
        };
    }
    review
}

/// The corpus entries that are JSON reviews, each with the path its resource goes to.
fn reviews() -> Vec<Value> {
    fuzzing::seeds(&corpus_dir())
        .iter()
        .filter_map(|bytes| serde_json::from_slice::<Value>(bytes).ok())
        .filter(|review| review["request"].is_object())
        .collect()
}

/// The webhooks that review `review`'s resource (all of them when it names none).
fn paths_for(review: &Value) -> Vec<&'static str> {
    let resource = review.pointer("/request/resource/resource");
    let matching: Vec<&'static str> = Endpoint::ALL
        .iter()
        .filter(|endpoint| resource.and_then(Value::as_str) == Some(endpoint.resource().1))
        .map(|endpoint| endpoint.path())
        .collect();
    if matching.is_empty() {
        paths()
    } else {
        matching
    }
}

#[test]
fn fuzz_corpus_replays_cleanly() {
    let mut failures = Vec::new();
    for (name, body) in fuzzing::corpus(&corpus_dir()) {
        for path in paths() {
            if let Err(failure) = check(path, body.clone()) {
                failures.push(format!("{name} to {path}: {failure}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The corpus holds reviews each webhook answers with a decision, not only refusals, so
/// the fuzz targets reach the webhooks' rules.
#[test]
fn the_corpus_reaches_every_webhook() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (router, _) = app(LIMIT);
    for endpoint in Endpoint::ALL {
        let answered = reviews().into_iter().any(|review| {
            let body = serde_json::to_vec(&review).unwrap();
            let (status, text) = runtime.block_on(post(&router, endpoint.path(), body));
            let answer: Value = serde_json::from_str(&text).unwrap_or_default();
            let forbidden_resource = answer["response"]["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("fix the rules of the webhook configuration"));
            status == StatusCode::OK && !forbidden_resource
        });
        assert!(answered, "no corpus review reaches {}", endpoint.path());
    }
}

/// Found by `fuzz_admission_review_fields`: serde's message quotes the offending value, so a
/// long string where a number or a list belongs was repeated whole in the 400 and its log
/// line (up to the body limit, 7 MiB by default), line breaks included.
#[test]
fn regression_a_refusal_does_not_repeat_long_input() {
    let long = "x\n".repeat(20_000);
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "operation": "CREATE", "dryRun": long},
    }))
    .unwrap();
    let wrong_type = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "x".repeat(20_000), "kind": "y".repeat(20_000),
    }))
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (router, _) = app(LIMIT);
    for (body, start) in [
        (body, "malformed AdmissionReview: invalid type"),
        (
            wrong_type,
            "expected an admission.k8s.io/v1 AdmissionReview, got \"xxx",
        ),
    ] {
        let (status, text) = runtime.block_on(post(&router, "/mutate/pods", body));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.starts_with(start), "{text}");
        assert!(text.len() < 300, "a {}-byte refusal", text.len());
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}

proptest! {
    #![proptest_config(fuzzing::config(1000))]

    #[test]
    fn fuzz_admission_review(
        body in fuzzing::inputs(fuzzing::seeds(&corpus_dir()), 4096),
        path in prop::sample::select(paths()),
    ) {
        check(path, body)?;
    }

    #[test]
    fn fuzz_admission_review_fields(
        review in prop::sample::select(reviews()),
        which in any::<Index>(),
        change in change(),
        route in any::<Index>(),
    ) {
        let routes = paths_for(&review);
        let path = routes[route.index(routes.len())];
        let body = serde_json::to_vec(&changed(review, which, &change)).unwrap();
        check(path, body)?;
    }
}

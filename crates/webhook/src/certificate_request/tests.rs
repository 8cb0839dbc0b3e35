//! Unit tests of CertificateRequest admission, with a stand-in for the API server's
//! discovery and access reviews.

use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose as Eku, KeyPair, KeyUsagePurpose as Ku};
use serde_json::{Value, json};

use super::*;
use crate::approval::{AuthorizeError, IssuerResource};
use crate::test_support::admission;

/// Allows the listed signer names for the listed users; records every question.
#[derive(Default)]
struct FakeAuthorizer {
    allowed: Vec<(&'static str, &'static str)>,
    asked: Mutex<Vec<(String, String, Option<String>)>>,
}

impl Authorizer for FakeAuthorizer {
    async fn issuer_resource(
        &self,
        group: &str,
        kind: &str,
    ) -> Result<Option<IssuerResource>, AuthorizeError> {
        Ok(match (group, kind) {
            ("cert-manager.io", "ClusterIssuer") => Some(IssuerResource {
                plural: "clusterissuers".into(),
                namespaced: false,
            }),
            ("cert-manager.io", "Issuer") => Some(IssuerResource {
                plural: "issuers".into(),
                namespaced: true,
            }),
            _ => None,
        })
    }

    async fn may_approve(
        &self,
        requester: &Requester,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<bool, AuthorizeError> {
        self.asked.lock().unwrap().push((
            requester.username.clone(),
            name.to_owned(),
            namespace.map(str::to_owned),
        ));
        Ok(self
            .allowed
            .iter()
            .any(|(user, signer)| *user == requester.username && *signer == name))
    }
}

fn csr_pem(ku: &[Ku], eku: &[Eku]) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://nico.local/demo/sa/web".try_into().unwrap(),
    )];
    params.key_usages = ku.to_vec();
    params.extended_key_usages = eku.to_vec();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn svid_csr() -> String {
    csr_pem(
        &[Ku::DigitalSignature, Ku::KeyEncipherment],
        &[Eku::ServerAuth, Eku::ClientAuth],
    )
}

/// A CR as alice (see `test_support`) would have it recorded.
fn cr(csr: &str) -> Value {
    json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": "cr-1", "namespace": "demo",
                     "annotations": {"cert-manager.io/certificate-name": "web"}},
        "spec": {
            "request": STANDARD.encode(csr),
            "issuerRef": {"name": "nico-identity", "kind": "ClusterIssuer",
                          "group": "cert-manager.io"},
            "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
            "username": "alice", "uid": "alice-uid", "groups": ["system:authenticated"],
        },
    })
}

fn with_conditions(mut cr: Value, conditions: Value) -> Value {
    cr["status"] = json!({"conditions": conditions});
    cr
}

fn resource(sub: Option<&str>) -> Value {
    let mut fields = json!({
        "kind": {"group": "cert-manager.io", "version": "v1", "kind": "CertificateRequest"},
        "resource": {"group": "cert-manager.io", "version": "v1",
                     "resource": "certificaterequests"},
        "name": "cr-1", "namespace": "demo",
    });
    if let Some(sub) = sub {
        fields["subResource"] = sub.into();
    }
    fields
}

fn create(object: Value) -> AdmissionRequest<DynamicObject> {
    let mut fields = resource(None);
    fields["operation"] = "CREATE".into();
    fields["object"] = object;
    admission(fields)
}

fn update(
    old: Value,
    new: Value,
    user: &str,
    sub: Option<&str>,
) -> AdmissionRequest<DynamicObject> {
    let mut fields = resource(sub);
    fields["operation"] = "UPDATE".into();
    fields["object"] = new;
    fields["oldObject"] = old;
    fields["userInfo"] = json!({"username": user});
    admission(fields)
}

fn run(authorizer: &FakeAuthorizer, request: &AdmissionRequest<DynamicObject>) -> Verdict {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(validate(authorizer, request))
}

fn fields_of(verdict: &Verdict) -> Vec<String> {
    match verdict {
        Verdict::Invalid(problems) => problems.iter().map(|p| p.field.clone()).collect(),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn the_mutating_webhook_records_the_requester() {
    let mut forged = cr(&svid_csr());
    forged["spec"]["username"] = "system:admin".into();
    forged["spec"]["groups"] = json!(["system:masters"]);
    let Verdict::Patch(patch) = stamp(&create(forged.clone())) else {
        panic!("expected a patch");
    };
    json_patch::patch(&mut forged, &patch).unwrap();
    assert_eq!(forged["spec"]["username"], "alice");
    assert_eq!(forged["spec"]["uid"], "alice-uid");
    assert_eq!(forged["spec"]["groups"], json!(["system:authenticated"]));
    let old = cr(&svid_csr());
    assert_eq!(
        stamp(&update(old.clone(), old, "bob", None)),
        Verdict::Allow
    );
}

#[test]
fn creates_are_checked_field_by_field() {
    let authorizer = FakeAuthorizer::default();
    let good = cr(&svid_csr());
    assert_eq!(run(&authorizer, &create(good.clone())), Verdict::Allow);

    let mut edits: Vec<(Value, Vec<&str>)> = Vec::new();
    let mut forged = good.clone();
    forged["spec"]["username"] = "system:admin".into();
    edits.push((forged, vec!["spec.username"]));
    let mut extra = good.clone();
    extra["spec"]["extra"] = json!({"scopes": ["all"]});
    edits.push((extra, vec!["spec.extra"]));
    let mut garbage = good.clone();
    garbage["spec"]["request"] = STANDARD.encode("not a CSR").into();
    edits.push((garbage, vec!["spec.request"]));
    let mut disagreeing = good.clone();
    disagreeing["spec"]["usages"] = json!(["digital signature", "key encipherment", "server auth"]);
    edits.push((disagreeing, vec!["spec.usages"]));
    let mut ca = good.clone();
    ca["spec"]["isCA"] = true.into();
    edits.push((ca, vec!["spec.isCA"]));
    let code_signing = cr(&csr_pem(&[Ku::DigitalSignature], &[Eku::CodeSigning]));
    edits.push((code_signing, vec!["spec.usages", "spec.usages"]));
    let both = with_conditions(
        good.clone(),
        json!([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]),
    );
    edits.push((both, vec!["status.conditions"]));
    for (object, expected) in edits {
        let verdict = run(&authorizer, &create(object));
        assert_eq!(fields_of(&verdict), expected);
    }
    assert!(authorizer.asked.lock().unwrap().is_empty());
}

#[test]
fn updates_keep_the_spec_and_cert_manager_annotations() {
    let authorizer = FakeAuthorizer::default();
    let old = cr(&svid_csr());
    let mut labelled = old.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    labelled["metadata"]["annotations"]["example.com/note"] = "free".into();
    assert_eq!(
        run(&authorizer, &update(old.clone(), labelled, "bob", None)),
        Verdict::Allow
    );

    let mut cases: Vec<(Value, Vec<&str>)> = Vec::new();
    let mut longer = old.clone();
    longer["spec"]["duration"] = "720h".into();
    cases.push((longer, vec!["spec.duration"]));
    let mut renamed = old.clone();
    renamed["spec"]["username"] = "bob".into();
    renamed["spec"]["groups"] = json!([]);
    cases.push((renamed, vec!["spec.groups", "spec.username"]));
    let mut annotated = old.clone();
    annotated["metadata"]["annotations"]["cert-manager.io/certificate-name"] = "db".into();
    annotated["metadata"]["annotations"]["cert-manager.io/new"] = "x".into();
    cases.push((
        annotated,
        vec![
            "metadata.annotations[cert-manager.io/certificate-name]",
            "metadata.annotations[cert-manager.io/new]",
        ],
    ));
    let mut unannotated = old.clone();
    unannotated["metadata"]["annotations"] = json!({});
    cases.push((
        unannotated,
        vec!["metadata.annotations[cert-manager.io/certificate-name]"],
    ));
    for (new, expected) in cases {
        let verdict = run(&authorizer, &update(old.clone(), new, "bob", None));
        assert_eq!(fields_of(&verdict), expected);
    }
}

#[test]
fn approvals_need_the_approve_verb_on_the_signer() {
    let authorizer = FakeAuthorizer {
        allowed: vec![
            ("approver", "clusterissuers.cert-manager.io/nico-identity"),
            ("wildcard", "issuers.cert-manager.io/*"),
        ],
        ..FakeAuthorizer::default()
    };
    let old = cr(&svid_csr());
    let approved = with_conditions(
        old.clone(),
        json!([{"type": "Approved", "status": "True", "reason": "A", "message": "ok"}]),
    );
    let status = Some("status");
    assert_eq!(
        run(
            &authorizer,
            &update(old.clone(), approved.clone(), "approver", status)
        ),
        Verdict::Allow
    );
    let Verdict::Forbidden(message) = run(
        &authorizer,
        &update(old.clone(), approved.clone(), "intruder", status),
    ) else {
        panic!("expected forbidden");
    };
    assert_eq!(
        message,
        "status.conditions: user \"intruder\" may not approve or deny requests for \
         ClusterIssuer.cert-manager.io/nico-identity: that needs the approve verb on \
         signers.cert-manager.io named \"clusterissuers.cert-manager.io/nico-identity\" (or \
         \"clusterissuers.cert-manager.io/*\")"
    );
    // Keeping a decision (the issuer writing Ready) needs no permission.
    let ready = with_conditions(
        old.clone(),
        json!([{"type": "Approved", "status": "True", "reason": "A", "message": "ok"},
               {"type": "Ready", "status": "True", "reason": "Issued"}]),
    );
    assert_eq!(
        run(&authorizer, &update(approved, ready, "issuer", status)),
        Verdict::Allow
    );

    let mut namespaced = old.clone();
    namespaced["spec"]["issuerRef"] = json!({"name": "ca"});
    let denied = with_conditions(
        namespaced.clone(),
        json!([{"type": "Denied", "status": "True", "reason": "D"}]),
    );
    assert_eq!(
        run(
            &authorizer,
            &update(namespaced.clone(), denied.clone(), "wildcard", status)
        ),
        Verdict::Allow
    );
    let asked = authorizer.asked.lock().unwrap().clone();
    assert_eq!(
        asked.last().unwrap(),
        &(
            "wildcard".to_owned(),
            "issuers.cert-manager.io/*".to_owned(),
            Some("demo".to_owned())
        )
    );
    assert!(
        asked
            .iter()
            .any(|(user, name, _)| user == "wildcard" && name == "issuers.cert-manager.io/demo.ca")
    );

    let mut external = old.clone();
    external["spec"]["issuerRef"] = json!({"name": "x", "kind": "Nope", "group": "example.com"});
    let approved = with_conditions(
        external.clone(),
        json!([{"type": "Approved", "status": "True"}]),
    );
    let verdict = run(&authorizer, &update(external, approved, "approver", status));
    assert!(
        matches!(&verdict, Verdict::Forbidden(m) if m.starts_with("spec.issuerRef: kind Nope")),
        "{verdict:?}"
    );
}

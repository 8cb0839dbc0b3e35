//! CertificateRequestPolicies in a cluster: the seed's sample applied as shipped, RBAC
//! `use` bindings answered by SubjectAccessReview, `Ready` conditions, and the start-up
//! race.

use kube::api::Api;
use nico_k8s_types::CertificateRequestPolicy;
use serde_json::json;

use crate::harness::{
    Harness, Verdict, approver_config, create, csr, eventually, request, verdict_of,
};

const SEED: &str = include_str!("../../../../config/policies/service-tls.yaml");
const CERT_MANAGER: (&str, &str) = ("cert-manager", "cert-manager");

/// A service TLS request for `dns` through the seed's non-SPIFFE issuer.
fn service_request(name: &str, dns: &[&str], uris: &[&str]) -> nico_k8s_types::CertificateRequest {
    let mut cr = request(name, "demo", "nico-service-tls", csr(dns, uris));
    cr.spec.usages = Some(vec!["digital signature".into(), "server auth".into()]);
    cr.spec.duration = Some("2160h".into());
    cr
}

async fn ready_condition(h: &Harness, policy: &str) -> (String, String, String) {
    let api: Api<CertificateRequestPolicy> = Api::all(h.admin.clone());
    eventually(&format!("a Ready condition on {policy}"), || async {
        let p = api.get(policy).await.unwrap();
        let ready = p.ready()?;
        Some((
            ready.status.clone(),
            ready.reason.clone().unwrap_or_default(),
            ready.message.clone().unwrap_or_default(),
        ))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_policy_signs_service_tls_only_for_requesters_bound_to_it() {
    let h = Harness::start().await;
    h.namespace("demo", json!({})).await;
    h.namespace("cert-manager", json!({})).await;
    h.requester("cert-manager", "cert-manager").await;
    h.may_request("demo", CERT_MANAGER.0, CERT_MANAGER.1).await;
    h.requester("demo", "web").await;
    h.apply(json!({"kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "webhook", "namespace": "demo"},
        "spec": {"ports": [{"port": 443}]}}))
        .await;
    h.apply_yaml(SEED).await;
    h.apply(json!({"kind": "CertificateRequestPolicy",
        "apiVersion": "policy.cert-manager.io/v1alpha1",
        "metadata": {"name": "broken"},
        "spec": {"selector": {"issuerRef": {"name": "other-ca"}},
                 "allowed": {"dnsNames": {"validations": [{"rule": "self.nosuch()"}]}}}}))
        .await;
    let approver = h
        .approver("approver-0", approver_config(|c| c.leader_election = false))
        .await;

    let (status, reason, message) = ready_condition(&h, "service-tls").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "Loaded"),
        "{message}"
    );
    let (status, reason, message) = ready_condition(&h, "broken").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"));
    assert!(
        message.contains("spec.allowed.dnsNames.validations[0].rule: unknown function \"nosuch\""),
        "{message}"
    );

    let manager = h.client_as(&h.token(CERT_MANAGER.0, CERT_MANAGER.1, None).await);
    let app = h.client_as(&h.token("demo", "web", None).await);
    // The application's own account is not bound to the policy: its request is left alone.
    create(&app, &service_request("by-app", &["webhook.demo.svc"], &[])).await;
    let rows = [
        (
            "webhook",
            &["webhook.demo.svc", "webhook.demo.svc.cluster.local"][..],
            &[][..],
            None,
        ),
        (
            "missing-service",
            &["db.demo.svc"][..],
            &[][..],
            Some("[service-tls] csr.subjectAltName.dnsNames: DNS name \"db.demo.svc\" failed"),
        ),
        (
            "uri-san",
            &["webhook.demo.svc"][..],
            &["spiffe://nico.local/demo/sa/webhook"][..],
            // A URI of our trust domain makes it a SPIFFE request, denied on the issuer.
            Some("spec.issuerRef: issuer ClusterIssuer.cert-manager.io/nico-service-tls"),
        ),
        (
            "foreign-uri-san",
            &["webhook.demo.svc"][..],
            &["https://example.com/x"][..],
            Some("[service-tls] csr.subjectAltName.uris: URI \"https://example.com/x\""),
        ),
    ];
    for (name, dns, uris, _) in rows {
        create(&manager, &service_request(name, dns, uris)).await;
    }
    for (name, _, _, expected) in rows {
        let verdict = h.verdict("demo", name).await;
        match (expected, &verdict) {
            (None, Verdict::Approved(message)) => {
                assert_eq!(
                    message,
                    "approved by CertificateRequestPolicy \"service-tls\""
                )
            }
            (Some(fragment), Verdict::Denied(message)) => {
                assert!(message.contains(fragment), "{name}: {message}")
            }
            _ => panic!("{name}: unexpected {verdict:?}"),
        }
    }
    // The unbound request was judged (and left alone), not overlooked.
    eventually("the unbound request to be judged", || async {
        let left = approver
            .metric("nico_identity_approver_left_undecided_total{reason=\"no_policy\"}")
            .await;
        (left >= 1.0).then_some(())
    })
    .await;
    assert_eq!(verdict_of(&h.get("demo", "by-app").await), Verdict::None);

    // A RoleBinding in the request's namespace binds the application too.
    h.apply(
        json!({"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "web-uses-service-tls", "namespace": "demo"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "nico-identity-policy-service-tls"},
        "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "demo"}]}),
    )
    .await;
    create(
        &app,
        &service_request("by-app-bound", &["webhook.demo.svc"], &[]),
    )
    .await;
    assert!(matches!(
        h.verdict("demo", "by-app-bound").await,
        Verdict::Approved(_)
    ));
    approver.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_all_policy_cannot_win_the_start_up_race() {
    let h = Harness::start().await;
    h.namespace("demo", json!({"tls": "service"})).await;
    h.requester("demo", "issuer-bot").await;
    for (name, spec) in [
        ("a-deny-all", json!({"selector": {"issuerRef": {}}})),
        (
            "b-allow-labelled",
            json!({
                "selector": {"namespace": {"matchLabels": {"tls": "service"}}},
                "allowed": {"dnsNames": {"values": ["*.demo.svc"]},
                            "usages": ["digital signature", "server auth"]}
            }),
        ),
    ] {
        h.apply(json!({"kind": "CertificateRequestPolicy",
            "apiVersion": "policy.cert-manager.io/v1alpha1",
            "metadata": {"name": name}, "spec": spec}))
            .await;
    }
    h.apply(
        json!({"kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "use-all-policies"},
        "rules": [{"apiGroups": ["policy.cert-manager.io"],
                   "resources": ["certificaterequestpolicies"], "verbs": ["use"]}]}),
    )
    .await;
    h.apply(
        json!({"kind": "ClusterRoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "bot-uses-all-policies"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "use-all-policies"},
        "subjects": [{"kind": "ServiceAccount", "name": "issuer-bot", "namespace": "demo"}]}),
    )
    .await;

    // The requests exist before the approver starts, so its first look at them races the
    // first listing of the policies.
    let bot = h.client_as(&h.token("demo", "issuer-bot", None).await);
    let names: Vec<String> = (0..20).map(|i| format!("race-{i}")).collect();
    for name in &names {
        let mut cr = request(name, "demo", "any-ca", csr(&["web.demo.svc"], &[]));
        cr.spec.usages = Some(vec!["server auth".into()]);
        create(&bot, &cr).await;
    }
    let approver = h
        .approver("approver-0", approver_config(|c| c.leader_election = false))
        .await;
    for name in &names {
        let verdict = h.verdict("demo", name).await;
        assert_eq!(
            verdict,
            Verdict::Approved("approved by CertificateRequestPolicy \"b-allow-labelled\"".into()),
            "{name}"
        );
    }
    // With only the deny-all left applicable, a request is denied with its reasons.
    let mut refused = request("refused", "demo", "any-ca", csr(&["web.other.svc"], &[]));
    refused.spec.usages = Some(vec!["server auth".into()]);
    create(&bot, &refused).await;
    let Verdict::Denied(message) = h.verdict("demo", "refused").await else {
        panic!("expected a denial");
    };
    assert!(
        message.contains("[a-deny-all] csr.subjectAltName.dnsNames"),
        "{message}"
    );
    assert!(
        message.contains("[b-allow-labelled] csr.subjectAltName.dnsNames"),
        "{message}"
    );
    approver.stop().await;
    h.stop().await;
}

//! The local CA through the dev cluster: a CA generated into a Secret, requests signed with
//! it, Events on each request, the Lease held, readiness and metrics served, and a request
//! that cannot be signed failed with its reason; a CA the operator replaces in its files is
//! used without a restart, and a broken replacement never signs.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use nico_issuer::{Config, IssuerConfig, LocalCaConfig};
use support::{
    Harness, cluster_issuer, count_pem, create_request, openssl_verify, ready, spiffe_csr,
    wait_for_ready,
};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_generated_into_a_secret_signs_and_every_request_gets_an_event() {
    let config = Config {
        issuers: vec![IssuerConfig {
            name: "in-secret".to_owned(),
            kind: "Issuer".to_owned(),
            group: String::new(),
            local_ca: Some(LocalCaConfig {
                certificate: None,
                key: None,
                secret: Some("default/nico-ca".to_owned()),
                generate: true,
                validity: "24h".to_owned(),
                reload_interval: "1m".to_owned(),
            }),
            vault: None,
        }],
        ..Config::default()
    };
    let harness = Harness::start(config).await;
    harness.wait_ready(200, WAIT).await;
    let client = harness.client.clone();
    // An issuerRef without kind and group means Issuer.cert-manager.io after defaults.
    let bare = nico_k8s_types::IssuerRef {
        name: "in-secret".to_owned(),
        kind: None,
        group: None,
    };
    let (_, csr) = spiffe_csr("web");
    create_request(&client, "signed", bare, &csr, "1h", Some(true)).await;
    create_request(
        &client,
        "foreign",
        cluster_issuer("x"),
        &csr,
        "1h",
        Some(true),
    )
    .await;
    let mut odd = cluster_issuer("in-secret");
    odd.kind = Some("Issuer".to_owned());
    create_request(&client, "forever", odd.clone(), &csr, "forever", Some(true)).await;
    create_request(&client, "denied", odd, &csr, "1h", Some(false)).await;

    let cr = wait_for_ready(&client, "signed", WAIT).await;
    assert!(ready(&cr).0, "{:?}", ready(&cr));
    let text = openssl_verify(&cr).unwrap();
    assert!(
        text.contains("URI:spiffe://nico.local/demo/sa/web"),
        "{text}"
    );
    let secret = Api::<Secret>::namespaced(client.clone(), "default")
        .get("nico-ca")
        .await
        .unwrap();
    let data = secret.data.unwrap();
    assert!(data.contains_key("tls.key"));
    let status = cr.status.as_ref().unwrap();
    assert_eq!(status.ca.as_deref(), Some(&data["tls.crt"].0[..]));
    assert_eq!(count_pem(status.certificate.as_deref()), 1);

    let failed = wait_for_ready(&client, "forever", WAIT).await;
    let (is_ready, reason, message) = ready(&failed);
    assert!(!is_ready);
    assert_eq!(reason, "Failed");
    assert!(message.contains("spec.duration"), "{message}");

    // Events, published in the background, name the request and what happened.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let listed = events.list(&ListParams::default()).await.unwrap().items;
        let reasons: Vec<(String, String)> = listed
            .iter()
            .filter_map(|e| {
                let name = e.regarding.as_ref()?.name.clone()?;
                Some((name, e.reason.clone().unwrap_or_default()))
            })
            .collect();
        let has = |name: &str, reason: &str| reasons.iter().any(|(n, r)| n == name && r == reason);
        if has("signed", "Issued") && has("forever", "Failed") && has("denied", "Denied") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events: {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The request for another issuer was never touched.
    let other = Api::<nico_k8s_types::CertificateRequest>::namespaced(client.clone(), "default")
        .get("foreign")
        .await
        .unwrap();
    assert!(
        other
            .condition(nico_k8s_types::ConditionType::Ready)
            .is_none()
    );

    let lease = Api::<Lease>::namespaced(client.clone(), "default")
        .get("nico-identity-issuer")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("issuer-test")
    );
    let issued = harness
        .metric(
            "nico_identity_issuer_signatures_total{issuer=\"Issuer.cert-manager.io/in-secret\",\
             result=\"Issued\"}",
        )
        .await;
    assert_eq!(issued, 1.0);
    harness.stop().await;
}

/// Writes a CA's certificate and key files the way an operator (or a mounted Secret) does.
fn write_ca(dir: &std::path::Path, certificate_pem: &str, key_pem: &str) {
    std::fs::write(dir.join("tls.key"), key_pem).unwrap();
    std::fs::write(dir.join("tls.crt"), certificate_pem).unwrap();
}

/// Signs one request and returns the `status.ca` it was signed under, checked by `openssl`.
async fn signed_under(client: &kube::Client, name: &str) -> Vec<u8> {
    let (_, csr) = spiffe_csr("web");
    create_request(
        client,
        name,
        cluster_issuer("files"),
        &csr,
        "1h",
        Some(true),
    )
    .await;
    let cr = wait_for_ready(client, name, WAIT).await;
    assert!(ready(&cr).0, "{name}: {:?}", ready(&cr));
    openssl_verify(&cr).unwrap_or_else(|e| panic!("{name}: {e}"));
    cr.status.unwrap().ca.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_ca_is_used_without_a_restart_and_a_broken_one_never_signs() {
    let now = time::OffsetDateTime::now_utc();
    let day = Duration::from_secs(24 * 3600);
    let first = nico_issuer::LocalCa::generate(day, now).unwrap();
    let second = nico_issuer::LocalCa::generate(day, now).unwrap();
    let third = nico_issuer::LocalCa::generate(day, now).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_ca(dir.path(), &first.certificate_pem, &first.key_pem);
    let config = Config {
        issuers: vec![IssuerConfig {
            name: "files".to_owned(),
            kind: "ClusterIssuer".to_owned(),
            group: String::new(),
            local_ca: Some(LocalCaConfig {
                certificate: Some(dir.path().join("tls.crt")),
                key: Some(dir.path().join("tls.key")),
                secret: None,
                generate: false,
                validity: "24h".to_owned(),
                reload_interval: "1s".to_owned(),
            }),
            vault: None,
        }],
        ..Config::default()
    };
    let harness = Harness::start(config).await;
    harness.wait_ready(200, WAIT).await;
    let client = harness.client.clone();
    let pem = |material: &nico_issuer::CaMaterial| material.certificate_pem.as_bytes().to_vec();
    assert_eq!(signed_under(&client, "under-first").await, pem(&first));

    // The operator replaces the files; new requests are signed by the new CA once it is read.
    write_ca(dir.path(), &second.certificate_pem, &second.key_pem);
    let mut n = 0;
    loop {
        n += 1;
        let ca = signed_under(&client, &format!("after-replace-{n}")).await;
        if ca == pem(&second) {
            break;
        }
        assert_eq!(ca, pem(&first), "signed under neither CA");
        assert!(
            n < 30,
            "the replaced CA was not picked up after {n} requests"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A replacement whose key belongs to another CA is refused: everything signed meanwhile
    // still chains to the CA in use (`openssl verify` inside `signed_under`).
    write_ca(dir.path(), &third.certificate_pem, &second.key_pem);
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let ca = signed_under(&client, &format!("while-broken-{i}")).await;
        assert_eq!(ca, pem(&second), "a mismatched pair was used");
    }
    // Repaired, it is taken.
    write_ca(dir.path(), &third.certificate_pem, &third.key_pem);
    let mut n = 0;
    loop {
        n += 1;
        let ca = signed_under(&client, &format!("after-repair-{n}")).await;
        if ca == pem(&third) {
            break;
        }
        assert!(
            n < 30,
            "the repaired CA was not picked up after {n} requests"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    harness.stop().await;
}

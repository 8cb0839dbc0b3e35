//! The issuer against a real OpenBao server, through the dev cluster: signing with every
//! chain shape, coexistence with other issuers, token renewal and re-login, and an outage
//! during which nothing fails and after which every request is issued exactly once.

mod support;

use std::time::Duration;

use nico_issuer::{Config, IssuerConfig, LocalCaConfig, VaultAuthConfig, VaultConfig};
use support::openbao::{self, OpenBao, Storage};
use support::{
    Harness, cluster_issuer, count_pem, create_request, openssl_verify, ready, spiffe_csr,
    wait_for_ready,
};

const WAIT: Duration = Duration::from_secs(30);

fn vault_issuer(name: &str, bao: &OpenBao, mount: &str, auth: VaultAuthConfig) -> IssuerConfig {
    IssuerConfig {
        name: name.to_owned(),
        kind: "ClusterIssuer".to_owned(),
        group: "cert-manager.io".to_owned(),
        local_ca: None,
        vault: Some(VaultConfig {
            address: bao.address(),
            mount: mount.to_owned(),
            role: "spiffe".to_owned(),
            namespace: None,
            ca_bundle: None,
            client_certificate: None,
            client_key: None,
            timeout: "5s".to_owned(),
            max_in_flight: 32,
            auth,
        }),
    }
}

fn approle(bao: &OpenBao, pki: &openbao::Pki) -> VaultAuthConfig {
    VaultAuthConfig::AppRole {
        role_id: pki.role_id.clone(),
        secret_id_file: bao.write_file("secret-id", &pki.secret_id),
        mount: "approle".to_owned(),
    }
}

fn config(issuers: Vec<IssuerConfig>) -> Config {
    Config {
        issuers,
        ..Config::default()
    }
}

fn series(metric: &str, issuer: &str, extra: &str) -> String {
    format!(
        "nico_identity_issuer_{metric}{{issuer=\"ClusterIssuer.cert-manager.io/{issuer}\"{extra}}}"
    )
}

fn leaf_serial(text: &str) -> String {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.contains("Serial Number:") {
            let inline = line
                .split("Serial Number:")
                .nth(1)
                .unwrap_or_default()
                .trim();
            let value = if inline.is_empty() {
                lines.next().unwrap_or_default().trim()
            } else {
                inline.split(' ').next().unwrap_or_default()
            };
            return value.replace(':', "").to_lowercase();
        }
    }
    panic!("no serial in {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signs_every_chain_shape_and_leaves_other_requests_alone() {
    let bao = OpenBao::start(Storage::Dev);
    let pki = openbao::setup_pki(&bao, false);
    let token_file = bao.write_file("token", &openbao::signer_token(&bao, "1h"));
    // A role whose max_ttl cuts every certificate to 30 s, under the 1 min floor.
    bao.cli(&[
        "write",
        "pki/roles/short",
        "allowed_uri_sans=spiffe://nico.local/*",
        "require_cn=false",
        "key_type=any",
        "max_ttl=30s",
        "no_store=true",
    ]);
    let mut short = vault_issuer("vault-short", &bao, "pki", approle(&bao, &pki));
    if let Some(vault) = short.vault.as_mut() {
        vault.role = "short".to_owned();
    }
    let ca_dir = tempfile::tempdir().unwrap();
    let local = IssuerConfig {
        name: "local".to_owned(),
        kind: "ClusterIssuer".to_owned(),
        group: "cert-manager.io".to_owned(),
        local_ca: Some(LocalCaConfig {
            certificate: Some(ca_dir.path().join("ca.crt")),
            key: Some(ca_dir.path().join("ca.key")),
            secret: None,
            generate: true,
            validity: "24h".to_owned(),
            reload_interval: "1m".to_owned(),
        }),
        vault: None,
    };
    let harness = Harness::start(config(vec![
        vault_issuer("vault", &bao, "pki", approle(&bao, &pki)),
        vault_issuer(
            "vault-int",
            &bao,
            "pki_int",
            VaultAuthConfig::Token {
                token_file: token_file.clone(),
            },
        ),
        vault_issuer("vault-bare", &bao, "pki_bare", approle(&bao, &pki)),
        short,
        local,
    ]))
    .await;
    harness.wait_ready(200, WAIT).await;
    let client = harness.client.clone();

    // (request name, issuer, SPIFFE account, certificates in status.certificate)
    let issued = [
        ("root-direct", "vault", "a", 1),
        ("with-intermediate", "vault-int", "b", 2),
        ("intermediate-without-root", "vault-bare", "c", 2),
        ("local-ca", "local", "d", 1),
        ("root-direct-2", "vault", "e", 1),
        ("root-direct-3", "vault", "f", 1),
    ];
    for (name, issuer, account, _) in issued {
        let (_, csr) = spiffe_csr(account);
        create_request(
            &client,
            name,
            cluster_issuer(issuer),
            &csr,
            "1h",
            Some(true),
        )
        .await;
    }
    // A request for another issuer (cert-manager's), a denied one and a pending one.
    let (_, csr) = spiffe_csr("g");
    create_request(
        &client,
        "foreign",
        cluster_issuer("letsencrypt"),
        &csr,
        "1h",
        Some(true),
    )
    .await;
    create_request(
        &client,
        "denied",
        cluster_issuer("vault"),
        &csr,
        "1h",
        Some(false),
    )
    .await;
    create_request(
        &client,
        "pending",
        cluster_issuer("vault"),
        &csr,
        "1h",
        None,
    )
    .await;
    // An ID outside what the Vault role allows.
    let key = nico_csr::PrivateKey::generate(nico_csr::KeyAlgorithm::EcdsaP256).unwrap();
    let outside = nico_spiffe_id::SpiffeId::parse("spiffe://elsewhere.test/demo/sa/a").unwrap();
    let outside = nico_csr::build_spiffe_csr(&key, &outside).unwrap();
    create_request(
        &client,
        "refused",
        cluster_issuer("vault"),
        &outside,
        "1h",
        Some(true),
    )
    .await;
    let (_, csr) = spiffe_csr("h");
    create_request(
        &client,
        "cut-short",
        cluster_issuer("vault-short"),
        &csr,
        "1h",
        Some(true),
    )
    .await;

    for (name, issuer, account, certificates) in issued {
        let cr = wait_for_ready(&client, name, WAIT).await;
        let (is_ready, reason, message) = ready(&cr);
        assert!(is_ready, "{name}: {reason}: {message}");
        let status = cr.status.as_ref().unwrap();
        assert_eq!(
            count_pem(status.certificate.as_deref()),
            certificates,
            "{name}"
        );
        assert_eq!(count_pem(status.ca.as_deref()), 1, "{name}");
        let ca = String::from_utf8(status.ca.clone().unwrap()).unwrap();
        match issuer {
            "vault" | "vault-int" => assert_eq!(ca.trim(), pki.root_pem.trim(), "{name}"),
            // Vault knows no root for this mount: the intermediate is what pods trust.
            "vault-bare" => assert!(
                nico_csr::parse_certificate(&nico_csr::pem_to_ders(ca.as_bytes()).unwrap()[0])
                    .unwrap()
                    .subject()
                    .to_string()
                    .contains("pki_bare")
            ),
            _ => {}
        }
        if issuer != "vault-bare" {
            let text = openssl_verify(&cr).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                text.contains(&format!("URI:spiffe://nico.local/demo/sa/{account}")),
                "{name}: {text}"
            );
            assert!(
                !text.contains("Subject: CN"),
                "{name}: a common name appeared"
            );
        }
    }

    let refused = wait_for_ready(&client, "refused", WAIT).await;
    let (is_ready, reason, message) = ready(&refused);
    assert!(!is_ready);
    assert_eq!(reason, "Failed");
    assert!(message.contains("vault refused to sign"), "{message}");
    assert!(refused.status.as_ref().unwrap().failure_time.is_some());

    // Vault signed, but for 30 s: the answer fails its checks and the request says why.
    let cut = wait_for_ready(&client, "cut-short", WAIT).await;
    let (is_ready, reason, message) = ready(&cut);
    assert!(!is_ready);
    assert_eq!(reason, "Failed");
    assert!(message.contains("less than the 60s minimum"), "{message}");
    assert!(cut.status.as_ref().unwrap().certificate.is_none());

    let denied = wait_for_ready(&client, "denied", WAIT).await;
    assert_eq!(ready(&denied).1, "Denied");

    // The others are never touched.
    let api: kube::Api<nico_k8s_types::CertificateRequest> =
        kube::Api::namespaced(client.clone(), "default");
    for name in ["foreign", "pending"] {
        let cr = api.get(name).await.unwrap();
        assert!(
            cr.condition(nico_k8s_types::ConditionType::Ready).is_none(),
            "{name} was touched"
        );
        assert!(
            cr.status
                .as_ref()
                .and_then(|s| s.certificate.as_ref())
                .is_none()
        );
    }

    // One login per Vault issuer, however many signatures: the token is reused.
    let issued_total = harness
        .metric(&series("signatures_total", "vault", ",result=\"Issued\""))
        .await;
    assert_eq!(issued_total, 2.0 + 1.0);
    assert_eq!(
        harness
            .metric(&series("vault_logins_total", "vault", ""))
            .await,
        1.0
    );
    assert_eq!(
        harness
            .metric(&series("vault_logins_total", "vault-int", ""))
            .await,
        1.0
    );
    assert_eq!(
        harness
            .metric(&series("signatures_total", "vault", ",result=\"Failed\""))
            .await,
        1.0
    );
    let (_, metrics) = harness.get("/metrics").await;
    assert!(metrics.contains("nico_identity_issuer_signing_duration_seconds_bucket"));
    assert!(
        !metrics.contains(&pki.secret_id),
        "a secret reached the metrics"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_renewed_and_replaced_without_a_login_per_signature() {
    let bao = OpenBao::start(Storage::Dev);
    let pki = openbao::setup_pki(&bao, false);
    // Tokens live 6 s and at most 15 s: renewals happen, then the cap forces a new login.
    openbao::set_approle_ttls(&bao, "6s", "15s");
    let first = openbao::signer_token(&bao, "1h");
    let token_file = bao.write_file("token", &first);
    let harness = Harness::start(config(vec![
        vault_issuer("vault", &bao, "pki", approle(&bao, &pki)),
        vault_issuer(
            "vault-token",
            &bao,
            "pki",
            VaultAuthConfig::Token {
                token_file: token_file.clone(),
            },
        ),
    ]))
    .await;
    harness.wait_ready(200, WAIT).await;
    let client = harness.client.clone();
    let rounds = 20;
    for round in 0..rounds {
        let (_, csr) = spiffe_csr(&format!("r{round}"));
        let name = format!("renewal-{round}");
        create_request(
            &client,
            &name,
            cluster_issuer("vault"),
            &csr,
            "1h",
            Some(true),
        )
        .await;
        let cr = wait_for_ready(&client, &name, WAIT).await;
        assert!(ready(&cr).0, "{name}: {:?}", ready(&cr));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let renewals = harness
        .metric(&series("vault_token_renewals_total", "vault", ""))
        .await;
    let logins = harness
        .metric(&series("vault_logins_total", "vault", ""))
        .await;
    assert!(renewals >= 2.0, "renewals {renewals}");
    assert!(
        logins >= 2.0,
        "logins {logins}: the max TTL must force a new login"
    );
    assert!(
        logins < f64::from(rounds) / 2.0,
        "logins {logins} for {rounds} signatures"
    );

    // A revoked token is replaced by the file's new content on the next signature.
    let (_, csr) = spiffe_csr("t1");
    create_request(
        &client,
        "token-1",
        cluster_issuer("vault-token"),
        &csr,
        "1h",
        Some(true),
    )
    .await;
    assert!(ready(&wait_for_ready(&client, "token-1", WAIT).await).0);
    bao.cli(&["token", "revoke", &first]);
    std::fs::write(&token_file, openbao::signer_token(&bao, "1h")).unwrap();
    let (_, csr) = spiffe_csr("t2");
    create_request(
        &client,
        "token-2",
        cluster_issuer("vault-token"),
        &csr,
        "1h",
        Some(true),
    )
    .await;
    let cr = wait_for_ready(&client, "token-2", WAIT).await;
    assert!(ready(&cr).0, "{:?}", ready(&cr));
    assert_eq!(
        harness
            .metric(&series("vault_logins_total", "vault-token", ""))
            .await,
        2.0
    );
    harness.stop().await;
}

fn stored_serials(bao: &OpenBao) -> Vec<String> {
    let listed = bao.cli(&["list", "-format=json", "pki/certs"]);
    let serials: Vec<String> = serde_json::from_str(&listed).unwrap();
    serials
        .into_iter()
        .map(|s| s.replace([':', '-'], "").to_lowercase())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_nothing_and_every_request_is_issued_once() {
    let mut bao = OpenBao::start(Storage::File);
    let pki = openbao::setup_pki(&bao, true);
    let harness = Harness::start(config(vec![vault_issuer(
        "vault",
        &bao,
        "pki",
        approle(&bao, &pki),
    )]))
    .await;
    harness.wait_ready(200, WAIT).await;
    let client = harness.client.clone();
    let (_, csr) = spiffe_csr("warm");
    create_request(
        &client,
        "warm-up",
        cluster_issuer("vault"),
        &csr,
        "1h",
        Some(true),
    )
    .await;
    assert!(ready(&wait_for_ready(&client, "warm-up", WAIT).await).0);
    let before = stored_serials(&bao);

    bao.stop();
    harness.wait_ready(503, WAIT).await;
    let names: Vec<String> = (0..5).map(|i| format!("outage-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let (_, csr) = spiffe_csr(&format!("o{i}"));
        create_request(
            &client,
            name,
            cluster_issuer("vault"),
            &csr,
            "1h",
            Some(true),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Back, but sealed: still nothing can be signed, and nothing is marked failed.
    bao.start_again();
    tokio::time::sleep(Duration::from_secs(3)).await;
    harness.wait_ready(503, WAIT).await;
    let api: kube::Api<nico_k8s_types::CertificateRequest> =
        kube::Api::namespaced(client.clone(), "default");
    for name in &names {
        let cr = api.get(name).await.unwrap();
        assert!(
            cr.condition(nico_k8s_types::ConditionType::Ready).is_none(),
            "{name} was written during the outage: {:?}",
            cr.status
        );
    }
    assert!(
        harness
            .metric(&series("signatures_total", "vault", ",result=\"Retried\""))
            .await
            >= 5.0
    );

    bao.unseal();
    harness.wait_ready(200, WAIT).await;
    let mut serials = Vec::new();
    for name in &names {
        // Backoff is capped at 30 s (with jitter), so every request is retried in time.
        let cr = wait_for_ready(&client, name, Duration::from_secs(60)).await;
        assert!(ready(&cr).0, "{name}: {:?}", ready(&cr));
        let text = openssl_verify(&cr).unwrap_or_else(|e| panic!("{name}: {e}"));
        serials.push(leaf_serial(&text));
    }
    // Vault stored exactly one new certificate per request, and they are the ones written.
    let after = stored_serials(&bao);
    let new: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
    assert_eq!(new.len(), names.len(), "new certificates in vault: {new:?}");
    for serial in &serials {
        let trimmed = serial.trim_start_matches('0');
        assert!(
            new.iter().any(|s| s.trim_start_matches('0') == trimmed),
            "{serial} is not among {new:?}"
        );
    }
    assert_eq!(
        harness
            .metric(&series("signatures_total", "vault", ",result=\"Failed\""))
            .await,
        0.0
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_auth_logs_in_with_a_service_account_token_of_the_dev_cluster() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::{Api, ObjectMeta, PostParams};

    let bao = OpenBao::start(Storage::Dev);
    openbao::setup_pki(&bao, false);
    let token_file = bao.dir().join("sa-token");
    let harness = Harness::start(config(vec![vault_issuer(
        "vault-k8s",
        &bao,
        "pki",
        VaultAuthConfig::Kubernetes {
            role: "issuer".to_owned(),
            mount: "kubernetes".to_owned(),
            token_file: token_file.clone(),
        },
    )]))
    .await;
    // Vault reviews the issuer's token with the dev cluster's TokenReview.
    let ca = bao.write_file("cluster-ca.pem", harness.cluster.ca_pem());
    bao.cli(&["auth", "enable", "kubernetes"]);
    bao.cli(&[
        "write",
        "auth/kubernetes/config",
        &format!("kubernetes_host={}", harness.cluster.url()),
        &format!("kubernetes_ca_cert=@{}", ca.display()),
        &format!("token_reviewer_jwt={}", harness.cluster.admin_token()),
        "disable_local_ca_jwt=true",
    ]);
    bao.cli(&[
        "write",
        "auth/kubernetes/role/issuer",
        "bound_service_account_names=nico-issuer",
        "bound_service_account_namespaces=default",
        "token_policies=signer",
        "token_ttl=1h",
    ]);
    let accounts: Api<ServiceAccount> = Api::namespaced(harness.client.clone(), "default");
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("nico-issuer".to_owned()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request("nico-issuer", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    std::fs::write(&token_file, token).unwrap();

    let client = harness.client.clone();
    let (_, csr) = spiffe_csr("k8s");
    create_request(
        &client,
        "k8s-auth",
        cluster_issuer("vault-k8s"),
        &csr,
        "1h",
        Some(true),
    )
    .await;
    let cr = wait_for_ready(&client, "k8s-auth", WAIT).await;
    assert!(ready(&cr).0, "{:?}\n{}", ready(&cr), bao.log());
    openssl_verify(&cr).unwrap();
    assert!(
        harness
            .metric(&series("vault_logins_total", "vault-k8s", ""))
            .await
            >= 1.0
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_needs_the_ca_bundle_and_a_wrong_trust_fails_nothing() {
    let bao = OpenBao::start(Storage::DevTls);
    // The dev server writes its CA once it listens; the CLI below needs it too.
    let pki = openbao::setup_pki(&bao, false);
    let mut trusted = vault_issuer("vault-tls", &bao, "pki", approle(&bao, &pki));
    if let Some(vault) = trusted.vault.as_mut() {
        vault.ca_bundle = Some(bao.tls_ca());
    }
    let untrusted = vault_issuer("vault-untrusted", &bao, "pki", approle(&bao, &pki));
    let harness = Harness::start(config(vec![trusted, untrusted])).await;
    let client = harness.client.clone();
    let (_, csr) = spiffe_csr("tls");
    create_request(
        &client,
        "over-tls",
        cluster_issuer("vault-tls"),
        &csr,
        "1h",
        Some(true),
    )
    .await;
    create_request(
        &client,
        "untrusted",
        cluster_issuer("vault-untrusted"),
        &csr,
        "1h",
        Some(true),
    )
    .await;
    let cr = wait_for_ready(&client, "over-tls", WAIT).await;
    assert!(ready(&cr).0, "{:?}", ready(&cr));
    openssl_verify(&cr).unwrap();
    // Without the CA bundle the server's certificate is not trusted: the issuer is not
    // ready, and the request waits instead of failing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = harness.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("vault-untrusted"), "{body}");
    let api: kube::Api<nico_k8s_types::CertificateRequest> =
        kube::Api::namespaced(client.clone(), "default");
    let waiting = api.get("untrusted").await.unwrap();
    assert!(
        waiting
            .condition(nico_k8s_types::ConditionType::Ready)
            .is_none()
    );
    assert!(
        harness
            .metric(&series(
                "signatures_total",
                "vault-untrusted",
                ",result=\"Retried\""
            ))
            .await
            >= 1.0
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_namespace_is_sent_with_every_request() {
    let mut bao = OpenBao::start(Storage::Dev);
    bao.use_namespace(Some("team-a"));
    // PKI, policy and AppRole all live inside the namespace.
    let pki = openbao::setup_pki(&bao, false);
    let mut inside = vault_issuer("vault-ns", &bao, "pki", approle(&bao, &pki));
    if let Some(vault) = inside.vault.as_mut() {
        vault.namespace = Some("team-a".to_owned());
    }
    // The same settings without the namespace find no such mount or role.
    let outside = vault_issuer("vault-root-ns", &bao, "pki", approle(&bao, &pki));
    let harness = Harness::start(config(vec![inside, outside])).await;
    let client = harness.client.clone();
    let (_, csr) = spiffe_csr("ns");
    create_request(
        &client,
        "in-namespace",
        cluster_issuer("vault-ns"),
        &csr,
        "1h",
        Some(true),
    )
    .await;
    let cr = wait_for_ready(&client, "in-namespace", WAIT).await;
    assert!(ready(&cr).0, "{:?}", ready(&cr));
    let text = openssl_verify(&cr).unwrap();
    assert!(
        text.contains("URI:spiffe://nico.local/demo/sa/ns"),
        "{text}"
    );
    assert_eq!(
        String::from_utf8(cr.status.unwrap().ca.unwrap())
            .unwrap()
            .trim(),
        pki.root_pem.trim()
    );
    // Readiness follows sys/health, which only the root namespace answers.
    harness.wait_ready(200, WAIT).await;
    // Without the namespace the AppRole mount does not exist: the login fails, which is
    // not the request's fault, so it waits instead of failing.
    create_request(
        &client,
        "outside-namespace",
        cluster_issuer("vault-root-ns"),
        &csr,
        "1h",
        Some(true),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let retried = series("signatures_total", "vault-root-ns", ",result=\"Retried\"");
    while harness.metric(&retried).await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "never retried");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let api: kube::Api<nico_k8s_types::CertificateRequest> =
        kube::Api::namespaced(client.clone(), "default");
    let waiting = api.get("outside-namespace").await.unwrap();
    assert!(
        waiting
            .condition(nico_k8s_types::ConditionType::Ready)
            .is_none()
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_opens_a_server_that_requires_one() {
    let bao = OpenBao::start(Storage::MutualTls);
    let pki = openbao::setup_pki(&bao, false);
    let (cert, key) = bao.client_identity();
    let mut with_certificate = vault_issuer("vault-mtls", &bao, "pki", approle(&bao, &pki));
    if let Some(vault) = with_certificate.vault.as_mut() {
        vault.ca_bundle = Some(bao.tls_ca());
        vault.client_certificate = Some(cert);
        vault.client_key = Some(key);
    }
    let mut without = vault_issuer("vault-no-cert", &bao, "pki", approle(&bao, &pki));
    if let Some(vault) = without.vault.as_mut() {
        vault.ca_bundle = Some(bao.tls_ca());
    }
    let harness = Harness::start(config(vec![with_certificate, without])).await;
    let client = harness.client.clone();
    let (_, csr) = spiffe_csr("mtls");
    create_request(
        &client,
        "mtls",
        cluster_issuer("vault-mtls"),
        &csr,
        "1h",
        Some(true),
    )
    .await;
    create_request(
        &client,
        "no-cert",
        cluster_issuer("vault-no-cert"),
        &csr,
        "1h",
        Some(true),
    )
    .await;
    let cr = wait_for_ready(&client, "mtls", WAIT).await;
    assert!(ready(&cr).0, "{:?}", ready(&cr));
    openssl_verify(&cr).unwrap();
    // Without the certificate the handshake fails: not ready, and the request waits.
    let retried = series("signatures_total", "vault-no-cert", ",result=\"Retried\"");
    let deadline = tokio::time::Instant::now() + WAIT;
    while harness.metric(&retried).await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "never retried");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = harness.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("vault-no-cert") && !body.contains("vault-mtls"),
        "{body}"
    );
    harness.stop().await;
}

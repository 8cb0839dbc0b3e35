//! Issuance throughput, as a bench command (numbers go to BENCHMARKS.md):
//!
//! - `local`: approver + issuer (local CA) on the dev cluster. Requests are created first,
//!   as pods would, then both roles start and the clock runs until every request is Ready.
//! - `vault`: the issuer's signatures per second against an OpenBao dev server, beside the
//!   server's own raw sign rate measured in the same run by a plain concurrent client.
//!
//! `cargo bench -p nico-issuer --bench issuance -- [local|vault] [--requests N]`

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher;
use nico_dev_cluster::{DevCluster, DevClusterConfig};
use nico_k8s_types::{CertificateRequest, CertificateRequestSpec, ConditionType, SPIFFE_USAGES};
use nico_runtime::{BearerToken, KubeAccess, RoleContext, Telemetry};
use support::openbao::{self, OpenBao, Storage};
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "bench";
const ACCOUNT: &str = "web";

#[allow(clippy::print_stdout, reason = "a bench command reports on stdout")]
fn report(line: &str) {
    println!("{line}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let requests = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .map_or(2000, |n| n.parse().expect("--requests takes a number"));
    let modes = ["local", "local-issuer", "vault"];
    let wanted = |name: &str| {
        !args.iter().any(|a| modes.contains(&a.as_str())) || args.iter().any(|a| a == name)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        if wanted("local") {
            local_ca(requests, true).await;
        }
        if wanted("local-issuer") {
            local_ca(requests, false).await;
        }
        if wanted("vault") {
            vault(requests).await;
        }
    });
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

/// A namespace, a service account allowed to create requests, a pod running as it, and a
/// client holding that pod's bound token: what the node driver submits requests with.
async fn pod_client(access: &KubeAccess) -> kube::Client {
    let admin = access.client().expect("admin client");
    let pp = PostParams::default();
    Api::<Namespace>::all(admin.clone())
        .create(
            &pp,
            &Namespace {
                metadata: meta(NAMESPACE),
                ..Namespace::default()
            },
        )
        .await
        .expect("namespace");
    let _ = Api::<ServiceAccount>::namespaced(admin.clone(), NAMESPACE)
        .create(
            &pp,
            &ServiceAccount {
                metadata: meta(ACCOUNT),
                ..ServiceAccount::default()
            },
        )
        .await;
    Api::<Role>::namespaced(admin.clone(), NAMESPACE)
        .create(
            &pp,
            &Role {
                metadata: meta("requester"),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec!["cert-manager.io".into()]),
                    resources: Some(vec!["certificaterequests".into()]),
                    verbs: vec!["create".into(), "get".into(), "list".into(), "watch".into()],
                    ..PolicyRule::default()
                }]),
            },
        )
        .await
        .expect("role");
    Api::<RoleBinding>::namespaced(admin.clone(), NAMESPACE)
        .create(
            &pp,
            &RoleBinding {
                metadata: meta("requester"),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: "requester".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: ACCOUNT.into(),
                    namespace: Some(NAMESPACE.into()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .expect("role binding");
    let pod = Api::<Pod>::namespaced(admin.clone(), NAMESPACE)
        .create(
            &pp,
            &Pod {
                metadata: meta("web-0"),
                spec: Some(PodSpec {
                    service_account_name: Some(ACCOUNT.into()),
                    node_name: Some("bench-node".into()),
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some("registry.k8s.io/pause:3.10".into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
                ..Pod::default()
            },
        )
        .await
        .expect("pod");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin, NAMESPACE)
        .create_token_request(ACCOUNT, &pp, &request)
        .await
        .expect("token request")
        .status
        .expect("a token")
        .token;
    access
        .client_with_token(&BearerToken::new(token))
        .expect("pod client")
}

/// Creates `count` requests (distinct keys) with `client`, 16 at a time.
async fn create_requests(
    client: &kube::Client,
    namespace: &str,
    count: usize,
    issuer: &str,
) -> Vec<String> {
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), namespace);
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let (_, csr) = support::spiffe_csr_in(NAMESPACE, ACCOUNT);
                let name = format!("bench-{i}");
                let request = CertificateRequest {
                    metadata: meta(&name),
                    spec: CertificateRequestSpec {
                        request: csr.into_bytes(),
                        issuer_ref: support::cluster_issuer(issuer),
                        duration: Some("1h".into()),
                        usages: Some(SPIFFE_USAGES.iter().map(|u| (*u).to_owned()).collect()),
                        is_ca: Some(false),
                        ..CertificateRequestSpec::default()
                    },
                    status: None,
                };
                api.create(&PostParams::default(), &request)
                    .await
                    .map(|_| name)
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("create the requests")
}

/// Waits until every named request is Ready=True; returns when the last one got there.
async fn all_ready(client: &kube::Client, namespace: &str, names: &[String]) -> Instant {
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), namespace);
    let mut pending: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while !pending.is_empty() {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("every request is ready within 10 minutes")
            .expect("the watch goes on")
            .expect("a watch event");
        let objects = match event {
            watcher::Event::Apply(cr) | watcher::Event::InitApply(cr) => vec![cr],
            _ => Vec::new(),
        };
        for cr in objects {
            let ready = cr
                .condition(ConditionType::Ready)
                .map(|c| c.status.as_str());
            match ready {
                Some("True") => {
                    pending.remove(cr.metadata.name.as_deref().unwrap_or_default());
                }
                Some(_) => panic!("{:?} failed: {:?}", cr.metadata.name, cr.status),
                None => {}
            }
        }
    }
    Instant::now()
}

/// Writes `Approved=True` on every request, as an approver would.
async fn approve_all(client: &kube::Client, namespace: &str, names: &[String]) {
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), namespace);
    futures::stream::iter(names.iter())
        .map(|name| {
            let api = api.clone();
            async move {
                let mut cr = api.get(name).await?;
                cr.set_condition(nico_k8s_types::Condition::new(
                    ConditionType::Approved,
                    nico_k8s_types::ConditionStatus::True,
                    "Bench",
                    "approved for the benchmark",
                ));
                api.replace_status(name, &PostParams::default(), &cr).await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("approve the requests");
}

async fn context(access: KubeAccess, shutdown: &CancellationToken) -> RoleContext {
    let telemetry = Telemetry::new();
    telemetry
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)), shutdown.clone())
        .await
        .expect("serve health");
    RoleContext {
        access,
        telemetry,
        shutdown: shutdown.clone(),
        identity: "bench".to_owned(),
        namespace: "default".to_owned(),
    }
}

/// With `approver`, the approver judges the requests; without, they are approved before the
/// clock starts and only the issuer runs.
async fn local_ca(requests: usize, approver: bool) {
    let cluster = DevCluster::start(DevClusterConfig {
        watch_history: 100_000,
        ..DevClusterConfig::default()
    })
    .await
    .expect("dev cluster");
    let access = support::access(&cluster).await;
    let pods = pod_client(&access).await;
    let names = create_requests(&pods, NAMESPACE, requests, "nico-identity").await;
    let admin = access.client().expect("admin client");
    if !approver {
        approve_all(&admin, NAMESPACE, &names).await;
    }
    let ca_dir = tempfile::tempdir().expect("a directory");
    let mut issuer = nico_issuer::Config::default();
    if let Some(ca) = issuer.issuers[0].local_ca.as_mut() {
        ca.certificate = Some(ca_dir.path().join("ca.crt"));
        ca.key = Some(ca_dir.path().join("ca.key"));
        ca.generate = true;
    }
    let issuer = issuer.validate().expect("issuer settings");
    let settings = nico_approver::Config::default()
        .validate()
        .expect("approver settings");
    let shutdown = CancellationToken::new();
    let ctx = context(access.clone(), &shutdown).await;
    let started = Instant::now();
    let approver_task = approver.then(|| tokio::spawn(nico_approver::run(settings, ctx.clone())));
    let issuer_task = tokio::spawn(nico_issuer::run(issuer, ctx));
    let done = all_ready(&admin, NAMESPACE, &names).await;
    let elapsed = done - started;
    let what = if approver {
        "approved and issued"
    } else {
        "issued (approved beforehand)"
    };
    report(&format!(
        "local: {requests} requests {what} in {:.2}s: {:.0} requests/s",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    ));
    shutdown.cancel();
    if let Some(task) = approver_task {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), issuer_task).await;
    cluster.shutdown().await;
}

/// bao's own rate: `clients` concurrent loops signing the same CSR for `window`.
async fn raw_sign_rate(bao: &OpenBao, token: &str, clients: usize, window: Duration) -> f64 {
    let settings = vaultrs::client::VaultClientSettingsBuilder::default()
        .address(bao.address())
        .token(token)
        .build()
        .expect("client settings");
    let client = Arc::new(vaultrs::client::VaultClient::new(settings).expect("a vault client"));
    let (_, csr) = support::spiffe_csr_in(NAMESPACE, ACCOUNT);
    let signed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, csr, signed) = (client.clone(), csr.clone(), signed.clone());
            tokio::spawn(async move {
                while started.elapsed() < window {
                    let request = vaultrs::api::pki::requests::SignCertificateRequest::builder()
                        .mount("pki")
                        .role("spiffe")
                        .csr(csr.as_str())
                        .uri_sans(format!("spiffe://nico.local/{NAMESPACE}/sa/{ACCOUNT}"))
                        .ttl("3600s")
                        .exclude_cn_from_sans(true)
                        .build()
                        .expect("a request");
                    vaultrs::api::exec_with_result(client.as_ref(), request)
                        .await
                        .expect("bao signs");
                    signed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a client loop");
    }
    signed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The issuer's own signing path without Kubernetes: `clients` loops each parsing a CSR,
/// signing it through the backend (its cached token) and checking the answer, for `window`.
async fn backend_sign_rate(
    config: &nico_issuer::VaultConfig,
    clients: usize,
    window: Duration,
) -> f64 {
    let settings = nico_issuer::Config {
        issuers: vec![nico_issuer::IssuerConfig {
            name: "bench".into(),
            kind: "ClusterIssuer".into(),
            group: "cert-manager.io".into(),
            local_ca: None,
            vault: Some(config.clone()),
        }],
        ..nico_issuer::Config::default()
    }
    .validate()
    .expect("settings");
    let nico_issuer::BackendSettings::Vault(vault) = settings.issuers[0].backend.clone() else {
        unreachable!("a vault issuer was configured");
    };
    let backend = Arc::new(nico_issuer::VaultBackend::new("bench", vault).expect("a backend"));
    let (_, csr) = support::spiffe_csr_in(NAMESPACE, ACCOUNT);
    let usages: Vec<String> = SPIFFE_USAGES.iter().map(|u| (*u).to_owned()).collect();
    let signed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (backend, csr, usages, signed) =
                (backend.clone(), csr.clone(), usages.clone(), signed.clone());
            tokio::spawn(async move {
                while started.elapsed() < window {
                    let parsed = nico_csr::parse_csr(csr.as_bytes()).expect("a CSR");
                    let request = nico_issuer::SignRequest {
                        csr_pem: csr.as_bytes(),
                        csr: &parsed,
                        duration: Duration::from_secs(3600),
                        usages: &usages,
                        is_ca: false,
                    };
                    let issued = backend.sign(&request).await.expect("the backend signs");
                    let approved = nico_issuer::Approved {
                        csr: &parsed,
                        duration: Duration::from_secs(3600),
                        min_lifetime: Duration::from_secs(60),
                    };
                    nico_issuer::check_result(issued, &approved, time::OffsetDateTime::now_utc())
                        .expect("the answer passes its checks");
                    signed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a client loop");
    }
    signed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn vault(requests: usize) {
    let bao = OpenBao::start(Storage::Dev);
    let pki = openbao::setup_pki(&bao, false);
    // The raw client signs with a token from the same AppRole login as the issuer's, so
    // both pay the same ACL and identity checks (a root token skips them).
    let token = bao.cli(&[
        "write",
        "-field=token",
        "auth/approle/login",
        &format!("role_id={}", pki.role_id),
        &format!("secret_id={}", pki.secret_id),
    ]);
    let raw = raw_sign_rate(&bao, &token, 32, Duration::from_secs(10)).await;
    report(&format!(
        "vault: bao raw sign rate, 32 concurrent clients: {raw:.0} signatures/s"
    ));
    let secret_id = bao.write_file("secret-id", &pki.secret_id);
    let vault_config = nico_issuer::VaultConfig {
        address: bao.address(),
        mount: "pki".into(),
        role: "spiffe".into(),
        namespace: None,
        ca_bundle: None,
        client_certificate: None,
        client_key: None,
        timeout: "10s".into(),
        max_in_flight: 32,
        auth: nico_issuer::VaultAuthConfig::AppRole {
            role_id: pki.role_id.clone(),
            secret_id_file: secret_id,
            mount: "approle".into(),
        },
    };
    let backend = backend_sign_rate(&vault_config, 32, Duration::from_secs(10)).await;
    report(&format!(
        "vault: issuer backend (parse, sign through its token, check the answer), 32 at once: \
         {backend:.0} signatures/s, {:.2} of bao's raw rate",
        backend / raw
    ));

    let cluster = DevCluster::start(DevClusterConfig {
        watch_history: 100_000,
        ..DevClusterConfig::default()
    })
    .await
    .expect("dev cluster");
    let access = support::access(&cluster).await;
    let admin = access.client().expect("admin client");
    let names = create_requests(&admin, "default", requests, "vault").await;
    approve_all(&admin, "default", &names).await;
    let issuer = nico_issuer::Config {
        issuers: vec![nico_issuer::IssuerConfig {
            name: "vault".into(),
            kind: "ClusterIssuer".into(),
            group: "cert-manager.io".into(),
            local_ca: None,
            vault: Some(vault_config),
        }],
        ..nico_issuer::Config::default()
    }
    .validate()
    .expect("issuer settings");
    let shutdown = CancellationToken::new();
    let ctx = context(access, &shutdown).await;
    let started = Instant::now();
    let task = tokio::spawn(nico_issuer::run(issuer, ctx));
    let done = all_ready(&admin, "default", &names).await;
    let elapsed = done - started;
    let rate = requests as f64 / elapsed.as_secs_f64();
    report(&format!(
        "vault: issuer end to end (watch, sign, check, write the status, an Event) on the dev \
         cluster: {requests} requests in {:.2}s: {rate:.0} signatures/s, {:.2} of bao's raw rate",
        elapsed.as_secs_f64(),
        rate / raw
    ));
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    cluster.shutdown().await;
}

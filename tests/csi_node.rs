//! The node driver as a platform team runs it: the CSI contract, mounts, restarts, trust
//! bundles, issuer overrides, key types, bad issuers, metrics and events.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use nico_identity_cli::dev::{PodVolume, VolumeFile};
use nico_identity_tests::signer::{Behaviour, TestSigner};
use nico_identity_tests::{
    dev_environment, dev_environment_with, eventually, http_get, openssl, verify_with_webpki,
};
use nico_k8s_types::CertificateRequest;

const SECOND: Duration = Duration::from_secs(1);

fn csi_error_code(error: &nico_identity_cli::dev::KubeletError) -> tonic::Code {
    match error {
        nico_identity_cli::dev::KubeletError::Csi(status) => status.code(),
        other => panic!("expected a CSI error, got {other}"),
    }
}

async fn requests(
    env: &nico_identity_cli::dev::DevEnvironment,
    namespace: &str,
) -> Vec<CertificateRequest> {
    Api::<CertificateRequest>::namespaced(env.access.client().unwrap(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_publish_is_already_exists_and_an_unknown_unpublish_succeeds() {
    let (env, _dir) = dev_environment().await;
    let volume = env.create_demo_pod("demo", "web", "web-0").await.unwrap();
    let kubelet = env.kubelet().await.unwrap();
    kubelet.publish(&volume).await.unwrap();

    let (token, expires) = kubelet.pod_token(&volume).await.unwrap();
    let mut request = nico_identity_cli::dev::publish_request(&volume, &token, &expires);
    request
        .volume_context
        .insert("spiffe.csi.cert-manager.io/fs-group".into(), "4000".into());
    let err = kubelet.publish_with(request).await.unwrap_err();
    assert_eq!(csi_error_code(&err), tonic::Code::AlreadyExists, "{err}");

    let stranger = PodVolume::new(
        "demo",
        "gone",
        "uid-gone",
        "web",
        env.workdir().join("pods/demo/gone"),
        env.csi_settings().files.clone(),
    );
    kubelet.unpublish(&stranger).await.unwrap();
    // And twice for a real one.
    kubelet.unpublish(&volume).await.unwrap();
    kubelet.unpublish(&volume).await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_volumes_are_one_read_only_tmpfs_each_however_often_published() {
    let probe = tempfile::tempdir().unwrap();
    let can_mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(probe.path())
        .status()
        .is_ok_and(|s| s.success());
    if !can_mount {
        eprintln!(
            "SKIPPED: this environment cannot mount tmpfs (needs CAP_SYS_ADMIN); the no-mount path is covered by every other test"
        );
        return;
    }
    let _ = std::process::Command::new("umount")
        .arg(probe.path())
        .status();

    let (env, _dir) = dev_environment_with(|options| options.mount = true).await;
    let volume = env.create_demo_pod("demo", "web", "web-0").await.unwrap();
    let kubelet = env.kubelet().await.unwrap();
    for _ in 0..3 {
        kubelet.publish(&volume).await.unwrap();
    }
    let target = volume.target_path.display().to_string();
    let mounts_at = |path: &str| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|line| line.split(' ').nth(4) == Some(path))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let mounts = mounts_at(&target);
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert!(
        mounts[0].contains(" ro,") && mounts[0].contains(" - tmpfs "),
        "{}",
        mounts[0]
    );
    verify_with_webpki(
        &volume.file(VolumeFile::Certificate),
        &volume.file(VolumeFile::Ca),
    )
    .unwrap();
    let write = std::fs::write(volume.target_path.join("intruder"), b"x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(30), "EROFS expected: {write}");

    kubelet.unpublish(&volume).await.unwrap();
    assert!(mounts_at(&target).is_empty());
    let data = env
        .workdir()
        .join("csi-state/volumes")
        .join(&volume.volume_id)
        .join("data");
    assert!(mounts_at(&data.display().to_string()).is_empty());
    assert!(!data.exists());
    env.stop().await;
}

async fn put_config_map(client: &kube::Client, name: &str, data: &[(&str, &str)]) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    match api.get_opt(name).await.unwrap() {
        Some(existing) => {
            let mut map = map;
            map.metadata.resource_version = existing.metadata.resource_version;
            api.replace(name, &PostParams::default(), &map)
                .await
                .unwrap();
        }
        None => {
            api.create(&PostParams::default(), &map).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_bundle_configmap_reaches_every_volume_and_follows_changes() {
    let (env, dir) = dev_environment_with(|options| {
        options.config.csi_node.trust_bundle.config_map = Some(nico_csi_node::ConfigMapKey {
            namespace: "default".into(),
            name: "trust-bundle".into(),
            key: "ca.crt".into(),
        });
    })
    .await;
    let client = env.access.client().unwrap();
    let dev_ca = std::fs::read_to_string(dir.path().join("ca/ca.crt")).unwrap();
    let other = TestSigner::start(client.clone(), Default::default(), Behaviour::Garbage)
        .ca_pem
        .clone();
    put_config_map(
        &client,
        "trust-bundle",
        &[("ca.crt", &format!("{dev_ca}{other}"))],
    )
    .await;

    let kubelet = env.kubelet().await.unwrap();
    let mut volumes = Vec::new();
    for pod in ["web-0", "web-1"] {
        let volume = env.create_demo_pod("demo", "web", pod).await.unwrap();
        kubelet.publish(&volume).await.unwrap();
        volumes.push(volume);
    }
    for volume in &volumes {
        let ca = std::fs::read_to_string(volume.file(VolumeFile::Ca)).unwrap();
        assert_eq!(ca, format!("{dev_ca}{other}"));
        verify_with_webpki(
            &volume.file(VolumeFile::Certificate),
            &volume.file(VolumeFile::Ca),
        )
        .unwrap();
    }
    let serials: Vec<_> = volumes.iter().map(PodVolume::current_serial).collect();

    // Rotation finished: the bundle drops the extra root; every volume follows, keys untouched.
    put_config_map(&client, "trust-bundle", &[("ca.crt", &dev_ca)]).await;
    for volume in &volumes {
        eventually("ca.crt to follow the ConfigMap", 10 * SECOND, || async {
            (std::fs::read_to_string(volume.file(VolumeFile::Ca)).ok()? == dev_ca).then_some(())
        })
        .await;
        openssl(
            &volume.target_path,
            &["verify", "-CAfile", "ca.crt", "tls.crt"],
        )
        .unwrap();
    }
    assert_eq!(
        volumes
            .iter()
            .map(PodVolume::current_serial)
            .collect::<Vec<_>>(),
        serials
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_override_configmap_redirects_new_requests() {
    let (env, _dir) = dev_environment_with(|options| {
        options.config.csi_node.issuer_config_map = Some(nico_csi_node::ObjectName {
            namespace: "default".into(),
            name: "issuer".into(),
        });
    })
    .await;
    let client = env.access.client().unwrap();
    put_config_map(
        &client,
        "issuer",
        &[("issuer-name", "elsewhere"), ("issuer-kind", "Issuer")],
    )
    .await;
    let driver = env.driver.clone().unwrap();
    eventually("the override to apply", 10 * SECOND, || async {
        (driver.current_issuer().to_string() == "Issuer.cert-manager.io/elsewhere").then_some(())
    })
    .await;
    let volume = env.create_demo_pod("demo", "web", "web-0").await.unwrap();
    let kubelet = env.kubelet().await.unwrap();
    // The request names the new issuer; this cluster's approver only approves SPIFFE requests
    // aimed at its configured SPIFFE issuer, so it is denied, naming both.
    let err = kubelet.publish(&volume).await.unwrap_err();
    assert_eq!(csi_error_code(&err), tonic::Code::PermissionDenied, "{err}");
    assert!(
        err.to_string().contains("Issuer.cert-manager.io/elsewhere"),
        "{err}"
    );
    let named = requests(&env, "demo").await;
    assert!(
        named
            .iter()
            .all(|cr| cr.spec.issuer_ref.name == "elsewhere"),
        "{named:?}"
    );

    Api::<ConfigMap>::namespaced(client, "default")
        .delete("issuer", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the default issuer to come back", 15 * SECOND, || async {
        kubelet.publish(&volume).await.ok()
    })
    .await;
    verify_with_webpki(
        &volume.file(VolumeFile::Certificate),
        &volume.file(VolumeFile::Ca),
    )
    .unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_choose_key_types_within_the_allow_list() {
    let every = ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048"];
    let (env, _dir) = dev_environment_with(|options| {
        options.config.csi_node.allowed_key_algorithms =
            every.iter().map(|a| (*a).into()).collect();
        options.config.approver.key_algorithms = every.iter().map(|a| (*a).into()).collect();
    })
    .await;
    let kubelet = env.kubelet().await.unwrap();
    let expected_openssl = [
        "id-ecPublicKey",
        "id-ecPublicKey",
        "ED25519",
        "rsaEncryption",
    ];
    for (i, (algorithm, shown)) in every.iter().zip(expected_openssl).enumerate() {
        let volume = env
            .create_demo_pod("demo", "web", &format!("web-{i}"))
            .await
            .unwrap();
        let (token, expires) = kubelet.pod_token(&volume).await.unwrap();
        let mut request = nico_identity_cli::dev::publish_request(&volume, &token, &expires);
        request
            .volume_context
            .insert("identity.nico.io/key-algorithm".into(), (*algorithm).into());
        kubelet
            .publish_with(request)
            .await
            .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
        verify_with_webpki(
            &volume.file(VolumeFile::Certificate),
            &volume.file(VolumeFile::Ca),
        )
        .unwrap();
        let text = openssl(
            &volume.target_path,
            &["x509", "-in", "tls.crt", "-noout", "-text"],
        )
        .unwrap();
        assert!(text.contains(shown), "{algorithm}: {text}");
    }
    // Outside the allow-list: refused before anything is requested.
    let volume = env.create_demo_pod("demo", "web", "web-9").await.unwrap();
    let (token, expires) = kubelet.pod_token(&volume).await.unwrap();
    let mut request = nico_identity_cli::dev::publish_request(&volume, &token, &expires);
    request
        .volume_context
        .insert("identity.nico.io/key-algorithm".into(), "rsa-4096".into());
    let err = kubelet.publish_with(request).await.unwrap_err();
    assert_eq!(csi_error_code(&err), tonic::Code::InvalidArgument, "{err}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_issuer_answers_never_reach_the_pod_and_the_next_attempt_uses_a_fresh_key() {
    let (env, _dir) = dev_environment_with(|options| {
        options.embedded.issuer = false;
        options.config.csi_node.publish_timeout = "5s".into();
    })
    .await;
    let issuer = env.csi_settings().issuer.clone();
    let signer = TestSigner::start(env.access.client().unwrap(), issuer, Behaviour::Garbage);
    let volume = env.create_demo_pod("demo", "web", "web-0").await.unwrap();
    let kubelet = env.kubelet().await.unwrap();
    let mut keys_seen = std::collections::BTreeSet::new();
    for (behaviour, fragment) in [
        (Behaviour::Garbage, "not a PEM certificate bundle"),
        (
            Behaviour::ForeignKey,
            "does not carry the key this node generated",
        ),
        (
            Behaviour::OtherId,
            "expected exactly URI spiffe://nico.local/demo/sa/web",
        ),
        (Behaviour::Expired, "expired"),
        (
            Behaviour::Lifetime(Duration::from_secs(30)),
            "less than the 300s minimum",
        ),
        (
            Behaviour::Lifetime(Duration::from_secs(3 * 3600)),
            "longer than the 3600s requested",
        ),
    ] {
        signer.set(behaviour);
        let err = kubelet.publish(&volume).await.unwrap_err();
        assert!(err.to_string().contains(fragment), "{behaviour:?}: {err}");
        assert!(
            !volume.file(VolumeFile::Certificate).exists(),
            "{behaviour:?} reached the pod"
        );
        for cr in requests(&env, "demo").await {
            let csr = nico_csr::parse_csr(&cr.spec.request).unwrap();
            keys_seen.insert(csr.public_key().spki_der().to_vec());
        }
    }
    assert_eq!(
        keys_seen.len(),
        6,
        "every attempt must start with a fresh key"
    );
    assert!(
        requests(&env, "demo").await.len() <= 1,
        "older requests of the volume are deleted"
    );

    signer.set(Behaviour::Lifetime(Duration::from_secs(3600)));
    kubelet.publish(&volume).await.unwrap();
    openssl(
        &volume.target_path,
        &["verify", "-CAfile", "ca.crt", "tls.crt"],
    )
    .unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shortened_lifetime_is_reported_and_renewal_follows_the_real_one() {
    let (env, _dir) = dev_environment_with(|options| options.embedded.issuer = false).await;
    let issuer = env.csi_settings().issuer.clone();
    let _signer = TestSigner::start(
        env.access.client().unwrap(),
        issuer,
        Behaviour::Lifetime(Duration::from_secs(20 * 60)),
    );
    let volume = env.create_demo_pod("demo", "web", "web-0").await.unwrap();
    env.kubelet().await.unwrap().publish(&volume).await.unwrap();

    let events: Api<Event> = Api::namespaced(env.access.client().unwrap(), "demo");
    let event = eventually("a LifetimeShortened event", 10 * SECOND, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("CertificateLifetimeShortened"))
    })
    .await;
    assert_eq!(event.involved_object.name.as_deref(), Some("web-0"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    // Renewal at 2/3 of 20 minutes (minus up to a tenth for jitter), not of the hour asked for.
    let (_, metrics) = http_get(env.health, "/metrics").await;
    let expiry = metric(
        &metrics,
        "nico_identity_csi_node_certificate_expiry_timestamp_seconds",
    );
    let renewal = metric(
        &metrics,
        "nico_identity_csi_node_next_renewal_timestamp_seconds",
    );
    let until_expiry = expiry - renewal;
    assert!(
        (390.0..=520.0).contains(&until_expiry),
        "renews {until_expiry}s before expiry"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_pod_events_tell_what_happened() {
    let (env, _dir) = dev_environment().await;
    let kubelet = env.kubelet().await.unwrap();
    let good = env.create_demo_pod("demo", "web", "web-0").await.unwrap();
    kubelet.publish(&good).await.unwrap();
    // A volume context claiming another account than the token's is denied.
    let real = env
        .create_demo_pod("demo", "intruder", "web-1")
        .await
        .unwrap();
    let claimed = PodVolume::new(
        "demo",
        "web-1",
        &real.pod_uid,
        "web",
        real.target_path.clone(),
        env.csi_settings().files.clone(),
    );
    let (token, expires) = kubelet.token_for(&real, "intruder").await.unwrap();
    let request = nico_identity_cli::dev::publish_request(&claimed, &token, &expires);
    kubelet.publish_with(request).await.unwrap_err();

    let (status, metrics) = http_get(env.health, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &metrics,
            "nico_identity_csi_node_issuances_total{result=\"issued\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "nico_identity_csi_node_issuances_total{result=\"denied\"}"
        ),
        1.0
    );
    assert_eq!(metric(&metrics, "nico_identity_csi_node_volumes"), 1.0);
    assert_eq!(http_get(env.health, "/readyz").await.0, 200);

    let events: Api<Event> = Api::namespaced(env.access.client().unwrap(), "demo");
    let event = eventually("an issuance failure event", 10 * SECOND, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("CertificateIssuanceFailed"))
    })
    .await;
    assert_eq!(event.involved_object.name.as_deref(), Some("web-1"));
    assert!(event.message.unwrap_or_default().contains("denied"));
    env.stop().await;
}

/// The value of the first sample whose name (and labels) start with `name`.
fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in:\n{exposition}"))
}

/// Driver-account mode: the node driver creates requests as itself, with a token bound to its
/// own pod on the node, naming the workload pod in annotations; the approver checks that the
/// named pod runs on the driver's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_driver_account_mode_requests_come_from_the_drivers_pod_bound_account() {
    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec,
    };
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{
        ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject,
    };
    use nico_identity_cli::dev::{DEV_NODE, Embedded};

    let driver_account = "system:serviceaccount:nico-identity:csi-node";
    let (env, _dir) = dev_environment_with(|options| {
        options.embedded = Embedded {
            csi_node: false,
            ..Embedded::default()
        };
        options.config.csi_node.request_identity = nico_csi_node::RequestIdentity::Driver;
        options.config.approver.requester = nico_approver::RequesterKind::Driver;
        options.config.approver.driver_accounts = vec![driver_account.into()];
    })
    .await;
    let admin = env.access.client().unwrap();
    // The driver's own pod, account and RBAC, as the chart would install them.
    let namespace = k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta {
            name: Some("nico-identity".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("csi-node".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), "nico-identity")
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "csi-node-abcde"},
        "spec": {"serviceAccountName": "csi-node", "nodeName": DEV_NODE,
                 "containers": [{"name": "csi-node", "image": "nico-identity"}]}
    }))
    .unwrap();
    let pod = Api::<Pod>::namespaced(admin.clone(), "nico-identity")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|g| (*g).into()).collect()),
        resources: Some(resources.iter().map(|r| (*r).into()).collect()),
        verbs: verbs.iter().map(|v| (*v).into()).collect(),
        ..Default::default()
    };
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some("nico-identity-csi-node".into()),
            ..Default::default()
        },
        rules: Some(vec![
            rule(
                &["cert-manager.io"],
                &["certificaterequests"],
                &["create", "get", "list", "watch", "delete"],
            ),
            rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
        ]),
        ..Default::default()
    };
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some("nico-identity-csi-node".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "nico-identity-csi-node".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "csi-node".into(),
            namespace: Some("nico-identity".into()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let token_request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), "nico-identity")
        .create_token_request("csi-node", &PostParams::default(), &token_request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;

    let shutdown = tokio_util::sync::CancellationToken::new();
    let ctx = nico_runtime::RoleContext {
        access: env
            .access
            .with_token(&nico_runtime::BearerToken::new(token)),
        telemetry: nico_runtime::Telemetry::new(),
        shutdown: shutdown.clone(),
        identity: "csi-node-abcde".into(),
        namespace: "nico-identity".into(),
    };
    let driver = nico_csi_node::Driver::start(env.csi_settings().clone(), &ctx).unwrap();
    let server = tokio::spawn({
        let (socket, shutdown) = (env.socket().to_owned(), shutdown.clone());
        async move { nico_csi_node::serve(driver, &socket, shutdown).await }
    });
    let volume = env.create_demo_pod("demo", "web", "web-0").await.unwrap();
    let kubelet = eventually("the driver's socket", 10 * SECOND, || async {
        env.kubelet().await.ok()
    })
    .await;
    eventually(
        "the driver to be ready and publish",
        20 * SECOND,
        || async { kubelet.publish(&volume).await.ok() },
    )
    .await;
    verify_with_webpki(
        &volume.file(VolumeFile::Certificate),
        &volume.file(VolumeFile::Ca),
    )
    .unwrap();
    let crs = requests(&env, "demo").await;
    assert_eq!(crs.len(), 1);
    let annotations = crs[0].metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("identity.nico.io/pod-name")
            .map(String::as_str),
        Some("web-0")
    );
    assert_eq!(
        annotations.get("identity.nico.io/pod-uid"),
        Some(&volume.pod_uid)
    );
    assert_eq!(crs[0].spec.username.as_deref(), Some(driver_account));
    shutdown.cancel();
    server.await.unwrap().unwrap();
    env.stop().await;
}

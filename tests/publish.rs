//! The main job end to end: kubelet publishes a volume over the real CSI socket; the dev
//! cluster, approver and issuer do their parts over the real kube client; the pod's files
//! are checked by independent verifiers.

use kube::api::{Api, ListParams};
use nico_identity_cli::dev::{PodVolume, VolumeFile};
use nico_identity_tests::{
    dev_environment, openssl, read_pem_certificates, uri_sans, verify_with_webpki,
};
use nico_k8s_types::CertificateRequest;

async fn requests_in(client: kube::Client, namespace: &str) -> Vec<CertificateRequest> {
    Api::<CertificateRequest>::namespaced(client, namespace)
        .list(&ListParams::default())
        .await
        .expect("list certificaterequests")
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_volume_holds_a_verified_svid_for_the_pods_account() {
    let (env, _workdir) = dev_environment().await;
    let volume = env.create_demo_pod("demo", "web", "web-0").await.unwrap();
    let kubelet = env.kubelet().await.unwrap();
    kubelet.publish(&volume).await.unwrap();

    let (crt, key, ca) = (
        volume.file(VolumeFile::Certificate),
        volume.file(VolumeFile::Key),
        volume.file(VolumeFile::Ca),
    );
    for file in [&crt, &key, &ca] {
        assert!(file.exists(), "{} is missing", file.display());
    }
    verify_with_webpki(&crt, &ca).unwrap();
    let dir = &volume.target_path;
    let verified = openssl(dir, &["verify", "-CAfile", "ca.crt", "tls.crt"]).unwrap();
    assert_eq!(verified.trim(), "tls.crt: OK");

    let chain = read_pem_certificates(&crt);
    assert_eq!(uri_sans(&chain[0]), ["spiffe://nico.local/demo/sa/web"]);

    let cert_key = openssl(dir, &["x509", "-in", "tls.crt", "-noout", "-pubkey"]).unwrap();
    let file_key = openssl(dir, &["pkey", "-in", "tls.key", "-pubout"]).unwrap();
    assert_eq!(cert_key, file_key, "tls.key does not match tls.crt");

    let requests = requests_in(env.access.client().unwrap(), "demo").await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].spec.username.as_deref(),
        Some("system:serviceaccount:demo:web")
    );

    // kubelet republishes periodically: nothing new is issued for a volume that has its files.
    let serial = volume.current_serial();
    kubelet.publish(&volume).await.unwrap();
    assert_eq!(volume.current_serial(), serial);
    assert_eq!(
        requests_in(env.access.client().unwrap(), "demo")
            .await
            .len(),
        1
    );

    kubelet.unpublish(&volume).await.unwrap();
    assert!(!crt.exists() && !volume.target_path.exists());
    assert!(
        requests_in(env.access.client().unwrap(), "demo")
            .await
            .is_empty()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_account_is_denied_and_nothing_is_written() {
    let (env, _workdir) = dev_environment().await;
    // The pod really runs as "intruder", but the volume context claims "web".
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
    let kubelet = env.kubelet().await.unwrap();
    let (token, expires) = kubelet.token_for(&real, "intruder").await.unwrap();
    let request = nico_identity_cli::dev::publish_request(&claimed, &token, &expires);
    let err = kubelet.publish_with(request).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("The caller does not have permission"),
        "{message}"
    );
    assert!(message.contains("denied"), "{message}");
    assert!(
        message.contains("spiffe://nico.local/demo/sa/web")
            && message.contains("system:serviceaccount:demo:intruder"),
        "the message must name both sides of the mismatch: {message}"
    );
    assert!(
        !claimed.target_path.exists(),
        "nothing may be written for a denied request"
    );

    let requests = requests_in(env.access.client().unwrap(), "demo").await;
    assert_eq!(requests.len(), 1);
    assert!(requests[0].has_condition(
        nico_k8s_types::ConditionType::Denied,
        nico_k8s_types::ConditionStatus::True
    ));
    env.stop().await;
}

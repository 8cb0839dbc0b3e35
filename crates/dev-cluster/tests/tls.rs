//! The dev cluster speaks HTTPS only: the kube client verifies it through the CA in the
//! kubeconfig, a client trusting another CA gets nowhere, and plain HTTP is not answered.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use nico_dev_cluster::{DevCluster, DevClusterConfig, Error, ServiceRef};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start() -> DevCluster {
    common::install_provider();
    DevCluster::start(DevClusterConfig::default())
        .await
        .expect("dev cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubeconfig_carries_the_ca_and_the_kube_client_verifies_it() {
    let cluster = start().await;
    assert_eq!(cluster.url(), format!("https://{}", cluster.addr()));
    assert!(cluster.url().starts_with("https://127.0.0.1:"));
    let kubeconfig: Value = serde_json::from_str(&cluster.kubeconfig_json()).expect("JSON");
    let ca = kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .expect("certificate-authority-data");
    let decoded = STANDARD.decode(ca).expect("base64");
    assert_eq!(decoded, cluster.ca_pem().as_bytes());
    assert!(cluster.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        kubeconfig["users"][0]["user"]["token"].as_str(),
        Some(cluster.admin_token())
    );

    let admin = common::admin(&cluster).await;
    let names: Vec<String> = Api::<Namespace>::all(admin)
        .list(&ListParams::default())
        .await
        .expect("listed over verified TLS")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.iter().any(|n| n == "kube-system"), "{names:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_another_ca_is_refused() {
    let cluster = start().await;
    let other = start().await;
    // The right server and token, but the other cluster's CA.
    let text = cluster.kubeconfig_json().replace(
        &STANDARD.encode(cluster.ca_pem()),
        &STANDARD.encode(other.ca_pem()),
    );
    let client = common::client_from_kubeconfig(&text).await;
    let err = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .expect_err("the server's certificate is not trusted");
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "no answer may come from an untrusted server: {err:?}"
    );
    let chain = format!("{err:?}");
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    cluster.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_gets_no_answer() {
    let cluster = start().await;
    let mut stream = tokio::net::TcpStream::connect(cluster.addr())
        .await
        .expect("connect");
    stream
        .write_all(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    // The TLS server closes (or sends an alert): never an HTTP answer.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn only_loopback_addresses_are_accepted() {
    common::install_provider();
    let far: std::net::SocketAddr = "10.1.2.3:443".parse().expect("address");
    let mut config = DevClusterConfig::default();
    config
        .services
        .insert(ServiceRef::new("nico", "webhook", 443), far);
    let err = DevCluster::start(config).await.expect_err("a remote route");
    assert!(
        matches!(err, Error::NotLoopback(addr) if addr == far),
        "{err}"
    );
}

//! kubectl against the dev cluster through `kubeconfig_json()`. Skipped, with a note, on a
//! machine without kubectl.

use std::process::Command;

use nico_dev_cluster::{DevCluster, DevClusterConfig};

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs kubectl with the dev cluster's kubeconfig; returns stdout, or panics with stderr.
fn kubectl(kubeconfig: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    let output = match stdin {
        Some(input) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("kubectl starts");
            if let Some(mut pipe) = child.stdin.take() {
                pipe.write_all(input.as_bytes()).expect("stdin");
            }
            child.wait_with_output().expect("kubectl ends")
        }
        None => cmd.output().expect("kubectl runs"),
    };
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_with_the_kubeconfig() {
    if !kubectl_available() {
        eprintln!("kubectl is not installed: skipping the kubectl checks");
        return;
    }
    // kubectl verifies the server with the kubeconfig's CA and sends the admin token.
    let cluster = DevCluster::start(DevClusterConfig::default())
        .await
        .expect("starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, cluster.kubeconfig_json()).expect("kubeconfig written");
    let path2 = path.clone();
    tokio::task::spawn_blocking(move || {
        let path = path2.as_path();
        let namespaces = kubectl(path, &["get", "namespaces", "-o", "name"], None);
        assert!(namespaces.contains("namespace/kube-system"), "{namespaces}");
        // Typed generators (`kubectl create configmap`) send protobuf, which the dev
        // cluster does not decode; manifests go as JSON. There is no OpenAPI to validate with.
        let cm = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1"},
            "data": {"a": "b"}}"#;
        kubectl(path, &["create", "--validate=false", "-f", "-"], Some(cm));
        kubectl(path, &["label", "configmap", "cm1", "team=identity"], None);
        kubectl(path, &["annotate", "configmap", "cm1", "note=x"], None);
        let got = kubectl(
            path,
            &[
                "get",
                "configmap",
                "cm1",
                "-o",
                "jsonpath={.metadata.labels.team}",
            ],
            None,
        );
        assert_eq!(got, "identity");
        let selected = kubectl(
            path,
            &["get", "configmaps", "-l", "team=identity", "-o", "name"],
            None,
        );
        assert_eq!(selected.trim(), "configmap/cm1");
        let cr = r#"{"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
            "metadata": {"name": "cr1"},
            "spec": {"request": "cmVx", "issuerRef": {"name": "i"}, "usages": ["client auth"]}}"#;
        kubectl(
            path,
            &["apply", "--server-side", "--validate=false", "-f", "-"],
            Some(cr),
        );
        let crs = kubectl(
            path,
            &["get", "certificaterequests", "-A", "-o", "name"],
            None,
        );
        assert!(crs.contains("cr1"), "{crs}");
        let whoami = kubectl(
            path,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
            None,
        );
        assert_eq!(whoami, "nico-dev-admin");
        // `kubectl auth can-i` sends protobuf; a review sent as a manifest goes as JSON.
        let review = r#"{"apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": "create", "group": "cert-manager.io",
                                            "resource": "certificaterequests"}}}"#;
        let allowed = kubectl(
            path,
            &[
                "create",
                "--validate=false",
                "-f",
                "-",
                "-o",
                "jsonpath={.status.allowed}",
            ],
            Some(review),
        );
        assert_eq!(allowed, "true");
        kubectl(path, &["delete", "configmap", "cm1"], None);
        kubectl(path, &["delete", "certificaterequest", "cr1"], None);
        let left = kubectl(path, &["get", "configmaps", "-o", "name"], None);
        assert!(!left.contains("cm1"), "{left}");
    })
    .await
    .expect("kubectl checks ran");
    cluster.shutdown().await;
}

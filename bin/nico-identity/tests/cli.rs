//! The binary as a user runs it.

use std::process::Command;

fn nico_identity() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nico-identity"))
}

#[test]
fn spiffe_id_parse_reports_valid_ids_and_exits_2_on_invalid_ones() {
    let out = nico_identity()
        .args(["spiffe-id", "parse", "spiffe://nico.local/demo/sa/web"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("trust domain: nico.local"), "{stdout}");
    assert!(stdout.contains("path:         /demo/sa/web"), "{stdout}");

    let out = nico_identity()
        .args(["spiffe-id", "parse", "spiffe://nico.local/a/../b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("invalid SPIFFE ID") && stderr.contains(".."),
        "{stderr}"
    );
}

#[test]
fn dev_exit_after_issue_writes_a_valid_certificate() {
    let workdir = tempfile::tempdir().unwrap();
    let out = nico_identity()
        .args(["dev", "--exit-after-issue", "--pods", "2", "--workdir"])
        .arg(workdir.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("spiffe id: spiffe://nico.local/demo/sa/web"),
        "{stdout}"
    );
    for pod in ["web-0", "web-1"] {
        let dir = workdir.path().join("pods/demo").join(pod);
        let verify = Command::new("openssl")
            .args(["verify", "-CAfile", "ca.crt", "tls.crt"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let text = Command::new("openssl")
            .args(["x509", "-in", "tls.crt", "-noout", "-ext", "subjectAltName"])
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8(text.stdout).unwrap();
        assert!(
            text.contains("URI:spiffe://nico.local/demo/sa/web"),
            "{text}"
        );
    }
    assert!(workdir.path().join("kubeconfig").exists());

    // `inspect` reads a volume the way an operator would, and tells a broken one apart.
    let web0 = workdir.path().join("pods/demo/web-0");
    let out = nico_identity().arg("inspect").arg(&web0).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("spiffe://nico.local/demo/sa/web") && text.contains("verifies to ca.crt"),
        "{text}"
    );
    let web1 = workdir.path().join("pods/demo/web-1");
    let data = std::fs::read_link(web0.join("..data")).unwrap();
    let foreign_key = std::fs::read(web1.join("tls.key")).unwrap();
    let key_file = web0.join(data).join("tls.key");
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(&key_file, foreign_key).unwrap();
    let out = nico_identity().arg("inspect").arg(&web0).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DOES NOT MATCH"));
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[approver]\nmax_duration = \"forever\"\n").unwrap();
    let out = nico_identity()
        .args(["approver", "--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("approver.max_duration"), "{stderr}");

    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/approver.toml");
    let out = nico_identity()
        .args(["approver", "--check-config", "--config", sample])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_webhook_role_checks_its_configuration() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/webhook.toml");
    let out = nico_identity()
        .args(["webhook", "--check-config", "--config", sample])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("webhook configuration is valid"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[webhook]\nserving_validity = \"1s\"\n").unwrap();
    let out = nico_identity()
        .args(["webhook", "--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("webhook.serving_validity"), "{stderr}");
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_role_serves_the_api_server_and_stops_on_sigterm() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use kube::api::{Api, PostParams};
    use nico_identity_tests::requests::{tls_csr, typed_request};
    use nico_identity_tests::{dev_environment_with, eventually};
    use nico_k8s_types::CertificateRequest;

    // Everything in process but the webhook, which runs as its own process.
    let (env, _workdir) = dev_environment_with(|o| o.embedded.webhook = false).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    #[derive(serde::Serialize)]
    struct File<'a, W> {
        kubeconfig: &'a std::path::Path,
        health_address: &'a str,
        pod_namespace: &'a str,
        log_filter: &'a str,
        webhook: W,
    }
    let mut webhook = env.webhook_config().clone();
    webhook.listen_address = addr;
    let kubeconfig = env.kubeconfig_path();
    let file = File {
        kubeconfig: &kubeconfig,
        health_address: "127.0.0.1:0",
        pod_namespace: "default",
        log_filter: "info",
        webhook,
    };
    let path = env.workdir().join("webhook.toml");
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    env.route_webhook(addr).unwrap();
    let log = env.workdir().join("webhook.log");
    let mut child = nico_identity()
        .args(["webhook", "--config"])
        .arg(&path)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    let admin = env.access.client().unwrap();
    let configurations = Api::<ValidatingWebhookConfiguration>::all(admin.clone());
    eventually(
        "the webhook's configurations",
        std::time::Duration::from_secs(60),
        || {
            let configurations = configurations.clone();
            async move {
                let stored = configurations
                    .get_opt("nico-identity-webhook")
                    .await
                    .ok()??;
                let hooks = stored.webhooks.unwrap_or_default();
                hooks
                    .iter()
                    .all(|h| h.client_config.ca_bundle.is_some())
                    .then_some(())
                    .filter(|()| !hooks.is_empty())
            }
        },
    )
    .await;

    let mut forged = typed_request("forged", "other", &tls_csr("web.default.svc"));
    forged.spec.username = Some("system:admin".into());
    let stored = Api::<CertificateRequest>::namespaced(admin, "default")
        .create(&PostParams::default(), &forged)
        .await
        .unwrap();
    assert_eq!(stored.spec.username.as_deref(), Some("nico-dev-admin"));

    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    env.stop().await;
}

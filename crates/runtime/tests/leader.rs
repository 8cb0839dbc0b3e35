//! Leader election against the dev cluster: one leader at a time, and a hand-over when the
//! leader stops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use nico_dev_cluster::{DevCluster, DevClusterConfig};
use nico_runtime::{LeaseConfig, run_as_leader};
use tokio_util::sync::CancellationToken;

async fn client(cluster: &DevCluster) -> kube::Client {
    let kubeconfig = Kubeconfig::from_yaml(&cluster.kubeconfig_json()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[derive(Default)]
struct Record {
    active: AtomicUsize,
    most: AtomicUsize,
    terms: Mutex<Vec<&'static str>>,
}

impl Record {
    fn terms(&self) -> Vec<&'static str> {
        self.terms.lock().unwrap().clone()
    }

    async fn wait_for_terms(&self, count: usize) -> Vec<&'static str> {
        for _ in 0..200 {
            let terms = self.terms();
            if terms.len() >= count {
                return terms;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("only {:?} after 10s, wanted {count} terms", self.terms());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_replica_leads_and_the_other_takes_over() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cluster = DevCluster::start(DevClusterConfig::default())
        .await
        .unwrap();
    let record = Arc::new(Record::default());
    let mut replicas = Vec::new();
    for name in ["replica-a", "replica-b"] {
        let shutdown = CancellationToken::new();
        let mut lease = LeaseConfig::new("nico-identity-test", "default", name);
        lease.duration_seconds = 3;
        lease.grace_seconds = 1;
        let record = record.clone();
        let client = client(&cluster).await;
        let task = tokio::spawn(run_as_leader(
            client,
            lease,
            shutdown.clone(),
            move |token| {
                let record = record.clone();
                async move {
                    let now = record.active.fetch_add(1, Ordering::SeqCst) + 1;
                    record.most.fetch_max(now, Ordering::SeqCst);
                    record.terms.lock().unwrap().push(name);
                    token.cancelled().await;
                    record.active.fetch_sub(1, Ordering::SeqCst);
                }
            },
        ));
        replicas.push((name, shutdown, task));
    }
    let first = record.wait_for_terms(1).await[0];
    // Several lease periods pass: the follower never runs.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(record.terms(), [first]);

    // Stop the leader: it releases the lease and the follower takes over.
    let index = replicas
        .iter()
        .position(|(name, ..)| *name == first)
        .unwrap();
    let (_, shutdown, task) = replicas.remove(index);
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let terms = record.wait_for_terms(2).await;
    assert_ne!(terms[1], first);
    let (_, shutdown, task) = replicas.remove(0);
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(record.most.load(Ordering::SeqCst), 1, "two leaders at once");
    assert_eq!(record.active.load(Ordering::SeqCst), 0);
    cluster.shutdown().await;
}

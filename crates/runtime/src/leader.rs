//! Leader election through a Lease: several replicas run, one acts.
//!
//! The Lease carries no fencing token, so a replica that lost the lease may still finish a
//! write it had started: every write the roles make is conditional on a resourceVersion, which
//! makes a late write fail instead of doing harm.

use std::future::Future;
use std::time::Duration;

use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Which Lease to hold and as whom.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name, e.g. `nico-identity-approver`.
    pub name: String,
    /// Lease namespace (the role's own).
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease lasts without renewal, in seconds.
    pub duration_seconds: u64,
    /// How long before expiry the holder renews, in seconds.
    pub grace_seconds: u64,
}

impl LeaseConfig {
    /// A lease of 15 s renewed 5 s before it lapses, the usual Kubernetes controller timing.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration_seconds: 15,
            grace_seconds: 5,
        }
    }
}

/// Failures of the election itself.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The lease manager could not start.
    #[error("failed to start leader election on lease {namespace}/{name}: {source}")]
    Start {
        /// Lease name.
        name: String,
        /// Lease namespace.
        namespace: String,
        /// The cause.
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
}

/// Runs `work` whenever this replica holds the lease, cancelling it (through the token it is
/// given) as soon as the lease is lost, and starting it again when the lease is won back.
/// Returns when `shutdown` fires; the lease is released on the way out.
pub async fn run_as_leader<F, Fut>(
    client: kube::Client,
    lease: LeaseConfig,
    shutdown: CancellationToken,
    work: F,
) -> Result<(), LeaderError>
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_seconds)
        .with_grace(lease.grace_seconds)
        .build()
        .await
        .map_err(|source| LeaderError::Start {
            name: lease.name.clone(),
            namespace: lease.namespace.clone(),
            source,
        })?;
    let (mut leading, handle) = manager.watch().await;
    let mut current: Option<(CancellationToken, tokio::task::JoinHandle<()>)> = None;
    loop {
        let is_leader = *leading.borrow_and_update();
        match (is_leader, current.is_some()) {
            (true, false) => {
                info!(lease = %lease.name, identity = %lease.identity, "became leader");
                let token = shutdown.child_token();
                current = Some((token.clone(), tokio::spawn(work(token))));
            }
            (false, true) => {
                warn!(lease = %lease.name, identity = %lease.identity, "lost leadership; stopping");
                if let Some((token, task)) = current.take() {
                    token.cancel();
                    let _ = task.await;
                }
            }
            _ => {}
        }
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() {
                    warn!(lease = %lease.name, "lease watcher stopped; retrying election in 5s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    break;
                }
            }
            () = shutdown.cancelled() => break,
        }
    }
    if let Some((token, task)) = current.take() {
        token.cancel();
        let _ = task.await;
    }
    // Dropping the receiver makes the manager release the lease and stop.
    drop(leading);
    let _ = handle.await;
    Ok(())
}

//! What the namespace controller does on a real cluster: once a namespace is being
//! deleted, delete everything in it and then the namespace itself.
//!
//! A real API server only marks the namespace `Terminating` and waits for
//! kube-controller-manager. The dev cluster runs that step itself, right after answering,
//! so a deleted namespace really goes away. Finalizers on the contents are not waited for.

use std::sync::Arc;

use crate::server::AppState;
use crate::store::key;

/// Deletes the contents of `namespace`, then the namespace, shortly after the answer.
pub(crate) fn schedule_cleanup(state: &Arc<AppState>, namespace: &str) {
    let state = Arc::clone(state);
    let namespace = namespace.to_owned();
    tokio::spawn(async move {
        // Let the client read its answer (the Terminating namespace) first.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut st = state.store.lock();
        for (storage, k) in st.keys_in_namespace(&namespace) {
            st.remove(storage, &k);
        }
        st.remove("namespaces", &key(None, &namespace));
        tracing::debug!(namespace, "namespace contents deleted");
    });
}

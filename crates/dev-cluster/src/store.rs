//! The object store: every object as JSON, one global resourceVersion counter, and a
//! bounded history of changes for watches and reads at an older revision.
//!
//! One mutex guards everything. A write takes it, changes the object, bumps the counter,
//! appends the event to the history and broadcasts it before letting go, so a watcher that
//! reads the history and subscribes under the same lock sees every event exactly once.
//!
//! Stored objects are immutable and shared ([`Object`] behind an `Arc`): the bucket, the
//! history, every watcher and every reader hold the same one, and its JSON text is made
//! once, on first use, outside the lock. A write replaces the whole object.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::util::meta_mut;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The watch event `type`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One stored object, shared by the store, its history and every reader. Its JSON text is
/// made the first time someone needs it and then reused.
#[derive(Debug)]
pub(crate) struct Object {
    value: Value,
    json: OnceLock<Bytes>,
    item_json: OnceLock<Bytes>,
}

/// Compact JSON; a `Value` always serialises (its keys are strings).
fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

impl Object {
    /// Wraps a value for sharing.
    pub(crate) fn new(value: Value) -> Arc<Object> {
        Arc::new(Object {
            value,
            json: OnceLock::new(),
            item_json: OnceLock::new(),
        })
    }

    /// The object.
    pub(crate) fn value(&self) -> &Value {
        &self.value
    }

    /// The object as compact JSON, made once.
    pub(crate) fn json(&self) -> &Bytes {
        self.json.get_or_init(|| to_bytes(&self.value))
    }

    /// The object without `apiVersion` and `kind`, as items of built-in lists are written,
    /// made once.
    pub(crate) fn list_item_json(&self) -> &Bytes {
        self.item_json.get_or_init(|| match &self.value {
            Value::Object(map) if map.contains_key("apiVersion") || map.contains_key("kind") => {
                let mut item = map.clone();
                item.remove("apiVersion");
                item.remove("kind");
                to_bytes(&Value::Object(item))
            }
            other => to_bytes(other),
        })
    }
}

impl Deref for Object {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// One change, as kept in the history and broadcast to watchers.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    /// The revision of this change.
    pub(crate) rv: u64,
    /// The storage bucket.
    pub(crate) storage: &'static str,
    /// The bucket key (`ns/name` or `name`).
    pub(crate) key: String,
    pub(crate) kind: EventType,
    /// The object after the change (for DELETED: its last state, with the deletion RV).
    pub(crate) object: Arc<Object>,
    /// The object before the change, if there was one.
    pub(crate) previous: Option<Arc<Object>>,
}

/// A requested revision is older than the history reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too old resource version: {requested} ({oldest})")]
pub(crate) struct TooOld {
    /// The revision asked for.
    pub(crate) requested: u64,
    /// The oldest revision still served.
    pub(crate) oldest: u64,
}

/// The bucket key of an object.
pub(crate) fn key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// The shared store.
#[derive(Debug)]
pub(crate) struct Store {
    inner: Mutex<Inner>,
}

/// The store's contents; reached through [`Store::lock`].
#[derive(Debug)]
pub(crate) struct Inner {
    rv: u64,
    buckets: HashMap<&'static str, BTreeMap<String, Arc<Object>>>,
    history: VecDeque<Arc<StoredEvent>>,
    capacity: usize,
    /// Every change after this revision is in the history.
    floor: u64,
    /// The revision of each bucket's newest change.
    changed: HashMap<&'static str, u64>,
    tx: broadcast::Sender<Arc<StoredEvent>>,
}

impl Store {
    /// An empty store keeping `history` events.
    pub(crate) fn new(history: usize) -> Store {
        let capacity = history.max(1);
        let (tx, _) = broadcast::channel(capacity.clamp(64, 65_536));
        Store {
            inner: Mutex::new(Inner {
                rv: 0,
                buckets: HashMap::new(),
                history: VecDeque::new(),
                capacity,
                floor: 0,
                changed: HashMap::new(),
                tx,
            }),
        }
    }

    /// Takes the lock. A panic while holding it cannot leave an object half-written (each
    /// write is a single insert), so a poisoned lock is taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn set_rv(obj: &mut Value, rv: u64) {
    meta_mut(obj).insert("resourceVersion".into(), rv.to_string().into());
}

impl Inner {
    /// The newest revision.
    pub(crate) fn current_rv(&self) -> u64 {
        self.rv
    }

    /// Forgets the history so far: what exists now is where watches may start.
    pub(crate) fn seal_history(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }

    /// The revision of the newest change to a bucket (0 when it never changed): equal
    /// revisions mean equal contents.
    pub(crate) fn bucket_revision(&self, storage: &str) -> u64 {
        self.changed.get(storage).copied().unwrap_or(0)
    }

    /// One object.
    pub(crate) fn get(&self, storage: &str, key: &str) -> Option<&Arc<Object>> {
        self.buckets.get(storage).and_then(|b| b.get(key))
    }

    /// Every object of a bucket, in key order.
    pub(crate) fn all(&self, storage: &str) -> impl Iterator<Item = (&String, &Arc<Object>)> {
        self.buckets.get(storage).into_iter().flat_map(|b| b.iter())
    }

    /// The objects of a bucket whose keys start with `prefix`, in key order.
    pub(crate) fn with_prefix<'a>(
        &'a self,
        storage: &str,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Arc<Object>)> {
        self.buckets.get(storage).into_iter().flat_map(move |b| {
            b.range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
        })
    }

    fn emit(
        &mut self,
        storage: &'static str,
        key: String,
        kind: EventType,
        object: Arc<Object>,
        previous: Option<Arc<Object>>,
    ) {
        self.changed.insert(storage, self.rv);
        let event = Arc::new(StoredEvent {
            rv: self.rv,
            storage,
            key,
            kind,
            object,
            previous,
        });
        self.history.push_back(Arc::clone(&event));
        while self.history.len() > self.capacity {
            if let Some(old) = self.history.pop_front() {
                self.floor = old.rv;
            }
        }
        // No receiver is fine: nobody watches.
        let _ = self.tx.send(event);
    }

    /// Stores a new object; returns it with its resourceVersion.
    pub(crate) fn insert(
        &mut self,
        storage: &'static str,
        key: String,
        mut obj: Value,
    ) -> Arc<Object> {
        self.rv += 1;
        set_rv(&mut obj, self.rv);
        let obj = Object::new(obj);
        self.buckets
            .entry(storage)
            .or_default()
            .insert(key.clone(), Arc::clone(&obj));
        self.emit(storage, key, EventType::Added, Arc::clone(&obj), None);
        obj
    }

    /// Replaces an object; returns it with its new resourceVersion.
    pub(crate) fn replace(
        &mut self,
        storage: &'static str,
        key: String,
        mut obj: Value,
    ) -> Arc<Object> {
        self.rv += 1;
        set_rv(&mut obj, self.rv);
        let obj = Object::new(obj);
        let previous = self
            .buckets
            .entry(storage)
            .or_default()
            .insert(key.clone(), Arc::clone(&obj));
        self.emit(
            storage,
            key,
            EventType::Modified,
            Arc::clone(&obj),
            previous,
        );
        obj
    }

    /// Removes an object; returns its last state carrying the deletion revision.
    pub(crate) fn remove(&mut self, storage: &'static str, key: &str) -> Option<Arc<Object>> {
        let previous = self.buckets.get_mut(storage)?.remove(key)?;
        self.rv += 1;
        let mut last = previous.value().clone();
        set_rv(&mut last, self.rv);
        let last = Object::new(last);
        self.emit(
            storage,
            key.to_owned(),
            EventType::Deleted,
            Arc::clone(&last),
            Some(previous),
        );
        Some(last)
    }

    /// The bucket as it was at revision `rv`, rebuilt by undoing newer history.
    pub(crate) fn snapshot(
        &self,
        storage: &str,
        rv: u64,
    ) -> Result<BTreeMap<String, Arc<Object>>, TooOld> {
        let mut objects = self.buckets.get(storage).cloned().unwrap_or_default();
        if rv >= self.rv {
            return Ok(objects);
        }
        if rv < self.floor {
            return Err(TooOld {
                requested: rv,
                oldest: self.floor + 1,
            });
        }
        for event in self.history.iter().rev().take_while(|e| e.rv > rv) {
            if event.storage != storage {
                continue;
            }
            match (&event.kind, &event.previous) {
                (EventType::Added, _) => {
                    objects.remove(&event.key);
                }
                (_, Some(previous)) => {
                    objects.insert(event.key.clone(), Arc::clone(previous));
                }
                (_, None) => {}
            }
        }
        Ok(objects)
    }

    /// The changes of a bucket after revision `rv`, oldest first.
    pub(crate) fn events_after(
        &self,
        storage: &str,
        rv: u64,
    ) -> Result<Vec<Arc<StoredEvent>>, TooOld> {
        if rv < self.floor {
            return Err(TooOld {
                requested: rv,
                oldest: self.floor + 1,
            });
        }
        Ok(self
            .history
            .iter()
            .filter(|e| e.rv > rv && e.storage == storage)
            .cloned()
            .collect())
    }

    /// A receiver of every change from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.tx.subscribe()
    }

    /// Every bucket key holding objects of a namespace, with its bucket.
    pub(crate) fn keys_in_namespace(&self, namespace: &str) -> Vec<(&'static str, String)> {
        let prefix = format!("{namespace}/");
        self.buckets
            .iter()
            .flat_map(|(storage, bucket)| {
                bucket
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .map(|k| (*storage, k.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_write_bumps_one_counter() {
        let store = Store::new(10);
        let mut s = store.lock();
        let a = s.insert("a", "x".into(), json!({"metadata": {"name": "x"}}));
        let b = s.insert("b", "y".into(), json!({"metadata": {"name": "y"}}));
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        assert_eq!(b["metadata"]["resourceVersion"], "2");
        let gone = s.remove("a", "x").expect("present");
        assert_eq!(gone["metadata"]["resourceVersion"], "3");
    }

    #[test]
    fn snapshots_undo_newer_history() {
        let store = Store::new(10);
        let mut s = store.lock();
        s.insert("a", "x".into(), json!({"metadata": {}, "v": 1}));
        s.replace("a", "x".into(), json!({"metadata": {}, "v": 2}));
        s.insert("a", "y".into(), json!({"metadata": {}}));
        s.remove("a", "x");
        let at2 = s.snapshot("a", 2).expect("in history");
        assert_eq!(at2.len(), 1);
        assert_eq!(at2["x"]["v"], 2);
        let at1 = s.snapshot("a", 1).expect("in history");
        assert_eq!(at1["x"]["v"], 1);
    }

    #[test]
    fn history_is_bounded() {
        let store = Store::new(2);
        let mut s = store.lock();
        for i in 0..5 {
            s.insert("a", format!("k{i}"), json!({"metadata": {}}));
        }
        assert!(s.events_after("a", 1).is_err());
        assert_eq!(s.events_after("a", 3).map(|e| e.len()), Ok(2));
    }
}

//! Watches: a chunked stream of `{"type","object"}` lines.
//!
//! The start is decided under the store lock: the initial ADDED events (for
//! `resourceVersion=0`, no resourceVersion, or `sendInitialEvents=true`) or the history
//! after the requested revision are collected, and the live subscription is taken, before
//! the lock is released. No change can fall between the two, and none is sent twice. A
//! watcher that falls too far behind the broadcast is ended, so its client re-watches.
//!
//! Every watcher writes an event from the object's shared JSON text, made once however
//! many watchers there are, and the lines are written after the lock is released.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, sleep_until};

use crate::handlers::{Selection, check_rv_params};
use crate::kinds::external;
use crate::registry::ResourceDef;
use crate::server::{AppState, Ctx, Reply, Target};
use crate::status::{ApiError, Cause, Details};
use crate::store::{EventType, Object, StoredEvent};

/// How long a watch lasts when the client gives no `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often a bookmark is sent on a long watch that allows them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// `{"object":<object>,"type":"<kind>"}` and a newline: the event as serde_json writes
/// it, with the object's JSON text copied in. `kind` is one of the watch event types,
/// which need no escaping.
fn line_from_text(kind: &str, object: &[u8]) -> Bytes {
    let mut bytes = Vec::with_capacity(object.len() + 32);
    bytes.extend_from_slice(b"{\"object\":");
    bytes.extend_from_slice(object);
    bytes.extend_from_slice(b",\"type\":\"");
    bytes.extend_from_slice(kind.as_bytes());
    bytes.extend_from_slice(b"\"}\n");
    Bytes::from(bytes)
}

fn line(kind: &str, object: &Value) -> Bytes {
    line_from_text(kind, &serde_json::to_vec(object).unwrap_or_default())
}

fn bookmark(def: &ResourceDef, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"apiVersion": def.api_version(), "kind": def.kind, "metadata": metadata}),
    )
}

/// The line for a stored change as this watcher sees it, if it sees it at all: an object
/// that moves into the selection is ADDED, one that moves out is DELETED.
fn event_line(def: &ResourceDef, selection: &Selection, event: &StoredEvent) -> Option<Bytes> {
    if event.storage != def.storage {
        return None;
    }
    let now = external(def, &event.object);
    let now_in = selection.matches(&event.key, &now);
    let before_in = event
        .previous
        .as_ref()
        .map(|p| selection.matches(&event.key, &external(def, p)))
        .unwrap_or(false);
    let kind = match (event.kind, before_in, now_in) {
        (EventType::Added, _, true) => EventType::Added,
        (EventType::Deleted, true, _) => EventType::Deleted,
        (EventType::Modified, true, true) => EventType::Modified,
        (EventType::Modified, false, true) => EventType::Added,
        (EventType::Modified, true, false) => EventType::Deleted,
        _ => return None,
    };
    Some(line_from_text(kind.as_str(), now.json()))
}

/// GET with `watch=true`.
pub(crate) fn serve(ctx: &Ctx<'_>, t: &Target) -> Result<Reply, ApiError> {
    let def = t.def;
    let selection = Selection::parse(ctx, t)?;
    let rv = check_rv_params(ctx)?;
    let send_initial = ctx.flag("sendInitialEvents");
    if send_initial && ctx.param("resourceVersionMatch") != Some("NotOlderThan") {
        let cause = Cause::required_detail(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        );
        let details = Details::object("", "meta.k8s.io", "ListOptions");
        return Err(ApiError::invalid(
            "ListOptions.meta.k8s.io",
            "",
            details,
            vec![cause],
        ));
    }
    let bookmarks = ctx.flag("allowWatchBookmarks");
    let timeout = match ctx.param("timeoutSeconds").filter(|v| !v.is_empty()) {
        Some(text) => Duration::from_secs(
            text.parse::<u64>()
                .map_err(|_| ApiError::bad_request("invalid timeoutSeconds"))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    let mut initial: Vec<Arc<Object>> = Vec::new();
    let mut history: Vec<Arc<StoredEvent>> = Vec::new();
    let (rx, start_rv, from_scratch) = {
        let st = ctx.state.store.lock();
        let start_rv = st.current_rv();
        let from_scratch = send_initial || matches!(rv, None | Some(0));
        if from_scratch {
            initial.extend(st.all(def.storage).filter_map(|(k, obj)| {
                let external = external(def, obj);
                selection.matches(k, &external).then_some(external)
            }));
        } else if let Some(from) = rv {
            match st.events_after(def.storage, from) {
                Ok(events) => history = events,
                Err(too_old) => {
                    let status = ApiError::expired(too_old.to_string()).to_status();
                    let (tx, rx) = mpsc::channel(1);
                    // A fresh channel with room for one line cannot be full.
                    let _ = tx.try_send(Ok(line("ERROR", &status)));
                    return Ok(Reply::Stream(rx));
                }
            }
        }
        (st.subscribe(), start_rv, from_scratch)
    };
    // The lines are written from what was collected under the lock, after letting it go.
    let mut first: Vec<Bytes> = initial
        .iter()
        .map(|obj| line_from_text("ADDED", obj.json()))
        .collect();
    if from_scratch && send_initial && bookmarks {
        first.push(bookmark(def, start_rv, true));
    }
    first.extend(
        history
            .iter()
            .filter_map(|e| event_line(def, &selection, e)),
    );
    let (tx, out) = mpsc::channel(64);
    let state = Arc::clone(ctx.state);
    let live = Live {
        def,
        selection,
        bookmarks,
        timeout,
        last_rv: start_rv,
    };
    tokio::spawn(live.run(state, rx, tx, first));
    Ok(Reply::Stream(out))
}

struct Live {
    def: &'static ResourceDef,
    selection: Selection,
    bookmarks: bool,
    timeout: Duration,
    /// The newest revision this watcher has passed, sent or filtered.
    last_rv: u64,
}

impl Live {
    fn bookmark_due(&self, at: Instant, deadline: Instant) -> bool {
        self.bookmarks && at < deadline
    }

    async fn run(
        mut self,
        state: Arc<AppState>,
        mut rx: broadcast::Receiver<Arc<StoredEvent>>,
        tx: mpsc::Sender<Result<Bytes, Infallible>>,
        first: Vec<Bytes>,
    ) {
        let started = Instant::now();
        let deadline = started + self.timeout;
        // One bookmark shortly before the end, as the watch cache sends, then one a minute.
        let mut next_bookmark = if self.timeout >= Duration::from_secs(2) {
            (started + BOOKMARK_EVERY).min(deadline - Duration::from_secs(1))
        } else {
            deadline
        };
        let mut shutdown = state.shutdown.clone();
        for chunk in first {
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        loop {
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                received = rx.recv() => match received {
                    Ok(event) => {
                        self.last_rv = self.last_rv.max(event.rv);
                        if let Some(chunk) = event_line(self.def, &self.selection, &event)
                            && tx.send(Ok(chunk)).await.is_err() {
                                return;
                            }
                    }
                    // Lagging or closed: end the stream so the client re-watches.
                    Err(_) => return,
                },
                () = sleep_until(next_bookmark), if self.bookmark_due(next_bookmark, deadline) => {
                    if tx.send(Ok(bookmark(self.def, self.last_rv, false))).await.is_err() {
                        return;
                    }
                    next_bookmark = (next_bookmark + BOOKMARK_EVERY).min(deadline);
                }
                () = tokio::time::sleep_until(deadline) => return,
                () = tx.closed() => return,
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_from_text_are_the_events_as_values() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a\"b"}}),
            json!({}),
            json!({"metadata": {"labels": {"x": "\u{e9}\n"}}, "spec": [1, 2.5, null]}),
        ];
        for kind in ["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"] {
            for object in &objects {
                let written = line(kind, object);
                assert_eq!(written.last(), Some(&b'\n'), "one line");
                let parsed: Value = serde_json::from_slice(&written).expect("valid JSON");
                assert_eq!(parsed, json!({"type": kind, "object": object}));
            }
        }
    }
}

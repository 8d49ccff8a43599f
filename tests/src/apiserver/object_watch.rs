//! Watches of the object store's resources, streamed as kube-apiserver streams them:
//! one JSON event per line (`{"type":"ADDED","object":{...}}`), each written as soon as
//! it happens, until `timeoutSeconds` (else a random 30 to 60 minutes, as
//! `--min-request-timeout` gives) or the client goes away.
//!
//! * `resourceVersion` unset or `0`: the current objects first, as ADDED; `N`: every
//!   change after N, from the retained history. A start older than the history is what
//!   the watch cache answers: HTTP 200, one ERROR event carrying a 410 Expired Status
//!   (`too old resource version: N (oldest)`), and the end of the stream.
//! * Selectors apply to the object before and after each change, as the cacher's
//!   `convertToWatchEvent`: an object that comes to match is ADDED, one that stops
//!   matching is DELETED (its previous state at the change's resource version).
//! * `allowWatchBookmarks=true`: a BOOKMARK with the store's resource version every
//!   bookmark interval, never ahead of an event not yet sent.
//! * `sendInitialEvents=true` (a streaming list): the current objects, then a BOOKMARK
//!   annotated `k8s.io/initial-events-end: "true"`.
//! * `Accept: ...;as=Table`: each object as a one-row Table, column definitions only in
//!   the first.

use super::api_errors::ApiError;
use super::custom_resources::Format;
use super::list_options::{parse_resource_version, ListOptions};
use super::object_meta;
use super::object_store::{EventType, Gvr, ObjectStore, StoredEvent, WatchFrom};
use super::resource_definitions::{partial_object_metadata, ResourceDefinition};
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use tokio::time::{Instant, Interval, Sleep};

/// Which events a watch wants.
struct Filter {
    gvr: Gvr,
    namespace: Option<String>,
    name: Option<String>,
    options: ListOptions,
}

impl Filter {
    fn in_scope(&self, event: &StoredEvent) -> bool {
        event.key.gvr == self.gvr
            && self.namespace.as_ref().is_none_or(|ns| *ns == event.key.namespace)
            && self.name.as_ref().is_none_or(|name| *name == event.key.name)
    }

    fn selects(&self, object: &Value) -> bool {
        self.options.label_selector.matches(object) && self.options.field_selector.matches(object)
    }

    /// The event this watcher sees of a change, if any (`convertToWatchEvent`).
    fn convert(&self, event: &StoredEvent) -> Option<(&'static str, Value)> {
        if !self.in_scope(event) {
            return None;
        }
        let now = event.kind != EventType::Deleted && self.selects(&event.object);
        let before = event.previous.as_ref().is_some_and(|p| self.selects(p));
        match (now, before) {
            (true, false) => Some(("ADDED", event.object.clone())),
            (true, true) => Some(("MODIFIED", event.object.clone())),
            (false, true) => {
                let mut previous = event.previous.clone().unwrap_or(Value::Null);
                object_meta::set(&mut previous, "resourceVersion", Some(json!(event.resource_version.to_string())));
                Some(("DELETED", previous))
            }
            (false, false) => None,
        }
    }
}

/// A running watch: what is left to send and where the next events come from.
struct Watcher {
    definition: &'static ResourceDefinition,
    store: ObjectStore,
    filter: Filter,
    format: Format,
    live: Receiver<Arc<StoredEvent>>,
    closing: tokio::sync::watch::Receiver<u64>,
    queue: VecDeque<Bytes>,
    /// The highest resource version every event up to which has been queued.
    seen: u64,
    /// Changes up to this resource version are not this watch's (a start ahead of the
    /// store sees only what comes after it).
    after: u64,
    bookmarks: Option<Interval>,
    deadline: Pin<Box<Sleep>>,
    /// Table column definitions go with the first object only.
    headers_sent: bool,
    done: bool,
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

impl Watcher {
    fn bookmark_line(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let d = self.definition;
        line("BOOKMARK", json!({"kind": d.kind, "apiVersion": d.api_version(), "metadata": metadata}))
    }

    fn push_object(&mut self, kind: &str, object: Value) {
        let object = match &self.format {
            Format::Json => object,
            Format::Metadata => partial_object_metadata(&object),
            Format::Table(include) => {
                let rv = object["metadata"]["resourceVersion"].clone();
                let table =
                    self.definition.table(&[object], json!({"resourceVersion": rv}), include, !self.headers_sent);
                self.headers_sent = true;
                table
            }
        };
        self.queue.push_back(line(kind, object));
    }

    fn push_event(&mut self, event: &StoredEvent) {
        if event.resource_version > self.after {
            if let Some((kind, object)) = self.filter.convert(event) {
                self.push_object(kind, object);
            }
        }
        self.seen = self.seen.max(event.resource_version);
    }

    /// A bookmark at the store's resource version, after every event up to it: read the
    /// version first, then drain what was broadcast before (events are sent under the
    /// store's lock, so every event up to it is already in the channel).
    fn bookmark(&mut self) {
        let current = self.store.resource_version();
        loop {
            match self.live.try_recv() {
                Ok(event) => self.push_event(&event),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(_) | TryRecvError::Closed) => {
                    self.done = true;
                    return;
                }
            }
        }
        let rv = current.max(self.seen);
        self.seen = rv;
        let bookmark = self.bookmark_line(rv, false);
        self.queue.push_back(bookmark);
    }

    /// The next line to send, or `None` at the end of the watch.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(line) = self.queue.pop_front() {
                return Some(line);
            }
            if self.done {
                return None;
            }
            let step = tokio::select! {
                received = self.live.recv() => Step::Received(received),
                () = tick(&mut self.bookmarks) => Step::Bookmark,
                () = self.deadline.as_mut() => Step::End,
                _ = self.closing.changed() => Step::End,
            };
            match step {
                Step::Received(Ok(event)) => self.push_event(&event),
                // Too slow (kube-apiserver drops a watcher that cannot keep up) or the
                // store is gone: the client resumes from what it has seen.
                Step::Received(Err(RecvError::Lagged(_) | RecvError::Closed)) | Step::End => self.done = true,
                Step::Bookmark => self.bookmark(),
            }
        }
    }
}

/// What woke a watcher up.
enum Step {
    Received(Result<Arc<StoredEvent>, RecvError>),
    Bookmark,
    End,
}

/// The next bookmark tick, or never without bookmarks.
async fn tick(bookmarks: &mut Option<Interval>) {
    match bookmarks {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

fn stream_response(lines: impl futures_util::Stream<Item = Bytes> + Send + 'static) -> Response {
    use futures_util::StreamExt;
    let body = Body::from_stream(lines.map(Ok::<_, std::convert::Infallible>));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// How long the watch lasts: `timeoutSeconds`, else kube-apiserver's random timeout
/// (capped at a day, so no client-chosen number overflows a deadline).
fn timeout(options: &ListOptions) -> Duration {
    match options.timeout_seconds {
        Some(seconds) if seconds > 0 => Duration::from_secs(seconds.unsigned_abs().min(86_400)),
        _ => Duration::from_secs(rand::thread_rng().gen_range(1800..3600)),
    }
}

/// Starts a watch of `definition` in `namespace` (all when `None`), of the one object
/// `name` when given.
pub(crate) fn watch(
    store: &ObjectStore,
    definition: &'static ResourceDefinition,
    namespace: Option<&str>,
    name: Option<&str>,
    options: ListOptions,
    format: Format,
    bookmark_interval: Duration,
) -> Result<Response, ApiError> {
    let rv = options.resource_version.clone();
    let initial_events = options.send_initial_events;
    let from = match (rv.as_deref(), initial_events) {
        (_, Some(true)) => WatchFrom::Now,
        (None, _) => WatchFrom::Now,
        // sendInitialEvents=false with 0: from any point, i.e. now, without the state.
        (Some("0"), Some(false)) => WatchFrom::After(store.resource_version()),
        (Some("0"), None) => WatchFrom::Now,
        (Some(rv), _) => WatchFrom::After(parse_resource_version(rv)?),
    };
    let gvr = definition.gvr();
    let start = match store.watch(&gvr, namespace, from) {
        Ok(start) => start,
        Err(too_old) => {
            // The watch cache's errWatcher: a 200, one ERROR event, the end.
            let status = ApiError::expired(too_old.to_string()).to_status();
            let error = line("ERROR", status);
            return Ok(stream_response(futures_util::stream::iter([error])));
        }
    };
    let bookmark_interval = bookmark_interval.clamp(Duration::from_millis(10), Duration::from_secs(86_400));
    let bookmarks = options.allow_watch_bookmarks.then(|| {
        let mut interval = tokio::time::interval_at(Instant::now() + bookmark_interval, bookmark_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let deadline = Box::pin(tokio::time::sleep(timeout(&options)));
    let filter = Filter { gvr, namespace: namespace.map(str::to_owned), name: name.map(str::to_owned), options };
    let mut watcher = Watcher {
        definition,
        store: store.clone(),
        filter,
        format,
        live: start.live,
        closing: start.closing,
        queue: VecDeque::new(),
        seen: start.resource_version,
        after: match from {
            WatchFrom::After(since) => since,
            WatchFrom::Now => start.resource_version,
        },
        bookmarks,
        deadline,
        headers_sent: false,
        done: false,
    };
    for (key, object) in start.initial {
        let in_scope = watcher.filter.name.as_ref().is_none_or(|n| *n == key.name);
        if in_scope && watcher.filter.selects(&object) {
            watcher.push_object("ADDED", object);
        }
    }
    if initial_events == Some(true) {
        let end = watcher.bookmark_line(start.resource_version, true);
        watcher.queue.push_back(end);
    }
    for event in &start.backlog {
        watcher.push_event(event);
    }
    let lines = futures_util::stream::unfold(watcher, |mut watcher| async move {
        let line = watcher.next().await?;
        Some((line, watcher))
    });
    Ok(stream_response(lines))
}

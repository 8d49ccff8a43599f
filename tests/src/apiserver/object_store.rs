//! A generic in-memory object store playing etcd and kube-apiserver's watch cache:
//! JSON objects keyed by group/version/resource, namespace (empty for cluster-scoped)
//! and name, one global resource version (etcd's revision) that every write moves on,
//! and a bounded history of changes from which watches resume and older states are
//! rebuilt.
//!
//! It knows nothing of REST semantics (what a create or an update may change, status
//! subresources, generation): the handlers in [`super::custom_resources`] decide those
//! and hand it the object to store. What it guarantees is what clients of a real API
//! server depend on:
//!
//! * a read-modify-write runs under one lock, so a `resourceVersion` precondition checked
//!   in it is a compare-and-swap;
//! * a write that changes nothing is not a write: no new resource version and no watch
//!   event (etcd3's `GuaranteedUpdate` skips identical bytes);
//! * events are broadcast under the lock, in resource-version order, and a watch
//!   subscribes under the same lock, so it sees every change after its starting point
//!   exactly once;
//! * a watch or a read from before the retained history is refused ("too old"), as the
//!   watch cache refuses one that fell out of its window.

use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, watch};

/// How many changes the store remembers unless told otherwise (kube-apiserver's watch
/// cache holds about as many per resource by default).
pub const DEFAULT_HISTORY: usize = 1000;

/// A resource: group, version, plural name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gvr {
    pub group: String,
    pub version: String,
    pub resource: String,
}

impl Gvr {
    pub fn new(group: &str, version: &str, resource: &str) -> Self {
        Self { group: group.into(), version: version.into(), resource: resource.into() }
    }
}

/// Where one object lives. `namespace` is empty for a cluster-scoped object. Keys sort
/// as etcd's do (`/registry/<group>/<resource>/<namespace>/<name>`), which is the order
/// lists come back in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub gvr: Gvr,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(gvr: &Gvr, namespace: &str, name: &str) -> Self {
        Self { gvr: gvr.clone(), namespace: namespace.into(), name: name.into() }
    }

    /// The key a continue token names, relative to the resource: `namespace/name`, or
    /// `name` for a cluster-scoped object.
    pub fn relative(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The watch event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as the watch cache keeps it: the object after it (for a deletion, the
/// last state with the deletion's resource version, as etcd3's watcher reports it) and
/// the object before it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub kind: EventType,
    pub key: ObjectKey,
    pub resource_version: u64,
    pub object: Value,
    pub previous: Option<Value>,
}

/// What a read-modify-write decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Store this object (its `metadata.resourceVersion` is set by the store).
    Put(Value),
    /// Remove the object.
    Delete,
    /// Change nothing.
    Keep,
}

/// What a read-modify-write did.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The object now stored (`None` after a deletion or when there was none).
    pub object: Option<Value>,
    /// The change, when there was one.
    pub event: Option<Arc<StoredEvent>>,
}

/// A read of a state the store no longer has, or has not reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Older than the retained history: `oldest` is the oldest resource version from
    /// which every later change is still known (the watch cache's `oldest-1`).
    #[error("too old resource version: {requested} ({oldest})")]
    TooOld { requested: u64, oldest: u64 },
    #[error("too large resource version: {requested}, current: {current}")]
    TooLarge { requested: u64, current: u64 },
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// Now: the current objects first (as synthetic ADDED events), then every change.
    Now,
    /// Every change after this resource version.
    After(u64),
}

/// A watch, started: what happened before it subscribed, and the live feed.
pub struct WatchStart {
    /// For [`WatchFrom::Now`], the objects that exist, in key order.
    pub initial: Vec<(ObjectKey, Value)>,
    /// For [`WatchFrom::After`], the retained changes after the starting point.
    pub backlog: Vec<Arc<StoredEvent>>,
    /// Every change from here on (none is both in `backlog` and here).
    pub live: broadcast::Receiver<Arc<StoredEvent>>,
    /// The store's resource version when the watch started.
    pub resource_version: u64,
    /// Changes when every open watch must end ([`ObjectStore::close_watches`]).
    pub closing: watch::Receiver<u64>,
}

/// The objects of one resource at one resource version.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub resource_version: u64,
    pub items: Vec<(ObjectKey, Value)>,
}

struct State {
    resource_version: u64,
    objects: BTreeMap<ObjectKey, Value>,
    history: VecDeque<Arc<StoredEvent>>,
    /// Every change after this resource version is in `history`.
    history_start: u64,
    capacity: usize,
}

struct Shared {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<StoredEvent>>,
    /// Bumped to end every open watch.
    closing: watch::Sender<u64>,
}

/// The store. Cloning it shares it.
#[derive(Clone)]
pub struct ObjectStore {
    shared: Arc<Shared>,
}

impl Default for ObjectStore {
    fn default() -> Self {
        Self::new()
    }
}

/// The object's `metadata.resourceVersion` set to `rv`.
fn with_resource_version(mut object: Value, rv: u64) -> Value {
    if let Some(object) = object.as_object_mut() {
        let metadata = object.entry("metadata").or_insert_with(|| Value::Object(Default::default()));
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
    }
    object
}

impl ObjectStore {
    /// An empty store at resource version 1 (a fresh etcd's revision).
    pub fn new() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }

    /// An empty store that remembers the last `capacity` changes.
    pub fn with_history(capacity: usize) -> Self {
        let state = State {
            resource_version: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_start: 1,
            capacity: capacity.max(1),
        };
        // Watchers that fall this far behind are cut off (they resume from history).
        let (events, _) = broadcast::channel(4096);
        let (closing, _) = watch::channel(0);
        Self { shared: Arc::new(Shared { state: Mutex::new(state), events, closing }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent state behind: every
        // mutation below is completed before anything that could panic.
        self.shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current resource version (etcd's revision).
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// The oldest resource version a watch may start after.
    pub fn oldest(&self) -> u64 {
        self.lock().history_start
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// The objects of `gvr` (in `namespace`, or all when `None`) now, in key order.
    pub fn list(&self, gvr: &Gvr, namespace: Option<&str>) -> Listing {
        let state = self.lock();
        Listing { resource_version: state.resource_version, items: select(&state.objects, gvr, namespace) }
    }

    /// The objects of `gvr` as they were at resource version `at`, rebuilt by undoing
    /// the retained changes after it.
    pub fn list_at(&self, gvr: &Gvr, namespace: Option<&str>, at: u64) -> Result<Listing, ReadError> {
        let state = self.lock();
        if at > state.resource_version {
            return Err(ReadError::TooLarge { requested: at, current: state.resource_version });
        }
        if at < state.history_start {
            return Err(ReadError::TooOld { requested: at, oldest: state.history_start });
        }
        let mut objects: BTreeMap<ObjectKey, Value> = select(&state.objects, gvr, namespace).into_iter().collect();
        for event in state.history.iter().rev().take_while(|e| e.resource_version > at) {
            let in_scope = event.key.gvr == *gvr && namespace.is_none_or(|ns| event.key.namespace == ns);
            if !in_scope {
                continue;
            }
            match (&event.kind, &event.previous) {
                (EventType::Added, _) => {
                    objects.remove(&event.key);
                }
                (_, Some(previous)) => {
                    objects.insert(event.key.clone(), previous.clone());
                }
                (_, None) => {
                    objects.remove(&event.key);
                }
            }
        }
        Ok(Listing { resource_version: at, items: objects.into_iter().collect() })
    }

    /// Reads the object at `key` and writes what `decide` returns, under one lock: the
    /// compare-and-swap every precondition relies on. The stored object gets the new
    /// resource version; a `Put` identical to what is stored (resource version aside)
    /// is no write at all.
    pub fn modify<E>(
        &self,
        key: &ObjectKey,
        decide: impl FnOnce(Option<&Value>) -> Result<Write, E>,
    ) -> Result<Written, E> {
        let mut state = self.lock();
        let current = state.objects.get(key).cloned();
        let write = decide(current.as_ref())?;
        let (kind, object) = match (write, &current) {
            (Write::Keep, _) | (Write::Delete, None) => return Ok(Written { object: current, event: None }),
            (Write::Put(object), Some(existing)) => {
                let unchanged = existing["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|rv| rv.parse().ok())
                    .is_some_and(|rv| with_resource_version(object.clone(), rv) == *existing);
                if unchanged {
                    return Ok(Written { object: current, event: None });
                }
                (EventType::Modified, object)
            }
            (Write::Put(object), None) => (EventType::Added, object),
            (Write::Delete, Some(existing)) => (EventType::Deleted, existing.clone()),
        };
        state.resource_version += 1;
        let rv = state.resource_version;
        let object = with_resource_version(object, rv);
        match kind {
            EventType::Deleted => state.objects.remove(key),
            _ => state.objects.insert(key.clone(), object.clone()),
        };
        let event = Arc::new(StoredEvent {
            kind,
            key: key.clone(),
            resource_version: rv,
            object: object.clone(),
            previous: current,
        });
        state.history.push_back(event.clone());
        while state.history.len() > state.capacity {
            if let Some(dropped) = state.history.pop_front() {
                state.history_start = dropped.resource_version;
            }
        }
        // Sent under the lock: receivers see events in resource-version order.
        let _ = self.shared.events.send(event.clone());
        let object = (kind != EventType::Deleted).then_some(object);
        Ok(Written { object, event: Some(event) })
    }

    /// Starts a watch of everything (callers filter by resource, namespace, selectors).
    /// A start before the retained history is [`ReadError::TooOld`].
    pub fn watch(&self, gvr: &Gvr, namespace: Option<&str>, from: WatchFrom) -> Result<WatchStart, ReadError> {
        let state = self.lock();
        let live = self.shared.events.subscribe();
        let closing = self.shared.closing.subscribe();
        let resource_version = state.resource_version;
        match from {
            WatchFrom::Now => Ok(WatchStart {
                initial: select(&state.objects, gvr, namespace),
                backlog: Vec::new(),
                live,
                resource_version,
                closing,
            }),
            WatchFrom::After(since) => {
                if since < state.history_start {
                    return Err(ReadError::TooOld { requested: since, oldest: state.history_start });
                }
                let backlog = state.history.iter().filter(|e| e.resource_version > since).cloned().collect();
                Ok(WatchStart { initial: Vec::new(), backlog, live, resource_version, closing })
            }
        }
    }

    /// Forgets every retained change, as an etcd compaction does: a watch or an exact
    /// read from before now is then too old. Tests use it to drive a client's re-list.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.history.clear();
        state.history_start = state.resource_version;
    }

    /// Ends every open watch, as an API server restart does: clients watch again from
    /// the last resource version they saw (and, after a [`ObjectStore::compact`], get a
    /// 410 and re-list).
    pub fn close_watches(&self) {
        self.shared.closing.send_modify(|generation| *generation += 1);
    }

    /// How many changes to retain from now on.
    pub fn set_history_capacity(&self, capacity: usize) {
        let mut state = self.lock();
        state.capacity = capacity.max(1);
        while state.history.len() > state.capacity {
            if let Some(dropped) = state.history.pop_front() {
                state.history_start = dropped.resource_version;
            }
        }
    }
}

fn select(objects: &BTreeMap<ObjectKey, Value>, gvr: &Gvr, namespace: Option<&str>) -> Vec<(ObjectKey, Value)> {
    objects
        .iter()
        .filter(|(key, _)| key.gvr == *gvr && namespace.is_none_or(|ns| key.namespace == ns))
        .map(|(key, object)| (key.clone(), object.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gvr() -> Gvr {
        Gvr::new("kubegate.dev", "v1alpha1", "accessrequests")
    }

    fn put(store: &ObjectStore, name: &str, value: Value) -> Written {
        let key = ObjectKey::new(&gvr(), "kubegate", name);
        store
            .modify::<()>(&key, |_| Ok(Write::Put(json!({"metadata": {"name": name}, "spec": value}))))
            .unwrap_or_else(|_| panic!("put"))
    }

    fn delete(store: &ObjectStore, name: &str) -> Written {
        let key = ObjectKey::new(&gvr(), "kubegate", name);
        store.modify::<()>(&key, |_| Ok(Write::Delete)).unwrap_or_else(|_| panic!("delete"))
    }

    fn names(listing: &Listing) -> Vec<String> {
        listing.items.iter().map(|(k, _)| k.name.clone()).collect()
    }

    #[test]
    fn writes_move_one_resource_version_and_identical_writes_do_not() {
        let store = ObjectStore::new();
        assert_eq!(store.resource_version(), 1);
        let first = put(&store, "a", json!(1));
        assert_eq!(first.object.as_ref().map(|o| o["metadata"]["resourceVersion"].clone()), Some(json!("2")));
        assert_eq!(first.event.as_ref().map(|e| e.kind), Some(EventType::Added));
        let same = put(&store, "a", json!(1));
        assert!(same.event.is_none(), "no-op write is no write");
        assert_eq!(store.resource_version(), 2);
        let changed = put(&store, "a", json!(2));
        assert_eq!(changed.event.as_ref().map(|e| (e.kind, e.resource_version)), Some((EventType::Modified, 3)));
        let gone = delete(&store, "a");
        let event = gone.event.unwrap_or_else(|| panic!("deleted"));
        assert_eq!(event.kind, EventType::Deleted);
        assert_eq!(event.object["metadata"]["resourceVersion"], "4", "the deletion's resource version");
        assert_eq!(event.previous.as_ref().map(|p| p["spec"].clone()), Some(json!(2)));
        assert!(delete(&store, "a").event.is_none());
    }

    #[test]
    fn older_states_are_rebuilt_from_history_until_it_is_gone() -> Result<(), ReadError> {
        let store = ObjectStore::with_history(3);
        put(&store, "a", json!(1)); // 2
        put(&store, "b", json!(1)); // 3
        put(&store, "a", json!(2)); // 4
        delete(&store, "b"); // 5
        assert_eq!(names(&store.list(&gvr(), None)), ["a"]);
        let at3 = store.list_at(&gvr(), Some("kubegate"), 3)?;
        assert_eq!(names(&at3), ["a", "b"]);
        assert_eq!(at3.items[0].1["spec"], 1);
        assert_eq!(at3.items[0].1["metadata"]["resourceVersion"], "2");
        assert_eq!(names(&store.list_at(&gvr(), None, 2)?), ["a"], "every change after 2 is retained");
        assert_eq!(store.list_at(&gvr(), None, 1).err(), Some(ReadError::TooOld { requested: 1, oldest: 2 }));
        assert_eq!(store.list_at(&gvr(), None, 9).err(), Some(ReadError::TooLarge { requested: 9, current: 5 }));
        assert!(store.list_at(&gvr(), Some("other"), 4)?.items.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_watch_sees_every_change_after_its_start_once() -> Result<(), Box<dyn std::error::Error>> {
        let store = ObjectStore::new();
        put(&store, "a", json!(1)); // 2
        put(&store, "b", json!(1)); // 3
        let mut start = store.watch(&gvr(), None, WatchFrom::After(2))?;
        assert_eq!(start.backlog.iter().map(|e| e.resource_version).collect::<Vec<_>>(), [3]);
        put(&store, "c", json!(1)); // 4
        assert_eq!(start.live.recv().await?.resource_version, 4);
        let now = store.watch(&gvr(), None, WatchFrom::Now)?;
        assert_eq!(now.initial.len(), 3);
        assert_eq!(now.resource_version, 4);
        store.compact();
        assert!(matches!(
            store.watch(&gvr(), None, WatchFrom::After(3)),
            Err(ReadError::TooOld { requested: 3, oldest: 4 })
        ));
        assert!(store.watch(&gvr(), None, WatchFrom::After(4)).is_ok(), "from now is fine");
        Ok(())
    }
}

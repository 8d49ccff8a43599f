//! authz-server's connection to the API server that stores access requests: reads and
//! writes as the gateway (its service account, or the `upstream` credential of the
//! cluster named by `accessRequests.cluster`), a kube-runtime watch that keeps the
//! [`GrantIndex`] of every replica current, and the sweep that records expiries.
//!
//! Every write carries the `resourceVersion` it was decided on: when two replicas race
//! on one request, the API server takes one write and refuses the other with a
//! conflict, and the loser reads the object again and decides again.

use super::grants::GrantIndex;
use super::ledger;
use super::object::{AccessRequest, AccessRequestSpec, AccessRequestStatus};
use crate::config::UpstreamConfig;
use futures_util::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often ended grants are looked for.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);
/// How many times a write that lost a race is decided again.
const CONFLICT_RETRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("access requests: {0}")]
    Config(String),
    #[error("access request {0} not found")]
    NotFound(String),
    /// Someone else changed the object first, every time we tried.
    #[error("access request {0} kept changing while it was being updated; try again")]
    Conflict(String),
    #[error("the API server storing access requests: {0}")]
    Api(String),
}

impl StoreError {
    fn from_kube(name: &str, error: kube::Error) -> Self {
        match &error {
            kube::Error::Api(status) if status.is_not_found() => Self::NotFound(name.to_owned()),
            kube::Error::Api(status) if status.is_conflict() => Self::Conflict(name.to_owned()),
            _ => Self::Api(crate::error_text::causes(&error)),
        }
    }
}

/// The clock, in seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Access requests in one namespace of one API server.
#[derive(Clone)]
pub struct AccessStore {
    api: Api<AccessRequest>,
    grants: Arc<GrantIndex>,
}

impl AccessStore {
    /// A client for `upstream` (no request is made yet).
    pub fn connect(upstream: &UpstreamConfig, namespace: &str, grants: Arc<GrantIndex>) -> Result<Self, StoreError> {
        let client = crate::kube_client::client(upstream).map_err(StoreError::Config)?;
        Ok(Self { api: Api::namespaced(client, namespace), grants })
    }

    pub fn grants(&self) -> &Arc<GrantIndex> {
        &self.grants
    }

    /// Keeps the grant index current until the process ends; reconnects with backoff.
    pub fn spawn_watch(&self) {
        let (api, grants) = (self.api.clone(), self.grants.clone());
        tokio::spawn(async move {
            let mut buffer: Vec<AccessRequest> = Vec::new();
            let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
            while let Some(event) = events.next().await {
                grants.record_watch(event.is_ok(), now());
                match event {
                    Ok(Event::Init) => buffer.clear(),
                    Ok(Event::InitApply(object)) => buffer.push(object),
                    Ok(Event::InitDone) => {
                        grants.replace_all(buffer.iter());
                        tracing::info!(requests = buffer.len(), "access requests loaded");
                        buffer.clear();
                    }
                    Ok(Event::Apply(object)) => grants.apply(&object),
                    Ok(Event::Delete(object)) => grants.remove(object.name()),
                    Err(e) => tracing::warn!(error = %crate::error_text::causes(&e), "watching access requests"),
                }
            }
        });
    }

    /// Records each grant's end in its status (once: the replica whose write lands logs
    /// the audit event).
    pub fn spawn_expiry_sweep(&self, notifier: super::notify::Notifier) {
        let store = self.clone();
        tokio::spawn(async move {
            // What this replica recorded: a status written back to `Approved` later must
            // not make it record (and notify) the same expiry every second.
            let mut recorded_here = std::collections::HashSet::new();
            loop {
                tokio::time::sleep(EXPIRY_SWEEP).await;
                let now = now();
                let ended = store
                    .grants
                    .all()
                    .into_iter()
                    .filter(|g| g.expires_at <= now && !g.expiry_recorded && !recorded_here.contains(&g.id))
                    .collect::<Vec<_>>();
                for grant in ended {
                    recorded_here.insert(grant.id.clone());
                    let recorded = store
                        .decide_status(&grant.id, |object| {
                            ledger::expired_status(object, store.grants.key(), now).ok_or(())
                        })
                        .await;
                    if let Ok(object) = recorded {
                        tracing::info!(target: "kubegate::audit", event = "access_expired", request = object.name(),
                            requester = object.spec.requester, cluster = object.spec.cluster, levels = ?object.spec.levels);
                        notifier.send(super::notify::Event::Expired, &object, None);
                    }
                }
            }
        });
    }

    pub async fn create(&self, namespace: &str, spec: AccessRequestSpec) -> Result<AccessRequest, StoreError> {
        let object = AccessRequest::new(namespace, spec);
        self.api.create(&PostParams::default(), &object).await.map_err(|e| StoreError::from_kube("(new)", e))
    }

    pub async fn get(&self, name: &str) -> Result<AccessRequest, StoreError> {
        self.api.get(name).await.map_err(|e| StoreError::from_kube(name, e))
    }

    pub async fn list(&self) -> Result<Vec<AccessRequest>, StoreError> {
        let list = self.api.list(&ListParams::default()).await.map_err(|e| StoreError::from_kube("(list)", e))?;
        Ok(list.items)
    }

    /// Reads `name`, lets `decide` compute its next status, and writes it with the
    /// `resourceVersion` read; on a conflict, again from a fresh read.
    pub async fn decide_status<E>(
        &self,
        name: &str,
        decide: impl Fn(&AccessRequest) -> Result<AccessRequestStatus, E>,
    ) -> Result<AccessRequest, Decision<E>> {
        for _ in 0..CONFLICT_RETRIES {
            let mut object = self.get(name).await.map_err(Decision::Store)?;
            object.status = Some(decide(&object).map_err(Decision::Refused)?);
            match self.api.replace_status(name, &PostParams::default(), &object).await {
                Ok(written) => {
                    self.grants.apply(&written);
                    return Ok(written);
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => continue,
                Err(e) => return Err(Decision::Store(StoreError::from_kube(name, e))),
            }
        }
        Err(Decision::Store(StoreError::Conflict(name.to_owned())))
    }

    /// Closes `name` (denied or revoked) once `check` accepts it as read: sets
    /// `spec.revoked`, which voids every signature on the object, then records `status`
    /// for people to read. The spec change is a merge patch without a
    /// `resourceVersion`: closing only ever goes one way, so no amount of churn on the
    /// object (someone rewriting an annotation in a loop) can make it lose a race.
    pub async fn close<E>(
        &self,
        name: &str,
        check: impl Fn(&AccessRequest) -> Result<(), E>,
        status: impl Fn(&AccessRequest) -> AccessRequestStatus,
    ) -> Result<AccessRequest, Decision<E>> {
        let object = self.get(name).await.map_err(Decision::Store)?;
        check(&object).map_err(Decision::Refused)?;
        let patch = Patch::Merge(serde_json::json!({"spec": {"revoked": true}}));
        let closed = self
            .api
            .patch(name, &PatchParams::default(), &patch)
            .await
            .map_err(|e| Decision::Store(StoreError::from_kube(name, e)))?;
        self.grants.apply(&closed);
        // The grant is void already; the status is for people to read.
        let shown = self.decide_status(name, |o| Ok::<_, ()>(status(o))).await;
        Ok(shown.unwrap_or_else(|_| {
            tracing::warn!(request = name, "closed, but the status does not say so yet");
            closed
        }))
    }
}

/// Why a read-decide-write did not happen.
#[derive(Debug)]
pub enum Decision<E> {
    /// The rules refused it.
    Refused(E),
    Store(StoreError),
}

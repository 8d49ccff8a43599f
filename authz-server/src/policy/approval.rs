//! The `approve` question: may this principal approve this access request (or, asked
//! with `automatic`, is it approved without anyone)?
//!
//! Workflows say who may approve; policy can add to that, most usefully automatic
//! approval ("on-call members get `oncall` for at most an hour at night"). Unlike the
//! other actions, kubegate adds no built-in `permit` for `approve`: an approval is
//! granted only when a policy file permits it and no `forbid` applies, and an unscoped
//! `permit (principal, action, resource)` does not count (see `partition_by_action`).

use super::{entities, ClusterFacts, PolicyEngine, Principal, Verdict};
use std::collections::BTreeSet;

/// The Cedar action name (`k8s::Action::"approve"`).
pub(super) const ACTION: &str = "approve";

/// What a refusal says when no policy permits and no forbid with an `@error` decided.
const NOT_PERMITTED: &str = "no policy permits approving this request";

/// One approval to decide.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalQuestion<'a> {
    /// The cluster the levels are requested on (its tags are the resource's tags).
    pub cluster: &'a ClusterFacts,
    /// Who approves: the approver, or the requester for an automatic approval.
    pub principal: &'a Principal,
    pub requester: &'a str,
    pub workflow: &'a str,
    pub levels: &'a BTreeSet<String>,
    pub duration_seconds: i64,
    pub reason: &'a str,
    pub automatic: bool,
    /// Seconds since the Unix epoch (UTC): the caller passes its clock, so tests inject time.
    pub now: i64,
    /// The client address of the call being decided (the approver's, or the
    /// requester's for an automatic approval), as Envoy saw it. Every action's context
    /// has `sourceIp`, so an unscoped `forbid ... unless { context.sourceIp... }`, valid
    /// before `approve` existed, stays valid and also covers approvals; an unparsable
    /// address becomes `0.0.0.0`, as for the other actions.
    pub source_ip: &'a str,
}

/// `now` as policies read it, in UTC: approvers and on-call rotas in different time
/// zones must agree on what "06:00" means, and UTC has no daylight-saving jumps.
/// Computed by arithmetic because the crate has no date library (and needs none: the
/// Unix epoch counts no leap seconds, so every day is 86,400 seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UtcTime {
    pub(super) epoch: i64,
    /// 0..=23.
    pub(super) hour: i64,
    /// 0..=59.
    pub(super) minute: i64,
    /// 0 = Sunday .. 6 = Saturday.
    pub(super) weekday: i64,
}

impl UtcTime {
    pub(super) fn from_epoch(epoch: i64) -> Self {
        // Euclidean division, so an instant before 1970 still falls in 0..86400 of its day.
        let days = epoch.div_euclid(86_400);
        let second_of_day = epoch.rem_euclid(86_400);
        Self {
            epoch,
            hour: second_of_day / 3_600,
            minute: second_of_day % 3_600 / 60,
            // 1970-01-01 was a Thursday (4). `days` is at most i64::MAX / 86400: no overflow.
            weekday: (days + 4).rem_euclid(7),
        }
    }
}

impl PolicyEngine {
    /// Whether policy permits this approval: allowed only when a policy permits it and
    /// no `forbid` applies. A refusal carries the `@error` of a deciding forbid, else
    /// says that no policy permits it. `selfApproval` is `principal.user == requester`,
    /// so it is true for an automatic approval too: `automatic` tells them apart.
    pub fn approval(&self, question: &ApprovalQuestion<'_>) -> Verdict {
        let now = UtcTime::from_epoch(question.now);
        match self.ask(question.cluster, question.principal, entities::approval(question, now)) {
            Ok(asked) => self.verdict(ACTION, &asked, NOT_PERMITTED),
            Err(reason) => super::deny_unevaluable(reason),
        }
    }
}

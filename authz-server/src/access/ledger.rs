//! What approving, denying, revoking and expiring do to an access request: pure
//! functions from the object as the API server returned it to its next status (or
//! spec), so the rules are tested without an API server. [`super::store`] writes the
//! result with the object's `resourceVersion`, so of two replicas racing on one
//! request only one write lands; the other re-reads and decides again.

use super::object::{rfc3339, AccessRequest, AccessRequestStatus, Approval, Decided, Phase, SignedGrant, Submitted};
use super::signing::SigningKey;

/// Why an action on a request was refused; the message is what the person reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionRefused {
    #[error("access request {0} was not made through kubegate, or was changed since: it cannot be approved; ask for a new one")]
    NotSubmitted(String),
    #[error("access request {name} is {phase:?}, not pending")]
    NotPending { name: String, phase: Phase },
    #[error("you requested {0}: approving your own request takes a policy that permits it")]
    SelfApproval(String),
    #[error("you are not an approver of workflow {0}")]
    NotAnApprover(String),
    #[error("you already approved {0}")]
    AlreadyApproved(String),
    #[error("access request {0} holds no grant to revoke")]
    NothingToRevoke(String),
    #[error("only the requester or an approver of workflow {0} may revoke this grant")]
    MayNotRevoke(String),
    #[error("a denial needs a reason (--reason)")]
    ReasonRequired,
}

/// Where `object` really stands at `now`: a phase is only shown, so it is recomputed
/// from what is signed (an `Approved` phase without a valid grant is `Pending`).
pub fn phase(object: &AccessRequest, key: &SigningKey, now: i64) -> Phase {
    // Closed (`spec.revoked`) is for good; whether it was a denial or a revocation is
    // only shown. Anything else comes from what is signed, never from `status.phase`.
    if object.spec.revoked {
        return if object.status().phase == Phase::Denied { Phase::Denied } else { Phase::Revoked };
    }
    match super::grants::Grant::verified(object, key) {
        Some(grant) if now >= grant.expires_at => Phase::Expired,
        Some(_) => Phase::Approved,
        None => Phase::Pending,
    }
}

/// The status of a request authz-server has just created: pending, signed as made.
pub fn submitted_status(object: &AccessRequest, key: &SigningKey, now: i64) -> AccessRequestStatus {
    let at = rfc3339(now);
    let signature = key.sign_submission(object, &at);
    AccessRequestStatus { phase: Phase::Pending, submitted: Some(Submitted { at, signature }), ..Default::default() }
}

/// Whether authz-server made `object` as it is now.
pub fn is_submitted(object: &AccessRequest, key: &SigningKey) -> bool {
    object.status().submitted.is_some_and(|s| key.submission_is_valid(object, &s.at, &s.signature))
}

/// The approvals of `object` authz-server signed (others are dropped).
pub fn valid_approvals(object: &AccessRequest, key: &SigningKey) -> Vec<Approval> {
    object
        .status()
        .approvals
        .into_iter()
        .filter(|a| key.approval_is_valid(object, &a.by, &a.at, &a.signature))
        .collect()
}

/// `approver` approves at `now`; with enough approvals the request becomes a grant
/// from `now` for its duration. `self_approval_permitted`: a Cedar `approve` policy
/// permits this approver to approve their own request.
pub fn approve(
    object: &AccessRequest,
    key: &SigningKey,
    approver: &str,
    approvals_required: u32,
    self_approval_permitted: bool,
    now: i64,
) -> Result<AccessRequestStatus, ActionRefused> {
    let current = phase(object, key, now);
    if current != Phase::Pending {
        return Err(ActionRefused::NotPending { name: object.name().to_owned(), phase: current });
    }
    if !is_submitted(object, key) {
        return Err(ActionRefused::NotSubmitted(object.name().to_owned()));
    }
    if approver == object.spec.requester && !self_approval_permitted {
        return Err(ActionRefused::SelfApproval(object.name().to_owned()));
    }
    let mut approvals = valid_approvals(object, key);
    if approvals.iter().any(|a| a.by == approver) {
        return Err(ActionRefused::AlreadyApproved(object.name().to_owned()));
    }
    let at = rfc3339(now);
    approvals.push(Approval { by: approver.to_owned(), signature: key.sign_approval(object, approver, &at), at });
    let submitted = object.status().submitted;
    let mut status = AccessRequestStatus { phase: Phase::Pending, submitted, approvals, grant: None, decided: None };
    if status.approvals.len() >= approvals_required as usize {
        let mut grant = SignedGrant {
            levels: object.spec.levels.clone(),
            not_before: rfc3339(now),
            expires_at: rfc3339(now.saturating_add(object.spec.duration_seconds as i64)),
            signature: String::new(),
        };
        grant.signature = key.sign_grant(object, &grant);
        status.grant = Some(grant);
        status.phase = Phase::Approved;
    }
    Ok(status)
}

/// Whether `object` may be denied at `now` with `reason`. A denial, like a revocation,
/// closes the request for good (`spec.revoked`, which voids its signatures): a denied
/// request cannot be brought back by writing its old status again.
pub fn check_deniable(object: &AccessRequest, key: &SigningKey, reason: &str, now: i64) -> Result<(), ActionRefused> {
    let current = phase(object, key, now);
    if current != Phase::Pending {
        return Err(ActionRefused::NotPending { name: object.name().to_owned(), phase: current });
    }
    if reason.trim().is_empty() {
        return Err(ActionRefused::ReasonRequired);
    }
    Ok(())
}

/// The status shown once `by` closed the request (`phase` Denied or Revoked; the
/// closing itself is the spec change `spec.revoked: true`, written first).
pub fn closed_status(object: &AccessRequest, phase: Phase, by: &str, reason: &str, now: i64) -> AccessRequestStatus {
    let mut status = object.status();
    status.phase = phase;
    status.decided = Some(Decided { by: by.to_owned(), at: rfc3339(now), reason: reason.to_owned() });
    status
}

/// Whether `object` can be revoked at `now`.
pub fn check_revocable(object: &AccessRequest, key: &SigningKey, now: i64) -> Result<(), ActionRefused> {
    match phase(object, key, now) {
        Phase::Approved => Ok(()),
        _ => Err(ActionRefused::NothingToRevoke(object.name().to_owned())),
    }
}

/// The status that records expiry, if `object`'s grant has ended and the phase does
/// not say so yet.
pub fn expired_status(object: &AccessRequest, key: &SigningKey, now: i64) -> Option<AccessRequestStatus> {
    let status = object.status();
    (phase(object, key, now) == Phase::Expired && status.phase != Phase::Expired)
        .then_some(AccessRequestStatus { phase: Phase::Expired, ..status })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::object::AccessRequestSpec;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3; 32])
    }

    fn pending() -> AccessRequest {
        let spec = AccessRequestSpec {
            requester: "alice".into(),
            cluster: "dev".into(),
            workflow: "oncall".into(),
            levels: vec!["oncall".into()],
            duration_seconds: 600,
            reason: "INC-1".into(),
            revoked: false,
        };
        let mut object = AccessRequest::new("kubegate", spec);
        object.metadata.name = Some("ar-1".into());
        object.metadata.uid = Some("u".into());
        object.metadata.generation = Some(1);
        object.status = Some(submitted_status(&object, &key(), 0));
        object
    }

    fn with(object: &AccessRequest, status: AccessRequestStatus) -> AccessRequest {
        AccessRequest { status: Some(status), ..object.clone() }
    }

    #[test]
    fn one_approval_makes_a_grant_from_now_for_the_duration() {
        let status = approve(&pending(), &key(), "bob", 1, false, 1000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status.phase, Phase::Approved);
        let approved = with(&pending(), status);
        assert_eq!(phase(&approved, &key(), 1599), Phase::Approved);
        assert_eq!(phase(&approved, &key(), 1600), Phase::Expired);
        assert!(expired_status(&approved, &key(), 1599).is_none());
        assert_eq!(expired_status(&approved, &key(), 1600).map(|s| s.phase), Some(Phase::Expired));
    }

    #[test]
    fn two_approvers_are_needed_when_the_workflow_says_so() {
        let first =
            with(&pending(), approve(&pending(), &key(), "bob", 2, false, 10).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(phase(&first, &key(), 11), Phase::Pending);
        assert_eq!(
            approve(&first, &key(), "bob", 2, false, 11),
            Err(ActionRefused::AlreadyApproved("ar-1".into())),
            "the same approver twice is one approval"
        );
        let second = approve(&first, &key(), "carol", 2, false, 12).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(second.phase, Phase::Approved);
    }

    /// Attack: the requester writes a forged approval (a name the workflow accepts, no
    /// valid signature) into status, so that one real approval completes a
    /// two-approver request; and writes `phase: Approved` with no grant.
    #[test]
    fn forged_approvals_do_not_count() {
        let forged = with(
            &pending(),
            AccessRequestStatus {
                phase: Phase::Approved,
                approvals: vec![Approval { by: "carol".into(), at: rfc3339(5), signature: "forged".into() }],
                submitted: pending().status().submitted,
                ..Default::default()
            },
        );
        assert_eq!(phase(&forged, &key(), 6), Phase::Pending, "a phase alone is not a grant");
        let status = approve(&forged, &key(), "bob", 2, false, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((status.phase, status.approvals.len()), (Phase::Pending, 1));
    }

    /// Attack: a request created directly in the API server (bypassing the workflow's
    /// requesters), or edited after it was made (other levels, a longer duration).
    #[test]
    fn only_requests_kubegate_made_as_they_are_can_be_approved() {
        let mut direct = pending();
        direct.status = None;
        assert_eq!(approve(&direct, &key(), "bob", 1, false, 1), Err(ActionRefused::NotSubmitted("ar-1".into())));
        let mut edited = pending();
        edited.spec.duration_seconds = 86_400;
        edited.metadata.generation = Some(2);
        assert_eq!(approve(&edited, &key(), "bob", 1, false, 1), Err(ActionRefused::NotSubmitted("ar-1".into())));
    }

    #[test]
    fn self_approval_needs_a_policy() {
        assert_eq!(approve(&pending(), &key(), "alice", 1, false, 1), Err(ActionRefused::SelfApproval("ar-1".into())));
        assert!(approve(&pending(), &key(), "alice", 1, true, 1).is_ok());
    }

    /// A denial closes the request: its spec changes (a new generation), so writing the
    /// old pending status back (attack: undoing a denial to collect one more approval)
    /// leaves it closed.
    #[test]
    fn deny_and_revoke_apply_to_the_right_phases() {
        assert_eq!(check_deniable(&pending(), &key(), " ", 1), Err(ActionRefused::ReasonRequired));
        assert_eq!(check_deniable(&pending(), &key(), "no", 1), Ok(()));
        let mut denied = pending();
        denied.spec.revoked = true;
        denied.metadata.generation = Some(2);
        denied.status = Some(closed_status(&denied, Phase::Denied, "bob", "no", 1));
        assert_eq!(phase(&denied, &key(), 2), Phase::Denied);
        assert!(matches!(approve(&denied, &key(), "carol", 1, false, 2), Err(ActionRefused::NotPending { .. })));
        let undone = with(&denied, pending().status());
        assert_eq!(phase(&undone, &key(), 2), Phase::Revoked, "still closed");
        assert!(approve(&undone, &key(), "carol", 1, false, 2).is_err());
        // An unsigned `phase: Denied` on a live grant hides nothing: it is Approved.
        let approved =
            with(&pending(), approve(&pending(), &key(), "bob", 1, false, 1).unwrap_or_else(|e| panic!("{e}")));
        let relabelled = with(&approved, AccessRequestStatus { phase: Phase::Denied, ..approved.status() });
        assert_eq!(phase(&relabelled, &key(), 2), Phase::Approved);
        assert_eq!(check_revocable(&relabelled, &key(), 2), Ok(()));
        assert_eq!(check_revocable(&pending(), &key(), 1), Err(ActionRefused::NothingToRevoke("ar-1".into())));
        let approved =
            with(&pending(), approve(&pending(), &key(), "bob", 1, false, 1).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(check_revocable(&approved, &key(), 2), Ok(()));
        let mut revoked = approved.clone();
        revoked.spec.revoked = true;
        revoked.metadata.generation = Some(2);
        assert_eq!(phase(&revoked, &key(), 2), Phase::Revoked);
        assert_eq!(closed_status(&revoked, Phase::Revoked, "bob", "done", 3).phase, Phase::Revoked);
    }
}

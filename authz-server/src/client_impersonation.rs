//! What the client asked to impersonate (`kubectl --as`, `--as-group`, `--as-uid`),
//! which kubegate treats as a request to narrow the user's own levels. It reaches
//! authz-server one of two ways:
//!
//! * reported by the filter's strip stage, which runs before ext_authz in kubegate's
//!   own Envoy, removes the client's `Impersonate-*` headers and describes them in
//!   `x-kubegate-client-impersonation` (after removing any client copy of that);
//! * as the client's own headers in the check request, when no strip stage runs
//!   before ext_authz: a mesh places kubegate's filter after ext_authz only
//!   (docs/mesh.md), and the inject stage there removes them on the way out.
//!
//! Both at once cannot come from a working chain (the strip stage leaves no
//! `Impersonate-*` behind), so a request with both is refused as ambiguous. A report
//! with no strip stage to vouch for it is the client's own, but it can only narrow what
//! the user holds or be refused, never add a level, so it is read the same way.
//!
//! Envoy's check request joins repeated headers with commas (`headers` of
//! `AttributeContext.HttpRequest`), so several `Impersonate-Group` lines arrive as one
//! value, split at the commas (`RequestedImpersonation::record_joined`): a level whose
//! name has a comma cannot be asked for with `--as-group` through such a chain (a
//! narrowing must name levels the user holds, so a wrong split never adds one).
//!
//! Either way the answer is the request in one canonical form, which the decision
//! cache keys on: the same request is one entry, however it was written.

use kubegate_decision::{RequestedImpersonation, CLIENT_IMPERSONATION_HEADER};
use std::borrow::Cow;
use std::collections::HashMap;

/// Why the client's impersonation request cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("both a filter report and the client's own Impersonate-* headers")]
    Ambiguous,
    #[error("the filter's report is not JSON of the contract")]
    Malformed,
}

/// The client's request, as the contract's JSON (the decision cache keys on it), or
/// `None` when it asked for nothing.
pub fn requested(headers: Option<&HashMap<String, String>>) -> Result<Option<Cow<'_, str>>, Unreadable> {
    let Some(headers) = headers else { return Ok(None) };
    let reported = headers.get(CLIENT_IMPERSONATION_HEADER).map(String::as_str);
    let mut direct = RequestedImpersonation::default();
    for (name, value) in headers {
        direct.record_joined(name, value);
    }
    let asked = match (reported, direct.is_empty()) {
        (Some(_), false) => return Err(Unreadable::Ambiguous),
        (Some(report), true) => serde_json::from_str(report).map_err(|_| Unreadable::Malformed)?,
        (None, false) => direct,
        (None, true) => return Ok(None),
    };
    let canonical =
        serde_json::to_string(&RequestedImpersonation::canonical(asked)).map_err(|_| Unreadable::Malformed)?;
    Ok(Some(Cow::Owned(canonical)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn read(pairs: &[(&str, &str)]) -> Result<Option<RequestedImpersonation>, Unreadable> {
        let h = headers(pairs);
        requested(Some(&h))?.map(|json| serde_json::from_str(&json).map_err(|_| Unreadable::Malformed)).transpose()
    }

    #[test]
    fn nothing_asked_is_none() {
        assert_eq!(read(&[("authorization", "Bearer x")]), Ok(None));
        assert_eq!(requested(None), Ok(None));
    }

    /// Attack (through a mesh, no strip stage): `--as-group viewers` silently lost, so
    /// a narrowed context runs with every level. The client's headers are read.
    #[test]
    fn the_clients_own_headers_are_read_when_no_strip_stage_ran() {
        let asked = read(&[("impersonate-group", "viewers,auditors"), ("impersonate-extra-scopes", "x")]);
        let asked = asked.ok().flatten().unwrap_or_default();
        assert_eq!(asked.groups, ["auditors", "viewers"]);
        assert_eq!(asked.extra_headers, ["impersonate-extra-scopes"]);
        let user = read(&[("impersonate-user", "bob")]).ok().flatten().unwrap_or_default();
        assert_eq!(user.users, ["bob"]);
    }

    #[test]
    fn the_filters_report_is_read_in_canonical_form() {
        let h = headers(&[(CLIENT_IMPERSONATION_HEADER, r#"{ "groups" : ["viewers", "a", "viewers"] }"#)]);
        let canonical = requested(Some(&h)).ok().flatten().unwrap_or_default();
        let direct = headers(&[("impersonate-group", "a, viewers")]);
        assert_eq!(requested(Some(&direct)).ok().flatten().unwrap_or_default(), canonical, "one cache entry");
        let bad = headers(&[(CLIENT_IMPERSONATION_HEADER, "not json")]);
        assert_eq!(requested(Some(&bad)), Err(Unreadable::Malformed));
    }

    /// Only spaces and tabs around a joined part go: kube-apiserver keeps other white
    /// space, so `viewers` followed by a no-break space is not `viewers`.
    #[test]
    fn only_the_joiners_white_space_is_removed() {
        let asked = read(&[("impersonate-group", "viewers\u{a0}, auditors")]).ok().flatten().unwrap_or_default();
        assert_eq!(asked.groups, ["auditors", "viewers\u{a0}"]);
    }

    /// Attack: a report beside real headers, to make authz-server read one request while
    /// a later stage acts on the other.
    #[test]
    fn a_report_beside_real_headers_is_refused() {
        let both = [(CLIENT_IMPERSONATION_HEADER, "{}"), ("impersonate-group", "admins")];
        assert_eq!(read(&both), Err(Unreadable::Ambiguous));
    }
}

//! The header rules, independent of proxy-wasm.

use kubegate_decision::{
    encode_extra_key, Decision, Impersonation, RequestedImpersonation, CLIENT_IMPERSONATION_HEADER,
    INTERNAL_HEADER_PREFIX,
};

const IMPERSONATE_PREFIX: &str = "impersonate-";

/// The request headers of one request, as the filter sees and changes them.
pub trait HeaderMap {
    /// Every header line, repeats included, names as the host gives them.
    fn lines(&self) -> Vec<(String, String)>;
    /// Removes every line with this name.
    fn remove_all(&mut self, name: &str);
    /// Adds one more line, keeping any existing ones.
    fn add(&mut self, name: &str, value: &str);
}

/// True for headers no client may send upstream: any `Impersonate-*` (User, Group, Uid,
/// every Extra-*, and whatever Kubernetes adds later) and kubegate's own namespace.
pub fn is_reserved(name: &str) -> bool {
    starts_with_ignore_case(name, IMPERSONATE_PREFIX) || starts_with_ignore_case(name, INTERNAL_HEADER_PREFIX)
}

fn starts_with_ignore_case(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len() && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Removes every reserved header and returns what the client asked to impersonate.
pub fn strip_reserved(headers: &mut impl HeaderMap) -> RequestedImpersonation {
    let mut requested = RequestedImpersonation::default();
    let mut names = Vec::new();
    for (name, value) in headers.lines() {
        if !is_reserved(&name) {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "impersonate-user" => requested.users.push(value),
            "impersonate-group" => requested.groups.push(value),
            "impersonate-uid" => requested.uids.push(value),
            n if n.starts_with(IMPERSONATE_PREFIX) => requested.extra_headers.push(lower.clone()),
            _ => {}
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    for name in &names {
        headers.remove_all(name);
    }
    requested
}

/// The strip stage: remove, then tell authz-server what the client asked for.
pub fn strip_stage(headers: &mut impl HeaderMap) {
    let requested = strip_reserved(headers);
    if !requested.is_empty() {
        if let Ok(json) = serde_json::to_string(&requested) {
            headers.add(CLIENT_IMPERSONATION_HEADER, &json);
        }
    }
}

/// The inject stage for an accepted decision: strip again, drop the user's bearer token
/// (Envoy's credential injector sets the gateway's own after this filter), then add the
/// impersonation headers.
pub fn inject_stage(headers: &mut impl HeaderMap, decision: &Decision) {
    strip_reserved(headers);
    headers.remove_all("authorization");
    if let Some(identity) = &decision.impersonate {
        add_impersonation(headers, identity);
    }
}

fn add_impersonation(headers: &mut impl HeaderMap, identity: &Impersonation) {
    headers.add("impersonate-user", &identity.user);
    // One line per group: kube-apiserver does not split "a, b" (kubernetes#94683).
    for group in &identity.groups {
        headers.add("impersonate-group", group);
    }
    if let Some(uid) = &identity.uid {
        headers.add("impersonate-uid", uid);
    }
    for (key, values) in &identity.extra {
        let name = format!("impersonate-extra-{}", encode_extra_key(key));
        for value in values {
            headers.add(&name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubegate_decision::REQUEST_ID_EXTRA;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Lines(Vec<(String, String)>);

    impl HeaderMap for Lines {
        fn lines(&self) -> Vec<(String, String)> {
            self.0.clone()
        }
        fn remove_all(&mut self, name: &str) {
            self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
        fn add(&mut self, name: &str, value: &str) {
            self.0.push((name.to_string(), value.to_string()));
        }
    }

    impl Lines {
        fn of(pairs: &[(&str, &str)]) -> Self {
            Self(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
        }
        fn values(&self, name: &str) -> Vec<&str> {
            self.0.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
        }
    }

    fn alice() -> Decision {
        Decision::impersonating(Impersonation {
            user: "alice@example.com".into(),
            groups: vec!["engineering".into(), "system:authenticated".into()],
            uid: Some("u-1".into()),
            extra: BTreeMap::from([(REQUEST_ID_EXTRA.to_string(), vec!["req-1".to_string()])]),
        })
    }

    /// Attack: a client names itself `system:admin` in `system:masters` through
    /// Impersonate-* headers in mixed case, repeated, with -Uid and -Extra-*.
    #[test]
    fn strip_removes_every_client_impersonation_header_and_reports_it() {
        let mut h = Lines::of(&[
            (":path", "/api"),
            ("Impersonate-User", "system:admin"),
            ("IMPERSONATE-GROUP", "system:masters"),
            ("impersonate-group", "cluster-admins"),
            ("impersonate-uid", "0"),
            ("Impersonate-Extra-Scopes", "all"),
            ("impersonate-extra-kubegate.dev%2frequest-id", "forged"),
            ("x-kubegate-client-impersonation", "{}"),
            ("accept", "application/json"),
        ]);
        strip_stage(&mut h);
        assert!(h.0.iter().filter(|(n, _)| n != CLIENT_IMPERSONATION_HEADER).all(|(n, _)| !is_reserved(n)));
        assert_eq!(h.values("accept"), ["application/json"]);
        let reported: RequestedImpersonation =
            serde_json::from_str(h.values(CLIENT_IMPERSONATION_HEADER)[0]).unwrap_or_default();
        assert_eq!(reported.users, ["system:admin"]);
        assert_eq!(reported.groups, ["system:masters", "cluster-admins"]);
        assert_eq!(reported.uids, ["0"]);
        assert_eq!(reported.extra_headers.len(), 2);
    }

    /// Attack: a client forges the internal report header to make authz-server believe
    /// something else was asked for.
    #[test]
    fn strip_drops_a_forged_internal_header_when_nothing_was_asked() {
        let mut h = Lines::of(&[("x-kubegate-client-impersonation", r#"{"users":["x"]}"#)]);
        strip_stage(&mut h);
        assert!(h.0.is_empty());
    }

    /// Attack: spoofed identity headers and the user's own bearer token reaching the API server.
    #[test]
    fn inject_replaces_everything_the_client_could_have_set() {
        let mut h = Lines::of(&[
            ("authorization", "Bearer user-token"),
            ("impersonate-user", "mallory"),
            ("Impersonate-Group", "system:masters"),
            ("x-kubegate-client-impersonation", "{}"),
        ]);
        inject_stage(&mut h, &alice());
        assert!(h.values("authorization").is_empty());
        assert_eq!(h.values("impersonate-user"), ["alice@example.com"]);
        assert_eq!(h.values("impersonate-group"), ["engineering", "system:authenticated"]);
        assert_eq!(h.values("impersonate-uid"), ["u-1"]);
        assert_eq!(h.values("impersonate-extra-kubegate.dev%2Frequest-id"), ["req-1"]);
        assert!(h.values("x-kubegate-client-impersonation").is_empty());
        assert_eq!(h.0.len(), 5);
    }

    #[test]
    fn inject_without_impersonation_only_strips() {
        let mut h = Lines::of(&[("impersonate-user", "mallory"), ("authorization", "Bearer t")]);
        inject_stage(&mut h, &Decision { version: 1, impersonate: None });
        assert!(h.0.is_empty());
    }

    #[test]
    fn reserved_names_are_prefix_matches_in_any_case() {
        for name in ["impersonate-user", "Impersonate-Extra-X", "IMPERSONATE-FUTURE", "X-Kubegate-Anything"] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["impersonate", "x-impersonate-user", "authorization", "x-kube"] {
            assert!(!is_reserved(name), "{name}");
        }
    }
}

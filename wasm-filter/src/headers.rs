//! The header rules, independent of proxy-wasm.

use kubegate_decision::{
    encode_extra_key, Decision, Impersonation, RequestedImpersonation, CLIENT_IMPERSONATION_HEADER, CLUSTER_HEADER,
    INTERNAL_HEADER_PREFIX,
};

const IMPERSONATE_PREFIX: &str = "impersonate-";
/// kube-apiserver's front-proxy (request-header) authentication reads identity from
/// these; they must never reach it from a client.
const FRONT_PROXY_PREFIX: &str = "x-remote-";

/// The request headers of one request, as the filter sees and changes them.
pub trait HeaderMap {
    /// Every header line, repeats included, names as the host gives them.
    fn lines(&self) -> Vec<(String, String)>;
    /// Removes every line with this name.
    fn remove_all(&mut self, name: &str);
    /// Adds one more line, keeping any existing ones.
    fn add(&mut self, name: &str, value: &str);
    /// Replaces every line with this name by one line with `value` (pseudo-headers such
    /// as `:path` included).
    fn set(&mut self, name: &str, value: &str);
}

/// kube-apiserver writes a client's `Audit-ID` verbatim into its audit log: a client
/// could reuse another event's id there. It assigns its own when there is none.
const AUDIT_ID: &str = "audit-id";

/// True for headers no client may send upstream: any `Impersonate-*` (User, Group, Uid,
/// every Extra-*, and whatever Kubernetes adds later), the front-proxy identity headers
/// (`X-Remote-User`, `-Group`, `-Extra-*`), `Audit-ID` and kubegate's own namespace.
pub fn is_reserved(name: &str) -> bool {
    name.eq_ignore_ascii_case(AUDIT_ID)
        || [IMPERSONATE_PREFIX, FRONT_PROXY_PREFIX, INTERNAL_HEADER_PREFIX]
            .iter()
            .any(|prefix| starts_with_ignore_case(name, prefix))
}

fn starts_with_ignore_case(name: &str, prefix: &str) -> bool {
    name.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Removes every reserved header and returns what the client asked to impersonate.
pub fn strip_reserved(headers: &mut impl HeaderMap) -> RequestedImpersonation {
    let lines = headers.lines();
    strip_reserved_lines(headers, &lines)
}

/// [`strip_reserved`] given the request's `lines`, read once: each read of the whole
/// map is a host call.
fn strip_reserved_lines(headers: &mut impl HeaderMap, lines: &[(String, String)]) -> RequestedImpersonation {
    let mut requested = RequestedImpersonation::default();
    let mut names: Vec<&str> = Vec::new();
    for (name, value) in lines {
        if !is_reserved(name) {
            continue;
        }
        requested.record(name, value);
        if !names.contains(&name.as_str()) {
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
/// (the cluster's credential injector sets the gateway's own after this filter), keep
/// only the `upgrade` token of `Connection`, route to the decided cluster, forward the
/// canonical target that was decided on, then add the impersonation headers.
///
/// With `asked` (what authz-server read as the client's impersonation request,
/// `ASKED_KEY`), the request must ask exactly that, or it is refused before anything
/// changes: a chain whose ext_authz did not see the client's `Impersonate-*` would
/// otherwise lose a narrowing silently (docs/mesh.md).
pub fn inject_stage(headers: &mut impl HeaderMap, decision: &Decision, asked: Option<&str>) -> Result<(), String> {
    let lines = headers.lines();
    if let Some(asked) = asked {
        confirm_asked(&lines, asked)?;
    }
    strip_reserved_lines(headers, &lines);
    headers.remove_all("authorization");
    // Envoy re-selects the route when a filter changes request headers; its routes
    // match this header, and the route removes it before the request goes upstream.
    headers.set(CLUSTER_HEADER, &decision.cluster);
    keep_only_upgrade_in_connection(headers, &lines);
    // kubectl's requests are already canonical: they cost no host call here.
    let mut path = lines.iter().filter(|(name, _)| name == ":path").map(|(_, value)| value);
    if !(path.next() == Some(&decision.target) && path.next().is_none()) {
        headers.set(":path", &decision.target);
    }
    if let Some(identity) = &decision.impersonate {
        add_impersonation(headers, identity);
    }
    Ok(())
}

/// The fields of `asked` this filter knows, others ignored: a newer authz-server may
/// record more, and must not make this filter refuse every request.
fn known_fields(asked: &str) -> Option<RequestedImpersonation> {
    let record: serde_json::Map<String, serde_json::Value> = serde_json::from_str(asked).ok()?;
    let list = |field: &str| -> Option<Vec<String>> {
        match record.get(field) {
            None => Some(Vec::new()),
            Some(value) => value.as_array()?.iter().map(|v| v.as_str().map(str::to_owned)).collect(),
        }
    };
    Some(RequestedImpersonation {
        users: list("users")?,
        groups: list("groups")?,
        uids: list("uids")?,
        extra_headers: list("extra_headers")?,
    })
}

/// The client's impersonation request as this request carries it (the strip stage's
/// report, or the client's own lines, read as authz-server reads a check request)
/// must be `asked`, canonically.
fn confirm_asked(lines: &[(String, String)], asked: &str) -> Result<(), String> {
    let mut direct = RequestedImpersonation::default();
    let mut report = None;
    for (name, value) in lines {
        if name.eq_ignore_ascii_case(CLIENT_IMPERSONATION_HEADER) {
            report = Some(value);
        } else {
            direct.record_joined(name, value);
        }
    }
    let seen = match (report, direct.is_empty()) {
        (Some(_), false) => {
            return Err("the request carries both a report of its impersonation headers and the headers".into())
        }
        (Some(report), true) => serde_json::from_str::<RequestedImpersonation>(report)
            .map_err(|_| "the request's impersonation report is unreadable".to_owned())?,
        (None, _) => direct,
    };
    let decided = known_fields(asked)
        .ok_or_else(|| "the authorization decision's impersonation record is unreadable".to_owned())?;
    if seen.canonical() == decided.canonical() {
        Ok(())
    } else {
        Err("the authorization server decided on other Impersonate-* headers than this request carries (does the proxy send every header to ext_authz?)".into())
    }
}

/// A hop honours `Connection: <name>` by dropping header `<name>`; naming the injected
/// `Impersonate-*` headers there made Rancher run requests as itself (CVE-2021-31999).
/// Envoy does not sanitise `Connection` on upgrade requests, so only `upgrade` is kept.
fn keep_only_upgrade_in_connection(headers: &mut impl HeaderMap, lines: &[(String, String)]) {
    let mut connection = lines.iter().filter(|(n, _)| n.eq_ignore_ascii_case("connection")).peekable();
    if connection.peek().is_none() {
        return;
    }
    let upgrade = connection.flat_map(|(_, v)| v.split(',')).any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    headers.remove_all("connection");
    if upgrade {
        headers.add("connection", "upgrade");
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
        fn set(&mut self, name: &str, value: &str) {
            self.remove_all(name);
            self.add(name, value);
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
        Decision::impersonating(
            "prod",
            "/api/v1/namespaces/default/pods",
            Impersonation {
                user: "alice@example.com".into(),
                groups: vec!["engineering".into(), "system:authenticated".into()],
                uid: Some("u-1".into()),
                extra: BTreeMap::from([(REQUEST_ID_EXTRA.to_string(), vec!["req-1".to_string()])]),
            },
        )
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
            serde_json::from_str(h.values(CLIENT_IMPERSONATION_HEADER).first().copied().unwrap_or_default())
                .unwrap_or_default();
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
        assert_eq!(inject_stage(&mut h, &alice(), None), Ok(()));
        assert!(h.values("authorization").is_empty());
        assert_eq!(h.values("impersonate-user"), ["alice@example.com"]);
        assert_eq!(h.values("impersonate-group"), ["engineering", "system:authenticated"]);
        assert_eq!(h.values("impersonate-uid"), ["u-1"]);
        assert_eq!(h.values("impersonate-extra-kubegate.dev%2Frequest-id"), ["req-1"]);
        assert!(h.values("x-kubegate-client-impersonation").is_empty());
        assert_eq!(h.values(":path"), ["/api/v1/namespaces/default/pods"]);
        assert_eq!(h.values(CLUSTER_HEADER), ["prod"]);
        assert_eq!(h.0.len(), 7);
    }

    /// Attack: the API server executing another request than the one decided
    /// (`kube%2Dsystem` read raw by the gateway, decoded by the API server): the filter
    /// forwards the canonical target policy saw, whatever the client sent.
    #[test]
    fn inject_forwards_exactly_the_decided_target() {
        let mut h =
            Lines::of(&[(":path", "/api/v1/namespaces/kube%2Dsystem/configmaps/victim"), (":method", "DELETE")]);
        let decision = Decision { target: "/api/v1/namespaces/kube-system/configmaps/victim".into(), ..alice() };
        assert_eq!(inject_stage(&mut h, &decision, None), Ok(()));
        assert_eq!(h.values(":path"), ["/api/v1/namespaces/kube-system/configmaps/victim"]);
        assert_eq!(h.values(":method"), ["DELETE"]);
    }

    /// Attack: `Connection: impersonate-user, impersonate-group` on an exec upgrade, so
    /// a hop between Envoy and the API server drops the injected identity and the
    /// request runs as the gateway (CVE-2021-31999 on the exec path).
    #[test]
    fn inject_keeps_only_the_upgrade_token_of_connection() {
        let mut h = Lines::of(&[("connection", "Upgrade, Impersonate-User"), ("Connection", "impersonate-group")]);
        assert_eq!(inject_stage(&mut h, &alice(), None), Ok(()));
        assert_eq!(h.values("connection"), ["upgrade"]);
        assert!(h.values("Connection").is_empty());
        let mut h = Lines::of(&[("connection", "impersonate-user, keep-alive")]);
        assert_eq!(inject_stage(&mut h, &alice(), None), Ok(()));
        assert!(h.values("connection").is_empty());
        assert_eq!(h.values("impersonate-user"), ["alice@example.com"]);
    }

    /// Attack: a client authenticating itself to kube-apiserver's front-proxy
    /// (request-header) authenticator with `X-Remote-User` / `-Group` / `-Extra-*`.
    #[test]
    fn strip_removes_front_proxy_identity_headers() {
        let mut h = Lines::of(&[
            ("X-Remote-User", "system:admin"),
            ("x-remote-group", "system:masters"),
            ("X-REMOTE-EXTRA-scopes", "all"),
            ("x-remotely", "kept"),
        ]);
        strip_stage(&mut h);
        assert_eq!(h.0, [("x-remotely".to_string(), "kept".to_string())]);
        let mut h = Lines::of(&[("x-remote-user", "system:admin")]);
        assert_eq!(inject_stage(&mut h, &alice(), None), Ok(()));
        assert!(h.values("x-remote-user").is_empty());
    }

    /// Attack: a client naming the cluster route itself (`X-Kubegate-Cluster: prod` on a
    /// request decided for dev), so Envoy runs dev's decision on prod.
    #[test]
    fn inject_routes_to_the_decided_cluster_whatever_the_client_sent() {
        let mut h = Lines::of(&[("X-Kubegate-Cluster", "dev"), ("x-kubegate-cluster", "staging")]);
        assert_eq!(inject_stage(&mut h, &alice(), None), Ok(()));
        assert_eq!(h.values(CLUSTER_HEADER), ["prod"]);
        assert!(h.values("X-Kubegate-Cluster").is_empty());
    }

    #[test]
    fn inject_without_impersonation_only_strips() {
        let mut h = Lines::of(&[("impersonate-user", "mallory"), ("authorization", "Bearer t")]);
        let leased = Decision { mode: kubegate_decision::IdentityMode::Leased, impersonate: None, ..alice() };
        assert_eq!(inject_stage(&mut h, &leased, None), Ok(()));
        let path = (":path".to_string(), "/api/v1/namespaces/default/pods".to_string());
        assert_eq!(h.0, [(CLUSTER_HEADER.to_string(), "prod".to_string()), path]);
    }

    #[test]
    fn reserved_names_are_prefix_matches_in_any_case() {
        for name in [
            "impersonate-user",
            "Impersonate-Extra-X",
            "IMPERSONATE-FUTURE",
            "X-Kubegate-Anything",
            "X-Remote-User",
            "Audit-ID",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["impersonate", "x-impersonate-user", "authorization", "x-kube", "audit-ids"] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    /// Attack (through a chain whose ext_authz gets an allow-list of headers): a
    /// `--as-group viewers` narrowing authz-server never saw, so it decided every level.
    #[test]
    fn inject_refuses_impersonation_headers_authz_server_did_not_decide_on() {
        let mut h = Lines::of(&[("impersonate-group", "viewers"), ("impersonate-user", "alice@example.com")]);
        let refused = inject_stage(&mut h, &alice(), Some("{}"));
        assert!(refused.is_err_and(|e| e.contains("every header")));
        assert_eq!(h.values("impersonate-group"), ["viewers"], "nothing changed before the refusal");
        let asked = r#"{"users":["alice@example.com"],"groups":["viewers"]}"#;
        let mut h = Lines::of(&[("impersonate-group", "viewers"), ("impersonate-user", "alice@example.com")]);
        assert_eq!(inject_stage(&mut h, &alice(), Some(asked)), Ok(()));
        let mut h = Lines::of(&[(CLIENT_IMPERSONATION_HEADER, asked)]);
        assert_eq!(inject_stage(&mut h, &alice(), Some(asked)), Ok(()), "the strip stage's report");
        let mut h = Lines::of(&[]);
        assert_eq!(inject_stage(&mut h, &alice(), Some("{}")), Ok(()), "nothing asked, nothing decided");
        let newer = r#"{"users":[],"groups":[],"uids":[],"extra_headers":[],"somethingNew":[1]}"#;
        let mut h = Lines::of(&[]);
        assert_eq!(inject_stage(&mut h, &alice(), Some(newer)), Ok(()), "a newer authz-server's record");
        let mut h = Lines::of(&[]);
        assert!(inject_stage(&mut h, &alice(), Some(r#"{"groups":"viewers"}"#)).is_err(), "a malformed record");
    }
}

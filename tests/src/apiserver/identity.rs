//! Authentication and impersonation, applied the way kube-apiserver applies them.
//!
//! Only the gateway's bearer token authenticates (the accepted tokens are re-read from a
//! file on every request, so a test can rotate them). Impersonation headers are then
//! honoured like kube-apiserver's `WithImpersonation` filter: one `Impersonate-Group`
//! line per group, never split on commas; groups, uid or extras without a user are a 400;
//! `system:authenticated` is added to an impersonated user's groups. Like kube-apiserver,
//! the caller may only impersonate what RBAC grants it the `impersonate` verb on (see
//! [`super::rbac::Impersonator`]): each user (or service account), group, uid and extra
//! value is checked, and the first one not granted is a 403 naming it.

use super::rbac::{self, Rule};
use super::request_info::RequestInfo;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// The user a request runs as, after impersonation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// A request that could not be authenticated or impersonated.
#[derive(Debug)]
pub enum AuthError {
    /// 401: no accepted bearer token.
    Unauthorized,
    /// 400: impersonation headers that kube-apiserver rejects.
    BadImpersonation(String),
    /// 403: the caller may not impersonate what it asked for (kube-apiserver's message).
    ImpersonationForbidden(String),
}

/// Who the request authenticated as, and as whom it runs.
pub struct Authenticated {
    /// The identity the bearer token belongs to (the gateway's service account).
    pub authenticated_as: String,
    /// A short, non-reversible fingerprint of the bearer token, for the audit file
    /// (`None` when a client certificate authenticated).
    pub token_fingerprint: Option<String>,
    pub user: UserInfo,
}

/// The identity of a verified TLS client certificate: `CN` is the user, each `O` a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

impl CertificateIdentity {
    /// Reads the subject of a DER certificate (already verified by the TLS layer).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let user = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
        let groups = subject.iter_organization().filter_map(|o| o.as_str().ok()).map(str::to_owned).collect();
        Some(Self { user, groups })
    }
}

/// Authenticates a request like kube-apiserver's union authenticator: a verified
/// client certificate first, then a bearer token from `accepted_tokens_file` (one per
/// line, which authenticates as `gateway_user`); then applies impersonation headers,
/// each checked against `rules` (verb `impersonate`) for the authenticated caller.
pub fn authenticate(
    headers: &HeaderMap,
    certificate: Option<&CertificateIdentity>,
    accepted_tokens_file: &Path,
    gateway_user: &str,
    rules: &[Rule],
) -> Result<Authenticated, AuthError> {
    let (authenticated, token_fingerprint) = match certificate {
        Some(cert) => {
            let mut groups = cert.groups.clone();
            groups.push("system:authenticated".into());
            (UserInfo { username: cert.user.clone(), uid: String::new(), groups, extra: BTreeMap::new() }, None)
        }
        None => {
            let token = bearer(headers).ok_or(AuthError::Unauthorized)?;
            let accepted = std::fs::read_to_string(accepted_tokens_file).unwrap_or_default();
            if !accepted.lines().map(str::trim).any(|t| !t.is_empty() && t == token) {
                return Err(AuthError::Unauthorized);
            }
            let groups = vec!["system:serviceaccounts".into(), "system:authenticated".into()];
            let user =
                UserInfo { username: gateway_user.to_owned(), uid: String::new(), groups, extra: BTreeMap::new() };
            (user, Some(fingerprint(token)))
        }
    };
    let authenticated_as = authenticated.username.clone();
    let user = match impersonated(headers)? {
        None => authenticated,
        Some((user, requests)) => {
            for request in &requests {
                if !rbac::allows(rules, &authenticated, request) {
                    return Err(AuthError::ImpersonationForbidden(impersonation_forbidden(&authenticated, request)));
                }
            }
            user
        }
    };
    Ok(Authenticated { authenticated_as, token_fingerprint, user })
}

/// One `impersonate` check, as kube-apiserver's impersonation filter asks the authorizer.
fn impersonate(resource: &str, subresource: Option<&str>, namespace: Option<&str>, name: &str) -> RequestInfo {
    RequestInfo::Resource {
        verb: "impersonate".into(),
        group: rbac::impersonation_group(resource).into(),
        namespace: namespace.map(str::to_owned),
        resource: resource.into(),
        subresource: subresource.map(str::to_owned),
        name: Some(name.to_owned()),
    }
}

/// kube-apiserver's 403 for a refused impersonation (`responsewriters.Forbidden`):
/// `users "x" is forbidden: User "gw" cannot impersonate resource "users" in API group
/// "" at the cluster scope`.
pub fn impersonation_forbidden(caller: &UserInfo, request: &RequestInfo) -> String {
    let RequestInfo::Resource { verb, group, namespace, resource, subresource, name } = request else {
        return rbac::forbidden_message(caller, request);
    };
    let qualified = if group.is_empty() { resource.clone() } else { format!("{resource}.{group}") };
    let full = subresource.as_ref().map(|s| format!("{resource}/{s}")).unwrap_or_else(|| resource.clone());
    let scope = match namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".into(),
    };
    format!(
        "{qualified} \"{}\" is forbidden: User \"{}\" cannot {verb} resource \"{full}\" in API group \"{group}\" {scope}",
        name.as_deref().unwrap_or_default(),
        caller.username
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The first 16 hex digits of the token's SHA-256.
pub fn fingerprint(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
}

/// `None` when no impersonation header is present; else the user the request runs as,
/// and the `impersonate` checks it needs, in kube-apiserver's order (user or service
/// account, groups, extras, uid).
fn impersonated(headers: &HeaderMap) -> Result<Option<(UserInfo, Vec<RequestInfo>)>, AuthError> {
    let users = values(headers, "impersonate-user");
    let groups = values(headers, "impersonate-group");
    let uids = values(headers, "impersonate-uid");
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-") {
            let key =
                percent_decode(key).ok_or_else(|| AuthError::BadImpersonation(format!("invalid extra key {key}")))?;
            extra.entry(key).or_default().push(value.to_str().unwrap_or_default().to_owned());
        }
    }
    if users.is_empty() {
        if !groups.is_empty() || !uids.is_empty() || !extra.is_empty() {
            return Err(AuthError::BadImpersonation(
                "requested impersonation of groups, uid or extras without impersonating a user".into(),
            ));
        }
        return Ok(None);
    }
    if users.len() > 1 || uids.len() > 1 {
        return Err(AuthError::BadImpersonation(
            "only one Impersonate-User and one Impersonate-Uid are allowed".into(),
        ));
    }
    let username = users[0].clone();
    let mut checks = Vec::new();
    let requested_groups = groups.iter().map(|g| impersonate("groups", None, None, g));
    let requested_groups: Vec<RequestInfo> = requested_groups.collect();
    let mut groups = groups;
    match service_account(&username) {
        Some((namespace, name)) => {
            checks.push(impersonate("serviceaccounts", None, Some(namespace), name));
            if groups.is_empty() {
                groups = vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{namespace}")];
            }
        }
        None => checks.push(impersonate("users", None, None, &username)),
    }
    // A service account's own groups are implied, not impersonated: only those asked for.
    checks.extend(requested_groups);
    for (key, values) in &extra {
        checks.extend(values.iter().map(|v| impersonate("userextras", Some(key), None, v)));
    }
    checks.extend(uids.iter().map(|uid| impersonate("uids", None, None, uid)));
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    let user = UserInfo { username, uid: uids.first().cloned().unwrap_or_default(), groups, extra };
    Ok(Some((user, checks)))
}

/// `system:serviceaccount:<namespace>:<name>` (kube's `serviceaccount.SplitUsername`).
fn service_account(username: &str) -> Option<(&str, &str)> {
    let (namespace, name) = username.strip_prefix("system:serviceaccount:")?.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn file_with(token: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(f.path(), format!("{token}\n")).unwrap_or_else(|e| panic!("{e}"));
        f
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn repeated_group_lines_are_separate_groups_and_commas_are_not_split() {
        let f = file_with("gw");
        let h = headers(&[
            ("authorization", "Bearer gw"),
            ("impersonate-user", "alice"),
            ("impersonate-group", "a, b"),
            ("impersonate-group", "c"),
            ("impersonate-extra-kubegate.dev%2frequest-id", "r1"),
        ]);
        let user = authenticate(&h, None, f.path(), "gw-sa", &gateway_rules())
            .map(|a| a.user)
            .unwrap_or_else(|_| panic!("refused"));
        assert_eq!(user.groups, ["a, b", "c", "system:authenticated"]);
        assert_eq!(user.extra.get("kubegate.dev/request-id"), Some(&vec!["r1".to_string()]));
    }

    /// What kubegate's gateway identity is granted: users, groups, uids, its one extra.
    fn gateway_rules() -> Vec<Rule> {
        let resources = ["users", "groups", "uids", "userextras/kubegate.dev/request-id"];
        let grant = rbac::Impersonator {
            users: vec!["gw-sa".into()],
            groups: vec![],
            resources: resources.map(String::from).to_vec(),
        };
        grant.rules()
    }

    fn refusal(pairs: &[(&'static str, &'static str)], rules: &[Rule]) -> String {
        let f = file_with("gw");
        match authenticate(&headers(pairs), None, f.path(), "gw-sa", rules) {
            Err(AuthError::ImpersonationForbidden(message)) => message,
            Err(other) => panic!("{pairs:?}: refused otherwise: {other:?}"),
            Ok(auth) => panic!("{pairs:?}: allowed as {:?}", auth.user),
        }
    }

    #[test]
    fn impersonating_without_a_grant_is_forbidden_like_kube_apiserver() {
        let user = [("authorization", "Bearer gw"), ("impersonate-user", "x")];
        assert_eq!(
            refusal(&user, &[]),
            "users \"x\" is forbidden: User \"gw-sa\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
        let grant = |resources: &[&str]| {
            let resources = resources.iter().map(|r| r.to_string()).collect();
            rbac::Impersonator { users: vec!["gw-sa".into()], groups: vec![], resources }.rules()
        };
        let uid = [("authorization", "Bearer gw"), ("impersonate-user", "x"), ("impersonate-uid", "u1")];
        assert_eq!(
            refusal(&uid, &grant(&["users", "groups"])),
            "uids.authentication.k8s.io \"u1\" is forbidden: User \"gw-sa\" cannot impersonate resource \"uids\" in API group \"authentication.k8s.io\" at the cluster scope"
        );
        let other_extra =
            [("authorization", "Bearer gw"), ("impersonate-user", "x"), ("impersonate-extra-scopes", "all")];
        assert_eq!(
            refusal(&other_extra, &gateway_rules()),
            "userextras.authentication.k8s.io \"all\" is forbidden: User \"gw-sa\" cannot impersonate resource \"userextras/scopes\" in API group \"authentication.k8s.io\" at the cluster scope"
        );
        let group =
            [("authorization", "Bearer gw"), ("impersonate-user", "x"), ("impersonate-group", "system:masters")];
        assert!(refusal(&group, &grant(&["users"])).starts_with("groups \"system:masters\" is forbidden"));
        // A service-account name is impersonated as `serviceaccounts` in its namespace.
        let sa = [("authorization", "Bearer gw"), ("impersonate-user", "system:serviceaccount:ns1:robot")];
        assert_eq!(
            refusal(&sa, &gateway_rules()),
            "serviceaccounts \"robot\" is forbidden: User \"gw-sa\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"ns1\""
        );
        let f = file_with("gw");
        let allowed = authenticate(&headers(&sa), None, f.path(), "gw-sa", &grant(&["serviceaccounts"]))
            .map(|a| a.user.groups)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(allowed, ["system:serviceaccounts", "system:serviceaccounts:ns1", "system:authenticated"]);
    }

    #[test]
    fn no_impersonation_needs_no_grant() {
        let f = file_with("gw");
        let auth = authenticate(&headers(&[("authorization", "Bearer gw")]), None, f.path(), "gw-sa", &[]);
        assert_eq!(auth.map(|a| a.user.username).ok().as_deref(), Some("gw-sa"));
    }

    #[test]
    fn groups_without_a_user_are_a_bad_request() {
        let f = file_with("gw");
        let h = headers(&[("authorization", "Bearer gw"), ("impersonate-group", "system:masters")]);
        assert!(matches!(
            authenticate(&h, None, f.path(), "gw-sa", &gateway_rules()),
            Err(AuthError::BadImpersonation(_))
        ));
    }

    #[test]
    fn only_accepted_tokens_authenticate() {
        let f = file_with("gw");
        let h = headers(&[("authorization", "Bearer user-id-token")]);
        assert!(matches!(authenticate(&h, None, f.path(), "gw-sa", &gateway_rules()), Err(AuthError::Unauthorized)));
        assert!(matches!(
            authenticate(&HeaderMap::new(), None, f.path(), "gw-sa", &gateway_rules()),
            Err(AuthError::Unauthorized)
        ));
    }
}

#[cfg(test)]
mod certificate_tests {
    use super::*;

    #[test]
    fn reads_user_and_groups_from_a_client_certificate() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let pki = crate::tls::LocalPki::create(dir.path())?;
        let leaf = pki.client_leaf("kind-admin", &["kubeadm:cluster-admins"])?;
        let pem = std::fs::read(&leaf.cert)?;
        let der = rustls_pemfile::certs(&mut pem.as_slice()).next().ok_or_else(|| anyhow::anyhow!("no cert"))??;
        let identity = CertificateIdentity::from_der(&der);
        assert_eq!(
            identity,
            Some(CertificateIdentity { user: "kind-admin".into(), groups: vec!["kubeadm:cluster-admins".into()] })
        );
        Ok(())
    }
}

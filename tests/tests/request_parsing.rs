//! The differential suite: kubegate's reading of a request target against real Go's
//! (`tests/go-oracle`, Go's own `net/http` and `net/url`, what kube-apiserver runs on).
//!
//! Each row is a request target an attacker can shape. For every row kubegate either
//! refuses it (on purpose: the row says so), or reads exactly the decoded path and
//! query Go reads, and its canonical target, the form the filter forwards, reads in Go
//! to that same path and query. A difference between the two readings is a bypass: the
//! gateway deciding about one request while the API server executes another.
//!
//! The RequestInfo built on top is compared with the API-server stand-in's own port of
//! kube-apiserver's RequestInfoFactory (written apart from kubegate's), row by row.

use kubegate_authz_server::request_info::{KubeRequest, RequestInfo};
use kubegate_tests::go_oracle::{GoOracle, GoReading, GoRefusal};

/// Whether kubegate should accept a row (and then agree with Go) or refuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Agree,
    Refuse,
}
use Expect::{Agree, Refuse};

#[rustfmt::skip]
const CASES: &[(&str, &str, Expect)] = &[
    // Each path segment encoded.
    ("DELETE", "/api/v1/namespaces/kube%2Dsystem/configmaps/victim", Agree),
    ("DELETE", "/api/v1/namespaces/kube-system/configm%61ps/victim", Agree),
    ("DELETE", "/api/v1/namespaces/kube-system/configmaps/vic%74im", Agree),
    ("GET", "/%61pi/v1/namespaces/kube-system/secrets", Agree),
    ("GET", "/ap%69s/apps/v1/deployments", Agree),
    ("GET", "/apis/%61pps/v1/namespaces/d/deployments", Agree),
    ("GET", "/api/v%31/pods", Agree),
    ("GET", "/api/v1/n%61mespaces/kube-system/secrets", Agree),
    ("GET", "/api/v1/namespaces/d/pods/web/%65xec?command=sh", Agree),
    ("GET", "/api/v1/namespaces/d/pods/web/%61ttach", Agree),
    ("GET", "/api/v1/namespaces/d/pods/web/portf%6Frward?ports=80", Agree),
    ("GET", "/api/v1/%77atch/namespaces/kube-system/secrets", Agree),
    ("GET", "/api/v1/pr%6Fxy/namespaces/d/pods/web/x", Agree),
    ("GET", "/api/v1/namespaces/d/pods/w%C3%A9b", Agree),
    ("GET", "/api/v1/namespaces/a+b/pods", Agree),
    ("GET", "/api/v1/namespaces/a%2Bb/pods", Agree),
    ("GET", "/api/v1/namespaces/a%20b/pods", Agree),
    ("GET", "/heal%74hz", Agree),
    ("GET", "/api/v1/namespaces/d/pods/web%3Bx", Agree),
    ("GET", "/api/v1/namespaces/d/pods/web;x", Agree),
    ("GET", "/api/v1/namespaces/d/services/s%3Ahttp/proxy/", Agree),
    // `%2F` splits: one segment for a raw reader, several for the API server.
    ("GET", "/api/v1/namespaces/guarded%2Fconfigmaps", Refuse),
    ("DELETE", "/api/v1/namespaces/kube-system%2Fconfigmaps%2Fvictim", Refuse),
    ("GET", "/api/v1/namespaces/d/pods/web%2Fexec", Refuse),
    ("GET", "/api%2Fv1%2Fnamespaces%2Fkube-system%2Fsecrets", Refuse),
    ("GET", "/apis%2fapps/v1/deployments", Refuse),
    ("GET", "/api/v1/namespaces/d/pods/web/log/x%2Fy", Refuse),
    // A proxy's tail may carry `%2F`: forwarded decoded.
    ("GET", "/api/v1/namespaces/d/services/web:80/proxy/a%2Fb", Agree),
    ("GET", "/api/v1/proxy/namespaces/d/pods/web/a%2Fb%2Fc", Agree),
    ("GET", "/api/v1/nodes/n1/proxy/stats%2Fsummary", Agree),
    ("GET", "/api/v1/namespaces/d/pods/web/proxy/a%3Fb%23c", Agree),
    // Dot segments, double and trailing slashes.
    ("GET", "/api/v1/namespaces/d/pods/..", Refuse),
    ("GET", "/api/v1/namespaces/d/pods/%2e%2e", Refuse),
    ("GET", "/api/v1/namespaces/d/pods/./web", Refuse),
    ("GET", "/api/v1/namespaces/d/services/web/proxy/a%2F..%2Fb", Refuse),
    // Found by the fuzzer: `%2F` before a `/` is an empty segment once decoded.
    ("GET", "/api/v1/namespaces/d/pods/web/proxy/p(%2F/y", Refuse),
    ("GET", "/api//v1/pods", Refuse),
    ("GET", "//api/v1/pods", Refuse),
    ("GET", "/api/v1/namespaces//pods", Refuse),
    ("GET", "/api/v1/pods/", Agree),
    ("GET", "/version/", Agree),
    // Invalid escapes, NULs, control characters, non-UTF-8.
    ("GET", "/api/v1/namespaces/%ZZ/pods", Refuse),
    ("GET", "/api/v1/namespaces/d/pods/web%", Refuse),
    ("GET", "/api/v1/namespaces/d/pods/web%00", Refuse),
    ("GET", "/api/v1/namespaces/d/pods/web%0A", Refuse),
    ("GET", "/api/v1/namespaces/d/pods/%FF", Refuse),
    // watch values.
    ("GET", "/api/v1/namespaces/kube-system/secrets?watch=yes", Agree),
    ("GET", "/api/v1/namespaces/kube-system/secrets?watch", Agree),
    ("GET", "/api/v1/namespaces/kube-system/secrets?watch=", Agree),
    ("GET", "/api/v1/namespaces/kube-system/secrets?watch=on", Agree),
    ("GET", "/api/v1/namespaces/kube-system/secrets?watch=0;&watch=1", Agree),
    ("GET", "/api/v1/namespaces/kube-system/secrets?watch=%ZZ&watch=1", Agree),
    ("GET", "/api/v1/namespaces/kube-system/secrets?w%61tch=1", Agree),
    ("GET", "/api/v1/namespaces/kube-system/secrets?watch=FALSE&watch=1", Agree),
    ("GET", "/api/v1/namespaces/kube-system/secrets?watch=0%3B", Agree),
    ("GET", "/api/v1/namespaces/kube-system/secrets?watch+=1", Agree),
    // `falſe`: false to Go's EqualFold, true to the ToLower fallback: refused.
    ("GET", "/api/v1/namespaces/kube-system/secrets?watch=fal%C5%BFe", Refuse),
    // exec and attach queries.
    ("POST", "/api/v1/namespaces/d/pods/web/exec?command=ls+x;&command=sh", Agree),
    ("POST", "/api/v1/namespaces/d/pods/web/exec?command=x%ZZ&command=sh", Agree),
    ("POST", "/api/v1/namespaces/d/pods/web/exec?container=safe&container=app&command=sh", Agree),
    ("POST", "/api/v1/namespaces/d/pods/web/exec?command=sh&command=-c&command=echo%20a%26b%3Dc", Agree),
    ("POST", "/api/v1/namespaces/d/pods/web/exec?command=a%2Bb+c", Agree),
    ("GET", "/api/v1/namespaces/d/pods/web/attach?container=a&stdin&tty=yes", Agree),
    ("POST", "/api/v1/namespaces/d/pods/web/exec?command=%FF", Refuse),
    // Field selectors.
    ("GET", "/api/v1/namespaces/d/configmaps?fieldSelector=metadata.name%3Dsecret-cm%2Cmetadata.namespace!%3Dx", Agree),
    ("GET", "/api/v1/namespaces/d/configmaps?fieldSelector=metadata.name%3Db%2Cmetadata.name%3Da", Agree),
    ("GET", "/api/v1/namespaces/d/configmaps?fieldSelector=x;&fieldSelector=metadata.name%3Dsecret-cm", Agree),
    ("GET", "/api/v1/namespaces/d/configmaps?fieldSelector=metadata.name=secret-cm", Agree),
    ("GET", "/api/v1/namespaces/d/configmaps?fieldSelector=+metadata.name%3Dsecret-cm", Agree),
    ("GET", "/api/v1/namespaces/d/configmaps?fieldSelector=metadata.name%3Dsecret-cm%2Cmetadata.namespace!%3D%FF", Refuse),
    // Legacy watch paths.
    ("GET", "/api/v1/watch/namespaces/kube-system/secrets/token", Agree),
    ("GET", "/apis/apps/v1/watch/deployments?watch=false", Agree),
    ("GET", "/api/v1/watch", Refuse),
    // Queries Go reads in ways a raw reader would not.
    ("GET", "/api/v1/pods?=x&&a=1&a=2&b", Agree),
    ("GET", "/api/v1/pods?labelSelector=app%3Dweb%2Ctier+in+(a,b)", Agree),
    ("GET", "/api/v1/pods?limit=500&continue=abc%3D%3D", Agree),
    ("GET", "/api/v1/pods?a=%e2%82%ac", Agree),
    ("GET", "/api/v1/pods?a=b?c", Agree),
];

/// Go's query as (key, values), keys in byte order, from kubegate's ordered pairs.
fn grouped(request: &KubeRequest) -> Vec<(String, Vec<String>)> {
    let mut keys: Vec<String> = Vec::new();
    for (key, _) in request.target.query.pairs() {
        if !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    keys.sort();
    keys.into_iter()
        .map(|key| {
            let values = request.target.query.all(&key).map(str::to_owned).collect();
            (key, values)
        })
        .collect()
}

fn go_reads(go: &GoReading) -> (String, Vec<(String, Vec<String>)>) {
    (go.path_text(), go.query_text())
}

fn ask(oracle: &GoOracle, method: &str, target: &str) -> Result<GoReading, GoRefusal> {
    oracle.ask_with(method, target.as_bytes())
}

/// Attack: every parser differential between the gateway and Go's `net/url` at once
/// (encoded segments, `%2F` splits, dot segments, watch values, exec queries, field
/// selectors, legacy watch paths): kubegate reads what Go reads, or refuses.
#[test]
fn kubegate_reads_request_targets_exactly_as_go_does() {
    assert!(CASES.len() >= 60, "{} cases", CASES.len());
    let oracle = GoOracle::start();
    let mut failures = Vec::new();
    for &(method, raw, expect) in CASES {
        let ours = KubeRequest::read(method, raw);
        match (expect, &ours) {
            (Refuse, Err(_)) => continue,
            (Refuse, Ok(read)) => {
                failures.push(format!("{method} {raw}: accepted as {:?}, expected a refusal", read.info));
                continue;
            }
            (Agree, Err(e)) => {
                failures.push(format!("{method} {raw}: refused ({e}), expected to agree with Go"));
                continue;
            }
            (Agree, Ok(_)) => {}
        }
        let Ok(read) = ours else { continue };
        let expected = (read.target.path.clone(), grouped(&read));
        match ask(&oracle, method, raw) {
            Ok(go) if go_reads(&go) == expected => {}
            Ok(go) => failures.push(format!("{method} {raw}: Go reads {:?}, kubegate {expected:?}", go_reads(&go))),
            Err(e) => failures.push(format!("{method} {raw}: Go refuses ({e}), kubegate accepts")),
        }
        let canonical = read.canonical_target();
        match ask(&oracle, method, &canonical) {
            Ok(go) if go_reads(&go) == expected => {}
            Ok(go) => {
                failures.push(format!("{method} {raw}: canonical {canonical} reads in Go as {:?}", go_reads(&go)))
            }
            Err(e) => failures.push(format!("{method} {raw}: Go refuses the canonical {canonical} ({e})")),
        }
    }
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
}

/// The oracle is not lenient: a row Go itself refuses (an invalid escape in the path)
/// is refused by Go here, so the agreement above is Go's, not a permissive echo.
#[test]
fn the_oracle_refuses_what_go_refuses() {
    let oracle = GoOracle::start();
    assert!(matches!(ask(&oracle, "GET", "/api/v1/namespaces/%ZZ/pods"), Err(GoRefusal::Rejected { status: 400, .. })));
    let go = ask(&oracle, "GET", "/api/v1/namespaces/kube%2Dsystem/pods?watch=0;&watch=1");
    assert_eq!(
        go.map(|g| go_reads(&g)),
        Ok(("/api/v1/namespaces/kube-system/pods".into(), vec![("watch".into(), vec!["1".into()])]))
    );
}

/// The attributes on top of the decoding: kubegate's RequestInfo against the stand-in's
/// independent port of kube-apiserver's, for every row both accept, read from the raw
/// target and from the canonical one. (kubegate makes `exec`/`attach`/`portforward`
/// `create` whatever the method, where kube-apiserver's RequestInfo says `get` for a
/// `GET`: the one deliberate, stricter, difference.)
#[test]
fn request_info_matches_the_stand_ins_port_of_kube_apiserver() {
    use kubegate_tests::apiserver::request_info as stand_in;
    let mut failures = Vec::new();
    for &(method, raw, expect) in CASES {
        let Ok(read) = KubeRequest::read(method, raw) else { continue };
        assert_eq!(expect, Agree, "{raw}");
        let ours = comparable(&read.info);
        for target in [raw.to_owned(), read.canonical_target()] {
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let theirs =
                stand_in::read(method, path.as_bytes(), query.as_bytes()).map(|r| stand_in_comparable(&r.info));
            match theirs {
                Ok(theirs) if theirs == ours => {}
                Ok(mut theirs) if ours.0 == "create" && theirs.0 == "get" && ours.3 == "pods" => {
                    theirs.0 = "create".into();
                    if theirs != ours {
                        failures.push(format!("{method} {target}: kubegate {ours:?}, stand-in {theirs:?}"));
                    }
                }
                other => failures.push(format!("{method} {target}: kubegate {ours:?}, stand-in {other:?}")),
            }
        }
    }
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
}

/// verb, group, namespace, resource, subresource, name; or verb and path.
type Attributes = (String, String, String, String, String, String);

fn comparable(info: &RequestInfo) -> Attributes {
    match info {
        RequestInfo::Resource(r) => (
            r.verb.clone(),
            r.api_group.clone(),
            r.namespace.clone(),
            r.resource.clone(),
            r.subresource.clone(),
            r.name.clone(),
        ),
        RequestInfo::NonResource { verb, path } => {
            (verb.clone(), String::new(), String::new(), path.clone(), "".into(), "".into())
        }
    }
}

fn stand_in_comparable(info: &kubegate_tests::apiserver::request_info::RequestInfo) -> Attributes {
    use kubegate_tests::apiserver::request_info::RequestInfo as Theirs;
    match info {
        Theirs::Resource { verb, group, namespace, resource, subresource, name } => (
            verb.clone(),
            group.clone(),
            namespace.clone().unwrap_or_default(),
            resource.clone(),
            subresource.clone().unwrap_or_default(),
            name.clone().unwrap_or_default(),
        ),
        Theirs::NonResource { verb, path } => {
            (verb.clone(), String::new(), String::new(), path.clone(), "".into(), "".into())
        }
    }
}

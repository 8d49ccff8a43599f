//! The Go oracle works: it reports what Go's net/http and net/url (what kube-apiserver
//! is built on) make of a request target, byte for byte. Known facts about Go, each one a
//! way a gateway that reads the raw bytes decides about a request other than the one the
//! API server runs.

use kubegate_tests::go_oracle::{go_oracle_binary, GoOracle, GoRefusal};

/// `kube%2Dsystem` is `kube-system` to the API server: a gateway matching the raw path
/// against a namespace rule would miss it.
#[test]
fn the_path_is_decoded_before_anything_reads_it() {
    let oracle = GoOracle::start();
    let reading = oracle.ask(b"/api/v1/namespaces/kube%2Dsystem/pods").expect("a reading");
    assert_eq!(reading.path, b"/api/v1/namespaces/kube-system/pods");
    assert_eq!(reading.raw_path, b"/api/v1/namespaces/kube%2Dsystem/pods");
    assert_eq!(reading.method, "GET");

    // %2F too: one segment on the wire, two for the API server.
    let reading = oracle.ask(b"/api/v1/namespaces/default%2Fpods").expect("a reading");
    assert_eq!(reading.path_text(), "/api/v1/namespaces/default/pods");
}

/// `+` is a space in a query, never in a path.
#[test]
fn plus_stays_plus_in_the_path() {
    let oracle = GoOracle::start();
    let reading = oracle.ask(b"/api/v1/namespaces/a+b/pods?label=a+b&plus=%2B").expect("a reading");
    assert_eq!(reading.path_text(), "/api/v1/namespaces/a+b/pods");
    assert_eq!(reading.raw_path, b"", "`+` is the default encoding of a path, so no RawPath");
    assert_eq!(reading.values("label"), Some(vec!["a b".to_string()]));
    assert_eq!(reading.values("plus"), Some(vec!["+".to_string()]));
}

/// `watch=0;` is dropped, so `?watch=0;&watch=1` is a watch: a gateway reading the first
/// `watch` sees a list.
#[test]
fn a_pair_with_a_semicolon_is_dropped() {
    let oracle = GoOracle::start();
    let reading = oracle.ask(b"/api/v1/pods?watch=0;&watch=1").expect("a reading");
    assert_eq!(reading.values("watch"), Some(vec!["1".to_string()]));
    assert_eq!(reading.query_error, "invalid semicolon separator in query");
    assert_eq!(reading.raw_query, b"watch=0;&watch=1");
}

/// `?a=%ZZ&a=b`: the pair with the bad escape is dropped, the next one counts.
#[test]
fn a_pair_with_an_invalid_escape_is_dropped() {
    let oracle = GoOracle::start();
    let reading = oracle.ask(b"/p?a=%ZZ&a=b").expect("a reading");
    assert_eq!(reading.values("a"), Some(vec!["b".to_string()]));
    assert_eq!(reading.query_error, "invalid URL escape \"%ZZ\"");

    let reading = oracle.ask(b"/p?=x&k&k=&k=v=w").expect("a reading");
    assert_eq!(
        reading.query_text(),
        vec![("".to_string(), vec!["x".to_string()]), ("k".into(), vec!["".into(), "".into(), "v=w".into()])]
    );
    assert_eq!(reading.query_error, "");
}

/// An invalid escape in the path is refused by Go's HTTP server itself, before any
/// handler (and so before kube-apiserver's authentication, authorisation and audit).
#[test]
fn an_invalid_escape_in_the_path_is_a_400() {
    let oracle = GoOracle::start();
    for target in [&b"/api/v1/namespaces/%ZZ/pods"[..], b"/a%", b"/a%4", b"/%%41"] {
        match oracle.ask(target) {
            Err(GoRefusal::Rejected { status: 400, body }) => assert_eq!(body, "400 Bad Request"),
            other => panic!("{}: {other:?}", String::from_utf8_lossy(target)),
        }
    }
    // ...while the same escape in the query only drops the pair.
    assert!(oracle.ask(b"/api/v1/pods?x=%ZZ").is_ok());
}

/// Bytes that are not UTF-8 survive the trip (Go strings are bytes).
#[test]
fn bytes_that_are_not_utf8_survive() {
    let oracle = GoOracle::start();
    let reading = oracle.ask(b"/a\xff%FE%00?k%FF=\xfe").expect("a reading");
    assert_eq!(reading.path, b"/a\xff\xfe\x00");
    assert_eq!(reading.query, vec![(b"k\xff".to_vec(), vec![b"\xfe".to_vec()])]);
    assert_eq!(reading.request_uri, b"/a\xff%FE%00?k%FF=\xfe");
}

/// The oracle records every reading, and other methods work.
#[test]
fn readings_are_recorded_and_any_method_is_read() {
    let oracle = GoOracle::start();
    oracle.ask_with("POST", b"/api/v1/namespaces/d/pods/web/exec?command=ls&stdin=").expect("a reading");
    oracle.ask_with("DELETE", b"/x%2Fy").expect("a reading");
    let recorded = oracle.recorded();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].values("stdin"), Some(vec![String::new()]));
    assert_eq!(recorded[1].path, b"/x/y");
    assert!(go_oracle_binary().expect("built").exists());
}

// ---------------------------------------------------------------------------------------
// The API-server stand-in reads requests as Go does: sent to it directly (as the gateway
// would, with the gateway's token and impersonation), its audit shows the path and query
// Go decodes, and the RequestInfo kube-apiserver derives from them.

use kubegate_tests::apiserver::audit::AuditRecord;
use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::{raw_http1, raw_http1_head, GatewayStack, KubeVersion, StackOptions};

/// Sends `GET <target>` straight to the stand-in as alice in group `engineering`, and
/// returns the status and the audit record it wrote.
async fn ask_stand_in(stack: &GatewayStack, target: &str, extra_headers: &str) -> anyhow::Result<(u16, AuditRecord)> {
    let url = stack.stand_in_url.as_deref().ok_or_else(|| anyhow::anyhow!("no stand-in"))?;
    let before = stack.audit().len();
    let head = format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nImpersonate-User: alice@example.com\r\n\
         Impersonate-Group: engineering\r\nConnection: close{extra_headers}",
        stack.gateway_token()?.trim()
    );
    // The head is enough (a watch streams on).
    let status = raw_http1_head(url, &stack.ca_cert, &head).await?.status;
    let mut record = None;
    for _ in 0..50 {
        if let Some(r) = stack.audit().into_iter().nth(before) {
            record = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok((status, record.ok_or_else(|| anyhow::anyhow!("{target}: not audited"))?))
}

/// Attack: a gateway and the API server reading one request two ways. The stand-in acts
/// on what Go decodes (checked against Go itself), so an end-to-end test sees in its
/// audit what a real API server would have done.
#[tokio::test(flavor = "multi_thread")]
async fn the_stand_in_acts_on_what_go_decodes() -> anyhow::Result<()> {
    let oracle = GoOracle::start();
    let stack = GatewayStack::start(StackOptions::default()).await?;
    for target in [
        "/api/v1/namespaces/kube%2Dsystem/pods",
        "/api/v1/namespaces/default%2Fpods",
        "/%61pi/v1/namespaces/default/pods?watch=0;&watch=1&timeoutSeconds=1",
        "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-1&a=%ZZ&a=b&c=+x+",
        "/api/v1/namespaces//pods?watch=false",
        "/api/v1/namespaces/a+b/pods",
        "/api/v1/namespaces/default/pods/web-1/log?follow=0",
        "/version?x=%FF",
    ] {
        let go = oracle.ask(target.as_bytes()).map_err(|e| anyhow::anyhow!("{target}: {e}"))?;
        let (status, record) = ask_stand_in(&stack, target, "").await?;
        assert_eq!(status, 200, "{target}: {record:?}");
        assert_eq!(record.path, target.split('?').next().unwrap_or_default(), "the raw path, as received");
        assert_eq!(record.decoded_path.as_deref(), Some(go.path_text().as_str()), "{target}");
        assert_eq!(record.parsed_query, go.query_text(), "{target}");
        assert_eq!(record.query_error.unwrap_or_default(), go.query_error, "{target}");
    }

    let (_, record) = ask_stand_in(&stack, "/api/v1/namespaces/kube%2Dsystem/pods", "").await?;
    let info = record.request_info.expect("a RequestInfo");
    assert_eq!((info.verb.as_str(), info.namespace.as_str(), info.resource.as_str()), ("list", "kube-system", "pods"));
    let (_, record) =
        ask_stand_in(&stack, "/api/v1/namespaces/default/pods?watch=0;&watch=1&timeoutSeconds=1", "").await?;
    assert_eq!(record.request_info.expect("a RequestInfo").verb, "watch", "`watch=0;` is dropped");
    let (_, record) =
        ask_stand_in(&stack, "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-1", "").await?;
    let info = record.request_info.expect("a RequestInfo");
    assert_eq!((info.verb.as_str(), info.name.as_str()), ("list", "web-1"));

    // Go's HTTP server refuses a bad escape in the path before any handler.
    let (status, record) = ask_stand_in(&stack, "/api/v1/namespaces/%ZZ/pods", "").await?;
    assert!(matches!(oracle.ask(b"/api/v1/namespaces/%ZZ/pods"), Err(GoRefusal::Rejected { status: 400, .. })));
    assert_eq!(status, 400);
    assert!(record.refusal.is_some() && record.decoded_path.is_none() && record.user.is_none(), "{record:?}");
    Ok(())
}

const WEBSOCKET_UPGRADE: &str = "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io";

fn exec_getters() -> Rule {
    serde_yaml::from_str("groups: [engineering]\nverbs: [get]\nresources: [pods/exec]\n")
        .unwrap_or_else(|e| panic!("rule: {e}"))
}

/// Before 1.35 a websocket (GET) exec is authorised as `get` on pods/exec, so `get`
/// alone opens a shell; from 1.35 it must also be allowed `create`. The stand-in plays
/// the version a test chooses, and reports it at /version.
#[tokio::test(flavor = "multi_thread")]
async fn the_stand_in_authorises_websocket_exec_as_its_version_does() -> anyhow::Result<()> {
    let exec = "/api/v1/namespaces/default/pods/web-1/exec?command=whoami&stdout=true";
    for (version, status, checked) in
        [(KubeVersion::new(1, 33), 101, &["get"][..]), (KubeVersion::new(1, 35), 403, &["get", "create"][..])]
    {
        let options = StackOptions {
            kubernetes_version: version,
            rbac: vec![kubegate_tests::harness::engineering_reads_pods(), exec_getters()],
            ..StackOptions::default()
        };
        let stack = GatewayStack::start(options).await?;
        let url = stack.stand_in_url.as_deref().unwrap_or_default();
        let reported = raw_http1(
            url,
            &stack.ca_cert,
            &format!(
                "GET /version HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nConnection: close",
                stack.gateway_token()?.trim()
            ),
        )
        .await?;
        assert_eq!(reported.json()["minor"], version.minor.to_string(), "{}", reported.body);

        let (got, record) = ask_stand_in(&stack, exec, WEBSOCKET_UPGRADE).await?;
        assert_eq!(got, status, "{version}: {record:?}");
        let verbs: Vec<&str> = record.checks.iter().map(|c| c.verb.as_str()).collect();
        assert_eq!(verbs, checked, "{version}");
        assert!(record.checks.iter().all(|c| c.resource == "pods" && c.subresource == "exec" && c.name == "web-1"));
    }
    Ok(())
}

//! Requests hidden inside other requests never reach the API server as requests of
//! their own. Envoy 1.40 includes the fix for request smuggling through early data
//! after an upgrade (CVE-2025-64763); these tests keep kubegate's Envoy configuration
//! honest about it.

use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::{
    engineering_reads_pods, raw_http1_head, GatewayStack, StackOptions, ALICE, BOB, GATEWAY_CLIENT_ID,
};
use std::time::Duration;

fn options() -> StackOptions {
    let streams: Rule = serde_yaml::from_str("groups: [engineering]\nverbs: [create]\nresources: [pods/exec]\n")
        .unwrap_or_else(|e| panic!("rule: {e}"));
    StackOptions { rbac: vec![engineering_reads_pods(), streams], ..Default::default() }
}

/// The SPDY exec upgrade request, then, written before any answer arrived, a second
/// request that names an identity of its own: if anything between the client and the
/// API server parsed the early bytes as a request, it would run unauthorised, with
/// client-chosen impersonation headers the filter never saw.
fn upgrade_with_pipelined_request(token: &str) -> String {
    format!(
        "POST /api/v1/namespaces/default/pods/web-1/exec?command=whoami&stdout=true HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n\
         DELETE /api/v1/namespaces/kube-system/configmaps/smuggled HTTP/1.1\r\nHost: localhost\r\n\
         Impersonate-User: system:admin\r\nImpersonate-Group: system:masters"
    )
}

/// Attack: request smuggling through data pipelined after a SPDY upgrade request, both
/// when the API server accepts the upgrade (alice may exec: the bytes belong to the
/// tunnel) and when it refuses it (bob may not: the connection must not go on to read
/// them as a request). The stand-in's audit shows one request per attempt, the exec.
#[tokio::test(flavor = "multi_thread")]
async fn data_pipelined_after_a_spdy_upgrade_is_not_a_second_request() -> anyhow::Result<()> {
    let stack = GatewayStack::start(options()).await?;
    for (user, status) in [(&ALICE, 101), (&BOB, 403)] {
        stack.login(user).await?;
        let token = stack.id_token(user, GATEWAY_CLIENT_ID).await?;
        let response =
            raw_http1_head(&stack.gateway_url, &stack.ca_cert, &upgrade_with_pipelined_request(&token)).await?;
        assert_eq!(response.status, status, "{}: {response:?}", user.email);
    }
    // Give a smuggled request time to arrive, were there one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let audit = stack.audit();
    let paths: Vec<(&str, &str)> = audit.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
    let exec = ("POST", "/api/v1/namespaces/default/pods/web-1/exec");
    assert_eq!(paths, [exec, exec], "only the two upgrade requests reached the API server");
    let users: Vec<Option<&str>> = audit.iter().map(|r| r.user.as_ref().map(|u| u.username.as_str())).collect();
    assert_eq!(users, [Some(ALICE.email), Some(BOB.email)]);
    Ok(())
}

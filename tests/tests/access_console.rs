//! The web console end to end (docs/access-requests.md, "The web console"): real Envoy,
//! authz-server, the real OIDC provider and its own login page, and a real headless
//! Chromium driven over WebDriver. alice requests with the CLI; bob logs in to the
//! console in the browser, approves with a click (alice's kubectl then works) and denies
//! with a reason; alice sees and revokes her grant in hers.
//!
//! The browser reaches the gateway as `https://console.kubegate.test:PORT` (mapped to
//! loopback; the provider refuses a loopback https redirect URI for its native client)
//! and accepts exactly the gateway's and the provider's certificates, by public key.
//! reqwest reads what the browser hides (headers, `Set-Cookie`), sending the same
//! `Host` to 127.0.0.1.
//!
//! Attacks, one test each: a cross-site form auto-submitted to the approve URL; an
//! edited session cookie; a callback with another login's state or code; `next` and
//! `Host` pointing elsewhere (open redirect); a token in a page; and the headers and
//! cookie flags that keep the pages from being framed or their cookies from leaking.

use kubegate_tests::apiserver::rbac::Rule;
use kubegate_tests::harness::access::{self, AccessRequestOptions, Person, CONSOLE_HOST};
use kubegate_tests::harness::browser::{Browser, BrowserOptions};
use kubegate_tests::harness::discovery::{DiscoveryOptions, LEADS_DISCOVER};
use kubegate_tests::harness::stand_in_objects::ROLE_BINDINGS;
use kubegate_tests::harness::{free_port, DemoUser, GatewayStack, StackOptions, ALICE, BOB, CAROL, GATEWAY_CLIENT_ID};
use serde_json::Value;
use std::time::Duration;

/// alice (engineering) requests `oncall`; bob approves.
const WORKFLOWS: &str = "\
- name: oncall
  levels: [oncall]
  requesters: {groups: [engineering]}
  approvers: {users: [bob@example.com]}
  maxDuration: 1h
  reasonRequired: true
";

const WAIT: Duration = Duration::from_secs(30);

/// The granted level reads configmaps; alice's standing `engineering` only reads pods.
fn oncall_reads_configmaps() -> Rule {
    serde_yaml::from_str("groups: [oncall]\nverbs: [get, list]\nresources: [configmaps]\n")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A stack whose provider lets the console's redirect URI in (the gateway's port is
/// chosen first, for it), with resource discovery on for carol (IdP group `leads`).
struct Console {
    stack: GatewayStack,
    /// `https://console.kubegate.test:PORT`.
    origin: String,
}

impl Console {
    async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut options = StackOptions {
            gateway_port: port,
            provider_args: access::console_provider_args(port),
            access_requests: Some(AccessRequestOptions { workflows: WORKFLOWS.into() }),
            discovery: Some(DiscoveryOptions::default()),
            policies: vec![("discover.cedar".into(), LEADS_DISCOVER.into())],
            ..StackOptions::default()
        };
        options.rbac.push(oncall_reads_configmaps());
        Ok(Self { stack: GatewayStack::start(options).await?, origin: access::console_origin(port) })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// A fresh browser that knows the console's host and trusts the stack's servers.
    async fn browser(&self) -> anyhow::Result<Browser> {
        let pki = self.stack.dir.join("pki");
        let options = BrowserOptions {
            loopback_hosts: vec![CONSOLE_HOST.into()],
            trusted_leaves: vec![pki.join("gateway.crt"), pki.join("oidc-provider.crt")],
        };
        Browser::start(&self.stack.dir, &options).await
    }

    /// Logs `user` in to the console in `browser`, through the provider's login page.
    async fn log_in(&self, browser: &Browser, user: &DemoUser) -> anyhow::Result<()> {
        browser.goto(&self.url("/kubegate/console/")).await?;
        browser.wait_for("#login", WAIT).await?;
        browser.click("#login").await?;
        browser.wait_for("input[name=login]", WAIT).await?;
        browser.type_into("input[name=login]", user.email).await?;
        browser.type_into("input[name=password]", user.password).await?;
        browser.click("button[type=submit]").await?;
        browser.wait_for("#user", WAIT).await?;
        let shown = browser.source().await?;
        anyhow::ensure!(shown.contains(user.email), "logged in as someone else: {shown}");
        Ok(())
    }

    /// The console over plain HTTP/1.1 to 127.0.0.1 with the console's `Host`, no
    /// redirects followed: what the browser does not show.
    fn direct(&self) -> anyhow::Result<Direct> {
        let client = kubegate_tests::tls::https_client(&self.stack.ca_cert)?
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()?;
        let host = self.origin.trim_start_matches("https://").to_owned();
        Ok(Direct { client, base: self.stack.gateway_url.clone(), host, origin: self.origin.clone() })
    }
}

/// Requests to the console as [`Console::direct`] sends them.
struct Direct {
    client: reqwest::Client,
    base: String,
    host: String,
    origin: String,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    }

    /// The `name=value` of the `Set-Cookie` for `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .and_then(|c| c.split(';').next().map(str::to_owned))
    }
}

impl Direct {
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let response = request.header("host", &self.host).send().await?;
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        Ok(Answer { status, headers, body: response.text().await? })
    }

    async fn get(&self, path_and_query: &str, cookie: Option<&str>) -> anyhow::Result<Answer> {
        let mut request = self.client.get(format!("{}{path_and_query}", self.base));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        self.send(request).await
    }

    /// A POST as the console's own form sends it (same origin), or with `headers`.
    async fn post(
        &self,
        path: &str,
        cookie: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let mut request = self.client.post(format!("{}{path}", self.base)).header("cookie", cookie).form(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// Logs `user` in without a browser: `/login`, the provider's pages, `/callback`.
    /// The `Set-Cookie` answers of `/login` and `/callback`, and the callback's page.
    async fn log_in(&self, stack: &GatewayStack, user: &DemoUser, login_query: &str) -> anyhow::Result<LoggedIn> {
        let login = self.get(&format!("/kubegate/console/login{login_query}"), None).await?;
        anyhow::ensure!(login.status == 303, "login: {} {}", login.status, login.body);
        let login_cookie = login.cookie("kubegate_console_login").ok_or_else(|| anyhow::anyhow!("no login cookie"))?;
        let callback = provider_login(stack, &login.header("location"), user).await?;
        let path = callback.strip_prefix(&self.origin).ok_or_else(|| anyhow::anyhow!("callback {callback}"))?;
        let done = self.get(path, Some(&login_cookie)).await?;
        Ok(LoggedIn { login, callback: callback.clone(), done })
    }
}

struct LoggedIn {
    /// `/login`'s answer (the redirect to the provider, the login cookie).
    login: Answer,
    /// The callback URL the provider sent the browser to.
    callback: String,
    /// The callback's answer (the session cookie, the page).
    done: Answer,
}

impl LoggedIn {
    fn session_cookie(&self) -> anyhow::Result<String> {
        self.done.cookie("kubegate_console").ok_or_else(|| anyhow::anyhow!("no session cookie: {}", self.done.body))
    }
}

/// Drives the provider from `authorize` (its login page, consent) to the redirect back
/// to the console; the callback URL, not visited.
async fn provider_login(stack: &GatewayStack, authorize: &str, user: &DemoUser) -> anyhow::Result<String> {
    let client = kubegate_tests::tls::https_client(&stack.ca_cert)?
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()?;
    let mut response = client.get(authorize).send().await?;
    for _ in 0..10 {
        let at = response.url().clone();
        if response.status().is_redirection() {
            let location = response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
            let next = at.join(location)?;
            if !next.as_str().starts_with(&stack.issuer) {
                return Ok(next.into());
            }
            response = client.get(next).send().await?;
            continue;
        }
        let body = response.text().await?;
        anyhow::ensure!(body.contains("Sign in to the kubegate sandbox"), "expected the login page at {at}: {body}");
        let form = format!("{}/login", at.as_str().trim_end_matches('/'));
        response = client.post(form).form(&[("login", user.email), ("password", user.password)]).send().await?;
    }
    anyhow::bail!("the provider never sent the browser back")
}

/// What the console tests ask of a person besides the harness's `Person`.
trait ConsolePerson {
    async fn request(&self, reason: &str) -> anyhow::Result<String>;
    async fn view(&self, name: &str) -> anyhow::Result<Value>;
    async fn reads_configmaps(&self) -> anyhow::Result<bool>;
}

impl ConsolePerson for Person<'_> {
    /// Requests `oncall` with `reason`; the request's name.
    async fn request(&self, reason: &str) -> anyhow::Result<String> {
        let view = self.json(&["request", "--level", "oncall", "--for", "30m", "--reason", reason]).await?;
        anyhow::ensure!(view["phase"] == "Pending", "{view}");
        Ok(view["name"].as_str().unwrap_or_default().to_owned())
    }

    /// The phase of own request `name`, and the whole view.
    async fn view(&self, name: &str) -> anyhow::Result<Value> {
        let list = self.json(&["list"]).await?;
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{name} is not in {list}"))
    }

    async fn reads_configmaps(&self) -> anyhow::Result<bool> {
        Ok(self.stack.kubectl(&self.kubeconfig, &["get", "configmaps", "-n", "default"]).await?.success)
    }
}

/// The value of the `csrf` hidden field in a console page.
fn csrf_token(page: &str) -> anyhow::Result<String> {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no CSRF field in the page: {page}"))
}

/// A console cookie is `<base64url JSON>.<signature>` of the identity the validator
/// produced (id, user, groups, uid, exp): no JWT, and no token inside.
fn assert_not_a_token(cookie: &str) {
    use base64::Engine;
    let (payload, signature) = cookie.split_once('.').unwrap_or_default();
    assert!(!signature.contains('.'), "not a JWT's three parts: {cookie}");
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
    let claims: Value = serde_json::from_slice(&decoded).unwrap_or_default();
    let mut keys: Vec<&str> = claims.as_object().into_iter().flatten().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["exp", "groups", "id", "uid", "user"], "{claims}");
    assert!(!claims.to_string().contains("eyJ"), "no token inside: {claims}");
}

/// The browser's `kubegate_console` cookie, as `name=value`, and the WebDriver cookie.
async fn session_cookie(browser: &Browser) -> anyhow::Result<(String, Value)> {
    let cookies = browser.cookies().await?;
    let cookie = cookies
        .into_iter()
        .find(|c| c["name"] == "kubegate_console")
        .ok_or_else(|| anyhow::anyhow!("the browser has no session cookie"))?;
    Ok((format!("kubegate_console={}", cookie["value"].as_str().unwrap_or_default()), cookie))
}

/// The whole path in a browser: bob logs in through the provider's page, approves
/// alice's request with a click (her kubectl then works), denies another with a
/// reason; alice sees her grant in her own browser and revokes it. A refusal is a page
/// with the API's own message; what alice wrote is shown as text.
#[tokio::test(flavor = "multi_thread")]
async fn bob_approves_and_denies_in_a_real_browser() -> anyhow::Result<()> {
    let console = Console::start().await?;
    let stack = &console.stack;
    let alice = Person::login(stack, &ALICE).await?;
    assert!(!alice.reads_configmaps().await?, "the control: no grant yet");
    let first = alice.request("INC-42: <b>web-1</b> stuck").await?;

    let bob_browser = console.browser().await?;
    console.log_in(&bob_browser, &BOB).await?;
    assert!(bob_browser.current_url().await?.starts_with(&console.url("/kubegate/console/")));
    bob_browser.wait_for(&format!("#pending-{first}"), WAIT).await?;
    let page = bob_browser.source().await?;
    assert!(page.contains("INC-42: &lt;b&gt;web-1&lt;/b&gt; stuck"), "the reason, as text: {page}");
    assert!(bob_browser.find(&format!("#pending-{first} b")).await.is_err(), "no markup from the reason");
    bob_browser.click(&format!("#approve-{first} button")).await?;
    bob_browser.wait_for("#nothing-to-approve", WAIT).await?;
    assert_eq!(alice.view(&first).await?["phase"], "Approved");
    assert_eq!(alice.view(&first).await?["approvals"][0]["by"], BOB.email);
    assert!(alice.reads_configmaps().await?, "the approved level works at once");

    let second = alice.request("INC-43").await?;
    bob_browser.goto(&console.url("/kubegate/console/")).await?;
    bob_browser.wait_for(&format!("#pending-{second}"), WAIT).await?;
    bob_browser.type_into(&format!("#deny-{second} input[name=reason]"), "use the runbook").await?;
    bob_browser.click(&format!("#deny-{second} button")).await?;
    bob_browser.wait_for("#nothing-to-approve", WAIT).await?;
    let denied = alice.view(&second).await?;
    let shown = ["phase", "decidedBy", "decisionReason"].map(|f| denied[f].as_str().map(str::to_owned));
    assert_eq!(shown, [Some("Denied".into()), Some(BOB.email.into()), Some("use the runbook".into())], "{denied}");

    // A refusal is a page with the API's message: a denial without a reason (the form
    // requires one, so it is sent the way the form would be, with bob's session).
    let third = alice.request("INC-44").await?;
    bob_browser.goto(&console.url("/kubegate/console/")).await?;
    bob_browser.wait_for(&format!("#pending-{third}"), WAIT).await?;
    let token = csrf_token(&bob_browser.source().await?)?;
    let (cookie, _) = session_cookie(&bob_browser).await?;
    let direct = console.direct()?;
    let same_origin = [("sec-fetch-site", "same-origin"), ("origin", "null")];
    let path = format!("/kubegate/console/requests/{third}/deny");
    let refused = direct.post(&path, &cookie, &[("csrf", &token), ("reason", "")], &same_origin).await?;
    let bob = Person::login(stack, &BOB).await?;
    let api = kubegate_tests::tls::https_client(&stack.ca_cert)?.build()?;
    let api_answer: Value = api
        .post(format!("{}/kubegate/v1/access/requests/{third}/deny", stack.gateway_url))
        .bearer_auth(stack.id_token(bob.user, GATEWAY_CLIENT_ID).await?)
        .body("{\"reason\":\"\"}")
        .send()
        .await?
        .json()
        .await?;
    let message = api_answer["message"].as_str().unwrap_or_default();
    assert_eq!(api_answer["code"], 422, "{api_answer}");
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(!message.is_empty() && refused.body.contains(message), "the API's message {message:?}: {}", refused.body);
    assert!(refused.header("content-type").starts_with("text/html"));

    // alice's own console: her grant, which she revokes.
    let alice_browser = console.browser().await?;
    console.log_in(&alice_browser, &ALICE).await?;
    alice_browser.wait_for(&format!("#grant-{first}"), WAIT).await?;
    alice_browser.click(&format!("#revoke-{first} button")).await?;
    alice_browser.wait_for("#no-grants", WAIT).await?;
    assert_eq!(alice.view(&first).await?["phase"], "Revoked");
    assert!(!alice.reads_configmaps().await?, "refused once revoked");
    let mine = alice_browser.source().await?;
    assert!(mine.contains(&format!("id=\"request-{second}\"")) && mine.contains("use the runbook"), "{mine}");
    alice_browser.close().await?;
    bob_browser.close().await?;
    Ok(())
}

/// Attack: a page on another origin (another port here: another site to the
/// browser) auto-submits a form to the console's approve URL in bob's browser, where
/// bob is logged in; it even carries a valid CSRF token of bob's. The browser does not
/// send the SameSite=Strict session cookie, and were it sent (reqwest plays such a
/// browser), `Sec-Fetch-Site` and `Origin` refuse it: nothing is approved.
#[tokio::test(flavor = "multi_thread")]
async fn attack_cross_site_form_post_approves_nothing() -> anyhow::Result<()> {
    let console = Console::start().await?;
    let stack = &console.stack;
    let alice = Person::login(stack, &ALICE).await?;
    let name = alice.request("INC-50").await?;
    let browser = console.browser().await?;
    console.log_in(&browser, &BOB).await?;
    browser.wait_for(&format!("#pending-{name}"), WAIT).await?;
    let token = csrf_token(&browser.source().await?)?;

    let target = console.url(&format!("/kubegate/console/requests/{name}/approve"));
    let attack = format!(
        "<!doctype html><html><body><form id=\"f\" method=\"post\" action=\"{target}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{token}\"><input type=\"hidden\" name=\"reason\" value=\"pwned\">\
</form><script>document.getElementById('f').submit()</script></body></html>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let attack = attack.clone();
            async move { ([("content-type", "text/html")], attack) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let attacker = format!("http://127.0.0.1:{}/", listener.local_addr()?.port());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    browser.goto(&attacker).await?;
    kubegate_tests::harness::wait_until("the forged form to be answered", WAIT, || async {
        browser.current_url().await.is_ok_and(|u| u.starts_with(&console.origin))
    })
    .await?;
    let answer = browser.source().await?;
    assert!(answer.contains("Log in first"), "the cross-site POST arrived without the session: {answer}");
    assert_eq!(alice.view(&name).await?["phase"], "Pending", "nothing approved");

    // A browser that did send the cookie: the request's own headers refuse it.
    let (cookie, _) = session_cookie(&browser).await?;
    let direct = console.direct()?;
    let path = format!("/kubegate/console/requests/{name}/approve");
    let form = [("csrf", token.as_str()), ("reason", "pwned")];
    for headers in [
        vec![("sec-fetch-site", "cross-site"), ("origin", attacker.trim_end_matches('/'))],
        vec![("origin", attacker.trim_end_matches('/'))],
    ] {
        let refused = direct.post(&path, &cookie, &form, &headers).await?;
        assert_eq!(refused.status, 403, "{headers:?}: {}", refused.body);
        assert!(refused.body.contains("another"), "{}", refused.body);
    }
    assert_eq!(alice.view(&name).await?["phase"], "Pending", "still nothing approved");
    // bob's session is intact: the real click still works.
    browser.goto(&console.url("/kubegate/console/")).await?;
    browser.click(&format!("#approve-{name} button")).await?;
    browser.wait_for("#nothing-to-approve", WAIT).await?;
    assert_eq!(alice.view(&name).await?["phase"], "Approved");
    server.abort();
    browser.close().await?;
    Ok(())
}

/// Attack: bob edits his session cookie (to be alice, keeping the signature; or a
/// changed signature): the console refuses it, on pages and on forms, and approves
/// nothing.
#[tokio::test(flavor = "multi_thread")]
async fn attack_edited_session_cookie_is_refused() -> anyhow::Result<()> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let console = Console::start().await?;
    let alice = Person::login(&console.stack, &ALICE).await?;
    let name = alice.request("INC-60").await?;
    let browser = console.browser().await?;
    console.log_in(&browser, &BOB).await?;
    browser.wait_for(&format!("#pending-{name}"), WAIT).await?;
    let token = csrf_token(&browser.source().await?)?;
    let (_, original) = session_cookie(&browser).await?;
    let value = original["value"].as_str().unwrap_or_default().to_owned();
    let (payload, signature) = value.split_once('.').ok_or_else(|| anyhow::anyhow!("cookie {value}"))?;
    let mut claims: Value = serde_json::from_slice(&engine.decode(payload)?)?;
    assert_eq!(claims["user"], BOB.email, "the session names bob: {claims}");
    assert_not_a_token(&value);
    claims["user"] = ALICE.email.into();
    let as_alice = format!("{}.{signature}", engine.encode(claims.to_string()));
    let mut flipped = signature.as_bytes().to_vec();
    flipped[5] = if flipped[5] == b'a' { b'b' } else { b'a' };
    let resigned = format!("{payload}.{}", String::from_utf8(flipped)?);

    let direct = console.direct()?;
    for forged in [as_alice, resigned] {
        let mut cookie = original.clone();
        cookie["value"] = forged.clone().into();
        // Without `domain`, a host-only cookie like the console's own (with it,
        // WebDriver would add a domain cookie beside it).
        cookie.as_object_mut().map(|c| c.remove("domain"));
        browser.add_cookie(cookie).await?;
        browser.goto(&console.url("/kubegate/console/")).await?;
        let page = browser.source().await?;
        assert!(page.contains("does not count"), "{page}");
        assert!(!page.contains(&name) && !page.contains("id=\"user\""), "nothing shown: {page}");
        let path = format!("/kubegate/console/requests/{name}/approve");
        let cookie = format!("kubegate_console={forged}");
        let same_origin = [("sec-fetch-site", "same-origin"), ("origin", "null")];
        let refused = direct.post(&path, &cookie, &[("csrf", &token)], &same_origin).await?;
        assert_eq!(refused.status, 401, "{}", refused.body);
    }
    assert_eq!(alice.view(&name).await?["phase"], "Pending", "nothing approved");
    assert!(session_cookie(&browser).await.is_err(), "the console cleared the forged cookie");
    browser.close().await?;
    Ok(())
}

/// Attack: login CSRF and code injection. The browser is sent to the callback with a
/// state that is not its login's (an attacker's own code and state), or with its own
/// state and another login's code: nobody is logged in. The matching pair logs in.
#[tokio::test(flavor = "multi_thread")]
async fn attack_callback_with_a_foreign_state_logs_nobody_in() -> anyhow::Result<()> {
    let console = Console::start().await?;
    let stack = &console.stack;
    let direct = console.direct()?;
    // The attacker's own login, up to the redirect back (not visited).
    let login = direct.get("/kubegate/console/login", None).await?;
    let attacker_callback = provider_login(stack, &login.header("location"), &ALICE).await?;
    let attacker_path = attacker_callback.trim_start_matches(&console.origin).to_owned();
    // The victim's browser, with a login of its own under way.
    let victim = direct.get("/kubegate/console/login", None).await?;
    let victim_cookie = victim.cookie("kubegate_console_login").ok_or_else(|| anyhow::anyhow!("no login cookie"))?;
    let location = url::Url::parse(&victim.header("location"))?;
    let victim_state = location.query_pairs().find(|(k, _)| k == "state").map(|(_, v)| v.into_owned());
    let victim_state = victim_state.ok_or_else(|| anyhow::anyhow!("no state in {location}"))?;
    let code = url::Url::parse(&attacker_callback)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();

    for (path, expected) in [
        (attacker_path.clone(), 400),
        (format!("/kubegate/console/callback?code={code}&state=forged"), 400),
        (format!("/kubegate/console/callback?code={code}&state={victim_state}"), 502),
    ] {
        let answer = direct.get(&path, Some(&victim_cookie)).await?;
        assert_eq!(answer.status, expected, "{path}: {}", answer.body);
        assert!(answer.cookie("kubegate_console").is_none(), "{path}: no session: {:?}", answer.set_cookies());
        assert!(answer.header("location").is_empty(), "{path}: no redirect");
    }
    let no_login = direct.get(&attacker_path, None).await?;
    assert_eq!((no_login.status, no_login.cookie("kubegate_console")), (400, None), "no login under way");
    // The control: each browser's own pair logs in.
    let mine = direct.log_in(stack, &BOB, "").await?;
    assert_eq!(mine.done.status, 200, "{}", mine.done.body);
    assert!(mine.session_cookie().is_ok() && mine.done.body.contains(BOB.email));
    Ok(())
}

/// Attack: open redirect. `next`, `redirect_uri` and `return_to` on the login and the
/// callback, and a `Host` the console is not configured for, never send the browser
/// anywhere but the identity provider and the console's own page.
#[tokio::test(flavor = "multi_thread")]
async fn attack_open_redirect_on_login_and_callback_goes_nowhere_else() -> anyhow::Result<()> {
    let console = Console::start().await?;
    let stack = &console.stack;
    let direct = console.direct()?;
    let evil = "?next=https://evil.example/&redirect_uri=https://evil.example/cb&return_to=//evil.example";
    let logged_in = direct.log_in(stack, &BOB, evil).await?;
    let location = url::Url::parse(&logged_in.login.header("location"))?;
    assert!(location.as_str().starts_with(&stack.issuer), "to the provider: {location}");
    let redirect_uri = location.query_pairs().find(|(k, _)| k == "redirect_uri").map(|(_, v)| v.into_owned());
    assert_eq!(redirect_uri, Some(console.url("/kubegate/console/callback")));
    assert!(logged_in.callback.starts_with(&console.url("/kubegate/console/callback?")));
    assert_eq!(logged_in.done.status, 200);
    assert!(logged_in.done.header("location").is_empty() && !logged_in.done.body.contains("evil"));
    assert!(logged_in.done.body.contains("content=\"0; url=/kubegate/console/\""), "{}", logged_in.done.body);

    // The callback with a `next` of its own still goes to the console's page only.
    let again = direct.get("/kubegate/console/login", None).await?;
    let cookie = again.cookie("kubegate_console_login").unwrap_or_default();
    let callback = provider_login(stack, &again.header("location"), &BOB).await?;
    let path = format!("{}&next=https://evil.example/", callback.trim_start_matches(&console.origin));
    let done = direct.get(&path, Some(&cookie)).await?;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.header("location").is_empty() && !done.body.contains("evil"), "{}", done.body);

    // A Host the console is not configured for gets no redirect URI of its own.
    for host in ["evil.example", "127.0.0.1"] {
        let response =
            direct.client.get(format!("{}/kubegate/console/login", direct.base)).header("host", host).send().await?;
        assert_eq!(response.status().as_u16(), 421, "{host}");
        assert!(response.headers().get("location").is_none(), "{host}");
    }

    // In the browser: a login started with `next` ends on the console's own page.
    let browser = console.browser().await?;
    browser.goto(&console.url(&format!("/kubegate/console/login{evil}"))).await?;
    browser.wait_for("input[name=login]", WAIT).await?;
    browser.type_into("input[name=login]", BOB.email).await?;
    browser.type_into("input[name=password]", BOB.password).await?;
    browser.click("button[type=submit]").await?;
    browser.wait_for("#user", WAIT).await?;
    assert_eq!(browser.current_url().await?, console.url("/kubegate/console/"));
    browser.close().await?;
    Ok(())
}

/// Attack: framing (clickjacking) and leaking: every page says it may not be framed,
/// cached or sniffed and sends no referrer; the session cookie is Secure, HttpOnly,
/// SameSite=Strict and for the console's path only; the login cookie is Lax (it must
/// survive the provider's cross-site redirect) and cleared once used.
#[tokio::test(flavor = "multi_thread")]
async fn pages_carry_anti_framing_headers_and_cookie_flags() -> anyhow::Result<()> {
    let console = Console::start().await?;
    let direct = console.direct()?;
    let logged_in = direct.log_in(&console.stack, &BOB, "").await?;
    let login_cookie = logged_in.login.set_cookies().join("\n");
    assert!(
        login_cookie.starts_with("kubegate_console_login=")
            && login_cookie.ends_with("; Path=/kubegate/console/; Max-Age=600; Secure; HttpOnly; SameSite=Lax"),
        "{login_cookie}"
    );
    let cookies = logged_in.done.set_cookies();
    let session = cookies.iter().find(|c| c.starts_with("kubegate_console=")).cloned().unwrap_or_default();
    for flag in ["; Path=/kubegate/console/;", "; Secure;", "; HttpOnly;", "; SameSite=Strict"] {
        assert!(session.contains(flag), "{flag} in {session}");
    }
    assert!(
        cookies.iter().any(|c| c.starts_with("kubegate_console_login=; Path=/kubegate/console/; Max-Age=0")),
        "the login cookie is cleared: {cookies:?}"
    );
    let cookie = logged_in.session_cookie()?;
    let home = direct.get("/kubegate/console/", Some(&cookie)).await?;
    assert!(home.body.contains("id=\"user\">bob@example.com"), "{}", home.body);
    let pages = [
        logged_in.login,
        logged_in.done,
        home,
        direct.get("/kubegate/console/", None).await?,
        direct.get("/kubegate/console/no-such-page", None).await?,
        direct.post("/kubegate/console/requests/ar-x/approve", &cookie, &[("csrf", "bad")], &[]).await?,
    ];
    for page in &pages {
        let csp = page.header("content-security-policy");
        assert!(csp.starts_with("default-src 'none';") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("form-action 'self'") && !csp.contains("unsafe"), "{csp}");
        assert_eq!(page.header("x-frame-options"), "DENY");
        assert_eq!(page.header("referrer-policy"), "same-origin");
        assert_eq!(page.header("strict-transport-security"), "max-age=31536000");
        assert_eq!(page.header("cache-control"), "no-store");
        assert_eq!(page.header("x-content-type-options"), "nosniff");
        assert!(!page.body.contains("<script"), "no script in any page");
    }
    Ok(())
}

/// Attack: a token where a script, an extension or a shoulder could read it. No page
/// the browser gets (the login's end, the console, a refusal) and no cookie holds the
/// ID token, any JWT, the authorization code or the session cookie's value.
#[tokio::test(flavor = "multi_thread")]
async fn no_token_appears_in_any_page() -> anyhow::Result<()> {
    let console = Console::start().await?;
    let stack = &console.stack;
    let alice = Person::login(stack, &ALICE).await?;
    let name = alice.request("INC-70").await?;
    let alice_token = stack.id_token(&ALICE, GATEWAY_CLIENT_ID).await?;

    let direct = console.direct()?;
    let logged_in = direct.log_in(stack, &BOB, "").await?;
    let code = url::Url::parse(&logged_in.callback)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let mut pages = vec![logged_in.done.body.clone()];
    let mut secrets = vec![code, logged_in.session_cookie()?];

    let browser = console.browser().await?;
    console.log_in(&browser, &BOB).await?;
    browser.wait_for(&format!("#pending-{name}"), WAIT).await?;
    pages.push(browser.source().await?);
    let (cookie, _) = session_cookie(&browser).await?;
    secrets.push(cookie.trim_start_matches("kubegate_console=").to_owned());
    browser.goto(&console.url("/kubegate/console/requests/not-there")).await?;
    pages.push(browser.source().await?);
    browser.goto(&console.url("/kubegate/console/")).await?;
    browser.click(&format!("#approve-{name} button")).await?;
    browser.wait_for("#nothing-to-approve", WAIT).await?;
    pages.push(browser.source().await?);
    for cookie in browser.cookies().await? {
        assert_not_a_token(cookie["value"].as_str().unwrap_or_default());
    }
    for page in &pages {
        assert!(!page.contains("eyJ"), "a JWT in a page: {page}");
        assert!(!page.contains(&alice_token));
        for secret in &secrets {
            assert!(!secret.is_empty() && !page.contains(secret.as_str()), "a secret in a page: {page}");
        }
    }
    browser.close().await?;
    Ok(())
}

/// The discovery pages in a real browser: carol finds group `engineering`, follows it to
/// its roles and a role's rules; a RoleBinding created while she looks shows on a
/// reload within 5 seconds; the levels page lists `oncall`, the workflow's level, as a
/// bound group kubegate grants. Attack: bob, whom no policy lets discover, reading the
/// cluster's RBAC map through the console: refused with the policy's message.
#[tokio::test(flavor = "multi_thread")]
async fn discovery_pages_follow_the_cluster_in_a_real_browser() -> anyhow::Result<()> {
    let console = Console::start().await?;
    let browser = console.browser().await?;
    console.log_in(&browser, &CAROL).await?;
    browser.click("#discovery").await?;
    browser.wait_for("#subjects", WAIT).await?;
    browser.type_into("input[name=search]", "engin").await?;
    browser.click("#search button").await?;
    arrive(&browser, "search=engin", "#subjects").await?;
    let found = browser.source().await?;
    assert!(found.contains(">engineering</a>") && !found.contains(">system:"), "{found}");
    browser.click("#subjects a").await?;
    arrive(&browser, "/discovery/roles", "#roles").await?;
    browser.click("#roles a").await?;
    arrive(&browser, "/discovery/rules", "#rules").await?;
    let rules = browser.source().await?;
    assert!(rules.contains("pods"), "engineering's role reads pods: {rules}");

    let objects = console.stack.stand_in_objects()?;
    let binding = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "engineering-edit", "namespace": "default"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "engineering"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"}});
    let created = std::time::Instant::now();
    objects.put(ROLE_BINDINGS, Some("default"), "engineering-edit", &binding).await?;
    let roles = console.url("/kubegate/console/discovery/roles?subject=group%3Aengineering");
    loop {
        browser.goto(&roles).await?;
        browser.wait_for("#roles", WAIT).await?;
        if browser.source().await?.contains("engineering-edit") {
            break;
        }
        anyhow::ensure!(created.elapsed() < Duration::from_secs(5), "the new binding is not shown after 5 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("binding shown in the console after {:?}", created.elapsed());

    browser.goto(&console.url("/kubegate/console/discovery/levels")).await?;
    browser.wait_for("#candidates", WAIT).await?;
    let levels = browser.source().await?;
    assert!(levels.contains("id=\"no-unbacked\""), "oncall and engineering are both bound: {levels}");
    assert!(
        levels.contains(">oncall</a></td><td>yes</td>"),
        "the workflow's level is a bound, configured group: {levels}"
    );
    assert!(!browser.source().await?.contains("eyJ"), "no token in the page");
    browser.close().await?;

    let bob = console.browser().await?;
    console.log_in(&bob, &BOB).await?;
    assert!(!bob.source().await?.contains("id=\"discovery\""), "no discovery link for whom no policy lets in");
    bob.goto(&console.url("/kubegate/console/discovery")).await?;
    bob.wait_for("#refusal", WAIT).await?;
    assert!(bob.source().await?.contains("Cedar action"), "the policy's refusal");
    bob.close().await?;
    Ok(())
}

/// Waits until the browser is at a URL containing `url_part` showing `selector`.
async fn arrive(browser: &Browser, url_part: &str, selector: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + WAIT;
    while !browser.current_url().await?.contains(url_part) {
        anyhow::ensure!(std::time::Instant::now() < deadline, "never reached {url_part}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.wait_for(selector, WAIT).await?;
    Ok(())
}

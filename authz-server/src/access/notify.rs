//! Notifications: a JSON POST to each workflow's webhook on request, approval, denial,
//! revocation and expiry. The body is Slack-compatible (`text`, which Slack's incoming
//! webhooks show) with the event's fields beside it for other receivers. It carries
//! names, levels, times and the reason people typed; never a token or a signature.
//! Delivery is retried with backoff and never holds up the request that caused it.

use super::object::AccessRequest;
use crate::rules::SharedRules;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A workflow's webhook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookConfig {
    /// Where events are posted (`https://hooks.slack.com/...`, or any receiver).
    pub url: String,
}

/// Attempts per event, and the first pause between them (doubled each time).
const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    Requested,
    Approved,
    Denied,
    Revoked,
    Expired,
}

/// The body posted.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// One line for people (Slack shows it).
    pub text: String,
    pub event: Event,
    pub request: String,
    pub workflow: String,
    pub cluster: String,
    pub requester: String,
    pub levels: Vec<String>,
    pub duration_seconds: u64,
    pub reason: String,
    /// Who approved, denied or revoked (absent for a request or an expiry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why it was denied or revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_reason: Option<String>,
}

impl Notification {
    pub fn new(event: Event, object: &AccessRequest, by: Option<&str>) -> Self {
        let spec = &object.spec;
        let levels = spec.levels.join(", ");
        let who = by.unwrap_or("kubegate");
        let text = match event {
            Event::Requested => format!(
                "{} requests {levels} on {} for {}s: {} (kubegate access approve {})",
                spec.requester,
                spec.cluster,
                spec.duration_seconds,
                spec.reason,
                object.name()
            ),
            Event::Approved => {
                format!("{who} approved {}'s {levels} on {} ({})", spec.requester, spec.cluster, object.name())
            }
            Event::Denied => {
                format!("{who} denied {}'s {levels} on {} ({})", spec.requester, spec.cluster, object.name())
            }
            Event::Revoked => {
                format!("{who} revoked {}'s {levels} on {} ({})", spec.requester, spec.cluster, object.name())
            }
            Event::Expired => format!("{}'s {levels} on {} expired ({})", spec.requester, spec.cluster, object.name()),
        };
        Self {
            text: slack_escaped(&text),
            event,
            request: object.name().to_owned(),
            workflow: spec.workflow.clone(),
            cluster: spec.cluster.clone(),
            requester: spec.requester.clone(),
            levels: spec.levels.clone(),
            duration_seconds: spec.duration_seconds,
            reason: spec.reason.clone(),
            by: by.map(str::to_owned),
            decision_reason: object.status().decided.map(|d| d.reason).filter(|r| !r.is_empty()),
        }
    }
}

/// `text` with Slack's control characters escaped (`&`, `<`, `>`): a reason like
/// `<!channel> <https://evil|approve>` must not ping a channel or plant a link.
fn slack_escaped(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Sends notifications to the webhook of the request's workflow, as configured now.
#[derive(Clone)]
pub struct Notifier {
    client: reqwest::Client,
    rules: SharedRules,
}

impl Notifier {
    pub fn new(rules: SharedRules) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { client, rules }
    }

    /// Posts `event` about `object` in the background, if its workflow has a webhook.
    pub fn send(&self, event: Event, object: &AccessRequest, by: Option<&str>) {
        let rules = self.rules.current();
        let Some(url) =
            rules.workflows.get(&object.spec.workflow).and_then(|w| w.config.webhook.clone()).map(|w| w.url)
        else {
            return;
        };
        let notification = Notification::new(event, object, by);
        let client = self.client.clone();
        tokio::spawn(async move { deliver(&client, &url, &notification).await });
    }
}

async fn deliver(client: &reqwest::Client, url: &str, notification: &Notification) {
    let mut pause = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        match client.post(url).json(notification).send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => tracing::warn!(
                request = notification.request,
                attempt,
                status = response.status().as_u16(),
                "access-request webhook refused the notification"
            ),
            Err(e) => tracing::warn!(request = notification.request, attempt, error = %crate::error_text::causes(&e),
                "access-request webhook unreachable"),
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    tracing::error!(request = notification.request, event = ?notification.event, "access-request notification dropped after {ATTEMPTS} attempts");
}

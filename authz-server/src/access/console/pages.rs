//! The console's HTML: server-rendered, no script, one stylesheet whose hash the
//! Content-Security-Policy names. Every piece of text that came from a person or the
//! store (names, reasons, levels, messages) goes through [`escape`].

use super::super::api::{is_object_name, View};
use super::config::PATH;
use super::csrf;
use sha2::{Digest, Sha256};
use std::fmt::Write;

/// The one stylesheet, inline; allowed by its hash, so no other style (nor any script)
/// runs on the console's pages.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}\
table{border-collapse:collapse;width:100%;margin-bottom:1.5em}th,td{border-bottom:1px solid #ddd;padding:.4em;text-align:left;vertical-align:top}\
form.inline{display:inline-block;margin:0 .5em .3em 0}input[type=text]{width:14em}.refusal{color:#a00}\
header{display:flex;justify-content:space-between;align-items:center}.muted{color:#777}";

/// The `Content-Security-Policy` of every console response.
pub fn content_security_policy() -> String {
    use base64::Engine;
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// Text made safe for HTML content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn page(title: &str, body: &str, head_extra: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · kubegate</title>\
<meta name=\"viewport\" content=\"width=device-width\">{head_extra}<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n",
        escape(title)
    )
}

/// Not logged in (or a session that did not count: `problem` says why).
pub fn logged_out(problem: Option<&str>) -> String {
    let problem = problem.map(|p| format!("<p class=\"refusal\" id=\"problem\">{}</p>", escape(p))).unwrap_or_default();
    page(
        "Access requests",
        &format!(
            "<h1>kubegate access requests</h1>\n{problem}<p>Approve, deny and follow just-in-time access requests.</p>\n\
<p><a id=\"login\" href=\"{PATH}login\">Log in</a></p>"
        ),
        "",
    )
}

/// A refusal: the same message the API gives, and a way back.
pub fn refusal(code: u16, message: &str) -> String {
    page(
        "Refused",
        &format!(
            "<h1>Refused ({code})</h1>\n<p class=\"refusal\" id=\"refusal\">{}</p>\n<p><a href=\"{PATH}\">Back to the console</a></p>",
            escape(message)
        ),
        "",
    )
}

/// After the callback: the session cookie is set (`SameSite=Strict`), so the console
/// is reached by a navigation of this page's own (a redirect from the identity
/// provider's chain would arrive without it).
pub fn logged_in(user: &str) -> String {
    page(
        "Logged in",
        &format!(
            "<h1>Logged in</h1>\n<p>Logged in as <strong>{}</strong>.</p>\n<p><a id=\"continue\" href=\"{PATH}\">Continue to the console</a></p>",
            escape(user)
        ),
        &format!("<meta http-equiv=\"refresh\" content=\"0; url={PATH}\">"),
    )
}

/// What the home page shows.
pub struct Home<'a> {
    pub user: &'a str,
    /// The CSRF token every form carries.
    pub csrf: &'a str,
    /// Pending requests the user may approve.
    pub to_approve: &'a [View],
    /// The user's own requests, grants among them.
    pub mine: &'a [View],
    /// Resource discovery is on: link its pages.
    pub discovery: bool,
}

fn form(name: &str, action: &str, csrf_token: &str, reason: Option<(&str, bool)>, button: &str) -> String {
    let reason = match reason {
        Some((placeholder, required)) => format!(
            "<input type=\"text\" name=\"reason\" maxlength=\"1000\" placeholder=\"{}\" aria-label=\"reason\"{}> ",
            escape(placeholder),
            if required { " required" } else { "" }
        ),
        None => String::new(),
    };
    let name = escape(name);
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{PATH}requests/{name}/{action}\" id=\"{action}-{name}\">\
<input type=\"hidden\" name=\"{}\" value=\"{}\">{reason}<button type=\"submit\">{button}</button></form>",
        csrf::FIELD,
        escape(csrf_token)
    )
}

fn levels(view: &View) -> String {
    if view.levels.is_empty() {
        "<span class=\"muted\">(none: the grant id only)</span>".into()
    } else {
        escape(&view.levels.join(", "))
    }
}

fn duration(seconds: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(seconds)).to_string()
}

fn approvals(view: &View) -> String {
    let by: Vec<String> = view.approvals.iter().map(|a| escape(&a.by)).collect();
    let mut text = format!("{} of {}", view.approvals.len(), view.approvals_required);
    if !by.is_empty() {
        let _ = write!(text, " ({})", by.join(", "));
    }
    text
}

fn phase(view: &View) -> String {
    format!("{:?}", view.phase)
}

/// The console: requests to decide, the user's grants, the user's requests.
pub fn home(home: &Home<'_>) -> String {
    let mut body = format!(
        "<header><h1>kubegate access requests</h1><div>Logged in as <strong id=\"user\">{}</strong> \
<form class=\"inline\" method=\"post\" action=\"{PATH}logout\" id=\"logout\"><input type=\"hidden\" name=\"{}\" value=\"{}\">\
<button type=\"submit\">Log out</button></form></div></header>\n",
        escape(home.user),
        csrf::FIELD,
        escape(home.csrf)
    );
    if home.discovery {
        body.push_str("<p><a id=\"discovery\" href=\"/kubegate/console/discovery\">Cluster RBAC: subjects, roles and privilege levels</a></p>\n");
    }

    body.push_str("<h2>Waiting for your approval</h2>\n");
    if home.to_approve.is_empty() {
        body.push_str("<p class=\"muted\" id=\"nothing-to-approve\">Nothing is waiting for you.</p>\n");
    } else {
        body.push_str("<table id=\"to-approve\"><tr><th>Request</th><th>Requester</th><th>Cluster</th><th>Levels</th><th>For</th><th>Reason</th><th>Approvals</th><th>Asked</th><th></th></tr>\n");
        for view in home.to_approve {
            let actions = if is_object_name(&view.name) {
                format!(
                    "{}{}",
                    form(&view.name, "approve", home.csrf, Some(("reason (optional)", false)), "Approve"),
                    form(&view.name, "deny", home.csrf, Some(("reason (required)", true)), "Deny")
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                body,
                "<tr id=\"pending-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{actions}</td></tr>",
                escape(&view.name),
                escape(&view.name),
                escape(&view.requester),
                escape(&view.cluster),
                levels(view),
                duration(view.duration_seconds),
                escape(&view.reason),
                approvals(view),
                escape(view.created_at.as_deref().unwrap_or("")),
            );
        }
        body.push_str("</table>\n");
    }

    let grants: Vec<&View> = home.mine.iter().filter(|v| v.expires_at.is_some() && phase(v) == "Approved").collect();
    body.push_str("<h2>Your grants</h2>\n");
    if grants.is_empty() {
        body.push_str("<p class=\"muted\" id=\"no-grants\">You hold no grant.</p>\n");
    } else {
        body.push_str("<table id=\"grants\"><tr><th>Request</th><th>Cluster</th><th>Levels</th><th>Until</th><th>Approved by</th><th></th></tr>\n");
        for view in grants {
            let revoke = if is_object_name(&view.name) {
                form(&view.name, "revoke", home.csrf, Some(("reason (optional)", false)), "Revoke")
            } else {
                String::new()
            };
            let by: Vec<String> = view.approvals.iter().map(|a| escape(&a.by)).collect();
            let _ = writeln!(
                body,
                "<tr id=\"grant-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{revoke}</td></tr>",
                escape(&view.name),
                escape(&view.name),
                escape(&view.cluster),
                levels(view),
                escape(view.expires_at.as_deref().unwrap_or("")),
                by.join(", "),
            );
        }
        body.push_str("</table>\n");
    }

    body.push_str("<h2>Your requests</h2>\n");
    if home.mine.is_empty() {
        body.push_str("<p class=\"muted\" id=\"no-requests\">You have made no request. Request access with <code>kubegate access request</code>.</p>\n");
    } else {
        body.push_str("<table id=\"mine\"><tr><th>Request</th><th>Cluster</th><th>Levels</th><th>For</th><th>Reason</th><th>Phase</th><th>Decided by</th><th>Why</th><th></th></tr>\n");
        for view in home.mine {
            let withdraw = if phase(view) == "Pending" && is_object_name(&view.name) {
                form(&view.name, "deny", home.csrf, None, "Withdraw")
            } else {
                String::new()
            };
            let _ = writeln!(
                body,
                "<tr id=\"request-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"phase\">{}</td><td>{}</td><td>{}</td><td>{withdraw}</td></tr>",
                escape(&view.name),
                escape(&view.name),
                escape(&view.cluster),
                levels(view),
                duration(view.duration_seconds),
                escape(&view.reason),
                phase(view),
                escape(view.decided_by.as_deref().unwrap_or("")),
                escape(view.decision_reason.as_deref().unwrap_or("")),
            );
        }
        body.push_str("</table>\n");
    }
    page("Access requests", &body, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::object::Phase;

    fn view(name: &str, reason: &str, phase: Phase) -> View {
        View {
            name: name.into(),
            cluster: "dev".into(),
            workflow: "oncall".into(),
            requester: "alice@example.com".into(),
            levels: vec!["oncall".into()],
            duration_seconds: 1800,
            reason: reason.into(),
            phase,
            created_at: Some("2026-12-01T13:31:02Z".into()),
            approvals_required: 1,
            approvals: vec![],
            expires_at: None,
            decided_by: None,
            decision_reason: None,
        }
    }

    #[test]
    fn escaping_covers_every_html_special_character() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("plain text"), "plain text");
    }

    /// Attack: a requester whose reason is markup (a script, a form posting elsewhere,
    /// an attribute breaking out of its quotes), shown to the approver.
    #[test]
    fn what_people_wrote_is_shown_as_text() {
        let reason = r#""><script>alert(1)</script><form action="https://evil.example"><img src=x onerror=alert(2)>"#;
        let html = home(&Home {
            user: "bob<b>@example.com",
            csrf: "t\"oken",
            to_approve: &[view("ar-1", reason, Phase::Pending)],
            mine: &[view("ar-2", "it's <b>mine</b>", Phase::Pending)],
            discovery: false,
        });
        assert!(!html.contains("<script>") && !html.contains("<img") && !html.contains("https://evil.example\""));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("bob&lt;b&gt;@example.com") && html.contains("it&#39;s &lt;b&gt;mine&lt;/b&gt;"));
        assert!(html.contains("value=\"t&quot;oken\""));
        assert!(!refusal(403, "<i>no</i>").contains("<i>"));
        assert!(!logged_out(Some("<i>no</i>")).contains("<i>"));
        assert!(!logged_in("<i>x</i>").contains("<i>"));
    }

    #[test]
    fn every_form_posts_to_the_console_with_the_token_and_deny_needs_a_reason() {
        let html = home(&Home {
            user: "bob",
            csrf: "tok",
            to_approve: &[view("ar-1", "", Phase::Pending)],
            mine: &[],
            discovery: false,
        });
        for action in ["approve", "deny"] {
            assert!(html.contains(&format!("method=\"post\" action=\"/kubegate/console/requests/ar-1/{action}\"")));
        }
        let forms = html.matches("<form").count();
        assert_eq!(forms, 3, "approve, deny, log out");
        assert_eq!(html.matches("name=\"csrf\" value=\"tok\"").count(), forms);
        assert!(html.contains("placeholder=\"reason (required)\" aria-label=\"reason\" required"));
        assert!(!html.contains("<script"), "no script at all");
    }

    #[test]
    fn the_style_is_allowed_by_its_hash_only() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(csp.contains("form-action 'self'; frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe"));
        assert!(page("t", "", "").contains(&format!("<style>{STYLE}</style>")));
    }
}

//! How `kubegate access` shows the gateway's answers: tables, one-line summaries, and
//! the document itself for `-o json|yaml`.
//!
//! Names, levels and above all reasons are typed by other people (a requester's reason
//! is on an approver's screen), so control and bidirectional-override characters are
//! replaced before anything reaches the terminal.

use crate::access::{Catalog, Document, Output, View};
use std::time::{Duration, SystemTime};

/// The document as JSON or YAML, pretty; `None` for tables.
pub fn document(doc: &Document, output: Output) -> anyhow::Result<Option<String>> {
    Ok(match output {
        Output::Table => None,
        Output::Json => Some(serde_json::to_string_pretty(doc)? + "\n"),
        Output::Yaml => Some(serde_yaml::to_string(doc)?),
    })
}

/// `CLUSTER WORKFLOW LEVELS DEFAULT MAX APPROVALS REASON`, one row per workflow.
pub fn catalog_table(catalog: &Catalog) -> String {
    let rows = catalog.clusters.iter().flat_map(|offer| {
        offer.workflows.iter().map(|w| {
            vec![
                offer.cluster.clone(),
                w.name.clone(),
                dash_if_empty(w.levels.join(",")),
                dash_if_empty(w.default_duration.clone()),
                dash_if_empty(w.max_duration.clone()),
                w.approvals_required.to_string(),
                if w.reason_required { "required" } else { "optional" }.to_owned(),
            ]
        })
    });
    table(&["CLUSTER", "WORKFLOW", "LEVELS", "DEFAULT", "MAX", "APPROVALS", "REASON"], rows.collect())
}

/// `NAME REQUESTER CLUSTER LEVELS PHASE EXPIRES/AGE REASON`, one row per request.
pub fn requests_table(views: &[View], now: SystemTime) -> String {
    let rows = views.iter().map(|v| {
        vec![
            v.name.clone(),
            v.requester.clone(),
            v.cluster.clone(),
            dash_if_empty(v.levels.join(",")),
            v.phase.clone(),
            expires_or_age(v, now),
            dash_if_empty(v.reason.clone().unwrap_or_default()),
        ]
    });
    table(&["NAME", "REQUESTER", "CLUSTER", "LEVELS", "PHASE", "EXPIRES/AGE", "REASON"], rows.collect())
}

/// `access request ar-7c3f1 for oncall on dev: pending (1 approval needed)`.
pub fn summary(view: &View, now: SystemTime) -> String {
    let cluster = if view.cluster.is_empty() { "the gateway's cluster" } else { &view.cluster };
    format!("access request {} for {} on {}: {}", clean(&view.name), granted(view), clean(cluster), state(view, now))
}

/// Where the request stands: `pending (1 approval needed)`, `approved by
/// bob@example.com; oncall until 14:32 UTC`, `denied by bob@example.com: not now`.
pub fn state(view: &View, now: SystemTime) -> String {
    let phase = clean(&view.phase.to_lowercase());
    let decided = || {
        let by = view.decided_by.as_deref().map(|by| format!(" by {}", clean(by))).unwrap_or_default();
        let reason = view.decision_reason.as_deref().filter(|r| !r.is_empty());
        (by, reason.map(clean))
    };
    match phase.as_str() {
        "pending" => match view.approvals_needed() {
            0 => phase,
            1 => format!("{phase} (1 approval needed)"),
            n => format!("{phase} ({n} approvals needed)"),
        },
        "approved" => {
            let approvers: Vec<String> = view.approvals.iter().map(|a| clean(&a.by)).collect();
            let by = if approvers.is_empty() { String::new() } else { format!(" by {}", approvers.join(", ")) };
            match view.expires_at.as_deref() {
                Some(at) => format!("{phase}{by}; {} until {}", granted(view), clock_time(at, now)),
                None => format!("{phase}{by}"),
            }
        }
        "denied" => {
            let (by, reason) = decided();
            format!("{phase}{by}: {}", reason.unwrap_or_else(|| "(no reason given)".into()))
        }
        "expired" => match view.expires_at.as_deref() {
            Some(at) => format!("{phase} at {}", clock_time(at, now)),
            None => phase,
        },
        _ => match decided() {
            (by, Some(reason)) => format!("{phase}{by}: {reason}"),
            (by, None) => format!("{phase}{by}"),
        },
    }
}

/// What `--wait` says when it gives up; the request itself stays.
pub fn still_pending(view: &View, waited: Duration) -> String {
    format!(
        "access request {} is still {} after {}; it stays open: `kubegate access list` shows how it stands",
        clean(&view.name),
        state(view, SystemTime::now()),
        humantime::format_duration(waited),
    )
}

/// What the request grants: its levels, or for a workflow that carries none, the
/// workflow's name.
fn granted(view: &View) -> String {
    match (view.levels.is_empty(), view.workflow.is_empty()) {
        (false, _) => clean(&view.levels.join(", ")),
        (true, false) => clean(&view.workflow),
        (true, true) => "access".into(),
    }
}

/// `in 52m` for a grant running, `expired` for one past its end, `5m ago` (since it was
/// made) for any other request.
fn expires_or_age(view: &View, now: SystemTime) -> String {
    let parse = |at: &Option<String>| at.as_deref().and_then(|t| humantime::parse_rfc3339(t).ok());
    if view.phase.eq_ignore_ascii_case("approved") {
        if let Some(expiry) = parse(&view.expires_at) {
            return match expiry.duration_since(now) {
                Ok(left) => format!("in {}", short(left)),
                Err(_) => "expired".into(),
            };
        }
    }
    match parse(&view.created_at) {
        Some(created) => format!("{} ago", short(now.duration_since(created).unwrap_or_default())),
        None => "-".into(),
    }
}

/// `14:32 UTC` today, `2026-12-02 14:32 UTC` another day; the text as it is if it is
/// not an RFC 3339 time.
pub fn clock_time(at: &str, now: SystemTime) -> String {
    let Ok(time) = humantime::parse_rfc3339(at) else { return clean(at) };
    let (when, today) = (humantime::format_rfc3339_seconds(time).to_string(), humantime::format_rfc3339_seconds(now));
    let (date, hour) = (when.get(..10).unwrap_or_default(), when.get(11..16).unwrap_or_default());
    if today.to_string().get(..10) == Some(date) {
        format!("{hour} UTC")
    } else {
        format!("{date} {hour} UTC")
    }
}

/// `45s`, `52m`, `3h5m`, `2d4h`: kubectl's style of age.
pub fn short(span: Duration) -> String {
    let s = span.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 if (s % 3600) / 60 == 0 => format!("{}h", s / 3600),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ if (s % 86400) / 3600 == 0 => format!("{}d", s / 86400),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text
    }
}

/// Columns padded to their widest cell, three spaces apart, as kubectl prints them.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|row| row.iter().map(|cell| clean(cell)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   "));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Text from others made safe for a terminal: white space becomes a space, other
/// control characters and bidirectional overrides the replacement character.
pub fn clean(text: &str) -> String {
    let bidi = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}');
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() || bidi(c) => '\u{FFFD}',
            c => c,
        })
        .collect()
}

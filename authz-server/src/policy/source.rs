//! From policy files to a validated `PolicySet`, with errors that name the file, the
//! line and column, and the reason.

use cedar_policy::{Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use std::collections::HashMap;

/// Why policies were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: {reason}")]
    Read { file: String, reason: String },
    /// A syntax or validation error at a place in a file.
    #[error("{file}:{line}:{column}: {reason}")]
    Invalid { file: String, line: usize, column: usize, reason: String },
    /// kubegate's own schema does not parse (a build defect).
    #[error("kubegate's Cedar schema: {0}")]
    Schema(String),
}

/// Where a policy comes from.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    /// `file:line`, with the `@id` when it has one: how messages name it.
    pub label: String,
    /// (file index, byte offset): policies sort in the order they were written.
    pub order: (usize, usize),
    /// Its `@k8s_impersonate_groups` levels, read once here: Cedar parses an
    /// annotation's key on every lookup (profiled: a sixth of a decision).
    pub levels: Vec<String>,
    /// Its `@error` message.
    pub error: Option<String>,
    pub forbid: bool,
}

pub(super) fn schema() -> Result<Schema, PolicyError> {
    Schema::from_cedarschema_str(super::SCHEMA)
        .map(|(schema, _)| schema)
        .map_err(|e| PolicyError::Schema(e.to_string()))
}

/// Parses every source statement by statement (so every error has its line), gives
/// each policy an id naming its file, line and `@id`, appends `built_in`, and validates
/// the whole set (strict mode).
pub(super) fn policy_set(
    sources: &[(String, String)],
    built_in: &str,
    schema: &Schema,
) -> Result<(PolicySet, HashMap<PolicyId, Origin>), PolicyError> {
    let mut set = PolicySet::new();
    let mut origins = HashMap::new();
    // Where each policy's text lives (file index, offset), to turn validator offsets
    // into lines without copying a file per policy.
    let mut texts: HashMap<PolicyId, (usize, usize)> = HashMap::new();
    let files: Vec<(&str, &str)> = sources
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .chain(std::iter::once(("kubegate built-in", built_in)))
        .collect();
    let lines: Vec<Lines<'_>> = files.iter().map(|(_, text)| Lines::new(text)).collect();
    for (file_index, &(name, text)) in files.iter().enumerate() {
        for (index, (start, statement)) in statements(text).into_iter().enumerate() {
            let id = PolicyId::new(format!("{name}#{index}"));
            let at = |offset: usize| lines[file_index].line_column(start + offset);
            let policy = Policy::parse(Some(id.clone()), statement).map_err(|e| {
                let (line, column) = at(first_offset(&e).unwrap_or(0));
                PolicyError::Invalid { file: name.to_owned(), line, column, reason: reason(&e) }
            })?;
            let (line, _) = at(leading_space(statement));
            let label = match policy.annotation("id") {
                Some(annotated) => format!("{name}:{line} ({annotated})"),
                None => format!("{name}:{line}"),
            };
            let origin = Origin {
                label,
                order: (file_index, start),
                levels: policy.annotation(super::LEVELS_ANNOTATION).map(super::level_list).unwrap_or_default(),
                error: policy.annotation(super::ERROR_ANNOTATION).map(str::to_owned),
                forbid: policy.effect() == cedar_policy::Effect::Forbid,
            };
            origins.insert(id.clone(), origin);
            set.add(policy).map_err(|e| PolicyError::Invalid {
                file: name.to_owned(),
                line,
                column: 1,
                reason: e.to_string(),
            })?;
            texts.insert(id, (file_index, start));
        }
    }
    let validation = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    if let Some(error) = validation.validation_errors().next() {
        let (file_index, start) = texts.get(error.policy_id()).copied().unwrap_or_default();
        let file = files.get(file_index).map_or("", |(name, _)| *name);
        let (line, column) =
            lines.get(file_index).map_or((1, 1), |l| l.line_column(start + first_offset(error).unwrap_or(0)));
        // Cedar names the policy by the internal id; the author knows it by `@id` and line.
        let reason = match origins.get(error.policy_id()) {
            Some(origin) => reason(error).replace(&format!("`{}`", error.policy_id()), &format!("`{}`", origin.label)),
            None => reason(error),
        };
        return Err(PolicyError::Invalid { file: file.to_owned(), line, column, reason });
    }
    Ok((set, origins))
}

/// The diagnostic's message, its first nested cause, and its help.
fn reason(diagnostic: &dyn Diagnostic) -> String {
    let mut reason = diagnostic.to_string();
    if let Some(inner) = diagnostic.related().and_then(|mut r| r.next()) {
        reason = format!("{reason}: {inner}");
    }
    match diagnostic.help() {
        Some(help) => format!("{reason} ({help})"),
        None => reason,
    }
}

/// Splits a policy file into statements (each ends with `;` outside strings and
/// comments), with each statement's byte offset in the file. Text after the last `;`
/// is one more statement if it holds anything but space and comments (so a missing
/// `;` is reported by the parser, at its place).
fn statements(text: &str) -> Vec<(usize, &str)> {
    let bytes = text.as_bytes();
    let (mut out, mut start, mut i) = (Vec::new(), 0, 0);
    let (mut in_string, mut in_comment) = (false, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_comment {
            in_comment = b != b'\n';
        } else if in_string {
            if b == b'\\' {
                i += 1;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            in_comment = true;
        } else if b == b';' {
            out.push((start, &text[start..=i]));
            start = i + 1;
        }
        i += 1;
    }
    let rest = &text[start..];
    if rest.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//")) {
        out.push((start, rest));
    }
    out
}

/// Bytes of whitespace and comment lines before a statement's first token.
fn leading_space(statement: &str) -> usize {
    let mut offset = 0;
    for line in statement.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with("//") {
            offset += line.len();
        } else {
            return offset + (line.len() - trimmed.len());
        }
    }
    offset
}

/// The first source offset a diagnostic (or one of its related diagnostics) points at.
fn first_offset(diagnostic: &dyn Diagnostic) -> Option<usize> {
    if let Some(label) = diagnostic.labels().and_then(|mut labels| labels.next()) {
        return Some(label.offset());
    }
    diagnostic.related().and_then(|mut related| related.find_map(first_offset))
}

/// Where a file's lines start, to turn byte offsets into lines and columns without
/// scanning the file again for each of its policies (which made 10,000 policies take
/// seconds to load).
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { text, starts }
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&start| start <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = self.text.get(start..offset).map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_statements_outside_strings_and_comments() {
        let text = "// a; comment\npermit (principal, action, resource) when { \"a;b\" == \"c\" };\n\nforbid (principal, action, resource);\n// end\n";
        let parts = super::statements(text);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].1.ends_with("\"c\" };"));
        let lines = super::Lines::new(text);
        assert_eq!(lines.line_column(parts[1].0 + super::leading_space(parts[1].1)).0, 4);
        assert_eq!(lines.line_column(0), (1, 1));
        assert_eq!(lines.line_column(text.len() + 10).0, text.matches('\n').count() + 1);
        let unicode = super::Lines::new("äb\nçd");
        assert_eq!(unicode.line_column(2), (1, 2), "columns count characters");
        assert_eq!(unicode.line_column("äb\nç".len()), (2, 2));
        assert_eq!(super::statements("permit (principal, action, resource)").len(), 1, "a missing ; is still parsed");
    }
}

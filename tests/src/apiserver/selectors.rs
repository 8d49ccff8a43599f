//! Label and field selectors for the object store's lists and watches, with
//! `k8s.io/apimachinery/pkg/labels` and `fields` semantics: `a=b`, `a==b`, `a!=b`, `a`,
//! `!a`, `a in (x,y)`, `a notin (x,y)`, `a>1`, `a<1` for labels (an absent label
//! satisfies `!=` and `notin`); `=`, `==`, `!=` on the fields a custom resource supports
//! (`metadata.name`, `metadata.namespace`) for fields.

use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    DoesNotExist(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed `labelSelector` (empty: everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// `validation.IsQualifiedName`: `[prefix/]name`, name at most 63 characters of
/// `[A-Za-z0-9_.-]` starting and ending alphanumeric, prefix a DNS subdomain.
fn is_qualified_name(key: &str) -> bool {
    let part_ok = |name: &str| {
        let bytes = name.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 63
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    };
    match key.split_once('/') {
        None => part_ok(key),
        Some((prefix, name)) => !prefix.is_empty() && is_dns_subdomain(prefix) && part_ok(name),
    }
}

/// `validation.IsDNS1123Subdomain`.
pub fn is_dns_subdomain(name: &str) -> bool {
    let lower_alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && lower_alnum(b[0])
                && lower_alnum(b[b.len() - 1])
                && b.iter().all(|c| lower_alnum(*c) || *c == b'-')
        })
}

fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_qualified_name(value) && !value.contains('/')
}

/// Splits on commas outside parentheses.
fn split_requirements(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn key(text: &str) -> Result<String, String> {
    let text = text.trim();
    if is_qualified_name(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("unable to parse requirement: invalid label key {text:?}"))
    }
}

fn value(text: &str) -> Result<String, String> {
    let text = text.trim();
    if is_label_value(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("unable to parse requirement: invalid label value {text:?}"))
    }
}

/// `key in (a,b)` / `key notin (a,b)`: the key, whether negated, and the values.
fn set_requirement(text: &str) -> Option<Result<Requirement, String>> {
    let open = text.find('(')?;
    let head = text[..open].trim_end();
    let (key_text, negated) =
        if let Some(k) = head.strip_suffix("notin") { (k, true) } else { (head.strip_suffix("in")?, false) };
    if !key_text.ends_with(char::is_whitespace) {
        return None;
    }
    let Some(inner) = text[open + 1..].trim_end().strip_suffix(')') else {
        return Some(Err("unable to parse requirement: found '', expected: ')'".into()));
    };
    let parsed = key(key_text).and_then(|k| {
        let values = inner.split(',').map(value).collect::<Result<Vec<_>, _>>()?;
        Ok(if negated { Requirement::NotIn(k, values) } else { Requirement::In(k, values) })
    });
    Some(parsed)
}

fn requirement(text: &str) -> Result<Requirement, String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('!') {
        if !rest.contains(['=', '(', '<', '>']) {
            return key(rest).map(Requirement::DoesNotExist);
        }
    }
    if let Some(set) = set_requirement(text) {
        return set;
    }
    for (op, build) in [
        ("!=", (|k, v| Requirement::NotIn(k, vec![v])) as fn(String, String) -> Requirement),
        ("==", |k, v| Requirement::In(k, vec![v])),
        ("=", |k, v| Requirement::In(k, vec![v])),
    ] {
        if let Some((k, v)) = text.split_once(op) {
            return Ok(build(key(k)?, value(v)?));
        }
    }
    for (op, greater) in [('>', true), ('<', false)] {
        if let Some((k, v)) = text.split_once(op) {
            let bound = v.trim().parse::<i64>().map_err(|_| {
                format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {v:?}")
            })?;
            let k = key(k)?;
            return Ok(if greater { Requirement::GreaterThan(k, bound) } else { Requirement::LessThan(k, bound) });
        }
    }
    key(text).map(Requirement::Exists)
}

impl LabelSelector {
    /// Parses a `labelSelector` query value.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        split_requirements(text).into_iter().map(requirement).collect::<Result<Vec<_>, _>>().map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object (its `metadata.labels`) is selected.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::DoesNotExist(k) => label(k).is_none(),
            Requirement::In(k, values) => label(k).is_some_and(|v| values.iter().any(|x| x == v)),
            Requirement::NotIn(k, values) => label(k).is_none_or(|v| !values.iter().any(|x| x == v)),
            Requirement::GreaterThan(k, bound) => {
                label(k).and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *bound)
            }
            Requirement::LessThan(k, bound) => label(k).and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *bound),
        })
    }
}

/// One field term.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    equal: bool,
    value: String,
}

/// A parsed `fieldSelector` over the fields every custom resource supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<FieldTerm>);

/// `fields.UnescapeValue`.
fn unescape(value: &str) -> Result<String, String> {
    let (mut out, mut escaped) = (String::new(), false);
    for c in value.chars() {
        match (escaped, c) {
            (true, '\\' | ',' | '=') => {
                out.push(c);
                escaped = false;
            }
            (true, other) => return Err(format!("invalid field selector: invalid escape sequence: \\{other}")),
            (false, '\\') => escaped = true,
            (false, '=' | ',') => {
                return Err(format!("invalid field selector: unescaped character in value: {}", c as u32))
            }
            (false, other) => out.push(other),
        }
    }
    if escaped {
        return Err("invalid field selector: invalid escape sequence: \\".into());
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses a `fieldSelector`; a field other than `metadata.name` and
    /// `metadata.namespace` is kube-apiserver's `field label not supported`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        let mut parts = Vec::new();
        let (mut start, mut escaped) = (0, false);
        for (i, c) in text.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, ',') => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let split = ["!=", "==", "="].iter().find_map(|op| part.split_once(op).map(|(f, v)| (f, *op != "!=", v)));
            let Some((field, equal, value)) = split else {
                return Err(format!("invalid selector: '{text}'; can't understand '{part}'"));
            };
            if !matches!(field, "metadata.name" | "metadata.namespace") {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push(FieldTerm { field: field.to_owned(), equal, value: unescape(value)? });
        }
        Ok(Self(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name an `metadata.name=` term requires, if any.
    pub fn name(&self) -> Option<&str> {
        self.0.iter().find(|t| t.equal && t.field == "metadata.name").map(|t| t.value.as_str())
    }

    /// Whether an object is selected (`metadata.namespace` of a cluster-scoped object is
    /// the empty string).
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|term| {
            let field = term.field.strip_prefix("metadata.").unwrap_or_default();
            let actual = object["metadata"][field].as_str().unwrap_or_default();
            (actual == term.value) == term.equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "namespace": "kubegate", "labels": labels}})
    }

    #[test]
    fn label_selectors_select_as_kubernetes_does() -> Result<(), String> {
        let object = labelled(json!({"cluster": "dev", "tier": "3"}));
        for (selector, expected) in [
            ("", true),
            ("cluster=dev", true),
            ("cluster==dev,tier=3", true),
            ("cluster!=dev", false),
            ("missing!=x", true),
            ("cluster", true),
            ("!cluster", false),
            ("!missing", true),
            ("cluster in (dev, prod)", true),
            ("cluster notin (dev)", false),
            ("missing notin (dev)", true),
            ("tier>2", true),
            ("tier<3", false),
            ("kubegate.dev/level=oncall", false),
        ] {
            assert_eq!(LabelSelector::parse(selector)?.matches(&object), expected, "{selector}");
        }
        for bad in ["a=b=c", "=x", "a in (b", "a>x", "bad key=1"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn field_selectors_know_only_name_and_namespace() -> Result<(), String> {
        let object = labelled(json!({}));
        assert!(FieldSelector::parse("metadata.name=x")?.matches(&object));
        assert!(!FieldSelector::parse("metadata.name!=x")?.matches(&object));
        assert!(FieldSelector::parse("metadata.namespace==kubegate,metadata.name=x")?.matches(&object));
        assert_eq!(FieldSelector::parse("metadata.name=x")?.name(), Some("x"));
        assert_eq!(FieldSelector::parse("spec.cluster=dev"), Err("field label not supported: spec.cluster".into()));
        Ok(())
    }
}

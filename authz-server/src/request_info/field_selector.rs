//! The one thing RequestInfo takes from a `fieldSelector`: the object name a list or
//! watch is restricted to, read as k8s.io/apimachinery/pkg/fields does
//! (`ParseSelector`, then `RequiresExactMatch("metadata.name")`).

/// The name `metadata.name=<name>` (or `==`) pins, if the selector parses and the name
/// is a valid path segment name (`path.IsValidPathSegmentName`).
pub fn exact_name(selector: &str) -> Option<String> {
    let mut terms = split_terms(selector);
    // Go sorts the terms before building the selector, so with two `metadata.name`
    // terms the first in sorted order wins.
    terms.sort_unstable();
    let mut name = None;
    for term in terms.into_iter().filter(|t| !t.is_empty()) {
        let (field, op, raw_value) = split_term(term)?;
        let value = unescape_value(raw_value)?;
        if name.is_none() && op != "!=" && field == "metadata.name" {
            name = Some(value);
        }
    }
    name.filter(|n| is_valid_path_segment_name(n))
}

/// Splits on commas not escaped by a backslash (`splitTerms`), keeping the backslashes.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in selector.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// The first operator in the term splits it (`splitTerm`): `!=`, then `==`, then `=`
/// are tried at each position. No trimming: ` metadata.name=x` is another field.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    term.char_indices().find_map(|(i, _)| {
        let rest = &term[i..];
        ["!=", "==", "="].into_iter().find(|op| rest.starts_with(op)).map(|op| (&term[..i], op, &rest[op.len()..]))
    })
}

/// `UnescapeValue`: `\\`, `\,` and `\=` are the escapes; any other escape, a lone
/// trailing backslash, or an unescaped `,` or `=` makes the selector invalid.
fn unescape_value(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        match c {
            '\\' | ',' | '=' if escaped => {
                out.push(c);
                escaped = false;
            }
            _ if escaped => return None,
            '\\' => escaped = true,
            ',' | '=' => return None,
            _ => out.push(c),
        }
    }
    (!escaped).then_some(out)
}

/// `path.IsValidPathSegmentName`: not `.` or `..`, and no `/` or `%`.
fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains(['/', '%'])
}

#[cfg(test)]
mod tests {
    use super::exact_name;

    #[test]
    fn reads_the_name_as_apimachinery_does() {
        for (selector, name) in [
            ("metadata.name=web", Some("web")),
            ("metadata.name==web", Some("web")),
            ("metadata.name!=web", None),
            ("metadata.namespace=x,metadata.name=web", Some("web")),
            // Sorted before the first match is taken.
            ("metadata.name=b,metadata.name=a", Some("a")),
            // The case: the name is read although another term has odd bytes.
            ("metadata.name=secret-cm,metadata.namespace!=\u{ff}", Some("secret-cm")),
            (" metadata.name=web", None),
            ("metadata.name=a\\,b", Some("a,b")),
            ("metadata.name=a=b", None),
            ("metadata.name=a\\x", None),
            ("metadata.name=a\\", None),
            ("metadata.name=..", None),
            ("metadata.name=a%2Fb", None),
            ("metadata.name", None),
            ("", None),
            ("status.phase=Running,,metadata.name=web", Some("web")),
            // A broken term anywhere makes the whole selector invalid: no name.
            ("metadata.name=web,broken", None),
        ] {
            assert_eq!(exact_name(selector).as_deref(), name, "{selector:?}");
        }
    }
}

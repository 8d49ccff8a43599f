//! How kube-apiserver reads a request, ported for the stand-in so that it authorises and
//! serves what a real API server would, not what the bytes look like.
//!
//! * The path is decoded Go's way first (`net/url`'s `unescape(.., encodePath)`): every
//!   `%XX`, `%2F` included, becomes its byte; `+` stays `+`; an invalid escape makes Go's
//!   HTTP server answer `400 Bad Request` before any handler runs ([`decode_path`]).
//! * The query is `url.ParseQuery` ([`parse_query`]): pairs with `;` and pairs with an
//!   invalid escape are dropped; `+` is a space; `=x` is key `""`.
//! * RequestInfo is `RequestInfoFactory.NewRequestInfo` ([`new_request_info`]):
//!   `splitPath` keeps empty middle segments; the `/watch/` and `/proxy/` verb prefixes;
//!   namespace subresources `status` and `finalize`; list/watch decided by decoding
//!   ListOptions (`Convert_Slice_string_To_bool`, and on a decoding error the fallback with
//!   `strings.ToLower`); the name from `fieldSelector=metadata.name=...`;
//!   `deletecollection`.
//! * [`authorization_checks`]: what RBAC must allow. Until Kubernetes 1.35 a websocket
//!   (GET) exec, attach or port-forward is authorised as `get` on the subresource; from
//!   1.35 (`AuthorizePodWebsocketUpgradeCreatePermission`, on by default) it must also be
//!   allowed `create`. A POST (SPDY) is `create` in every version.
//!
//! Go strings are bytes: decoding works on bytes. What RBAC compares is then text, with
//! invalid UTF-8 replaced (no configured rule names such a namespace either way).
//!
//! One gap the stand-in cannot close: hyper drops a `#fragment` from the request target
//! before any handler sees it, where Go keeps `#` in `URL.Path` (Envoy refuses such a
//! target in front of it, and so does kubegate).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The Kubernetes version the stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

impl KubeVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// From 1.35 a websocket upgrade of exec, attach or port-forward also needs `create`.
    pub fn upgrades_need_create(self) -> bool {
        self >= KubeVersion::new(1, 35)
    }
}

impl Default for KubeVersion {
    /// What the stand-in has always reported.
    fn default() -> Self {
        KubeVersion::new(1, 33)
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl std::str::FromStr for KubeVersion {
    type Err = String;

    /// `1.33`, `v1.35`, `1.35.2`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.trim().trim_start_matches('v').split('.');
        let number = |p: Option<&str>| p.and_then(|p| p.parse::<u32>().ok());
        match (number(parts.next()), number(parts.next())) {
            (Some(major), Some(minor)) => Ok(KubeVersion { major, minor }),
            _ => Err(format!("not a Kubernetes version (major.minor): {text:?}")),
        }
    }
}

impl Serialize for KubeVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KubeVersion {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------
// Go's string handling: runes, strconv.Quote, strconv.ParseInt.

/// The rune at `bytes[at..]` as Go's `for range` sees it: `None` (RuneError) and width 1
/// for an invalid encoding.
fn go_rune(bytes: &[u8], at: usize) -> (Option<char>, usize) {
    let width = match bytes[at] {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return (None, 1),
    };
    match bytes.get(at..at + width).and_then(|b| std::str::from_utf8(b).ok()) {
        Some(s) => (s.chars().next(), width),
        None => (None, 1),
    }
}

/// Go's runes of `bytes`: (byte offset, rune or RuneError, width).
fn go_runes(bytes: &[u8]) -> impl Iterator<Item = (usize, Option<char>, usize)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let (rune, width) = go_rune(bytes, at);
        let item = (at, rune, width);
        at += width;
        Some(item)
    })
}

/// `strconv.Quote`, for error messages.
fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for (at, rune, _) in go_runes(bytes) {
        match rune {
            None => out.push_str(&format!("\\x{:02x}", bytes[at])),
            Some('"') => out.push_str("\\\""),
            Some('\\') => out.push_str("\\\\"),
            Some('\u{7}') => out.push_str("\\a"),
            Some('\u{8}') => out.push_str("\\b"),
            Some('\u{c}') => out.push_str("\\f"),
            Some('\n') => out.push_str("\\n"),
            Some('\r') => out.push_str("\\r"),
            Some('\t') => out.push_str("\\t"),
            Some('\u{b}') => out.push_str("\\v"),
            Some(c) if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            Some(c) if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            Some(c) => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `strconv.ParseInt(s, 10, 64)` succeeds.
fn go_parses_int64(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|s| s.parse::<i64>().is_ok())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------
// net/url

/// `url.EscapeError`: an invalid `%` escape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscapeError(pub Vec<u8>);

impl fmt::Display for EscapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid URL escape {}", go_quote(&self.0))
    }
}

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Go's `unescape` for a path (`plus_is_space == false`) or a query component.
fn go_unescape(s: &[u8], plus_is_space: bool) -> Result<Vec<u8>, EscapeError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let decoded = match (s.get(i + 1).copied().and_then(unhex), s.get(i + 2).copied().and_then(unhex)) {
                    (Some(hi), Some(lo)) if i + 2 < s.len() => hi << 4 | lo,
                    _ => return Err(EscapeError(s[i..(i + 3).min(s.len())].to_vec())),
                };
                out.push(decoded);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `URL.Path` from the path of a request target, as Go's HTTP server sets it: every
/// `%XX` decoded (`%2F` too), `+` kept. An error is Go's `400 Bad Request`.
pub fn decode_path(raw: &[u8]) -> Result<Vec<u8>, EscapeError> {
    go_unescape(raw, false)
}

/// `url.QueryUnescape`.
pub fn query_unescape(raw: &[u8]) -> Result<Vec<u8>, EscapeError> {
    go_unescape(raw, true)
}

/// `url.Values`: every key with its values in order; keys in byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(pub BTreeMap<Vec<u8>, Vec<Vec<u8>>>);

impl Query {
    /// Every value of `key` (`URL.Query()[key]`).
    pub fn values(&self, key: &str) -> &[Vec<u8>] {
        self.0.get(key.as_bytes()).map(Vec::as_slice).unwrap_or_default()
    }

    /// The first value, as scalar options take it (`Convert_Slice_string_To_string`).
    pub fn first(&self, key: &str) -> Option<&[u8]> {
        self.values(key).first().map(Vec::as_slice)
    }

    /// The first value as text.
    pub fn first_text(&self, key: &str) -> Option<String> {
        self.first(key).map(text)
    }

    /// A bool option as kube-apiserver converts it ([`go_bool`]).
    pub fn bool(&self, key: &str) -> bool {
        go_bool(self.values(key))
    }

    /// Every pair as text (invalid UTF-8 replaced), for the audit file.
    pub fn to_text(&self) -> Vec<(String, Vec<String>)> {
        self.0.iter().map(|(k, vs)| (text(k), vs.iter().map(|v| text(v)).collect())).collect()
    }
}

/// `url.ParseQuery`: the values, and its error (the last `;` error, else the first
/// escape error), which `URL.Query()` ignores.
pub fn parse_query(raw: &[u8]) -> (Query, Option<String>) {
    let mut values: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    let mut error: Option<String> = None;
    for pair in raw.split(|b| *b == b'&') {
        if pair.contains(&b';') {
            error = Some("invalid semicolon separator in query".into());
            continue;
        }
        if pair.is_empty() {
            continue;
        }
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        match (query_unescape(key), query_unescape(value)) {
            (Ok(key), Ok(value)) => values.entry(key).or_default().push(value),
            (Err(e), _) | (_, Err(e)) => {
                error.get_or_insert(e.to_string());
            }
        }
    }
    (Query(values), error)
}

/// `runtime.Convert_Slice_string_To_bool`: false when absent, or when the first value
/// is `0` or equals `false` under Unicode case folding (`strings.EqualFold`, so `falſe`
/// is false too); true otherwise, an empty value included.
pub fn go_bool(values: &[Vec<u8>]) -> bool {
    match values.first() {
        None => false,
        Some(first) => !(first.as_slice() == b"0" || equal_fold_ascii(first, "false")),
    }
}

/// `strings.EqualFold(s, ascii)` for a lower-case ASCII `ascii`.
fn equal_fold_ascii(s: &[u8], ascii: &str) -> bool {
    let mut want = ascii.chars();
    for (_, rune, _) in go_runes(s) {
        let (Some(rune), Some(w)) = (rune, want.next()) else {
            return false;
        };
        let folds = rune.to_ascii_lowercase() == w || (w == 's' && rune == 'ſ') || (w == 'k' && rune == 'K');
        if !folds {
            return false;
        }
    }
    want.next().is_none()
}

/// The fallback of NewRequestInfo when ListOptions do not decode: `strings.ToLower` of
/// the first `watch` value is neither `false` nor `0`.
fn watch_by_lower(values: &[Vec<u8>]) -> bool {
    match values.first() {
        None => false,
        Some(first) => !(first.as_slice() == b"0" || first.eq_ignore_ascii_case(b"false")),
    }
}

// ---------------------------------------------------------------------------------------
// fields.ParseSelector

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: Vec<u8>,
    equal: bool,
    value: Vec<u8>,
}

/// `fields.UnescapeValue`.
fn unescape_field_value(s: &[u8]) -> Result<Vec<u8>, String> {
    if !s.iter().any(|b| matches!(b, b'\\' | b',' | b'=')) {
        return Ok(s.to_vec());
    }
    let mut out = Vec::with_capacity(s.len());
    let mut in_slash = false;
    let push = |out: &mut Vec<u8>, rune: Option<char>| {
        let mut buf = [0u8; 4];
        out.extend_from_slice(rune.unwrap_or('\u{fffd}').encode_utf8(&mut buf).as_bytes());
    };
    for (_, rune, _) in go_runes(s) {
        if in_slash {
            match rune {
                Some('\\' | ',' | '=') => push(&mut out, rune),
                other => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{}",
                        other.unwrap_or('\u{fffd}')
                    ))
                }
            }
            in_slash = false;
            continue;
        }
        match rune {
            Some('\\') => in_slash = true,
            Some(c @ (',' | '=')) => {
                return Err(format!("invalid field selector: unescaped character in value: {}", c as u32))
            }
            other => push(&mut out, other),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".into());
    }
    Ok(out)
}

/// `fields.ParseSelector`: its terms (those Transform keeps), or its error.
fn parse_field_selector(selector: &[u8]) -> Result<Vec<FieldTerm>, String> {
    // splitTerms: on every `,` not escaped by a backslash.
    let mut parts: Vec<&[u8]> = Vec::new();
    if !selector.is_empty() {
        let (mut start, mut in_slash) = (0, false);
        for (at, rune, _) in go_runes(selector) {
            if in_slash {
                in_slash = false;
            } else if rune == Some('\\') {
                in_slash = true;
            } else if rune == Some(',') {
                parts.push(&selector[start..at]);
                start = at + 1;
            }
        }
        parts.push(&selector[start..]);
    }
    parts.sort();
    let mut terms = Vec::new();
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        // splitTerm: the first `!=`, `==` or `=`.
        let split = (0..part.len()).find_map(|i| {
            let rest = &part[i..];
            [(&b"!="[..], false), (&b"=="[..], true), (&b"="[..], true)]
                .into_iter()
                .find(|(op, _)| rest.starts_with(op))
                .map(|(op, equal)| (&part[..i], equal, &rest[op.len()..]))
        });
        let Some((field, equal, rhs)) = split else {
            return Err(format!("invalid selector: '{}'; can't understand '{}'", text(selector), text(part)));
        };
        let value = unescape_field_value(rhs)?;
        // Transform drops a term whose field and value are both empty.
        if !(field.is_empty() && value.is_empty()) {
            terms.push(FieldTerm { field: field.to_vec(), equal, value });
        }
    }
    Ok(terms)
}

/// `Selector.RequiresExactMatch(field)`.
fn requires_exact_match<'a>(terms: &'a [FieldTerm], field: &str) -> Option<&'a [u8]> {
    terms.iter().find(|t| t.equal && t.field == field.as_bytes()).map(|t| t.value.as_slice())
}

/// `path.IsValidPathSegmentName`.
fn is_valid_path_segment_name(name: &[u8]) -> bool {
    name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&b'%')
}

// ---------------------------------------------------------------------------------------
// labels.Parse (only whether it succeeds matters here)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn token_of(literal: &[u8]) -> Option<Tok> {
    Some(match literal {
        b")" => Tok::ClosedPar,
        b"," => Tok::Comma,
        b"!" => Tok::DoesNotExist,
        b"==" => Tok::DoubleEquals,
        b"=" => Tok::Equals,
        b">" => Tok::GreaterThan,
        b"in" => Tok::In,
        b"<" => Tok::LessThan,
        b"!=" => Tok::NotEquals,
        b"notin" => Tok::NotIn,
        b"(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_label_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// The label selector lexer, byte for byte (a NUL byte reads as the end).
fn lex_labels(s: &[u8]) -> Vec<(Tok, Vec<u8>)> {
    let mut pos = 0usize;
    let read = |pos: &mut usize| -> u8 {
        if *pos < s.len() {
            *pos += 1;
            s[*pos - 1]
        } else {
            0
        }
    };
    let mut items = Vec::new();
    loop {
        let mut ch = read(&mut pos);
        while is_label_whitespace(ch) {
            ch = read(&mut pos);
        }
        let item = if ch == 0 {
            (Tok::End, Vec::new())
        } else if is_special_symbol(ch) {
            pos -= 1;
            let (mut buffer, mut last): (Vec<u8>, Option<(Tok, Vec<u8>)>) = (Vec::new(), None);
            loop {
                let ch = read(&mut pos);
                if ch == 0 {
                    break;
                }
                if !is_special_symbol(ch) {
                    pos -= 1;
                    break;
                }
                buffer.push(ch);
                if let Some(tok) = token_of(&buffer) {
                    last = Some((tok, buffer.clone()));
                } else if last.is_some() {
                    pos -= 1;
                    break;
                }
            }
            last.unwrap_or((Tok::Error, buffer))
        } else {
            pos -= 1;
            let mut buffer = Vec::new();
            loop {
                let ch = read(&mut pos);
                if ch == 0 {
                    break;
                }
                if is_special_symbol(ch) || is_label_whitespace(ch) {
                    pos -= 1;
                    break;
                }
                buffer.push(ch);
            }
            (token_of(&buffer).unwrap_or(Tok::Identifier), buffer)
        };
        let end = item.0 == Tok::End;
        items.push(item);
        if end {
            return items;
        }
    }
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 bytes.
fn is_qualified_name_part(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && is_alnum(name[0])
        && is_alnum(name[name.len() - 1])
        && name.iter().all(|c| is_alnum(*c) || matches!(c, b'-' | b'_' | b'.'))
}

/// `validation.IsDNS1123Subdomain`.
fn is_dns1123_subdomain(name: &[u8]) -> bool {
    let lower_alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    name.len() <= 253
        && name.split(|c| *c == b'.').all(|label| {
            !label.is_empty()
                && lower_alnum(label[0])
                && lower_alnum(label[label.len() - 1])
                && label.iter().all(|c| lower_alnum(*c) || *c == b'-')
        })
}

/// `validation.IsQualifiedName`.
fn is_qualified_name(key: &[u8]) -> bool {
    let parts: Vec<&[u8]> = key.split(|c| *c == b'/').collect();
    match parts.as_slice() {
        [name] => is_qualified_name_part(name),
        [prefix, name] => !prefix.is_empty() && is_dns1123_subdomain(prefix) && is_qualified_name_part(name),
        _ => false,
    }
}

/// `validation.IsValidLabelValue`.
fn is_label_value(value: &[u8]) -> bool {
    value.is_empty() || is_qualified_name_part(value)
}

/// `labels.Parse(selector)` succeeds.
fn label_selector_parses(selector: &[u8]) -> bool {
    let items = lex_labels(selector);
    let mut position = 0usize;
    // In the Values context `in` and `notin` are identifiers.
    let as_value = |tok: Tok| if matches!(tok, Tok::In | Tok::NotIn) { Tok::Identifier } else { tok };
    let at = |position: usize| items.get(position).map(|(t, l)| (*t, l.as_slice())).unwrap_or((Tok::End, &b""[..]));
    let lookahead = |position: usize| as_value(at(position).0);
    loop {
        match lookahead(position) {
            Tok::End => return true,
            Tok::Identifier | Tok::DoesNotExist => {}
            _ => return false,
        }
        // parseRequirement: parseKeyAndInferOperator
        let (mut tok, mut key) = at(position);
        position += 1;
        tok = as_value(tok);
        let does_not_exist = tok == Tok::DoesNotExist;
        if does_not_exist {
            (tok, key) = at(position);
            position += 1;
            tok = as_value(tok);
        }
        if tok != Tok::Identifier || !is_qualified_name(key) {
            return false;
        }
        let unary = matches!(lookahead(position), Tok::End | Tok::Comma);
        if !(does_not_exist || unary) {
            // parseOperator (KeyAndOperator context: `in` and `notin` are operators)
            let (op, _) = at(position);
            position += 1;
            let values: Vec<&[u8]> = match op {
                Tok::In | Tok::NotIn => {
                    // parseValues
                    let (open, _) = at(position);
                    position += 1;
                    if as_value(open) != Tok::OpenPar {
                        return false;
                    }
                    match lookahead(position) {
                        Tok::ClosedPar => {
                            position += 1;
                            vec![&b""[..]]
                        }
                        Tok::Identifier | Tok::Comma => {
                            // parseIdentifiersList
                            let mut set: Vec<&[u8]> = Vec::new();
                            loop {
                                let (tok, literal) = at(position);
                                position += 1;
                                match as_value(tok) {
                                    Tok::Identifier => {
                                        set.push(literal);
                                        match lookahead(position) {
                                            Tok::Comma => continue,
                                            Tok::ClosedPar => break,
                                            _ => return false,
                                        }
                                    }
                                    Tok::Comma => {
                                        if set.is_empty() {
                                            set.push(b"");
                                        }
                                        match lookahead(position) {
                                            Tok::ClosedPar => {
                                                set.push(b"");
                                                break;
                                            }
                                            Tok::Comma => {
                                                position += 1;
                                                set.push(b"");
                                            }
                                            _ => {}
                                        }
                                    }
                                    _ => return false,
                                }
                            }
                            let (close, _) = at(position);
                            position += 1;
                            if as_value(close) != Tok::ClosedPar {
                                return false;
                            }
                            set
                        }
                        _ => return false,
                    }
                }
                Tok::Equals | Tok::DoubleEquals | Tok::NotEquals | Tok::GreaterThan | Tok::LessThan => {
                    // parseExactValue
                    match lookahead(position) {
                        Tok::End | Tok::Comma => vec![&b""[..]],
                        _ => {
                            let (tok, literal) = at(position);
                            position += 1;
                            if as_value(tok) != Tok::Identifier {
                                return false;
                            }
                            vec![literal]
                        }
                    }
                }
                _ => return false,
            };
            // NewRequirement
            if matches!(op, Tok::GreaterThan | Tok::LessThan) && !values.iter().all(|v| go_parses_int64(v)) {
                return false;
            }
            if !values.iter().all(|v| is_label_value(v)) {
                return false;
            }
        }
        // after a requirement: `,` then another, or the end
        let (tok, _) = at(position);
        position += 1;
        match as_value(tok) {
            Tok::End => return true,
            Tok::Comma => {
                if !matches!(lookahead(position), Tok::Identifier | Tok::DoesNotExist) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// ListOptions, as NewRequestInfo decodes them

/// What NewRequestInfo takes from `metainternalversion.ListOptions`.
struct ListOptions {
    watch: bool,
    field_selector: Option<Vec<FieldTerm>>,
}

/// `ParameterCodec.DecodeParameters(query, v1, &ListOptions{})`: url.Values to
/// v1.ListOptions (ints with `strconv.ParseInt`), then the selectors parsed.
fn decode_list_options(query: &Query) -> Result<ListOptions, ()> {
    for int_option in ["timeoutSeconds", "limit"] {
        if let Some(value) = query.first(int_option) {
            if !go_parses_int64(value) {
                return Err(());
            }
        }
    }
    if !label_selector_parses(query.first("labelSelector").unwrap_or_default()) {
        return Err(());
    }
    let field_selector = parse_field_selector(query.first("fieldSelector").unwrap_or_default()).map_err(|_| ())?;
    Ok(ListOptions { watch: query.bool("watch"), field_selector: Some(field_selector) })
}

// ---------------------------------------------------------------------------------------
// RequestInfo

/// What RBAC is asked about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestInfo {
    Resource {
        verb: String,
        group: String,
        /// `None`: cluster scope (Go's empty namespace, `/namespaces//pods` included).
        namespace: Option<String>,
        resource: String,
        /// `None` for none (Go's empty subresource).
        subresource: Option<String>,
        /// `None` for none (Go's empty name).
        name: Option<String>,
    },
    NonResource {
        verb: String,
        /// The decoded path.
        path: String,
    },
}

impl RequestInfo {
    /// The verb RBAC sees.
    pub fn verb(&self) -> &str {
        match self {
            RequestInfo::Resource { verb, .. } | RequestInfo::NonResource { verb, .. } => verb,
        }
    }
}

/// Why kube-apiserver answers before RBAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Go's HTTP server: the path has an invalid `%` escape (`400 Bad Request`, plain
    /// text, the connection closed; no handler, no audit in a real cluster).
    BadRequest(String),
    /// `WithRequestInfo`: NewRequestInfo failed (`500`): `/api/v1/watch` and the like.
    Internal(String),
}

/// `splitPath`: trim `/` at both ends, split on `/`, keep empty middle segments.
fn split_path(path: &[u8]) -> Vec<&[u8]> {
    let start = path.iter().position(|b| *b != b'/');
    let end = path.iter().rposition(|b| *b != b'/');
    match (start, end) {
        (Some(start), Some(end)) => path[start..=end].split(|b| *b == b'/').collect(),
        _ => Vec::new(),
    }
}

fn non_empty(segment: &[u8]) -> Option<String> {
    (!segment.is_empty()).then(|| text(segment))
}

/// `RequestInfoFactory.NewRequestInfo` (API prefixes `api` and `apis`, `api` groupless)
/// on the decoded `path`.
pub fn new_request_info(method: &str, path: &[u8], query: &Query) -> Result<RequestInfo, String> {
    let non_resource = || RequestInfo::NonResource { verb: method.to_lowercase(), path: text(path) };
    let mut parts = split_path(path);
    if parts.len() < 3 {
        return Ok(non_resource());
    }
    let group = match parts[0] {
        b"api" => {
            parts.remove(0);
            String::new()
        }
        b"apis" => {
            parts.remove(0);
            if parts.len() < 3 {
                return Ok(non_resource());
            }
            text(parts.remove(0))
        }
        _ => return Ok(non_resource()),
    };
    parts.remove(0); // the API version
    let mut verb: String = match parts[0] {
        special @ (b"proxy" | b"watch") => {
            if parts.len() < 2 {
                return Err(format!("unable to determine kind and namespace from url, {}", text(path)));
            }
            parts.remove(0);
            text(special)
        }
        _ => match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_owned(),
    };
    let mut namespace = None;
    if parts[0] == b"namespaces" && parts.len() > 1 {
        namespace = non_empty(parts[1]);
        if parts.len() > 2 && !matches!(parts[2], b"status" | b"finalize") {
            parts.drain(..2);
        }
    }
    let resource = text(parts[0]);
    let mut name = parts.get(1).and_then(|n| non_empty(n));
    let subresource = if verb != "proxy" { parts.get(2).and_then(|s| non_empty(s)) } else { None };

    if name.is_none() && verb == "get" {
        let watch;
        match decode_list_options(query) {
            Ok(options) => {
                watch = options.watch;
                if let Some(selected) =
                    options.field_selector.as_deref().and_then(|t| requires_exact_match(t, "metadata.name"))
                {
                    if is_valid_path_segment_name(selected) {
                        name = non_empty(selected);
                    }
                }
            }
            // "An error in parsing request will result in default to "list" and not
            // setting "name" field. However, if watch is set, let's report it."
            Err(()) => watch = watch_by_lower(query.values("watch")),
        }
        verb = if watch { "watch" } else { "list" }.to_owned();
    }
    if name.is_none() && verb == "delete" {
        verb = "deletecollection".to_owned();
    }
    Ok(RequestInfo::Resource { verb, group, namespace, resource, subresource, name })
}

/// One request as kube-apiserver reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// `URL.Path`.
    pub path: Vec<u8>,
    /// `URL.Query()`.
    pub query: Query,
    /// The error `url.ParseQuery` gave (which kube-apiserver ignores).
    pub query_error: Option<String>,
    pub info: RequestInfo,
}

/// Reads a request from its method and its raw path and query, as sent.
pub fn read(method: &str, raw_path: &[u8], raw_query: &[u8]) -> Result<ReadRequest, Refusal> {
    let path = decode_path(raw_path).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let (query, query_error) = parse_query(raw_query);
    let info = new_request_info(method, &path, &query).map_err(Refusal::Internal)?;
    Ok(ReadRequest { path, query, query_error, info })
}

/// The RequestInfo for `method` and a raw path and query (for tests and the stand-in's
/// own callers); a request Go would refuse reads as a non-resource request.
pub fn parse(method: &str, raw_path: &str, raw_query: Option<&str>) -> RequestInfo {
    match read(method, raw_path.as_bytes(), raw_query.unwrap_or_default().as_bytes()) {
        Ok(read) => read.info,
        Err(_) => RequestInfo::NonResource { verb: method.to_lowercase(), path: raw_path.to_owned() },
    }
}

/// The pod subresources that upgrade to a stream.
pub fn is_connect_subresource(resource: &str, subresource: Option<&str>) -> bool {
    resource == "pods" && matches!(subresource, Some("exec" | "attach" | "portforward"))
}

/// What RBAC must allow, in order: the RequestInfo, and from Kubernetes 1.35 for an
/// exec, attach or port-forward that is not already `create` (a websocket GET) the same
/// attributes with verb `create`.
pub fn authorization_checks(info: &RequestInfo, version: KubeVersion) -> Vec<RequestInfo> {
    let mut checks = vec![info.clone()];
    if let RequestInfo::Resource { verb, resource, subresource, .. } = info {
        if version.upgrades_need_create()
            && is_connect_subresource(resource, subresource.as_deref())
            && verb != "create"
        {
            let mut create = info.clone();
            if let RequestInfo::Resource { verb, .. } = &mut create {
                *verb = "create".into();
            }
            checks.push(create);
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::go_oracle::{GoOracle, GoRefusal};

    fn res(
        verb: &str,
        group: &str,
        ns: Option<&str>,
        resource: &str,
        sub: Option<&str>,
        name: Option<&str>,
    ) -> RequestInfo {
        RequestInfo::Resource {
            verb: verb.into(),
            group: group.into(),
            namespace: ns.map(Into::into),
            resource: resource.into(),
            subresource: sub.map(Into::into),
            name: name.map(Into::into),
        }
    }

    fn non(verb: &str, path: &str) -> RequestInfo {
        RequestInfo::NonResource { verb: verb.into(), path: path.into() }
    }

    fn target(t: &str) -> (&str, &str) {
        t.split_once('?').unwrap_or((t, ""))
    }

    /// (method, raw request target, what kube-apiserver's RequestInfo is)
    fn table() -> Vec<(&'static str, &'static str, RequestInfo)> {
        let core = |verb, ns, resource, sub, name| res(verb, "", ns, resource, sub, name);
        vec![
            // the shapes
            ("GET", "/api/v1/namespaces/default/pods", core("list", Some("default"), "pods", None, None)),
            ("GET", "/api/v1/pods", core("list", None, "pods", None, None)),
            ("GET", "/api/v1/namespaces/d/pods/web", core("get", Some("d"), "pods", None, Some("web"))),
            ("GET", "/api/v1/namespaces/d/pods/web/log", core("get", Some("d"), "pods", Some("log"), Some("web"))),
            ("HEAD", "/api/v1/namespaces/d/pods/web", core("get", Some("d"), "pods", None, Some("web"))),
            ("POST", "/api/v1/namespaces/d/pods", core("create", Some("d"), "pods", None, None)),
            ("PUT", "/api/v1/namespaces/d/pods/web", core("update", Some("d"), "pods", None, Some("web"))),
            ("PATCH", "/api/v1/namespaces/d/pods/web", core("patch", Some("d"), "pods", None, Some("web"))),
            ("DELETE", "/api/v1/namespaces/d/pods/web", core("delete", Some("d"), "pods", None, Some("web"))),
            ("DELETE", "/api/v1/namespaces/d/pods", core("deletecollection", Some("d"), "pods", None, None)),
            ("OPTIONS", "/api/v1/namespaces/d/pods", core("", Some("d"), "pods", None, None)),
            (
                "GET",
                "/apis/apps/v1/namespaces/d/deployments/x/scale",
                res("get", "apps", Some("d"), "deployments", Some("scale"), Some("x")),
            ),
            ("GET", "/api/v1/namespaces", core("list", None, "namespaces", None, None)),
            (
                "GET",
                "/api/v1/namespaces/kube-system",
                core("get", Some("kube-system"), "namespaces", None, Some("kube-system")),
            ),
            ("PUT", "/api/v1/namespaces/x/status", core("update", Some("x"), "namespaces", Some("status"), Some("x"))),
            (
                "PUT",
                "/api/v1/namespaces/x/finalize",
                core("update", Some("x"), "namespaces", Some("finalize"), Some("x")),
            ),
            // exec and friends: the RequestInfo verb follows the method
            (
                "GET",
                "/api/v1/namespaces/d/pods/web/exec?command=ls",
                core("get", Some("d"), "pods", Some("exec"), Some("web")),
            ),
            (
                "POST",
                "/api/v1/namespaces/d/pods/web/exec?command=ls",
                core("create", Some("d"), "pods", Some("exec"), Some("web")),
            ),
            (
                "GET",
                "/api/v1/namespaces/d/pods/web/portforward",
                core("get", Some("d"), "pods", Some("portforward"), Some("web")),
            ),
            // non-resource
            ("GET", "/version", non("get", "/version")),
            ("GET", "/api/v1", non("get", "/api/v1")),
            ("GET", "/apis/apps/v1", non("get", "/apis/apps/v1")),
            ("GET", "/healthz/etcd", non("get", "/healthz/etcd")),
            ("POST", "/logs/x/y", non("post", "/logs/x/y")),
            // decoding: what the API server acts on
            ("GET", "/api/v1/namespaces/kube%2Dsystem/pods", core("list", Some("kube-system"), "pods", None, None)),
            ("GET", "/api/v1/namespaces/default%2Fpods", core("list", Some("default"), "pods", None, None)),
            ("GET", "/api/v1/namespaces/d/pods/web%2Fexec", core("get", Some("d"), "pods", Some("exec"), Some("web"))),
            ("GET", "/%61pi/v1/namespaces/d/pods", core("list", Some("d"), "pods", None, None)),
            ("GET", "/api/v1/namespaces/a+b/pods", core("list", Some("a+b"), "pods", None, None)),
            ("GET", "/api/v1/namespaces/a%20b/pods", core("list", Some("a b"), "pods", None, None)),
            ("GET", "/api/v1/namespaces/d/pods/%2e%2e", core("get", Some("d"), "pods", None, Some(".."))),
            // splitPath keeps empty middle segments
            ("GET", "/api/v1/namespaces//pods", core("list", None, "pods", None, None)),
            ("GET", "//api//v1/pods", core("get", None, "v1", None, Some("pods"))),
            ("GET", "/api/v1/namespaces/d/pods/web//exec", core("get", Some("d"), "pods", None, Some("web"))),
            ("GET", "/api/v1/namespaces/d/pods/web/", core("get", Some("d"), "pods", None, Some("web"))),
            ("GET", "///api/v1/pods///", core("list", None, "pods", None, None)),
            // watch, Go's way
            ("GET", "/api/v1/pods?watch=true", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch=1", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch=", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch=yes", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch=FALSE", core("list", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch=0", core("list", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch=false&watch=true", core("list", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch=0;&watch=1", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch=%ZZ&watch=1", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch=%74rue", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/pods?wa%74ch=1", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch=+0", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch=fal%C5%BFe", core("list", None, "pods", None, None)),
            // the fallback when ListOptions do not decode: strings.ToLower, no name
            ("GET", "/api/v1/pods?watch=fal%C5%BFe&limit=x", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch=1&timeoutSeconds=", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/pods?watch=false&labelSelector=a%20in", core("list", None, "pods", None, None)),
            // a named watch is a get; watch is for collections
            ("GET", "/api/v1/namespaces/d/pods/web?watch=true", core("get", Some("d"), "pods", None, Some("web"))),
            ("POST", "/api/v1/namespaces/d/pods?watch=true", core("create", Some("d"), "pods", None, None)),
            ("DELETE", "/api/v1/namespaces/d/pods?watch=true", core("deletecollection", Some("d"), "pods", None, None)),
            // the legacy watch and proxy prefixes
            ("GET", "/api/v1/watch/pods", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/watch/namespaces/d/pods", core("watch", Some("d"), "pods", None, None)),
            ("GET", "/api/v1/watch/namespaces/d/pods/web", core("watch", Some("d"), "pods", None, Some("web"))),
            ("GET", "/apis/apps/v1/watch/deployments", res("watch", "apps", None, "deployments", None, None)),
            ("POST", "/api/v1/watch/namespaces/d/pods", core("watch", Some("d"), "pods", None, None)),
            ("GET", "/api/v1/%77atch/pods", core("watch", None, "pods", None, None)),
            ("GET", "/api/v1/proxy/namespaces/d/pods/web/x/y", core("proxy", Some("d"), "pods", None, Some("web"))),
            (
                "GET",
                "/api/v1/namespaces/d/pods/web/proxy/x",
                core("get", Some("d"), "pods", Some("proxy"), Some("web")),
            ),
            // fieldSelector metadata.name names a list or watch
            (
                "GET",
                "/api/v1/namespaces/d/pods?fieldSelector=metadata.name%3Dweb",
                core("list", Some("d"), "pods", None, Some("web")),
            ),
            (
                "GET",
                "/api/v1/namespaces/d/pods?fieldSelector=metadata.name%3D%3Dweb&watch=1",
                core("watch", Some("d"), "pods", None, Some("web")),
            ),
            ("GET", "/api/v1/pods?fieldSelector=metadata.name!%3Dweb", core("list", None, "pods", None, None)),
            (
                "GET",
                "/api/v1/pods?fieldSelector=metadata.name%3Db,metadata.name%3Da",
                core("list", None, "pods", None, Some("a")),
            ),
            ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Da%2Fb", core("list", None, "pods", None, None)),
            ("GET", "/api/v1/pods?fieldSelector=metadata.name%3D..", core("list", None, "pods", None, None)),
            (
                "GET",
                "/api/v1/pods?fieldSelector=metadata.name%3Da%5C%2Cb",
                core("list", None, "pods", None, Some("a,b")),
            ),
            ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Da%2Cb", core("list", None, "pods", None, None)),
            ("GET", "/api/v1/pods?fieldSelector=metadata.name", core("list", None, "pods", None, None)),
            (
                "GET",
                "/api/v1/pods?fieldSelector=metadata.name%3Dweb&labelSelector=app%3D%3D",
                core("list", None, "pods", None, Some("web")),
            ),
            (
                "GET",
                "/api/v1/pods?fieldSelector=metadata.name%3Dweb&labelSelector=!!",
                core("list", None, "pods", None, None),
            ),
            ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dweb&limit=ten", core("list", None, "pods", None, None)),
            (
                "GET",
                "/api/v1/pods?fieldSelector=metadata.name%3Dweb&fieldSelector=metadata.name%3Dx",
                core("list", None, "pods", None, Some("web")),
            ),
            ("GET", "/api/v1/pods/web?fieldSelector=metadata.name%3Dx", core("get", None, "pods", None, Some("web"))),
            (
                "DELETE",
                "/api/v1/pods?fieldSelector=metadata.name%3Dweb",
                core("deletecollection", None, "pods", None, None),
            ),
        ]
    }

    #[test]
    fn reads_requests_as_kube_apiserver_does() {
        let table = table();
        assert!(table.len() >= 30);
        let mut failures = Vec::new();
        for (method, t, want) in &table {
            let (path, query) = target(t);
            match read(method, path.as_bytes(), query.as_bytes()) {
                Ok(read) if read.info == *want => {}
                other => failures.push(format!("{method} {t}\n  want {want:?}\n  got  {other:?}")),
            }
        }
        assert!(failures.is_empty(), "{} of {}:\n{}", failures.len(), table.len(), failures.join("\n"));
    }

    #[test]
    fn refuses_what_kube_apiserver_refuses() {
        assert_eq!(
            read("GET", b"/api/v1/namespaces/%ZZ/pods", b""),
            Err(Refusal::BadRequest("invalid URL escape \"%ZZ\"".into()))
        );
        assert_eq!(read("GET", b"/api/v1/pods%2", b""), Err(Refusal::BadRequest("invalid URL escape \"%2\"".into())));
        assert!(matches!(read("GET", b"/api/v1/watch", b""), Err(Refusal::Internal(_))));
        assert!(matches!(read("GET", b"/api/v1/w%61tch", b""), Err(Refusal::Internal(_))));
        // a bad escape in the query only drops the pair
        assert!(read("GET", b"/api/v1/pods", b"a=%ZZ").is_ok());
    }

    #[test]
    fn websocket_upgrades_need_create_from_1_35() {
        let exec = parse("GET", "/api/v1/namespaces/d/pods/web/exec", Some("command=ls"));
        let verbs =
            |v: KubeVersion| authorization_checks(&exec, v).iter().map(|c| c.verb().to_owned()).collect::<Vec<_>>();
        assert_eq!(verbs(KubeVersion::new(1, 33)), ["get"]);
        assert_eq!(verbs(KubeVersion::new(1, 34)), ["get"]);
        assert_eq!(verbs(KubeVersion::new(1, 35)), ["get", "create"]);
        assert_eq!(verbs(KubeVersion::new(1, 36)), ["get", "create"]);
        let spdy = parse("POST", "/api/v1/namespaces/d/pods/web/attach", None);
        assert_eq!(authorization_checks(&spdy, KubeVersion::new(1, 35)).len(), 1);
        let log = parse("GET", "/api/v1/namespaces/d/pods/web/log", None);
        assert_eq!(authorization_checks(&log, KubeVersion::new(1, 35)).len(), 1);
        assert_eq!("v1.35.2".parse(), Ok(KubeVersion::new(1, 35)));
        assert_eq!(KubeVersion::default().to_string(), "1.33");
    }

    #[test]
    fn go_bool_conversion() {
        let b = |v: &[&str]| go_bool(&v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>());
        assert!(!b(&[]));
        assert!(b(&[""]));
        assert!(b(&["true"]) && b(&["1"]) && b(&["no"]) && b(&["off"]) && b(&[" 0"]));
        assert!(!b(&["0"]) && !b(&["false"]) && !b(&["False"]) && !b(&["FALSE"]) && !b(&["falſe"]));
        assert!(!b(&["0", "1"]) && b(&["1", "0"]));
    }

    #[test]
    fn label_selectors_parse_as_labels_parse_does() {
        for ok in [
            "",
            "a",
            "!a",
            "a=b",
            "a==b",
            "a!=b",
            "a in (b,c)",
            "a notin ()",
            "a in (,)",
            "a>5",
            "x/y-z.w=v",
            " a = b , c ",
            "a=",
            "\0garbage",
        ] {
            assert!(label_selector_parses(ok.as_bytes()), "{ok:?}");
        }
        for bad in ["!!", "a in", "a>b", "a b", "=b", "a=b,", "-a", "a=b=c", "a in (b", "A/b", "a=%"] {
            assert!(!label_selector_parses(bad.as_bytes()), "{bad:?}");
        }
    }

    /// The decoding half of the table, checked against Go itself.
    #[test]
    fn path_and_query_decoding_agree_with_go() {
        let oracle = GoOracle::start();
        let mut targets: Vec<Vec<u8>> = table().iter().map(|(_, t, _)| t.as_bytes().to_vec()).collect();
        targets.extend(
            [
                &b"/a%00b?x=%00"[..],
                b"/a\xff%FE/%C5%BF?k%FF=v%FE&\xff=1",
                b"/p?=x&a&a=&b=1=2&%41=%42&c=+%2B+",
                b"/p?a=1;b=2&c=3&d=%G1&e=%4&f=%41",
                b"/p?&&a=1&&",
                b"/p?a=%e2%82%ac",
                b"/%2F%2f/x",
                b"/p+q%2Bq?p+q=p+q",
                b"/p?",
            ]
            .map(<[u8]>::to_vec),
        );
        for target in &targets {
            let at = target.iter().position(|b| *b == b'?');
            let (raw_path, raw_query) = match at {
                Some(at) => (&target[..at], &target[at + 1..]),
                None => (&target[..], &b""[..]),
            };
            let go = oracle.ask(target).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(target)));
            assert_eq!(
                decode_path(raw_path).ok(),
                Some(go.path.clone()),
                "path of {}",
                String::from_utf8_lossy(target)
            );
            let (query, error) = parse_query(raw_query);
            let ours: Vec<(Vec<u8>, Vec<Vec<u8>>)> = query.0.into_iter().collect();
            assert_eq!(ours, go.query, "query of {}", String::from_utf8_lossy(target));
            assert_eq!(error.unwrap_or_default(), go.query_error, "query error of {}", String::from_utf8_lossy(target));
        }
        for bad in [&b"/api/v1/namespaces/%ZZ/pods"[..], b"/a%", b"/a%4", b"/a%4G", b"/%%41"] {
            assert!(decode_path(bad).is_err(), "{}", String::from_utf8_lossy(bad));
            assert!(
                matches!(oracle.ask(bad), Err(GoRefusal::Rejected { status: 400, .. })),
                "Go accepted {}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

//! A request target (`:path`, query included) read exactly as Go's `net/url` reads it
//! for kube-apiserver, and written back in a canonical form that Go reads identically.
//!
//! kube-apiserver acts on Go's *decoded* `URL.Path` (every `%XX`, `%2F` included,
//! decoded before the path is split on `/`) and on `URL.Query()` (`url.ParseQuery`:
//! pairs containing `;` or an invalid escape are dropped, `+` is a space). kubegate
//! decides on the same reading, and the filter forwards [`RequestTarget::canonical`],
//! so whatever the client sent, the API server executes the request policy saw.
//!
//! What no legitimate client sends is refused rather than guessed at: invalid escapes,
//! control characters, empty or dot segments, a `#`, bytes that do not decode to UTF-8.

/// Go's `url.ParseQuery` stops at 10,000 parameters in current releases; kubegate
/// refuses long before, so both sides always read every pair.
pub const MAX_QUERY_PAIRS: usize = 1000;

/// Why a request target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the request path must start with '/'")]
    NotAbsolute,
    #[error("the request path has an invalid percent-escape near {0:?}")]
    InvalidEscape(String),
    #[error("the request path or query does not decode to UTF-8")]
    NotUtf8,
    #[error("the request contains a control character")]
    ControlCharacter,
    #[error("the request path contains an empty segment ('//')")]
    EmptySegment,
    #[error("the request path contains a '.' or '..' segment")]
    DotSegment,
    #[error("the request contains a '#'")]
    Fragment,
    #[error("the request query has more than {MAX_QUERY_PAIRS} parameters")]
    TooManyParameters,
}

/// A request target as kube-apiserver reads it. Two targets are equal when Go reads
/// them alike (same decoded path and query), however their raw segments were encoded.
#[derive(Debug, Clone)]
pub struct RequestTarget {
    /// The path's segments between raw `/`s, each decoded. A segment contains `/` only
    /// where the client encoded one (`%2F`); Go splits there, which is why
    /// [`super::KubeRequest::read`] refuses that wherever the segment means something.
    pub segments: Vec<String>,
    /// Go's `URL.Path`: the whole path, decoded.
    pub path: String,
    /// Go's `URL.Query()`, in the order the pairs came.
    pub query: Query,
}

impl PartialEq for RequestTarget {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.query == other.query
    }
}

impl Eq for RequestTarget {}

impl RequestTarget {
    /// Reads `raw` (a path, optionally `?query`).
    pub fn parse(raw: &str) -> Result<Self, TargetError> {
        if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(TargetError::ControlCharacter);
        }
        if raw.contains('#') {
            return Err(TargetError::Fragment);
        }
        let (raw_path, raw_query) = raw.split_once('?').unwrap_or((raw, ""));
        let Some(rest) = raw_path.strip_prefix('/') else { return Err(TargetError::NotAbsolute) };
        let (path, segments) = decode_path(raw_path, rest)?;
        if path.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(TargetError::ControlCharacter);
        }
        // Also after Go's split: `a%2F..%2Fb` in a proxy's tail is `a/../b` upstream,
        // and `a%2F/b` is `a//b`, which the canonical form would carry as an empty
        // segment (found by the fuzzer: the canonical form must read back the same).
        if path.split('/').any(|s| s == "." || s == "..") {
            return Err(TargetError::DotSegment);
        }
        if path.contains("//") {
            return Err(TargetError::EmptySegment);
        }
        Ok(Self { segments, path, query: Query::parse(raw_query)? })
    }

    /// The path, then `?` and the query if it has any pairs, encoded so that Go decodes
    /// exactly [`Self::path`] and [`Self::query`] from it.
    pub fn canonical(&self) -> String {
        let mut out = path_escape(&self.path);
        if !self.query.is_empty() {
            out.push('?');
            out.push_str(&self.query.canonical());
        }
        out
    }
}

/// Go's `url.PathUnescape` of the whole path, and in the same pass its raw segments
/// (between raw `/`s, after the leading one and a single trailing one) decoded. Empty and
/// dot segments are left to the caller's checks on the decoded path, which also see the
/// ones a `%2F` makes.
fn decode_path(raw_path: &str, rest: &str) -> Result<(String, Vec<String>), TargetError> {
    let body = rest.strip_suffix('/').unwrap_or(rest);
    let mut bytes = Vec::with_capacity(raw_path.len());
    bytes.push(b'/');
    let mut bounds = Vec::new();
    // Byte offset in `raw_path` of the segment being decoded, for the refusal message.
    let mut offset = 1;
    for (i, raw) in body.split('/').enumerate().filter(|_| !body.is_empty()) {
        if i > 0 {
            bytes.push(b'/');
        }
        let start = bytes.len();
        let decoded = unescape(raw, false).map_err(|at| {
            TargetError::InvalidEscape(raw_path.get(offset + at..).unwrap_or_default().chars().take(3).collect())
        })?;
        bytes.extend(decoded);
        bounds.push((start, bytes.len()));
        offset += raw.len() + 1;
    }
    if body.len() < rest.len() {
        bytes.push(b'/');
    }
    let path = utf8(bytes)?;
    // Each bound sits at a `/` or an end of a UTF-8 string: a character boundary.
    let segments = bounds.iter().map(|&(from, to)| path.get(from..to).unwrap_or_default().to_owned()).collect();
    Ok((path, segments))
}

/// A query: the pairs Go's `url.ParseQuery` keeps, decoded, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Reads a raw query the way Go's `url.ParseQuery` does: pairs split on `&`; a pair
    /// containing `;` or an invalid escape is dropped; an empty pair is skipped; the key
    /// is what precedes the first `=` (so `=x` has key `""`).
    pub fn parse(raw: &str) -> Result<Self, TargetError> {
        let mut pairs = Vec::new();
        for pair in raw.split('&') {
            if pair.is_empty() || pair.contains(';') {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(key), Some(value)) = (query_unescape(key), query_unescape(value)) else { continue };
            pairs.push((utf8(key)?, utf8(value)?));
            if pairs.len() > MAX_QUERY_PAIRS {
                return Err(TargetError::TooManyParameters);
            }
        }
        Ok(Self(pairs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> impl Iterator<Item = &(String, String)> {
        self.0.iter()
    }

    /// The first value of `key`, as kube-apiserver's scalar options take it.
    pub fn first<'a>(&'a self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// kube-apiserver's bool conversion (`Convert_Slice_string_To_bool`): the first
    /// value; false only when absent or `0` / `false` in any case, so `?watch`,
    /// `?watch=` and `?watch=yes` are all true.
    pub fn flag(&self, key: &str) -> bool {
        self.first(key).is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
    }

    /// The pairs re-encoded with Go's `url.QueryEscape`, in their order.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            query_escape_into(&mut out, key);
            out.push('=');
            query_escape_into(&mut out, value);
        }
        out
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String, TargetError> {
    String::from_utf8(bytes).map_err(|_| TargetError::NotUtf8)
}

/// Go's `url.QueryUnescape`: also `+` as a space; `None` for an invalid escape.
fn query_unescape(raw: &str) -> Option<Vec<u8>> {
    unescape(raw, true).ok()
}

/// Decodes `%XX` escapes (and `+` when `plus_is_space`); `Err` holds the byte offset of
/// the first invalid escape, which is always a `%` and so a character boundary.
fn unescape(raw: &str, plus_is_space: bool) -> Result<Vec<u8>, usize> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value).ok_or(i)?;
                let lo = bytes.get(i + 2).copied().and_then(hex_value).ok_or(i)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escaped(out: &mut String, b: u8) {
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0xf)] as char);
}

/// Go's `url.PathEscape` for a whole path (`shouldEscape` in `encodePath` mode): `/`
/// and the sub-delimiters Go leaves alone are kept, everything else escaped.
fn path_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&b) {
            out.push(b as char);
        } else {
            push_escaped(&mut out, b);
        }
    }
    out
}

/// Go's `url.QueryEscape`: unreserved characters kept, a space as `+`, the rest escaped.
fn query_escape_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            push_escaped(out, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(raw: &str) -> RequestTarget {
        RequestTarget::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn decodes_the_path_before_splitting_like_go() {
        let t = target("/api/v1/namespaces/kube%2Dsystem/configm%61ps");
        assert_eq!(t.path, "/api/v1/namespaces/kube-system/configmaps");
        assert_eq!(t.segments, ["api", "v1", "namespaces", "kube-system", "configmaps"]);
        assert_eq!(t.canonical(), "/api/v1/namespaces/kube-system/configmaps");
        // `+` is a plus in a path, and an encoded slash stays inside its raw segment.
        let t = target("/api/v1/namespaces/a+b/x%2Fy");
        assert_eq!(t.segments, ["api", "v1", "namespaces", "a+b", "x/y"]);
        assert_eq!(t.path, "/api/v1/namespaces/a+b/x/y");
    }

    #[test]
    fn refuses_what_no_client_sends() {
        for (raw, expected) in [
            ("/api/v1/%ZZ", TargetError::InvalidEscape("%ZZ".into())),
            ("/api/v1/a%2", TargetError::InvalidEscape("%2".into())),
            ("/api/v1/%00", TargetError::ControlCharacter),
            ("/api/v1/a\tb", TargetError::ControlCharacter),
            ("/api/v1/%FF", TargetError::NotUtf8),
            ("/api//v1/pods", TargetError::EmptySegment),
            ("//api/v1/pods", TargetError::EmptySegment),
            ("/api/v1/pods//", TargetError::EmptySegment),
            ("/api/v1/namespaces/%2E%2E/pods", TargetError::DotSegment),
            ("/api/v1/./pods", TargetError::DotSegment),
            ("/api/v1/namespaces/d/pods/w/proxy/a%2F..%2Fb", TargetError::DotSegment),
            ("/api/v1/namespaces/d/pods/w/proxy/p(%2F/y", TargetError::EmptySegment),
            ("/api/v1/namespaces/d/pods/w/proxy/%2F%2Fx", TargetError::EmptySegment),
            ("/api/v1/pods#x", TargetError::Fragment),
            ("api/v1/pods", TargetError::NotAbsolute),
            ("/api/v1/pods?labelSelector=%FF", TargetError::NotUtf8),
        ] {
            assert_eq!(RequestTarget::parse(raw), Err(expected), "{raw}");
        }
    }

    #[test]
    fn reads_the_query_like_go_parse_query() {
        let t = target("/x?watch=0;&watch=1&a=%ZZ&a=b&c=d+e%20f&&=v&flag");
        let pairs: Vec<(&str, &str)> = t.query.0.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(pairs, [("watch", "1"), ("a", "b"), ("c", "d e f"), ("", "v"), ("flag", "")]);
        assert_eq!(t.canonical(), "/x?watch=1&a=b&c=d+e+f&=v&flag=");
    }

    #[test]
    fn bool_options_are_true_for_anything_but_0_and_false() {
        for (query, on) in [
            ("watch=true", true),
            ("watch=1", true),
            ("watch=yes", true),
            ("watch=on", true),
            ("watch", true),
            ("watch=", true),
            ("watch=0", false),
            ("watch=FaLsE", false),
            ("watch=false&watch=true", false),
            ("", false),
        ] {
            assert_eq!(target(&format!("/x?{query}")).query.flag("watch"), on, "{query}");
        }
    }

    #[test]
    fn canonical_forms_escape_what_go_would() {
        let t = target("/api/v1/namespaces/d/services/s%3Ahttp/proxy/a%20b%3Fc/%C3%A9?q=a%26b%3Dc&x=%2F");
        assert_eq!(t.path, "/api/v1/namespaces/d/services/s:http/proxy/a b?c/é");
        assert_eq!(t.canonical(), "/api/v1/namespaces/d/services/s:http/proxy/a%20b%3Fc/%C3%A9?q=a%26b%3Dc&x=%2F");
        // A canonical target reads back to itself.
        assert_eq!(target(&t.canonical()), t);
    }

    #[test]
    fn refuses_more_parameters_than_go_reads() {
        let many = vec!["a=1"; MAX_QUERY_PAIRS + 1].join("&");
        assert_eq!(RequestTarget::parse(&format!("/x?{many}")), Err(TargetError::TooManyParameters));
    }
}

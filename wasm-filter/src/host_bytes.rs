//! The host's header bytes, read and judged without any chance of a panic.
//!
//! Envoy hands the filter header names and values as bytes. HTTP/1.1 allows obs-text
//! (bytes 0x80-0xFF) in values, so a client can send bytes that are not UTF-8 without
//! any credential. proxy-wasm 0.2's `get_http_request_headers` (and the single-header
//! getter) convert values to `String` with `unwrap`, and even its `_bytes` variant
//! unwraps the conversion of header *names*: one such request panics the filter, the
//! VM fails, and a fail-closed gateway refuses everything after it. So the shell reads
//! the raw "pairs" buffer itself and this module decodes and judges it.
//!
//! # The rule for bytes that are not UTF-8
//!
//! The rules in [`crate::headers`] work on `String`s. The values they act on are those
//! of *reserved* headers (see [`must_be_exact`]) and pseudo-headers (`:path`); any other
//! header they at most remove by name (`authorization`) or replace by a value of their
//! own (`connection: upgrade`), never writing back a value they read. So:
//!
//! * a header that is neither reserved nor a pseudo-header is handed to the rules
//!   converted lossily (`U+FFFD` for each bad sequence). The filter never writes that
//!   conversion back, so Envoy forwards the client's bytes unchanged;
//! * a reserved header or a pseudo-header whose name or value is not valid UTF-8 makes
//!   [`lines_for_rules`] refuse the whole request ([`Unreadable`], a Kubernetes `Status`
//!   400). Removing it by a lossily converted name would not match the real bytes, and a
//!   lossy `:path` would make authz-server decide about a different path than the one
//!   the API server executes. Nothing legitimate sends such bytes in these headers.
//!
//! Lossy conversion keeps every valid byte sequence, so an ASCII prefix such as
//! `impersonate-` survives it: a name is reserved after conversion exactly when its raw
//! bytes are.

use crate::headers::is_reserved;

/// One header line as the host holds it: name and value bytes.
pub type RawLine = (Vec<u8>, Vec<u8>);

/// Prefixes refused unless exact even if [`is_reserved`] stopped covering them: the API
/// server's request-header authentication names (`X-Remote-User`, `-Group`, `-Extra-*`),
/// which it trusts from a front proxy's client certificate.
const EXTRA_EXACT_PREFIXES: &[&[u8]] = &[b"x-remote-"];

/// The longest header name a refusal message quotes (in characters).
const QUOTED_NAME_CHARS: usize = 64;

/// Why a request's headers cannot be handed to the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The offending header's name, lossily converted and shortened, for the message.
    pub name: String,
    /// Whether the name itself (rather than only the value) is not UTF-8.
    pub in_name: bool,
}

impl Unreadable {
    /// What the user is told (inside a Kubernetes `Status`, HTTP 400).
    pub fn message(&self) -> String {
        let part = if self.in_name { "name" } else { "value" };
        format!(
            "header {:?} has a {part} that is not valid UTF-8; kubegate accepts impersonation, \
             kubegate and pseudo-headers only as UTF-8",
            self.name
        )
    }
}

/// True for a header the filter must see byte-exactly or refuse: a pseudo-header, any
/// name [`is_reserved`] matches, or `x-remote-*`; ASCII case-insensitive, on raw bytes.
pub fn must_be_exact(name: &[u8]) -> bool {
    name.first() == Some(&b':')
        || is_reserved(&String::from_utf8_lossy(name))
        || EXTRA_EXACT_PREFIXES.iter().any(|prefix| starts_with_ignore_ascii_case(name, prefix))
}

fn starts_with_ignore_ascii_case(name: &[u8], prefix: &[u8]) -> bool {
    name.get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

/// The header lines as the rules see them, or why the request must be refused (see the
/// module documentation for the rule).
pub fn lines_for_rules(raw: &[RawLine]) -> Result<Vec<(String, String)>, Unreadable> {
    let mut lines = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let exact = must_be_exact(name);
        let name_text = match std::str::from_utf8(name) {
            Ok(text) => text.to_owned(),
            Err(_) if exact => return Err(unreadable(name, true)),
            Err(_) => String::from_utf8_lossy(name).into_owned(),
        };
        let value_text = match std::str::from_utf8(value) {
            Ok(text) => text.to_owned(),
            Err(_) if exact => return Err(unreadable(name, false)),
            Err(_) => String::from_utf8_lossy(value).into_owned(),
        };
        lines.push((name_text, value_text));
    }
    Ok(lines)
}

fn unreadable(name: &[u8], in_name: bool) -> Unreadable {
    Unreadable { name: String::from_utf8_lossy(name).chars().take(QUOTED_NAME_CHARS).collect(), in_name }
}

/// Decodes the proxy-wasm "pairs" encoding: a little-endian `u32` count, then a `u32`
/// name length and value length per pair, then each name and value followed by a NUL.
/// `None` when the buffer does not hold what its lengths claim; never panics.
pub fn decode_pairs(bytes: &[u8]) -> Option<Vec<RawLine>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = read_u32(bytes, 0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    // Every pair takes at least its 8 length bytes: a count beyond that is a lie, and
    // must not size an allocation.
    if data > bytes.len() {
        return None;
    }
    let mut lines = Vec::with_capacity(count);
    for index in 0..count {
        let sizes = index.checked_mul(8)?.checked_add(4)?;
        let name_len = read_u32(bytes, sizes)?;
        let value_len = read_u32(bytes, sizes.checked_add(4)?)?;
        let name = take_terminated(bytes, &mut data, name_len)?;
        let value = take_terminated(bytes, &mut data, value_len)?;
        lines.push((name.to_vec(), value.to_vec()));
    }
    Some(lines)
}

/// Encodes lines in the "pairs" encoding (for local-response headers, and tests).
pub fn encode_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(lines: &[(N, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&len_u32(lines.len()).to_le_bytes());
    for (name, value) in lines {
        out.extend_from_slice(&len_u32(name.as_ref().len()).to_le_bytes());
        out.extend_from_slice(&len_u32(value.as_ref().len()).to_le_bytes());
    }
    for (name, value) in lines {
        out.extend_from_slice(name.as_ref());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

/// `len` bytes at `*at`, then skips them and the NUL that must follow.
fn take_terminated<'a>(bytes: &'a [u8], at: &mut usize, len: usize) -> Option<&'a [u8]> {
    let end = at.checked_add(len)?;
    let taken = bytes.get(*at..end)?;
    if bytes.get(end) != Some(&0) {
        return None;
    }
    *at = end.checked_add(1)?;
    Some(taken)
}

/// The property path encoding of `proxy_get_property`: the parts joined by NUL.
pub fn encode_property_path(parts: &[&str]) -> Vec<u8> {
    parts.iter().map(|part| part.as_bytes()).collect::<Vec<_>>().join(&0u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&[u8], &[u8])]) -> Vec<RawLine> {
        pairs.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
    }

    /// Attack: obs-text (`X-A: \xff`) in an ordinary header, no token needed. The rules
    /// get it lossily; nothing panics.
    #[test]
    fn a_non_utf8_value_in_an_ordinary_header_is_read_lossily() {
        let lines = lines_for_rules(&raw(&[(b"x-a", b"\xff"), (b"accept", b"*/*")]));
        assert_eq!(lines, Ok(vec![("x-a".into(), "\u{fffd}".into()), ("accept".into(), "*/*".into())]));
        let lines = lines_for_rules(&raw(&[(b"x-\xc3", b"ok")]));
        assert_eq!(lines, Ok(vec![("x-\u{fffd}".into(), "ok".into())]));
    }

    /// Attack: `Impersonate-User: \xff` (or a bad name under a reserved prefix), which
    /// could not be removed by a lossily converted name.
    #[test]
    fn a_reserved_or_pseudo_header_that_is_not_utf8_refuses_the_request() {
        for (name, value, in_name) in [
            (&b"Impersonate-User"[..], &b"\xff"[..], false),
            (b"impersonate-extra-\xff", b"x", true),
            (b"X-KUBEGATE-CLIENT-IMPERSONATION", b"{\xfe}", false),
            (b"x-remote-user", b"admin\x80", false),
            (b":path", b"/api/\xff", false),
        ] {
            let refusal = lines_for_rules(&raw(&[(b"accept", b"*/*"), (name, value)])).err();
            assert_eq!(refusal.as_ref().map(|r| r.in_name), Some(in_name), "{name:?}");
            let message = refusal.map(|r| r.message()).unwrap_or_default();
            assert!(message.contains("not valid UTF-8"), "{message}");
        }
    }

    #[test]
    fn exactness_follows_the_reserved_rules_on_raw_bytes() {
        for name in [&b":authority"[..], b"impersonate-group", b"IMPERSONATE-\xff", b"x-kubegate-x", b"X-Remote-Group"]
        {
            assert!(must_be_exact(name), "{name:?}");
        }
        for name in [&b"impersonate"[..], b"x-impersonate-user", b"\xffimpersonate-user", b"x-remote", b""] {
            assert!(!must_be_exact(name), "{name:?}");
        }
    }

    #[test]
    fn pairs_round_trip_and_refuse_lies() {
        let lines = raw(&[(b":path", b"/api"), (b"x-a", b"\xff\x00"), (b"", b"")]);
        let encoded = encode_pairs(&lines);
        assert_eq!(decode_pairs(&encoded), Some(lines));
        assert_eq!(decode_pairs(&[]), Some(Vec::new()));
        for cut in 1..encoded.len() {
            assert_eq!(decode_pairs(encoded.get(..cut).unwrap_or_default()), None, "cut at {cut}");
        }
        assert_eq!(decode_pairs(&u32::MAX.to_le_bytes()), None);
        let mut no_nul = encoded.clone();
        if let Some(last) = no_nul.last_mut() {
            *last = b'x';
        }
        assert_eq!(decode_pairs(&no_nul), None);
    }

    #[test]
    fn property_paths_are_nul_joined() {
        assert_eq!(encode_property_path(&["metadata", "filter_metadata"]), b"metadata\0filter_metadata");
        assert_eq!(encode_property_path(&[]), b"");
    }
}

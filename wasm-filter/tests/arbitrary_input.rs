//! Arbitrary header bytes, as a client (and Envoy) could hand them to the filter, through
//! the byte conversion of `host_bytes` and both stages of `headers`: nothing panics, a
//! reserved or pseudo-header that is not UTF-8 refuses the request, and otherwise no
//! reserved header survives but the ones kubegate itself injects.
//!
//! A small deterministic PRNG drives it (no new dependencies); a failing case prints its
//! seed and case number.

use kubegate_decision::{encode_extra_key, Decision, Impersonation, CLIENT_IMPERSONATION_HEADER, REQUEST_ID_EXTRA};
use kubegate_wasm_filter::headers::{inject_stage, is_reserved, strip_stage, HeaderMap};
use kubegate_wasm_filter::host_bytes::{decode_pairs, encode_pairs, lines_for_rules, must_be_exact, RawLine};
use std::collections::BTreeMap;

const SEED: u64 = 0x6b75_6265_6761_7465;
const CASES: usize = 20_000;

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next() % u64::try_from(n).unwrap_or(u64::MAX)).unwrap_or(0)
    }

    fn percent(&mut self, chance: usize) -> bool {
        self.below(100) < chance
    }

    fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
        let index = self.below(items.len());
        items.get(index).copied().unwrap_or_default()
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next().to_le_bytes().first().copied().unwrap_or(0)).collect()
    }

    /// Flips the case of some ASCII letters.
    fn recase(&mut self, name: &[u8]) -> Vec<u8> {
        name.iter().map(|b| if self.percent(30) { b.to_ascii_uppercase() } else { *b }).collect()
    }
}

const RESERVED: &[&[u8]] = &[
    b"impersonate-user",
    b"impersonate-group",
    b"impersonate-uid",
    b"impersonate-extra-scopes",
    b"impersonate-extra-kubegate.dev%2frequest-id",
    b"impersonate-future",
    b"x-kubegate-client-impersonation",
    b"x-kubegate-anything",
    b"x-remote-user",
    b"x-remote-group",
    b"x-remote-extra-scopes",
];
const ORDINARY: &[&[u8]] =
    &[b"accept", b"x-a", b"authorization", b"connection", b"user-agent", b"impersonate", b"x-kube"];
const PSEUDO: &[&[u8]] = &[b":path", b":method", b":authority", b":scheme"];
const VALUES: &[&[u8]] = &[
    b"",
    b"system:masters",
    b"alice@example.com",
    b"caf\xc3\xa9",
    b"\xf0\x9f\x8d\x95",
    b"\xff",
    b"caf\xe9",
    b"\xc3(",
    b"upgrade",
    b"close, impersonate-user",
    b"{\"users\":[\"x\"]}",
    b"/api/v1/namespaces/default/pods",
];

fn name(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0 | 1 => {
            let name = rng.pick(RESERVED);
            rng.recase(name)
        }
        2 => {
            let name = rng.pick(ORDINARY);
            rng.recase(name)
        }
        3 => rng.pick(PSEUDO).to_vec(),
        4 => {
            // A reserved prefix with arbitrary bytes after it.
            let prefixes: &[&[u8]] = &[b"impersonate-", b"x-kubegate-", b"x-remote-", b"impersonate-extra-"];
            let prefix = rng.pick(prefixes);
            let mut name = rng.recase(prefix);
            name.extend(rng.bytes(6));
            name
        }
        _ => rng.bytes(12),
    }
}

fn value(rng: &mut Rng) -> Vec<u8> {
    if rng.percent(50) {
        rng.pick(VALUES).to_vec()
    } else {
        rng.bytes(16)
    }
}

fn header_map(rng: &mut Rng) -> Vec<RawLine> {
    let count = rng.below(12);
    (0..count).map(|_| (name(rng), value(rng))).collect()
}

/// Envoy's request header map as the filter's host calls change it: names matched
/// ASCII case-insensitively, bytes kept exactly. It reads through `lines_for_rules`
/// exactly as the shell does, and remembers a read the shell would have refused.
struct HostModel {
    lines: Vec<RawLine>,
    refused_read: std::cell::Cell<bool>,
}

impl HeaderMap for HostModel {
    fn lines(&self) -> Vec<(String, String)> {
        lines_for_rules(&self.lines).unwrap_or_else(|_| {
            self.refused_read.set(true);
            Vec::new()
        })
    }
    fn remove_all(&mut self, name: &str) {
        self.lines.retain(|(n, _)| !n.eq_ignore_ascii_case(name.as_bytes()));
    }
    fn add(&mut self, name: &str, value: &str) {
        self.lines.push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
    }
    fn set(&mut self, name: &str, value: &str) {
        self.remove_all(name);
        self.add(name, value);
    }
}

fn is_reserved_raw(name: &[u8]) -> bool {
    is_reserved(&String::from_utf8_lossy(name))
}

fn decision() -> Decision {
    Decision::impersonating(
        "default",
        "/api/v1/namespaces/default/pods",
        Impersonation {
            user: "alice@example.com".into(),
            groups: vec!["engineering".into(), "system:authenticated".into()],
            uid: Some("u-1".into()),
            extra: BTreeMap::from([(REQUEST_ID_EXTRA.to_string(), vec!["req-1".to_string()])]),
        },
    )
}

/// The reserved lines the inject stage must leave: exactly the decision's identity
/// (names lower-cased, as [`lowered_reserved`] compares them).
fn injected(decision: &Decision) -> Vec<(Vec<u8>, Vec<u8>)> {
    // The route to the decided cluster, whatever the client sent under that name.
    let mut lines =
        vec![(kubegate_decision::CLUSTER_HEADER.as_bytes().to_vec(), decision.cluster.clone().into_bytes())];
    if let Some(identity) = &decision.impersonate {
        lines.push((b"impersonate-user".to_vec(), identity.user.clone().into_bytes()));
        for group in &identity.groups {
            lines.push((b"impersonate-group".to_vec(), group.clone().into_bytes()));
        }
        if let Some(uid) = &identity.uid {
            lines.push((b"impersonate-uid".to_vec(), uid.clone().into_bytes()));
        }
        for (key, values) in &identity.extra {
            for value in values {
                let name = format!("impersonate-extra-{}", encode_extra_key(key));
                lines.push((name.to_ascii_lowercase().into_bytes(), value.clone().into_bytes()));
            }
        }
    }
    lines.sort();
    lines
}

fn lowered_reserved(lines: &[RawLine]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut reserved: Vec<_> =
        lines.iter().filter(|(n, _)| is_reserved_raw(n)).map(|(n, v)| (n.to_ascii_lowercase(), v.clone())).collect();
    reserved.sort();
    reserved
}

/// The lines neither stage may touch: not reserved, and not one the inject stage owns.
fn untouchable(lines: &[RawLine]) -> Vec<RawLine> {
    const OWNED: &[&[u8]] = &[b"authorization", b"connection", b":path"];
    lines
        .iter()
        .filter(|(n, _)| !is_reserved_raw(n) && !OWNED.iter().any(|owned| n.eq_ignore_ascii_case(owned)))
        .cloned()
        .collect()
}

#[test]
fn arbitrary_header_bytes_never_panic_and_no_reserved_header_survives() {
    let mut rng = Rng(SEED);
    let decision = decision();
    let (mut refused, mut stripped) = (0usize, 0usize);
    for case in 0..CASES {
        let raw = header_map(&mut rng);
        let what = format!("seed {SEED:#x}, case {case}: {raw:?}");

        // The host's encoding round-trips; a corrupted one never panics.
        let encoded = encode_pairs(&raw);
        assert_eq!(decode_pairs(&encoded).as_ref(), Some(&raw), "{what}");
        let mut corrupted = encoded.clone();
        let at = rng.below(corrupted.len());
        if let Some(byte) = corrupted.get_mut(at) {
            *byte ^= rng.next().to_le_bytes().first().copied().unwrap_or(1) | 1;
        }
        let _ = decode_pairs(&corrupted);
        let _ = decode_pairs(encoded.get(..rng.below(encoded.len())).unwrap_or_default());
        let _ = decode_pairs(&rng.bytes(64));

        // Refused exactly when a header that must be exact is not UTF-8.
        let must_refuse = raw
            .iter()
            .any(|(n, v)| must_be_exact(n) && (std::str::from_utf8(n).is_err() || std::str::from_utf8(v).is_err()));
        let lines = lines_for_rules(&raw);
        assert_eq!(lines.is_err(), must_refuse, "{what}");
        let Ok(lines) = lines else {
            refused += 1;
            continue;
        };
        assert_eq!(lines.len(), raw.len(), "{what}");
        for ((name, value), (raw_name, raw_value)) in lines.iter().zip(&raw) {
            assert_eq!(name, &String::from_utf8_lossy(raw_name), "{what}");
            assert_eq!(value, &String::from_utf8_lossy(raw_value), "{what}");
            assert_eq!(is_reserved(name), is_reserved_raw(raw_name), "{what}");
        }

        // Strip: nothing reserved survives but kubegate's own report of an
        // `Impersonate-*` request; every other line stays byte for byte.
        let mut host = HostModel { lines: raw.clone(), refused_read: Default::default() };
        strip_stage(&mut host);
        assert!(!host.refused_read.get(), "{what}");
        let asked = raw.iter().any(|(n, _)| n.to_ascii_lowercase().starts_with(b"impersonate-"));
        let reserved = lowered_reserved(&host.lines);
        assert!(reserved.len() <= 1, "{what}: reserved lines survived the strip stage: {reserved:?}");
        match reserved.first() {
            None => assert!(!asked, "{what}: the request to impersonate was not reported"),
            Some((name, report)) => {
                assert!(asked, "{what}: a report without a request");
                assert_eq!(name.as_slice(), CLIENT_IMPERSONATION_HEADER.as_bytes(), "{what}");
                assert!(serde_json::from_slice::<serde_json::Value>(report).is_ok(), "{what}");
            }
        }
        let kept: Vec<RawLine> = host.lines.iter().filter(|(n, _)| !is_reserved_raw(n)).cloned().collect();
        let expected: Vec<RawLine> = raw.iter().filter(|(n, _)| !is_reserved_raw(n)).cloned().collect();
        assert_eq!(kept, expected, "{what}");
        stripped += 1;

        // Inject: the reserved lines are exactly the decision's identity, the user's
        // bearer token is gone, and the lines no stage owns are untouched.
        // Confirming what authz-server read never panics on any bytes either.
        let mut confirming = HostModel { lines: host.lines.clone(), refused_read: Default::default() };
        let _ = inject_stage(&mut confirming, &decision, Some("{}"));
        let mut host = HostModel { lines: host.lines, refused_read: Default::default() };
        assert_eq!(inject_stage(&mut host, &decision, None), Ok(()), "{what}");
        assert!(!host.refused_read.get(), "{what}");
        assert_eq!(lowered_reserved(&host.lines), injected(&decision), "{what}");
        assert!(!host.lines.iter().any(|(n, _)| n.eq_ignore_ascii_case(b"authorization")), "{what}");
        assert_eq!(untouchable(&host.lines), untouchable(&raw), "{what}");
    }
    // The generator reaches both outcomes often.
    assert!(refused > CASES / 20 && stripped > CASES / 20, "refused {refused}, stripped {stripped}");
}

//! Streams opened under access grants, and when each must end: the bookkeeping behind
//! "running streams end with their grant", with no proxy-wasm dependency.
//!
//! The inject stage [`Watchlist::watch`]es every upgraded stream (exec, attach,
//! port-forward) whose decision names grants. Once a second the root context's tick
//! ([`Watchlist::tick`]) asks authz-server which of those grants are still active (one
//! `GET /kubegate/internal/grants?ids=...` through Envoy per [`MAX_IDS_PER_CHECK`] ids, one
//! round at a time) and resets the streams that must end. A stream ends when one of its
//! grants is reported inactive (expired, revoked, unknown), or could not be confirmed by
//! [`FAILED_CHECKS_BEFORE_CUT`] checks in a row (authz-server down, a timeout, an answer
//! that is not the JSON expected): the gateway fails closed, after a grace of about 3 s
//! (checks that fail at once) to 9 s (checks that time out), which a blip of
//! authz-server's does not cut streams for.
//!
//! A stream that can be told why (an exec or attach whose protocol has an error channel,
//! [`crate::farewell`]) is reset only once it was told, or after [`FAREWELL_TICKS`];
//! meanwhile the stream itself no longer passes what the user types. Every other stream
//! is reset at once.
//!
//! The list lives in the VM (one per Envoy worker thread), shared by the root context
//! and the worker's HTTP contexts; a stream leaves it when it ends
//! ([`Watchlist::forget`]).

use kubegate_decision::Status;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// How often the root context checks, while any stream is watched.
pub const TICK_MILLIS: u32 = 1000;
/// How long one check may take before Envoy answers it with a failure.
pub const CHECK_TIMEOUT_MILLIS: u64 = 2000;
/// Checks in a row that must fail for a grant before its streams are cut.
pub const FAILED_CHECKS_BEFORE_CUT: u32 = 3;
/// A check without an answer after this many ticks counts as failed.
const STALE_CHECK_TICKS: u64 = 5;
/// How long (ticks) a stream that can be told why may wait for the chance to say it
/// (kubectl's websocket and SPDY clients ping every 5 s, and each pong is that chance).
pub const FAREWELL_TICKS: u64 = 7;
/// How many times a stream is reset before it is forgotten.
pub const MAX_RESETS: u32 = 5;
/// Ids per check (authz-server takes up to 1000).
pub const MAX_IDS_PER_CHECK: usize = 100;
/// More grants than this on one stream is not a decision authz-server makes.
pub const MAX_GRANTS_PER_STREAM: usize = 64;
/// The longest answer read.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// authz-server's endpoint, on its `apiListen`, outside the prefix Envoy routes there.
pub const GRANT_STATUS_PATH: &str = "/kubegate/internal/grants";
/// The `:authority` of the check (the cluster has a single endpoint; Envoy needs one).
pub const GRANT_STATUS_AUTHORITY: &str = "kubegate-api";
/// The longest grant id (a Kubernetes object name).
const MAX_GRANT_ID_LEN: usize = 253;

/// True for a request that becomes a long-lived stream: an `Upgrade` (websocket,
/// SPDY/3.1: exec, attach, port-forward) or an HTTP/2 extended CONNECT.
pub fn is_stream_upgrade<N: AsRef<[u8]>, V: AsRef<[u8]>>(lines: &[(N, V)]) -> bool {
    let values = |name: &'static [u8]| {
        lines.iter().filter(move |(n, _)| n.as_ref().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
    };
    values(b"upgrade").any(|v| !v.iter().all(u8::is_ascii_whitespace))
        || (values(b":method").any(|v| v == b"CONNECT") && values(b":protocol").next().is_some())
}

/// A grant id the check can name as it is: an object name (lower-case letters, digits,
/// `-`, `.`), as authz-server's endpoint requires.
pub fn is_checkable_id(id: &str) -> bool {
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_GRANT_ID_LEN
        && bytes.iter().all(|b| alphanumeric(b) || *b == b'-' || *b == b'.')
        && bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
}

/// The `:path` of a check.
pub fn check_path(ids: &[String]) -> String {
    format!("{GRANT_STATUS_PATH}?ids={}", ids.join(","))
}

/// Why a stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// authz-server said the grant is not active (expired, revoked, or gone).
    Ended(String),
    /// The grant could not be confirmed, [`FAILED_CHECKS_BEFORE_CUT`] times in a row.
    Unconfirmed(String),
}

impl Why {
    pub fn grant(&self) -> &str {
        match self {
            Why::Ended(grant) | Why::Unconfirmed(grant) => grant,
        }
    }

    /// What the user is told (kubectl prints it as `error: ...` where the protocol lets
    /// kubegate say it).
    pub fn message(&self) -> String {
        match self {
            Why::Ended(grant) => {
                format!("kubegate ended this session: access grant {grant} has expired or was revoked")
            }
            Why::Unconfirmed(grant) => format!(
                "kubegate ended this session: it could not confirm that access grant {grant} is still in force \
                 (kubegate's authorization service did not answer)"
            ),
        }
    }

    /// The message as the Kubernetes `Status` an exec's error channel carries.
    pub fn status_json(&self) -> String {
        Status::failure(403, &self.message()).to_json()
    }
}

#[derive(Debug)]
struct Stream {
    grants: Vec<String>,
    /// The stream said it can tell its client why (see [`crate::farewell`]).
    can_say_farewell: bool,
    ending: Option<Ending>,
}

#[derive(Debug)]
struct Ending {
    why: Why,
    since: u64,
    farewell_said: bool,
    /// Resets asked of the host so far.
    resets: u32,
}

#[derive(Debug)]
struct Check {
    ids: Vec<String>,
    sent_at: u64,
}

/// What one tick asks the host to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TickPlan {
    /// Streams to reset now, and why.
    pub reset: Vec<(u32, Why)>,
    /// Checks to send, each a list of grant ids.
    pub checks: Vec<Vec<String>>,
    /// Nothing is watched any more: stop the tick.
    pub stop_ticking: bool,
}

/// The streams of one VM watched for their grants.
#[derive(Debug, Default)]
pub struct Watchlist {
    tick: u64,
    streams: BTreeMap<u32, Stream>,
    /// Checks in a row that failed, per grant (absent: none).
    failures: BTreeMap<String, u32>,
    /// Checks sent and not answered, by the host's token.
    checks: BTreeMap<u32, Check>,
    ticking: bool,
}

impl Watchlist {
    /// Watches `stream`, opened under `grants`. `Ok(true)`: the tick must be started
    /// (it runs only while something is watched). `Err`: ids that cannot be checked, so
    /// the stream must not open.
    pub fn watch(&mut self, stream: u32, grants: &[String]) -> Result<bool, String> {
        if grants.len() > MAX_GRANTS_PER_STREAM {
            return Err(format!("the decision names {} access grants (at most {MAX_GRANTS_PER_STREAM})", grants.len()));
        }
        if let Some(bad) = grants.iter().find(|g| !is_checkable_id(g)) {
            let shown: String = bad.chars().take(64).collect();
            return Err(format!("the decision names access grant {shown:?}, which kubegate cannot check"));
        }
        let mut unique: Vec<String> = Vec::with_capacity(grants.len());
        for grant in grants {
            if !unique.contains(grant) {
                unique.push(grant.clone());
            }
        }
        if unique.is_empty() {
            return Ok(false);
        }
        self.streams.insert(stream, Stream { grants: unique, can_say_farewell: false, ending: None });
        let start = !self.ticking;
        self.ticking = true;
        Ok(start)
    }

    /// `stream` ended (or was never there).
    pub fn forget(&mut self, stream: u32) {
        if self.streams.remove(&stream).is_some() {
            let used: BTreeSet<&String> = self.streams.values().flat_map(|s| &s.grants).collect();
            self.failures.retain(|grant, _| used.contains(grant));
        }
    }

    pub fn is_watched(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// `stream` can tell its client why it ends, so it may wait for the chance.
    pub fn can_say_farewell(&mut self, stream: u32, can: bool) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.can_say_farewell = can;
        }
    }

    /// Why `stream` must end, once it must.
    pub fn ending(&self, stream: u32) -> Option<&Why> {
        self.streams.get(&stream).and_then(|s| s.ending.as_ref()).map(|e| &e.why)
    }

    /// `stream` told its client why: the next tick resets it (not now: the message is
    /// still on its way through Envoy).
    pub fn farewell_said(&mut self, stream: u32) {
        if let Some(ending) = self.streams.get_mut(&stream).and_then(|s| s.ending.as_mut()) {
            ending.farewell_said = true;
        }
    }

    /// The host was asked to reset `stream` once more: how many times so far. A stream
    /// still here after [`MAX_RESETS`] is given up on (the host no longer has it, or
    /// will not reset it).
    pub fn reset_asked(&mut self, stream: u32) -> u32 {
        let Some(ending) = self.streams.get_mut(&stream).and_then(|s| s.ending.as_mut()) else {
            return 0;
        };
        ending.resets = ending.resets.saturating_add(1);
        let resets = ending.resets;
        if resets >= MAX_RESETS {
            self.forget(stream);
        }
        resets
    }

    /// The host would not start the tick: nothing is watched after all.
    pub fn tick_not_started(&mut self) {
        self.streams.clear();
        self.failures.clear();
        self.ticking = false;
    }

    /// One tick: streams to reset, checks to send.
    pub fn tick(&mut self) -> TickPlan {
        self.tick = self.tick.saturating_add(1);
        let now = self.tick;
        let stale: Vec<u32> = self
            .checks
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.sent_at) >= STALE_CHECK_TICKS)
            .map(|(t, _)| *t)
            .collect();
        for token in stale {
            if let Some(check) = self.checks.remove(&token) {
                self.failed(&check.ids);
            }
        }
        let reset = self
            .streams
            .iter()
            .filter_map(|(id, s)| {
                let ending = s.ending.as_ref()?;
                let due =
                    !s.can_say_farewell || ending.farewell_said || now.saturating_sub(ending.since) >= FAREWELL_TICKS;
                due.then(|| (*id, ending.why.clone()))
            })
            .collect();
        let mut checks = Vec::new();
        if self.checks.is_empty() {
            let ids: BTreeSet<&String> =
                self.streams.values().filter(|s| s.ending.is_none()).flat_map(|s| &s.grants).collect();
            let ids: Vec<String> = ids.into_iter().cloned().collect();
            checks = ids.chunks(MAX_IDS_PER_CHECK).map(<[String]>::to_vec).collect();
        }
        let stop_ticking = self.streams.is_empty() && self.checks.is_empty() && checks.is_empty();
        if stop_ticking {
            self.ticking = false;
        }
        TickPlan { reset, checks, stop_ticking }
    }

    /// The host sent a check for `ids`; its answer will come with `token`.
    pub fn sent(&mut self, token: u32, ids: Vec<String>) {
        self.checks.insert(token, Check { ids, sent_at: self.tick });
    }

    /// The host could not send a check for `ids`: it counts as failed. Returns the
    /// streams to reset now.
    pub fn not_sent(&mut self, ids: &[String]) -> Vec<(u32, Why)> {
        let before = self.ending_ids();
        self.failed(ids);
        self.reset_now(&before)
    }

    /// The answer to check `token`: the active grants, or why there is none. Returns
    /// the streams to reset now (those that cannot be told why); the others are reset
    /// by a later tick. An answer nobody waits for (late, after its check went stale)
    /// changes nothing.
    pub fn answered(&mut self, token: u32, answer: Result<BTreeSet<String>, String>) -> Vec<(u32, Why)> {
        let Some(check) = self.checks.remove(&token) else {
            return Vec::new();
        };
        let before = self.ending_ids();
        match answer {
            Ok(active) => {
                for id in &check.ids {
                    if active.contains(id) {
                        self.failures.remove(id);
                    } else {
                        self.end_streams_using(id, &Why::Ended(id.clone()));
                    }
                }
            }
            Err(_) => self.failed(&check.ids),
        }
        self.reset_now(&before)
    }

    fn failed(&mut self, ids: &[String]) {
        for id in ids {
            let failures = self.failures.entry(id.clone()).or_insert(0);
            *failures = failures.saturating_add(1);
            if *failures >= FAILED_CHECKS_BEFORE_CUT {
                self.end_streams_using(id, &Why::Unconfirmed(id.clone()));
            }
        }
    }

    fn end_streams_using(&mut self, grant: &str, why: &Why) {
        let now = self.tick;
        for stream in self.streams.values_mut().filter(|s| s.ending.is_none() && s.grants.iter().any(|g| g == grant)) {
            stream.ending = Some(Ending { why: why.clone(), since: now, farewell_said: false, resets: 0 });
        }
    }

    fn ending_ids(&self) -> BTreeSet<u32> {
        self.streams.iter().filter(|(_, s)| s.ending.is_some()).map(|(id, _)| *id).collect()
    }

    /// Streams that started ending since `before` and cannot be told why.
    fn reset_now(&self, before: &BTreeSet<u32>) -> Vec<(u32, Why)> {
        self.streams
            .iter()
            .filter(|(id, s)| !before.contains(id) && !s.can_say_farewell)
            .filter_map(|(id, s)| s.ending.as_ref().map(|e| (*id, e.why.clone())))
            .collect()
    }
}

/// authz-server's answer: `{"active": [...]}` with status 200, or why it is not one.
/// Never panics; anything else is an error (which the grace turns into a cut).
pub fn parse_answer(status: Option<&[u8]>, body: &[u8]) -> Result<BTreeSet<String>, String> {
    #[derive(Deserialize)]
    struct Answer {
        active: Vec<String>,
    }
    match status {
        Some(b"200") => {}
        Some(other) => {
            let shown: String = String::from_utf8_lossy(other).chars().take(16).collect();
            return Err(format!("authz-server answered status {shown}"));
        }
        None => return Err("no answer (authz-server unreachable, the call reset or timed out)".into()),
    }
    if body.len() > MAX_ANSWER_BYTES {
        return Err(format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"));
    }
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not the JSON expected: {e}"))?;
    Ok(answer.active.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn active(list: &[&str]) -> Result<BTreeSet<String>, String> {
        Ok(list.iter().map(|s| (*s).to_owned()).collect())
    }

    /// Ticks once and sends every check the tick asks for, with tokens from `next`.
    fn tick_and_send(w: &mut Watchlist, next: &mut u32) -> TickPlan {
        let plan = w.tick();
        for check in &plan.checks {
            *next += 1;
            w.sent(*next, check.clone());
        }
        plan
    }

    #[test]
    fn upgrades_and_extended_connect_are_streams() {
        let lines = |pairs: &[(&str, &str)]| -> Vec<(Vec<u8>, Vec<u8>)> {
            pairs.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
        };
        assert!(is_stream_upgrade(&lines(&[(":method", "GET"), ("Upgrade", "websocket")])));
        assert!(is_stream_upgrade(&lines(&[(":method", "POST"), ("upgrade", "SPDY/3.1")])));
        assert!(is_stream_upgrade(&lines(&[(":method", "CONNECT"), (":protocol", "websocket")])));
        assert!(!is_stream_upgrade(&lines(&[(":method", "GET"), ("connection", "upgrade")])));
        assert!(!is_stream_upgrade(&lines(&[(":method", "GET"), ("upgrade", " ")])));
        assert!(!is_stream_upgrade(&lines(&[(":method", "CONNECT")])));
    }

    #[test]
    fn grant_ids_must_be_object_names() {
        for good in ["ar-7c3f1", "a", "ar.1", &"a".repeat(253)] {
            assert!(is_checkable_id(good), "{good}");
        }
        for bad in ["", "AR-1", "ar-", "-ar", "ar 1", "ar,1", "ar&x=1", "ar%2c1", "\u{e9}", &"a".repeat(254)] {
            assert!(!is_checkable_id(bad), "{bad}");
        }
        assert_eq!(check_path(&ids(&["ar-1", "ar-2"])), "/kubegate/internal/grants?ids=ar-1,ar-2");
    }

    /// Attack: a grant id that would smuggle another query parameter or path into the
    /// check (`ar-1&ids=ar-2`, `../x`): the stream is refused rather than opened unwatched.
    #[test]
    fn a_stream_whose_grants_cannot_be_checked_is_not_watched() {
        let mut w = Watchlist::default();
        assert!(w.watch(1, &ids(&["ar-1&ids=ar-2"])).is_err());
        assert!(w.watch(2, &ids(&["../x"])).is_err());
        let many: Vec<String> = (0..=MAX_GRANTS_PER_STREAM).map(|i| format!("ar-{i}")).collect();
        assert!(w.watch(3, &many).is_err());
        assert!(w.is_empty());
        assert_eq!(w.watch(4, &[]), Ok(false), "nothing to watch");
        assert!(w.is_empty());
    }

    #[test]
    fn the_tick_runs_while_something_is_watched() {
        let mut w = Watchlist::default();
        assert_eq!(w.watch(1, &ids(&["ar-1", "ar-1"])), Ok(true), "the first stream starts the tick");
        assert_eq!(w.watch(2, &ids(&["ar-1", "ar-2"])), Ok(false), "already ticking: not restarted");
        let mut token = 0;
        let plan = tick_and_send(&mut w, &mut token);
        assert_eq!(plan.checks, vec![ids(&["ar-1", "ar-2"])], "each grant once");
        assert!(!plan.stop_ticking);
        assert!(tick_and_send(&mut w, &mut token).checks.is_empty(), "one round at a time");
        assert!(w.answered(token, active(&["ar-1", "ar-2"])).is_empty());
        w.forget(1);
        w.forget(2);
        w.forget(3);
        assert!(w.tick().stop_ticking);
        assert_eq!(w.watch(5, &ids(&["ar-5"])), Ok(true), "started again");
    }

    #[test]
    fn checks_are_split_into_bounded_batches() {
        let mut w = Watchlist::default();
        for stream in 0..250u32 {
            let grants = vec![format!("ar-{stream:03}")];
            assert!(w.watch(stream, &grants).is_ok());
        }
        let plan = w.tick();
        assert_eq!(plan.checks.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
        assert!(plan.checks.iter().all(|c| check_path(c).len() < 1024));
    }

    /// Revocation or expiry: every stream using the grant is reset at the first answer
    /// that leaves it out, and only those.
    #[test]
    fn streams_whose_grant_is_not_active_are_cut() {
        let mut w = Watchlist::default();
        let _ = w.watch(1, &ids(&["ar-1"]));
        let _ = w.watch(2, &ids(&["ar-1", "ar-2"]));
        let _ = w.watch(3, &ids(&["ar-2"]));
        let mut token = 0;
        tick_and_send(&mut w, &mut token);
        let cut = w.answered(token, active(&["ar-2", "ar-9"]));
        assert_eq!(cut, vec![(1, Why::Ended("ar-1".into())), (2, Why::Ended("ar-1".into()))]);
        assert_eq!(w.ending(3), None);
        assert_eq!(w.ending(1), Some(&Why::Ended("ar-1".into())));
        // Until the host reports them gone, each tick resets them again.
        let plan = tick_and_send(&mut w, &mut token);
        assert_eq!(plan.reset.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(plan.checks, vec![ids(&["ar-2"])], "ending streams' grants are not asked about");
        w.forget(1);
        w.forget(2);
        assert!(w.tick().reset.is_empty());
    }

    /// authz-server unreachable: three failed checks in a row, then the streams are cut
    /// (fail closed); a success in between starts the count again.
    #[test]
    fn unconfirmed_grants_are_cut_after_three_failed_checks() {
        let mut w = Watchlist::default();
        let _ = w.watch(1, &ids(&["ar-1"]));
        let mut token = 0;
        for _ in 0..2 {
            tick_and_send(&mut w, &mut token);
            assert!(w.answered(token, Err("down".into())).is_empty());
        }
        tick_and_send(&mut w, &mut token);
        assert!(w.answered(token, active(&["ar-1"])).is_empty(), "confirmed: the count starts again");
        for _ in 0..2 {
            tick_and_send(&mut w, &mut token);
            assert!(w.answered(token, Err("down".into())).is_empty());
        }
        let plan = w.tick();
        assert_eq!(plan.checks.len(), 1);
        let check = plan.checks.first().map(Vec::as_slice).unwrap_or_default();
        assert_eq!(w.not_sent(check), vec![(1, Why::Unconfirmed("ar-1".into()))], "a check not sent fails");
    }

    #[test]
    fn a_check_that_never_comes_back_counts_as_failed() {
        let mut w = Watchlist::default();
        let _ = w.watch(1, &ids(&["ar-1"]));
        let mut token = 0;
        let mut ticks = 0;
        while w.ending(1).is_none() {
            tick_and_send(&mut w, &mut token);
            ticks += 1;
            assert!(ticks < 100, "never cut");
        }
        assert_eq!(w.ending(1), Some(&Why::Unconfirmed("ar-1".into())));
        assert!(ticks <= 3 * STALE_CHECK_TICKS as usize + 1, "{ticks}");
        assert!(w.answered(1, active(&["ar-1"])).is_empty(), "a late answer changes nothing");
        assert_eq!(w.tick().reset.len(), 1);
    }

    /// A stream that can tell its client why waits for the chance, but not for ever.
    #[test]
    fn a_stream_that_can_say_why_is_reset_after_saying_it_or_after_the_wait() {
        let mut w = Watchlist::default();
        let _ = w.watch(1, &ids(&["ar-1"]));
        let _ = w.watch(2, &ids(&["ar-1"]));
        w.can_say_farewell(1, true);
        w.can_say_farewell(2, true);
        let mut token = 0;
        tick_and_send(&mut w, &mut token);
        assert!(w.answered(token, active(&[])).is_empty(), "neither is reset at once");
        assert!(w.tick().reset.is_empty());
        w.farewell_said(1);
        assert_eq!(w.tick().reset.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1], "said: reset");
        w.forget(1);
        // Ticks since the answer: 2 so far; the 7th resets stream 2, which never said it.
        let mut waited = 2;
        loop {
            waited += 1;
            if !w.tick().reset.is_empty() {
                break;
            }
            assert!(waited < 20);
        }
        assert_eq!(waited, FAREWELL_TICKS);
    }

    #[test]
    fn resets_are_counted_and_given_up_on() {
        let mut w = Watchlist::default();
        let _ = w.watch(1, &ids(&["ar-1"]));
        assert_eq!(w.reset_asked(1), 0, "not ending");
        let mut token = 0;
        tick_and_send(&mut w, &mut token);
        assert_eq!(w.answered(token, active(&[])).len(), 1);
        for attempt in 1..MAX_RESETS {
            assert_eq!(w.reset_asked(1), attempt);
        }
        assert_eq!(w.reset_asked(1), MAX_RESETS);
        assert!(!w.is_watched(1), "given up on");
        assert!(w.tick().stop_ticking);
    }

    #[test]
    fn a_tick_that_would_not_start_leaves_nothing_watched() {
        let mut w = Watchlist::default();
        assert_eq!(w.watch(1, &ids(&["ar-1"])), Ok(true));
        w.tick_not_started();
        assert!(w.is_empty());
        assert_eq!(w.watch(2, &ids(&["ar-1"])), Ok(true), "the next stream tries again");
    }

    #[test]
    fn forgetting_a_stream_forgets_its_grants_failures() {
        let mut w = Watchlist::default();
        let _ = w.watch(1, &ids(&["ar-1"]));
        let mut token = 0;
        for _ in 0..2 {
            tick_and_send(&mut w, &mut token);
            w.answered(token, Err("down".into()));
        }
        w.forget(1);
        let _ = w.watch(2, &ids(&["ar-1"]));
        tick_and_send(&mut w, &mut token);
        assert!(w.answered(token, Err("down".into())).is_empty(), "a new stream starts with a clean count");
        assert_eq!(w.len(), 1);
        assert!(w.is_watched(2) && !w.is_watched(1));
    }

    #[test]
    fn answers_are_parsed_strictly_and_never_panic() {
        assert_eq!(parse_answer(Some(b"200"), br#"{"active":["ar-1"]}"#), active(&["ar-1"]));
        assert_eq!(parse_answer(Some(b"200"), br#"{"active":[],"more":1}"#), active(&[]));
        let big = format!(r#"{{"active":["{}"]}}"#, "a".repeat(MAX_ANSWER_BYTES));
        let garbage: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        for (status, body) in [
            (None, &b""[..]),
            (Some(&b"503"[..]), &br#"{"active":["ar-1"]}"#[..]),
            (Some(b"\xff\xfe"), b""),
            (Some(b"200"), b""),
            (Some(b"200"), b"{"),
            (Some(b"200"), br#"{"active":"ar-1"}"#),
            (Some(b"200"), br#"{"active":[1]}"#),
            (Some(b"200"), br#"["ar-1"]"#),
            (Some(b"200"), b"\xff\xfe\xfd"),
            (Some(b"200"), big.as_bytes()),
            (Some(b"200"), &garbage),
        ] {
            assert!(parse_answer(status, body).is_err(), "{status:?} {body:?}");
        }
    }

    /// Malformed answers fail closed: repeated, they cut the stream.
    #[test]
    fn malformed_answers_fail_closed() {
        let mut w = Watchlist::default();
        let _ = w.watch(1, &ids(&["ar-1"]));
        let mut token = 0;
        let mut cut = Vec::new();
        for _ in 0..FAILED_CHECKS_BEFORE_CUT {
            tick_and_send(&mut w, &mut token);
            cut = w.answered(token, parse_answer(Some(b"200"), b"<html>"));
        }
        assert_eq!(cut, vec![(1, Why::Unconfirmed("ar-1".into()))]);
    }

    #[test]
    fn the_message_is_a_status_kubectl_prints() {
        let status: serde_json::Value =
            serde_json::from_str(&Why::Ended("ar-1".into()).status_json()).unwrap_or_default();
        let field = |name: &str| status.get(name).and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
        assert_eq!((field("status"), field("reason")), ("Failure".into(), "Forbidden".into()));
        assert!(field("message").contains("access grant ar-1 has expired or was revoked"));
        assert!(Why::Unconfirmed("ar-2".into()).message().contains("could not confirm that access grant ar-2"));
    }
}

//! The proxy-wasm shell: parses the configuration once per root context, then adapts
//! each request's host calls to the rules in [`crate::headers`].
//!
//! # Nothing a client sends can panic the filter
//!
//! A panic fails the VM; Envoy then refuses every request the VM would have handled
//! (fail closed) until it reloads the VM (`failure_policy: FAIL_RELOAD` in
//! `envoy/kubegate.yaml`). proxy-wasm 0.2's header wrappers panic on client input:
//! `get_http_request_headers` and `get_http_request_header` `unwrap` the UTF-8
//! conversion of values, `get_http_request_headers_bytes` that of names, and every
//! wrapper panics on a host status it does not expect. So the request path calls none
//! of them: [`host`] binds the few host calls it needs directly and returns every status
//! as a value, and [`crate::host_bytes`] decodes and judges the bytes (natively tested;
//! its module documentation states the rule for bytes that are not UTF-8). A host call
//! that fails refuses the request.
//!
//! # Streams end with their grant
//!
//! The inject stage watches every upgraded stream whose decision names access grants
//! ([`crate::grant_watch`]) in a list the VM's root context shares with its HTTP
//! contexts (one VM per Envoy worker thread, so a thread-local). The root context's tick
//! asks authz-server, with `dispatch_http_call` to the configured Envoy cluster, which
//! of the grants are still active, and resets the streams that must end: it makes the
//! stream's context the effective one (`proxy_set_effective_context`, which Envoy's
//! host provides for exactly this: a root context acting on its streams) and closes it
//! (`proxy_close_stream(HttpRequest)`, a `resetStream()` of the stream, deferred until
//! the call returns). Silent streams are reached that way, without any data callback.
//! An exec or attach is first told why on its error channel ([`crate::farewell`]),
//! through its own body callbacks, which also stop passing what the user types.

use crate::config::{FilterConfig, Stage};
use crate::farewell::{Farewell, Framing, Said};
use crate::grant_watch::{
    check_path, is_stream_upgrade, parse_answer, Watchlist, Why, CHECK_TIMEOUT_MILLIS, GRANT_STATUS_AUTHORITY,
    MAX_ANSWER_BYTES, TICK_MILLIS,
};
use crate::headers::{inject_stage, strip_stage, HeaderMap};
use crate::host_bytes::{lines_for_rules, RawLine};
use kubegate_decision::{Decision, Status, ASKED_KEY, EXT_AUTHZ_NAMESPACE, METADATA_KEY};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::{Cell, RefCell};
use std::time::Duration;

// `main!` expands to the exported entry point the host calls; exporting a symbol is
// what the `unsafe_code` lint flags, and is the one place this crate needs it besides
// the host bindings in `host`.
#[allow(unsafe_code)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        std::panic::set_hook(Box::new(|info| {
            super::host::log(
                proxy_wasm::types::LogLevel::Critical,
                &format!("kubegate filter panicked: {info}"),
            );
        }));
        proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(super::FilterRoot::new(context_id))
        });
    }}
}

/// Direct bindings to the proxy-wasm ABI calls the request path needs (the ones
/// proxy-wasm 0.2 declares privately), returning every host status instead of
/// panicking on it. Statuses are plain `u32`s: a status the SDK's enum does not name
/// must not be undefined behaviour either.
#[allow(unsafe_code)]
pub(crate) mod host {
    use crate::host_bytes::{decode_pairs, encode_pairs, encode_property_path, RawLine};
    use proxy_wasm::types::LogLevel;
    use std::ptr::{null, null_mut};

    /// `MapType::HttpRequestHeaders`, `HttpResponseHeaders`, `HttpCallResponseHeaders`.
    pub const REQUEST_HEADERS: u32 = 0;
    pub const RESPONSE_HEADERS: u32 = 2;
    pub const CALL_RESPONSE_HEADERS: u32 = 6;
    /// `BufferType::HttpRequestBody`, `HttpResponseBody`, `HttpCallResponseBody`.
    pub const REQUEST_BODY: u32 = 0;
    pub const RESPONSE_BODY: u32 = 1;
    pub const CALL_RESPONSE_BODY: u32 = 4;
    /// `StreamType::HttpRequest`.
    const HTTP_REQUEST_STREAM: u32 = 0;
    const OK: u32 = 0;
    const NOT_FOUND: u32 = 1;
    /// The host's answer to an unknown context id.
    pub const BAD_ARGUMENT: u32 = 2;

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
        fn proxy_get_header_map_pairs(map_type: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
        fn proxy_add_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
        fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
        fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
        fn proxy_set_buffer_bytes(
            buffer_type: u32,
            start: usize,
            size: usize,
            data: *const u8,
            data_size: usize,
        ) -> u32;
        fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        fn proxy_set_effective_context(context_id: u32) -> u32;
        fn proxy_close_stream(stream_type: u32) -> u32;
        fn proxy_send_local_response(
            status_code: u32,
            details_data: *const u8,
            details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
    }

    /// A failed host call: which, and the status the host returned.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct HostError {
        pub call: &'static str,
        pub status: u32,
    }

    impl std::fmt::Display for HostError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "host call {} returned status {}", self.call, self.status)
        }
    }

    fn check(call: &'static str, status: u32) -> Result<(), HostError> {
        if status == OK {
            Ok(())
        } else {
            Err(HostError { call, status })
        }
    }

    /// Takes ownership of a buffer the host returned.
    ///
    /// # Safety
    /// `data` is null or points to `size` bytes the host allocated in this module's
    /// memory through the allocator proxy-wasm exports (`proxy_on_memory_allocate`: a
    /// boxed `[u8]` of exactly `size` bytes, the layout of a `Vec<u8>` of capacity
    /// `size`), and nothing else owns it: the same contract proxy-wasm's own wrappers
    /// rely on.
    unsafe fn take_buffer(data: *mut u8, size: usize) -> Vec<u8> {
        if data.is_null() {
            Vec::new()
        } else {
            // SAFETY: see the function's contract.
            unsafe { Vec::from_raw_parts(data, size, size) }
        }
    }

    /// Logs; a failure to log is ignored (there is nowhere to report it).
    pub fn log(level: LogLevel, message: &str) {
        // SAFETY: the pointer and length describe `message`, alive for the call.
        let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
    }

    /// Every request header line, bytes as the host holds them.
    pub fn request_headers() -> Result<Vec<RawLine>, String> {
        header_lines(REQUEST_HEADERS)
    }

    /// Every line of the header map `map` (one of the `*_HEADERS` constants).
    pub fn header_lines(map: u32) -> Result<Vec<RawLine>, String> {
        let (mut data, mut size) = (null_mut(), 0usize);
        // SAFETY: the out-pointers point to live locals.
        let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
        // SAFETY: the host set `data`/`size` to a buffer it allocated for us, or left null.
        let buffer = unsafe { take_buffer(data, size) };
        check("proxy_get_header_map_pairs", status).map_err(|e| e.to_string())?;
        decode_pairs(&buffer).ok_or_else(|| "the host's header buffer is malformed".to_owned())
    }

    /// Up to `max` bytes of the buffer `kind` (one of the `*_BODY` constants) from its
    /// start; empty when the host has none.
    pub fn buffer(kind: u32, max: usize) -> Result<Vec<u8>, HostError> {
        let (mut data, mut size) = (null_mut(), 0usize);
        // SAFETY: the out-pointers point to live locals.
        let status = unsafe { proxy_get_buffer_bytes(kind, 0, max, &mut data, &mut size) };
        // SAFETY: as in `header_lines`.
        let buffer = unsafe { take_buffer(data, size) };
        match status {
            OK => Ok(buffer),
            NOT_FOUND => Ok(Vec::new()),
            status => Err(HostError { call: "proxy_get_buffer_bytes", status }),
        }
    }

    /// Replaces the first `len` bytes of the buffer `kind` (the current chunk, for a
    /// body callback) by `data`.
    pub fn replace_buffer(kind: u32, len: usize, data: &[u8]) -> Result<(), HostError> {
        // SAFETY: the pointer and length describe `data`, alive for the call.
        let status = unsafe { proxy_set_buffer_bytes(kind, 0, len, data.as_ptr(), data.len()) };
        check("proxy_set_buffer_bytes", status)
    }

    /// Ticks the root context every `millis` (0: stops the tick). Envoy restarts the
    /// period on every call, so it is called only to start and to stop.
    pub fn set_tick_period(millis: u32) -> Result<(), HostError> {
        // SAFETY: no pointers.
        check("proxy_set_tick_period_milliseconds", unsafe { proxy_set_tick_period_milliseconds(millis) })
    }

    /// Makes `context_id` the context the following host calls act on, until the VM
    /// call returns (Envoy: `BAD_ARGUMENT` for a context it no longer has).
    pub fn set_effective_context(context_id: u32) -> Result<(), HostError> {
        // SAFETY: no pointers.
        check("proxy_set_effective_context", unsafe { proxy_set_effective_context(context_id) })
    }

    /// Resets the (effective) context's HTTP stream, both directions, once the VM call
    /// returns (Envoy: `decoder_callbacks_->resetStream()`).
    pub fn reset_stream() -> Result<(), HostError> {
        // SAFETY: no pointers.
        check("proxy_close_stream", unsafe { proxy_close_stream(HTTP_REQUEST_STREAM) })
    }

    /// Removes every request header line named `name` (the host matches case-insensitively).
    pub fn remove_request_header(name: &[u8]) -> Result<(), HostError> {
        // SAFETY: the pointer and length describe `name`, alive for the call.
        let status = unsafe { proxy_remove_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len()) };
        check("proxy_remove_header_map_value", status)
    }

    /// Adds one request header line.
    pub fn add_request_header(name: &[u8], value: &[u8]) -> Result<(), HostError> {
        // SAFETY: the pointers and lengths describe `name` and `value`, alive for the call.
        let status = unsafe {
            proxy_add_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len(), value.as_ptr(), value.len())
        };
        check("proxy_add_header_map_value", status)
    }

    /// Replaces every request header line named `name` by one with `value`.
    pub fn replace_request_header(name: &[u8], value: &[u8]) -> Result<(), HostError> {
        // SAFETY: the pointers and lengths describe `name` and `value`, alive for the call.
        let status = unsafe {
            proxy_replace_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len(), value.as_ptr(), value.len())
        };
        check("proxy_replace_header_map_value", status)
    }

    /// A property's bytes; `None` when it does not exist.
    pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        let path = encode_property_path(path);
        let (mut data, mut size) = (null_mut(), 0usize);
        // SAFETY: the path pointer and length describe `path`; the out-pointers point to
        // live locals.
        let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
        let was_null = data.is_null();
        // SAFETY: as in `request_headers`.
        let buffer = unsafe { take_buffer(data, size) };
        match status {
            NOT_FOUND => Ok(None),
            OK if was_null => Ok(None),
            OK => Ok(Some(buffer)),
            status => Err(HostError { call: "proxy_get_property", status }),
        }
    }

    /// Answers the request locally instead of forwarding it.
    pub fn send_local_response(
        code: u32,
        details: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        let headers = encode_pairs(headers);
        // SAFETY: every pointer and length describes a live local for the call.
        let status = unsafe {
            proxy_send_local_response(
                code,
                details.as_ptr(),
                details.len(),
                if body.is_empty() { null() } else { body.as_ptr() },
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        };
        check("proxy_send_local_response", status)
    }
}

/// The test-only trigger (cargo feature `test-panic-trigger`, never in the shipped
/// build): a request carrying `kubegate-test-panic: strip` (or `inject`) panics that
/// stage, so the end-to-end tests can prove a failed VM refuses, then recovers.
#[cfg(feature = "test-panic-trigger")]
mod test_panic_trigger {
    use super::Stage;
    use crate::host_bytes::RawLine;

    pub const HEADER: &str = "kubegate-test-panic";

    #[allow(clippy::panic)]
    pub fn panic_if_asked(stage: Stage, raw: &[RawLine]) {
        let wanted: &[u8] = match stage {
            Stage::Strip => b"strip",
            Stage::Inject => b"inject",
        };
        if raw.iter().any(|(name, value)| name.eq_ignore_ascii_case(HEADER.as_bytes()) && value == wanted) {
            panic!("{HEADER} asked the {stage:?} stage to panic (test-panic-trigger build)");
        }
    }
}

thread_local! {
    /// The VM's streams watched for their grants: shared by the root context (its tick
    /// and the answers to its checks) and the HTTP contexts (their lifetimes and data).
    static WATCHLIST: RefCell<Watchlist> = RefCell::new(Watchlist::default());
}

/// Runs `f` on the watchlist. Nothing holding it calls the host, so it is never
/// borrowed twice; if it were, the caller gets `None` rather than a panic.
fn with_watchlist<T>(f: impl FnOnce(&mut Watchlist) -> T) -> Option<T> {
    WATCHLIST.with(|watchlist| watchlist.try_borrow_mut().ok().map(|mut w| f(&mut w)))
}

pub(crate) struct FilterRoot {
    /// This root context's id: the effective context again after acting on streams.
    id: u32,
    stage: Option<Stage>,
    grant_status_cluster: String,
}

impl FilterRoot {
    fn new(id: u32) -> Self {
        Self { id, stage: None, grant_status_cluster: crate::config::DEFAULT_GRANT_STATUS_CLUSTER.to_owned() }
    }

    /// Asks authz-server which of `ids` are active; the answer comes to
    /// `on_http_call_response`.
    fn send_check(&self, ids: Vec<String>) {
        let path = check_path(&ids);
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", GRANT_STATUS_AUTHORITY),
            ("accept", "application/json"),
        ];
        let timeout = Duration::from_millis(CHECK_TIMEOUT_MILLIS);
        // The SDK's wrapper registers the call, so that its answer reaches this context;
        // it returns Envoy's refusals (BadArgument: no such cluster; InternalFailure) as
        // errors, and Envoy's `httpCall` returns nothing else for valid memory.
        match proxy_wasm::hostcalls::dispatch_http_call(&self.grant_status_cluster, headers, None, vec![], timeout) {
            Ok(token) => {
                with_watchlist(|w| w.sent(token, ids));
            }
            Err(status) => {
                host::log(
                    LogLevel::Error,
                    &format!(
                        "kubegate filter: could not ask authz-server about access grants through Envoy cluster {:?} ({status:?}); streams under them end if this persists",
                        self.grant_status_cluster
                    ),
                );
                let reset = with_watchlist(|w| w.not_sent(&ids)).unwrap_or_default();
                self.reset_streams(reset);
            }
        }
    }

    /// Resets each stream from this root context, then acts as itself again.
    fn reset_streams(&self, streams: Vec<(u32, Why)>) {
        if streams.is_empty() {
            return;
        }
        for (stream, why) in streams {
            let attempt = with_watchlist(|w| w.reset_asked(stream)).unwrap_or_default();
            match host::set_effective_context(stream).and_then(|()| host::reset_stream()) {
                Ok(()) if attempt <= 1 => host::log(
                    LogLevel::Warn,
                    &format!(
                        "kubegate filter: reset stream {stream} (access grant {}): {}",
                        why.grant(),
                        why.message()
                    ),
                ),
                Ok(()) => {}
                Err(e) if e.status == host::BAD_ARGUMENT => {
                    // The host no longer has the stream: it ended on its own.
                    with_watchlist(|w| w.forget(stream));
                }
                Err(e) => host::log(
                    LogLevel::Error,
                    &format!("kubegate filter: could not reset stream {stream} (access grant {}): {e}", why.grant()),
                ),
            }
        }
        if let Err(e) = host::set_effective_context(self.id) {
            host::log(LogLevel::Error, &format!("kubegate filter: could not act as the root context again: {e}"));
        }
    }
}

impl Context for FilterRoot {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let status = host::header_lines(host::CALL_RESPONSE_HEADERS)
            .ok()
            .and_then(|lines| lines.into_iter().find(|(name, _)| name == b":status").map(|(_, value)| value));
        // One byte more than an answer may have, so that a larger one is refused.
        let body = match body_size {
            0 => Ok(Vec::new()),
            size => host::buffer(host::CALL_RESPONSE_BODY, size.min(MAX_ANSWER_BYTES + 1)),
        };
        let answer = match body {
            Ok(body) => parse_answer(status.as_deref(), &body),
            Err(e) => Err(e.to_string()),
        };
        if let Err(reason) = &answer {
            host::log(
                LogLevel::Warn,
                &format!("kubegate filter: could not confirm access grants with authz-server: {reason}"),
            );
        }
        let reset = with_watchlist(|w| w.answered(token_id, answer)).unwrap_or_default();
        self.reset_streams(reset);
    }
}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        #[cfg(feature = "test-panic-trigger")]
        host::log(
            LogLevel::Critical,
            "kubegate filter: TEST BUILD with the test-panic-trigger feature; it must never be deployed",
        );
        match FilterConfig::parse(self.get_plugin_configuration().as_deref()) {
            Ok(config) => {
                self.stage = Some(config.stage);
                config.grant_status_cluster().clone_into(&mut self.grant_status_cluster);
                true
            }
            Err(message) => {
                host::log(LogLevel::Critical, &message);
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let plan = with_watchlist(Watchlist::tick).unwrap_or_default();
        self.reset_streams(plan.reset);
        for ids in plan.checks {
            self.send_check(ids);
        }
        if plan.stop_ticking {
            if let Err(e) = host::set_tick_period(0) {
                host::log(LogLevel::Error, &format!("kubegate filter: could not stop the tick: {e}"));
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FilterRequest { id: context_id, stage: self.stage, watched: false, farewell: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FilterRequest {
    /// The host's id of this stream's context.
    id: u32,
    /// `None` only if configuration failed, which Envoy treats as a load failure;
    /// refusing here as well keeps that path closed too.
    stage: Option<Stage>,
    /// The stream is on the watchlist (an upgrade opened under access grants).
    watched: bool,
    /// A watched stream's frames, while it may be told why it ends.
    farewell: Option<Farewell>,
}

impl FilterRequest {
    /// Watches this upgraded stream for `decision`'s grants; `Err` refuses it.
    fn watch(&mut self, decision: &Decision, raw: &[RawLine]) -> Result<(), (u16, String)> {
        if decision.grants.is_empty() || !is_stream_upgrade(raw) {
            return Ok(());
        }
        let start = match with_watchlist(|w| w.watch(self.id, &decision.grants)) {
            Some(Ok(start)) => start,
            Some(Err(reason)) => return Err((403, reason)),
            None => return Err((500, "the gateway could not record the stream's access grants".into())),
        };
        self.watched = true;
        self.farewell = Framing::of_request(raw).map(Farewell::new);
        if start {
            if let Err(e) = host::set_tick_period(TICK_MILLIS) {
                with_watchlist(Watchlist::tick_not_started);
                self.watched = false;
                return Err((503, format!("the gateway cannot watch the stream's access grants: {e}")));
            }
        }
        Ok(())
    }

    /// Why this stream must end, once it must.
    fn ending(&self) -> Option<Why> {
        with_watchlist(|w| w.ending(self.id).cloned()).flatten()
    }

    /// The stream can no longer be told why: it ends without the message.
    fn give_up_farewell(&mut self) {
        self.farewell = None;
        with_watchlist(|w| w.can_say_farewell(self.id, false));
    }

    /// Drops the current chunk of `kind` and resets the stream from its own context.
    fn drop_and_reset(&self, kind: u32, size: usize) {
        let dropped = host::replace_buffer(kind, size, &[]);
        if let Err(e) = dropped.and_then(|()| host::reset_stream()) {
            host::log(LogLevel::Error, &format!("kubegate filter: could not end stream {}: {e}", self.id));
        }
    }

    fn forget(&mut self) {
        if std::mem::take(&mut self.watched) {
            with_watchlist(|w| w.forget(self.id));
        }
    }
}

impl Drop for FilterRequest {
    fn drop(&mut self) {
        self.forget();
    }
}

impl Context for FilterRequest {
    fn on_done(&mut self) -> bool {
        self.forget();
        true
    }
}

impl HttpContext for FilterRequest {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(stage) = self.stage else {
            return refuse(403, "the kubegate filter is not configured");
        };
        let raw = match host::request_headers() {
            Ok(raw) => raw,
            Err(reason) => return refuse(500, &format!("the gateway could not read the request headers: {reason}")),
        };
        #[cfg(feature = "test-panic-trigger")]
        test_panic_trigger::panic_if_asked(stage, &raw);
        let mut headers = match HostHeaders::new(&raw) {
            Ok(headers) => headers,
            Err(reason) => return refuse(400, &reason),
        };
        let decided = match stage {
            Stage::Strip => {
                strip_stage(&mut headers);
                None
            }
            Stage::Inject => match decision() {
                Ok(decision) => {
                    let asked = match asked() {
                        Ok(asked) => asked,
                        Err(reason) => return refuse(403, &reason),
                    };
                    if let Err(reason) = inject_stage(&mut headers, &decision, asked.as_deref()) {
                        return refuse(403, &reason);
                    }
                    Some(decision)
                }
                Err(reason) => return refuse(403, &reason),
            },
        };
        if let Some(reason) = headers.failure.take() {
            return refuse(500, &format!("the gateway could not rewrite the request headers: {reason}"));
        }
        if let Some(decision) = decided {
            if let Err((code, reason)) = self.watch(&decision, &raw) {
                return refuse(code, &reason);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if let Some(farewell) = &self.farewell {
            let lines = host::header_lines(host::RESPONSE_HEADERS).unwrap_or_default();
            let status = lines.iter().find(|(name, _)| name == b":status").map(|(_, v)| v.as_slice());
            if farewell.framing().has_error_channel(status.unwrap_or_default(), &lines) {
                with_watchlist(|w| w.can_say_farewell(self.id, true));
            } else {
                self.give_up_farewell();
            }
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if !self.watched {
            return Action::Continue;
        }
        let ending = self.ending();
        let Some(farewell) = self.farewell.as_mut() else {
            if ending.is_some() {
                self.drop_and_reset(host::REQUEST_BODY, body_size);
            }
            return Action::Continue;
        };
        let Ok(chunk) = host::buffer(host::REQUEST_BODY, body_size) else {
            // Frames no longer followed: no message can be placed.
            self.give_up_farewell();
            if ending.is_some() {
                self.drop_and_reset(host::REQUEST_BODY, body_size);
            }
            return Action::Continue;
        };
        if ending.is_none() {
            farewell.observe_request(&chunk);
            return Action::Continue;
        }
        let passed = farewell.request_while_ending(&chunk);
        if passed.len() != chunk.len() {
            if let Err(e) = host::replace_buffer(host::REQUEST_BODY, body_size, &passed) {
                host::log(
                    LogLevel::Error,
                    &format!("kubegate filter: could not hold back stream {}'s data: {e}", self.id),
                );
                self.give_up_farewell();
                self.drop_and_reset(host::REQUEST_BODY, body_size);
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if !self.watched {
            return Action::Continue;
        }
        let ending = self.ending();
        let Some(farewell) = self.farewell.as_mut() else {
            if ending.is_some() {
                self.drop_and_reset(host::RESPONSE_BODY, body_size);
            }
            return Action::Continue;
        };
        let Ok(chunk) = host::buffer(host::RESPONSE_BODY, body_size) else {
            self.give_up_farewell();
            if ending.is_some() {
                self.drop_and_reset(host::RESPONSE_BODY, body_size);
            }
            return Action::Continue;
        };
        let Some(why) = ending else {
            farewell.observe_response(&chunk);
            return Action::Continue;
        };
        let first = !farewell.said();
        match farewell.say(&chunk, &why.status_json()) {
            Said::NotYet => {}
            Said::Now(out) => match host::replace_buffer(host::RESPONSE_BODY, body_size, &out) {
                Ok(()) if first => {
                    with_watchlist(|w| w.farewell_said(self.id));
                    host::log(
                        LogLevel::Info,
                        &format!(
                            "kubegate filter: told the client of stream {} why it ends: {}",
                            self.id,
                            why.message()
                        ),
                    );
                }
                Ok(()) => {}
                Err(e) => {
                    host::log(
                        LogLevel::Error,
                        &format!("kubegate filter: could not end stream {}'s data: {e}", self.id),
                    );
                    self.give_up_farewell();
                    self.drop_and_reset(host::RESPONSE_BODY, body_size);
                }
            },
            Said::Cannot => {
                self.give_up_farewell();
                self.drop_and_reset(host::RESPONSE_BODY, body_size);
            }
        }
        Action::Continue
    }
}

fn decision() -> Result<Decision, String> {
    let raw = host::property(&["metadata", "filter_metadata", EXT_AUTHZ_NAMESPACE, METADATA_KEY])
        .map_err(|e| format!("the authorization decision could not be read: {e}"))?
        .ok_or("no authorization decision reached the gateway filter")?;
    Decision::from_json(&raw).map_err(|e| format!("the authorization decision is unusable: {e}"))
}

/// What authz-server read as the client's impersonation request (`ASKED_KEY`), when
/// it says (an authz-server older than the field does not: then nothing is compared).
/// A host that cannot answer refuses, as for the decision itself.
fn asked() -> Result<Option<String>, String> {
    let raw = host::property(&["metadata", "filter_metadata", EXT_AUTHZ_NAMESPACE, ASKED_KEY])
        .map_err(|e| format!("the authorization decision's impersonation record could not be read: {e}"))?;
    Ok(raw.map(|raw| String::from_utf8_lossy(&raw).into_owned()))
}

/// Answers with a Kubernetes `Status` body and stops the request.
fn refuse(code: u16, reason: &str) -> Action {
    // A 400 is the client's doing and needs no credential: not worth a warning each.
    let level = if code == 400 { LogLevel::Info } else { LogLevel::Error };
    host::log(level, &format!("kubegate filter refused a request ({code}): {reason}"));
    let message = format!("kubegate refused the request: {reason}");
    let body = Status::failure(code, &message).to_json();
    let headers = [("content-type", "application/json")];
    if let Err(e) = host::send_local_response(u32::from(code), "kubegate_filter_refused", &headers, body.as_bytes()) {
        host::log(LogLevel::Critical, &format!("kubegate filter could not send its refusal: {e}"));
    }
    Action::Pause
}

/// The host's view of the current request's headers, for the rules in
/// [`crate::headers`]. The rules take `&mut self` without a way to fail, so a failed
/// host call is kept in `failure` and refuses the request once the rules are done.
struct HostHeaders {
    /// The lines read before the rules ran, for the first `lines()`; dropped by any
    /// write, after which `lines()` reads the host again.
    first: Cell<Option<Vec<(String, String)>>>,
    failure: Cell<Option<String>>,
}

impl HostHeaders {
    /// Refuses (with the message for a 400) headers the rules must not see lossily.
    fn new(raw: &[RawLine]) -> Result<Self, String> {
        let lines = lines_for_rules(raw).map_err(|unreadable| unreadable.message())?;
        Ok(Self { first: Cell::new(Some(lines)), failure: Cell::new(None) })
    }

    fn fail(&self, reason: String) {
        let earlier = self.failure.take();
        self.failure.set(earlier.or(Some(reason)));
    }

    fn wrote(&self, result: Result<(), host::HostError>) {
        self.first.set(None);
        if let Err(e) = result {
            self.fail(e.to_string());
        }
    }
}

impl HeaderMap for HostHeaders {
    fn lines(&self) -> Vec<(String, String)> {
        if let Some(lines) = self.first.take() {
            return lines;
        }
        let read =
            host::request_headers().and_then(|raw| lines_for_rules(&raw).map_err(|unreadable| unreadable.message()));
        read.unwrap_or_else(|reason| {
            self.fail(reason);
            Vec::new()
        })
    }
    fn remove_all(&mut self, name: &str) {
        self.wrote(host::remove_request_header(name.as_bytes()));
    }
    fn add(&mut self, name: &str, value: &str) {
        self.wrote(host::add_request_header(name.as_bytes(), value.as_bytes()));
    }
    fn set(&mut self, name: &str, value: &str) {
        self.wrote(host::replace_request_header(name.as_bytes(), value.as_bytes()));
    }
}

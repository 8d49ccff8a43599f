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

use crate::config::{FilterConfig, Stage};
use crate::headers::{inject_stage, strip_stage, HeaderMap};
use crate::host_bytes::{lines_for_rules, RawLine};
use kubegate_decision::{Decision, Status, EXT_AUTHZ_NAMESPACE, METADATA_KEY};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::Cell;

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
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(super::FilterRoot { stage: None })
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

    /// `MapType::HttpRequestHeaders`.
    const REQUEST_HEADERS: u32 = 0;
    const OK: u32 = 0;
    const NOT_FOUND: u32 = 1;

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
        let (mut data, mut size) = (null_mut(), 0usize);
        // SAFETY: the out-pointers point to live locals.
        let status = unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) };
        // SAFETY: the host set `data`/`size` to a buffer it allocated for us, or left null.
        let buffer = unsafe { take_buffer(data, size) };
        check("proxy_get_header_map_pairs", status).map_err(|e| e.to_string())?;
        decode_pairs(&buffer).ok_or_else(|| "the host's request header buffer is malformed".to_owned())
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

pub(crate) struct FilterRoot {
    stage: Option<Stage>,
}

impl Context for FilterRoot {}

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
                true
            }
            Err(message) => {
                host::log(LogLevel::Critical, &message);
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FilterRequest { stage: self.stage }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FilterRequest {
    /// `None` only if configuration failed, which Envoy treats as a load failure;
    /// refusing here as well keeps that path closed too.
    stage: Option<Stage>,
}

impl Context for FilterRequest {}

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
        match stage {
            Stage::Strip => strip_stage(&mut headers),
            Stage::Inject => match decision() {
                Ok(decision) => inject_stage(&mut headers, &decision),
                Err(reason) => return refuse(403, &reason),
            },
        }
        match headers.failure.take() {
            None => Action::Continue,
            Some(reason) => refuse(500, &format!("the gateway could not rewrite the request headers: {reason}")),
        }
    }
}

fn decision() -> Result<Decision, String> {
    let raw = host::property(&["metadata", "filter_metadata", EXT_AUTHZ_NAMESPACE, METADATA_KEY])
        .map_err(|e| format!("the authorization decision could not be read: {e}"))?
        .ok_or("no authorization decision reached the gateway filter")?;
    Decision::from_json(&raw).map_err(|e| format!("the authorization decision is unusable: {e}"))
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

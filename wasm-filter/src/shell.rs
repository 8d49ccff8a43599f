//! The proxy-wasm shell: parses the configuration once per root context, then adapts
//! each request's host calls to the rules in [`crate::headers`].

use crate::config::{FilterConfig, Stage};
use crate::headers::{inject_stage, strip_stage, HeaderMap};
use kubegate_decision::{Decision, Status, EXT_AUTHZ_NAMESPACE, METADATA_KEY};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

// `main!` expands to the exported entry point the host calls; exporting a symbol is
// what the `unsafe_code` lint flags, and is the one place this crate needs it.
#[allow(unsafe_code)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        std::panic::set_hook(Box::new(|info| {
            let _ = proxy_wasm::hostcalls::log(
                proxy_wasm::types::LogLevel::Critical,
                &format!("kubegate filter panicked: {info}"),
            );
        }));
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(super::FilterRoot { stage: None })
        });
    }}
}

pub(crate) struct FilterRoot {
    stage: Option<Stage>,
}

impl Context for FilterRoot {}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        match FilterConfig::parse(self.get_plugin_configuration().as_deref()) {
            Ok(config) => {
                self.stage = Some(config.stage);
                true
            }
            Err(message) => {
                let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &message);
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
        match self.stage {
            Some(Stage::Strip) => {
                strip_stage(&mut HostHeaders(self));
                Action::Continue
            }
            Some(Stage::Inject) => match self.decision() {
                Ok(decision) => {
                    inject_stage(&mut HostHeaders(self), &decision);
                    Action::Continue
                }
                Err(reason) => self.refuse(&reason),
            },
            None => self.refuse("the kubegate filter is not configured"),
        }
    }
}

impl FilterRequest {
    fn decision(&self) -> Result<Decision, String> {
        let raw = self
            .get_property(vec!["metadata", "filter_metadata", EXT_AUTHZ_NAMESPACE, METADATA_KEY])
            .ok_or("no authorization decision reached the gateway filter")?;
        Decision::from_json(&raw).map_err(|e| format!("the authorization decision is unusable: {e}"))
    }

    fn refuse(&self, reason: &str) -> Action {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Error, &format!("kubegate filter refused a request: {reason}"));
        let message = format!("kubegate refused the request: {reason}");
        let body = Status::failure(403, &message).to_json();
        self.send_http_response(403, vec![("content-type", "application/json")], Some(body.as_bytes()));
        Action::Pause
    }
}

/// The host's view of the current request's headers.
struct HostHeaders<'a>(&'a FilterRequest);

impl HeaderMap for HostHeaders<'_> {
    fn lines(&self) -> Vec<(String, String)> {
        self.0.get_http_request_headers()
    }
    fn remove_all(&mut self, name: &str) {
        self.0.set_http_request_header(name, None);
    }
    fn add(&mut self, name: &str, value: &str) {
        self.0.add_http_request_header(name, value);
    }
}

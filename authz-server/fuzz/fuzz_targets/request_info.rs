//! `cargo fuzz run request_info` (from `authz-server/`): the RequestInfo parser returns
//! for any method, path and query, and a resource result is always internally sound.
#![no_main]

use kubegate_authz_server::request_info::{parse, RequestInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (method, path, query) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if let Ok(RequestInfo::Resource(r)) = parse(method, path, query) {
        assert!(r.api_prefix == "api" || r.api_prefix == "apis");
        assert!(!r.api_version.is_empty() || path.contains("//"));
    }
});

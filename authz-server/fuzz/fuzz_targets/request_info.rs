//! `cargo fuzz run request_info` (from `authz-server/`): reading a request returns for
//! any method and target, a resource result is internally sound, and whatever is
//! accepted has a canonical target that reads back to exactly the same request (the
//! form the filter forwards is the form policy decided on).
#![no_main]

use kubegate_authz_server::request_info::{KubeRequest, RequestInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (method, target) = text.split_once('\n').unwrap_or(("GET", &text));
    let Ok(request) = KubeRequest::read(method, target) else { return };
    if let RequestInfo::Resource(r) = &request.info {
        assert!(r.api_prefix == "api" || r.api_prefix == "apis");
        assert!(!r.api_version.is_empty());
    }
    let canonical = request.canonical_target();
    assert_eq!(KubeRequest::read(method, &canonical).as_ref(), Ok(&request), "{target:?} -> {canonical:?}");
});

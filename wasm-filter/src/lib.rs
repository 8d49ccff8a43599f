//! kubegate's proxy-wasm filter.
//!
//! One filter, configured into two places of the Envoy HTTP chain:
//!
//! * [`Stage::Strip`], before ext_authz: removes every client-sent `Impersonate-*`
//!   header (and anything in kubegate's own `x-kubegate-` namespace), and hands what the
//!   client asked for to authz-server as one `x-kubegate-client-impersonation` header,
//!   so that authz-server, not the client, decides what `kubectl --as` means.
//! * [`Stage::Inject`], after ext_authz: reads the [`Decision`] authz-server left in
//!   dynamic metadata, strips again (nothing between the stages may smuggle headers
//!   through), removes the user's `Authorization` header, and adds the impersonation
//!   headers. A missing or malformed decision refuses the request (fail closed).
//!   An exec, attach or port-forward opened under access grants is watched
//!   ([`grant_watch`]): the root context's tick asks authz-server whether the grants
//!   are still active and resets the stream once one is not (an exec or attach first
//!   tells kubectl why, [`farewell`]).
//!
//! The logic lives in [`headers`], [`grant_watch`] and [`farewell`], with no proxy-wasm
//! dependency; the proxy-wasm shell in [`shell`] only adapts the host to it, so the rules
//! are unit-tested natively; [`host_bytes`] turns the host's header bytes into what the
//! rules see without any chance of a panic (a non-UTF-8 byte from a client must not fail
//! the VM).

pub mod config;
pub mod farewell;
pub mod grant_watch;
pub mod headers;
pub mod host_bytes;
mod shell;

pub use config::{FilterConfig, Stage};
pub use kubegate_decision::Decision;

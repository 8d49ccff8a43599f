//! kubegate's test support: the API-server stand-in, TLS material, and the harness that
//! starts real Envoy, the real wasm filter, authz-server, the real OIDC provider and
//! real kubectl, used by the end-to-end tests and by `make sandbox`.

pub mod apiserver;
pub mod envoy_config;
pub mod go_oracle;
pub mod harness;
pub mod mesh_chain;
pub mod tls;

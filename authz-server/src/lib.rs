//! kubegate's authorization server: the Envoy ext_authz gRPC service that turns a
//! kubectl request carrying an OpenID Connect token into the Kubernetes identity the
//! gateway impersonates.
//!
//! The map: [`config`] reads the YAML file; [`oidc`] verifies tokens and maps claims to
//! an identity; [`client_impersonation`] reads what the client asked to impersonate;
//! [`cluster_selection`] picks the cluster a request is for;
//! [`request_info`] parses what a request asks to do, as kube-apiserver does;
//! [`policy`] evaluates Cedar policies; [`privilege`] resolves privilege levels; [`rules`]
//! holds and reloads both; [`check`] answers Envoy's `Check` calls; [`whoami`] answers
//! `kubegate whoami`; [`metrics`] counts what happened; [`probes`] answers kubelet;
//! [`upstream_health`] checks that each cluster answers the gateway, [`doctor`] everything
//! an operator should check, with [`rbac_model`] reading the cluster's bindings and
//! [`envoy_routes`] Envoy's routes; [`access`] is just-in-time access (workflows,
//! requests, signed grants, their API); [`discovery`] watches each cluster's RBAC
//! for admins (subjects, roles, level suggestions, drift); [`http_api`] is what both
//! HTTP APIs share, and [`kube_client`] how authz-server reaches a cluster itself;
//! [`server`] puts the
//! gRPC services on a socket, through [`grpc_tls`] when Envoy reaches it over a network.

#![forbid(unsafe_code)]

pub mod access;
pub mod check;
pub mod client_impersonation;
pub mod cluster_selection;
pub mod config;
pub mod decision_cache;
pub mod discovery;
pub mod doctor;
pub mod envoy_routes;
pub mod error_text;
pub mod explain;
pub mod grpc_tls;
pub mod http_api;
pub mod kube_client;
pub mod metrics;
pub mod oidc;
pub mod policy;
pub mod privilege;
pub mod probes;
pub mod rbac_model;
pub mod request_info;
pub mod rules;
pub mod server;
pub mod upstream_health;
pub mod whoami;

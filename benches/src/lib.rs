//! kubegate's benchmarks. Criterion micro-benchmarks are in `benches/`; the load
//! benchmark through Envoy is the `kubegate-load-bench` binary, whose parts live here:
//! [`load`] generates HTTP/2 or HTTP/1.1 load and measures latency, [`h2load`] drives
//! h2load for the single-user rows, [`grpc_load`] calls
//! authz-server's `Check` directly, [`process`] reads a
//! process's CPU time and peak memory and pins it to a CPU, [`breakdown`] cuts the
//! gateway's filter chain apart to show what each filter costs Envoy; [`header_lines`] is
//! the header list the filter's criterion benchmarks run on.

pub mod breakdown;
pub mod grpc_load;
pub mod h2load;
pub mod header_lines;
pub mod load;
pub mod process;

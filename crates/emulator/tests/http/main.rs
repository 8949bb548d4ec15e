//! Integration tests: the real emulator on `127.0.0.1:0`, driven over HTTP with reqwest.
//!
//! One test binary with a module per area. Every test starts its own emulator so tests can
//! run in parallel and inject faults without affecting each other.

mod aci;
mod arm;
mod auth;
mod authz;
mod deployments;
mod faults;
mod robustness;
mod sdk_python;
mod support;
mod tls;

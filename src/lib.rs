//! jwt-gateway: a TLS-terminating reverse proxy that validates JWT bearer tokens against each
//! issuer's JWKS and each route's audience and claim rules, then forwards the request with the
//! verified claims as headers.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

// The facade the binary, the integration tests, the benches and the fuzz targets use; the
// other modules are the crate's own, so the compiler sees what nothing calls.
pub mod assertion;
pub mod auth;
pub mod claims;
pub mod cli;
pub mod config;
pub mod demo;
pub mod denial;
pub mod path;
pub mod proxy;
pub mod reload;
pub mod trace;

mod admin;
mod algorithm;
mod body;
mod gateway;
mod grpc;
mod logging;
mod metrics;
mod rules;
mod server;
mod signing_key;
mod snapshot;
mod tls;
mod upstream;

pub use gateway::{Gateway, GatewayOptions};
pub use server::listener::{serve, Listeners, DRAIN_DEADLINE};

/// Makes aws-lc-rs the process-wide rustls provider (reqwest and hyper-rustls pick it up).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

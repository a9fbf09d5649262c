//! jwt-gateway: a TLS-terminating reverse proxy that validates JWT bearer tokens against each
//! issuer's JWKS and each route's audience and claim rules, then forwards the request with the
//! verified claims as headers.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admin;
pub mod algorithm;
pub mod auth;
pub mod body;
pub mod claims;
pub mod cli;
pub mod config;
pub mod demo;
pub mod denial;
pub mod gateway;
pub mod grpc;
pub mod logging;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod reload;
pub mod rules;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;

pub use gateway::{Gateway, GatewayOptions};
pub use server::listener::{serve, Listeners, DRAIN_DEADLINE};

/// Makes aws-lc-rs the process-wide rustls provider (reqwest and hyper-rustls pick it up).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

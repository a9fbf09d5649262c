//! The one integration-test binary: real servers on loopback, the real gateway in-process.

mod support;

mod attacks;
mod audit;
mod auth;
mod binding;
mod browser;
mod chromium;
mod cli;
mod demo;
mod differential;
mod explain;
mod faults;
mod forward_auth;
mod grpc;
mod hostile;
mod jwks;
mod metrics;
mod prometheus;
mod proxy;
mod reload;
mod revocation;
mod smoke;
mod throttle;
mod token_props;
mod tracing;
mod wycheproof;

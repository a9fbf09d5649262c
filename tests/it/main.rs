//! The one integration-test binary: real servers on loopback, the real gateway in-process.

mod support;

mod smoke;
mod revocation;
mod throttle;

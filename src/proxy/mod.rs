//! The request path from a parsed HTTP request to an upstream response: normalize, route,
//! authenticate, authorize, rewrite, forward. `pipeline` holds the order and its reasons.

pub mod headers;
pub mod pipeline;
pub mod shape;

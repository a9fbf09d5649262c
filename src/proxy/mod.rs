//! The request path from a parsed HTTP request to an upstream response: normalize, route,
//! authenticate, authorize, rewrite, forward. `pipeline` holds the order and its reasons; the
//! proxy and the explainer (`explain`) are two backs of the same stages.

pub(crate) mod cors;
pub(crate) mod decision;
pub mod explain;
pub(crate) mod headers;
pub mod host;
pub mod pipeline;
pub(crate) mod shape;
pub(crate) mod target;

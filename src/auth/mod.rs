//! Authentication and authorization: who sent the request (a verified token) and may they call
//! this route. Nothing here knows about HTTP forwarding; `proxy` calls in.

pub mod bearer;
pub mod binding;
pub(crate) mod cache;
pub mod dpop;
pub mod jwk;
pub(crate) mod keyset;
pub mod replay;
pub mod revocation;
pub(crate) mod throttle;
pub mod token;
pub mod token_source;
pub mod verify;

// The vocabulary config shares with auth lives in leaf modules, so config never imports auth.
pub use crate::algorithm::{Algorithm, AlgorithmSet, KeyType};

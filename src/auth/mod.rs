//! Authentication and authorization: who sent the request (a verified token) and may they call
//! this route. Nothing here knows about HTTP forwarding; `proxy` calls in.

pub mod bearer;
pub mod cache;
pub mod jwk;
pub mod keyset;
pub mod revocation;
pub mod throttle;
pub mod token;
pub mod verify;

// The vocabulary config shares with auth lives in leaf modules, so config never imports auth.
pub use crate::algorithm::{Algorithm, KeyType};
pub use crate::rules;

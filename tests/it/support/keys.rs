//! Signing keys and tokens: the library's one minter (`jwt_gateway::demo::mint`, shared with the
//! demo issuer and the benches), and the claims most tests start from.

use serde_json::Value;

pub use jwt_gateway::demo::mint::{b64, mint_raw, now, random_id, Material, SigningKey};

/// Claims that pass a provider with `issuer` and audience `aud`, valid for an hour: user
/// `alice` with realm roles `orders.read` and `user` and scope `orders:read profile`.
pub fn claims(issuer: &str, aud: &str) -> Value {
    jwt_gateway::demo::mint::user_claims(
        issuer,
        Some(aud),
        "alice",
        &["orders.read", "user"],
        "orders:read profile",
    )
}

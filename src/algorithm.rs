//! The JWS algorithms the gateway can verify, and the key type each needs: vocabulary shared by
//! the config (allow-lists) and auth (verification), so neither imports the other for it.

use std::fmt;

/// A JWS algorithm the gateway can verify. `none` has no variant: it cannot be configured,
/// parsed or accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 12] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    pub const ALL_NAMES: &'static str =
        "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

    /// Exact, case-sensitive names as RFC 7518 spells them: `rs256` is not `RS256`.
    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    pub fn is_hmac(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }

    /// The JWK key type this algorithm needs, so no key is ever used by a foreign algorithm family.
    pub fn key_type(self) -> KeyType {
        match self {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyType::Oct,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyType::Rsa,
            Algorithm::ES256 => KeyType::EcP256,
            Algorithm::ES384 => KeyType::EcP384,
            Algorithm::EdDSA => KeyType::Ed25519,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    Oct,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// A set of the asymmetric algorithms (RS/PS/ES/EdDSA), as the `algs` of a DPoP challenge names
/// them. A bit per algorithm keeps it `Copy`, so a [`crate::denial::Denial`] can carry it and the
/// challenge text is rendered once per set, not once per refusal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AlgorithmSet(u16);

impl AlgorithmSet {
    /// The asymmetric algorithms, in the order a challenge lists them; a set's bit `i` is
    /// `ASYMMETRIC[i]`.
    pub const ASYMMETRIC: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    /// How many distinct sets there are: every subset of `ASYMMETRIC`.
    pub const COUNT: usize = 1 << Self::ASYMMETRIC.len();

    /// The asymmetric members of `algorithms`; HMAC algorithms are left out, since a proof is
    /// signed with the client's own public key.
    pub fn asymmetric(algorithms: &[Algorithm]) -> AlgorithmSet {
        let bits = Self::ASYMMETRIC
            .iter()
            .enumerate()
            .filter(|(_, a)| algorithms.contains(a))
            .fold(0u16, |bits, (i, _)| bits | (1 << i));
        AlgorithmSet(bits)
    }

    pub fn contains(self, alg: Algorithm) -> bool {
        Self::ASYMMETRIC
            .iter()
            .position(|a| *a == alg)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A number below [`AlgorithmSet::COUNT`], unique to this set.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Algorithm> {
        Self::ASYMMETRIC
            .into_iter()
            .filter(move |a| self.contains(*a))
    }

    /// The names, space-separated, as RFC 9449 section 7.1 writes `algs`.
    pub fn names(self) -> String {
        self.iter()
            .map(Algorithm::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_only_asymmetric_algorithms_in_a_fixed_order() {
        let set = AlgorithmSet::asymmetric(&[Algorithm::EdDSA, Algorithm::HS256, Algorithm::ES256]);
        assert_eq!(set.names(), "ES256 EdDSA");
        assert!(set.contains(Algorithm::ES256) && !set.contains(Algorithm::HS256));
        assert!(AlgorithmSet::asymmetric(&[Algorithm::HS512]).is_empty());
        let all = AlgorithmSet::asymmetric(&Algorithm::ALL);
        assert_eq!(all.index(), AlgorithmSet::COUNT - 1);
        assert_eq!(all.iter().count(), 9);
    }
}

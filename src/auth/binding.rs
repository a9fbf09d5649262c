//! Sender-constrained tokens: a token whose `cnf` claim binds it to a client certificate
//! (RFC 8705 `x5t#S256`) or to a client key (RFC 9449 `jkt`) is accepted only from a request that
//! proves it holds that certificate or key, on every request, cached token or not.

use aws_lc_rs::digest;
use http::header::{GetAll, HeaderValue};
use http::Method;
use serde_json::Value;

use super::bearer::Scheme;
use super::cache::CachedToken;
use super::dpop::{verify_proof, Expected, ProofFault};
use super::replay::{Claim, Mode, ReplayCache, ReplayError};
use super::revocation::Revocations;
use super::token::{b64_decode, unix_now};
use crate::config::RequireBinding;

/// What a request brings to prove a token's binding.
pub struct Presented<'a> {
    /// The scheme the token came under, and the token as sent (for `ath`).
    pub scheme: Scheme,
    pub token: &'a [u8],
    /// Every `DPoP` header of the request.
    pub proofs: GetAll<'a, HeaderValue>,
    pub method: &'a Method,
    /// Whether a proof's `htu` names the URI the client used (the proxy normalizes both).
    pub htu: &'a (dyn Fn(&str) -> bool + Sync),
    /// The client certificate of the connection, if the handshake verified one.
    pub client_cert: Option<CertThumbprint>,
    /// Longest proof taken.
    pub max_proof_bytes: usize,
    /// `LookOnly` for the explainer, which must not use up a proof.
    pub replay: Mode,
}

/// What the request proved; `None` for a token that is not sender-constrained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proven {
    pub dpop: bool,
    pub mtls: bool,
}

impl Proven {
    /// For `check --request`.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match (self.dpop, self.mtls) {
            (true, true) => "DPoP proof and client certificate match the token",
            (true, false) => "DPoP proof matches the token (cnf.jkt)",
            (false, true) => "client certificate matches the token (cnf.x5t#S256)",
            (false, false) => "the token is not sender-constrained",
        }
    }
}

/// Why a token's binding was not proven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingFault {
    /// The token names a binding the request does not prove (a certificate it lacks, a `jkt`
    /// under `Bearer`, DPoP to a provider without `dpop`), or the route wants a binding the token
    /// lacks: 401 `invalid_token`.
    Token(&'static str),
    /// The DPoP proof failed a check: 401 `invalid_dpop_proof`.
    Proof(ProofFault),
    /// The replay cache could not say whether the proof is new: 503.
    Replay(ReplayError),
}

/// Checks that the request proves what the verified, possibly cached, `entry` is bound to, and
/// that the route's `require` is met. Runs on every request: a cached token still needs a fresh
/// proof (and the same certificate) each time.
///
/// # Errors
///
/// The [`BindingFault`] of the first check that fails.
pub async fn check_binding(
    entry: &CachedToken,
    presented: &Presented<'_>,
    require: RequireBinding,
    replay: &ReplayCache,
    revocations: &Revocations,
) -> Result<Proven, BindingFault> {
    let (jkt, x5t) = confirmation(&entry.claims.claims)?;
    let mtls = match x5t {
        Some(x5t) => {
            if !presented.client_cert.is_some_and(|c| c.matches(x5t)) {
                return Err(BindingFault::Token(
                    "no client certificate matches cnf.x5t#S256",
                ));
            }
            true
        }
        None => false,
    };
    let dpop = match presented.scheme {
        Scheme::Dpop => {
            prove_possession(entry, presented, jkt, replay, revocations).await?;
            true
        }
        // A key-bound token is worthless without its proof, and `Bearer` brings none.
        Scheme::Bearer if jkt.is_some() => {
            return Err(BindingFault::Token("a DPoP-bound token came as Bearer"));
        }
        Scheme::Bearer => false,
    };
    let met = match require {
        RequireBinding::None => true,
        RequireBinding::Dpop => dpop,
        RequireBinding::Mtls => mtls,
        RequireBinding::Any => dpop || mtls,
    };
    if !met {
        return Err(BindingFault::Token(
            "the route requires a sender-constrained token",
        ));
    }
    Ok(Proven { dpop, mtls })
}

/// The token's `cnf.jkt` and `cnf["x5t#S256"]` (RFC 7800); a `cnf` of the wrong shape is a
/// binding the gateway cannot check, so it is refused rather than ignored.
fn confirmation(
    claims: &serde_json::Map<String, Value>,
) -> Result<(Option<&str>, Option<&str>), BindingFault> {
    let malformed = BindingFault::Token("cnf is malformed");
    let cnf = match claims.get("cnf") {
        None => return Ok((None, None)),
        Some(Value::Object(cnf)) => cnf,
        Some(_) => return Err(malformed),
    };
    // RFC 7800 names other methods (`jwk`, `jwe`, `kid`, `jku`); a token bound by one of them is
    // not a bearer token, and this gateway cannot check it.
    if cnf.keys().any(|k| k != "jkt" && k != "x5t#S256") {
        return Err(BindingFault::Token(
            "cnf names a confirmation method this gateway cannot check",
        ));
    }
    let member = |name: &str| match cnf.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(malformed),
    };
    Ok((member("jkt")?, member("x5t#S256")?))
}

/// The one `DPoP` proof of the request, checked against it and the token, then claimed in the
/// replay cache (last, so a refused proof uses up nothing).
async fn prove_possession(
    entry: &CachedToken,
    presented: &Presented<'_>,
    jkt: Option<&str>,
    replay: &ReplayCache,
    revocations: &Revocations,
) -> Result<(), BindingFault> {
    let provider = &entry.provider.config;
    let Some(dpop) = &provider.dpop else {
        return Err(BindingFault::Token(
            "this token's provider takes no DPoP proofs",
        ));
    };
    let mut proofs = presented.proofs.iter();
    let proof = match (proofs.next(), proofs.next()) {
        (Some(p), None) => p,
        (None, _) => return Err(BindingFault::Proof(ProofFault::Missing)),
        (Some(_), Some(_)) => return Err(BindingFault::Proof(ProofFault::Duplicate)),
    };
    let now = unix_now();
    let clock_skew = provider.clock_skew.as_secs_f64();
    let accepted = verify_proof(
        proof.as_bytes(),
        &Expected {
            method: presented.method,
            htu: presented.htu,
            token: presented.token,
            jkt,
            algorithms: dpop.algorithms,
            now,
            max_age: dpop.max_age.as_secs_f64(),
            clock_skew,
            max_bytes: presented.max_proof_bytes,
        },
    )
    .map_err(BindingFault::Proof)?;
    // Remembered one `clock_skew` past its own window: another instance's clock may run that
    // much behind this one's.
    let until = accepted.usable_until + clock_skew;
    let claim = replay
        .claim(
            dpop.replay,
            revocations,
            accepted.replay_key,
            now,
            until,
            presented.replay,
        )
        .await
        .map_err(BindingFault::Replay)?;
    match claim {
        Claim::Fresh => Ok(()),
        Claim::Replayed => Err(BindingFault::Proof(ProofFault::Replayed)),
    }
}

/// The SHA-256 of a client certificate's DER, as RFC 8705 3.1 compares it with `x5t#S256`. Read
/// from the TLS connection once, after the handshake verified the certificate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CertThumbprint([u8; 32]);

impl CertThumbprint {
    pub fn of_certificate(der: &[u8]) -> CertThumbprint {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
        CertThumbprint(bytes)
    }

    /// Whether a token's `cnf["x5t#S256"]` (base64url, unpadded, canonical) names this
    /// certificate.
    pub fn matches(&self, x5t_s256: &str) -> bool {
        b64_decode(x5t_s256).is_some_and(|claimed| claimed == self.0)
    }
}

impl std::fmt::Debug for CertThumbprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A certificate's hash is not secret, but nothing needs it in a log line either.
        f.write_str("CertThumbprint(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash is the one Python's hashlib and base64 compute for the same bytes; the
    /// integration tests compare it with certificates made by Python's `cryptography`.
    #[test]
    fn a_thumbprint_is_the_sha256_of_the_der_in_base64url() {
        let der = b"not a certificate, but any bytes hash the same way";
        let thumbprint = CertThumbprint::of_certificate(der);
        let expected = "2ZBeBS-edfshJ9iLshYPxCEDAiHz1p6JvYRbB2Pb6i8";
        assert!(thumbprint.matches(expected), "computed elsewhere");
        assert!(!thumbprint.matches(&format!("{expected}=")), "padded");
        assert!(!thumbprint.matches("3ZBeBS-edfshJ9iLshYPxCEDAiHz1p6JvYRbB2Pb6i8"));
        assert!(!thumbprint.matches(""));
    }
}

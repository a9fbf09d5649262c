//! Sender-constrained tokens: a token whose `cnf` claim binds it to a client certificate
//! (RFC 8705 `x5t#S256`) or to a client key (RFC 9449 `jkt`) is accepted only from a request that
//! proves it holds that certificate or key, on every request, cached token or not.

use aws_lc_rs::digest;

use super::token::b64_decode;

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

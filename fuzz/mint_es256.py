"""Mints the fixed ES256 key and token embedded in fuzz_targets/verify.rs (run once, by hand).

The private key is thrown away: the fuzz target only ever needs the public JWK and one token
it signed. Prints the three Rust constants; paste them over the old ones to re-mint. `TWIN` is
the same token with the signature's other valid spelling (r, n - s): ECDSA verifies both.
"""
import base64
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def part(obj) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


key = ec.generate_private_key(ec.SECP256R1())
numbers = key.public_key().public_numbers()
jwk = {
    "kty": "EC",
    "crv": "P-256",
    "use": "sig",
    "alg": "ES256",
    "kid": "fuzz-es256",
    "x": b64(numbers.x.to_bytes(32, "big")),
    "y": b64(numbers.y.to_bytes(32, "big")),
}
header = {"alg": "ES256", "typ": "JWT", "kid": "fuzz-es256"}
claims = {"iss": "https://fuzz.example", "sub": "fuzz", "aud": "fuzz-api", "exp": 4102444800}
signing_input = f"{part(header)}.{part(claims)}"
r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
# JWS wants fixed-width r||s (RFC 7518 3.4), not DER; low s, so the token is in the form most
# signers emit.
n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
s = min(s, n - s)
token = f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
twin = f"{signing_input}.{b64(r.to_bytes(32, 'big') + (n - s).to_bytes(32, 'big'))}"
print(f'const JWKS: &str = r#"{json.dumps({"keys": [jwk]}, separators=(",", ":"))}"#;')
print(f'const TOKEN: &str = "{token}";')
print(f'const TWIN: &str = "{twin}";')

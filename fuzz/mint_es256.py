"""Mints the fixed ES256 key and token embedded in fuzz_targets/verify.rs (run once, by hand).

The private key is thrown away: the fuzz target only ever needs the public JWK and one token
it signed. Prints the three Rust constants; paste them over the old ones to re-mint. `TWIN` is
the same token with the signature's other valid spelling (r, n - s): ECDSA verifies both.
Signs through bench/jwt_mint.py, the repository's one Python minter.
"""
import os
import sys

from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from jwt_mint import P256_ORDER, b64url, es256_fixed, es256_rs, jwks, p256_jwk, part  # noqa: E402

key = ec.generate_private_key(ec.SECP256R1())
header = {"alg": "ES256", "typ": "JWT", "kid": "fuzz-es256"}
claims = {"iss": "https://fuzz.example", "sub": "fuzz", "aud": "fuzz-api", "exp": 4102444800}
signing_input = f"{part(header)}.{part(claims)}"
r, s = es256_rs(key, signing_input.encode())
# Low s, so the token is in the form most signers emit.
s = min(s, P256_ORDER - s)
token = f"{signing_input}.{b64url(es256_fixed(r, s))}"
twin = f"{signing_input}.{b64url(es256_fixed(r, P256_ORDER - s))}"
print(f'const JWKS: &str = r#"{jwks(p256_jwk(key.public_key(), "fuzz-es256"))}"#;')
print(f'const TOKEN: &str = "{token}";')
print(f'const TWIN: &str = "{twin}";')

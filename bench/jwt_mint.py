"""The one JWT minter of the repository's Python scripts: bench/mint.py (RS256 tokens for the load
benchmark), bench/soak/soak.py (ES256 tokens for the soak) and fuzz/mint_es256.py (the fuzz
target's fixed token). Standard library plus the `cryptography` package; the Rust side's twin is
src/demo/mint.rs.

    key = load_private_key("key.pem")
    token = mint({"alg": "RS256", "typ": "JWT", "kid": "k1"}, claims, rs256_signer(key))

The import is by file: scripts outside bench/ put this folder on sys.path first.
"""

import base64
import json

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

# The order of the P-256 group: (r, n - s) is the other valid spelling of an ECDSA signature.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def b64url(data: bytes) -> str:
    """Unpadded base64url, the encoding of every JWS part."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def part(obj) -> str:
    """A header or payload as compact JSON in base64url."""
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def mint(header, claims, sign) -> str:
    """A compact JWS: `sign(signing_input_bytes)` returns the raw signature."""
    signing_input = part(header) + "." + part(claims)
    return signing_input + "." + b64url(sign(signing_input.encode("ascii")))


def load_private_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def write_private_key(key, path):
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def rs256_signer(key):
    return lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def es256_rs(key, data: bytes):
    """The ECDSA P-256 signature of `data` as the integers (r, s)."""
    return decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))


def es256_fixed(r: int, s: int) -> bytes:
    """JWS wants fixed-width r || s (RFC 7518 3.4), not the DER `cryptography` returns."""
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def es256_signer(key):
    return lambda data: es256_fixed(*es256_rs(key, data))


def uint_b64(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def rsa_jwk(public_key, kid, alg="RS256"):
    pub = public_key.public_numbers()
    return {"kty": "RSA", "use": "sig", "alg": alg, "kid": kid, "n": uint_b64(pub.n), "e": uint_b64(pub.e)}


def p256_jwk(public_key, kid):
    pub = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "use": "sig",
        "alg": "ES256",
        "kid": kid,
        "x": b64url(pub.x.to_bytes(32, "big")),
        "y": b64url(pub.y.to_bytes(32, "big")),
    }


def jwks(*jwk) -> str:
    """A JWKS document, compact."""
    return json.dumps({"keys": list(jwk)}, separators=(",", ":"))

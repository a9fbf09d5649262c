#!/usr/bin/env python3
"""Key material and tokens for the load benchmark (bench/run.sh).

    mint.py jwks  KEY.pem KID                      -> prints the JWKS (public part only)
    mint.py mint  KEY.pem KID ISS AUD COUNT OUT [--exp-days D] [--workers W] [--start S]
                                                   -> OUT: COUNT distinct RS256 tokens, one a line

Tokens differ in `sub` and `jti`, so each one is a distinct cache key for the gateway. RSA signing
goes through the `cryptography` package (OpenSSL), spread over W processes: about 1,000 RS256
signatures per second per core on the benchmark machine.
"""

import base64
import json
import multiprocessing
import os
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def uint_b64(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def cmd_jwks(key_path, kid):
    pub = load_key(key_path).public_key().public_numbers()
    jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": uint_b64(pub.n), "e": uint_b64(pub.e)}
    print(json.dumps({"keys": [jwk]}, separators=(",", ":")))


_KEY = None
_PARAMS = None


def _worker_init(key_path, params):
    global _KEY, _PARAMS
    _KEY = load_key(key_path)
    _PARAMS = params


def _mint_range(bounds):
    lo, hi = bounds
    kid, iss, aud, iat, exp = _PARAMS
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}, separators=(",", ":")).encode())
    out = []
    for i in range(lo, hi):
        claims = {
            "iss": iss,
            "aud": aud,
            "sub": f"bench-user-{i}",
            "jti": f"bench-{iat}-{i}",
            "iat": iat,
            "exp": exp,
            "scope": "bench:read profile",
        }
        signing_input = header + "." + b64url(json.dumps(claims, separators=(",", ":")).encode())
        sig = _KEY.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        out.append(signing_input + "." + b64url(sig))
    return "\n".join(out) + "\n"


def cmd_mint(key_path, kid, iss, aud, count, out_path, exp_days=30, workers=None, start=0):
    now = int(time.time())
    params = (kid, iss, aud, now - 60, now + exp_days * 86400)
    workers = workers or os.cpu_count() or 1
    chunk = 2000
    ranges = [(lo, min(lo + chunk, start + count)) for lo in range(start, start + count, chunk)]
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        if workers == 1:
            _worker_init(key_path, params)
            for r in ranges:
                f.write(_mint_range(r))
        else:
            with multiprocessing.Pool(workers, initializer=_worker_init, initargs=(key_path, params)) as pool:
                for text in pool.imap(_mint_range, ranges):
                    f.write(text)
    os.replace(tmp, out_path)


def main(argv):
    if len(argv) >= 3 and argv[0] == "jwks":
        cmd_jwks(argv[1], argv[2])
        return 0
    if len(argv) >= 7 and argv[0] == "mint":
        opts = {"exp_days": 30, "workers": None, "start": 0}
        rest = argv[7:]
        while rest:
            flag, value, rest = rest[0], rest[1], rest[2:]
            opts[flag.lstrip("-").replace("-", "_")] = int(value)
        cmd_mint(argv[1], argv[2], argv[3], argv[4], int(argv[5]), argv[6], **opts)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

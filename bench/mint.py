#!/usr/bin/env python3
"""Key material and tokens for the load benchmark (bench/run.sh).

    mint.py jwks  KEY.pem KID                      -> prints the JWKS (public part only)
    mint.py mint  KEY.pem KID ISS AUD COUNT OUT [--exp-days D] [--workers W] [--start S]
                                                   -> OUT: COUNT distinct RS256 tokens, one a line

Tokens differ in `sub` and `jti`, so each one is a distinct cache key for the gateway. They are
signed by bench/jwt_mint.py through the `cryptography` package (OpenSSL), spread over W processes:
about 1,000 RS256 signatures per second per core on the benchmark machine.
"""

import multiprocessing
import os
import sys
import time

from jwt_mint import load_private_key, mint, rs256_signer, rsa_jwk, jwks


def cmd_jwks(key_path, kid):
    print(jwks(rsa_jwk(load_private_key(key_path).public_key(), kid)))


_SIGN = None
_PARAMS = None


def _worker_init(key_path, params):
    global _SIGN, _PARAMS
    _SIGN = rs256_signer(load_private_key(key_path))
    _PARAMS = params


def _mint_range(bounds):
    lo, hi = bounds
    kid, iss, aud, iat, exp = _PARAMS
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
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
        out.append(mint(header, claims, _SIGN))
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

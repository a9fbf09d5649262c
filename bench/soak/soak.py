#!/usr/bin/env python3
"""The soak benchmark's moving parts (bench/soak.sh runs them; standard library + `cryptography`).

    soak.py keys     DIR                  -> DIR/jwks.json and three P-256 keys (signing, forger, rogue)
    soak.py jwks     PORT JWKS FLAP_S     -> a JWKS endpoint that answers 200 and 500 in turn, FLAP_S each
    soak.py upstream PORT                 -> an HTTP/1.1 keep-alive upstream with a WebSocket echo
    soak.py drive    OPTIONS              -> mixed traffic for a while, config reloads, the report

Everything listens on and talks to 127.0.0.1 only. Every loop is bounded by a deadline.
"""

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The shared minter, bench/jwt_mint.py, one folder up.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import jwt_mint  # noqa: E402

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
ISSUER_AUD = "soak-api"


# ------------------------------------------------------------------------------------------------
# keys
# ------------------------------------------------------------------------------------------------
def cmd_keys(out_dir):
    from cryptography.hazmat.primitives.asymmetric import ec

    os.makedirs(out_dir, exist_ok=True)
    keys = {}
    for name in ("signing", "forger", "rogue"):
        keys[name] = ec.generate_private_key(ec.SECP256R1())
        jwt_mint.write_private_key(keys[name], os.path.join(out_dir, f"{name}.pem"))
    with open(os.path.join(out_dir, "jwks.json"), "w") as f:
        f.write(jwt_mint.jwks(jwt_mint.p256_jwk(keys["signing"].public_key(), "soak-1")))


class Minter:
    """ES256 tokens: valid ones, expired ones, forged ones (another key under the trusted kid)
    and rogue ones (a kid the JWKS never lists, so the gateway refetches)."""

    def __init__(self, key_dir, issuer):
        self.signers = {
            name: jwt_mint.es256_signer(jwt_mint.load_private_key(os.path.join(key_dir, f"{name}.pem")))
            for name in ("signing", "forger", "rogue")
        }
        self.issuer = issuer

    def mint(self, key, kid, sub, jti, iat, exp):
        header = {"alg": "ES256", "typ": "JWT", "kid": kid}
        claims = {"iss": self.issuer, "aud": ISSUER_AUD, "sub": sub, "jti": jti, "iat": iat, "exp": exp}
        return jwt_mint.mint(header, claims, self.signers[key])


# ------------------------------------------------------------------------------------------------
# flapping JWKS endpoint
# ------------------------------------------------------------------------------------------------
def cmd_jwks(port, jwks_path, flap_s):
    with open(jwks_path, "rb") as f:
        body = f.read()
    started = time.monotonic()
    served = collections.Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            up = int((time.monotonic() - started) // flap_s) % 2 == 0
            if self.path == "/stats":
                with lock:
                    payload = json.dumps(dict(served)).encode()
                status = 200
            elif self.path == "/jwks" and up:
                payload, status = body, 200
            elif self.path == "/jwks":
                payload, status = b'{"error":"flapping"}', 500
            else:
                payload, status = b"not found", 404
            if self.path == "/jwks":
                with lock:
                    served[str(status)] += 1
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if status == 200 and self.path == "/jwks":
                self.send_header("Cache-Control", "max-age=10")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


# ------------------------------------------------------------------------------------------------
# upstream: HTTP/1.1 keep-alive, WebSocket echo on any path ending in /ws
# ------------------------------------------------------------------------------------------------
async def read_ws_frame(reader):
    b0, b1 = await reader.readexactly(2)
    opcode, masked, length = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    if length > 1 << 20:
        raise ValueError("frame too large for the soak")
    mask = await reader.readexactly(4) if masked else None
    payload = await reader.readexactly(length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def ws_frame(opcode, payload, mask=False):
    head = bytes([0x80 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if mask:
        key = os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


async def read_body(reader, headers):
    if headers.get("transfer-encoding", "").lower().endswith("chunked"):
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return body
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return await reader.readexactly(int(headers.get("content-length", "0")))


def parse_head(head: bytes):
    lines = head.decode("latin-1").split("\r\n")
    start = lines[0]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return start, headers


async def upstream_connection(reader, writer):
    try:
        while True:
            start, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
            method, target, _ = start.split(" ", 2)
            await read_body(reader, headers)
            path = target.split("?", 1)[0]
            if path.endswith("/ws") and headers.get("upgrade", "").lower() == "websocket":
                accept = base64.b64encode(
                    hashlib.sha1((headers.get("sec-websocket-key", "") + WS_GUID).encode()).digest()
                ).decode()
                writer.write(
                    (
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
                    ).encode()
                )
                await writer.drain()
                while True:
                    opcode, payload = await read_ws_frame(reader)
                    if opcode == 0x8:
                        writer.write(ws_frame(0x8, payload[:2]))
                        await writer.drain()
                        return
                    writer.write(ws_frame(0xA if opcode == 0x9 else opcode, payload))
                    await writer.drain()
            body = json.dumps(
                {"method": method, "path": target, "sub": headers.get("x-auth-subject")}
            ).encode()
            close = headers.get("connection", "").lower() == "close"
            writer.write(
                (
                    f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    + ("Connection: close\r\n" if close else "")
                    + "\r\n"
                ).encode()
                + body
            )
            await writer.drain()
            if close:
                return
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def upstream_main(port):
    server = await asyncio.start_server(upstream_connection, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


# ------------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------------
# kind -> (weight, statuses that are the right answer)
KINDS = {
    "valid": (50, {200}),
    "expired": (10, {401}),
    "forged": (10, {401}),
    "unknown_kid": (2, {401, 503}),  # 503 while the JWKS endpoint is down: keys cannot be had
    "anonymous_public": (18, {200}),
    "anonymous_protected": (10, {401}),
}


class Stats:
    def __init__(self):
        self.by_kind = collections.defaultdict(collections.Counter)
        self.unexpected = collections.Counter()
        self.ws_sessions = 0
        self.ws_round_trips = 0

    def record(self, kind, outcome):
        self.by_kind[kind][outcome] += 1
        if outcome not in KINDS.get(kind, (0, {101}))[1]:
            self.unexpected[(kind, outcome)] += 1


async def read_response(reader):
    start, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
    status = int(start.split(" ", 2)[1])
    await read_body(reader, headers)
    return status, headers


class Traffic:
    def __init__(self, args, minter):
        self.args = args
        self.stats = Stats()
        now = int(time.time())
        horizon = now + args.seconds + 3600
        # A fixed pool of valid tokens: after warm-up the gateway's cache holds all of them, so a
        # growing RSS means a leak, not a cache filling up.
        self.valid = [
            minter.mint("signing", "soak-1", f"user-{i}", f"soak-{now}-{i}", now - 60, horizon)
            for i in range(args.valid_tokens)
        ]
        self.expired = [
            minter.mint("signing", "soak-1", f"old-{i}", f"old-{i}", now - 7200, now - 3600) for i in range(50)
        ]
        self.forged = [
            minter.mint("forger", "soak-1", "mallory", f"forged-{i}", now - 60, horizon) for i in range(50)
        ]
        self.rogue = [
            minter.mint("rogue", f"rogue-{i}", "eve", f"rogue-{i}", now - 60, horizon) for i in range(50)
        ]
        self.kinds = list(KINDS)
        self.weights = [KINDS[k][0] for k in self.kinds]

    def request(self, kind):
        n = random.randrange(1_000_000)
        token = None
        path = f"/api/items/{n}"
        if kind == "valid":
            token = random.choice(self.valid)
        elif kind == "expired":
            token = random.choice(self.expired)
        elif kind == "forged":
            token = random.choice(self.forged)
        elif kind == "unknown_kid":
            token = random.choice(self.rogue)
        elif kind == "anonymous_public":
            path = f"/public/items/{n}"
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        return f"GET {path} HTTP/1.1\r\nHost: api.soak.test\r\n{auth}\r\n".encode()

    async def http_worker(self, deadline, interval):
        reader = writer = None
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            kind = random.choices(self.kinds, self.weights)[0]
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(self.args.host, self.args.port)
                writer.write(self.request(kind))
                await writer.drain()
                status, headers = await asyncio.wait_for(read_response(reader), 30)
                self.stats.record(kind, status)
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
                self.stats.record(kind, f"transport:{type(e).__name__}")
                if writer is not None:
                    writer.close()
                writer = None
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if writer is not None:
            writer.close()

    async def ws_worker(self, deadline):
        while time.monotonic() < deadline:
            writer = None
            try:
                reader, writer = await asyncio.open_connection(self.args.host, self.args.port)
                key = base64.b64encode(os.urandom(16)).decode()
                token = random.choice(self.valid)
                writer.write(
                    (
                        "GET /api/ws HTTP/1.1\r\nHost: api.soak.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
                    ).encode()
                )
                await writer.drain()
                start, headers = parse_head(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30))
                status = int(start.split(" ", 2)[1])
                if status != 101:
                    self.stats.record("websocket", status)
                    continue
                for _ in range(10):
                    payload = os.urandom(random.randint(1, 4000))
                    writer.write(ws_frame(0x2, payload, mask=True))
                    await writer.drain()
                    opcode, echoed = await asyncio.wait_for(read_ws_frame(reader), 30)
                    if opcode != 0x2 or echoed != payload:
                        raise ValueError("echo mismatch")
                    self.stats.ws_round_trips += 1
                writer.write(ws_frame(0x8, b"\x03\xe8", mask=True))
                await writer.drain()
                await asyncio.wait_for(read_ws_frame(reader), 30)
                self.stats.record("websocket", 101)
                self.stats.ws_sessions += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
                self.stats.record("websocket", f"transport:{type(e).__name__}")
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(0.2)


def proc_sample(pid):
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kb, fds


def http_get(host, port, path):
    import urllib.request

    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as r:
        return r.read().decode()


def metric_sum(text, family, match=""):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(family) and match in line and not line.startswith("#"):
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total


async def reloader(args, deadline, counter):
    """Every reload_s: the other config variant atomically in place, then SIGHUP."""
    variants = [args.config_a, args.config_b]
    i = 0
    while True:
        wait = min(args.reload_s, deadline - time.monotonic())
        if wait <= 0:
            return
        await asyncio.sleep(wait)
        if time.monotonic() >= deadline:
            return
        i += 1
        tmp = args.config + ".tmp"
        with open(variants[i % 2], "rb") as src, open(tmp, "wb") as dst:
            dst.write(src.read())
        os.replace(tmp, args.config)
        os.kill(args.pid, signal.SIGHUP)
        counter[0] += 1


async def sampler(args, until, samples):
    while time.monotonic() < until:
        samples.append((time.monotonic(), *proc_sample(args.pid)))
        await asyncio.sleep(5)


async def drive(args):
    minter = Minter(args.keys, args.issuer)
    traffic = Traffic(args, minter)
    started = time.monotonic()
    deadline = started + args.seconds
    warmup = min(30.0, max(10.0, args.seconds / 10))
    rss0, fds0 = proc_sample(args.pid)
    reloads = [0]
    samples = []
    interval = args.connections / args.rate
    tasks = [asyncio.create_task(traffic.http_worker(deadline, interval)) for _ in range(args.connections)]
    tasks += [asyncio.create_task(traffic.ws_worker(deadline)) for _ in range(args.ws)]
    tasks.append(asyncio.create_task(reloader(args, deadline, reloads)))
    tasks.append(asyncio.create_task(sampler(args, deadline, samples)))
    await asyncio.sleep(warmup)
    rss_start, fds_start = proc_sample(args.pid)
    last_report = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(min(5, max(0, deadline - time.monotonic())))
        if time.monotonic() - last_report >= 60:
            last_report = time.monotonic()
            served = sum(sum(c.values()) for c in traffic.stats.by_kind.values())
            rss, fds = proc_sample(args.pid)
            print(
                f"soak: {int(time.monotonic() - started)} s, {served} requests, RSS {rss / 1024:.1f} MiB, {fds} fds",
                file=sys.stderr,
                flush=True,
            )
    # Still under traffic, like the start sample: the two compare like for like.
    rss_end, fds_end = proc_sample(args.pid)
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    # The client's connections are closed now; give the gateway a moment to notice, then it should
    # be back near its boot figures (plus idle pooled upstream connections).
    await asyncio.sleep(2)
    idle = proc_sample(args.pid)
    return report(
        args,
        traffic.stats,
        elapsed,
        {"boot": (rss0, fds0), "start": (rss_start, fds_start), "end": (rss_end, fds_end), "idle": idle},
        samples,
        reloads[0],
        warmup,
    )


def report(args, stats, elapsed, at, samples, reloads, warmup):
    metrics = http_get(args.host, args.admin, "/metrics")
    try:
        jwks_served = json.loads(http_get(args.host, args.jwks_port, "/stats"))
    except OSError:
        jwks_served = {}
    total = sum(sum(c.values()) for k, c in stats.by_kind.items() if k != "websocket")
    out = []
    p = out.append
    p(f"# jwt-gateway soak: {elapsed / 60:.1f} min of mixed traffic")
    p("")
    p(
        f"{args.connections} keep-alive connections paced at {args.rate} req/s in total, {args.ws} WebSocket "
        f"clients; JWKS endpoint flapping 200/500 every {args.flap_s} s; config variant swapped and "
        f"SIGHUP sent every {args.reload_s} s. Warm-up before the start sample: {warmup:.0f} s."
    )
    p("")
    p(f"requests served: {total} ({total / elapsed:.0f}/s), WebSocket sessions {stats.ws_sessions} "
      f"({stats.ws_round_trips} echo round trips)")
    p("")
    p("| kind | answers (status: count) | expected |")
    p("|---|---|---|")
    for kind in list(KINDS) + ["websocket"]:
        counts = stats.by_kind.get(kind, {})
        answers = ", ".join(f"{s}: {n}" for s, n in sorted(counts.items(), key=lambda x: str(x[0])))
        expected = "/".join(str(s) for s in sorted(KINDS[kind][1])) if kind in KINDS else "101"
        p(f"| {kind} | {answers or '-'} | {expected} |")
    p("")
    unexpected = sum(stats.unexpected.values())
    p(f"unexpected answers: {unexpected}" + (f" ({dict(stats.unexpected)})" if unexpected else ""))
    by_status = collections.Counter()
    for counts in stats.by_kind.values():
        by_status.update(counts)
    p("all answers by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items(), key=lambda x: str(x[0]))))
    ok_label, error_label = 'result="ok"', 'result="error"'
    refresh_ok = metric_sum(metrics, "gateway_jwks_refresh_total", ok_label)
    refresh_error = metric_sum(metrics, "gateway_jwks_refresh_total", error_label)
    reloads_ok = metric_sum(metrics, "gateway_config_reloads_total", ok_label)
    reloads_error = metric_sum(metrics, "gateway_config_reloads_total", error_label)
    p(
        f"JWKS endpoint answered: {jwks_served}; gateway_jwks_refresh_total ok {refresh_ok:.0f}, "
        f"error {refresh_error:.0f}"
    )
    p(
        f"reloads: {reloads} SIGHUPs (plus the file watcher); gateway_config_reloads_total ok "
        f"{reloads_ok:.0f}, error {reloads_error:.0f}"
    )
    p(f"gateway_token_cache_entries: {metric_sum(metrics, 'gateway_token_cache_entries'):.0f}")
    p("")
    boot, start, end, idle = at["boot"], at["start"], at["end"], at["idle"]
    rss_growth = end[0] - start[0]
    fd_growth = end[1] - start[1]
    idle_fds = idle[1] - boot[1]
    # Idle pooled connections to the upstream (one per client connection at most) and the JWKS
    # client's may outlive the traffic for the pool's idle timeout; nothing else should.
    idle_fd_bound = args.connections + args.ws + 4
    peak = max([s[1] for s in samples] + [end[0]])
    p("| gateway | at boot | start (after warm-up) | end (under traffic) | growth | bound | idle, 2 s after |")
    p("|---|---|---|---|---|---|---|")
    p(
        f"| RSS | {boot[0] / 1024:.1f} MiB | {start[0] / 1024:.1f} MiB | {end[0] / 1024:.1f} MiB | "
        f"{rss_growth / 1024:+.1f} MiB (peak {peak / 1024:.1f}) | {args.max_rss_growth_mb:g} MiB | "
        f"{idle[0] / 1024:.1f} MiB |"
    )
    p(
        f"| open fds | {boot[1]} | {start[1]} | {end[1]} | {fd_growth:+d} | {args.max_fd_growth} | "
        f"{idle[1]} ({idle_fds:+d} on boot, bound {idle_fd_bound}) |"
    )
    per_request = rss_growth * 1024 / max(1, total)
    p("")
    p(f"RSS growth per request served after warm-up: {per_request:.1f} bytes")
    ok = (
        rss_growth <= args.max_rss_growth_mb * 1024
        and fd_growth <= args.max_fd_growth
        and idle_fds <= idle_fd_bound
        and unexpected == 0
        and total > 0
    )
    p("")
    p(
        f"{'PASS' if ok else 'FAIL'}: RSS growth {rss_growth / 1024:+.1f} MiB (bound {args.max_rss_growth_mb:g} MiB), "
        f"fd growth {fd_growth:+d} (bound {args.max_fd_growth}), idle fds {idle_fds:+d} on boot "
        f"(bound {idle_fd_bound}), {unexpected} unexpected answers"
    )
    text = "\n".join(out) + "\n"
    print(text)
    with open(args.report, "w") as f:
        f.write(text)
    return 0 if ok else 1


def main(argv):
    if argv[:1] == ["keys"] and len(argv) == 2:
        cmd_keys(argv[1])
        return 0
    if argv[:1] == ["jwks"] and len(argv) == 4:
        cmd_jwks(int(argv[1]), argv[2], float(argv[3]))
        return 0
    if argv[:1] == ["upstream"] and len(argv) == 2:
        asyncio.run(upstream_main(int(argv[1])))
        return 0
    if argv[:1] == ["drive"]:
        ap = argparse.ArgumentParser(prog="soak.py drive")
        ap.add_argument("--host", default="127.0.0.1")
        ap.add_argument("--port", type=int, required=True)
        ap.add_argument("--admin", type=int, required=True)
        ap.add_argument("--jwks-port", type=int, required=True)
        ap.add_argument("--pid", type=int, required=True)
        ap.add_argument("--keys", required=True)
        ap.add_argument("--issuer", required=True)
        ap.add_argument("--config", required=True)
        ap.add_argument("--config-a", required=True)
        ap.add_argument("--config-b", required=True)
        ap.add_argument("--report", required=True)
        ap.add_argument("--seconds", type=float, required=True)
        ap.add_argument("--rate", type=float, default=400)
        ap.add_argument("--connections", type=int, default=16)
        ap.add_argument("--ws", type=int, default=2)
        ap.add_argument("--valid-tokens", type=int, default=500)
        ap.add_argument("--reload-s", type=float, default=30)
        ap.add_argument("--flap-s", type=float, default=20)
        # The bounds (bench/soak/README.md has the reasoning): after warm-up the working set is
        # fixed (500 cached tokens, 18 client connections), so RSS should move by allocator noise;
        # 100 bytes leaked per request over 10 min at 400 req/s would be 23 MiB and fail. Open
        # fds under traffic: client connections, pooled upstream ones and the JWKS client, all
        # bounded by the connection count; +16 allows for churn at the instant of sampling.
        ap.add_argument("--max-rss-growth-mb", type=float, default=16)
        ap.add_argument("--max-fd-growth", type=int, default=16)
        args = ap.parse_args(argv[1:])
        return asyncio.run(drive(args))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

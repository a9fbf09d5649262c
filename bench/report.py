#!/usr/bin/env python3
"""Turns one bench/run.sh run (its folder: runs.tsv, raw wrk and h2load outputs, h2load's
per-request logs, memory.txt, meta.txt) into the results table, printed and written as Markdown.

    report.py RUN_DIR OUTPUT.md
    report.py latency H2LOAD_LOG OUT      # run.sh, after each h2load run: "count p50_us p99_us"
                                          # into OUT (the log itself, ~25 bytes a request, goes)
"""

import csv
import os
import re
import statistics
import sys

TARGETS = [
    ("gw-anon", "jwt-gateway, `auth: anonymous` route"),
    ("gw-cached", "jwt-gateway, cached token"),
    ("gw-traced-cached", "jwt-gateway, cached token, tracing on (default sample_ratio 0.01)"),
    ("gw-tls-cached", "jwt-gateway, cached token, TLS"),
    ("gw-uncached", "jwt-gateway, new token every request"),
    ("haproxy-pass", "HAProxy pass-through (no auth)"),
    ("nginx-pass", "nginx pass-through (no auth)"),
    ("haproxy-jwt", "HAProxy `jwt_verify`, new token every request"),
    ("gw-grpc", "gRPC unary through jwt-gateway (h2c upstream), cached token"),
    ("grpc-direct", "gRPC unary direct to the same upstream (no gateway)"),
    ("nginx-authreq", "nginx + `auth_request` + jwt-gateway `/nginx` decision, cached token"),
]
# Targets whose gateway's token cache is read (the hit ratio column).
CACHED = {"gw-cached", "gw-traced-cached", "gw-tls-cached", "gw-uncached", "gw-grpc", "nginx-authreq"}
# Targets without a server on core 1: the upstream itself is the server (core 0, with the load).
NO_CORE1_SERVER = {"grpc-direct"}

# (label, numerator, denominator, metric, comparison, target)
RATIOS = [
    ("req/s, cached token vs the same gateway's anonymous route", "gw-cached", "gw-anon", "rps", ">=", 0.95),
    ("req/s, cached token vs HAProxy pass-through", "gw-cached", "haproxy-pass", "rps", ">=", 0.9),
    ("req/s, cached token vs nginx pass-through", "gw-cached", "nginx-pass", "rps", ">=", 0.9),
    ("req/s, new token every request vs HAProxy `jwt_verify`", "gw-uncached", "haproxy-jwt", "rps", ">=", 1.1),
    ("p99 latency, cached token vs anonymous route", "gw-cached", "gw-anon", "p99", "<=", 1.3),
    ("CPU per request, TLS (keep-alive) vs plaintext, cached token", "gw-tls-cached", "gw-cached", "cpu", "<=", 1.15),
]
# Not targets of issue 5, shown because req/s can be capped by the load side (see the notes).
INFO_RATIOS = [
    ("CPU per request, cached token vs anonymous route", "gw-cached", "gw-anon", "cpu"),
    ("CPU per request, cached token vs HAProxy pass-through", "gw-cached", "haproxy-pass", "cpu"),
    ("CPU per request, cached token vs nginx pass-through", "gw-cached", "nginx-pass", "cpu"),
    ("CPU per request, new token every request vs HAProxy `jwt_verify`", "gw-uncached", "haproxy-jwt", "cpu"),
    ("CPU per request, new token vs cached token (gateway)", "gw-uncached", "gw-cached", "cpu"),
]
# Issues 15, 16 and 20: no targets, the ratios the README quotes.
# (label, numerator, denominator, metric)
NEW_RATIOS = [
    ("req/s, gRPC unary: through the gateway vs direct to the same upstream", "gw-grpc", "grpc-direct", "rps"),
    ("p50 latency, gRPC unary: through the gateway vs direct", "gw-grpc", "grpc-direct", "p50"),
    ("CPU per request, gateway: gRPC unary (h2c both sides) vs HTTP/1.1 cached token", "gw-grpc", "gw-cached", "cpu"),
    ("req/s, nginx + `auth_request` + gateway vs nginx alone", "nginx-authreq", "nginx-pass", "rps"),
    ("CPU per request, nginx + `auth_request` + gateway vs nginx alone", "nginx-authreq", "nginx-pass", "cpu"),
    ("p50 latency, nginx + `auth_request` + gateway vs nginx alone", "nginx-authreq", "nginx-pass", "p50"),
    ("req/s, nginx + `auth_request` + gateway vs the gateway as the proxy", "nginx-authreq", "gw-cached", "rps"),
    ("CPU per request, nginx + `auth_request` + gateway vs the gateway as the proxy", "nginx-authreq", "gw-cached", "cpu"),
    # The cost of tracing: a second gateway process of the same binary, with tracing on.
    ("req/s, cached token: tracing at the default ratio vs tracing off", "gw-traced-cached", "gw-cached", "rps"),
    ("CPU per request, cached token: tracing at the default ratio vs tracing off", "gw-traced-cached", "gw-cached", "cpu"),
    ("p99 latency, cached token: tracing at the default ratio vs tracing off", "gw-traced-cached", "gw-cached", "p99"),
]
RSS_TARGET_MB = 250

UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def to_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(path):
    text = open(path).read()
    out = {"p50": None, "p99": None, "requests": 0, "rps": 0.0, "non2xx": 0, "sockerr": 0}
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", text, re.M)
        if m:
            out[key] = to_us(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
        out["seconds"] = to_us(m.group(2) + m.group(3)) / 1e6
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["sockerr"] = sum(int(x) for x in m.groups())
    return out


def latency_summary(log):
    """count, p50 and p99 (µs) of h2load's --log-file (start, HTTP status, microseconds)."""
    times = []
    with open(log) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                times.append(int(parts[2]))
    times.sort()
    if not times:
        return 0, None, None
    pick = lambda q: float(times[min(len(times) - 1, int(q * len(times)))])
    return len(times), pick(0.50), pick(0.99)


def parse_h2load(path):
    """h2load's summary; p50 and p99 from its --log-file (start, HTTP status, microseconds)."""
    text = open(path).read()
    out = {"p50": None, "p99": None, "requests": 0, "rps": 0.0, "non2xx": 0, "sockerr": 0}
    m = re.search(r"^finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s", text, re.M)
    if m:
        out["seconds"] = to_us(m.group(1) + m.group(2)) / 1e6
        out["rps"] = float(m.group(3))
    m = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout", text, re.M)
    if m:
        done, succeeded, failed, errored, timeout = (int(x) for x in m.groups()[2:])
        out["requests"] = done
        out["succeeded"] = succeeded
        out["sockerr"] = failed + errored + timeout
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if m:
        out["non2xx"] = sum(int(x) for x in m.groups()[1:])
    base = os.path.splitext(path)[0]
    if os.path.exists(base + ".latency"):
        n, p50, p99 = open(base + ".latency").read().split()
        if int(n):
            out["p50"], out["p99"] = float(p50), float(p99)
    elif os.path.exists(base + ".log"):
        _, out["p50"], out["p99"] = latency_summary(base + ".log")
    if not out["requests"]:
        out["sockerr"] = max(out["sockerr"], 1)  # no summary: the run did not happen
    return out


def parse_load(path):
    text = open(path).read(4096)
    return parse_h2load(path) if "h2load" in text or "finished in" in text else parse_wrk(path)


def read_kv(path):
    kv = {}
    if os.path.exists(path):
        for line in open(path):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                kv[k] = v
    return kv


def fmt_us(us):
    if us is None:
        return "?"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs"


def drop_empty_tables(lines):
    """A table whose rows were all left out (a --targets run), with the caption line above it."""
    out = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            if i + 2 >= len(lines) or not lines[i + 2].startswith("|"):
                # drop the caption and the blank line before the table, if any
                while out and out[-1] == "":
                    out.pop()
                if out and not out[-1].startswith(("|", "-", "#")):
                    out.pop()
                i += 2
                continue
        if not (lines[i] == "" and out and out[-1] == ""):
            out.append(lines[i])
        i += 1
    return out


def main(run_dir, output):
    meta = read_kv(os.path.join(run_dir, "meta.txt"))
    clk = int(meta.get("clk_tck", "100"))
    smoke = meta.get("mode") == "smoke"
    # A --targets run leaves out the rows and ratios of targets it did not run; a full run shows
    # them as "not run" / "?", so a missing target cannot go unnoticed.
    subset = "--targets" in meta.get("command", "")
    rt = "SCHED_FIFO" in meta.get("pinning", "")

    runs = {}  # target -> round -> figures
    with open(os.path.join(run_dir, "runs.tsv")) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            w = parse_load(row["raw"])
            ticks = int(row["cpu_ticks"])
            wall = float(row["wall_s"])
            cpu_s = ticks / clk
            w["cpu"] = cpu_s * 1e6 / w["requests"] if w["requests"] else None
            # over wrk's own measured time (the window around it also holds wrk's start-up)
            secs = w.get("seconds") or wall
            w["cpu_pct"] = min(100.0, 100 * cpu_s / secs) if secs > 0 else None
            w["core0"] = int(row["core0_busy_pct"])
            w["load_pct"] = min(100.0, 100 * int(row.get("load_ticks") or 0) / clk / secs) if secs > 0 else None
            # the server's core busy beyond the server under test: other processes (only when
            # pinned). Without a server on core 1 (direct gRPC) that is core 0 beyond the load side.
            if row["target"] in NO_CORE1_SERVER:
                w["foreign"] = max(0.0, w["core0"] - (w["load_pct"] or 0))
            else:
                w["foreign"] = max(0.0, int(row["core1_busy_pct"]) - (w["cpu_pct"] or 0))
            hits, misses = int(row["hits"]), int(row["misses"])
            w["hit_ratio"] = hits / (hits + misses) if hits + misses else None
            w["validations"] = hits + misses
            w["grpc_ok"] = int(row["grpc_ok"]) if row.get("grpc_ok") else None
            w["grpc_other"] = int(row["grpc_other"]) if row.get("grpc_other") else None
            runs.setdefault(row["target"], {})[int(row["round"])] = w

    def med(target, key):
        vals = [r[key] for r in runs.get(target, {}).values() if r[key] is not None]
        return statistics.median(vals) if vals else None

    lines = []
    title = "Load benchmark: smoke run (not a measurement)" if smoke else "Load benchmark: latest full run"
    if subset and not smoke:
        title = "Load benchmark: a run of some targets"
    lines.append(f"# {title}")
    lines.append("")
    lines.append(f"- date: {meta.get('date')}; command: `{meta.get('command', 'bash bench/run.sh')}`")
    lines.append(f"- machine: {meta.get('nproc')} cores ({meta.get('cpu')}), {meta.get('mem')}, Linux {meta.get('kernel')}")
    lines.append(f"- pinning: {meta.get('pinning')}")
    lines.append(
        f"- load: wrk {meta.get('wrk')} `-t1 -c{meta.get('connections')} -d{meta.get('duration')}s`, "
        f"{meta.get('rounds')} interleaved round(s), 1 s warm-up before each run; figures are medians over rounds; "
        f"gRPC: h2load {meta.get('h2load', '?')} `-t1 -c{meta.get('grpc_clients', '?')} -m{meta.get('grpc_streams', '?')} "
        f"-D {meta.get('duration')}` (connections x streams in flight)"
    )
    lines.append(
        f"- other load: {meta.get('busy_start')} % of all CPU busy just before the start; "
        f"load average at start / end: {meta.get('loadavg_start')} / {meta.get('loadavg_end')}"
    )
    lines.append(
        f"- servers: {meta.get('gateway')}, HAProxy {meta.get('haproxy')} (1 thread), nginx {meta.get('nginx')} (1 worker); "
        f"origin: nginx `return 200` on core 0; gRPC upstream: nghttpd {meta.get('nghttpd', '?')} (h2c, 1 thread) on core 0"
    )
    lines.append("")
    lines.append("| target | req/s | p50 | p99 | server CPU µs/req | server CPU % | wrk + origin CPU % | core 0 busy % | token cache hits | non-2xx / socket errors |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    problems = []
    for tid, name in TARGETS:
        if tid not in runs:
            if subset:
                continue
            lines.append(f"| {name} | not run | | | | | | | | |")
            continue
        rps, p50, p99, cpu = med(tid, "rps"), med(tid, "p50"), med(tid, "p99"), med(tid, "cpu")
        cpu_pct, core0, load_pct = med(tid, "cpu_pct"), med(tid, "core0"), med(tid, "load_pct")
        hr = med(tid, "hit_ratio") if tid in CACHED else None
        bad = sum(r["non2xx"] + r["sockerr"] for r in runs[tid].values())
        if bad:
            problems.append(f"{name}: {bad} non-2xx responses or socket errors: its figures are not valid")
        if tid == "gw-grpc":
            for rnd, r in sorted(runs[tid].items()):
                ok, other = r["grpc_ok"], r["grpc_other"]
                if ok is None or other is None:
                    problems.append(f"{name}, round {rnd}: no `gateway_grpc_responses_total` read: grpc-status not checked")
                elif other or ok < r.get("succeeded", r["requests"]):
                    problems.append(
                        f"{name}, round {rnd}: the gateway counted {ok} responses with grpc-status 0 and {other} "
                        f"with another status for {r.get('succeeded', r['requests'])} HTTP 2xx: not all were gRPC successes"
                    )
        if tid == "nginx-authreq":
            short = [rnd for rnd, r in runs[tid].items() if r["validations"] < r["requests"]]
            if short:
                problems.append(
                    f"{name}: in round(s) {', '.join(map(str, sorted(short)))} the gateway decided fewer requests than "
                    "nginx answered: not every request was checked"
                )
        foreign = med(tid, "foreign")
        if "core 1" in meta.get("pinning", "") and foreign is not None and foreign > 5:
            core = 0 if tid in NO_CORE1_SERVER else 1
            problems.append(
                f"{name}: core {core} was {foreign:.0f} % busy with other processes besides the server under test: "
                "the machine was not quiet, figures are disturbed"
            )
        if tid == "gw-uncached" and hr is not None and hr > 0.01:
            problems.append(
                f"{name}: {hr:.1%} of the requests were cache hits (the token file ran out and wrapped around): "
                "not a clean uncached measurement" + (" (expected in smoke mode)" if smoke else "")
            )
        lines.append(
            f"| {name} | {rps:,.0f} | {fmt_us(p50)} | {fmt_us(p99)} | "
            f"{cpu:.1f} | {cpu_pct:.0f} | {load_pct:.0f} | {core0:.0f} | "
            f"{'—' if hr is None else f'{hr:.1%}'} | {bad} |"
        )

    def ratio(num, den, key):
        per_round = []
        for rnd, a in runs.get(num, {}).items():
            b = runs.get(den, {}).get(rnd)
            if b and a[key] and b[key]:
                per_round.append(a[key] / b[key])
        if not per_round:
            return None, None, None
        return statistics.median(per_round), min(per_round), max(per_round)

    def fmt_ratio(m, lo, hi):
        if m is None:
            return "?"
        s = f"{m:.2f}×"
        if lo is not None and hi is not None and hi - lo >= 0.005:
            s += f" ({lo:.2f}–{hi:.2f})"
        return s

    lines.append("")
    lines.append("| measure (issue 5 targets) | target | measured | met |")
    lines.append("|---|---:|---:|---|")
    for label, num, den, key, op, tgt in RATIOS:
        if subset and (num not in runs or den not in runs):
            continue
        m, lo, hi = ratio(num, den, key)
        if m is None:
            met = "?"
        elif key == "p99" and rt:
            met = "not judged: SCHED_FIFO run (the kernel's RT throttling stalls every server for up to 50 ms each second)"
        else:
            ok = m >= tgt if op == ">=" else m <= tgt
            met = ("yes" if ok else "**no**") + (" (smoke: not judged)" if smoke else "")
        lines.append(f"| {label} | {'≥' if op == '>=' else '≤'} {tgt}× | {fmt_ratio(m, lo, hi)} | {met} |")

    mem = read_kv(os.path.join(run_dir, "memory.txt"))
    if mem:
        before, after = int(mem["rss_before_kb"]), int(mem["rss_after_kb"])
        growth_mb = (after - before) / 1024
        n = int(mem["tokens"])
        scaled = f" (scaled to 100,000: {growth_mb * 100000 / n:.0f} MB)" if n != 100000 else ""
        ok = growth_mb * 100000 / n <= RSS_TARGET_MB
        met = ("yes" if ok else "**no**") + (" (smoke: not judged)" if smoke else "")
        lines.append(
            f"| memory with {n:,} distinct cached tokens: RSS growth | ≤ {RSS_TARGET_MB} MB | "
            f"{growth_mb:.1f} MB{scaled} ({before / 1024:.1f} → {after / 1024:.1f} MB) | {met} |"
        )
        verified = int(mem.get("verified") or 0)
        if verified < n or int(mem.get("non2xx") or 0):
            problems.append(
                f"memory: only {verified} of {n} tokens were verified ({mem.get('non2xx')} non-2xx): growth understated"
            )
        entries = mem.get("cache_entries", "?")

    lines.append("")
    lines.append("gRPC unary (issue 15), forward-auth decisions (issue 16) and the cost of tracing (issue 20), no targets:")
    lines.append("")
    lines.append("| measure | measured |")
    lines.append("|---|---:|")
    for label, num, den, key in NEW_RATIOS:
        if subset and (num not in runs or den not in runs):
            continue
        lines.append(f"| {label} | {fmt_ratio(*ratio(num, den, key))} |")

    lines.append("")
    lines.append("Not targets, for reading the table:")
    lines.append("")
    lines.append("| measure | measured |")
    lines.append("|---|---:|")
    for label, num, den, key in INFO_RATIOS:
        if subset and (num not in runs or den not in runs):
            continue
        lines.append(f"| {label} | {fmt_ratio(*ratio(num, den, key))} |")
    if mem:
        per_entry = (after - before) * 1024 / max(verified, 1)
        lines.append(f"| memory: bytes of RSS per cached token ({entries} entries in `gateway_token_cache_entries`) | {per_entry:,.0f} |")

    lines.append("")
    lines.append(
        "How to read it: every server under test runs alone on core 1; wrk and the origin share core 0. "
        "\"server CPU µs/req\" is utime+stime of the server's processes (from /proc) over the requests wrk "
        "completed; \"server CPU %\" how busy that made core 1. A server well below ~95 % was not the "
        "bottleneck (the load side or the scheduler was), so its req/s is a floor and CPU µs/req is the "
        "comparable cost; \"wrk + origin CPU %\" shows how much of core 0 the load side used itself "
        "(for the token targets it includes wrk loading the token file). "
        "Ratios are the median of the per-round ratios (min–max over rounds in brackets). "
        "\"New token every request\" walks a file of distinct pre-minted RS256 tokens (a fresh gateway "
        "process each round, so its cache starts empty; the hit ratio comes from the gateway's metrics). "
        "gRPC: h2load sends grpc.health.v1.Health/Check (a 12-byte request message) with the cached token, "
        "its p50/p99 from its per-request log; the upstream, nghttpd on core 0 beside the origin, answers with "
        "a message and the trailer `grpc-status: 0`; through the gateway every response's grpc-status is "
        "counted from the gateway's `gateway_grpc_responses_total`. \"wrk + origin CPU %\" is then h2load + "
        "origin + upstream. For the direct row the upstream is the server (on core 0, next to h2load), so its "
        "\"server CPU\" is the upstream's, also counted in \"wrk + origin CPU %\"; core 1 is idle. "
        "nginx + `auth_request`: nginx and the decision gateway both run on core 1, their CPU is added up; the "
        "\"nginx alone\" it is compared with is the nginx pass-through row."
    )
    if problems:
        lines.append("")
        lines.append("Problems in this run:")
        lines.append("")
        for p in problems:
            lines.append(f"- {p}")
    if subset:
        lines = drop_empty_tables(lines)
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "latency":
        n, p50, p99 = latency_summary(sys.argv[2])
        with open(sys.argv[3], "w") as f:
            f.write(f"{n} {p50 or 0:.0f} {p99 or 0:.0f}\n")
        sys.exit(0)
    sys.exit(main(sys.argv[1], sys.argv[2]))

#!/usr/bin/env python3
"""Offline checks of deploy/ that no off-the-shelf tool does, called by deploy/check.sh.

Each subcommand prints what it found and exits 0 (pass), 1 (fail) or 3 (skipped, with the
reason on stdout). They cross-check the deploy files against CONTRACT.md's metric families
and gateway.yaml schema, which are restated below: a rename there must be made here too
(CONTRACT.md calls such a rename a breaking change anyway).

Needs PyYAML and jsonschema (both come with kubernetes-validate in check.sh's venv).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

SKIP = 3
DEPLOY = Path(__file__).resolve().parent.parent
REPO = DEPLOY.parent

# --------------------------------------------------------------------------------------
# The contract, restated.
# --------------------------------------------------------------------------------------
COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
# family -> (type, labels)
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gateway_requests_total": (COUNTER, ("route", "code")),
    "gateway_request_duration_seconds": (HISTOGRAM, ("route",)),
    "gateway_auth_decisions_total": (COUNTER, ("route", "decision", "reason")),
    "gateway_token_validation_duration_seconds": (HISTOGRAM, ("provider", "cache")),
    "gateway_jwks_refresh_total": (COUNTER, ("provider", "result")),
    "gateway_jwks_keys": (GAUGE, ("provider",)),
    "gateway_jwks_last_success_timestamp_seconds": (GAUGE, ("provider",)),
    "gateway_upstream_duration_seconds": (HISTOGRAM, ("route",)),
    "gateway_upstream_errors_total": (COUNTER, ("route", "kind")),
    "gateway_build_info": (GAUGE, ("version",)),
    "gateway_token_cache_entries": (GAUGE, ()),
    "gateway_config_reloads_total": (COUNTER, ("result",)),
    "gateway_revocations": (GAUGE, ("backend",)),
    "gateway_revocation_sync_total": (COUNTER, ("result",)),
    "gateway_rate_limited_total": (COUNTER, ("route",)),
}
# Label values the contract enumerates.
LABEL_VALUES = {
    "decision": {"allow", "deny"},
    "reason": {"ok", "missing_token", "malformed", "bad_signature", "unknown_kid",
               "alg_not_allowed", "expired", "not_yet_valid", "issuer", "audience",
               "missing_claim", "insufficient_scope", "revoked", "keys_unavailable", "binding"},
    "cache": {"hit", "miss"},
    "result": {"ok", "error"},
    "backend": {"memory", "redis"},
}
# Labels Prometheus (or its Kubernetes discovery) attaches to every scraped series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint",
                 "environment"}
# Series Prometheus itself writes for every target; alerts may use them, the dashboard not.
PROMETHEUS_SERIES = {"up"}

# gateway.yaml keys. A dict is a mapping with exactly these optional keys; "LIST:" + dict is
# a list of such mappings; None is a leaf (any scalar or list of scalars).
ROUTE_AUTH = {"providers": None, "audience": None, "require_binding": None,
              "require": [{"claim": None, "any_of": None, "all_of": None}]}
CONFIG_SCHEMA = {
    "server": {
        "listen": None,
        "tls": {"cert_file": None, "key_file": None, "hsts_max_age": None,
                "client_auth": {"mode": None, "ca_file": None}},
        "insecure_plaintext": None,
        "trusted_proxies": None,
        "limits": {k: None for k in (
            "max_header_bytes", "max_token_bytes", "max_body_bytes", "header_read_timeout",
            "request_timeout", "upstream_connect_timeout", "max_concurrent_streams",
            "auth_failures_per_minute", "idle_timeout", "max_connections",
            "max_connections_per_ip")},
    },
    "token_cache": {"max_entries": None},
    "log": {"level": None, "format": None},
    "admin": {"listen": None, "token_env": None, "tls": {"cert_file": None, "key_file": None}},
    "providers": [{
        "name": None, "issuer": None, "jwks_url": None, "discovery": None, "algorithms": None,
        "shared_secret_env": None, "audiences": None, "clock_skew": None,
        "require_claims": None, "require_typ": None, "allow_insecure_jwks_http": None,
        "jwks": {"refresh_interval": None, "min_refresh": None, "max_stale": None,
                 "fetch_timeout": None},
        "dpop": {"max_age": None, "replay": None},
    }],
    "routes": [{
        "name": None,
        "match": {"host": None, "path_prefix": None, "methods": None},
        "upstream": None,
        "strip_prefix": None,
        "auth": ROUTE_AUTH,           # or the string "anonymous", handled below
        "forward": {"claims": "ANY_MAP", "token": None},
    }],
    "revocation": {"backend": None, "file": None, "redis_url": None},
    "forward_auth": {"listen": None, "tls": {"cert_file": None, "key_file": None},
                     "trusted_proxies": None},
}
DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d)$")


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def finish(self, ok_msg: str) -> int:
        if self.items:
            for m in self.items:
                print(f"  - {m}")
            return 1
        print(ok_msg)
        return 0


def load_yaml_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# --------------------------------------------------------------------------------------
# PromQL: a small lexer that finds metric names, label matchers and grouping labels.
# Not a parser (promtool parses; see `promql-dump`): it only has to tell identifiers that
# are metric names from functions, keywords and label names.
# --------------------------------------------------------------------------------------
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                   "group_left", "group_right", "inf", "nan", "atan2", "start", "end"}
# Aggregation operators may be followed by `by (...)` instead of `(`: never metric names.
AGGREGATORS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
               "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]+\}|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>(?:0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)(?:ms|s|m|h|d|w|y)?(?:[0-9]+(?:ms|s|m|h|d|w|y))*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@:])
""", re.X)


class PromQLRefs:
    def __init__(self) -> None:
        self.metrics: set[str] = set()
        # (metric or None, label, op, value)
        self.matchers: list[tuple[str | None, str, str, str]] = []
        self.grouping_labels: set[str] = set()


def lex(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot lex PromQL at {expr[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        out.append((kind, m.group()))
    return out


def unquote(s: str) -> str:
    if s[0] == "`":
        return s[1:-1]
    return bytes(s[1:-1], "utf-8").decode("unicode_escape")


def promql_refs(expr: str) -> PromQLRefs:
    refs = PromQLRefs()
    toks = lex(expr)
    i = 0
    while i < len(toks):
        kind, val = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "op" and val == "[":
            # range or subquery duration: skip to the matching ]
            depth = 0
            while i < len(toks):
                if toks[i][1] == "[":
                    depth += 1
                elif toks[i][1] == "]":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i += 1
            continue
        if kind == "ident" and val in GROUPING:
            if nxt == "(":
                j = i + 2
                while j < len(toks) and toks[j][1] != ")":
                    if toks[j][0] == "ident":
                        refs.grouping_labels.add(toks[j][1])
                    j += 1
                i = j + 1
                continue
            i += 1
            continue
        if kind == "ident" and (val.lower() in PROMQL_KEYWORDS or val in AGGREGATORS):
            i += 1
            continue
        if kind == "ident" and nxt == "(":
            i += 1  # function or aggregation
            continue
        metric = None
        if kind == "ident":
            metric = val
            refs.metrics.add(val)
            i += 1
        if i < len(toks) and toks[i][1] == "{":
            j = i + 1
            while j < len(toks) and toks[j][1] != "}":
                if toks[j][0] == "ident" and j + 2 < len(toks) and toks[j + 1][0] == "op":
                    label, op, v = toks[j][1], toks[j + 1][1], toks[j + 2]
                    value = unquote(v[1]) if v[0] == "string" else v[1]
                    if label == "__name__" and op == "=":
                        refs.metrics.add(value)
                    else:
                        refs.matchers.append((metric, label, op, value))
                    j += 3
                    continue
                j += 1
            i = j + 1
            continue
        if metric is None:
            i += 1
    return refs


def family_of(name: str) -> tuple[str | None, str]:
    """(family, suffix) for a series name, family None if it is not the contract's."""
    if name in METRICS:
        return name, ""
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if base in METRICS and METRICS[base][0] == HISTOGRAM:
                return base, suffix
    return None, ""


def check_expr(where: str, expr: str, fails: Failures, allow_prometheus_series: bool) -> set[str]:
    try:
        refs = promql_refs(expr)
    except ValueError as e:
        fails.add(f"{where}: {e}")
        return set()
    families = set()
    all_labels = set().union(*(labels for _, labels in METRICS.values())) | TARGET_LABELS | {"le"}
    for name in sorted(refs.metrics):
        fam, _ = family_of(name)
        if fam:
            families.add(fam)
        elif allow_prometheus_series and name in PROMETHEUS_SERIES:
            pass
        else:
            fails.add(f"{where}: metric {name!r} is not a family of the contract "
                      f"(nor one of its histogram's _bucket/_count/_sum)")
    for metric, label, op, value in refs.matchers:
        if metric is None:
            allowed = all_labels
        elif metric in PROMETHEUS_SERIES:
            allowed = TARGET_LABELS
        else:
            fam, suffix = family_of(metric)
            if not fam:
                continue  # already reported
            allowed = set(METRICS[fam][1]) | TARGET_LABELS | ({"le"} if suffix == "_bucket" else set())
        if label not in allowed:
            fails.add(f"{where}: label {label!r} is not a label of {metric or 'any contract metric'}")
            continue
        if label in LABEL_VALUES and op in ("=", "!=") and "$" not in value:
            if value not in LABEL_VALUES[label]:
                fails.add(f"{where}: {label}={value!r} is not a value the contract gives {label}")
        if label in LABEL_VALUES and op in ("=~", "!~") and re.fullmatch(r"[a-z_|]+", value):
            for alt in value.split("|"):
                if alt not in LABEL_VALUES[label]:
                    fails.add(f"{where}: {label}=~ alternative {alt!r} is not a contract value")
    for label in sorted(refs.grouping_labels):
        if label not in all_labels:
            fails.add(f"{where}: grouping label {label!r} is on no contract metric")
    return families


# --------------------------------------------------------------------------------------
# Grafana
# --------------------------------------------------------------------------------------
def grafana_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return out


def dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    """(where, expr) for every panel target."""
    out = []
    for p in grafana_panels(dash):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append((f"panel {p.get('id')} {p.get('title')!r} ref {t.get('refId')}", t["expr"]))
    return out


def template_queries(dash: dict) -> list[tuple[str, str]]:
    out = []
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        out.append((f"variable ${v.get('name')}", q))
    return out


def grafana_substitute(expr: str) -> str:
    """Make a Grafana target plain PromQL: variables -> values Prometheus accepts."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)


def cmd_grafana(args) -> int:
    fails = Failures()
    path = DEPLOY / "grafana" / "jwt-gateway.json"
    try:
        dash = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"  - {path}: {e}")
        return 1
    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        if key not in dash:
            fails.add(f"dashboard has no {key!r}")
    tvars = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = tvars.get("DS_PROMETHEUS")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fails.add("templating needs a datasource variable DS_PROMETHEUS of type prometheus")
    ids, cells = set(), {}
    for p in grafana_panels(dash):
        pid = p.get("id")
        if pid in ids:
            fails.add(f"panel id {pid} used twice")
        ids.add(pid)
        if p.get("type") != "row":
            dsu = (p.get("datasource") or {}).get("uid")
            if dsu != "${DS_PROMETHEUS}":
                fails.add(f"panel {pid} {p.get('title')!r}: datasource uid {dsu!r}, want ${{DS_PROMETHEUS}}")
            if not p.get("targets"):
                fails.add(f"panel {pid} {p.get('title')!r} has no query")
            for t in p.get("targets", []):
                if (t.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}":
                    fails.add(f"panel {pid} target {t.get('refId')}: datasource is not ${{DS_PROMETHEUS}}")
        g = p.get("gridPos", {})
        for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0)):
            for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0)):
                if (x, y) in cells:
                    fails.add(f"panel {pid} overlaps panel {cells[(x, y)]} at x={x} y={y}")
                    break
                cells[(x, y)] = pid
            else:
                continue
            break
        if g.get("x", 0) + g.get("w", 0) > 24:
            fails.add(f"panel {pid} is wider than the 24-column grid")
    used = set()
    exprs = dashboard_exprs(dash)
    for where, expr in exprs:
        used |= check_expr(where, grafana_substitute(expr), fails, allow_prometheus_series=False)
    for where, q in template_queries(dash):
        m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", q or "")
        if not m:
            fails.add(f"{where}: only label_values(selector, label) queries are supported, got {q!r}")
            continue
        used |= check_expr(where, grafana_substitute(m.group(1)), fails, allow_prometheus_series=False)
        refs = promql_refs(grafana_substitute(m.group(1)))
        for metric in refs.metrics:
            fam, _ = family_of(metric)
            if fam and m.group(2) not in set(METRICS[fam][1]) | TARGET_LABELS:
                fails.add(f"{where}: {metric} has no label {m.group(2)!r}")
    unused = sorted(set(METRICS) - used)
    print(f"  {len(exprs)} panel queries and {len(template_queries(dash))} variable queries use "
          f"{len(used)} of the contract's {len(METRICS)} families"
          + (f"; not shown: {', '.join(unused)}" if unused else ""))
    return fails.finish("  every metric, label and label value is the contract's")


def cmd_promql_dump(args) -> int:
    """Write the dashboard's queries as recording rules, for `promtool check rules`."""
    dash = json.loads((DEPLOY / "grafana" / "jwt-gateway.json").read_text())
    rules = []
    for n, (where, expr) in enumerate(dashboard_exprs(dash)):
        rules.append({"record": f"dashboard:query_{n}", "expr": grafana_substitute(expr)})
    for n, (where, q) in enumerate(template_queries(dash)):
        m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", q)
        if m:
            rules.append({"record": f"dashboard:variable_{n}", "expr": grafana_substitute(m.group(1))})
    Path(args.out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]},
                                             sort_keys=False, width=1000))
    print(f"  {len(rules)} queries written to {args.out}")
    return 0


# --------------------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------------------
def cmd_alerts(args) -> int:
    fails = Failures()
    rules_doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    tests_doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())
    alerts = []
    for g in rules_doc.get("groups", []):
        for r in g.get("rules", []):
            if "alert" not in r:
                continue
            name = r["alert"]
            alerts.append(name)
            where = f"alert {name}"
            check_expr(where, r["expr"], fails, allow_prometheus_series=True)
            if r.get("labels", {}).get("severity") not in ("critical", "warning"):
                fails.add(f"{where}: labels.severity must be critical or warning")
            ann = r.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                if not ann.get(key):
                    fails.add(f"{where}: no annotations.{key}")
            want = f"README.md#runbook-{name.lower()}"
            if ann.get("runbook_url") and ann["runbook_url"] != want:
                fails.add(f"{where}: runbook_url {ann['runbook_url']!r}, want {want!r}")
    if len(alerts) != len(set(alerts)):
        fails.add("an alert name is used twice")
    # Every alert needs a case where it fires and one where it is expected silent.
    fired, silent = set(), set()
    for t in tests_doc.get("tests", []):
        for case in t.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else silent).add(case.get("alertname"))
    for name in alerts:
        if name not in fired:
            fails.add(f"alert {name}: alerts_test.yml has no case where it fires")
        if name not in silent:
            fails.add(f"alert {name}: alerts_test.yml has no case where it must stay silent")
    for name in (fired | silent) - set(alerts):
        fails.add(f"alerts_test.yml tests {name!r}, which alerts.yml does not define")
    print(f"  {len(alerts)} alerts: {', '.join(alerts)}")
    return fails.finish("  all name contract metrics, carry severity/summary/description/runbook_url, "
                        "and are tested firing and silent")


def github_slug(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def cmd_runbooks(args) -> int:
    readme = REPO / "README.md"
    if not readme.exists():
        print("  README.md does not exist yet: runbook anchors cannot be checked")
        return SKIP
    anchors = set()
    for line in readme.read_text().splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            anchors.add(github_slug(m.group(1)))
        for a in re.findall(r'<a\s+(?:name|id)="([^"]+)"', line):
            anchors.add(a)
    fails = Failures()
    rules_doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    n = 0
    for g in rules_doc.get("groups", []):
        for r in g.get("rules", []):
            url = r.get("annotations", {}).get("runbook_url", "")
            if "#" in url:
                n += 1
                anchor = url.split("#", 1)[1]
                if anchor not in anchors:
                    fails.add(f"alert {r.get('alert')}: README.md has no heading with anchor #{anchor} "
                              f"(e.g. '### Runbook: {r.get('alert')}')")
    return fails.finish(f"  README.md has a runbook heading for each of the {n} alerts")


# --------------------------------------------------------------------------------------
# Prometheus config for Kubernetes: Debian's promtool is built without Kubernetes service
# discovery, so swap that block for a static one and let promtool check the rest.
# --------------------------------------------------------------------------------------
K8S_SD_KEYS = {"role", "api_server", "namespaces", "selectors", "kubeconfig_file", "attach_metadata",
               "basic_auth", "authorization", "oauth2", "tls_config", "proxy_url", "follow_redirects",
               "enable_http2", "bearer_token", "bearer_token_file"}
K8S_SD_ROLES = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}


def cmd_prom_k8s(args) -> int:
    fails = Failures()
    src = DEPLOY / "prometheus" / "prometheus-kubernetes.yml"
    doc = yaml.safe_load(src.read_text())
    n = 0
    for sc in doc.get("scrape_configs", []):
        sds = sc.pop("kubernetes_sd_configs", None)
        if sds is None:
            continue
        for sd in sds:
            n += 1
            extra = set(sd) - K8S_SD_KEYS
            if extra:
                fails.add(f"job {sc.get('job_name')}: unknown kubernetes_sd_configs keys {sorted(extra)}")
            if sd.get("role") not in K8S_SD_ROLES:
                fails.add(f"job {sc.get('job_name')}: role {sd.get('role')!r} not one of {sorted(K8S_SD_ROLES)}")
            ns = sd.get("namespaces", {})
            if set(ns) - {"names", "own_namespace"} or not isinstance(ns.get("names", []), list):
                fails.add(f"job {sc.get('job_name')}: namespaces takes names: [list] and own_namespace")
        # A stand-in so promtool validates everything else (relabel rules, paths, intervals).
        sc["static_configs"] = [{"targets": ["127.0.0.1:9901"]}]
    if n == 0:
        fails.add("no kubernetes_sd_configs found")
    out = Path(args.out)
    # rule_files are relative to the config file: point them at the real ones.
    doc["rule_files"] = [str((src.parent / f).resolve()) for f in doc.get("rule_files", [])]
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return fails.finish(f"  {n} kubernetes_sd_configs block(s) well-formed; stand-in written to {out}")


# --------------------------------------------------------------------------------------
# Kubernetes: the kustomization, the ServiceMonitor (a CRD: no core schema), the config in
# the ConfigMap, and the references between objects that no schema sees.
# --------------------------------------------------------------------------------------
def cmd_kustomization(args) -> int:
    fails = Failures()
    kdir = DEPLOY / "kubernetes"
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    listed = set(k.get("resources", []))
    present = {p.name for p in kdir.glob("*.yaml")} - {"kustomization.yaml"}
    for f in sorted(present - listed):
        fails.add(f"{f} is not listed in kustomization.yaml resources")
    for f in sorted(listed - present):
        fails.add(f"kustomization.yaml lists {f}, which does not exist")
    return fails.finish(f"  all {len(present)} manifests are listed")


def split_rendered(args) -> int:
    """Split kustomize output into core objects and custom resources."""
    docs = load_yaml_docs(Path(args.rendered))
    core = [d for d in docs if "." not in d.get("apiVersion", "").split("/")[0]
            or d["apiVersion"].split("/")[0].endswith(".k8s.io")]
    custom = [d for d in docs if d not in core]
    Path(args.core).write_text(yaml.safe_dump_all(core, sort_keys=False))
    Path(args.custom).write_text(yaml.safe_dump_all(custom, sort_keys=False))
    print(f"  {len(docs)} objects: {len(core)} core, {len(custom)} custom "
          f"({', '.join(d['kind'] for d in custom)})")
    return 0


def cmd_servicemonitor(args) -> int:
    import jsonschema

    schema = json.loads((DEPLOY / "tools" / "servicemonitor.schema.json").read_text())
    docs = load_yaml_docs(Path(args.rendered))
    fails = Failures()
    monitors = [d for d in docs if d.get("kind") == "ServiceMonitor"]
    if not monitors:
        fails.add("no ServiceMonitor in the rendered manifests")
    services = [d for d in docs if d.get("kind") == "Service"]
    for sm in monitors:
        name = sm["metadata"]["name"]
        for err in sorted(jsonschema.Draft7Validator(schema).iter_errors(sm), key=str):
            path = ".".join(str(p) for p in err.absolute_path)
            fails.add(f"ServiceMonitor {name}: {path}: {err.message}")
        sel = sm.get("spec", {}).get("selector", {}).get("matchLabels", {})
        matched = [s for s in services
                   if sel and all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        if not matched:
            fails.add(f"ServiceMonitor {name}: selector {sel} matches no Service")
        for ep in sm.get("spec", {}).get("endpoints", []):
            for s in matched:
                ports = {p.get("name") for p in s["spec"].get("ports", [])}
                if ep.get("port") not in ports:
                    fails.add(f"ServiceMonitor {name}: port {ep.get('port')!r} is not a named port "
                              f"of Service {s['metadata']['name']} {sorted(ports)}")
    return fails.finish(f"  {len(monitors)} ServiceMonitor(s) match the schema written from the "
                        f"monitoring.coreos.com/v1 CRD and select a Service port that exists")


def walk_config(node, schema, path: str, fails: Failures) -> None:
    if schema is None:
        return
    if schema == "ANY_MAP":
        if not isinstance(node, dict):
            fails.add(f"{path}: expected a mapping")
        return
    if isinstance(schema, list):
        if not isinstance(node, list):
            fails.add(f"{path}: expected a list")
            return
        for i, item in enumerate(node):
            walk_config(item, schema[0], f"{path}[{i}]", fails)
        return
    if isinstance(schema, dict):
        if path.endswith(".auth") and node == "anonymous":
            return
        if not isinstance(node, dict):
            fails.add(f"{path}: expected a mapping")
            return
        for key, value in node.items():
            sub = f"{path}.{key}" if path else key
            if key not in schema:
                fails.add(f"{sub}: not a key of the contract's gateway.yaml")
                continue
            walk_config(value, schema[key], sub, fails)


def k8s_objects() -> list[dict]:
    docs = []
    for p in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        if p.name != "kustomization.yaml":
            docs.extend(load_yaml_docs(p))
    return docs


def find(docs, kind, name=None):
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


def cmd_gateway_config(args) -> int:
    fails = Failures()
    docs = k8s_objects()
    cms = find(docs, "ConfigMap", "jwt-gateway-config")
    if not cms:
        print("  - no ConfigMap jwt-gateway-config")
        return 1
    text = cms[0]["data"]["gateway.yaml"]
    cfg = yaml.safe_load(text)
    if args.out:
        Path(args.out).write_text(text)
    walk_config(cfg, CONFIG_SCHEMA, "", fails)
    # Durations are written the contract's way.
    def durations(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                sub = f"{path}.{k}" if path else k
                if k in ("header_read_timeout", "request_timeout", "upstream_connect_timeout",
                         "clock_skew", "refresh_interval", "min_refresh", "max_stale",
                         "fetch_timeout", "hsts_max_age", "idle_timeout") and not DURATION.match(str(v)):
                    fails.add(f"{sub}: {v!r} is not a duration like 30s, 5m, 1h")
                durations(v, sub)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                durations(v, f"{path}[{i}]")
    durations(cfg, "")
    # What the Deployment and the other manifests assume about this config.
    dep = find(docs, "Deployment", "jwt-gateway")[0]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    admin = cfg.get("admin", {}).get("listen", "127.0.0.1:9901")
    if not admin.startswith("0.0.0.0:") or int(admin.rsplit(":", 1)[1]) != ports.get("admin"):
        fails.add(f"admin.listen {admin!r} must be 0.0.0.0:{ports.get('admin')} for probes and scrapes")
    listen = cfg.get("server", {}).get("listen", "")
    if int(listen.rsplit(":", 1)[1]) != ports.get("https"):
        fails.add(f"server.listen {listen!r} does not match containerPort https {ports.get('https')}")
    mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
    for section in ("server", "admin"):
        for key in ("cert_file", "key_file"):
            f = cfg.get(section, {}).get("tls", {}).get(key, "")
            if not any(f.startswith(m.rstrip("/") + "/") for m in mounts):
                fails.add(f"{section}.tls.{key} {f!r} is under no volume mount {mounts}")
    # The contract: off loopback the admin listener is served over TLS, and everything that
    # talks to it (probes, the ServiceMonitor) then speaks HTTPS.
    if not cfg.get("admin", {}).get("tls"):
        fails.add(f"admin.listen {admin!r} is not loopback: admin.tls is required")
    for probe in ("readinessProbe", "livenessProbe"):
        if c.get(probe, {}).get("httpGet", {}).get("scheme") != "HTTPS":
            fails.add(f"{probe} must use scheme: HTTPS against the TLS admin listener")
    for sm in find(docs, "ServiceMonitor"):
        for ep in sm["spec"].get("endpoints", []):
            if ep.get("port") == "admin" and (ep.get("scheme") != "https" or not ep.get("tlsConfig")):
                fails.add(f"ServiceMonitor {sm['metadata']['name']}: the admin port needs "
                          "scheme: https and a tlsConfig")
    if c.get("args", [])[-1:] and not any(c["args"][-1].startswith(m) for m in mounts):
        fails.add(f"container args name {c['args'][-1]} outside the mounted volumes")
    env = {e["name"] for e in c.get("env", [])}
    tok = cfg.get("admin", {}).get("token_env")
    if tok and tok not in env:
        fails.add(f"admin.token_env {tok} is not set in the container's env")
    rev = cfg.get("revocation", {})
    if rev.get("backend") == "redis":
        u = urllib.parse.urlparse(rev.get("redis_url", ""))
        svc = find(docs, "Service", u.hostname or "")
        if not svc:
            fails.add(f"revocation.redis_url host {u.hostname!r} is no Service in the manifests")
        elif (u.port or 6379) not in [p["port"] for p in svc[0]["spec"]["ports"]]:
            fails.add(f"revocation.redis_url port {u.port} is not a port of Service {u.hostname}")
    names = [p.get("name") for p in cfg.get("providers", [])]
    for r in cfg.get("routes", []):
        a = r.get("auth")
        if a is None:
            fails.add(f"route {r.get('name')}: no auth (the contract makes that a config error)")
        elif isinstance(a, dict):
            for p in a.get("providers", []):
                if p not in names:
                    fails.add(f"route {r.get('name')}: provider {p!r} is not defined")
    return fails.finish("  keys follow the contract's schema; ports, mounts, env and Redis "
                        "agree with the Deployment and Services")


def cmd_k8s_policy(args) -> int:
    """What schemas cannot see: references between objects, and the security posture."""
    fails = Failures()
    docs = k8s_objects()
    # Created by the operator.
    external_secrets = {"jwt-gateway-tls", "jwt-gateway-admin", "jwt-gateway-admin-tls"}
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for d in docs:
        if "namespace" in d.get("metadata", {}):
            fails.add(f"{d['kind']} {d['metadata']['name']}: manifests must stay namespace-less")
    for dep in find(docs, "Deployment"):
        dn = dep["metadata"]["name"]
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        tl = spec["template"]["metadata"].get("labels", {})
        if any(tl.get(k) != v for k, v in spec["selector"]["matchLabels"].items()):
            fails.add(f"Deployment {dn}: selector does not match its pod labels")
        psc = pod.get("securityContext", {})
        if not psc.get("runAsNonRoot"):
            fails.add(f"Deployment {dn}: pod securityContext.runAsNonRoot is not true")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            fails.add(f"Deployment {dn}: seccompProfile is not RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            fails.add(f"Deployment {dn}: automountServiceAccountToken should be false")
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                fails.add(f"{dn}/{c['name']}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                fails.add(f"{dn}/{c['name']}: allowPrivilegeEscalation is not false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                fails.add(f"{dn}/{c['name']}: capabilities.drop is not [ALL]")
            if "memory" not in c.get("resources", {}).get("limits", {}):
                fails.add(f"{dn}/{c['name']}: no memory limit")
            if "cpu" not in c.get("resources", {}).get("requests", {}):
                fails.add(f"{dn}/{c['name']}: no cpu request (the HPA needs one)")
            port_names = {p.get("name") for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                pr = c.get(probe, {})
                port = (pr.get("httpGet") or pr.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in port_names:
                    fails.add(f"{dn}/{c['name']}: {probe} port {port!r} is not a container port")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in external_secrets and ("Secret", ref["name"]) not in names:
                    fails.add(f"{dn}: env {e['name']} refers to unknown Secret {ref['name']}")
        for v in pod.get("volumes", []):
            for src in v.get("projected", {}).get("sources", []) + [v]:
                if "configMap" in src and ("ConfigMap", src["configMap"]["name"]) not in names:
                    fails.add(f"{dn}: volume refers to unknown ConfigMap {src['configMap']['name']}")
                sec = src.get("secret", {}).get("name") or src.get("secret", {}).get("secretName")
                if sec and sec not in external_secrets and ("Secret", sec) not in names:
                    fails.add(f"{dn}: volume refers to unknown Secret {sec}")
                pvc = src.get("persistentVolumeClaim", {}).get("claimName")
                if pvc and ("PersistentVolumeClaim", pvc) not in names:
                    fails.add(f"{dn}: volume refers to unknown PVC {pvc}")
        sa = pod.get("serviceAccountName")
        if sa and ("ServiceAccount", sa) not in names:
            fails.add(f"{dn}: serviceAccountName {sa} is not defined")
    gw = find(docs, "Deployment", "jwt-gateway")[0]
    pod = gw["spec"]["template"]["spec"]
    c = pod["containers"][0]
    drain = 30
    pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= pre + drain:
        fails.add(f"terminationGracePeriodSeconds {grace} <= preStop {pre}s + drain {drain}s")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        fails.add("gateway readinessProbe is not GET /readyz")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        fails.add("gateway livenessProbe is not GET /healthz")
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for d in find(docs, kind):
            sel = d["spec"].get("selector") or d["spec"].get("podSelector") or {}
            sel = sel.get("matchLabels", sel)
            pods = [x for x in find(docs, "Deployment")
                    if all(x["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
            if not pods:
                fails.add(f"{kind} {d['metadata']['name']}: selector {sel} matches no pod template")
            if kind == "Service":
                for p in d["spec"]["ports"]:
                    tp = p.get("targetPort")
                    cports = {cp.get("name") for x in pods for cc in x["spec"]["template"]["spec"]["containers"]
                              for cp in cc.get("ports", [])}
                    if isinstance(tp, str) and tp not in cports:
                        fails.add(f"Service {d['metadata']['name']}: targetPort {tp!r} is no container port")
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) not in names:
            fails.add(f"HPA {hpa['metadata']['name']}: target {ref['kind']}/{ref['name']} does not exist")
        dep = find(docs, ref["kind"], ref["name"])
        if dep and hpa["spec"].get("minReplicas", 1) > dep[0]["spec"].get("replicas", 1):
            fails.add("HPA minReplicas above the Deployment's starting replicas")
    svc = find(docs, "Service", "jwt-gateway")[0]
    if {p["name"]: p["port"] for p in svc["spec"]["ports"]} != {"https": 8443, "admin": 9901}:
        fails.add("Service jwt-gateway must expose https 8443 and admin 9901")
    return fails.finish(f"  {len(docs)} objects: selectors, ports, references, probes, grace period "
                        f"and security contexts are consistent")


# --------------------------------------------------------------------------------------
# deploy/forward-auth/: each integration asks the endpoint the contract gives its proxy, sends
# no body, and keeps a client's own claim headers from the upstream. The proxies' own checkers
# (nginx -t, envoy --mode validate, caddy validate, kubernetes-validate) run in check.sh.
# --------------------------------------------------------------------------------------
FORWARD_AUTH = DEPLOY / "forward-auth"
# The claim headers every snippet forwards (and removes when a token does not set them).
FA_CLAIM_HEADERS = ("X-Auth-Subject", "X-Auth-Roles")
FA_FILES = ("nginx.conf", "ingress-nginx.yaml", "traefik.yaml", "envoy.yaml", "istio.yaml",
            "Caddyfile", "decisions-service.yaml")


def fa_decision_service() -> tuple[str, int]:
    """The in-cluster name and port of the decision Service, as the integrations must name it."""
    svc = find(load_yaml_docs(FORWARD_AUTH / "decisions-service.yaml"), "Service")[0]
    md = svc["metadata"]
    return f"{md['name']}.{md['namespace']}.svc.cluster.local", svc["spec"]["ports"][0]["port"]


def fa_url_ok(url: str, endpoint: str, fails: Failures, where: str) -> None:
    host, port = fa_decision_service()
    u = urllib.parse.urlparse(url)
    if u.scheme not in ("http", "https") or u.path != endpoint:
        fails.add(f"{where}: {url!r} does not ask {endpoint}")
    if (u.hostname, u.port) != (host, port):
        fails.add(f"{where}: {url!r} is not the decision Service {host}:{port}")


def fa_headers(fails: Failures) -> None:
    for name in FA_FILES:
        path = FORWARD_AUTH / name
        if not path.exists():
            fails.add(f"{name}: missing")
            continue
        first = path.read_text().splitlines()[0]
        if not first.startswith(f"# deploy/forward-auth/{name}:"):
            fails.add(f"{name}: the first line should be `# deploy/forward-auth/{name}: ...`")
        if name.endswith(".yaml"):
            try:
                load_yaml_docs(path)
            except yaml.YAMLError as e:
                fails.add(f"{name}: not YAML: {e}")
    extra = {p.name for p in FORWARD_AUTH.iterdir()} - set(FA_FILES)
    for name in sorted(extra):
        fails.add(f"{name}: not checked by check_deploy.py forward-auth (add it to FA_FILES)")


def fa_nginx(fails: Failures) -> None:
    text = (FORWARD_AUTH / "nginx.conf").read_text()
    code = "\n".join(l.split("#", 1)[0] for l in text.splitlines())
    auth = re.search(r"location\s*=\s*/_auth\s*\{(.*?)\}", code, re.S)
    if not re.search(r"auth_request\s+/_auth\s*;", code) or not auth:
        fails.add("nginx.conf: no `auth_request /_auth` with its `location = /_auth`")
        return
    body = auth.group(1)
    for want in (r"internal\s*;", r"proxy_pass\s+http://[^/;]+/nginx\s*;",
                 r"proxy_pass_request_body\s+off\s*;", r'proxy_set_header\s+Content-Length\s+""\s*;',
                 r"proxy_set_header\s+X-Original-URI\s+\$request_uri\s*;",
                 r"proxy_set_header\s+X-Original-Method\s+\$request_method\s*;",
                 r"proxy_set_header\s+Host\s+\$host\s*;"):
        if not re.search(want, body):
            fails.add(f"nginx.conf: location = /_auth lacks /{want}/")
    for h in FA_CLAIM_HEADERS:
        var = "$upstream_http_" + h.lower().replace("-", "_")
        m = re.search(r"auth_request_set\s+(\$\w+)\s+" + re.escape(var) + r"\s*;", code)
        if not m or not re.search(r"proxy_set_header\s+" + h + r"\s+" + re.escape(m.group(1)) + r"\s*;", code):
            fails.add(f"nginx.conf: {h} is not copied from the decision with auth_request_set "
                      f"and proxy_set_header (which also removes a client's copy)")


def fa_ingress_nginx(fails: Failures) -> None:
    ings = find(load_yaml_docs(FORWARD_AUTH / "ingress-nginx.yaml"), "Ingress")
    if not ings:
        fails.add("ingress-nginx.yaml: no Ingress")
    for ing in ings:
        where = f"ingress-nginx.yaml Ingress {ing['metadata']['name']}"
        a = ing["metadata"].get("annotations", {})
        pre = "nginx.ingress.kubernetes.io/"
        fa_url_ok(a.get(pre + "auth-url", ""), "/nginx", fails, where)
        # Without auth-method, ingress-nginx sends no X-Original-URI: every decision is a 400.
        if a.get(pre + "auth-method") != "GET":
            fails.add(f"{where}: auth-method must be GET (it makes ingress-nginx send X-Original-URI)")
        listed = {h.strip().lower() for h in a.get(pre + "auth-response-headers", "").split(",")}
        for h in FA_CLAIM_HEADERS:
            if h.lower() not in listed:
                fails.add(f"{where}: auth-response-headers lacks {h}")
        if "x-request-id" in listed:
            fails.add(f"{where}: X-Request-Id in auth-response-headers is sent twice upstream")


def fa_traefik(fails: Failures) -> None:
    import jsonschema

    schema = json.loads((DEPLOY / "tools" / "traefik.schema.json").read_text())
    docs = load_yaml_docs(FORWARD_AUTH / "traefik.yaml")
    mws = {}
    for d in docs:
        kind = d.get("kind")
        where = f"traefik.yaml {kind} {d.get('metadata', {}).get('name')}"
        if kind not in schema["definitions"]:
            fails.add(f"{where}: no schema for this kind")
            continue
        sub = dict(schema["definitions"][kind], definitions=schema["definitions"])
        for err in sorted(jsonschema.Draft7Validator(sub).iter_errors(d), key=str):
            path = ".".join(str(p) for p in err.absolute_path)
            fails.add(f"{where}: {path}: {err.message}")
        if kind == "Middleware" and "forwardAuth" in d.get("spec", {}):
            fa = d["spec"]["forwardAuth"]
            mws[(d["metadata"].get("namespace"), d["metadata"]["name"])] = fa
            fa_url_ok(fa.get("address", ""), "/traefik", fails, where)
            if fa.get("trustForwardHeader"):
                fails.add(f"{where}: trustForwardHeader lets a client write X-Forwarded-Uri")
            if fa.get("forwardBody"):
                fails.add(f"{where}: forwardBody sends the body, which a decision never reads")
            for h in FA_CLAIM_HEADERS:
                if h not in fa.get("authResponseHeaders", []):
                    fails.add(f"{where}: authResponseHeaders lacks {h}")
    defined = {(d["metadata"].get("namespace"), d["metadata"]["name"]) for d in find(docs, "Middleware")}
    for d in find(docs, "IngressRoute"):
        ns = d["metadata"].get("namespace")
        for r in d["spec"].get("routes", []):
            names = [(m.get("namespace", ns), m["name"]) for m in r.get("middlewares", [])]
            if not any(n in mws for n in names):
                fails.add(f"traefik.yaml IngressRoute {d['metadata']['name']}: no forwardAuth middleware")
            for m in r.get("middlewares", []):
                if (m.get("namespace", ns), m["name"]) not in defined:
                    fails.add(f"traefik.yaml IngressRoute {d['metadata']['name']}: middleware "
                              f"{m['name']} is not the Middleware defined here")
    if not mws:
        fails.add("traefik.yaml: no Middleware")


def fa_filters(hcm: dict) -> list[dict]:
    return hcm.get("typed_config", {}).get("http_filters", [])


def fa_envoy(fails: Failures) -> None:
    boot = load_yaml_docs(FORWARD_AUTH / "envoy.yaml")[0]
    res = boot["static_resources"]
    clusters = {c["name"]: c for c in res.get("clusters", [])}
    flavours = set()
    for lst in res.get("listeners", []):
        for chain in lst.get("filter_chains", []):
            for nf in chain.get("filters", []):
                if nf.get("name") != "envoy.filters.network.http_connection_manager":
                    continue
                names = [f["name"] for f in fa_filters(nf)]
                for i, f in enumerate(fa_filters(nf)):
                    if f["name"] != "envoy.filters.http.ext_authz":
                        continue
                    where = f"envoy.yaml listener {lst['name']}"
                    cfg = f["typed_config"]
                    if "with_request_body" in cfg:
                        fails.add(f"{where}: with_request_body sends the body, which a decision never reads")
                    if cfg.get("failure_mode_allow"):
                        fails.add(f"{where}: failure_mode_allow lets requests through when the gateway is down")
                    if names[-1] != "envoy.filters.http.router":
                        fails.add(f"{where}: the router is not the last filter")
                    if "http_service" in cfg:
                        flavours.add("http")
                        hs = cfg["http_service"]
                        if hs.get("path_prefix") != "/envoy":
                            fails.add(f"{where}: path_prefix must be /envoy")
                        if hs["server_uri"].get("cluster") not in clusters:
                            fails.add(f"{where}: server_uri.cluster is not defined")
                        allowed = {p.get("exact", "").lower() for p in
                                   hs.get("authorization_response", {})
                                     .get("allowed_upstream_headers", {}).get("patterns", [])}
                        removed = set()
                        for g in fa_filters(nf)[:i]:
                            if g["name"] == "envoy.filters.http.header_mutation":
                                for m in g["typed_config"].get("mutations", {}).get("request_mutations", []):
                                    removed.add(m.get("remove", "").lower())
                        for h in FA_CLAIM_HEADERS:
                            if h.lower() not in allowed:
                                fails.add(f"{where}: allowed_upstream_headers lacks {h}")
                            if h.lower() not in removed:
                                fails.add(f"{where}: no header_mutation before ext_authz removes "
                                          f"a client's {h}")
                    elif "grpc_service" in cfg:
                        flavours.add("grpc")
                        name = cfg["grpc_service"].get("envoy_grpc", {}).get("cluster_name")
                        c = clusters.get(name)
                        opts = (c or {}).get("typed_extension_protocol_options", {}).get(
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {})
                        if "http2_protocol_options" not in opts.get("explicit_http_config", {}):
                            fails.add(f"{where}: cluster {name} must speak HTTP/2 (h2c) for gRPC")
    for want in ("http", "grpc"):
        if want not in flavours:
            fails.add(f"envoy.yaml: no ext_authz filter asking over {want}")


def fa_istio(fails: Failures) -> None:
    docs = load_yaml_docs(FORWARD_AUTH / "istio.yaml")
    host, port = fa_decision_service()
    providers = {}
    for op in find(docs, "IstioOperator"):
        for p in op["spec"].get("meshConfig", {}).get("extensionProviders", []):
            providers[p["name"]] = p
    if not providers:
        fails.add("istio.yaml: no meshConfig.extensionProviders")
    for name, p in providers.items():
        g = p.get("envoyExtAuthzGrpc")
        if not g:
            fails.add(f"istio.yaml provider {name}: not envoyExtAuthzGrpc")
            continue
        if (g.get("service"), g.get("port")) != (host, port):
            fails.add(f"istio.yaml provider {name}: {g.get('service')}:{g.get('port')} is not "
                      f"the decision Service {host}:{port}")
        if "includeRequestBodyInCheck" in g:
            fails.add(f"istio.yaml provider {name}: includeRequestBodyInCheck sends the body")
        if g.get("failOpen"):
            fails.add(f"istio.yaml provider {name}: failOpen lets requests through when the gateway is down")
    pols = find(docs, "AuthorizationPolicy")
    if not pols:
        fails.add("istio.yaml: no AuthorizationPolicy")
    for pol in pols:
        where = f"istio.yaml AuthorizationPolicy {pol['metadata']['name']}"
        if pol.get("apiVersion") not in ("security.istio.io/v1", "security.istio.io/v1beta1"):
            fails.add(f"{where}: apiVersion {pol.get('apiVersion')}")
        spec = pol.get("spec", {})
        if spec.get("action") != "CUSTOM":
            fails.add(f"{where}: action must be CUSTOM")
        if spec.get("provider", {}).get("name") not in providers:
            fails.add(f"{where}: provider {spec.get('provider')} is not an extensionProvider here")


def fa_caddy(fails: Failures) -> None:
    lines = [l.split("#", 1)[0].strip() for l in (FORWARD_AUTH / "Caddyfile").read_text().splitlines()]
    lines = [l for l in lines if l]
    try:
        start = next(i for i, l in enumerate(lines) if l.startswith("forward_auth "))
    except StopIteration:
        fails.add("Caddyfile: no forward_auth block")
        return
    block = lines[start:lines.index("}", start)]
    if "uri /traefik" not in block:
        fails.add("Caddyfile: forward_auth must ask `uri /traefik`")
    copied = {w.lower() for l in block if l.startswith("copy_headers ") for w in l.split()[1:]}
    before = lines[:start]
    if not any(l == "route {" for l in before):
        fails.add("Caddyfile: forward_auth is not inside a `route` (the order would be Caddy's)")
    for h in FA_CLAIM_HEADERS:
        if h.lower() not in copied:
            fails.add(f"Caddyfile: copy_headers lacks {h}")
        if f"request_header -{h}" not in before:
            fails.add(f"Caddyfile: no `request_header -{h}` before forward_auth")


def fa_service(fails: Failures) -> None:
    docs = load_yaml_docs(FORWARD_AUTH / "decisions-service.yaml")
    gw = find(k8s_objects(), "Deployment", "jwt-gateway")[0]
    labels = gw["spec"]["template"]["metadata"]["labels"]
    for d in docs:
        sel = d["spec"].get("selector") or d["spec"].get("podSelector", {}).get("matchLabels", {})
        if any(labels.get(k) != v for k, v in sel.items()):
            fails.add(f"decisions-service.yaml {d['kind']}: selector {sel} is not the gateway's pods")
    _, port = fa_decision_service()
    for pol in find(docs, "NetworkPolicy"):
        ports = {p.get("port") for r in pol["spec"].get("ingress", []) for p in r.get("ports", [])}
        if ports != {port}:
            fails.add(f"decisions-service.yaml NetworkPolicy: opens {ports}, want only {port}")


def cmd_forward_auth(args) -> int:
    fails = Failures()
    fa_headers(fails)
    for check in (fa_service, fa_nginx, fa_ingress_nginx, fa_traefik, fa_envoy, fa_istio, fa_caddy):
        try:
            check(fails)
        except (KeyError, IndexError, TypeError, AttributeError, StopIteration, ValueError) as e:
            fails.add(f"{check.__name__}: unexpected shape ({type(e).__name__}: {e})")
    return fails.finish(f"  {len(FA_FILES)} files: each asks its proxy's endpoint on the decision "
                        f"Service, sends no body, and keeps a client's {', '.join(FA_CLAIM_HEADERS)} "
                        f"from the upstream")


# --------------------------------------------------------------------------------------
# Dockerfile facts hadolint does not enforce.
# --------------------------------------------------------------------------------------
def cmd_dockerfile(args) -> int:
    fails = Failures()
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    if len(froms) < 2:
        fails.add("not a multi-stage build")
    if froms and "gcr.io/distroless/cc-debian12:nonroot" not in froms[-1]:
        fails.add(f"runtime stage is {froms[-1]!r}, want gcr.io/distroless/cc-debian12:nonroot")
    if "cargo build --release --locked" not in text:
        fails.add("the build does not run `cargo build --release --locked`")
    users = [l.split()[1] for l in lines if l.upper().startswith("USER ")]
    if not users or not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]):
        fails.add("the final USER must be a numeric non-root uid (runAsNonRoot can only check numbers)")
    expose = {p for l in lines if l.upper().startswith("EXPOSE ") for p in l.split()[1:]}
    if not {"8443", "9901"} <= expose:
        fails.add(f"EXPOSE {sorted(expose)}, want 8443 and 9901")
    if not any(l.upper().startswith("HEALTHCHECK") for l in lines):
        fails.add("no HEALTHCHECK instruction (state the choice, even if NONE)")
    ign = DEPLOY / "docker" / "Dockerfile.dockerignore"
    if not ign.exists() or not {"**/target", ".git"} <= set(ign.read_text().split()):
        fails.add("Dockerfile.dockerignore must exclude **/target and .git")
    return fails.finish("  multi-stage, --locked, distroless nonroot runtime, numeric USER, ports, HEALTHCHECK stated")


# --------------------------------------------------------------------------------------
# Live: every dashboard query against a real Prometheus holding contract-shaped series.
# --------------------------------------------------------------------------------------
def synthetic_openmetrics(end: int) -> str:
    """An hour of contract-shaped series for two instances, one sample every 15s."""
    routes = ["orders-read", "catalog-public", "none"]
    lines: list[str] = []
    typed: set[str] = set()

    def sample(name, fam, labels, value, ts):
        if fam not in typed:
            lines.append(f"# TYPE {fam} {METRICS[fam][0]}")
            typed.add(fam)
        lbl = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"{name}{{{lbl}}} {value} {ts}")

    buckets = ["1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1", "1", "+Inf"]
    # One family at a time (OpenMetrics wants a family's samples together).
    fams: dict[str, list] = {f: [] for f in METRICS}
    for inst in ("gw-a:9901", "gw-b:9901"):
        base = {"job": "jwt-gateway", "instance": inst}
        for step in range(240):
            ts = end - (239 - step) * 15
            n = step + 1
            fams["gateway_build_info"].append(("gateway_build_info", {**base, "version": "0.1.0"}, 1, ts))
            fams["gateway_token_cache_entries"].append(("gateway_token_cache_entries", base, 100 * n, ts))
            for r in routes:
                for code, k in (("200", 50), ("401", 5), ("502", 1)):
                    fams["gateway_requests_total"].append(("gateway_requests_total", {**base, "route": r, "code": code}, k * n, ts))
                for fam in ("gateway_request_duration_seconds", "gateway_upstream_duration_seconds"):
                    for i, le in enumerate(buckets):
                        fams[fam].append((f"{fam}_bucket", {**base, "route": r, "le": le}, min(i, 5) * 10 * n, ts))
                    fams[fam].append((f"{fam}_count", {**base, "route": r}, 50 * n, ts))
                    fams[fam].append((f"{fam}_sum", {**base, "route": r}, 0.5 * n, ts))
                fams["gateway_auth_decisions_total"].append(("gateway_auth_decisions_total", {**base, "route": r, "decision": "allow", "reason": "ok"}, 50 * n, ts))
                fams["gateway_auth_decisions_total"].append(("gateway_auth_decisions_total", {**base, "route": r, "decision": "deny", "reason": "expired"}, 5 * n, ts))
                fams["gateway_upstream_errors_total"].append(("gateway_upstream_errors_total", {**base, "route": r, "kind": "connect"}, n, ts))
                fams["gateway_rate_limited_total"].append(("gateway_rate_limited_total", {**base, "route": r}, n, ts))
            for prov in ("corp", "partner"):
                for cache, k in (("hit", 40), ("miss", 10)):
                    lab = {**base, "provider": prov, "cache": cache}
                    fam = "gateway_token_validation_duration_seconds"
                    for i, le in enumerate(buckets):
                        fams[fam].append((f"{fam}_bucket", {**lab, "le": le}, min(i, 4) * k * n // 4, ts))
                    fams[fam].append((f"{fam}_count", lab, k * n, ts))
                    fams[fam].append((f"{fam}_sum", lab, 0.0001 * k * n, ts))
                for res, k in (("ok", 1), ("error", 0)):
                    fams["gateway_jwks_refresh_total"].append(("gateway_jwks_refresh_total", {**base, "provider": prov, "result": res}, k * (n // 20), ts))
                fams["gateway_jwks_keys"].append(("gateway_jwks_keys", {**base, "provider": prov}, 2, ts))
                fams["gateway_jwks_last_success_timestamp_seconds"].append(("gateway_jwks_last_success_timestamp_seconds", {**base, "provider": prov}, ts - ts % 300, ts))
            for res, k in (("ok", 1), ("error", 0)):
                fams["gateway_config_reloads_total"].append(("gateway_config_reloads_total", {**base, "result": res}, k * (n // 40), ts))
                fams["gateway_revocation_sync_total"].append(("gateway_revocation_sync_total", {**base, "result": res}, k * n, ts))
            fams["gateway_revocations"].append(("gateway_revocations", {**base, "backend": "redis"}, 12, ts))
    for fam, samples in fams.items():
        # Group each series' samples together and in time order.
        samples.sort(key=lambda s: (s[0], sorted(s[1].items()), s[3]))
        for name, labels, value, ts in samples:
            sample(name, fam, labels, value, ts)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmd_live_queries(args) -> int:
    prometheus = shutil.which("prometheus")
    promtool = shutil.which("promtool")
    if not prometheus or not promtool:
        print("  prometheus/promtool not installed")
        return SKIP
    fails = Failures()
    dash = json.loads((DEPLOY / "grafana" / "jwt-gateway.json").read_text())
    with tempfile.TemporaryDirectory(prefix="jwt-gateway-deploy-") as tmp:
        tmp = Path(tmp)
        # Whole hours back, so the backfilled block is complete and queryable at once.
        end = int(time.time()) // 3600 * 3600 - 60
        (tmp / "data.om").write_text(synthetic_openmetrics(end))
        r = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics",
                            str(tmp / "data.om"), str(tmp / "tsdb")], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"  - backfill failed: {r.stderr.strip() or r.stdout.strip()}")
            return 1
        (tmp / "prometheus.yml").write_text("global: {}\n")
        port = free_port()
        proc = subprocess.Popen([prometheus, f"--config.file={tmp / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}",
                                 "--storage.tsdb.retention.time=100y", "--log.level=warn"],
                                stdout=subprocess.DEVNULL, stderr=open(tmp / "prom.log", "w"))
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.time() > deadline or proc.poll() is not None:
                    print(f"  - Prometheus did not become ready: {(tmp / 'prom.log').read_text()[-500:]}")
                    return 1
                time.sleep(0.2)

            def query(expr: str) -> list:
                q = urllib.parse.urlencode({"query": expr, "time": str(end)})
                with urllib.request.urlopen(f"{base}/api/v1/query?{q}", timeout=10) as resp:
                    body = json.load(resp)
                if body.get("status") != "success":
                    raise RuntimeError(body)
                return body["data"]["result"]

            exprs = dashboard_exprs(dash)
            for where, expr in exprs:
                # Evaluated at `end` (the last sample), so time() in a query is that instant.
                e = grafana_substitute(expr)
                try:
                    res = query(e)
                except Exception as ex:  # noqa: BLE001 - report any query failure
                    fails.add(f"{where}: query failed: {ex}")
                    continue
                if not res:
                    fails.add(f"{where}: no series for {e}")
            for where, q in template_queries(dash):
                m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", q)
                res = query(grafana_substitute(m.group(1))) if m else []
                if not any(m.group(2) in s["metric"] for s in res):
                    fails.add(f"{where}: {q} finds no value")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return fails.finish(f"  all {len(dashboard_exprs(dash))} panel queries and "
                        f"{len(template_queries(dash))} variables return series from a real "
                        f"Prometheus over contract-shaped data")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("grafana").set_defaults(fn=cmd_grafana)
    p = sub.add_parser("promql-dump")
    p.add_argument("out")
    p.set_defaults(fn=cmd_promql_dump)
    sub.add_parser("alerts").set_defaults(fn=cmd_alerts)
    sub.add_parser("runbooks").set_defaults(fn=cmd_runbooks)
    p = sub.add_parser("prom-k8s")
    p.add_argument("out")
    p.set_defaults(fn=cmd_prom_k8s)
    sub.add_parser("kustomization").set_defaults(fn=cmd_kustomization)
    p = sub.add_parser("split-rendered")
    p.add_argument("rendered")
    p.add_argument("core")
    p.add_argument("custom")
    p.set_defaults(fn=split_rendered)
    p = sub.add_parser("servicemonitor")
    p.add_argument("rendered")
    p.set_defaults(fn=cmd_servicemonitor)
    p = sub.add_parser("gateway-config")
    p.add_argument("--out")
    p.set_defaults(fn=cmd_gateway_config)
    sub.add_parser("k8s-policy").set_defaults(fn=cmd_k8s_policy)
    sub.add_parser("forward-auth").set_defaults(fn=cmd_forward_auth)
    sub.add_parser("dockerfile").set_defaults(fn=cmd_dockerfile)
    sub.add_parser("live-queries").set_defaults(fn=cmd_live_queries)
    args = ap.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

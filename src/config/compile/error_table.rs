//! Every message the config compiler can print, pinned as `path: message` against a small edit of
//! one valid file, so a reworded message or a wrong path shows up as a one-row diff.
//!
//! To add a row: name the site (`module: what`), write the edits that reach it and the exact
//! errors (or warnings) `compile_str` returns. `every_message_site_has_a_row` counts the places in
//! the compile sources that produce a message and fails until each has a named row.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Once;

use serde_yaml::{Mapping, Value};

use super::compile_str;

/// The smallest file that compiles with neither an error nor a warning: TLS rather than
/// `insecure_plaintext`, whose warning would sit in every row, and an anonymous route, so a row
/// that breaks the provider does not also break the route that names it.
const BASE: &str = r#"
server:
  listen: "127.0.0.1:8443"
  tls: {cert_file: gw.crt, key_file: gw.key}
providers:
  - name: corp
    issuer: "https://idp.test"
    jwks_url: "https://idp.test/certs"
    algorithms: [RS256]
    audiences: [api]
routes:
  - name: r
    match: {path_prefix: /orders}
    upstream: "http://127.0.0.1:9"
    auth: anonymous
"#;

/// `(site, edits, expected)`.
///
/// `site` is `module: what`, one name per place in `module`'s source that produces a message;
/// several rows may name the same site. Each edit changes `BASE`:
/// - `path: value` sets `path` (`routes[0].auth.require[0].claim`) to the YAML flow `value`,
///   creating missing map keys; an index one past the end appends; an empty value is null.
/// - `-path` removes the key or item.
/// - `raw: text` (alone) replaces the whole document with `text`.
type Case = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);

/// Environment variables the rows name, set once by `set_test_env` (names are this file's own).
const ENV_EMPTY: &str = "JWTGW_ERROR_TABLE_EMPTY";
const ENV_SHORT: &str = "JWTGW_ERROR_TABLE_SHORT"; // 10 bytes
const ENV_LONG: &str = "JWTGW_ERROR_TABLE_LONG"; // 64 bytes

const ERRORS: &[Case] = &[
    // browser.rs: token sources, CORS and RFC 9728 metadata.
    (
        "browser: empty token_from",
        &["routes[0].auth: {providers: [corp], token_from: []}"],
        &["routes[0].auth.token_from: must name at least one source (omit it for the Authorization header)"],
    ),
    (
        "browser: token source",
        &["routes[0].auth: {providers: [corp], token_from: [\"cookie:\"]}"],
        &["routes[0].auth.token_from[0]: \"cookie:\" is not header, cookie:NAME or query:NAME"],
    ),
    (
        "browser: token source twice",
        &["routes[0].auth: {providers: [corp], token_from: [header, header]}"],
        &["routes[0].auth.token_from[1]: \"header\" is listed twice"],
    ),
    (
        "browser: cors origins required",
        &["routes[0].cors: {allow_credentials: false}"],
        &["routes[0].cors.allow_origins: is required: the origins whose pages may call this route"],
    ),
    (
        "browser: cors origin",
        &["routes[0].cors: {allow_origins: [\"https://app.test/x\"]}"],
        &["routes[0].cors.allow_origins[0]: \"https://app.test/x\" is not an origin like https://app.example.com (or \"*\" alone)"],
    ),
    (
        "browser: cors method",
        &["routes[0].cors: {allow_origins: [\"*\"], allow_methods: [\"GE T\"]}"],
        &["routes[0].cors.allow_methods[0]: \"GE T\" is not an HTTP method"],
    ),
    (
        "browser: cors header",
        &["routes[0].cors: {allow_origins: [\"*\"], allow_headers: [\"a b\"]}"],
        &["routes[0].cors.allow_headers[0]: \"a b\" is not a header name"],
    ),
    (
        "browser: cors credentials to any origin",
        &["routes[0].cors: {allow_origins: [\"*\"], allow_credentials: true}"],
        &["routes[0].cors.allow_credentials: cannot be combined with allow_origins: [\"*\"]: browsers refuse credentials to any origin; list the origins"],
    ),
    (
        "browser: resource metadata URL",
        &["server.resource_metadata: {resource: \"http://api.test\"}"],
        &["server.resource_metadata.resource: \"http://api.test\" is not an https:// URL without query or fragment"],
    ),
    (
        "yaml: required",
        &["server.resource_metadata: {authorization_servers: [\"https://idp.test\"]}"],
        &["server.resource_metadata.resource: is required"],
    ),
    (
        "routes: optional with rules",
        &["routes[0].auth: {providers: [corp], optional: true, require: [{claim: scope, any_of: [a]}]}"],
        &["routes[0].auth.optional: cannot be combined with require: a request without a token would pass rules it never met"],
    ),
    // compile/mod.rs: the top level and what several sections share.
    (
        "compile: empty file",
        &["raw:"],
        &[
            "the file is empty; see the README for a minimal gateway.yaml",
            "server.tls: is required: set tls.cert_file and tls.key_file, or insecure_plaintext: true to serve without TLS",
            "routes: is required: at least one route",
        ],
    ),
    (
        "compile: forward_auth on another listener's address",
        &["forward_auth: {listen: \"127.0.0.1:8443\"}"],
        &["forward_auth.listen: must differ from server.listen and admin.listen"],
    ),
    (
        "compile: admin on the public listener",
        &["admin.listen: \"127.0.0.1:8443\""],
        &["admin.listen: must differ from server.listen: the admin API is never served on the public listener"],
    ),
    (
        "compile: socket address",
        &["server.listen: \"localhost:8443\""],
        &["server.listen: \"localhost:8443\" is not an address like 0.0.0.0:8443 or [::1]:8443"],
    ),
    (
        "compile: socket address",
        &["admin.listen: \"127.0.0.1\""],
        &["admin.listen: \"127.0.0.1\" is not an address like 0.0.0.0:8443 or [::1]:8443"],
    ),
    (
        "compile: environment variable is empty",
        &["admin.token_env: JWTGW_ERROR_TABLE_EMPTY"],
        &["admin.token_env: environment variable JWTGW_ERROR_TABLE_EMPTY is empty"],
    ),
    (
        "compile: environment variable is not set",
        &["admin.token_env: JWTGW_ERROR_TABLE_UNSET"],
        &["admin.token_env: environment variable JWTGW_ERROR_TABLE_UNSET is not set"],
    ),
    (
        "compile: name is not a metric label",
        &["routes[0].name: \"r 1\""],
        &["routes[0].name: must be 1 to 64 characters of A-Z a-z 0-9 - _ . (it becomes a metric label)"],
    ),
    (
        "compile: name is not a metric label",
        &["providers[0].name: \"\""],
        &["providers[0].name: must be 1 to 64 characters of A-Z a-z 0-9 - _ . (it becomes a metric label)"],
    ),
    (
        "compile: claim path",
        &["routes[0].auth: {require: [{claim: \"realm..roles\", any_of: [admin]}]}"],
        &["routes[0].auth.require[0].claim: \"realm..roles\": empty path segment"],
    ),
    (
        "compile: claim path",
        &["routes[0].auth: {require: [{claim: \"\", any_of: [admin]}]}"],
        &["routes[0].auth.require[0].claim: empty claim path"],
    ),
    (
        "compile: claim path",
        &["providers[0].require_claims: [exp, \"a.\"]"],
        &["providers[0].require_claims[1]: \"a.\": empty path segment"],
    ),
    // compile/server.rs
    (
        "server: tls or insecure_plaintext required",
        &["-server.tls"],
        &["server.tls: is required: set tls.cert_file and tls.key_file, or insecure_plaintext: true to serve without TLS"],
    ),
    (
        "server: insecure_plaintext with tls",
        &["server.insecure_plaintext: true"],
        &["server.insecure_plaintext: cannot be combined with server.tls"],
    ),
    (
        "server: trusted proxy",
        &["server.trusted_proxies: [10.0.0.1, 10.0.0.0/33]"],
        &["server.trusted_proxies[1]: \"10.0.0.0/33\" is not an IP address or CIDR block"],
    ),
    (
        "server: headers_with_underscores",
        &["server.headers_with_underscores: keep"],
        &["server.headers_with_underscores: \"keep\" is not one of drop, reject, allow"],
    ),
    (
        "server: limit out of range",
        &["server.limits.max_header_bytes: 512"],
        &["server.limits.max_header_bytes: must be between 1024 and 4294967295"],
    ),
    (
        "server: limit out of range",
        &["server.limits.max_connections: 0"],
        &["server.limits.max_connections: must be between 1 and 4294967295"],
    ),
    (
        "server: limit out of range",
        &["server.limits.max_token_bytes: 4294967296"],
        &["server.limits.max_token_bytes: must be between 64 and 4294967295"],
    ),
    (
        "server: zero timeout",
        &["server.limits.header_read_timeout: 0s"],
        &["server.limits.header_read_timeout: must be longer than 0s"],
    ),
    (
        "server: zero timeout",
        &["server.limits.idle_timeout: 0ms"],
        &["server.limits.idle_timeout: must be longer than 0s"],
    ),
    (
        "server: max_concurrent_streams",
        &["server.limits.max_concurrent_streams: 65536"],
        &["server.limits.max_concurrent_streams: must be between 1 and 65535"],
    ),
    (
        "server: auth_failures_per_minute",
        &["server.limits.auth_failures_per_minute: 0"],
        &["server.limits.auth_failures_per_minute: must be at least 1 (omit it to disable the limit)"],
    ),
    (
        "server: per-ip above total connections",
        &["server.limits: {max_connections: 10, max_connections_per_ip: 11}"],
        &["server.limits.max_connections_per_ip: cannot exceed max_connections"],
    ),
    (
        "server: token above header limit",
        &["server.limits: {max_header_bytes: 4096, max_token_bytes: 4097}"],
        &["server.limits.max_token_bytes: cannot exceed max_header_bytes"],
    ),
    // compile/providers.rs
    (
        "providers: duplicate name",
        &["providers[1]: {name: corp, issuer: \"https://other.test\", jwks_url: \"https://other.test/certs\", algorithms: [ES256]}"],
        &["providers[1].name: duplicate provider name \"corp\""],
    ),
    (
        "providers: duplicate issuer",
        &["providers[1]: {name: other, issuer: \"https://idp.test\", jwks_url: \"https://other.test/certs\", algorithms: [ES256]}"],
        &["providers[1].issuer: another provider already has this issuer; tokens choose their provider by `iss`"],
    ),
    (
        "providers: empty issuer",
        &["providers[0].issuer: \"\""],
        &["providers[0].issuer: must not be empty"],
    ),
    (
        "providers: algorithms required",
        &["-providers[0].algorithms"],
        &["providers[0].algorithms: is required: list the algorithms this issuer signs with, e.g. [RS256]"],
    ),
    (
        "providers: algorithms required",
        &["providers[0].algorithms:"],
        &["providers[0].algorithms: is required: list the algorithms this issuer signs with, e.g. [RS256]"],
    ),
    (
        "providers: no algorithm",
        &["providers[0].algorithms: []"],
        &["providers[0].algorithms: must name at least one algorithm"],
    ),
    (
        "providers: algorithm listed twice",
        &["providers[0].algorithms: [RS256, ES256, RS256]"],
        &["providers[0].algorithms[2]: RS256 is listed twice"],
    ),
    (
        "providers: algorithm none",
        &["providers[0].algorithms: [RS256, None]"],
        &["providers[0].algorithms[1]: `none` is never accepted"],
    ),
    (
        "providers: unsupported algorithm",
        &["providers[0].algorithms: [rs256]"],
        &["providers[0].algorithms[0]: unsupported algorithm \"rs256\"; use one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"],
    ),
    (
        "providers: shared secret too short",
        &["providers[0].algorithms: [HS256]", "providers[0].shared_secret_env: JWTGW_ERROR_TABLE_SHORT"],
        &["providers[0].shared_secret_env: environment variable JWTGW_ERROR_TABLE_SHORT holds 10 bytes; an HMAC key for these algorithms needs at least 32"],
    ),
    (
        "providers: shared secret too short",
        &["providers[0].algorithms: [HS256, HS512]", "providers[0].shared_secret_env: JWTGW_ERROR_TABLE_SHORT"],
        &["providers[0].shared_secret_env: environment variable JWTGW_ERROR_TABLE_SHORT holds 10 bytes; an HMAC key for these algorithms needs at least 64"],
    ),
    (
        "providers: shared secret unreadable",
        &["providers[0].algorithms: [HS384]", "providers[0].shared_secret_env: JWTGW_ERROR_TABLE_EMPTY"],
        &["providers[0].shared_secret_env: environment variable JWTGW_ERROR_TABLE_EMPTY is empty"],
    ),
    (
        "providers: HMAC without a secret",
        &["providers[0].algorithms: [RS256, HS256]"],
        &["providers[0].algorithms: HS256/HS384/HS512 need shared_secret_env"],
    ),
    (
        "providers: HMAC without a secret",
        &["providers[0].algorithms: [HS256]", "providers[0].shared_secret_env:"],
        &["providers[0].algorithms: HS256/HS384/HS512 need shared_secret_env"],
    ),
    (
        "providers: secret without HMAC",
        &["providers[0].shared_secret_env: JWTGW_ERROR_TABLE_LONG"],
        &["providers[0].shared_secret_env: is set but algorithms lists no HS256/HS384/HS512"],
    ),
    (
        "providers: jwks_url and discovery",
        &["providers[0].discovery: true"],
        &["providers[0].jwks_url: set either jwks_url or discovery: true, not both"],
    ),
    (
        "providers: jwks_url required",
        &["-providers[0].jwks_url"],
        &["providers[0].jwks_url: is required for RS/PS/ES/EdDSA algorithms (or set discovery: true)"],
    ),
    (
        "providers: jwks_url required",
        &["providers[0].jwks_url:"],
        &["providers[0].jwks_url: is required for RS/PS/ES/EdDSA algorithms (or set discovery: true)"],
    ),
    (
        "providers: clock_skew above 10m",
        &["providers[0].clock_skew: 10m1s"],
        &["providers[0].clock_skew: must be at most 10m"],
    ),
    (
        "providers: key URL does not parse",
        &["providers[0].jwks_url: idp.test/certs"],
        &["providers[0].jwks_url: \"idp.test/certs\" is not a URL: relative URL without a base"],
    ),
    (
        "providers: insecure http off loopback",
        &["providers[0].allow_insecure_jwks_http: true", "providers[0].jwks_url: \"http://idp.test/certs\""],
        &["providers[0].jwks_url: allow_insecure_jwks_http permits http:// only to a loopback host (127.0.0.0/8, [::1], localhost); anyone on the path to another host could supply signing keys"],
    ),
    (
        "providers: key URL must be https",
        &["providers[0].jwks_url: \"http://idp.test/certs\""],
        &["providers[0].jwks_url: must be https (keys fetched over plain HTTP can be forged in transit); allow_insecure_jwks_http: true is for loopback testing only"],
    ),
    (
        "providers: key URL must be https",
        &["-providers[0].jwks_url", "providers[0].discovery: true", "providers[0].issuer: \"http://idp.test\""],
        &["providers[0].issuer: must be https (keys fetched over plain HTTP can be forged in transit); allow_insecure_jwks_http: true is for loopback testing only"],
    ),
    (
        "providers: key URL scheme",
        &["providers[0].jwks_url: \"ftp://idp.test/certs\""],
        &["providers[0].jwks_url: unsupported scheme \"ftp\"; use https"],
    ),
    (
        "providers: min_refresh below 1s",
        &["providers[0].jwks: {min_refresh: 999ms}"],
        &["providers[0].jwks.min_refresh: must be at least 1s: it bounds how often unknown kids can make the gateway refetch"],
    ),
    (
        "providers: min_refresh above refresh_interval",
        &["providers[0].jwks: {refresh_interval: 1m, min_refresh: 2m}"],
        &["providers[0].jwks.min_refresh: cannot exceed refresh_interval"],
    ),
    (
        "providers: zero refresh_interval",
        &["providers[0].jwks: {refresh_interval: 0s, min_refresh: 1s}"],
        &[
            "providers[0].jwks.min_refresh: cannot exceed refresh_interval",
            "providers[0].jwks.refresh_interval: must be longer than 0s",
        ],
    ),
    (
        "providers: zero fetch_timeout",
        &["providers[0].jwks: {fetch_timeout: 0s}"],
        &["providers[0].jwks.fetch_timeout: must be longer than 0s"],
    ),
    // compile/routes.rs
    (
        "routes: routes required",
        &["-routes"],
        &["routes: is required: at least one route"],
    ),
    (
        "routes: routes required",
        &["routes:"],
        &["routes: is required: at least one route"],
    ),
    (
        "routes: no route",
        &["routes: []"],
        &["routes: must list at least one route"],
    ),
    (
        "routes: duplicate name",
        &["routes[1]: {name: r, match: {path_prefix: /other}, upstream: \"http://127.0.0.1:9\", auth: anonymous}"],
        &["routes[1].name: duplicate route name \"r\""],
    ),
    (
        "routes: name none",
        &["routes[0].name: none"],
        &["routes[0].name: `none` is reserved for requests that matched no route"],
    ),
    (
        "routes: match required",
        &["-routes[0].match"],
        &["routes[0].match: is required (at least path_prefix)"],
    ),
    (
        "routes: not a method",
        &["routes[0].match.methods: [GET, \"GE T\"]"],
        &["routes[0].match.methods[1]: \"GE T\" is not an HTTP method"],
    ),
    (
        "routes: not a method",
        &["routes[0].match.methods: [get, P0ST]"],
        &["routes[0].match.methods[1]: \"P0ST\" is not an HTTP method"],
    ),
    (
        "routes: no method",
        &["routes[0].match.methods: []"],
        &["routes[0].match.methods: must name at least one method (omit it to allow every method)"],
    ),
    (
        "routes: upstream protocol",
        &["routes[0].upstream_protocol: h2c"],
        &["routes[0].upstream_protocol: \"h2c\" is not one of auto, http1, http2"],
    ),
    (
        "routes: strip_prefix outside path_prefix",
        &["routes[0].strip_prefix: /order"],
        &["routes[0].strip_prefix: must be a prefix of match.path_prefix, or some matched paths could not be stripped"],
    ),
    (
        "routes: prefix without leading slash",
        &["routes[0].match.path_prefix: orders"],
        &["routes[0].match.path_prefix: must start with '/'"],
    ),
    (
        "routes: prefix without leading slash",
        &["routes[0].strip_prefix: orders"],
        &[
            "routes[0].strip_prefix: must start with '/'",
            "routes[0].strip_prefix: must be a prefix of match.path_prefix, or some matched paths could not be stripped",
        ],
    ),
    (
        "routes: prefix not normalized",
        &["routes[0].match.path_prefix: /api/../orders"],
        &["routes[0].match.path_prefix: must be written normalized, as \"/orders\": requests are matched after normalization"],
    ),
    (
        "routes: prefix not normalized",
        &["routes[0].match.path_prefix: /%6frders"],
        &["routes[0].match.path_prefix: must be written normalized, as \"/orders\": requests are matched after normalization"],
    ),
    (
        "routes: prefix not a safe path",
        &["routes[0].match.path_prefix: /a%2Fb"],
        &["routes[0].match.path_prefix: is not a safe path (encoded_slash)"],
    ),
    (
        "routes: prefix not a safe path",
        &["routes[0].match.path_prefix: /.."],
        &["routes[0].match.path_prefix: is not a safe path (above_root)"],
    ),
    (
        "routes: prefix with ; ? #",
        &["routes[0].match.path_prefix: /orders;v=1"],
        &["routes[0].match.path_prefix: must not contain ';', '?' or '#'"],
    ),
    (
        "routes: host pattern",
        &["routes[0].match.host: \"api.test:443\""],
        &["routes[0].match.host: \"api.test:443\" is not a host name or *.suffix pattern (no port, no scheme)"],
    ),
    (
        "routes: host pattern",
        &["routes[0].match.host: \"*.\""],
        &["routes[0].match.host: \"*.\" is not a host name or *.suffix pattern (no port, no scheme)"],
    ),
    (
        "routes: upstream does not parse",
        &["routes[0].upstream: \"http://orders internal\""],
        &["routes[0].upstream: \"http://orders internal\" is not a URL like http://orders.internal:8080"],
    ),
    (
        "routes: upstream without scheme or host",
        &["routes[0].upstream: /orders"],
        &["routes[0].upstream: \"/orders\" needs a scheme and a host, e.g. http://orders.internal:8080"],
    ),
    (
        "routes: upstream scheme",
        &["routes[0].upstream: \"ws://127.0.0.1:9\""],
        &["routes[0].upstream: scheme must be http or https"],
    ),
    (
        "routes: upstream credentials",
        &["routes[0].upstream: \"http://user:pw@127.0.0.1:9\""],
        &["routes[0].upstream: must not carry credentials"],
    ),
    (
        "routes: upstream query",
        &["routes[0].upstream: \"http://127.0.0.1:9/api?v=1\""],
        &["routes[0].upstream: must not carry a query"],
    ),
    (
        "routes: upstream required without forward_auth",
        &["-routes[0].upstream"],
        &["routes[0].upstream: is required (only with a forward_auth section may a route serve decisions alone)"],
    ),
    (
        "routes: auth required",
        &["-routes[0].auth"],
        &["routes[0].auth: is required: name the providers that may call this route, or write `auth: anonymous` to make it public"],
    ),
    (
        "routes: auth keyword",
        &["routes[0].auth: public"],
        &["routes[0].auth: \"public\" is not a keyword; use `anonymous` or a map with providers/audience/require"],
    ),
    (
        "routes: auth shape",
        &["routes[0].auth: [corp]"],
        &["routes[0].auth: must be `anonymous` or a map, found a list"],
    ),
    (
        "routes: unknown provider",
        &["routes[0].auth: {providers: [corp, crop]}"],
        &["routes[0].auth.providers[1]: no provider named \"crop\""],
    ),
    (
        "providers: key URL must be https",
        &["providers[0].jwks_url: \"http://idp.test/certs\"", "routes[0].auth: {providers: [corp]}"],
        &["providers[0].jwks_url: must be https (keys fetched over plain HTTP can be forged in transit); allow_insecure_jwks_http: true is for loopback testing only"],
    ),
    (
        "providers: empty issuer",
        &["providers[0].issuer: \"\"", "routes[0].auth: {audience: api}"],
        &["providers[0].issuer: must not be empty"],
    ),
    (
        "routes: no provider",
        &["routes[0].auth: {providers: []}"],
        &["routes[0].auth.providers: no provider can authenticate this route; define one under providers"],
    ),
    (
        "routes: no provider",
        &["-providers", "routes[0].auth: {audience: api}"],
        &["routes[0].auth.providers: no provider can authenticate this route; define one under providers"],
    ),
    (
        "routes: audience outside the providers'",
        &["routes[0].auth: {providers: [corp], audience: billing}"],
        &["routes[0].auth.audience: \"billing\" is not among the audiences of every provider of this route"],
    ),
    (
        "routes: requirement without values",
        &["routes[0].auth: {require: [{claim: roles}]}"],
        &["routes[0].auth.require[0]: needs any_of or all_of"],
    ),
    (
        "routes: empty any_of",
        &["routes[0].auth: {require: [{claim: roles, any_of: []}]}"],
        &["routes[0].auth.require[0].any_of: must not be empty: an empty any_of could never hold"],
    ),
    (
        "routes: empty all_of",
        &["routes[0].auth: {require: [{claim: roles, any_of: [a], all_of: []}]}"],
        &["routes[0].auth.require[0].all_of: must not be empty: an empty all_of would always hold"],
    ),
    (
        "routes: forwarded claim not a header name",
        &["routes[0].forward.claims: {sub: X-Sub, email: [X-Email]}"],
        &["routes[0].forward.claims.email: must be a header name, found a list"],
    ),
    // compile/traces.rs: `tracing:`.
    (
        "traces: sample ratio out of range",
        &["tracing: {sample_ratio: 1.5}"],
        &["tracing.sample_ratio: must be a number from 0 to 1, found 1.5"],
    ),
    (
        "traces: sample ratio out of range",
        &["tracing: {sample_ratio: often}"],
        &["tracing.sample_ratio: must be a number from 0 to 1, found a string"],
    ),
    (
        "traces: export timeout zero",
        &["tracing: {otlp_endpoint: \"http://127.0.0.1:4318\", export_timeout: 0s}"],
        &["tracing.export_timeout: must be longer than 0s"],
    ),
    (
        "traces: endpoint not an http URL",
        &["tracing: {otlp_endpoint: \"collector:4318\"}"],
        &["tracing.otlp_endpoint: \"collector:4318\" is not an http(s) URL like http://collector:4318"],
    ),
    (
        "traces: endpoint with a query",
        &["tracing: {otlp_endpoint: \"http://collector:4318/?x=1\"}"],
        &["tracing.otlp_endpoint: must not carry a query, a fragment or credentials"],
    ),
    // compile/assertion.rs: `assertion:` and `forward.assertion`.
    (
        "assertion: empty issuer",
        &["assertion: {issuer: \" \", signing_key_file: /dev/null}"],
        &[
            "assertion.issuer: must not be empty",
            "assertion.signing_key_file: /dev/null: holds no PKCS#8 private key (PEM \"PRIVATE KEY\")",
        ],
    ),
    (
        "assertion: key file unreadable",
        &["assertion: {issuer: \"https://gw.test\", signing_key_file: keys/missing.pem}"],
        &["assertion.signing_key_file: cannot read /etc/gw/keys/missing.pem: No such file or directory (os error 2)"],
    ),
    (
        "assertion: key not usable",
        &[concat!(
            "assertion: {issuer: \"https://gw.test\", signing_key_file: ",
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/assertion-p384.pem}"
        )],
        &[concat!(
            "assertion.signing_key_file: ",
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/assertion-p384.pem: is neither a P-256 (ES256) nor an Ed25519 (EdDSA) key"
        )],
    ),
    (
        "assertion: header the gateway manages",
        &["routes[0].forward: {assertion: {header: X-Request-Id}}"],
        &["routes[0].forward.assertion.header: \"X-Request-Id\" is a header the gateway manages itself"],
    ),
    (
        "assertion: header already a claim header",
        &["routes[0].forward: {claims: {sub: X-Sub}, assertion: {header: x-sub}}"],
        &["routes[0].forward.assertion.header: \"x-sub\" is already a claim header of this route"],
    ),
    (
        "assertion: header not a header name",
        &["routes[0].forward: {assertion: {header: \"X Sub\"}}"],
        &["routes[0].forward.assertion.header: \"X Sub\" is not a valid header name"],
    ),
    (
        "assertion: ttl out of range",
        &["routes[0].forward: {assertion: {ttl: 2h}}"],
        &["routes[0].forward.assertion.ttl: must be from 1s to 1h"],
    ),
    (
        "assertion: no signing key",
        &["routes[0].forward: {assertion: {}}"],
        &["routes[0].forward.assertion: needs a top-level assertion section (issuer, signing_key_file) to sign with"],
    ),
    (
        "routes: forwarded claim bad header",
        &["routes[0].forward.claims: {sub: \"X Sub\"}"],
        &["routes[0].forward.claims.sub: \"X Sub\" is not a valid header name"],
    ),
    (
        "routes: forwarded claim reserved header",
        &["routes[0].forward.claims: {sub: X-Forwarded-For}"],
        &["routes[0].forward.claims.sub: \"X-Forwarded-For\" is a header the gateway manages itself"],
    ),
    (
        "routes: forwarded claim header twice",
        &["routes[0].forward.claims: {sub: X-User, email: x-user}"],
        &["routes[0].forward.claims.email: header \"x-user\" is already fed by another claim"],
    ),
    (
        "compile: claim path",
        &["routes[0].forward.claims: {\"realm..roles\": X-Roles}"],
        &["routes[0].forward.claims.realm..roles: \"realm..roles\": empty path segment"],
    ),
    (
        "routes: forward.token",
        &["routes[0].forward.token: keep"],
        &["routes[0].forward.token: \"keep\" is not one of strip, forward"],
    ),
    // compile/sections.rs
    (
        "sections: log level",
        &["log.level: warning"],
        &["log.level: \"warning\" is not one of error, warn, info, debug, trace"],
    ),
    (
        "sections: log format",
        &["log.format: logfmt"],
        &["log.format: \"logfmt\" is not one of json, text"],
    ),
    (
        "sections: admin token too short",
        &["admin.token_env: JWTGW_ERROR_TABLE_SHORT"],
        &["admin.token_env: environment variable JWTGW_ERROR_TABLE_SHORT must hold at least 16 bytes"],
    ),
    (
        "sections: admin token unreadable",
        &["admin.token_env: JWTGW_ERROR_TABLE_UNSET"],
        &["admin.token_env: environment variable JWTGW_ERROR_TABLE_UNSET is not set"],
    ),
    (
        "sections: redis_url with memory",
        &["revocation.redis_url: \"redis://127.0.0.1:6379\""],
        &["revocation.redis_url: only applies to backend: redis"],
    ),
    (
        "sections: file with redis",
        &["revocation: {backend: redis, redis_url: \"redis://127.0.0.1:6379\", file: revoked.txt}"],
        &["revocation.file: only applies to backend: memory"],
    ),
    (
        "sections: redis_url scheme",
        &["revocation: {backend: redis, redis_url: \"http://127.0.0.1:6379\"}"],
        &["revocation.redis_url: must be a redis:// or rediss:// URL"],
    ),
    (
        "sections: redis_url required",
        &["revocation: {backend: redis}"],
        &["revocation.redis_url: is required with backend: redis"],
    ),
    (
        "sections: forward_auth trusted proxy",
        &["forward_auth: {trusted_proxies: [nginx]}"],
        &["forward_auth.trusted_proxies[0]: \"nginx\" is not an IP address or CIDR block"],
    ),
    (
        "yaml: required",
        &["forward_auth: {tls: {cert_file: fa.crt}}"],
        &["forward_auth.tls.key_file: is required"],
    ),
    (
        "sections: revocation backend",
        &["revocation.backend: file"],
        &["revocation.backend: \"file\" is not one of memory, redis"],
    ),
    (
        "yaml: required",
        &["upstream_tls: {}"],
        &["upstream_tls.ca_file: is required"],
    ),
    (
        "yaml: required",
        &["admin.tls: {cert_file: admin.crt}"],
        &["admin.tls.key_file: is required"],
    ),
    // compile/binding.rs: sender-constrained tokens.
    (
        "binding: client_auth mode",
        &["server.tls.client_auth: {mode: always, ca_file: clients-ca.pem}"],
        &["server.tls.client_auth.mode: \"always\" is not one of optional, required"],
    ),
    (
        "yaml: required",
        &["server.tls.client_auth: {mode: required}"],
        &["server.tls.client_auth.ca_file: is required"],
    ),
    (
        "binding: dpop max_age",
        &["providers[0].dpop: {max_age: 1h}"],
        &["providers[0].dpop.max_age: must be between 1s and 10m: a proof stays usable, and its jti remembered, this long"],
    ),
    (
        "binding: dpop replay",
        &["providers[0].dpop: {replay: disk}"],
        &["providers[0].dpop.replay: \"disk\" is not one of memory, redis"],
    ),
    (
        "binding: dpop without an asymmetric algorithm",
        &[
            "providers[0].algorithms: [HS256]",
            "providers[0].shared_secret_env: JWTGW_ERROR_TABLE_LONG",
            "-providers[0].jwks_url",
            "providers[0].dpop: {}",
        ],
        &["providers[0].dpop: needs an RS/PS/ES/EdDSA algorithm in algorithms: a proof is signed with the client's own key pair"],
    ),
    (
        "binding: require_binding value",
        &["routes[0].auth: {providers: [corp], require_binding: always}"],
        &["routes[0].auth.require_binding: \"always\" is not one of none, dpop, mtls, any"],
    ),
    (
        "binding: dpop route without a dpop provider",
        &["routes[0].auth: {providers: [corp], require_binding: dpop}"],
        &["routes[0].auth.require_binding: dpop: provider \"corp\" of this route has no dpop section, so none of its tokens could pass"],
    ),
    (
        "binding: mtls route without client_auth",
        &["routes[0].auth: {providers: [corp], require_binding: mtls}"],
        &["routes[0].auth.require_binding: mtls needs server.tls.client_auth: without client certificates no token could pass"],
    ),
    (
        "binding: any route with nothing to prove",
        &["routes[0].auth: {providers: [corp], require_binding: any}"],
        &["routes[0].auth.require_binding: any needs server.tls.client_auth or a provider of this route with a dpop section"],
    ),
    (
        "binding: redis replay without the revocation store",
        &["providers[0].dpop: {replay: redis}"],
        &["providers[0].dpop.replay: redis shares the revocation store: set revocation.backend: redis and its redis_url"],
    ),
    // yaml.rs: the walker, whatever the key.
    (
        "yaml: not YAML",
        &["raw: server: [unclosed"],
        &["not valid YAML: did not find expected ',' or ']' at line 2 column 1, while parsing a flow sequence at line 1 column 9"],
    ),
    (
        "yaml: not a map",
        &["log: [json]"],
        &["log: must be a map, found a list"],
    ),
    (
        "yaml: not a map",
        &["raw: [server]"],
        &[
            "must be a map, found a list",
            "server.tls: is required: set tls.cert_file and tls.key_file, or insecure_plaintext: true to serve without TLS",
            "routes: is required: at least one route",
        ],
    ),
    (
        "yaml: required",
        &["-providers[0].name"],
        &["providers[0].name: is required"],
    ),
    (
        "yaml: required",
        &["-server.tls.cert_file"],
        &["server.tls.cert_file: is required"],
    ),
    (
        "yaml: not a boolean",
        &["server.path.merge_slashes: \"no\""],
        &["server.path.merge_slashes: must be true or false, found a string"],
    ),
    (
        "yaml: not a whole number",
        &["token_cache.max_entries: -1"],
        &["token_cache.max_entries: must be a whole number, found a number"],
    ),
    (
        "yaml: not a whole number",
        &["server.limits.max_body_bytes: 1.5"],
        &["server.limits.max_body_bytes: must be a whole number, found a number"],
    ),
    (
        "yaml: duration not a string",
        &["server.tls.hsts_max_age: 31536000"],
        &["server.tls.hsts_max_age: must be a duration such as 30s, 5m or 1h, found a number"],
    ),
    (
        "yaml: invalid duration",
        &["providers[0].clock_skew: 30 s"],
        &["providers[0].clock_skew: invalid duration \"30 s\": missing unit; write it as 30s, 5m, 1h or 1d"],
    ),
    (
        "yaml: not a list",
        &["providers[0].audiences: api"],
        &["providers[0].audiences: must be a list, found a string"],
    ),
    (
        "yaml: not a list",
        &["routes: {name: r}"],
        &["routes: must be a list, found a map"],
    ),
    (
        "yaml: data key not a string",
        &["routes[0].forward.claims: {1: X-One}"],
        &["routes[0].forward.claims: keys must be strings, found a number"],
    ),
    (
        "yaml: data map not a map",
        &["routes[0].forward.claims: [sub]"],
        &["routes[0].forward.claims: must be a map, found a list"],
    ),
    (
        "yaml: unknown key",
        &["server.lisen: \"127.0.0.1:8443\""],
        &["server.lisen: unknown key (did you mean `listen`?)"],
    ),
    (
        "yaml: unknown key",
        &["routes[0].match.prefix: /orders"],
        &["routes[0].match.prefix: unknown key"],
    ),
    (
        "yaml: key not a string",
        &["log: {true: json}"],
        &["log: keys must be strings, found a boolean"],
    ),
    (
        "yaml: not a string",
        &["server.listen: 8443"],
        &["server.listen: must be a string, found a number"],
    ),
    (
        "yaml: not a string",
        &["providers[0].audiences: [api, !aud other]"],
        &["providers[0].audiences[1]: must be a string, found a tagged value"],
    ),
    // duration.rs, reached through any duration key.
    (
        "duration: empty",
        &["providers[0].clock_skew: \" \""],
        &["providers[0].clock_skew: invalid duration \" \": empty duration; write it as 30s, 5m, 1h or 1d"],
    ),
    (
        "duration: no number",
        &["providers[0].clock_skew: \"-1s\""],
        &["providers[0].clock_skew: invalid duration \"-1s\": expected a number followed by a unit (ms, s, m, h, d), e.g. 30s"],
    ),
    (
        "duration: number above u64",
        &["providers[0].clock_skew: 18446744073709551616s"],
        &["providers[0].clock_skew: invalid duration \"18446744073709551616s\": number too large"],
    ),
    (
        "duration: minutes overflow",
        &["providers[0].clock_skew: 307445734561825861m"],
        &["providers[0].clock_skew: invalid duration \"307445734561825861m\": number too large"],
    ),
    (
        "duration: hours overflow",
        &["providers[0].clock_skew: 5124095576030432h"],
        &["providers[0].clock_skew: invalid duration \"5124095576030432h\": number too large"],
    ),
    (
        "duration: days overflow",
        &["providers[0].clock_skew: 213503982334602d"],
        &["providers[0].clock_skew: invalid duration \"213503982334602d\": number too large"],
    ),
    (
        "duration: missing unit",
        &["providers[0].clock_skew: \"30\""],
        &["providers[0].clock_skew: invalid duration \"30\": missing unit; write it as 30s, 5m, 1h or 1d"],
    ),
    (
        "duration: unknown unit",
        &["providers[0].clock_skew: 30sec"],
        &["providers[0].clock_skew: invalid duration \"30sec\": unknown unit; use ms, s, m, h or d"],
    ),
    (
        "duration: sum overflows",
        &["providers[0].clock_skew: 18446744073709551615s1s"],
        &["providers[0].clock_skew: invalid duration \"18446744073709551615s1s\": duration too large"],
    ),
];

/// Sites no file can reach, each with the reason; they count as covered.
const UNREACHABLE: &[(&str, &str)] = &[
    (
        "compile: invalid configuration",
        "server and admin are None only after socket_addr pushed an error, which returns earlier",
    ),
    (
        "routes: upstream Host header",
        "an authority that parsed is visible ASCII, always a valid header value",
    ),
];

const WARNINGS: &[Case] = &[
    (
        "server: plaintext",
        &["-server.tls", "server.insecure_plaintext: true"],
        &["server.insecure_plaintext: serving without TLS: tokens travel in clear text"],
    ),
    (
        "routes: shadowed route",
        &["routes[1]: {name: deeper, match: {path_prefix: /orders/open}, upstream: \"http://127.0.0.1:9\", auth: anonymous}"],
        &["routes[1]: never matches: route \"r\" above it catches every request it would"],
    ),
    (
        "routes: trailing slash trimmed",
        &["routes[0].match.path_prefix: /orders/"],
        &["routes[0].match.path_prefix: \"/orders/\" is read as \"/orders\": a prefix matches whole segments, so the trailing '/' is dropped"],
    ),
    (
        "routes: every provider by default",
        &[
            "providers[1]: {name: other, issuer: \"https://other.test\", jwks_url: \"https://other.test/certs\", algorithms: [ES256], audiences: [api]}",
            "routes[0].auth: {audience: api}",
        ],
        &["routes[0].auth.providers: not set: every one of the 2 providers may authenticate this route; name the ones that should"],
    ),
    (
        "routes: no audience checked",
        &["-providers[0].audiences", "routes[0].auth: {providers: [corp]}"],
        &["routes[0].auth.audience: no audience is checked on this route: a token minted for any other service of the same issuer passes"],
    ),
];

/// The sources the table covers, by the module name its sites start with.
const SOURCES: &[(&str, &str, &str)] = &[
    (
        "browser",
        "src/config/compile/browser.rs",
        include_str!("browser.rs"),
    ),
    (
        "compile",
        "src/config/compile/mod.rs",
        include_str!("mod.rs"),
    ),
    (
        "server",
        "src/config/compile/server.rs",
        include_str!("server.rs"),
    ),
    (
        "providers",
        "src/config/compile/providers.rs",
        include_str!("providers.rs"),
    ),
    (
        "routes",
        "src/config/compile/routes.rs",
        include_str!("routes.rs"),
    ),
    (
        "sections",
        "src/config/compile/sections.rs",
        include_str!("sections.rs"),
    ),
    (
        "traces",
        "src/config/compile/traces.rs",
        include_str!("traces.rs"),
    ),
    (
        "assertion",
        "src/config/compile/assertion.rs",
        include_str!("assertion.rs"),
    ),
    (
        "binding",
        "src/config/compile/binding.rs",
        include_str!("binding.rs"),
    ),
    ("yaml", "src/config/yaml.rs", include_str!("../yaml.rs")),
    (
        "duration",
        "src/config/duration.rs",
        include_str!("../duration.rs"),
    ),
];

/// What starts one message in the non-test code: a pushed error, an error built in place (the
/// YAML parse error, the listener clash), or a `&'static str` reason (durations, env variables).
const ERROR_MARKERS: &[&str] = &[
    "errors.push(",
    "vec![ConfigError {",
    "|e| ConfigError {",
    "Err(\"",
    "ok_or(\"",
    "|_| \"",
];
const WARNING_MARKER: &str = "warnings.push(";

#[test]
fn base_compiles_clean() {
    let config = compile_str(BASE, Path::new("/etc/gw")).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn every_error_message_is_pinned() {
    check_rows(ERRORS, |yaml| {
        match compile_str(yaml, Path::new("/etc/gw")) {
            Ok(config) => Err(format!(
                "compiled, with warnings {:?}",
                texts(&config.warnings)
            )),
            Err(errors) => Ok(texts(&errors)),
        }
    });
}

#[test]
fn every_warning_is_pinned() {
    check_rows(WARNINGS, |yaml| {
        match compile_str(yaml, Path::new("/etc/gw")) {
            Ok(config) => Ok(texts(&config.warnings)),
            Err(errors) => Err(format!("did not compile: {:?}", texts(&errors))),
        }
    });
}

#[test]
fn every_message_site_has_a_row() {
    let error_sites = sites(
        ERRORS
            .iter()
            .map(|c| c.0)
            .chain(UNREACHABLE.iter().map(|u| u.0)),
    );
    let warning_sites = sites(WARNINGS.iter().map(|c| c.0));
    let mut problems = Vec::new();
    for (module, file, source) in SOURCES {
        // The unit tests at the end hold example messages, not sites.
        let code = source
            .split("\n#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or(source);
        let errors: usize = ERROR_MARKERS.iter().map(|m| code.matches(m).count()).sum();
        let warnings = code.matches(WARNING_MARKER).count();
        for (kind, found, table, rows) in [
            (
                "error",
                errors,
                &error_sites,
                "ERRORS (or UNREACHABLE, with the reason)",
            ),
            ("warning", warnings, &warning_sites, "WARNINGS"),
        ] {
            let named = table.iter().filter(|s| s.0 == *module).count();
            if named != found {
                problems.push(format!(
                    "{file} has {found} {kind} site(s) but {rows} in src/config/compile/error_table.rs \
                     names {named} distinct `{module}: ...` site(s): add a row for each new message \
                     (or drop the row of a message that is gone)"
                ));
            }
        }
    }
    let modules: BTreeSet<&str> = SOURCES.iter().map(|s| s.0).collect();
    for (module, what) in error_sites.iter().chain(&warning_sites) {
        if !modules.contains(module) {
            problems.push(format!(
                "site `{module}: {what}` names no module of SOURCES"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Runs every row and reports all mismatches at once, so one run shows every reworded message.
fn check_rows(rows: &[Case], outcome: impl Fn(&str) -> Result<Vec<String>, String>) {
    set_test_env();
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|(site, edits, expected)| {
            let yaml = document(edits);
            let got = outcome(&yaml);
            match got {
                Ok(got) if got == *expected => None,
                Ok(got) => Some(format!(
                    "{site} {edits:?}\n  expected {expected:#?}\n  got {got:#?}"
                )),
                Err(why) => Some(format!("{site} {edits:?}: {why}")),
            }
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows differ:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn texts(errors: &[crate::config::ConfigError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

/// `module: what` split into its two halves, one entry per distinct site.
fn sites<'a>(names: impl Iterator<Item = &'a str>) -> BTreeSet<(&'a str, &'a str)> {
    names
        .map(|n| n.split_once(": ").unwrap_or((n, "")))
        .collect()
}

fn set_test_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var(ENV_EMPTY, "");
        std::env::set_var(ENV_SHORT, "0123456789");
        std::env::set_var(ENV_LONG, "x".repeat(64));
    });
}

/// `BASE` with `edits` applied (see `Case`), as YAML text.
fn document(edits: &[&str]) -> String {
    if let [only] = edits {
        if let Some(text) = only.strip_prefix("raw:") {
            return text.trim_start().to_string();
        }
    }
    let mut doc: Value = serde_yaml::from_str(BASE).expect("BASE is YAML");
    for edit in edits {
        match edit.strip_prefix('-') {
            Some(path) => remove(&mut doc, path),
            None => {
                let (path, value) = edit
                    .split_once(": ")
                    .or_else(|| edit.strip_suffix(':').map(|p| (p, "")))
                    .unwrap_or_else(|| {
                        panic!("edit {edit:?} is neither `path: value` nor `-path`")
                    });
                let value: Value = serde_yaml::from_str(value)
                    .unwrap_or_else(|e| panic!("edit {edit:?}: value is not YAML: {e}"));
                *slot(&mut doc, path) = value;
            }
        }
    }
    serde_yaml::to_string(&doc).expect("a Value serializes")
}

enum Step<'p> {
    Key(&'p str),
    Index(usize),
}

/// `a.b[0].c` as `Key(a) Key(b) Index(0) Key(c)`.
fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut pieces = part.split('[');
        let key = pieces.next().unwrap_or_default();
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        for index in pieces {
            let n = index
                .strip_suffix(']')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad index in {path:?}"));
            out.push(Step::Index(n));
        }
    }
    out
}

/// The value at `path`, created (as null, inside new maps) where missing.
fn slot<'v>(doc: &'v mut Value, path: &str) -> &'v mut Value {
    steps(path)
        .into_iter()
        .fold(doc, |node, step| descend(node, &step, path))
}

fn descend<'v>(node: &'v mut Value, step: &Step, path: &str) -> &'v mut Value {
    if node.is_null() {
        *node = Value::Mapping(Mapping::new());
    }
    match (step, node) {
        (Step::Key(key), Value::Mapping(map)) => map
            .entry(Value::String((*key).to_string()))
            .or_insert(Value::Null),
        (Step::Index(i), Value::Sequence(items)) => {
            if *i == items.len() {
                items.push(Value::Null);
            }
            items
                .get_mut(*i)
                .unwrap_or_else(|| panic!("{path:?}: index {i} is past the end"))
        }
        _ => panic!("{path:?} does not fit the shape of BASE"),
    }
}

fn remove(doc: &mut Value, path: &str) {
    let mut steps = steps(path);
    let last = steps.pop().unwrap_or_else(|| panic!("empty path"));
    let parent = steps
        .into_iter()
        .fold(doc, |node, step| descend(node, &step, path));
    let removed = match (last, parent) {
        (Step::Key(key), Value::Mapping(map)) => map.shift_remove(key).is_some(),
        (Step::Index(i), Value::Sequence(items)) if i < items.len() => {
            items.remove(i);
            true
        }
        _ => false,
    };
    assert!(removed, "-{path}: nothing there to remove");
}

//! Turns the YAML document into a checked `Config`, collecting every error with its path. One
//! file per section; this one walks the top level and holds what several sections share.

mod assertion;
mod binding;
mod browser;
#[cfg(test)]
mod error_table;
mod providers;
mod routes;
mod sections;
mod server;
mod traces;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use super::yaml::{parse_document, Errors, Fields};
use super::{Config, ConfigError};
use crate::claims::ClaimPath;

/// Compiles a YAML document; `base` is the folder relative file paths resolve against.
pub fn compile_str(text: &str, base: &Path) -> Result<Config, Vec<ConfigError>> {
    let doc = parse_document(text).map_err(|e| vec![e])?;
    let mut errors = Errors::default();
    let mut warnings = Errors::default();
    let mut root = Fields::of(Some(&doc), String::new(), &mut errors);
    if !root.is_present() && errors.0.is_empty() {
        errors.push(
            "",
            "the file is empty; see the README for a minimal gateway.yaml",
        );
    }

    let server = server::server(
        &mut root.child("server", &mut errors),
        base,
        &mut errors,
        &mut warnings,
    );
    let token_cache =
        sections::token_cache(&mut root.child("token_cache", &mut errors), &mut errors);
    let log = sections::log(&mut root.child("log", &mut errors), &mut errors);
    let admin = sections::admin(&mut root.child("admin", &mut errors), base, &mut errors);
    let providers = providers::providers(&mut root, &mut errors);
    let forward_auth = sections::forward_auth(
        &mut root.child("forward_auth", &mut errors),
        base,
        &mut errors,
    );
    let decisions_only_allowed = root.has_non_null("forward_auth");
    let routes = routes::routes(
        &mut root,
        &providers,
        decisions_only_allowed,
        &mut errors,
        &mut warnings,
    );
    let revocation = sections::revocation(
        &mut root.child("revocation", &mut errors),
        base,
        &mut errors,
    );
    let upstream_tls = sections::upstream_tls(
        &mut root.child("upstream_tls", &mut errors),
        base,
        &mut errors,
    );
    let tracing = traces::tracing(&mut root.child("tracing", &mut errors), &mut errors);
    let assertion =
        assertion::assertion(&mut root.child("assertion", &mut errors), base, &mut errors);
    root.end(&mut errors);
    let clean = errors.0.is_empty();
    if clean {
        assertion::check_key_present(&routes, assertion.as_ref(), &mut errors);
    }
    if let (true, Some(server)) = (clean, &server) {
        binding::check_sections(
            server,
            &providers.compiled,
            &routes,
            &revocation,
            &mut errors,
        );
    }

    if !errors.0.is_empty() {
        return Err(errors.0);
    }
    match (server, admin) {
        (Some(server), Some(admin)) => {
            if server.listen == admin.listen {
                return Err(vec![ConfigError {
                    path: "admin.listen".into(),
                    message: "must differ from server.listen: the admin API is never served on the public listener".into(),
                }]);
            }
            if let Some(fa) = &forward_auth {
                if fa.listen == server.listen || fa.listen == admin.listen {
                    return Err(vec![ConfigError {
                        path: "forward_auth.listen".into(),
                        message: "must differ from server.listen and admin.listen".into(),
                    }]);
                }
            }
            Ok(Config {
                server,
                token_cache,
                log,
                admin,
                providers: providers.compiled.into_iter().map(Arc::new).collect(),
                routes,
                revocation,
                upstream_tls,
                forward_auth,
                tracing,
                assertion,
                warnings: warnings.0,
            })
        }
        _ => Err(vec![ConfigError {
            path: String::new(),
            message: "invalid configuration".into(),
        }]),
    }
}

fn socket_addr(
    fields: &mut Fields,
    key: &'static str,
    default: &str,
    errors: &mut Errors,
) -> Option<SocketAddr> {
    let path = fields.path_of(key);
    let text = fields
        .string(key, errors)
        .unwrap_or_else(|| default.to_string());
    match text.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.push(
                &path,
                format!("{text:?} is not an address like 0.0.0.0:8443 or [::1]:8443"),
            );
            None
        }
    }
}

fn read_env_secret(var: &str) -> Result<Vec<u8>, &'static str> {
    use std::os::unix::ffi::OsStringExt;
    match std::env::var_os(var) {
        Some(v) if v.is_empty() => Err("is empty"),
        Some(v) => Ok(v.into_vec()),
        None => Err("is not set"),
    }
}

fn check_name(name: &str, path: &str, errors: &mut Errors) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        errors.push(
            path,
            "must be 1 to 64 characters of A-Z a-z 0-9 - _ . (it becomes a metric label)",
        );
    }
}

fn claim_path(text: &str, path: &str, errors: &mut Errors) -> Option<ClaimPath> {
    match ClaimPath::parse(text) {
        Ok(p) => Some(p),
        Err(why) => {
            errors.push(path, why);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{PathPolicy, UnderscoreHeaders};

    /// A minimal valid file; `extra` is spliced in at the top level, `provider` and `route`
    /// into the one provider and the one route.
    fn config(server: &str, provider: &str, route: &str) -> String {
        format!(
            r#"
server:
  listen: "127.0.0.1:8443"
  insecure_plaintext: true
{server}
providers:
  - name: corp
    issuer: "https://idp.test"
    jwks_url: "https://idp.test/certs"
    algorithms: [RS256]
    audiences: [api]
{provider}
routes:
  - name: r
    match:
      path_prefix: "/orders"
    upstream: "http://127.0.0.1:9"
    auth:
      providers: [corp]
{route}
"#
        )
    }

    fn errors_of(yaml: &str) -> Vec<String> {
        match compile_str(yaml, Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn compiled(yaml: &str) -> Config {
        let mut config = compile_str(yaml, Path::new(".")).unwrap_or_else(|e| panic!("{e:?}"));
        // Every config here serves plaintext; that warning is not what these tests look at.
        config
            .warnings
            .retain(|w| w.path != "server.insecure_plaintext");
        config
    }

    #[test]
    fn path_and_underscore_policies_default_and_parse() {
        let c = compiled(&config("", "", ""));
        assert_eq!(c.server.path, PathPolicy::default());
        assert!(c.server.path.merge_slashes && !c.server.path.case_insensitive);
        assert_eq!(c.server.headers_with_underscores, UnderscoreHeaders::Drop);
        let c = compiled(&config(
            "  path: {merge_slashes: false, case_insensitive: true}\n  headers_with_underscores: reject",
            "",
            "",
        ));
        assert!(!c.server.path.merge_slashes && c.server.path.case_insensitive);
        assert_eq!(c.server.headers_with_underscores, UnderscoreHeaders::Reject);
        assert_eq!(
            errors_of(&config("  headers_with_underscores: keep", "", "")),
            ["server.headers_with_underscores: \"keep\" is not one of drop, reject, allow"]
        );
        assert_eq!(
            errors_of(&config("  path: {merge: true}", "", "")),
            ["server.path.merge: unknown key"]
        );
    }

    #[test]
    fn token_limit_follows_a_lower_header_limit() {
        let c = compiled(&config("  limits: {max_header_bytes: 4096}", "", ""));
        assert_eq!(c.server.limits.max_token_bytes, 4096);
        let c = compiled(&config("  limits: {max_header_bytes: 65536}", "", ""));
        assert_eq!(c.server.limits.max_token_bytes, 8192);
        assert_eq!(
            errors_of(&config(
                "  limits: {max_header_bytes: 4096, max_token_bytes: 8192}",
                "",
                ""
            )),
            ["server.limits.max_token_bytes: cannot exceed max_header_bytes"]
        );
    }

    #[test]
    fn connection_limits_default_and_check() {
        let c = compiled(&config("", "", ""));
        assert_eq!(c.server.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.server.limits.max_connections, 10_000);
        assert_eq!(c.server.limits.max_connections_per_ip, 512);
        assert_eq!(
            errors_of(&config(
                "  limits: {max_connections: 10, max_connections_per_ip: 20, idle_timeout: 0s}",
                "",
                ""
            )),
            [
                "server.limits.idle_timeout: must be longer than 0s",
                "server.limits.max_connections_per_ip: cannot exceed max_connections",
            ]
        );
    }

    #[test]
    fn insecure_jwks_http_only_to_loopback() {
        for url in [
            "http://127.0.0.1:8080/certs",
            "http://127.9.9.9/certs",
            "http://[::1]:8080/certs",
            "http://localhost/certs",
        ] {
            let yaml = config("", "    allow_insecure_jwks_http: true", "")
                .replace("https://idp.test/certs", url);
            assert!(errors_of(&yaml).is_empty(), "{url}: {:?}", errors_of(&yaml));
        }
        for url in [
            "http://idp.test/certs",
            "http://10.0.0.1/certs",
            "http://localhost.evil.test/certs",
        ] {
            let yaml = config("", "    allow_insecure_jwks_http: true", "")
                .replace("https://idp.test/certs", url);
            let errors = errors_of(&yaml);
            assert!(
                errors[0].starts_with("providers[0].jwks_url: allow_insecure_jwks_http permits http:// only to a loopback host"),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn min_refresh_below_one_second_is_refused() {
        for (value, ok) in [("0s", false), ("1s", true), ("30s", true)] {
            let yaml = config("", &format!("    jwks: {{min_refresh: {value}}}"), "");
            let errors = errors_of(&yaml);
            assert_eq!(errors.is_empty(), ok, "{value}: {errors:?}");
            if !ok {
                assert!(errors[0].starts_with("providers[0].jwks.min_refresh: must be at least 1s"));
            }
        }
    }

    #[test]
    fn trailing_slash_prefix_is_trimmed_with_a_warning() {
        let yaml = config("", "", "").replace("\"/orders\"", "\"/orders/\"");
        let c = compiled(&yaml);
        assert_eq!(c.routes[0].path_prefix, "/orders");
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert_eq!(c.warnings[0].path, "routes[0].match.path_prefix");
        let c = compiled(&config("", "", "").replace("\"/orders\"", "\"/\""));
        assert_eq!(c.routes[0].path_prefix, "/");
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn route_without_providers_warns_when_several_exist() {
        let two = config("", "", "")
            .replace("      providers: [corp]\n", "      audience: api\n")
            .replace(
                "routes:",
                "  - name: other\n    issuer: \"https://other.test\"\n    jwks_url: \"https://other.test/certs\"\n    algorithms: [ES256]\n    audiences: [api]\nroutes:",
            );
        let c = compiled(&two);
        let paths: Vec<&str> = c.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(paths, ["routes[0].auth.providers"]);
        let one = config("", "", "").replace("      providers: [corp]\n", "      audience: api\n");
        assert!(compiled(&one).warnings.is_empty());
    }

    #[test]
    fn upstream_protocol_and_tls_parse() {
        use crate::config::UpstreamProtocol;
        let c = compiled(&config("", "", ""));
        assert_eq!(c.routes[0].upstream_protocol, UpstreamProtocol::Auto);
        assert!(c.upstream_tls.is_none());
        let c = compiled(&config("", "", "    upstream_protocol: http2"));
        assert_eq!(c.routes[0].upstream_protocol, UpstreamProtocol::Http2);
        let c = compiled(&config("", "", "    upstream_protocol: http1"));
        assert_eq!(c.routes[0].upstream_protocol, UpstreamProtocol::Http1);
        assert_eq!(
            errors_of(&config("", "", "    upstream_protocol: h2")),
            ["routes[0].upstream_protocol: \"h2\" is not one of auto, http1, http2"]
        );
        let yaml = config("", "", "") + "upstream_tls: {ca_file: certs/internal-ca.pem}\n";
        let c = compile_str(&yaml, Path::new("/etc/gw")).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            c.upstream_tls.map(|t| t.ca_file),
            Some(Path::new("/etc/gw/certs/internal-ca.pem").to_path_buf())
        );
        assert_eq!(
            errors_of(&(config("", "", "") + "upstream_tls: {}\n")),
            ["upstream_tls.ca_file: is required"]
        );
    }

    #[test]
    fn forward_auth_defaults_to_loopback_and_allows_decision_only_routes() {
        let decision_only =
            config("", "", "").replace("    upstream: \"http://127.0.0.1:9\"\n", "");
        assert_eq!(
            errors_of(&decision_only),
            ["routes[0].upstream: is required (only with a forward_auth section may a route serve decisions alone)"]
        );
        let c = compiled(&(decision_only + "forward_auth: {}\n"));
        let fa = c.forward_auth.expect("forward_auth");
        assert_eq!(fa.listen, "127.0.0.1:9902".parse().unwrap());
        assert!(fa.tls.is_none());
        let trusted: Vec<String> = fa.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(trusted, ["127.0.0.0/8", "::1/128"]);
        assert!(c.routes[0].upstream.is_none());
        let c = compiled(
            &(config("", "", "")
                + "forward_auth: {listen: \"0.0.0.0:7000\", trusted_proxies: [10.0.0.0/8], tls: {cert_file: a.crt, key_file: a.key}}\n"),
        );
        let fa = c.forward_auth.expect("forward_auth");
        assert_eq!(fa.trusted_proxies.len(), 1);
        assert!(fa.tls.is_some());
        assert!(c.routes[0].upstream.is_some());
    }

    #[test]
    fn browser_keys_parse_into_rendered_values() {
        use crate::config::{AllowedOrigins, RouteAuth, TokenSource};
        let c = compiled(&config(
            "  resource_metadata: {resource: \"https://API.example.com/orders/\", authorization_servers: [\"https://idp.test\"], scopes_supported: [orders]}",
            "",
            "      token_from: [header, \"cookie:session\", \"query:access_token\"]\n      optional: true\n    cors: {allow_origins: [\"https://App.test\", \"http://localhost:3000\"], allow_methods: [get, post], allow_headers: [Authorization, X-Trace], expose_headers: [X-Request-Id], allow_credentials: true, max_age: 10m}",
        ));
        let RouteAuth::Protected(auth) = &c.routes[0].auth else {
            panic!("protected")
        };
        assert!(auth.optional);
        assert_eq!(
            auth.token_from,
            [
                TokenSource::Header,
                TokenSource::Cookie("session".into()),
                TokenSource::Query("access_token".into())
            ]
        );
        let cors = c.routes[0].cors.as_ref().expect("cors");
        assert_eq!(
            cors.allow_origins,
            AllowedOrigins::List(vec![
                "https://app.test".into(),
                "http://localhost:3000".into()
            ])
        );
        assert_eq!(cors.allow_methods, "GET, POST");
        assert_eq!(
            cors.allow_headers.as_ref().unwrap(),
            "authorization, x-trace"
        );
        assert_eq!(cors.expose_headers.as_ref().unwrap(), "x-request-id");
        assert!(cors.allow_credentials);
        assert_eq!(cors.max_age.as_ref().unwrap(), "600");
        let meta = c.server.resource_metadata.expect("metadata");
        assert_eq!(meta.path, "/.well-known/oauth-protected-resource/orders");
        assert_eq!(
            meta.url,
            "https://api.example.com/.well-known/oauth-protected-resource/orders"
        );
        let doc: serde_json::Value = serde_json::from_str(&meta.json).unwrap();
        assert_eq!(doc["resource"], "https://API.example.com/orders/");
        assert_eq!(doc["authorization_servers"][0], "https://idp.test");
        assert_eq!(doc["scopes_supported"][0], "orders");
        let plain = compiled(&config("", "", ""));
        let RouteAuth::Protected(auth) = &plain.routes[0].auth else {
            panic!("protected")
        };
        assert_eq!(auth.token_from, [TokenSource::Header]);
        assert!(!auth.optional && plain.routes[0].cors.is_none());
        let root = compiled(&config(
            "  resource_metadata: {resource: \"https://api.test\"}",
            "",
            "",
        ));
        assert_eq!(
            root.server.resource_metadata.unwrap().path,
            "/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn admin_tls_resolves_files_against_the_config_folder() {
        let yaml = config("", "", "")
            + "admin:\n  listen: \"127.0.0.1:9901\"\n  tls: {cert_file: a.crt, key_file: a.key}\n";
        let c = compile_str(&yaml, Path::new("/etc/gw")).unwrap_or_else(|e| panic!("{e:?}"));
        let tls = c.admin.tls.expect("admin tls");
        assert_eq!(tls.cert_file, Path::new("/etc/gw/a.crt"));
        assert_eq!(tls.key_file, Path::new("/etc/gw/a.key"));
        let missing = config("", "", "") + "admin:\n  tls: {cert_file: a.crt}\n";
        assert_eq!(errors_of(&missing), ["admin.tls.key_file: is required"]);
    }
}

//! The keys of sender-constrained tokens (RFC 9449 DPoP, RFC 8705 mTLS): `server.tls.client_auth`,
//! a provider's `dpop:`, a route's `auth.require_binding`, and the checks across sections they need
//! (a route cannot insist on a binding nothing could prove).

use std::path::Path;
use std::time::Duration;

use crate::algorithm::{Algorithm, AlgorithmSet};
use crate::config::yaml::{index, Errors, Fields};
use crate::config::*;

/// The `max_age` a `dpop: {}` section gets: RFC 9449 leaves it to the server; a minute covers
/// a client that signs a proof just before a slow request.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);
/// Longest `max_age`: a proof is a replayable credential for this long (to any instance that
/// does not share the replay cache), and its `jti` is remembered for as long.
const MAX_MAX_AGE: Duration = Duration::from_secs(600);

/// `server.tls.client_auth: {mode, ca_file}`; `None` without the section.
pub(super) fn client_auth(f: &mut Fields, base: &Path, errors: &mut Errors) -> Option<ClientAuth> {
    if !f.is_present() {
        f.end(errors);
        return None;
    }
    let mode = match f.string("mode", errors).as_deref() {
        None | Some("optional") => ClientAuthMode::Optional,
        Some("required") => ClientAuthMode::Required,
        Some(other) => {
            errors.push(
                &f.path_of("mode"),
                format!("{other:?} is not one of optional, required"),
            );
            ClientAuthMode::Optional
        }
    };
    let ca_file = f.required_string("ca_file", errors);
    f.end(errors);
    Some(ClientAuth {
        mode,
        ca_file: base.join(ca_file?),
    })
}

/// A provider's `dpop: {max_age, replay}`; `None` without the section. Proofs may be signed with
/// the provider's asymmetric `algorithms` only.
pub(super) fn dpop(
    f: &mut Fields,
    algorithms: &[Algorithm],
    errors: &mut Errors,
) -> Option<DpopConfig> {
    if !f.is_present() {
        f.end(errors);
        return None;
    }
    let max_age = f.duration("max_age", errors).unwrap_or(DEFAULT_MAX_AGE);
    if max_age < Duration::from_secs(1) || max_age > MAX_MAX_AGE {
        errors.push(
            &f.path_of("max_age"),
            "must be between 1s and 10m: a proof stays usable, and its jti remembered, this long",
        );
    }
    let replay = match f.string("replay", errors).as_deref() {
        None | Some("memory") => ReplayStore::Memory,
        Some("redis") => ReplayStore::Redis,
        Some(other) => {
            errors.push(
                &f.path_of("replay"),
                format!("{other:?} is not one of memory, redis"),
            );
            ReplayStore::Memory
        }
    };
    let set = AlgorithmSet::asymmetric(algorithms);
    if set.is_empty() && !algorithms.is_empty() {
        errors.push(
            &f.path,
            "needs an RS/PS/ES/EdDSA algorithm in algorithms: a proof is signed with the client's own key pair",
        );
    }
    f.end(errors);
    Some(DpopConfig {
        max_age,
        replay,
        algorithms: set,
    })
}

/// A route's `auth.require_binding`; `none` when absent.
pub(super) fn require_binding(f: &mut Fields, errors: &mut Errors) -> RequireBinding {
    match f.string("require_binding", errors).as_deref() {
        None | Some("none") => RequireBinding::None,
        Some("dpop") => RequireBinding::Dpop,
        Some("mtls") => RequireBinding::Mtls,
        Some("any") => RequireBinding::Any,
        Some(other) => {
            errors.push(
                &f.path_of("require_binding"),
                format!("{other:?} is not one of none, dpop, mtls, any"),
            );
            RequireBinding::None
        }
    }
}

/// What no single section can see: a route insisting on a binding its providers or the listener
/// cannot check, and a shared replay cache without the store it shares. Run once every section
/// compiled cleanly, so the indexes of `providers` and `routes` are those of the file.
pub(super) fn check_sections(
    server: &ServerConfig,
    providers: &[ProviderConfig],
    routes: &[RouteConfig],
    revocation: &RevocationConfig,
    errors: &mut Errors,
) {
    let client_auth = server.tls.as_ref().is_some_and(|t| t.client_auth.is_some());
    for (i, route) in routes.iter().enumerate() {
        let RouteAuth::Protected(auth) = &route.auth else {
            continue;
        };
        let path = format!("{}.auth.require_binding", index("routes", i));
        let without_dpop: Vec<&str> = auth
            .providers
            .iter()
            .map(|&p| &providers[p])
            .filter(|p| p.dpop.is_none())
            .map(|p| p.name.as_str())
            .collect();
        match auth.require_binding {
            RequireBinding::None => {}
            RequireBinding::Dpop => {
                if let Some(name) = without_dpop.first() {
                    errors.push(
                        &path,
                        format!("dpop: provider {name:?} of this route has no dpop section, so none of its tokens could pass"),
                    );
                }
            }
            RequireBinding::Mtls => {
                if !client_auth {
                    errors.push(
                        &path,
                        "mtls needs server.tls.client_auth: without client certificates no token could pass",
                    );
                }
            }
            RequireBinding::Any => {
                if !client_auth && without_dpop.len() == auth.providers.len() {
                    errors.push(
                        &path,
                        "any needs server.tls.client_auth or a provider of this route with a dpop section",
                    );
                }
            }
        }
    }
    let shared_store = matches!(revocation, RevocationConfig::Redis { .. });
    for (i, provider) in providers.iter().enumerate() {
        if provider
            .dpop
            .as_ref()
            .is_some_and(|d| d.replay == ReplayStore::Redis)
            && !shared_store
        {
            errors.push(
                &format!("{}.dpop.replay", index("providers", i)),
                "redis shares the revocation store: set revocation.backend: redis and its redis_url",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::compile::compile_str;

    const FILE: &str = r#"
server:
  listen: "127.0.0.1:8443"
  tls:
    cert_file: gw.crt
    key_file: gw.key
    client_auth: {mode: required, ca_file: certs/clients-ca.pem}
providers:
  - name: corp
    issuer: "https://idp.test"
    jwks_url: "https://idp.test/certs"
    algorithms: [RS256, HS256, EdDSA]
    shared_secret_env: JWTGW_BINDING_TEST_SECRET
    audiences: [api]
    dpop: {max_age: 30s, replay: redis}
  - name: other
    issuer: "https://other.test"
    jwks_url: "https://other.test/certs"
    algorithms: [ES256]
    audiences: [api]
    dpop: {}
routes:
  - name: pay
    match: {path_prefix: /pay}
    upstream: "http://127.0.0.1:9"
    auth: {providers: [corp, other], require_binding: any}
  - name: plain
    match: {path_prefix: /}
    upstream: "http://127.0.0.1:9"
    auth: {providers: [corp]}
revocation: {backend: redis, redis_url: "redis://127.0.0.1:6379"}
"#;

    #[test]
    fn sections_parse_with_their_defaults() {
        std::env::set_var(
            "JWTGW_BINDING_TEST_SECRET",
            "0123456789abcdef0123456789abcdef",
        );
        let config = compile_str(FILE, Path::new("/etc/gw")).unwrap_or_else(|e| panic!("{e:?}"));
        let tls = config.server.tls.as_ref().expect("tls");
        assert_eq!(
            tls.client_auth,
            Some(ClientAuth {
                mode: ClientAuthMode::Required,
                ca_file: Path::new("/etc/gw/certs/clients-ca.pem").to_path_buf(),
            })
        );
        let corp = config.providers[0].dpop.as_ref().expect("corp dpop");
        assert_eq!(corp.max_age, Duration::from_secs(30));
        assert_eq!(corp.replay, ReplayStore::Redis);
        assert_eq!(
            corp.algorithms.names(),
            "RS256 EdDSA",
            "HS256 cannot sign a proof"
        );
        let other = config.providers[1].dpop.as_ref().expect("other dpop");
        assert_eq!(
            (other.max_age, other.replay),
            (DEFAULT_MAX_AGE, ReplayStore::Memory)
        );
        let binding = |i: usize| match &config.routes[i].auth {
            RouteAuth::Protected(a) => a.require_binding,
            RouteAuth::Anonymous => panic!("protected"),
        };
        assert_eq!(binding(0), RequireBinding::Any);
        assert_eq!(binding(1), RequireBinding::None);
        let plain = FILE
            .replace(
                "    client_auth: {mode: required, ca_file: certs/clients-ca.pem}\n",
                "",
            )
            .replace("dpop: {max_age: 30s, replay: redis}", "audiences: [api]")
            .replace("    audiences: [api]\n    audiences", "    audiences")
            .replace("    dpop: {}\n", "")
            .replace(", require_binding: any", "");
        let config = compile_str(&plain, Path::new("/")).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(config.providers.iter().all(|p| p.dpop.is_none()));
        assert!(config.server.tls.expect("tls").client_auth.is_none());
    }
}

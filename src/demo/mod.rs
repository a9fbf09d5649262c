//! `jwt-gateway demo`: the repo's `gateway.yaml` served on loopback with its identity provider and
//! upstreams replaced by in-process stand-ins, so a first look needs nothing but this binary.
//! Reached only from the `demo` command; `run` never touches this module. [`mint`] is public: the
//! integration tests and the benches sign their tokens with it too.

mod echo;
mod issuer;
pub mod mint;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use tokio::net::TcpListener;

use crate::config::{self, Config, KeysSource, LoadError, RouteAuth, TlsConfig};
use crate::gateway::{Gateway, GatewayOptions};
use crate::server::listener::{serve, Listeners, DRAIN_DEADLINE};

pub use echo::serve_echo;
pub use issuer::{DemoIssuer, DemoUser, DEMO_USERS};

/// Why the demo could not start: the config (exit 1) or the machine (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Config(#[from] LoadError),
    #[error("{0}")]
    Runtime(String),
}

/// Serves the demo until `shutdown` resolves (the caller passes its signal handling in, so the
/// demo knows nothing of the command line).
pub fn run(config_path: &Path, shutdown: impl Future<Output = ()>) -> Result<(), DemoError> {
    let config = config::load(config_path)?;
    crate::logging::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| DemoError::Runtime(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run_demo(config, shutdown))
}

async fn run_demo(mut config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DemoError> {
    let runtime_error =
        |what: &str, e: &dyn std::fmt::Display| DemoError::Runtime(format!("{what}: {e}"));
    let loopback = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let echo_listener = TcpListener::bind(loopback(0))
        .await
        .map_err(|e| runtime_error("cannot start the echo upstream", &e))?;
    let echo_addr = echo_listener
        .local_addr()
        .map_err(|e| runtime_error("echo upstream", &e))?;
    tokio::spawn(serve_echo(echo_listener));

    let provider = config.providers.first().cloned().ok_or_else(|| {
        DemoError::Runtime(
            "gateway.yaml defines no provider for the demo issuer to stand in for".into(),
        )
    })?;
    let issuer = DemoIssuer::new(&provider)
        .map_err(|e| runtime_error("cannot create demo signing keys", &e))?;
    let issuer_listener = TcpListener::bind(loopback(0))
        .await
        .map_err(|e| runtime_error("cannot start the demo issuer", &e))?;
    let issuer_addr = issuer_listener
        .local_addr()
        .map_err(|e| runtime_error("demo issuer", &e))?;
    tokio::spawn(issuer.clone().serve(issuer_listener));

    let state_dir =
        tempfile::tempdir().map_err(|e| runtime_error("cannot create a temporary folder", &e))?;
    rewire(
        &mut config,
        &provider.name,
        issuer_addr,
        echo_addr,
        state_dir.path(),
    )?;

    let public = TcpListener::bind(loopback(config.server.listen.port()))
        .await
        .map_err(|e| {
            runtime_error(
                &format!("cannot listen on 127.0.0.1:{}", config.server.listen.port()),
                &e,
            )
        })?;
    let admin = TcpListener::bind(loopback(config.admin.listen.port()))
        .await
        .map_err(|e| {
            runtime_error(
                &format!(
                    "cannot listen on 127.0.0.1:{} (admin)",
                    config.admin.listen.port()
                ),
                &e,
            )
        })?;
    let public_addr = public
        .local_addr()
        .map_err(|e| runtime_error("listener", &e))?;
    let admin_addr = admin
        .local_addr()
        .map_err(|e| runtime_error("listener", &e))?;
    let guide = guide(
        &config,
        public_addr,
        admin_addr,
        issuer_addr,
        state_dir.path(),
    );
    let gateway = Gateway::new(config, GatewayOptions::default())
        .map_err(|e| DemoError::Runtime(e.to_string()))?;
    println!("{guide}");
    serve(
        Listeners {
            public,
            admin,
            forward_auth: None,
        },
        gateway,
        shutdown,
        DRAIN_DEADLINE,
    )
    .await;
    Ok(())
}

/// Points the config at the stand-ins: keys from the demo issuer, every upstream at the echo
/// server, listeners on loopback, and a fresh self-signed certificate when none is on disk.
fn rewire(
    config: &mut Config,
    provider: &str,
    issuer: SocketAddr,
    echo: SocketAddr,
    dir: &Path,
) -> Result<(), DemoError> {
    for p in &mut config.providers {
        if p.name == provider {
            let p = std::sync::Arc::make_mut(p);
            let url = format!("http://{issuer}/jwks");
            p.keys = Some(KeysSource::JwksUrl(
                reqwest::Url::parse(&url).map_err(|e| DemoError::Runtime(e.to_string()))?,
            ));
            p.allow_insecure_jwks_http = true;
        }
    }
    let echo_uri: http::Uri = format!("http://{echo}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| DemoError::Runtime(e.to_string()))?;
    for upstream in config.routes.iter_mut().filter_map(|r| r.upstream.as_mut()) {
        upstream.uri = echo_uri.clone();
        upstream.scheme = http::uri::Scheme::HTTP;
        if let Some(a) = echo_uri.authority() {
            upstream.authority = a.clone();
        }
    }
    let has_files = config
        .server
        .tls
        .as_ref()
        .is_some_and(|t| t.cert_file.exists() && t.key_file.exists());
    if !has_files {
        let mut names = vec!["localhost".to_string()];
        names.extend(config.routes.iter().filter_map(|r| match &r.host {
            Some(config::HostMatch::Exact(h)) => Some(h.clone()),
            Some(config::HostMatch::Suffix(s)) => Some(format!("demo{s}")),
            None => None,
        }));
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| DemoError::Runtime(format!("cannot generate a certificate: {e}")))?;
        let cert_file = dir.join("gateway.crt");
        let key_file = dir.join("gateway.key");
        std::fs::write(&cert_file, certified.cert.pem())
            .map_err(|e| DemoError::Runtime(e.to_string()))?;
        std::fs::write(&key_file, certified.signing_key.serialize_pem())
            .map_err(|e| DemoError::Runtime(e.to_string()))?;
        let hsts_max_age = config.server.tls.as_ref().and_then(|t| t.hsts_max_age);
        config.server.tls = Some(TlsConfig {
            cert_file,
            key_file,
            hsts_max_age,
            client_auth: None,
        });
    }
    Ok(())
}

/// Ready-to-paste commands: one anonymous, one allowed, one 401, one 403.
fn guide(
    config: &Config,
    public: SocketAddr,
    admin: SocketAddr,
    issuer: SocketAddr,
    dir: &Path,
) -> String {
    let port = public.port();
    let ca = dir.join("gateway.crt");
    let url = |host: &str, path: &str| {
        format!(
            "curl -s --cacert {} --resolve {host}:{port}:127.0.0.1 https://{host}:{port}{path}",
            ca.display()
        )
    };
    let host_of = |r: &crate::config::RouteConfig| match &r.host {
        Some(config::HostMatch::Exact(h)) => h.clone(),
        Some(config::HostMatch::Suffix(s)) => format!("demo{s}"),
        None => "localhost".to_string(),
    };
    let mut out = String::new();
    out.push_str("jwt-gateway demo is ready: gateway.yaml with its IdP and upstreams replaced by in-process stand-ins.\n");
    out.push_str(&format!("  gateway   https://127.0.0.1:{port}   admin http://{admin}   demo issuer http://{issuer}\n\n"));
    out.push_str("Mint tokens (users: ");
    out.push_str(
        &DEMO_USERS
            .iter()
            .map(|u| format!("{} = {}", u.name, u.description))
            .collect::<Vec<_>>()
            .join("; "),
    );
    out.push_str("):\n");
    for user in DEMO_USERS {
        out.push_str(&format!(
            "  {}=$(curl -s http://{issuer}/token?user={})\n",
            user.name.to_uppercase(),
            user.name
        ));
    }
    out.push('\n');
    if let Some(r) = config
        .routes
        .iter()
        .find(|r| matches!(r.auth, RouteAuth::Anonymous))
    {
        out.push_str(&format!(
            "Anonymous route {:?} (200):\n  {}\n",
            r.name,
            url(&host_of(r), &r.path_prefix)
        ));
    }
    if let Some(r) = config
        .routes
        .iter()
        .find(|r| !matches!(r.auth, RouteAuth::Anonymous))
    {
        let path = format!("{}/7", r.path_prefix.trim_end_matches('/'));
        out.push_str(&format!("Allowed: alice may read (200, claims arrive as headers):\n  {} -H \"Authorization: Bearer $ALICE\"\n", url(&host_of(r), &path)));
        out.push_str(&format!(
            "No token (401):\n  {} -i\n",
            url(&host_of(r), &path)
        ));
        out.push_str(&format!(
            "Valid token, missing role (403):\n  {} -i -H \"Authorization: Bearer $BOB\"\n",
            url(&host_of(r), &path)
        ));
    }
    out.push_str(&format!(
        "Metrics:\n  curl -s http://{admin}/metrics | grep gateway_auth_decisions_total\n"
    ));
    out.push_str("Stop with Ctrl-C.");
    out
}

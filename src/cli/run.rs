//! `jwt-gateway run`: bind, serve, reload on SIGHUP, drain on SIGTERM/SIGINT.

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::{runtime, CliError};
use crate::config::{self, Config};
use crate::gateway::{Gateway, GatewayOptions};
use crate::server::listener::{serve, Listeners, DRAIN_DEADLINE};

pub fn run(config_path: &Path) -> Result<(), CliError> {
    let config = config::load(config_path)?;
    crate::logging::init(&config.log);
    runtime()?.block_on(serve_config(config, config_path))
}

pub(crate) fn log_warnings(config: &Config) {
    for warning in &config.warnings {
        tracing::warn!(%warning, "configuration advice");
    }
}

async fn serve_config(config: Config, config_path: &Path) -> Result<(), CliError> {
    log_warnings(&config);
    let listeners = bind(&config).await?;
    let gateway = Gateway::new(config, GatewayOptions::default())
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    tokio::spawn(reload_on_sighup(gateway.clone(), config_path.to_path_buf()));
    let watch_stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(crate::reload::watch_config(
        gateway.clone(),
        config_path.to_path_buf(),
        watch_stop.clone(),
    ));
    let runtime = tokio::runtime::Handle::current();
    tracing::info!(
        listen = %listeners.public.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        scheduler = ?runtime.runtime_flavor(),
        workers = runtime.metrics().num_workers(),
        "jwt-gateway started"
    );
    serve(listeners, gateway, shutdown_signal(), DRAIN_DEADLINE).await;
    watch_stop.cancel();
    tracing::info!("jwt-gateway stopped");
    Ok(())
}

pub(crate) async fn bind(config: &Config) -> Result<Listeners, CliError> {
    let bind = |addr: std::net::SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::Runtime(format!("cannot listen on {addr} ({what}): {e}")))
    };
    let forward_auth = match &config.forward_auth {
        Some(fa) => Some(bind(fa.listen, "forward_auth.listen").await?),
        None => None,
    };
    Ok(Listeners {
        public: bind(config.server.listen, "server.listen").await?,
        admin: bind(config.admin.listen, "admin.listen").await?,
        forward_auth,
    })
}

/// Resolves on the first SIGTERM or SIGINT.
pub(super) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// SIGHUP reloads the config file; a broken one is logged and counted, the old one keeps serving.
async fn reload_on_sighup(gateway: Arc<Gateway>, path: std::path::PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let _ = crate::reload::reload_from_file(&gateway, &path).await;
    }
}

//! Configuration reloads: on SIGHUP and whenever the config file (or, for a Kubernetes ConfigMap,
//! the `..data` link swapped beside it) changes. The new file is compiled and checked in full,
//! TLS files included, before it is swapped in atomically; a broken one is logged and counted and
//! the running configuration keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::gateway::Gateway;

/// Editors and ConfigMap updates touch a file several times in a burst; reload once after it.
const SETTLE: Duration = Duration::from_millis(250);

/// Loads, validates and swaps in the config at `path`; `Err` is one sentence for the log.
pub async fn reload_from_file(gateway: &Gateway, path: &Path) -> Result<(), String> {
    let result = match config::load(path) {
        Ok(config) => gateway.reload(config).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    gateway.metrics.config_reload(result.is_ok());
    match &result {
        Ok(()) => tracing::info!(file = %path.display(), "configuration reloaded"),
        Err(error) => {
            tracing::error!(%error, "configuration reload refused; the previous configuration keeps serving")
        }
    }
    result
}

/// Reloads on every change of the config file's folder that concerns the file, until cancelled.
/// Returns at once (logging why) when the platform cannot watch the folder; SIGHUP still works.
pub async fn watch_config(gateway: Arc<Gateway>, path: PathBuf, cancel: CancellationToken) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().map(|n| n.to_os_string());
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        // A ConfigMap update swaps `..data`; anything else must name the file itself.
        let relevant = event.paths.iter().any(|p| {
            let name = p.file_name();
            name == file_name.as_deref() || name.is_some_and(|n| n == "..data")
        });
        if relevant {
            let _ = tx.send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, folder = %dir.display(), "cannot watch the config folder; reload with SIGHUP");
        return;
    }
    let mut last = std::fs::read(&path).ok();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            event = rx.recv() => if event.is_none() { return },
        }
        tokio::time::sleep(SETTLE).await;
        while rx.try_recv().is_ok() {}
        let current = std::fs::read(&path).ok();
        if current.is_some() && current == last {
            continue;
        }
        last = current;
        let _ = reload_from_file(&gateway, &path).await;
    }
}

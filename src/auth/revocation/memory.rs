//! The embedded backend's optional file: one JSON line per change, fsynced before the change is
//! acknowledged, replayed and compacted (expired jti entries dropped) at start.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{Entry, RevocationError};
use crate::auth::token::unix_now;

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Line {
    Add { entry: Entry },
    Remove { id: String },
}

pub struct FileLog {
    file: Option<Arc<Mutex<File>>>,
}

impl FileLog {
    pub fn open(path: Option<&Path>) -> Result<(FileLog, Vec<Entry>), RevocationError> {
        let Some(path) = path else {
            return Ok((FileLog { file: None }, Vec::new()));
        };
        let io = |source| RevocationError::File {
            path: path.display().to_string(),
            source,
        };
        let entries = replay(path).map_err(io)?;
        let now = unix_now() as i64;
        let live: Vec<Entry> = entries.into_iter().filter(|e| !e.expired(now)).collect();
        compact(path, &live).map_err(io)?;
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        Ok((
            FileLog {
                file: Some(Arc::new(Mutex::new(file))),
            },
            live,
        ))
    }

    pub async fn append_add(&self, entry: &Entry) -> Result<(), RevocationError> {
        self.append(Line::Add {
            entry: entry.clone(),
        })
        .await
    }

    pub async fn append_remove(&self, id: &str) -> Result<(), RevocationError> {
        self.append(Line::Remove { id: id.to_string() }).await
    }

    async fn append(&self, line: Line) -> Result<(), RevocationError> {
        let Some(file) = self.file.clone() else {
            return Ok(());
        };
        let mut text = serde_json::to_string(&line)
            .map_err(|e| RevocationError::Unavailable(e.to_string()))?;
        text.push('\n');
        tokio::task::spawn_blocking(move || {
            let mut f = file
                .lock()
                .map_err(|_| std::io::Error::other("revocation file lock poisoned"))?;
            f.write_all(text.as_bytes())?;
            f.sync_data()
        })
        .await
        .map_err(|e| RevocationError::Unavailable(e.to_string()))?
        .map_err(|e| RevocationError::Unavailable(format!("cannot write the revocation file: {e}")))
    }
}

/// Replays the log; a torn last line (a crash mid-write) is ignored, an unreadable one skipped.
fn replay(path: &Path) -> std::io::Result<Vec<Entry>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries: Vec<Entry> = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        match serde_json::from_str::<Line>(&line) {
            Ok(Line::Add { entry }) => {
                entries.retain(|e| e.id != entry.id);
                entries.push(entry);
            }
            Ok(Line::Remove { id }) => entries.retain(|e| e.id != id),
            Err(_) if line.trim().is_empty() => {}
            Err(_) => {
                tracing::warn!(file = %path.display(), "skipping an unreadable revocation line")
            }
        }
    }
    Ok(entries)
}

/// Rewrites the log with only live entries, atomically (write, fsync, rename).
fn compact(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    let tmp: PathBuf = path.with_extension("compacting");
    {
        let mut f = File::create(&tmp)?;
        for entry in entries {
            let line = serde_json::to_string(&Line::Add {
                entry: entry.clone(),
            })
            .map_err(std::io::Error::other)?;
            f.write_all(line.as_bytes())?;
            f.write_all(b"\n")?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

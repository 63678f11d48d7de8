//! The services a restore stopped, recorded where the next run finds them.
//!
//! A restore stops mailcow's services and starts them again at its end, whatever happened —
//! unless the process itself dies first (SIGKILL, the OOM killer, a power cut). Then nothing
//! would ever start them. So before it stops anything, a restore records in the state dir what
//! it is about to stop, durably, and removes the record once everything runs again. The next
//! `backup`, `restore` or `config check` that holds the host lock finds the record, starts what
//! it names (once no helper of the dead run is still writing), says so, and removes it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::access::{HelperError, clear_stale_helpers};
use crate::docker::Engine;
use crate::docker::discover::Container;
use crate::ops::durable::write_durably;

/// The record's file in the state dir.
const RECORD: &str = "stopped-services.json";

/// What a restore is about to stop.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct StoppedServices {
    /// The restore's process, for the message.
    pub pid: u32,
    /// When it stopped them (`YYYY-MM-DDTHH:MM:SS`, UTC).
    pub since: String,
    /// In the order they are to be started again.
    pub containers: Vec<StoppedContainer>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct StoppedContainer {
    pub id: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("cannot {what} the record of stopped services {path}: {detail}")]
    Record {
        what: &'static str,
        path: String,
        detail: String,
    },
    #[error(
        "a restore that was cut off (process {pid}, {since} UTC) left services stopped, and they do not start again: {failures}; start them (docker compose up -d)"
    )]
    NotStarted {
        pid: u32,
        since: String,
        failures: String,
    },
    #[error(transparent)]
    Helper(#[from] HelperError),
}

fn record_path(state_dir: &Path) -> PathBuf {
    state_dir.join(RECORD)
}

fn record_error(what: &'static str, path: &Path, detail: impl ToString) -> RecoveryError {
    RecoveryError::Record {
        what,
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

/// Records that `containers` (in the order they are to be started again) are about to be
/// stopped: durable before the first of them stops.
pub fn record(state_dir: &Path, containers: &[&Container]) -> Result<(), RecoveryError> {
    if containers.is_empty() {
        return Ok(());
    }
    let path = record_path(state_dir);
    let stamp = crate::format::manifest::format_timestamp(crate::ops::system::now_micros());
    let stopped = StoppedServices {
        pid: std::process::id(),
        since: stamp.chars().take(19).collect(),
        containers: containers
            .iter()
            .map(|c| StoppedContainer {
                id: c.id.clone(),
                name: c.name.clone(),
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&stopped).expect("plain data serializes");
    write_durably(&path, &json).map_err(|e| record_error("write", &path, e))
}

/// Removes the record: everything it named runs again.
pub fn clear(state_dir: &Path) -> Result<(), RecoveryError> {
    let path = record_path(state_dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(record_error("remove", &path, e)),
        _ => Ok(()),
    }
}

/// Starts what a restore that died left stopped, if the state dir holds a record of it; the
/// sentence that says what was done, or `None` when there was nothing to do. Call it holding
/// the host lock (no restore of ours runs meanwhile). While a helper of the dead run still
/// works on `project`, nothing is started: the services would see its half-done work.
pub async fn recover(
    engine: &Engine,
    state_dir: &Path,
    project: &str,
) -> Result<Option<String>, RecoveryError> {
    let path = record_path(state_dir);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(record_error("read", &path, e)),
    };
    let stopped: StoppedServices =
        serde_json::from_slice(&text).map_err(|e| record_error("read", &path, e))?;
    clear_stale_helpers(engine, project).await?;
    // A container the admin has since recreated (docker compose up) is not ours to start.
    let existing = engine
        .project_containers(project)
        .await
        .map_err(HelperError::from)?;
    let (present, gone): (Vec<&StoppedContainer>, Vec<&StoppedContainer>) = stopped
        .containers
        .iter()
        .partition(|c| existing.iter().any(|e| e.id == c.id));
    let mut failures = Vec::new();
    for container in &present {
        if let Err(e) = engine.start_container(&container.id, &container.name).await {
            failures.push(e.to_string());
        }
    }
    if !failures.is_empty() {
        return Err(RecoveryError::NotStarted {
            pid: stopped.pid,
            since: stopped.since,
            failures: failures.join("; "),
        });
    }
    clear(state_dir)?;
    let names = |list: &[&StoppedContainer]| {
        list.iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut done = format!(
        "a restore that was cut off (process {}, {} UTC) had left services stopped; started them again: {}",
        stopped.pid,
        stopped.since,
        names(&present)
    );
    if !gone.is_empty() {
        done += &format!(" (recreated since, so left as they are: {})", names(&gone));
    }
    Ok(Some(done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_clearing_twice_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let container = |id: &str, name: &str| Container {
            id: id.into(),
            name: name.into(),
            service: String::new(),
            running: true,
            image: String::new(),
            mounts: Vec::new(),
        };
        let (dovecot, watchdog) = (container("a1", "dovecot"), container("b2", "watchdog"));
        record(dir.path(), &[&dovecot, &watchdog]).unwrap();
        let read: StoppedServices =
            serde_json::from_slice(&std::fs::read(record_path(dir.path())).unwrap()).unwrap();
        assert_eq!(read.pid, std::process::id());
        assert_eq!(read.since.len(), 19);
        let names: Vec<&str> = read.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["dovecot", "watchdog"]);
        clear(dir.path()).unwrap();
        clear(dir.path()).unwrap();
        assert!(!record_path(dir.path()).exists());
    }
}

//! Nonce (IV) reservation for encrypting new objects, borg's `NonceManager`
//! (`docs/borg-format.md` §3.5).
//!
//! AES-CTR with one key for the whole repository is only safe if no counter value is ever used
//! twice — by us, by an earlier run of ours that died, or by real borg on another machine. Borg
//! coordinates through two records: the repository's `nonce` file and the `nonce` file in each
//! client's security dir. Before an IV is used it must be *reserved* in both: the server's
//! record is raised with `commit_nonce_reservation` (which refuses if another client reserved
//! meanwhile) and the local one is written (write-then-rename), and only then is the IV handed
//! out. Reservations are generous (2^28 blocks, 4 GiB of ciphertext) so this happens rarely; a
//! crash wastes the unused rest of one, which is harmless.
//!
//! IVs are handed out under one lock, so the encrypting workers can run in parallel: each asks
//! for the blocks its object needs and gets a range no other object will get.

use std::path::PathBuf;

use tokio::sync::Mutex;

use super::durable::{create_private_dir_all, write_durably};
use crate::error::ErrorKind;
use crate::format::nonce::{
    ReservationRefused, format_nonce_file, parse_nonce_file, plan_reservation,
};
use crate::repo::repository::{RepoError, SharedRepository};

#[derive(Debug, thiserror::Error)]
pub enum NonceError {
    #[error("cannot reserve nonces in the repository: {0}")]
    Repository(#[from] RepoError),
    #[error("cannot record the nonce reservation in {path}: {detail}")]
    Local { path: String, detail: String },
    #[error("refusing to encrypt: {0}")]
    Refused(#[from] ReservationRefused),
}

impl NonceError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            NonceError::Repository(e) => e.kind(),
            NonceError::Local { .. } => ErrorKind::Environment,
            // The server's counter contradicts ours, or is near the end: not to be trusted.
            NonceError::Refused(_) => ErrorKind::Integrity,
        }
    }
}

#[derive(Default)]
struct Reserved {
    /// The next IV to hand out, once a reservation exists.
    next: Option<u64>,
    /// The first IV beyond the current reservation.
    end: Option<u64>,
}

pub struct NonceManager {
    repo: SharedRepository,
    /// `<security dir>/<repo id>/nonce`.
    local_file: PathBuf,
    /// The IV just after the manifest's ciphertext: never below what the last writer used.
    manifest_nonce: Option<u64>,
    reserved: Mutex<Reserved>,
}

impl NonceManager {
    pub fn new(repo: SharedRepository, security_dir: PathBuf, manifest_nonce: Option<u64>) -> Self {
        NonceManager {
            repo,
            local_file: security_dir.join("nonce"),
            manifest_nonce,
            reserved: Mutex::default(),
        }
    }

    /// The IV for an object whose ciphertext takes `blocks` AES blocks; reserves first when
    /// the current reservation cannot hold it.
    pub async fn allocate(&self, blocks: u64) -> Result<u64, NonceError> {
        let mut reserved = self.reserved.lock().await;
        if let (Some(next), Some(end)) = (reserved.next, reserved.end)
            && let Some(after) = next.checked_add(blocks)
            && after <= end
        {
            reserved.next = Some(after);
            return Ok(next);
        }
        let repository = self.repo.get_free_nonce().await?;
        let local = self.read_local()?;
        let plan = plan_reservation(repository, local, self.manifest_nonce, reserved.end, blocks)?;
        self.repo
            .commit_nonce_reservation(plan.end, repository)
            .await?;
        self.write_local(plan.end)?;
        // The plan holds the object: start + blocks <= end, so this cannot wrap.
        reserved.next = Some(plan.start + blocks);
        reserved.end = Some(plan.end);
        Ok(plan.start)
    }

    fn local_error(&self, detail: impl ToString) -> NonceError {
        NonceError::Local {
            path: self.local_file.display().to_string(),
            detail: detail.to_string(),
        }
    }

    fn read_local(&self) -> Result<Option<u64>, NonceError> {
        match std::fs::read_to_string(&self.local_file) {
            Ok(text) => parse_nonce_file(&text)
                .map(Some)
                .ok_or_else(|| self.local_error("it does not hold a nonce")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.local_error(e)),
        }
    }

    fn write_local(&self, end: u64) -> Result<(), NonceError> {
        let dir = self
            .local_file
            .parent()
            .expect("a file in the security dir");
        // Durable before any IV of the reservation is used: after a power loss the record must
        // not fall back below IVs already in the repository.
        create_private_dir_all(dir)
            .and_then(|()| write_durably(&self.local_file, format_nonce_file(end).as_bytes()))
            .map_err(|e| self.local_error(e))
    }
}

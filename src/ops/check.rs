//! Checking a repository's archives, as borg 1.4's `check` does without `--repair`
//! (`docs/borg-cli.md` §8; borg's `ArchiveChecker`). Reads only; reports what it finds as typed
//! [`Finding`]s through a callback, in the order borg logs them, and prints nothing.
//!
//! **What is checked, in which order, and why that order.**
//!
//! 1. *The object list.* Every id the repository holds is listed (`list`, page by page). It is
//!    the ground truth the rest is measured against: an archive may only reference what is in
//!    it, and what nothing references is an orphan. An empty list ends the check (borg: "no
//!    apparent data at all").
//! 2. *`--verify-data`: every object.* Each listed object is fetched and opened completely —
//!    MAC, decryption, decompression, the id hash of the plaintext (the manifest has no id hash;
//!    its TAM is step 3) — whether anything references it or not, as borg does. This comes before
//!    the archives so that a damaged content chunk can also be named by the archive and file that
//!    hold it when step 4 meets it. Fetching is pipelined (a bounded window of requests in
//!    flight, [`VERIFY_WINDOW`]) and each object is opened on the worker pool as it arrives, so
//!    every core authenticates and memory is bounded by the window, never by the repository.
//! 3. *The manifest.* It was decrypted and its TAM verified when the repository was opened
//!    ([`super::open::open_for_check`]); one that failed is reported here, where borg reports it.
//!    borg then rebuilds a manifest from every archive object it can find; we do not (that is
//!    `borg check --repair`'s work), so without a trusted manifest no archive is checked.
//! 4. *The archives* (all, or those selected), oldest first: the archive object must be listed,
//!    decrypt, and carry a valid TAM (a repository's archives all have one since borg 1.2.5;
//!    one without may be forged from any chunk a client stored, so borg counts it as a problem
//!    and ignores its references). Then its item-metadata chunks, each listed and decryptable,
//!    and its items decoded; every file's content chunks must be listed. Several archives are
//!    read at once (each fetching its metadata ahead), their findings reported in archive order.
//! 5. *Orphans*, only when every archive was checked: listed objects that no checked archive
//!    references. borg does not count an archive's own object and metadata chunks as orphans
//!    once it has looked at the archive (it would rewrite them under `--repair`), even when it
//!    then drops the archive for a bad TAM; so the objects referenced only by such an archive's
//!    items are what shows up as orphaned.
//!
//! **What borg does that we don't.** Anything `--repair` does (refused by the command; borg's
//! `check --repair` is the tool). Rebuilding a lost manifest (see 3). After a lost or
//! undecryptable item-metadata chunk borg resynchronises its item decoder and goes on with the
//! items after it; we report every lost metadata chunk but read no items past the first one
//! (so content chunks only those items name would count as orphans, and their missing chunks
//! go unnamed). borg also warns about items whose size disagrees with their chunks, items with
//! unknown keys, and an index whose object count differs from the segments' (`scan`); we don't.
//! A file a past `--repair` patched (`chunks_healthy`) is checked by its current chunk list.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;

use crate::format::archive::{ArchiveError, ArchiveMeta, ItemStreamDecoder, ItemStreamError};
use crate::format::envelope::{EnvelopeError, MANIFEST_ID, ObjectId, ObjectKey};
use crate::format::item::Item;
use crate::format::manifest::Manifest;
use crate::format::msgpack;
use crate::format::tam::TamStatus;
use crate::repo::repository::{RepoError, SharedRepository};

use super::id_map::{IdMap, IdSet};
use super::id_slice::IdSlice;
use super::items::{ReadError, fetch_ahead_tolerant, list_objects};

/// How many objects `--verify-data` has in flight (fetched, being opened): enough to keep the
/// server's pipeline (100 requests) and every core busy; the memory held is at most this many
/// objects.
const VERIFY_WINDOW: usize = 128;

/// How many archives are read at once.
const ARCHIVES_IN_FLIGHT: usize = 4;

/// Which archives to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveSelection {
    /// Every archive of the manifest; only then are orphans counted.
    All,
    /// These, by name, in this order (the CLI's `REPO::ARCH`, `-a`, `--first`, `--last`).
    Some(Vec<String>),
    /// None: only the objects' data is verified (a scheduled share of it after a backup).
    None,
}

#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Verify the data of the objects whose ids are in this slice (all of them for
    /// `--verify-data`).
    pub verify_data: Option<IdSlice>,
    pub archives: ArchiveSelection,
}

/// Something the check met, in the order borg reports it. Problems are those for which
/// [`Finding::is_problem`] says so; the rest is progress.
#[derive(Debug)]
pub enum Finding {
    /// The repository holds no object at all; nothing else is checked.
    NoData,
    VerifyStarted,
    /// `--verify-data`: the server could not give the object (its own checks failed, or it is
    /// listed but not there).
    ObjectUnreadable {
        id: ObjectId,
        error: RepoError,
    },
    /// `--verify-data`: the object does not authenticate, decrypt, decompress or match its id.
    ObjectDamaged {
        id: ObjectId,
        error: EnvelopeError,
    },
    VerifyFinished {
        verified: u64,
        errors: u64,
    },
    /// The manifest did not verify when the repository was opened; no archive is checked.
    ManifestUntrusted,
    /// An archive named for checking is not in the manifest.
    ArchiveNotFound(String),
    Analyzing {
        name: String,
        index: usize,
        total: usize,
    },
    /// The manifest names an archive whose object is not in the repository.
    ArchiveMissing {
        id: ObjectId,
    },
    /// The archive object cannot be read or decrypted.
    ArchiveCorrupted {
        id: ObjectId,
        error: ReadError,
    },
    /// The archive object has no valid TAM: it is not trusted, its references not counted.
    ArchiveUnauthenticated {
        name: String,
        problem: ArchiveTamProblem,
    },
    /// An item-metadata chunk (`index` in the archive's list) is not in the repository.
    ItemChunkMissing {
        index: usize,
        id: ObjectId,
    },
    /// An item-metadata chunk cannot be read or decrypted.
    ItemChunkDamaged {
        index: usize,
        id: ObjectId,
        error: ReadError,
    },
    /// The archive's item stream does not decode.
    ItemsUndecodable {
        archive: String,
        error: ItemStreamError,
    },
    /// A file's content chunk is not in the repository (borg: "New missing file chunk").
    MissingFileChunk {
        archive: String,
        path: Vec<u8>,
        start: u64,
        end: u64,
        id: ObjectId,
    },
    /// A file's content chunk that `--verify-data` found damaged: where it is used.
    DamagedFileChunk {
        archive: String,
        path: Vec<u8>,
        start: u64,
        end: u64,
        id: ObjectId,
    },
    Orphans(u64),
    /// Not every archive was checked, so orphans are not counted.
    OrphansSkipped,
}

/// Why an archive object is not authenticated.
#[derive(Debug)]
pub enum ArchiveTamProblem {
    /// It has no TAM (borg: "Archive 'NAME' is unauthenticated, but it is required …").
    Missing,
    /// Its TAM does not verify or is malformed.
    Invalid(ArchiveError),
}

impl Finding {
    /// Whether borg counts it as a problem (exit code 1).
    pub fn is_problem(&self) -> bool {
        match self {
            Finding::VerifyStarted
            | Finding::Analyzing { .. }
            | Finding::OrphansSkipped
            | Finding::Orphans(0) => false,
            Finding::VerifyFinished { errors, .. } => *errors > 0,
            // Named again with where it is used; counted once, at the object.
            Finding::DamagedFileChunk { .. } => false,
            _ => true,
        }
    }
}

/// What the check found, in sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckSummary {
    pub problems: u64,
    /// Objects `--verify-data` authenticated or found damaged.
    pub verified: u64,
    pub orphans: Option<u64>,
}

/// Checks the repository's archives (and with `verify_data` every object); see the module
/// notes. `manifest` is the manifest the repository was opened with, `None` when it did not
/// verify. Every finding goes to `report` as it is made; the sum is returned. A failure to
/// talk to the repository at all (the object list, a lost connection) is an error.
pub async fn check(
    repo: &SharedRepository,
    key: &Arc<ObjectKey>,
    manifest: Option<&Manifest>,
    options: &CheckOptions,
    report: &mut (dyn FnMut(Finding) + Send),
) -> Result<CheckSummary, ReadError> {
    let mut summary = CheckSummary::default();
    let mut problems = 0;
    let mut tell = |finding: Finding| {
        if finding.is_problem() {
            problems += 1;
        }
        report(finding);
    };
    let listed = list_objects(repo).await?;
    if listed.is_empty() {
        tell(Finding::NoData);
        return Ok(CheckSummary {
            problems,
            ..summary
        });
    }
    let mut defective = IdSet::default();
    if let Some(slice) = options.verify_data {
        tell(Finding::VerifyStarted);
        let sliced: Vec<ObjectId>;
        let ids = if slice.is_all() {
            &listed
        } else {
            sliced = listed
                .iter()
                .copied()
                .filter(|id| slice.contains(id))
                .collect();
            &sliced
        };
        let (verified, damaged) = verify_objects(repo, key, ids, &mut tell).await;
        tell(Finding::VerifyFinished {
            verified,
            errors: damaged.len() as u64,
        });
        summary.verified = verified;
        defective = damaged;
    }
    let Some(manifest) = manifest else {
        tell(Finding::ManifestUntrusted);
        return Ok(CheckSummary {
            problems,
            ..summary
        });
    };
    let referenced: Arc<IdMap<ObjectId, AtomicBool>> = Arc::new(
        listed
            .into_iter()
            .filter(|id| *id != MANIFEST_ID)
            .map(|id| (id, AtomicBool::new(false)))
            .collect(),
    );
    let defective = Arc::new(defective);

    let by_time = archives_by_time(manifest);
    let (names, check_all) = match &options.archives {
        ArchiveSelection::All => (by_time, true),
        ArchiveSelection::Some(names) => (names.clone(), false),
        ArchiveSelection::None => {
            return Ok(CheckSummary {
                problems,
                ..summary
            });
        }
    };
    let mut wanted = Vec::new();
    for name in names {
        match manifest.archive(name.as_bytes()) {
            Some(entry) => wanted.push((name, entry.id)),
            None => tell(Finding::ArchiveNotFound(name)),
        }
    }
    let total = wanted.len();
    let mut analysed = futures_util::stream::iter(wanted.into_iter().map(|(name, id)| {
        let context = ArchiveContext {
            repo: repo.clone(),
            key: key.clone(),
            referenced: referenced.clone(),
            defective: defective.clone(),
        };
        tokio::spawn(async move {
            let findings = context.analyse(&name, id).await;
            (name, findings)
        })
    }))
    .buffered(ARCHIVES_IN_FLIGHT);
    let mut index = 0;
    while let Some(read) = analysed.next().await {
        let (name, findings) = read.map_err(|e| ReadError::Interrupted(e.to_string()))?;
        index += 1;
        tell(Finding::Analyzing { name, index, total });
        for finding in findings? {
            tell(finding);
        }
    }
    drop(analysed);

    if check_all {
        let orphans = referenced
            .values()
            .filter(|seen| !seen.load(Ordering::Relaxed))
            .count() as u64;
        summary.orphans = Some(orphans);
        tell(Finding::Orphans(orphans));
    } else {
        tell(Finding::OrphansSkipped);
    }
    Ok(CheckSummary {
        problems,
        ..summary
    })
}

/// The manifest's archive names, oldest first (by the time it records), as borg's check orders
/// them by default.
fn archives_by_time(manifest: &Manifest) -> Vec<String> {
    let mut archives: Vec<_> = manifest.archives.iter().collect();
    archives.sort_by_cached_key(|(_, entry)| {
        crate::format::manifest::parse_timestamp(&entry.time).unwrap_or(0)
    });
    archives
        .into_iter()
        .map(|(name, _)| String::from_utf8_lossy(name).into_owned())
        .collect()
}

/// Fetches and opens every object of `ids`, [`VERIFY_WINDOW`] at a time, each opened on the
/// worker pool; reports each that fails. Returns how many were verified and the damaged ones.
async fn verify_objects(
    repo: &SharedRepository,
    key: &Arc<ObjectKey>,
    ids: &[ObjectId],
    tell: &mut impl FnMut(Finding),
) -> (u64, IdSet<ObjectId>) {
    let mut verified = 0;
    let mut damaged = IdSet::default();
    let mut results = futures_util::stream::iter(ids.iter().map(|&id| {
        let repo = repo.clone();
        let key = key.clone();
        let opening = tokio::spawn(async move {
            let stored = match repo.get(&id).await {
                Ok(stored) => stored,
                Err(error) => return Some(Finding::ObjectUnreadable { id, error }),
            };
            // The plaintext is only proof that the object opens; it is dropped at once.
            key.open(&id, &stored, None)
                .err()
                .map(|error| Finding::ObjectDamaged { id, error })
        });
        async move { (id, opening.await) }
    }))
    .buffer_unordered(VERIFY_WINDOW);
    while let Some((id, opened)) = results.next().await {
        verified += 1;
        let failure = opened.unwrap_or_else(|e| {
            Some(Finding::ObjectUnreadable {
                id,
                error: RepoError::Other {
                    class: "Interrupted".into(),
                    message: e.to_string(),
                },
            })
        });
        if let Some(finding) = failure {
            damaged.insert(id);
            tell(finding);
        }
    }
    (verified, damaged)
}

/// What reading one archive needs, shared by the archives read at once.
struct ArchiveContext {
    repo: SharedRepository,
    key: Arc<ObjectKey>,
    /// Every listed object but the manifest; an archive marks what it references.
    referenced: Arc<IdMap<ObjectId, AtomicBool>>,
    defective: Arc<IdSet<ObjectId>>,
}

impl ArchiveContext {
    /// Marks `id` referenced; says whether it is in the repository.
    fn reference(&self, id: &ObjectId) -> bool {
        self.referenced
            .get(id)
            .map(|seen| seen.store(true, Ordering::Relaxed))
            .is_some()
    }

    /// Checks the archive `name` (object `id`); returns its findings in order. An error only
    /// where the repository could not be asked at all.
    async fn analyse(&self, name: &str, id: ObjectId) -> Result<Vec<Finding>, ReadError> {
        let mut findings = Vec::new();
        if !self.reference(&id) {
            findings.push(Finding::ArchiveMissing { id });
            return Ok(findings);
        }
        let meta = match self.archive_meta(name, id).await? {
            Ok(meta) => meta,
            Err(finding) => {
                findings.push(finding);
                return Ok(findings);
            }
        };
        let mut decoder = ItemStreamDecoder::new();
        // Once a metadata chunk is lost, the items after it are not read (see the module notes).
        let mut decoding = true;
        let mut chunks = fetch_ahead_tolerant(
            self.repo.clone(),
            self.key.clone(),
            meta.items
                .iter()
                .copied()
                .filter(|id| self.reference(id))
                .collect(),
        );
        for (index, chunk_id) in meta.items.iter().enumerate() {
            if !self.referenced.contains_key(chunk_id) {
                findings.push(Finding::ItemChunkMissing {
                    index,
                    id: *chunk_id,
                });
                decoding = false;
                continue;
            }
            let fetched = chunks
                .recv()
                .await
                .ok_or_else(|| ReadError::Interrupted("item metadata ended early".into()))?;
            let data = match fetched {
                Ok((data, _)) => data,
                Err(error @ (ReadError::Damaged { .. } | ReadError::Fetch { .. })) => {
                    findings.push(Finding::ItemChunkDamaged {
                        index,
                        id: *chunk_id,
                        error,
                    });
                    decoding = false;
                    continue;
                }
                Err(other) => return Err(other),
            };
            if !decoding {
                continue;
            }
            let fed = decoder.feed_content(&data, |has_chunks, file_chunks, encoded| {
                if has_chunks {
                    self.check_file_chunks(name, file_chunks, encoded, &mut findings);
                }
            });
            if let Err(error) = fed {
                findings.push(Finding::ItemsUndecodable {
                    archive: name.to_string(),
                    error,
                });
                decoding = false;
            }
        }
        if decoding && let Err(error) = decoder.finish() {
            findings.push(Finding::ItemsUndecodable {
                archive: name.to_string(),
                error,
            });
        }
        Ok(findings)
    }

    /// The archive object, decrypted and its TAM verified; or the finding that says why not.
    async fn archive_meta(
        &self,
        name: &str,
        id: ObjectId,
    ) -> Result<Result<ArchiveMeta, Finding>, ReadError> {
        let plaintext =
            match super::items::fetch(self.repo.clone(), self.key.clone(), id, None).await {
                Ok(plaintext) => plaintext,
                Err(error @ (ReadError::Damaged { .. } | ReadError::Fetch { .. })) => {
                    return Ok(Err(Finding::ArchiveCorrupted { id, error }));
                }
                Err(other) => return Err(other),
            };
        let unauthenticated = |problem| {
            Ok(Err(Finding::ArchiveUnauthenticated {
                name: name.to_string(),
                problem,
            }))
        };
        match ArchiveMeta::unpack(&self.key, &plaintext) {
            Ok((meta, TamStatus::Verified)) => Ok(Ok(meta)),
            Ok((_, TamStatus::Missing)) => unauthenticated(ArchiveTamProblem::Missing),
            Err(error @ ArchiveError::Tam(_)) => unauthenticated(ArchiveTamProblem::Invalid(error)),
            Err(error) => Ok(Err(Finding::ArchiveCorrupted {
                id,
                error: ReadError::Archive {
                    name: name.to_string(),
                    source: error,
                },
            })),
        }
    }

    /// Marks a file's content chunks referenced, and reports the missing and the damaged ones
    /// with the file's path and their byte range in it.
    fn check_file_chunks(
        &self,
        archive: &str,
        file_chunks: &[crate::format::item::ChunkRef],
        encoded: &[u8],
        findings: &mut Vec<Finding>,
    ) {
        let mut start = 0;
        for chunk in file_chunks {
            let end = start + chunk.size;
            let present = self.reference(&chunk.id);
            if !present || self.defective.contains(&chunk.id) {
                let (archive, path, id) = (archive.to_string(), item_path(encoded), chunk.id);
                findings.push(if present {
                    Finding::DamagedFileChunk {
                        archive,
                        path,
                        start,
                        end,
                        id,
                    }
                } else {
                    Finding::MissingFileChunk {
                        archive,
                        path,
                        start,
                        end,
                        id,
                    }
                });
            }
            start = end;
        }
    }
}

/// The path of an encoded item (built only for an item with a finding).
fn item_path(encoded: &[u8]) -> Vec<u8> {
    msgpack::decode(encoded)
        .ok()
        .and_then(|value| Item::from_value(value).ok())
        .map_or_else(|| b"<undecodable item>".to_vec(), |item| item.path)
}

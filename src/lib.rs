//! mailcow-borg: deduplicated, encrypted backups of a dockerized mailcow into BorgBackup 1.x
//! repositories, from one static binary. See `DESIGN.md` in the project's shared notes for the
//! layers; this crate grows them bottom-up:
//!
//! - [`format`](mod@format) — the borg 1.x format core (pure, no I/O).
//! - [`repo`] — the repository client: `borg serve` RPC over a transport.
//! - [`ops`] — archive operations: open, list, extract.
//! - [`cli`] — the command line, thin.

pub mod cli;
pub mod format;
pub mod ops;
pub mod repo;

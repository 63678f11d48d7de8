//! mailcow-borg: deduplicated, encrypted backups of a dockerized mailcow into BorgBackup 1.x
//! repositories, from one static binary. `ARCHITECTURE.md` describes the layers, which this crate
//! holds bottom-up:
//!
//! - [`format`](mod@format) — the borg 1.x format core (pure, no I/O).
//! - [`repo`] — the repository client: `borg serve` RPC over a transport.
//! - [`ops`] — archive operations: open, read, create, extract.
//! - [`docker`] — Docker orchestration through the Engine API.
//! - [`mailcow`] — the mailcow profile: components, discovery, one backup run.
//! - [`cli`] — the command line, thin.
//!
//! [`error`] names the kinds of failure every layer's errors belong to; [`stderr`] is where
//! every layer's lines to the admin go, and [`notify`] tells of a run's outcome elsewhere.

pub mod cli;
pub mod docker;
pub mod error;
pub mod format;
pub mod mailcow;
pub mod notify;
pub mod ops;
pub mod repo;
pub mod stderr;

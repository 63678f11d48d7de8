//! Layer 3, archive operations: what a command does with an opened repository, independent of
//! how it is presented. Reports through return values; prints nothing.
//!
//! - [`open`] — reach, unlock and verify a repository (with [`passphrase`], [`security`] and
//!   [`unlock_ahead`]); [`key_files`] — keyfile-mode key files on this machine;
//! - [`key_manager`] — the key exported, imported and given a new passphrase;
//! - [`items`] — archive objects and item streams, fetched ahead;
//! - [`init`] — make a new repository, its key and its empty manifest;
//! - [`create`] — back up trees into a new archive;
//! - [`extract`] — restore files from an archive, with [`fs_write`] making each object and
//!   applying its metadata;
//! - [`stream_file`] — one file's content to a writer;
//! - [`owners`], [`acl`] — user and group names, POSIX ACLs: shared by both directions;
//! - [`chunk_index`] — the repository's chunks with their sizes and, where counted, references
//!   (`create`'s dedup, `info`'s statistics), in [`id_map`]'s hash maps for ids;
//! - [`stats`], [`select`] — `info`'s statistics, PATH selection;
//! - [`prune`] — which archives borg's retention rules keep;
//! - [`nonces`], [`placeholders`] — for writers: IV reservation, archive-name placeholders;
//! - [`durable`] — private directories and writes that survive a power loss; [`cache_file`] —
//!   our checksummed cache files;
//! - [`system`] — the clock and the kernel's random source;
//! - [`dir_handle`] — directories walked, listed and emptied by descriptor, never followed
//!   elsewhere.

pub mod acl;
pub mod cache_file;
pub mod check;
pub mod chunk_index;
pub mod create;
pub mod delete;
pub mod dir_handle;
pub mod durable;
pub mod extract;
pub mod fs_write;
pub mod id_map;
pub mod id_slice;
pub mod init;
pub mod items;
pub mod key_files;
pub mod key_manager;
pub mod manifest_write;
pub mod memory;
pub mod nonces;
pub mod open;
pub mod owners;
pub mod passphrase;
pub mod patterns;
pub mod placeholders;
pub mod prune;
pub mod security;
pub mod select;
pub mod sorted_ids;
pub mod stats;
pub mod stream_file;
pub mod system;
pub mod unlock_ahead;

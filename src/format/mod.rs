//! Layer 1, the borg 1.x format core: pure functions over bytes, no I/O.
//!
//! Everything a borg 1.x repository stores passes through here: keys ([`key`]), the encryption
//! envelope and ids ([`envelope`]), IV planning ([`nonce`]), compression ([`compress`]), metadata
//! authentication ([`tam`]), path bytes as borg's text ([`text`]),
//! the chunker ([`chunker`]), borg's msgpack dialect ([`msgpack`]) and the manifest, archive and
//! item models built on it, and the segment files the server keeps ([`segment`]). `docs/borg-format.md` records the borg facts it follows; tests prove
//! each piece against real borg.

pub mod archive;
pub mod chunker;
pub mod compress;
pub mod envelope;
mod fields;
pub mod item;
pub mod key;
pub mod key_export;
pub mod manifest;
pub mod msgpack;
pub mod nonce;
pub mod segment;
pub mod tam;
pub mod text;

pub use fields::InvalidObject;

/// Largest stored (encrypted) object borg accepts (`MAX_DATA_SIZE`).
pub const MAX_DATA_SIZE: usize = 20_971_479;

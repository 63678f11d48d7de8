//! Layer 2, the repository client: borg's `borg serve` RPC over a transport. Knows the protocol
//! and the repository's methods; knows nothing of archives (layer 3) or of Docker and mailcow.
//!
//! - [`rpc`] — framing, pipelining and remote exceptions;
//! - [`repository`] — the typed methods (`negotiate`, `open`, `get`, `list`, ...) and errors;
//! - [`local`] — the transport that runs `borg serve` as a local process.

pub mod local;
pub mod repository;
pub mod rpc;

//! Layer 2, the repository client: borg's `borg serve` RPC over a transport. Knows the protocol
//! and the repository's methods; knows nothing of archives (layer 3) or of Docker and mailcow.
//!
//! - [`rpc`] — framing, pipelining and remote exceptions;
//! - [`repository`] — the seam: the [`repository::Repository`] trait every operation uses, its
//!   errors and open options;
//! - [`serve`] — its implementation as a `borg serve` client (`negotiate`, `open`, the methods);
//! - [`faults`] — a wrapper that fails on demand, for tests;
//! - [`location`] — borg's repository URLs;
//! - [`transport`] — one `borg serve` session over any transport, and the server's log;
//! - [`ssh`], [`known_hosts`] — the transport to a remote `borg serve` over SSH (russh);
//! - [`local`] — the transport that runs `borg serve` as a local process;
//! - [`ratelimit`] — `--upload-ratelimit`, on the bytes written to any transport.

pub mod faults;
pub mod known_hosts;
pub mod local;
pub mod location;
pub mod ratelimit;
pub mod repository;
pub mod rpc;
pub mod serve;
pub mod ssh;
pub mod tcp;
pub mod transport;

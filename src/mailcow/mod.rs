//! Layer 5, the mailcow profile: which parts a mailcow installation has, where each lives, how
//! each is captured (volumes read by the helper, Redis saved first, the database dumped and
//! streamed), and one backup run from the host.

pub mod backup;
pub mod components;
pub mod conf;
pub mod discover;
pub mod frames;
pub mod mysql;
pub mod redis;

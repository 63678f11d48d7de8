//! Layer 4, Docker orchestration, through the Engine API (bollard): no docker or compose CLI is
//! needed on the host.
//!
//! What the mailcow layer asks of Docker is small, and each piece has its own file:
//! - [`engine`]: connecting (the local socket or `DOCKER_HOST`), with errors that say what to do;
//! - [`discover`]: containers by their Compose labels, with their mounts;
//! - [`exec`]: running a command inside a running container, its output captured or streamed;
//! - [`image`]: the helper image, made from our own executable, never pulled;
//! - [`lifecycle`]: stopping and starting the project's containers;
//! - [`helper`]: one helper container's life: create, attach, start, relay, wait, remove —
//!   removed also when the run is interrupted;
//! - [`scratch`]: scratch volumes and throwaway containers without network (the restore
//!   drill's), found and removed by their label;
//! - [`tar_stream`]: files copied out of a container, read from the engine's tar stream.
//!
//! Nothing here knows about mailcow or borg.

pub mod discover;
pub mod engine;
pub mod exec;
pub mod helper;
pub mod image;
pub mod lifecycle;
pub mod scratch;
pub mod tar_stream;

pub use engine::{DockerError, Engine};

/// A container's or command's output, demultiplexed into stdout and stderr pieces.
pub type OutputStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
            > + Send,
    >,
>;

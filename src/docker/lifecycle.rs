//! Stopping and starting a project's own containers (not our helpers), for a restore that must
//! write where a service would otherwise be writing too.
//!
//! Both are idempotent: stopping a stopped container or starting a running one succeeds (the
//! engine answers 304), so a restore that failed halfway can always bring everything back.

use bollard::query_parameters::StopContainerOptions;

use super::engine::{DockerError, Engine};

/// The engine's "304 not modified": the container already was in the asked state.
fn already(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

impl Engine {
    /// Stops a container the way `docker stop` does: its stop signal, then SIGKILL after its
    /// stop timeout (the container's own, or the engine's 10 s).
    pub async fn stop_container(&self, id: &str, name: &str) -> Result<(), DockerError> {
        match self
            .api
            .stop_container(id, None::<StopContainerOptions>)
            .await
        {
            Err(e) if !already(&e) => Err(DockerError::api(format!("stopping {name}"), e)),
            _ => Ok(()),
        }
    }

    pub async fn start_container(&self, id: &str, name: &str) -> Result<(), DockerError> {
        match self.api.start_container(id, None).await {
            Err(e) if !already(&e) => Err(DockerError::api(format!("starting {name}"), e)),
            _ => Ok(()),
        }
    }
}

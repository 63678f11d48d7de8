//! The connection to the Docker engine.
//!
//! `DOCKER_HOST` is honoured (`unix://…`, `tcp://…`), else the local socket. The API version is
//! negotiated down to the engine's, so the same binary drives old engines (Debian's 20.10 speaks
//! API 1.41) and new ones.

use bollard::Docker;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker engine at {endpoint}: {detail}; is Docker running, and may this user use its socket (root, or the docker group)?"
    )]
    Unreachable { endpoint: String, detail: String },
    #[error("Docker: {context}: {detail}")]
    Api { context: String, detail: String },
    #[error(
        "the helper container ran out of memory (its limit is {memory_mib} MiB): raise helper_memory_mib in the config and run again"
    )]
    HelperOutOfMemory { memory_mib: u32 },
}

impl DockerError {
    /// An API call that failed, with what we were doing.
    pub fn api(context: impl Into<String>, error: impl std::fmt::Display) -> Self {
        DockerError::Api {
            context: context.into(),
            detail: docker_message(&error.to_string()),
        }
    }
}

/// bollard wraps the engine's message as `Docker responded with status code 404: No such …`;
/// the engine's own words are the useful part.
fn docker_message(text: &str) -> String {
    match text.split_once(": ") {
        Some((head, tail)) if head.starts_with("Docker responded with status code") => {
            tail.trim().to_string()
        }
        _ => text.trim().to_string(),
    }
}

/// Whether an API error is the engine's "404 not found".
pub fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// A connected engine.
#[derive(Clone)]
pub struct Engine {
    pub(crate) api: Docker,
    endpoint: String,
}

impl Engine {
    /// Connects and checks that the engine answers.
    pub async fn connect() -> Result<Engine, DockerError> {
        let endpoint = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        let unreachable = |e: &dyn std::fmt::Display| DockerError::Unreachable {
            endpoint: endpoint.clone(),
            detail: docker_message(&e.to_string()),
        };
        let api = Docker::connect_with_host(&endpoint).map_err(|e| unreachable(&e))?;
        let api = api.negotiate_version().await.map_err(|e| unreachable(&e))?;
        Ok(Engine { api, endpoint })
    }

    /// Where the engine was reached, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The engine's version, e.g. `20.10.24`.
    pub async fn version(&self) -> Result<String, DockerError> {
        let version = self
            .api
            .version()
            .await
            .map_err(|e| DockerError::api("version", e))?;
        Ok(version.version.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_words_are_kept_and_bollards_prefix_dropped() {
        assert_eq!(
            docker_message("Docker responded with status code 404: No such container: x"),
            "No such container: x"
        );
        assert_eq!(docker_message("connection refused"), "connection refused");
    }
}

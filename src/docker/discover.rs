//! Containers of a Compose project, found by the labels Compose sets on them
//! (`com.docker.compose.project`, `com.docker.compose.service`), never by their names: Compose v1
//! names them `<project>_<service>_1`, v2 `<project>-<service>-1`, and users rename projects.

use std::collections::HashMap;

use bollard::models::ContainerSummary;
use bollard::query_parameters::{ContainerArchiveInfoOptions, ListContainersOptionsBuilder};

use super::engine::{DockerError, Engine, is_not_found};

pub const PROJECT_LABEL: &str = "com.docker.compose.project";
pub const SERVICE_LABEL: &str = "com.docker.compose.service";

/// One container of the project.
#[derive(Clone, Debug)]
pub struct Container {
    pub id: String,
    /// The engine's name, without the leading `/`.
    pub name: String,
    pub service: String,
    pub running: bool,
    /// The image it was made from, by id: what a throwaway container of the same service is
    /// made from (a tag may have moved on since).
    pub image: String,
    pub mounts: Vec<Mount>,
}

/// A mount of a container, as the engine reports it (destinations are cleaned: no trailing `/`).
#[derive(Clone, Debug)]
pub struct Mount {
    pub destination: String,
    /// The volume's name for volume mounts.
    pub volume: Option<String>,
    /// The host path for bind mounts.
    pub source: Option<String>,
}

impl Container {
    /// The volume mounted at `destination`.
    pub fn volume_at(&self, destination: &str) -> Option<&str> {
        let wanted = destination.trim_end_matches('/');
        self.mounts
            .iter()
            .find(|m| m.destination.trim_end_matches('/') == wanted)
            .and_then(|m| m.volume.as_deref())
    }
}

impl Engine {
    /// Every container, running or not, that has all of `labels` (`key` or `key=value`).
    pub(crate) async fn containers_labelled(
        &self,
        labels: &[String],
    ) -> Result<Vec<ContainerSummary>, DockerError> {
        let filters = HashMap::from([("label", labels.to_vec())]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.api
            .list_containers(Some(options))
            .await
            .map_err(|e| DockerError::api("listing containers", e))
    }

    /// Every container (running or not) labelled as part of Compose project `project`.
    pub async fn project_containers(&self, project: &str) -> Result<Vec<Container>, DockerError> {
        let listed = self
            .containers_labelled(&[format!("{PROJECT_LABEL}={project}")])
            .await?;
        Ok(listed
            .into_iter()
            .map(|summary| {
                let labels = summary.labels.unwrap_or_default();
                Container {
                    id: summary.id.unwrap_or_default(),
                    name: summary
                        .names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    service: labels.get(SERVICE_LABEL).cloned().unwrap_or_default(),
                    running: summary.state.is_some_and(|s| s.to_string() == "running"),
                    image: summary.image_id.or(summary.image).unwrap_or_default(),
                    mounts: summary
                        .mounts
                        .unwrap_or_default()
                        .into_iter()
                        .map(|m| Mount {
                            destination: m.destination.unwrap_or_default(),
                            volume: m.name.filter(|n| !n.is_empty()),
                            source: m.source.filter(|s| !s.is_empty()),
                        })
                        .collect(),
                }
            })
            .collect())
    }

    /// The size of the file at `path` inside a container (through its file system, no
    /// command run); `None` when there is nothing there.
    pub async fn file_size(&self, container: &str, path: &str) -> Result<Option<u64>, DockerError> {
        let options = ContainerArchiveInfoOptions { path: path.into() };
        match self
            .api
            .get_container_archive_info(container, Some(options))
            .await
        {
            Ok(stat) => Ok(Some(stat.size.max(0) as u64)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(DockerError::api(
                format!("looking at {path} in {container}"),
                e,
            )),
        }
    }

    /// Whether a volume of that name exists.
    pub async fn volume_exists(&self, name: &str) -> Result<bool, DockerError> {
        match self.api.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(DockerError::api(format!("inspecting volume {name}"), e)),
        }
    }
}

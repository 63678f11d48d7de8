//! Scratch volumes and throwaway containers: what a restore drill restores into and proves the
//! restore with, made for one run and removed after it.
//!
//! Both carry the caller's label, and are found and removed by it: a run removes what it made
//! in every case, and what a killed run left (SIGKILL, a reboot) is removed by the next.
//!
//! A throwaway container is made from an image of the installation (its database, Redis or
//! dovecot), so it runs exactly the programs the installation runs; but the image's entry
//! point is replaced by the caller's command (the image's would initialise, configure and
//! connect things the caller does not want), it has **no network** at all (`NetworkMode:
//! none`, only a loopback device), keeps only the capabilities the caller names, may not gain
//! privileges, and has the helper's memory and process limits.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, ListVolumesOptionsBuilder, LogsOptionsBuilder, RemoveVolumeOptions,
};
use futures_util::StreamExt;

use super::engine::{DockerError, Engine, is_not_found};
use super::helper::{HelperLimits, HelperMount, confined, remove};

/// The most of a throwaway container's log kept for a message.
const LOG_KEPT: usize = 16 * 1024;

/// How to make a throwaway container.
#[derive(Clone, Debug)]
pub struct ThrowawaySpec {
    pub image: String,
    /// The program and its arguments, in place of the image's entry point and command.
    pub command: Vec<String>,
    pub mounts: Vec<HelperMount>,
    /// Capabilities kept (all others are dropped).
    pub capabilities: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub limits: HelperLimits,
}

/// What the engine says of a container's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Running,
    /// It ended, with this exit code.
    Exited(i64),
}

impl ThrowawaySpec {
    fn body(&self) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(self.image.clone()),
            entrypoint: Some(self.command.clone()),
            working_dir: Some("/".into()),
            user: Some("0:0".into()),
            // Its own environment only: nothing of ours is handed on.
            env: Some(Vec::new()),
            tty: Some(false),
            labels: Some(self.labels.iter().cloned().collect()),
            host_config: Some(confined(
                &self.mounts,
                "none",
                &self.capabilities,
                self.limits,
            )),
            ..Default::default()
        }
    }
}

impl Engine {
    /// Creates an empty volume `name` with `labels`.
    pub async fn create_volume(
        &self,
        name: &str,
        labels: &[(String, String)],
    ) -> Result<(), DockerError> {
        let request = VolumeCreateRequest {
            name: Some(name.into()),
            labels: Some(labels.iter().cloned().collect::<HashMap<_, _>>()),
            ..Default::default()
        };
        self.api
            .create_volume(request)
            .await
            .map_err(|e| DockerError::api(format!("creating volume {name}"), e))?;
        Ok(())
    }

    /// The names of the volumes that have the label `label` (`key=value`).
    pub async fn volumes_labelled(&self, label: &str) -> Result<Vec<String>, DockerError> {
        let filters = HashMap::from([("label", vec![label.to_string()])]);
        let options = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let listed = self
            .api
            .list_volumes(Some(options))
            .await
            .map_err(|e| DockerError::api("listing volumes", e))?;
        Ok(listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    /// Removes the volume `name`; one that is gone already is fine.
    pub async fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        let options = RemoveVolumeOptions { force: true };
        match self.api.remove_volume(name, Some(options)).await {
            Err(e) if !is_not_found(&e) => {
                Err(DockerError::api(format!("removing volume {name}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Removes every container, running or not, with the label `label` (`key=value`), then
    /// every volume with it (a volume in use cannot be removed). Returns how many of each.
    pub async fn remove_labelled(&self, label: &str) -> Result<(usize, usize), DockerError> {
        let containers = self.containers_labelled(&[label.to_string()]).await?;
        for id in containers.iter().filter_map(|c| c.id.as_deref()) {
            remove(self, id).await?;
        }
        let volumes = self.volumes_labelled(label).await?;
        for name in &volumes {
            self.remove_volume(name).await?;
        }
        Ok((containers.len(), volumes.len()))
    }

    /// Creates and starts a throwaway container; its id. One that fails to start is removed.
    pub async fn start_throwaway(&self, spec: &ThrowawaySpec) -> Result<String, DockerError> {
        let what = || format!("a container of {}", spec.image);
        let created = self
            .api
            .create_container(None::<CreateContainerOptions>, spec.body())
            .await
            .map_err(|e| DockerError::api(format!("creating {}", what()), e))?;
        if let Err(e) = self.api.start_container(&created.id, None).await {
            let _ = remove(self, &created.id).await;
            return Err(DockerError::api(format!("starting {}", what()), e));
        }
        Ok(created.id)
    }

    /// Whether the container still runs, or how it ended.
    pub async fn container_state(&self, id: &str) -> Result<ContainerState, DockerError> {
        let inspected = self
            .api
            .inspect_container(id, None)
            .await
            .map_err(|e| DockerError::api(format!("inspecting container {id}"), e))?;
        let state = inspected.state.unwrap_or_default();
        Ok(if state.running == Some(true) {
            ContainerState::Running
        } else {
            ContainerState::Exited(state.exit_code.unwrap_or(-1))
        })
    }

    /// The last lines of what the container wrote (stdout and stderr), for a message: at most
    /// 16 KiB, as text.
    pub async fn log_tail(&self, id: &str, lines: u32) -> Result<String, DockerError> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut logs = self.api.logs(id, Some(options));
        let mut text = Vec::new();
        while let Some(piece) = logs.next().await {
            let piece =
                piece.map_err(|e| DockerError::api(format!("reading the log of {id}"), e))?;
            text.extend_from_slice(&piece.into_bytes());
            if text.len() > LOG_KEPT {
                text.drain(..text.len() - LOG_KEPT);
            }
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    }
}

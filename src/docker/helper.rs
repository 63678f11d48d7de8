//! One helper container's life: created with exactly the mounts it needs, attached (stdin,
//! stdout, stderr) before it starts so no output is lost, started, its output relayed to ours,
//! its exit code collected, and removed.
//!
//! Hardening, because the helper reads every mail and holds the repository's key: the root
//! file system is read-only, `no-new-privileges` is set, every capability is dropped but the
//! ones the caller names (a backup needs only `DAC_OVERRIDE` on read-only mounts: root reading
//! files of other owners), and secrets arrive as read-only single-file bind mounts, never in the environment
//! or the arguments (both show in `docker inspect`).
//!
//! Removal: the caller removes the helper when it is done and when it is interrupted (after
//! passing the signal on, so the helper rolls back cleanly). Every helper carries the label
//! [`HELPER_LABEL`], so a run can also remove stopped helpers that a killed run (SIGKILL, a
//! reboot) left behind.

use std::io::Write;
use std::pin::Pin;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, KillContainerOptions, RemoveContainerOptions,
    WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::io::AsyncWrite;

use super::OutputStream;
use super::engine::{DockerError, Engine, is_not_found};

/// The label that marks our helper containers.
pub const HELPER_LABEL: &str = "org.mailcow-borg.helper";

/// What a helper mounts, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelperMount {
    /// A named volume (it must exist: the engine would create a missing one, empty).
    Volume {
        name: String,
        target: String,
        read_only: bool,
    },
    /// A host file or directory.
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
}

/// How to create a helper.
#[derive(Clone, Debug)]
pub struct HelperSpec {
    pub image: String,
    /// Arguments after the image's entry point.
    pub args: Vec<String>,
    pub working_dir: String,
    pub mounts: Vec<HelperMount>,
    /// `host`, `none`, or a network's name.
    pub network: String,
    /// Capabilities kept (all others are dropped).
    pub capabilities: Vec<String>,
    /// Non-secret environment only.
    pub env: Vec<String>,
    /// Labels besides [`HELPER_LABEL`].
    pub labels: Vec<(String, String)>,
    pub limits: HelperLimits,
}

/// What the helper may take of the host. It runs beside a mail server: without a limit, a run
/// that grows (or a hostile repository that makes it grow) would bring the host's OOM killer,
/// which may pick mysqld; with one, only the helper ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelperLimits {
    /// Memory, swap included, in MiB.
    pub memory_mib: u32,
    /// Processes and threads.
    pub pids: u32,
}

impl Default for HelperLimits {
    /// A backup needs about 100 MiB plus 200 MiB per million files (its caches are compact
    /// tables; at 1,000,000 small mails an unchanged run peaks below 200 MiB): 2 GiB leaves room
    /// for about ten million files, and a run that would not fit says so (`ops::memory`). The
    /// runtime starts a thread per core and up to a few hundred for blocking work.
    fn default() -> Self {
        HelperLimits {
            memory_mib: 2048,
            pids: 1024,
        }
    }
}

/// A started helper.
pub struct Helper {
    engine: Engine,
    pub id: String,
    /// Its memory limit, for the message when the kernel ends it for lack of memory.
    memory_mib: u32,
    stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    output: Option<OutputStream>,
}

impl HelperMount {
    /// The engine's form of the mount.
    pub(super) fn to_mount(&self) -> Mount {
        match self {
            HelperMount::Volume {
                name,
                target,
                read_only,
            } => Mount {
                typ: Some(MountType::VOLUME),
                source: Some(name.clone()),
                target: Some(target.clone()),
                read_only: Some(*read_only),
                // Never copy anything of the image into the volume.
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
            HelperMount::Bind {
                source,
                target,
                read_only,
            } => Mount {
                typ: Some(MountType::BIND),
                source: Some(source.clone()),
                target: Some(target.clone()),
                read_only: Some(*read_only),
                ..Default::default()
            },
        }
    }
}

impl HelperSpec {
    fn body(&self) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.args.clone()),
            working_dir: Some(self.working_dir.clone()),
            env: Some(self.env.clone()),
            user: Some("0:0".into()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            labels: Some(
                self.labels
                    .iter()
                    .cloned()
                    .chain([(HELPER_LABEL.to_string(), "1".to_string())])
                    .collect(),
            ),
            host_config: Some(HostConfig {
                readonly_rootfs: Some(true),
                ..confined(&self.mounts, &self.network, &self.capabilities, self.limits)
            }),
            ..Default::default()
        }
    }
}

/// The confinement every container we start shares, helper or throwaway: no privilege gained
/// by exec, every capability dropped but `capabilities`, memory (with swap) and processes
/// limited, and kept after it ends so that its exit code and log can be read.
pub(super) fn confined(
    mounts: &[HelperMount],
    network: &str,
    capabilities: &[String],
    limits: HelperLimits,
) -> HostConfig {
    HostConfig {
        mounts: Some(mounts.iter().map(HelperMount::to_mount).collect()),
        network_mode: Some(network.to_string()),
        security_opt: Some(vec!["no-new-privileges".into()]),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(capabilities.to_vec()),
        memory: Some(i64::from(limits.memory_mib) << 20),
        memory_swap: Some(i64::from(limits.memory_mib) << 20),
        pids_limit: Some(i64::from(limits.pids)),
        auto_remove: Some(false),
        ..Default::default()
    }
}

impl Engine {
    /// Removes helpers with the label `label` (`key=value`) that are not running: what a
    /// killed earlier run left behind. Returns the ids of those still running.
    pub async fn remove_stale_helpers(&self, label: &str) -> Result<Vec<String>, DockerError> {
        let listed = self
            .containers_labelled(&[HELPER_LABEL.to_string(), label.to_string()])
            .await?;
        let mut running = Vec::new();
        for container in listed {
            let Some(id) = container.id else { continue };
            if container
                .state
                .as_ref()
                .is_some_and(|s| s.to_string() == "running")
            {
                running.push(id);
            } else {
                remove(self, &id).await?;
            }
        }
        Ok(running)
    }

    /// Creates the helper, attaches to it and starts it.
    pub async fn start_helper(&self, spec: &HelperSpec) -> Result<Helper, DockerError> {
        let created = self
            .api
            .create_container(None::<CreateContainerOptions>, spec.body())
            .await
            .map_err(|e| DockerError::api("creating the helper container", e))?;
        let id = created.id;
        let attached = async {
            let options = AttachContainerOptions {
                stream: true,
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            };
            let attached = self
                .api
                .attach_container(&id, Some(options))
                .await
                .map_err(|e| DockerError::api("attaching to the helper container", e))?;
            self.api
                .start_container(&id, None)
                .await
                .map_err(|e| DockerError::api("starting the helper container", e))?;
            Ok::<_, DockerError>(attached)
        };
        match attached.await {
            Ok(attached) => Ok(Helper {
                engine: self.clone(),
                id,
                memory_mib: spec.limits.memory_mib,
                stdin: Some(attached.input),
                output: Some(attached.output),
            }),
            Err(e) => {
                let _ = remove(self, &id).await;
                Err(e)
            }
        }
    }
}

/// Removes a container, running or not; one that is gone already is fine.
pub(super) async fn remove(engine: &Engine, id: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptions {
        force: true,
        // With the anonymous volumes an image's VOLUME lines made (a throwaway container of
        // mailcow's database or Redis image gets some).
        v: true,
        ..Default::default()
    };
    match engine.api.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(DockerError::api(format!("removing container {id}"), e)),
    }
}

/// Where the helper's stdout goes.
pub enum StdoutTo {
    /// Our stdout.
    Relay,
    /// Kept, for the caller to read (a JSON document).
    Capture,
    /// Into a writer (another command's stdin), shut down when the output ends. If the
    /// writer fails (the command stopped reading), the rest is discarded so the helper can
    /// still finish.
    Pipe(Pin<Box<dyn AsyncWrite + Send>>),
}

impl Helper {
    /// The helper's stdin; closing it (shutdown) ends the helper's input.
    pub fn take_stdin(&mut self) -> Option<Pin<Box<dyn AsyncWrite + Send>>> {
        self.stdin.take()
    }

    /// Relays the helper's output until it ends (the helper exited): stderr to ours, stdout
    /// where `stdout` says. Returns what [`StdoutTo::Capture`] kept.
    pub fn relay_output(
        &mut self,
        stdout: StdoutTo,
    ) -> tokio::task::JoinHandle<std::io::Result<Vec<u8>>> {
        use tokio::io::AsyncWriteExt;
        let output = self.output.take();
        tokio::spawn(async move {
            let mut captured = Vec::new();
            // A pipe whose reader went away takes nothing more.
            let mut pipe_failed = false;
            let mut stdout = stdout;
            if let Some(mut output) = output {
                while let Some(Ok(piece)) = output.next().await {
                    match piece {
                        LogOutput::StdErr { message } => crate::stderr::write(&message),
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            match &mut stdout {
                                StdoutTo::Relay => {
                                    let mut out = std::io::stdout().lock();
                                    out.write_all(&message)?;
                                    out.flush()?;
                                }
                                StdoutTo::Capture => captured.extend_from_slice(&message),
                                StdoutTo::Pipe(writer) if !pipe_failed => {
                                    pipe_failed = writer.write_all(&message).await.is_err();
                                }
                                StdoutTo::Pipe(_) => {}
                            }
                        }
                        LogOutput::StdIn { .. } => {}
                    }
                }
            }
            if let StdoutTo::Pipe(writer) = &mut stdout
                && !pipe_failed
            {
                // The reader sees its input end; if it is gone already, so be it.
                let _ = writer.shutdown().await;
            }
            Ok(captured)
        })
    }

    /// Waits for the helper to exit; its exit code.
    /// An end by the kernel's OOM killer (at the helper's memory limit) is an error that says
    /// so: an exit code of 137 alone would not tell the admin what to change.
    pub async fn wait(&self) -> Result<i64, DockerError> {
        let options = WaitContainerOptions {
            condition: "not-running".into(),
        };
        let mut waiting = self.engine.api.wait_container(&self.id, Some(options));
        let code = match waiting.next().await {
            Some(Ok(response)) => response.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => return Err(DockerError::api("waiting for the helper container", e)),
            None => {
                return Err(DockerError::Api {
                    context: "waiting for the helper container".into(),
                    detail: "the engine ended the wait without an exit code".into(),
                });
            }
        };
        if code != 0 && self.oom_killed().await {
            return Err(DockerError::HelperOutOfMemory {
                memory_mib: self.memory_mib,
            });
        }
        Ok(code)
    }

    /// Whether the engine says the kernel killed the helper for lack of memory.
    async fn oom_killed(&self) -> bool {
        self.engine
            .api
            .inspect_container(&self.id, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false)
    }

    /// Passes a signal (`SIGINT`, `SIGTERM`, `SIGKILL`) on to the helper's process.
    pub async fn signal(&self, signal: &str) -> Result<(), DockerError> {
        let options = KillContainerOptions {
            signal: signal.into(),
        };
        match self
            .engine
            .api
            .kill_container(&self.id, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            // Not running any more (409) or gone (404): nothing to signal.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(DockerError::api("signalling the helper container", e)),
        }
    }

    /// Waits up to `grace` for the helper to exit, then kills it; its exit code if it exited.
    pub async fn wait_or_kill(&self, grace: Duration) -> Option<i64> {
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(Ok(code)) => Some(code),
            _ => {
                let _ = self.signal("SIGKILL").await;
                None
            }
        }
    }

    /// Removes the helper (stopping it first if it still runs).
    pub async fn remove(self) -> Result<(), DockerError> {
        remove(&self.engine, &self.id).await
    }
}

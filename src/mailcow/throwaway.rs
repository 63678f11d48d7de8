//! What the restore drill and `export` share: a run that restores (part of) an archive into
//! scratch volumes with the restore's own helper and reads it in throwaway containers made
//! from the installation's images, never touching the live mailcow.
//!
//! [`in_scratch`] is the run's frame: what a killed run of the same kind left is removed first
//! (everything it makes carries its label), the archive's summary is read, the run's body goes,
//! and everything labelled is removed at its end whatever happened, also when a stop signal
//! (SIGINT, SIGTERM) ends it. [`Scratch::restore_into`] writes archive paths into a scratch
//! volume; [`Scratch::start_dovecot`] starts the installation's dovecot on them, configured by
//! us with mail_crypt and the restored keys, for `doveadm`.

use std::time::{Duration, Instant};

use crate::docker::discover::Container;
use crate::docker::helper::{HelperMount, StdoutTo};
use crate::docker::scratch::{ContainerState, ThrowawaySpec};
use crate::docker::{DockerError, Engine};
use crate::error::ErrorKind;

use super::access::{HELPER_ROOT, HelperError, WRITE_ANY_FILE, clear_stale_helpers};
use super::backup::wait_for_stop;
use super::components::Component;
use super::conf::MailcowConf;
use super::helper_command::{HelperCommand, RestoreCommand};
use super::mail_merge::MailSelection;
use super::restore::{Inspection, RestoreError, RestoreOptions, read_summary, run_helper};
use super::summary::ArchiveSummary;

/// Where the throwaway containers see the restored files (the scratch volume, as the helper
/// wrote it: one directory per component).
pub const RESTORED: &str = "/scratch";
/// How long a throwaway server may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Where our dovecot configuration is, and dovecot's runtime directory.
pub const DOVECOT_CONF: &str = "/tmp/mcb-dovecot/dovecot.conf";
const DOVECOT_RUN: &str = "/tmp/mcb-dovecot/run";
/// The exit code of the dovecot container when the image has no dovecot.
const NO_DOVECOT: i64 = 127;
/// The dovecot container's command: our configuration (its first argument) written, dovecot
/// in the foreground.
const DOVECOT_START: &str = r#"command -v dovecot >/dev/null || exit 127
mkdir -p /tmp/mcb-dovecot/index && chown 5000:5000 /tmp/mcb-dovecot/index || exit 1
printf '%s' "$1" > /tmp/mcb-dovecot/dovecot.conf || exit 1
exec dovecot -F -c /tmp/mcb-dovecot/dovecot.conf"#;

/// Yields the signal (`SIGINT`, `SIGTERM`) that asks the run to stop.
pub type Stop = tokio::sync::watch::Receiver<Option<&'static str>>;

#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Helper(#[from] HelperError),
    #[error(transparent)]
    Inspect(RestoreError),
    #[error("stopped by {0}")]
    Stopped(&'static str),
    #[error(
        "the scratch containers and volumes could not all be removed ({source}); remove them: docker rm -f $(docker ps -aq --filter label={label}); docker volume rm $(docker volume ls -q --filter label={label})"
    )]
    Cleanup {
        label: &'static str,
        source: DockerError,
    },
}

impl ScratchError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ScratchError::Stopped(_) => ErrorKind::Interrupted,
            ScratchError::Inspect(e) => e.kind(),
            ScratchError::Docker(_) | ScratchError::Helper(_) | ScratchError::Cleanup { .. } => {
                ErrorKind::Environment
            }
        }
    }
}

/// What a scratch run is about.
pub struct Purpose<'a> {
    /// The label of everything the run makes (its value is the project).
    pub label: &'static str,
    /// A word for the scratch volumes' names (`drill`, `export`).
    pub name: &'static str,
    /// The archive's name, or `latest`.
    pub archive: &'a str,
    /// Archive paths whose presence the summary reports (mailboxes, folders).
    pub subtrees: Vec<String>,
}

/// One scratch run's fixed parts.
pub struct Scratch<'a> {
    pub engine: &'a Engine,
    pub options: &'a RestoreOptions,
    pub conf: &'a MailcowConf,
    pub summary: ArchiveSummary,
    /// The helper image.
    pub image: String,
    /// The project's containers: where the images of the throwaway ones come from.
    pub containers: Vec<Container>,
    /// The run's label, on everything it makes.
    pub labels: Vec<(String, String)>,
    name: &'static str,
    stamp: i64,
}

/// Runs `body` in a scratch run for `purpose`; everything the run made is removed before it
/// returns, whatever happened, and a stop signal ends it with [`ScratchError::Stopped`].
pub async fn in_scratch<T, E: From<ScratchError>>(
    engine: &Engine,
    options: &RestoreOptions,
    conf: &MailcowConf,
    purpose: Purpose<'_>,
    mut stop: Stop,
    body: impl AsyncFnOnce(&Scratch<'_>, Stop) -> Result<T, E>,
) -> Result<T, E> {
    let label = format!("{}={}", purpose.label, conf.project);
    // What a killed run left, first: its helpers too, which clear_stale_helpers would find
    // still running.
    engine
        .remove_labelled(&label)
        .await
        .map_err(ScratchError::from)?;
    let image = async { Ok::<_, ScratchError>(options.access.image(engine).await?) };
    let stale = async { Ok::<_, ScratchError>(clear_stale_helpers(engine, &conf.project).await?) };
    let containers =
        async { Ok::<_, ScratchError>(engine.project_containers(&conf.project).await?) };
    let ((image, _), _, containers) = tokio::try_join!(image, stale, containers)?;
    options
        .access
        .ensure_state_dir()
        .map_err(ScratchError::from)?;

    let body_stop = stop.clone();
    let run = async {
        let labels = vec![(purpose.label.to_string(), conf.project.clone())];
        let inspection = Inspection {
            archive: purpose.archive,
            subtrees: purpose.subtrees,
            crypt_volume: None,
            live_mail: None,
            labels: labels.clone(),
        };
        let mut inspect_stop = body_stop.clone();
        let summary = read_summary(
            engine,
            &options.access,
            &conf.project,
            &image,
            inspection,
            &mut inspect_stop,
        )
        .await
        .map_err(|e| match e {
            RestoreError::Stopped(signal) => ScratchError::Stopped(signal),
            e => ScratchError::Inspect(e),
        })?;
        let scratch = Scratch {
            engine,
            options,
            conf,
            summary,
            image,
            containers,
            labels,
            name: purpose.name,
            stamp: crate::ops::system::now_micros(),
        };
        body(&scratch, body_stop).await
    };
    let result = tokio::select! {
        done = run => done,
        signal = wait_for_stop(&mut stop) => Err(ScratchError::Stopped(signal).into()),
    };
    let cleaned = engine.remove_labelled(&label).await;
    let done = result?;
    cleaned.map_err(|source| ScratchError::Cleanup {
        label: purpose.label,
        source,
    })?;
    Ok(done)
}

/// Why the throwaway dovecot is not there to ask.
#[derive(Debug)]
pub enum DovecotError {
    /// The installation's image has no dovecot.
    NoDovecot,
    Failed(String),
}

impl Scratch<'_> {
    /// The name of the run's scratch volume `what`.
    pub fn volume_name(&self, what: &str) -> String {
        format!(
            "{}-mcb-{}-{}-{}-{what}",
            self.conf.project,
            self.name,
            std::process::id(),
            self.stamp
        )
    }

    /// The image of the project's container of `service`.
    pub fn image_of(&self, service: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|c| c.service == service && !c.image.is_empty())
            .map(|c| c.image.as_str())
    }

    /// The archive's `MAILDIR_SUB` (this mailcow's for an archive that does not say).
    pub fn maildir_sub(&self) -> &str {
        self.summary
            .origin
            .as_ref()
            .map_or(self.conf.maildir_sub.as_str(), |o| o.maildir_sub.as_str())
    }

    /// Restores the archive `paths` into the scratch volume `volume` with the restore's own
    /// helper: its exit code, and the signal that stopped it.
    pub async fn restore_into(
        &self,
        paths: Vec<String>,
        volume: &str,
        stop: &mut Stop,
    ) -> Result<(i64, Option<&'static str>), DockerError> {
        let command = RestoreCommand {
            // A fresh volume has nothing to remove, nor to merge with.
            mirrors: Vec::new(),
            merge: false,
            mail: MailSelection::default(),
            location: self.options.access.archive(&self.summary.name),
            paths,
            access: self.options.access.in_helper(),
        };
        let mut spec = self.options.access.helper_spec(
            &self.image,
            &self.conf.project,
            &HelperCommand::Restore(Box::new(command)),
        );
        spec.capabilities = WRITE_ANY_FILE.map(String::from).to_vec();
        spec.labels.extend(self.labels.iter().cloned());
        spec.mounts.push(HelperMount::Volume {
            name: volume.into(),
            target: HELPER_ROOT.into(),
            read_only: false,
        });
        let (code, _, signal) = run_helper(self.engine, &spec, StdoutTo::Relay, stop).await?;
        Ok((code, signal))
    }

    /// Starts dovecot of the installation's dovecot-mailcow `image` on the restored files of
    /// `volume` (mounted read-write at [`RESTORED`]: dovecot may move a mail from new/ to cur/
    /// and write its uid list into the maildirs, which are the scratch copy's), with the
    /// restored mail_crypt keys if `keys`; its container's id once it serves.
    pub async fn start_dovecot(
        &self,
        image: &str,
        volume: &str,
        keys: bool,
    ) -> Result<String, DovecotError> {
        let config = dovecot_config(self.maildir_sub(), keys);
        let spec = ThrowawaySpec {
            image: image.into(),
            command: ["sh", "-c", DOVECOT_START, "sh", &config]
                .map(String::from)
                .to_vec(),
            mounts: vec![HelperMount::Volume {
                name: volume.into(),
                target: RESTORED.into(),
                read_only: false,
            }],
            // Root reading the keys (dovecot's, uid 401), dovecot's processes under its own
            // users and the mail's (5000).
            capabilities: [
                "CHOWN",
                "DAC_OVERRIDE",
                "FOWNER",
                "SETUID",
                "SETGID",
                "KILL",
                "SYS_CHROOT",
            ]
            .map(String::from)
            .to_vec(),
            labels: self.labels.clone(),
            limits: self.options.access.limits,
        };
        let id = self
            .engine
            .start_throwaway(&spec)
            .await
            .map_err(|e| DovecotError::Failed(e.to_string()))?;
        let socket = format!("{DOVECOT_RUN}/auth-userdb");
        let ready = wait_ready(self.engine, &id, "dovecot", async || {
            matches!(self.engine.exec_capture(&id, &["test", "-S", &socket], b"").await,
                Ok((_, finished)) if finished.exit_code == 0)
        })
        .await;
        if let Err(e) = ready {
            if let Ok(ContainerState::Exited(NO_DOVECOT)) = self.engine.container_state(&id).await {
                return Err(DovecotError::NoDovecot);
            }
            return Err(DovecotError::Failed(e));
        }
        Ok(id)
    }
}

/// Our dovecot configuration: mailcow's layout (`/var/vmail/<domain>/<user>/<MAILDIR_SUB>`,
/// here below [`RESTORED`]; its namespace separator `/`), mail owned by vmail (5000), the zlib
/// and mail_crypt plugins with the restored global key pair as mailcow configures them
/// (`data/conf/dovecot/dovecot.conf`), so every mail mailcow stored can be read; indexes and
/// control files in the container's own `/tmp`, not in the restored index; a static user
/// database that takes any user (doveadm asks only for those found), no protocol served.
///
/// Mail it *writes* is written plain — no `mail_crypt_save_version`, no `zlib_save` — unlike
/// mailcow's: the one mail written is `export`'s copy, which must be readable without the keys.
pub fn dovecot_config(maildir_sub: &str, keys: bool) -> String {
    let vmail = format!("{RESTORED}/{}", Component::Vmail.archive_dir());
    let crypt = format!("{RESTORED}/{}", Component::Crypt.archive_dir());
    let keys = if keys {
        format!(
            "  mail_crypt_global_private_key = <{crypt}/ecprivkey.pem\n  mail_crypt_global_public_key = <{crypt}/ecpubkey.pem\n"
        )
    } else {
        String::new()
    };
    format!(
        "protocols =
ssl = no
base_dir = {DOVECOT_RUN}
state_dir = /tmp/mcb-dovecot/state
log_path = /dev/stderr
mail_home = {vmail}/%d/%n
mail_location = maildir:~/{maildir_sub}:INDEX=/tmp/mcb-dovecot/index/%u:VOLATILEDIR=/tmp/mcb-dovecot/index/%u
mail_uid = 5000
mail_gid = 5000
first_valid_uid = 5000
mail_plugins = zlib mail_crypt
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid=5000 gid=5000 home={vmail}/%d/%n allow_all_users=yes
}}
plugin {{
{keys}  mail_crypt_save_version = 0
}}
"
    )
}

/// Polls `ready` until it holds, while the container `id` runs, for [`READY_TIMEOUT`].
pub async fn wait_ready(
    engine: &Engine,
    id: &str,
    what: &str,
    ready: impl AsyncFn() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if ready().await {
            return Ok(());
        }
        if let Ok(ContainerState::Exited(code)) = engine.container_state(id).await {
            let log = engine.log_tail(id, 5).await.unwrap_or_default();
            let last = log.lines().rev().map(str::trim).find(|l| !l.is_empty());
            return Err(format!(
                "the throwaway {what} ended with exit code {code}: {}",
                last.unwrap_or("(no message)")
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the throwaway {what} was not ready after {} s",
                READY_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the shell `script` in the dovecot container `id`, with our configuration's path as
/// `$0` and `arguments`; its stdout.
pub async fn doveadm(
    engine: &Engine,
    id: &str,
    script: &str,
    arguments: &[String],
) -> Result<String, String> {
    let command: Vec<&str> = ["sh", "-c", script, DOVECOT_CONF]
        .into_iter()
        .chain(arguments.iter().map(String::as_str))
        .collect();
    let (output, finished) = engine
        .exec_capture(id, &command, b"")
        .await
        .map_err(|e| e.to_string())?;
    if finished.exit_code != 0 {
        return Err(format!("doveadm: {}", finished.last_error_line()));
    }
    Ok(String::from_utf8_lossy(&output).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_are_configured_only_when_the_archive_has_them_and_mail_is_written_plain() {
        let with = dovecot_config("Maildir", true);
        assert!(with.contains("mail_crypt_global_private_key = </scratch/crypt/ecprivkey.pem"));
        assert!(with.contains("mail_location = maildir:~/Maildir:INDEX=/tmp/"));
        assert!(with.contains("mail_crypt_save_version = 0"));
        assert!(!with.contains("zlib_save"));
        let without = dovecot_config("", false);
        assert!(!without.contains("mail_crypt_global_private_key"));
        assert!(without.contains("maildir:~/:INDEX"));
    }
}

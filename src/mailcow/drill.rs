//! A restore drill: an archive restored into scratch volumes and proven usable in throwaway
//! containers, unattended, without touching the live mailcow.
//!
//! **What is proven**, each a step of the report:
//! - **files**: every file component is restored by the restore's own helper (`agent
//!   restore`), into a scratch volume instead of the live ones. The extract authenticates every
//!   chunk by its id (MAC and id hash) and checks each file's size against its item (the sum
//!   of its chunks must be the item's `size`, `ops::extract::write_file`): a file that comes
//!   out complete has the archived content, byte for byte, so no further verification runs.
//! - **database**: the archive's dump goes through the restore's own import
//!   ([`import_dump`]: staged, completeness-checked, swapped in) into a fresh MariaDB made from
//!   the installation's own mysql-mailcow image; then mailcow's tables are counted.
//! - **mailboxes**: every row of `mailbox` has its maildir in the restored vmail, and every
//!   maildir a row (a difference is a warning: a mailbox never used has no maildir yet).
//! - **redis**: the archive's `dump.rdb` loads in a Redis of the installation's own image, and
//!   holds the DKIM keys (`DKIM_PRIV_KEYS`).
//! - **mail**: dovecot's own `doveadm` of the installation's dovecot image, configured by us
//!   with mail_crypt and the **restored** keys, reads a sample of every mailbox's mails (or all):
//!   a mail it cannot decrypt fails the drill.
//!
//! **What is not proven**: that mailcow's services start on the restored data (their
//! entrypoints are not run: they would generate keys, reach the network and other services),
//! that the live mailcow.conf matches the restored database's passwords, or the services'
//! other state (rspamd, postfix's queue, SOGo) beyond their files being complete.
//!
//! **What it never touches**: the live volumes (not mounted by anything the drill starts), the
//! live services (none is stopped, exec'd into or signalled; their containers are only read
//! for their image ids) and the live database.
//!
//! **The containers**, each made as it is for a reason:
//! - every container carries the label [`DRILL_LABEL`]`=<project>`, as do the scratch volumes:
//!   the run removes all of them at its end, whatever happened (also on SIGINT/SIGTERM), and a
//!   run removes what a killed one left before it starts — the host lock makes sure no other
//!   drill of this host is using them;
//! - the throwaway containers have no network (`NetworkMode: none`): restored data is never
//!   served to anything, and nothing restored can reach out; they are made from the
//!   installation's images by id, so the programs that prove the data are the ones that will
//!   run it, with their entry points replaced by ours (mailcow's would generate a fresh
//!   mail_crypt key pair, configure and connect the services);
//! - MariaDB gets a fresh datadir on a scratch volume (`mariadb-install-db`, then `mariadbd`
//!   with `--skip-networking`, listening on its socket only); Redis reads the restored
//!   `dump.rdb` from the scratch volume, read-only, and never saves (`--save ""`).

use std::collections::{BTreeMap, BTreeSet};
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
use super::mysql::{self, Login};
use super::restore::{
    DatabaseStepError, DumpSource, ImportFailure, Inspection, RestoreError, RestoreOptions,
    import_dump, read_summary, run_helper,
};
use super::staged_import::{Tools, literal, quoted, unhex};
use super::summary::{ArchiveSummary, SqlDump};

/// The label of everything a drill makes: its scratch volumes, throwaway containers and
/// helpers; the value is the project.
pub const DRILL_LABEL: &str = "org.mailcow-borg.drill";

/// Where the throwaway containers see the restored files (the scratch volume, as the helper
/// wrote it: one directory per component).
const RESTORED: &str = "/drill";
/// How long a throwaway server may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The tables whose rows are counted, when they are there; the first two must be.
const COUNTED_TABLES: [&str; 4] = ["domain", "mailbox", "alias", "sogo_folder_info"];
/// The most names a message lists.
const NAMES_SHOWN: usize = 20;

/// Where our dovecot configuration is, and dovecot's runtime directory.
const DOVECOT_CONF: &str = "/tmp/mcb-drill/dovecot.conf";
const DOVECOT_RUN: &str = "/tmp/mcb-drill/run";
/// The exit code of the dovecot container when the image has no dovecot.
const NO_DOVECOT: i64 = 127;
/// The dovecot container's command: our configuration (its first argument) written, dovecot
/// in the foreground.
const DOVECOT_START: &str = r#"command -v dovecot >/dev/null || exit 127
mkdir -p /tmp/mcb-drill/index && chown 5000:5000 /tmp/mcb-drill/index || exit 1
printf '%s' "$1" > /tmp/mcb-drill/dovecot.conf || exit 1
exec dovecot -F -c /tmp/mcb-drill/dovecot.conf"#;
/// Lists every mail of the users given: `user folder uid guid` a line. doveadm may say an
/// error and still exit 0: any error fails the listing.
const LIST_MAILS: &str = r#"c=$0
d=/tmp/mcb-drill
for u; do
  doveadm -c "$c" -f tab fetch -u "$u" "mailbox uid guid" all >"$d/list" 2>"$d/list.err" || { cat "$d/list.err" >&2; exit 1; }
  while IFS= read -r line; do
    case $line in *Error:*) printf '%s\n' "$line" >&2; exit 1;; esac
  done < "$d/list.err"
  while IFS= read -r line; do printf '%s\t%s\n' "$u" "$line"; done < "$d/list"
done"#;
/// Reads the text of the mails given as (user, folder, uid set) triples, into nothing: a
/// mail that cannot be read (decrypted, decompressed) is an `unreadable` line with dovecot's
/// error; any other error of a fetch a `failed` line.
const READ_MAILS: &str = r#"c=$0
e=/tmp/mcb-drill/fetch.err
while [ $# -ge 3 ]; do
  doveadm -c "$c" fetch -u "$1" text mailbox "$2" uid "$3" >/dev/null 2>"$e"
  rc=$?
  found=
  while IFS= read -r line; do
    case $line in
      *"fetch(text) failed for box="*) printf 'unreadable\t%s\t%s\t%s\n' "$1" "$2" "$line"; found=1;;
      *UID=*) ;;
      *Error:*) printf 'failed\t%s\t%s\t%s\n' "$1" "$2" "$line"; found=1;;
    esac
  done < "$e"
  if [ $rc -ne 0 ] && [ -z "$found" ]; then
    printf 'failed\t%s\t%s\t%s\n' "$1" "$2" "doveadm exited with $rc"
  fi
  shift 3
done"#;

/// Our dovecot configuration: mailcow's layout (`/var/vmail/<domain>/<user>/<MAILDIR_SUB>`,
/// here below [`RESTORED`]), mail owned by vmail (5000), lz4 and mail_crypt with the restored
/// global key pair as mailcow configures them (`data/conf/dovecot/dovecot.conf`); indexes and
/// control files in the container's own `/tmp`, not in the restored index; a static user
/// database that takes any user (doveadm asks only for those found), no protocol served.
fn dovecot_config(maildir_sub: &str, keys: bool) -> String {
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
state_dir = /tmp/mcb-drill/state
log_path = /dev/stderr
mail_home = {vmail}/%d/%n
mail_location = maildir:~/{maildir_sub}:INDEX=/tmp/mcb-drill/index/%u:CONTROL=/tmp/mcb-drill/index/%u:VOLATILEDIR=/tmp/mcb-drill/index/%u
mail_uid = 5000
mail_gid = 5000
first_valid_uid = 5000
mail_plugins = zlib mail_crypt
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid=5000 gid=5000 home={vmail}/%d/%n allow_all_users=yes
}}
plugin {{
{keys}  mail_crypt_save_version = 2
  zlib_save = lz4
}}
"
    )
}

/// The uid in dovecot's `fetch(text) failed for box=… uid=N: …`.
fn failed_uid(detail: &str) -> Option<u32> {
    let (_, after) = detail.rsplit_once(" uid=")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Which of `count` mails are read: all, or at most `n` spread evenly over them (the first
/// and the last included).
fn sample(count: usize, sample: Sample) -> Vec<usize> {
    match sample {
        Sample::All => (0..count).collect(),
        Sample::PerMailbox(n) => {
            let n = (n as usize).min(count);
            match n {
                0 => Vec::new(),
                1 => vec![0],
                n => (0..n).map(|i| i * (count - 1) / (n - 1)).collect(),
            }
        }
    }
}

/// Which mails of each mailbox the mail step reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sample {
    /// At most this many, spread over the mailbox.
    PerMailbox(u32),
    All,
}

/// What to drill.
#[derive(Clone, Debug)]
pub struct DrillRequest {
    /// The archive's name, or `latest`.
    pub archive: String,
    pub sample: Sample,
}

/// How a step ended, from best to worst.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// It could not run (the archive lacks what it proves, or a step it needs failed).
    Skipped,
    Warning,
    Failed,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skipped => "skipped",
            Status::Warning => "warning",
            Status::Failed => "failed",
        }
    }
}

/// One step of the drill.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StepReport {
    pub name: String,
    pub status: Status,
    /// What it counted, by name.
    pub figures: BTreeMap<String, u64>,
    /// Why it is not ok, or what it noticed.
    pub messages: Vec<String>,
    pub seconds: f64,
}

/// The whole drill.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DrillReport {
    /// The archive's name (`latest` resolved).
    pub archive: String,
    pub steps: Vec<StepReport>,
    pub seconds: f64,
}

impl DrillReport {
    /// The names of the steps that failed.
    pub fn failed_steps(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| s.status == Status::Failed)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// The worst step's status; skipped steps count as ok.
    pub fn status(&self) -> Status {
        self.steps
            .iter()
            .map(|s| s.status)
            .filter(|s| *s != Status::Skipped)
            .max()
            .unwrap_or(Status::Ok)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Helper(#[from] HelperError),
    #[error(transparent)]
    Inspect(RestoreError),
    #[error("the drill is stopped by {0}")]
    Stopped(&'static str),
    #[error(
        "the drill's scratch containers and volumes could not all be removed ({0}); remove them: docker rm -f $(docker ps -aq --filter label={DRILL_LABEL}); docker volume rm $(docker volume ls -q --filter label={DRILL_LABEL})"
    )]
    Cleanup(DockerError),
}

impl DrillError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            DrillError::Stopped(_) => ErrorKind::Interrupted,
            DrillError::Inspect(e) => e.kind(),
            DrillError::Docker(_) | DrillError::Helper(_) | DrillError::Cleanup(_) => {
                ErrorKind::Environment
            }
        }
    }
}

/// Yields the signal (`SIGINT`, `SIGTERM`) that asks the drill to stop.
type Stop = tokio::sync::watch::Receiver<Option<&'static str>>;

/// Drills `request`'s archive; `say` gets a line for each step. Everything it made is removed
/// before it returns, whatever happened; a stop signal ends it with [`DrillError::Stopped`].
pub async fn drill(
    engine: &Engine,
    options: &RestoreOptions,
    conf: &MailcowConf,
    request: &DrillRequest,
    mut stop: Stop,
    say: &(dyn Fn(&str) + Sync),
) -> Result<DrillReport, DrillError> {
    let started = Instant::now();
    let label = format!("{DRILL_LABEL}={}", conf.project);
    // What a killed drill left, first: its helpers too, which clear_stale_helpers would find
    // still running.
    engine.remove_labelled(&label).await?;
    let image = async { Ok::<_, DrillError>(options.access.image(engine).await?) };
    let stale = async { Ok::<_, DrillError>(clear_stale_helpers(engine, &conf.project).await?) };
    let containers = async { Ok::<_, DrillError>(engine.project_containers(&conf.project).await?) };
    let ((image, _), _, containers) = tokio::try_join!(image, stale, containers)?;
    options.access.ensure_state_dir()?;

    let steps_stop = stop.clone();
    let run = async {
        let labels = vec![(DRILL_LABEL.to_string(), conf.project.clone())];
        let inspection = Inspection {
            archive: &request.archive,
            subtrees: Vec::new(),
            crypt_volume: None,
            live_mail: None,
            labels: labels.clone(),
        };
        let mut inspect_stop = steps_stop.clone();
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
            RestoreError::Stopped(signal) => DrillError::Stopped(signal),
            e => DrillError::Inspect(e),
        })?;
        say(&format!("drilling archive {}", summary.name));
        let stamp = crate::ops::system::now_micros();
        let volume = |what: &str| {
            format!(
                "{}-mcb-drill-{}-{stamp}-{what}",
                conf.project,
                std::process::id()
            )
        };
        let run = Run {
            engine,
            options,
            conf,
            request,
            summary: &summary,
            image: &image,
            containers: &containers,
            labels,
            files_volume: volume("files"),
            database_volume: volume("db"),
            say,
        };
        let steps = run.steps(steps_stop.clone()).await?;
        Ok::<_, DrillError>((summary.name.clone(), steps))
    };
    let result = tokio::select! {
        done = run => done,
        signal = wait_for_stop(&mut stop) => Err(DrillError::Stopped(signal)),
    };
    let cleaned = engine.remove_labelled(&label).await;
    let (archive, steps) = result?;
    cleaned.map_err(DrillError::Cleanup)?;
    Ok(DrillReport {
        archive,
        steps,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One drill's fixed parts, shared by its steps.
struct Run<'a> {
    engine: &'a Engine,
    options: &'a RestoreOptions,
    conf: &'a MailcowConf,
    request: &'a DrillRequest,
    summary: &'a ArchiveSummary,
    /// The helper image.
    image: &'a str,
    /// The project's containers: where the images of the throwaway ones come from.
    containers: &'a [Container],
    /// The drill's label, on everything it makes.
    labels: Vec<(String, String)>,
    files_volume: String,
    database_volume: String,
    say: &'a (dyn Fn(&str) + Sync),
}

/// A step being timed.
struct Step {
    report: StepReport,
    started: Instant,
}

impl Step {
    fn new(name: &str) -> Step {
        Step {
            report: StepReport {
                name: name.into(),
                status: Status::Ok,
                figures: BTreeMap::new(),
                messages: Vec::new(),
                seconds: 0.0,
            },
            started: Instant::now(),
        }
    }

    fn figure(&mut self, name: &str, value: u64) {
        self.report.figures.insert(name.into(), value);
    }

    /// Marks the step `status` (if worse than it is) with `message`.
    fn note(&mut self, status: Status, message: impl Into<String>) {
        self.report.status = self.report.status.max(status);
        self.report.messages.push(message.into());
    }

    fn end(mut self) -> StepReport {
        self.report.seconds = self.started.elapsed().as_secs_f64();
        self.report
    }

    /// A step that did not run, and why.
    fn skipped(name: &str, why: impl Into<String>) -> StepReport {
        let mut step = Step::new(name);
        step.note(Status::Skipped, why);
        step.end()
    }
}

/// A throwaway MariaDB with the archive's database imported.
struct Database {
    container: Container,
    client: &'static str,
    name: String,
}

/// `names`, at most [`NAMES_SHOWN`] of them, for a message.
fn shown(names: &BTreeSet<String>) -> String {
    let mut text: Vec<&str> = names.iter().take(NAMES_SHOWN).map(String::as_str).collect();
    let more = names.len().saturating_sub(NAMES_SHOWN);
    let more = format!("and {more} more");
    if names.len() > NAMES_SHOWN {
        text.push(&more);
    }
    text.join(", ")
}

impl Run<'_> {
    async fn steps(&self, stop: Stop) -> Result<Vec<StepReport>, DrillError> {
        for volume in [&self.files_volume, &self.database_volume] {
            self.engine.create_volume(volume, &self.labels).await?;
        }
        // Independent: the files restored while the database imports.
        let (files, (database_step, database)) =
            tokio::join!(self.files(stop.clone()), self.database(stop));
        let files_ok = files.status < Status::Failed;
        let mut steps = vec![files, database_step];
        let no_files = "the files were not restored";
        steps.push(match (&database, files_ok) {
            (Some(database), true) => self.mailboxes(database).await,
            (None, _) => Step::skipped("mailboxes", "the database was not restored"),
            (_, false) => Step::skipped("mailboxes", no_files),
        });
        steps.push(if files_ok {
            self.redis().await
        } else {
            Step::skipped("redis", no_files)
        });
        steps.push(if files_ok {
            self.mail().await
        } else {
            Step::skipped("mail", no_files)
        });
        Ok(steps)
    }

    /// The image of the project's container of `service`.
    fn image_of(&self, service: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|c| c.service == service && !c.image.is_empty())
            .map(|c| c.image.as_str())
    }

    /// The files step: every file component into the scratch volume, by the restore's helper.
    async fn files(&self, mut stop: Stop) -> StepReport {
        let mut step = Step::new("files");
        let dump_dir = Component::Mysql.archive_dir();
        let paths: Vec<String> = self
            .summary
            .components
            .keys()
            .filter(|c| *c != dump_dir)
            .cloned()
            .collect();
        if paths.is_empty() {
            return Step::skipped("files", "the archive holds no files besides the dump");
        }
        (self.say)(&format!(
            "restoring {} into scratch volume {}",
            paths.join(", "),
            self.files_volume
        ));
        let restored = paths.iter().map(|p| self.summary.components[p]);
        step.figure("items", restored.clone().map(|t| t.items).sum());
        step.figure("bytes", restored.map(|t| t.bytes).sum());
        let command = RestoreCommand {
            // A fresh volume has nothing to remove.
            mirrors: Vec::new(),
            merge: false,
            mail: MailSelection::default(),
            location: self.options.access.archive(&self.summary.name),
            paths,
            access: self.options.access.in_helper(),
        };
        let mut spec = self.options.access.helper_spec(
            self.image,
            &self.conf.project,
            &HelperCommand::Restore(Box::new(command)),
        );
        spec.capabilities = WRITE_ANY_FILE.map(String::from).to_vec();
        spec.labels.extend(self.labels.iter().cloned());
        spec.mounts.push(HelperMount::Volume {
            name: self.files_volume.clone(),
            target: HELPER_ROOT.into(),
            read_only: false,
        });
        match run_helper(self.engine, &spec, StdoutTo::Relay, &mut stop).await {
            Ok((0, _, None)) => {}
            Ok((1, _, None)) => step.note(
                Status::Warning,
                "some items could not be restored (listed above)",
            ),
            Ok((code, _, None)) => step.note(
                Status::Failed,
                format!("the restore helper exited with {code} (its message is above): the archive's files do not all come back complete"),
            ),
            Ok((_, _, Some(signal))) => step.note(Status::Failed, format!("stopped by {signal}")),
            Err(e) => step.note(Status::Failed, e.to_string()),
        }
        step.end()
    }

    /// The database step: a fresh MariaDB, the dump imported as a restore imports it, the
    /// tables counted. Returns the server for the mailboxes step, if the import worked.
    async fn database(&self, stop: Stop) -> (StepReport, Option<Database>) {
        let mut step = Step::new("database");
        let Some(dump) = self.summary.sql_dumps.first() else {
            return (
                Step::skipped(
                    "database",
                    "the archive holds no database dump (mysql/<DBNAME>.sql)",
                ),
                None,
            );
        };
        let Some(image) = self.image_of("mysql-mailcow") else {
            return (
                Step::skipped(
                    "database",
                    "no mysql-mailcow container to take the image from",
                ),
                None,
            );
        };
        step.figure("dump_bytes", dump.bytes);
        let database = match self.import(image, dump, stop).await {
            Ok((database, warnings)) => {
                for warning in warnings {
                    step.note(Status::Warning, warning);
                }
                database
            }
            Err(message) => {
                step.note(Status::Failed, message);
                return (step.end(), None);
            }
        };
        if let Err(e) = self.count_tables(&database, &mut step).await {
            step.note(Status::Failed, e);
        }
        (step.end(), Some(database))
    }

    /// Starts the throwaway MariaDB and imports the dump into it.
    async fn import(
        &self,
        image: &str,
        dump: &SqlDump,
        stop: Stop,
    ) -> Result<(Database, Vec<String>), String> {
        // Its own datadir on the scratch volume, at the image's datadir (which an official
        // image declares a VOLUME: mounting there keeps the engine from making one); the
        // restored files read-only, for the mailboxes step.
        const START: &str = r#"install=$(command -v mariadb-install-db || command -v mysql_install_db) || { echo "no mariadb-install-db in the image" >&2; exit 127; }
server=$(command -v mariadbd || command -v mysqld) || { echo "no mariadbd in the image" >&2; exit 127; }
mkdir -p /run/mysqld && chown mysql:mysql /var/lib/mysql /run/mysqld || exit 1
"$install" --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null || exit 1
exec "$server" --user=mysql --datadir=/var/lib/mysql --skip-networking --socket=/run/mysqld/mysqld.sock"#;
        let spec = ThrowawaySpec {
            image: image.into(),
            command: ["sh", "-c", START].map(String::from).to_vec(),
            mounts: vec![
                HelperMount::Volume {
                    name: self.database_volume.clone(),
                    target: "/var/lib/mysql".into(),
                    read_only: false,
                },
                HelperMount::Volume {
                    name: self.files_volume.clone(),
                    target: RESTORED.into(),
                    read_only: true,
                },
            ],
            capabilities: ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"]
                .map(String::from)
                .to_vec(),
            labels: self.labels.clone(),
            limits: self.options.access.limits,
        };
        (self.say)("starting a throwaway MariaDB without network");
        let id = self
            .engine
            .start_throwaway(&spec)
            .await
            .map_err(|e| e.to_string())?;
        let container = Container {
            name: format!("the throwaway MariaDB ({})", &id[..12.min(id.len())]),
            id,
            service: "mysql-mailcow".into(),
            running: true,
            image: image.into(),
            mounts: Vec::new(),
        };
        let client = mysql::client_tool(self.engine, &container)
            .await
            .map_err(|e| e.to_string())?;
        let dump_tool = mysql::dump_tool(self.engine, &container)
            .await
            .map_err(|e| e.to_string())?;
        self.wait_ready(&container.id, "MariaDB", async || {
            let login = Login::root(self.conf);
            matches!(mysql::query(self.engine, &container, client, login, "SELECT 1").await,
                Ok((_, finished)) if finished.exit_code == 0)
        })
        .await?;
        // The dump's views, triggers and routines name mailcow's user as their definer, as
        // mailcow defines them; a fresh server lacks it, and a view whose definer is missing
        // cannot be used (not even by a view on it). Locked: nobody logs in as it here.
        let user = literal(&self.conf.db_user);
        let definer = format!(
            "CREATE USER IF NOT EXISTS {user}@'localhost' ACCOUNT LOCK; CREATE USER IF NOT EXISTS {user}@'%' ACCOUNT LOCK; GRANT ALL ON {db}.* TO {user}@'localhost'; GRANT ALL ON {db}.* TO {user}@'%';",
            db = quoted(&dump.database)
        );
        let (_, finished) = mysql::query(
            self.engine,
            &container,
            client,
            Login::root(self.conf),
            &definer,
        )
        .await
        .map_err(|e| e.to_string())?;
        if finished.exit_code != 0 {
            return Err(format!(
                "creating mailcow's database user in the throwaway MariaDB: {}",
                finished.last_error_line()
            ));
        }
        let source = DumpSource {
            access: &self.options.access,
            project: &self.conf.project,
            image: self.image,
            archive: &self.summary.name,
            labels: self.labels.clone(),
        };
        let tools = Tools {
            container: &container,
            client,
            dump_tool,
        };
        let warnings = import_dump(self.engine, &source, self.conf, dump, tools, stop, self.say)
            .await
            .map_err(|e| match e {
                // The live database was never the target: only what failed matters.
                DatabaseStepError::Import { failure, .. } => match failure {
                    ImportFailure::Reading(code) => format!(
                        "reading the dump from the archive failed (the helper exited with {code}; its message is above)"
                    ),
                    failure => format!("the dump does not load: {failure}"),
                },
                e => e.to_string(),
            })?;
        Ok((
            Database {
                container,
                client,
                name: dump.database.clone(),
            },
            warnings,
        ))
    }

    /// Polls `ready` until it holds, while the container `id` runs, for [`READY_TIMEOUT`].
    async fn wait_ready(
        &self,
        id: &str,
        what: &str,
        ready: impl AsyncFn() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ready().await {
                return Ok(());
            }
            if let Ok(ContainerState::Exited(code)) = self.engine.container_state(id).await {
                let log = self.engine.log_tail(id, 5).await.unwrap_or_default();
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

    /// One query in the throwaway MariaDB; its lines.
    async fn query(&self, database: &Database, sql: &str) -> Result<Vec<String>, String> {
        let (output, finished) = mysql::query(
            self.engine,
            &database.container,
            database.client,
            Login::root(self.conf),
            sql,
        )
        .await
        .map_err(|e| e.to_string())?;
        if finished.exit_code != 0 {
            return Err(format!("{sql}: {}", finished.last_error_line()));
        }
        Ok(String::from_utf8_lossy(&output)
            .lines()
            .map(String::from)
            .collect())
    }

    /// mailcow's tables in the restored database: how many, and the rows of
    /// [`COUNTED_TABLES`]; the first two missing fail the step, empty they are a warning.
    async fn count_tables(&self, database: &Database, step: &mut Step) -> Result<(), String> {
        let tables: BTreeSet<String> = self
            .query(
                database,
                &format!(
                    "SELECT HEX(TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE <> 'VIEW'",
                    literal(&database.name)
                ),
            )
            .await?
            .iter()
            .filter_map(|h| unhex(h))
            .collect();
        step.figure("tables", tables.len() as u64);
        let (required, others) = COUNTED_TABLES.split_at(2);
        let missing: BTreeSet<String> = required
            .iter()
            .filter(|t| !tables.contains(**t))
            .map(|t| t.to_string())
            .collect();
        if !missing.is_empty() {
            step.note(
                Status::Failed,
                format!(
                    "the restored database {} lacks mailcow's tables {}",
                    database.name,
                    shown(&missing)
                ),
            );
        }
        for table in COUNTED_TABLES.iter().filter(|t| tables.contains(**t)) {
            let sql = format!(
                "SELECT COUNT(*) FROM {}.{}",
                quoted(&database.name),
                quoted(table)
            );
            let rows = self.query(database, &sql).await?;
            let count: u64 = rows
                .first()
                .and_then(|r| r.trim().parse().ok())
                .ok_or_else(|| format!("{sql}: unexpected answer {rows:?}"))?;
            step.figure(&format!("rows_{table}"), count);
            if count == 0 && !others.contains(table) {
                step.note(
                    Status::Warning,
                    format!("the restored table {table} has no rows"),
                );
            }
        }
        Ok(())
    }

    /// The mailboxes step: the `mailbox` table against the restored maildirs.
    async fn mailboxes(&self, database: &Database) -> StepReport {
        let mut step = Step::new("mailboxes");
        let rows = self
            .query(
                database,
                &format!(
                    "SELECT HEX(username) FROM {}.mailbox",
                    quoted(&database.name)
                ),
            )
            .await;
        let rows: BTreeSet<String> = match rows {
            Ok(rows) => rows
                .iter()
                .filter_map(|h| unhex(h))
                .map(|u| u.to_lowercase())
                .collect(),
            Err(e) => {
                step.note(Status::Failed, e);
                return step.end();
            }
        };
        let maildirs = match self.maildirs(&database.container.id).await {
            Ok(maildirs) => maildirs
                .iter()
                .map(|m| m.to_lowercase())
                .collect::<BTreeSet<_>>(),
            Err(e) => {
                step.note(Status::Failed, e);
                return step.end();
            }
        };
        step.figure("mailboxes", rows.len() as u64);
        step.figure("maildirs", maildirs.len() as u64);
        let without_maildir: BTreeSet<String> = rows.difference(&maildirs).cloned().collect();
        let without_row: BTreeSet<String> = maildirs.difference(&rows).cloned().collect();
        if !without_maildir.is_empty() {
            step.note(
                Status::Warning,
                format!(
                    "{} mailbox(es) of the mailbox table have no maildir in the restored vmail: {}",
                    without_maildir.len(),
                    shown(&without_maildir)
                ),
            );
        }
        if !without_row.is_empty() {
            step.note(
                Status::Warning,
                format!(
                    "{} maildir(s) in the restored vmail have no row in the mailbox table: {}",
                    without_row.len(),
                    shown(&without_row)
                ),
            );
        }
        step.end()
    }

    /// The mailboxes that have a maildir in the restored vmail (`<domain>/<local part>`), as
    /// `local part@domain`, listed in the container `id` (which mounts the restored files at
    /// [`RESTORED`]).
    /// `_garbage` (deleted mailboxes) and anything that is not a domain are not mailboxes.
    async fn maildirs(&self, id: &str) -> Result<BTreeSet<String>, String> {
        let vmail = format!("{RESTORED}/{}", Component::Vmail.archive_dir());
        let script = r#"cd "$0" 2>/dev/null || exit 0
for d in */*/; do [ -d "$d" ] && printf '%s\0' "$d"; done; exit 0"#;
        let (output, finished) = self
            .engine
            .exec_capture(id, &["sh", "-c", script, &vmail], b"")
            .await
            .map_err(|e| e.to_string())?;
        if finished.exit_code != 0 {
            return Err(format!(
                "listing the restored maildirs failed: {}",
                finished.last_error_line()
            ));
        }
        Ok(output
            .split(|b| *b == 0)
            .filter_map(|entry| {
                let entry = String::from_utf8_lossy(entry);
                let (domain, local) = entry.trim_end_matches('/').split_once('/')?;
                (domain.contains('.') && !domain.starts_with(['_', '.']) && !local.starts_with('.'))
                    .then(|| format!("{local}@{domain}"))
            })
            .collect())
    }

    /// The mail step: dovecot of the installation's image, with our configuration and the
    /// restored keys, reads a sample of every restored mailbox's mails (or all of them).
    async fn mail(&self) -> StepReport {
        let mut step = Step::new("mail");
        let vmail = Component::Vmail.archive_dir();
        if !self.summary.components.contains_key(vmail) {
            return Step::skipped("mail", "the archive holds no vmail");
        }
        let Some(image) = self.image_of("dovecot-mailcow") else {
            return Step::skipped(
                "mail",
                "no dovecot-mailcow container to take the image from",
            );
        };
        let keys = self.summary.crypt_keys.in_archive;
        if !keys {
            step.note(
                Status::Warning,
                "the archive holds no mail_crypt keys: encrypted mail cannot be read",
            );
        }
        let maildir_sub = self
            .summary
            .origin
            .as_ref()
            .map_or(self.conf.maildir_sub.as_str(), |o| o.maildir_sub.as_str());
        let config = dovecot_config(maildir_sub, keys);
        (self.say)(
            "reading the restored mail with dovecot in a throwaway container without network",
        );
        let spec = ThrowawaySpec {
            image: image.into(),
            command: ["sh", "-c", DOVECOT_START, "sh", &config]
                .map(String::from)
                .to_vec(),
            // Read-write: dovecot may move a mail from new/ to cur/ and write its uid list
            // into the maildirs; they are the scratch copy's.
            mounts: vec![HelperMount::Volume {
                name: self.files_volume.clone(),
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
        let id = match self.engine.start_throwaway(&spec).await {
            Ok(id) => id,
            Err(e) => {
                step.note(Status::Failed, e.to_string());
                return step.end();
            }
        };
        let socket = format!("{DOVECOT_RUN}/auth-userdb");
        let ready = self
            .wait_ready(&id, "dovecot", async || {
                matches!(self.engine.exec_capture(&id, &["test", "-S", &socket], b"").await,
                    Ok((_, finished)) if finished.exit_code == 0)
            })
            .await;
        if let Err(e) = ready {
            if let Ok(ContainerState::Exited(NO_DOVECOT)) = self.engine.container_state(&id).await {
                return Step::skipped("mail", "the dovecot-mailcow image has no dovecot");
            }
            step.note(Status::Failed, e);
            return step.end();
        }
        if let Err(e) = self.read_mail(&id, &mut step).await {
            step.note(Status::Failed, e);
        }
        step.end()
    }

    /// Lists every restored mailbox's mails, then reads the sample of them; a mail dovecot
    /// cannot read fails the step, named by mailbox, folder and file.
    async fn read_mail(&self, id: &str, step: &mut Step) -> Result<(), String> {
        let users: Vec<String> = self.maildirs(id).await?.into_iter().collect();
        step.figure("mailboxes", users.len() as u64);
        // Each user's mails: folder, uid, file (its base name: dovecot's guid of a maildir
        // mail).
        let mut mails: BTreeMap<String, Vec<(String, u32, String)>> = BTreeMap::new();
        let listed = self.doveadm(id, LIST_MAILS, &users).await?;
        for line in listed.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            let [user, folder, uid, guid] = fields[..] else {
                continue;
            };
            let Ok(uid) = uid.parse() else {
                // The header line.
                continue;
            };
            mails.entry(user.to_string()).or_default().push((
                folder.to_string(),
                uid,
                guid.to_string(),
            ));
        }
        let total: usize = mails.values().map(Vec::len).sum();
        step.figure("mails", total as u64);
        let mut arguments = Vec::new();
        let mut read = 0usize;
        for (user, listed) in &mails {
            let chosen = sample(listed.len(), self.request.sample);
            read += chosen.len();
            let mut by_folder: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for i in chosen {
                let (folder, uid, _) = &listed[i];
                by_folder.entry(folder).or_default().push(uid.to_string());
            }
            for (folder, uids) in by_folder {
                arguments.extend([user.clone(), folder.to_string(), uids.join(",")]);
            }
        }
        let output = self.doveadm(id, READ_MAILS, &arguments).await?;
        let mut unreadable = BTreeSet::new();
        let mut failures = Vec::new();
        for line in output.lines() {
            let fields: Vec<&str> = line.splitn(4, '\t').collect();
            match fields[..] {
                ["unreadable", user, folder, detail] => {
                    let file = failed_uid(detail)
                        .and_then(|uid| {
                            mails
                                .get(user)?
                                .iter()
                                .find(|(f, u, _)| f == folder && *u == uid)
                        })
                        .map_or_else(|| detail.to_string(), |(_, _, guid)| guid.clone());
                    unreadable.insert(format!("{user} {folder}: {file}"));
                }
                ["failed", user, folder, detail] => failures.push(format!(
                    "doveadm fetch for {user} {folder} failed: {detail}"
                )),
                _ => {}
            }
        }
        step.figure("mails_read", read.saturating_sub(unreadable.len()) as u64);
        if !unreadable.is_empty() {
            step.note(
                Status::Failed,
                format!(
                    "dovecot cannot read {} mail(s) with the restored mail_crypt keys: {}",
                    unreadable.len(),
                    shown(&unreadable)
                ),
            );
        } else if let Some(failure) = failures.first() {
            step.note(Status::Failed, failure.clone());
        }
        Ok(())
    }

    /// Runs `script` (with `arguments`) in the dovecot container; its stdout.
    async fn doveadm(
        &self,
        id: &str,
        script: &str,
        arguments: &[String],
    ) -> Result<String, String> {
        let command: Vec<&str> = ["sh", "-c", script, DOVECOT_CONF]
            .into_iter()
            .chain(arguments.iter().map(String::as_str))
            .collect();
        let (output, finished) = self
            .engine
            .exec_capture(id, &command, b"")
            .await
            .map_err(|e| e.to_string())?;
        if finished.exit_code != 0 {
            return Err(format!("doveadm: {}", finished.last_error_line()));
        }
        Ok(String::from_utf8_lossy(&output).into_owned())
    }

    /// The redis step: the restored `dump.rdb` loaded by a throwaway Redis, its DKIM keys.
    async fn redis(&self) -> StepReport {
        let mut step = Step::new("redis");
        let redis = Component::Redis.archive_dir();
        if !self.summary.components.contains_key(redis) {
            return Step::skipped("redis", "the archive holds no redis");
        }
        let Some(image) = self.image_of("redis-mailcow") else {
            return Step::skipped("redis", "no redis-mailcow container to take the image from");
        };
        (self.say)("loading the restored dump.rdb in a throwaway Redis without network");
        let dir = format!("{RESTORED}/{redis}");
        let command = [
            "redis-server",
            "--dir",
            &dir,
            "--dbfilename",
            "dump.rdb",
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
        ];
        let spec = ThrowawaySpec {
            image: image.into(),
            command: command.map(String::from).to_vec(),
            mounts: vec![HelperMount::Volume {
                name: self.files_volume.clone(),
                target: RESTORED.into(),
                read_only: true,
            }],
            // Root reading the dump of Redis' own user.
            capabilities: vec!["DAC_OVERRIDE".into()],
            labels: self.labels.clone(),
            limits: self.options.access.limits,
        };
        let id = match self.engine.start_throwaway(&spec).await {
            Ok(id) => id,
            Err(e) => {
                step.note(Status::Failed, e.to_string());
                return step.end();
            }
        };
        let cli = async |commands: &str| -> Option<Vec<String>> {
            let (output, finished) = self
                .engine
                .exec_capture(&id, &["redis-cli"], commands.as_bytes())
                .await
                .ok()?;
            (finished.exit_code == 0).then(|| {
                String::from_utf8_lossy(&output)
                    .lines()
                    .map(|l| l.trim().to_string())
                    .collect()
            })
        };
        let ready = self
            .wait_ready(&id, "Redis", async || {
                cli("PING\n").await.is_some_and(|r| r == ["PONG"])
            })
            .await;
        if let Err(e) = ready {
            step.note(
                Status::Failed,
                format!("the restored dump.rdb does not load: {e}"),
            );
            return step.end();
        }
        let answers = cli("DBSIZE\nTYPE DKIM_PRIV_KEYS\nHLEN DKIM_PRIV_KEYS\n").await;
        match answers.as_deref() {
            Some([keys, kind, length]) => {
                if let Ok(keys) = keys.parse() {
                    step.figure("keys", keys);
                }
                match kind.as_str() {
                    "none" => step.note(
                        Status::Warning,
                        "the restored Redis has no DKIM_PRIV_KEYS: mailcow's DKIM keys are not in this archive",
                    ),
                    "hash" => {
                        if let Ok(length) = length.parse() {
                            step.figure("dkim_keys", length);
                        }
                    }
                    // Anything else holds them too, in a form this drill does not count.
                    _ => {}
                }
            }
            other => step.note(
                Status::Failed,
                format!("unexpected answer of the throwaway Redis: {other:?}"),
            ),
        }
        step.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_spread_over_the_mails_and_never_more_than_there_are() {
        assert_eq!(sample(10, Sample::PerMailbox(3)), [0, 4, 9]);
        assert_eq!(sample(3, Sample::PerMailbox(10)), [0, 1, 2]);
        assert_eq!(sample(5, Sample::PerMailbox(1)), [0]);
        assert_eq!(sample(5, Sample::PerMailbox(0)), Vec::<usize>::new());
        assert_eq!(sample(0, Sample::PerMailbox(4)), Vec::<usize>::new());
        assert_eq!(sample(4, Sample::All), [0, 1, 2, 3]);
    }

    #[test]
    fn the_failed_uid_is_read_from_dovecots_message() {
        let line = "doveadm(u1@example.org): Error: fetch(text) failed for box=My uid=7 box uid=12: Mailbox x: UID=12: read() failed";
        assert_eq!(failed_uid(line), Some(12));
        assert_eq!(failed_uid("no uid here"), None);
    }

    #[test]
    fn the_keys_are_configured_only_when_the_archive_has_them() {
        let with = dovecot_config("Maildir", true);
        assert!(with.contains("mail_crypt_global_private_key = </drill/crypt/ecprivkey.pem"));
        assert!(with.contains("mail_location = maildir:~/Maildir:INDEX=/tmp/"));
        let without = dovecot_config("", false);
        assert!(!without.contains("mail_crypt_global_private_key"));
        assert!(without.contains("maildir:~/:INDEX"));
    }

    #[test]
    fn skipped_steps_do_not_make_a_drill_worse() {
        let step = |status| StepReport {
            name: "x".into(),
            status,
            figures: BTreeMap::new(),
            messages: Vec::new(),
            seconds: 0.0,
        };
        let report = |statuses: &[Status]| DrillReport {
            archive: "a".into(),
            steps: statuses.iter().map(|s| step(*s)).collect(),
            seconds: 0.0,
        };
        assert_eq!(report(&[Status::Ok, Status::Skipped]).status(), Status::Ok);
        assert_eq!(
            report(&[Status::Warning, Status::Skipped]).status(),
            Status::Warning
        );
        assert_eq!(
            report(&[Status::Failed, Status::Warning]).status(),
            Status::Failed
        );
    }
}

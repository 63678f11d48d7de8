//! The config file of the mailcow commands, `/etc/mailcow-borg/config.toml` by default:
//!
//! ```toml
//! repository = "ssh://u123456@u123456.your-storagebox.de:23/./mailcow"
//! passphrase_file = "/etc/mailcow-borg/passphrase"   # the repository's passphrase
//! ssh_key = "/etc/mailcow-borg/id_ed25519"
//! known_hosts = "/etc/mailcow-borg/known_hosts"
//! # optional, with their defaults:
//! mailcow_dir = "/opt/mailcow-dockerized"
//! state_dir = "/var/lib/mailcow-borg"                # caches and borg's security dir
//! components = ["vmail", "crypt", "vmail-index", "redis", "rspamd", "postfix", "mysql", "sogo", "config"]
//! exclude = []                                       # borg patterns on archive paths
//! compression = "lz4"
//! archive_name = "{hostname}-mailcow-{now}"
//! metrics_file = "/var/lib/prometheus/node-exporter/mailcow_borg.prom"  # Prometheus metrics
//!                                                    # after each backup (none by default)
//!
//! [retention]                                        # optional: prune after each backup
//! keep_daily = 7
//! keep_weekly = 4
//! keep_monthly = 6
//! compact = "always"                                 # or "never", or an interval: "7d"
//!
//! [check]                                            # optional: checks after each backup
//! repository = "7d"                                  # always, never, or an interval
//! archives = "7d"
//! data = "5%"                                        # a share of the objects per backup, or an interval
//! drill = "30d"
//! drill_sample = 10                                  # mails read per mailbox by the drill
//!
//! [notify.healthchecks]                              # optional: tell how runs went
//! url = "https://hc-ping.com/…"                      # (all kinds: crate::notify::config)
//! ```
//!
//! More keys: `ssh_key_passphrase_file`, `key_file` (keyfile repositories), `remote_path`,
//! `lock_wait`, `server_timeout`, `checkpoint_interval`, `upload_ratelimit` (kiB/s), `retries`,
//! `retry_wait` (seconds), `helper_image`, `helper_network`,
//! `helper_memory_mib`, `helper_pids`. Unknown keys and wrong
//! types are errors that name the key and the file. Environment variables and flags override
//! the file (see `backup --help`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::mailcow::components::{Component, UnknownComponent};
use crate::mailcow::retention::Keep;
use crate::mailcow::schedule::{CheckSchedule, DataCheck, When};
use crate::notify::NotifyConfig;
use crate::notify::config::NotifyTable;
use crate::ops::prune::{Period, PruneRules, RulesError};

pub const DEFAULT_CONFIG: &str = "/etc/mailcow-borg/config.toml";
pub const DEFAULT_MAILCOW_DIR: &str = "/opt/mailcow-dockerized";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mailcow-borg";
pub const DEFAULT_ARCHIVE_NAME: &str = "{hostname}-mailcow-{now}";

/// The file's keys; every one optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub repository: Option<String>,
    pub passphrase_file: Option<PathBuf>,
    pub ssh_key: Option<PathBuf>,
    pub ssh_key_passphrase_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub remote_path: Option<String>,
    pub mailcow_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub components: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub compression: Option<String>,
    pub archive_name: Option<String>,
    pub lock_wait: Option<u64>,
    pub server_timeout: Option<u64>,
    pub checkpoint_interval: Option<u64>,
    /// kiB/s at most sent to the repository (borg's `--upload-ratelimit`); 0: no limit.
    pub upload_ratelimit: Option<u64>,
    /// How often a backup whose connection failed or dropped is tried again.
    pub retries: Option<u32>,
    /// Seconds between those tries.
    pub retry_wait: Option<u64>,
    pub helper_image: Option<String>,
    pub helper_network: Option<String>,
    pub helper_memory_mib: Option<u32>,
    pub helper_pids: Option<u32>,
    /// Where each backup run leaves its metrics for node_exporter's textfile collector.
    pub metrics_file: Option<PathBuf>,
    #[serde(rename = "retention")]
    retention_table: Option<RetentionTable>,
    /// `[retention]`, checked.
    #[serde(skip)]
    pub retention: Option<Retention>,
    #[serde(rename = "check")]
    check_table: Option<CheckTable>,
    #[serde(rename = "notify")]
    notify_table: Option<NotifyTable>,
    /// `[notify]`, checked: where runs tell how they went.
    #[serde(skip)]
    pub notify: Option<NotifyConfig>,
    /// `[check]`, checked.
    #[serde(skip)]
    pub check: Option<CheckSchedule>,
}

/// `[check]` as written: how often each check runs after a backup.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckTable {
    repository: Option<String>,
    archives: Option<String>,
    data: Option<String>,
    drill: Option<String>,
    drill_sample: Option<u32>,
}

/// Mails read per mailbox by a scheduled drill unless `drill_sample` says otherwise.
pub const DEFAULT_DRILL_SAMPLE: u32 = 10;

impl CheckTable {
    /// The table checked; a key left out is never run. The message names the key.
    fn checked(self) -> Result<CheckSchedule, String> {
        fn when(key: &str, text: Option<String>) -> Result<When, String> {
            text.map_or(Ok(When::Never), |t| {
                t.parse().map_err(|e| format!("check: {key}: {e}"))
            })
        }
        let data = match self.data {
            Some(text) => text.parse().map_err(|e| format!("check: data: {e}"))?,
            None => DataCheck::Whole(When::Never),
        };
        if self.drill_sample == Some(0) {
            return Err("check: drill_sample: 0 reads no mail; give at least 1".into());
        }
        Ok(CheckSchedule {
            repository: when("repository", self.repository)?,
            archives: when("archives", self.archives)?,
            data,
            drill: when("drill", self.drill)?,
            drill_sample: self.drill_sample.unwrap_or(DEFAULT_DRILL_SAMPLE),
        })
    }
}

/// `[retention]` as written: prune's rules under their borg names, and `compact`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionTable {
    keep_within: Option<String>,
    keep_last: Option<i64>,
    keep_secondly: Option<i64>,
    keep_minutely: Option<i64>,
    keep_hourly: Option<i64>,
    keep_daily: Option<i64>,
    keep_weekly: Option<i64>,
    keep_monthly: Option<i64>,
    keep_13weekly: Option<i64>,
    keep_3monthly: Option<i64>,
    keep_yearly: Option<i64>,
    compact: Option<String>,
}

/// What `backup` does after a good archive: prune the archives of its own name by these
/// rules, then compact when due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    pub keep_within: Option<String>,
    pub keeps: Vec<Keep>,
    pub compact: When,
}

/// The `[retention]` key of each period rule (`keep_secondly` is the same rule as `keep_last`,
/// which is what admins write).
pub fn rule_key(period: Period) -> &'static str {
    match period {
        Period::Secondly => "keep_last",
        Period::Minutely => "keep_minutely",
        Period::Hourly => "keep_hourly",
        Period::Daily => "keep_daily",
        Period::Weekly => "keep_weekly",
        Period::Monthly => "keep_monthly",
        Period::Quarterly13Weekly => "keep_13weekly",
        Period::Quarterly3Monthly => "keep_3monthly",
        Period::Yearly => "keep_yearly",
    }
}

impl RetentionTable {
    /// The table checked as prune checks its flags; the message names the key.
    fn checked(self) -> Result<Retention, String> {
        if self.keep_last.is_some() && self.keep_secondly.is_some() {
            return Err(
                "retention: keep_last and keep_secondly are the same rule; give one of them".into(),
            );
        }
        let keeps: Vec<Keep> = [
            (Period::Secondly, self.keep_last.or(self.keep_secondly)),
            (Period::Minutely, self.keep_minutely),
            (Period::Hourly, self.keep_hourly),
            (Period::Daily, self.keep_daily),
            (Period::Weekly, self.keep_weekly),
            (Period::Monthly, self.keep_monthly),
            (Period::Quarterly13Weekly, self.keep_13weekly),
            (Period::Quarterly3Monthly, self.keep_3monthly),
            (Period::Yearly, self.keep_yearly),
        ]
        .into_iter()
        .filter_map(|(period, count)| {
            Some(Keep {
                period,
                count: count?,
            })
        })
        .collect();
        PruneRules::new(
            self.keep_within.as_deref(),
            keeps.iter().map(|k| (k.period, k.count)),
        )
        .map_err(|e| match e {
            RulesError::NoRule => "retention: no rule given: set at least one of keep_within, keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly (or keep_secondly, keep_minutely, keep_13weekly, keep_3monthly)".to_string(),
            RulesError::BothQuarterly => "retention: keep_13weekly and keep_3monthly are two strategies for the same quarters; use one of them".to_string(),
            RulesError::Within(e) => format!("retention: keep_within: {e}"),
        })?;
        let compact = match &self.compact {
            Some(text) => text
                .parse()
                .map_err(|e| format!("retention: compact: {e}"))?,
            None => When::default(),
        };
        Ok(Retention {
            keep_within: self.keep_within,
            keeps,
            compact,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {detail}")]
    Unreadable { path: String, detail: String },
    #[error("{path}: {detail}")]
    Invalid { path: String, detail: String },
}

impl ConfigFile {
    /// Reads `path`; a missing file at the default path is an empty config (flags and the
    /// environment may say everything), anywhere else it is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<ConfigFile, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(ConfigFile::default());
            }
            Err(e) => {
                return Err(ConfigError::Unreadable {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                });
            }
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid {
            path: path.display().to_string(),
            detail,
        };
        let mut config: ConfigFile =
            toml::from_str(text).map_err(|e| invalid(one_line_toml_error(&e, text)))?;
        config.retention = config
            .retention_table
            .take()
            .map(RetentionTable::checked)
            .transpose()
            .map_err(invalid)?;
        config.check = config
            .check_table
            .take()
            .map(CheckTable::checked)
            .transpose()
            .map_err(invalid)?;
        config.notify = config
            .notify_table
            .take()
            .map(NotifyTable::checked)
            .transpose()
            .map_err(invalid)?;
        if let Some(components) = &config.components {
            for name in components {
                name.parse::<Component>()
                    .map_err(|e| invalid(format!("components: {e}")))?;
            }
        }
        Ok(config)
    }
}

/// toml's message as one line: where, which key, and what is wrong.
fn one_line_toml_error(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim().replace('\n', " ");
    let Some(span) = error.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let number = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(number - 1).unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) if !message.contains('`') => {
            format!("line {number}: {}: {message}", key.trim())
        }
        _ => format!("line {number}: {message}"),
    }
}

/// The components named in the config or flags; all when none are named. `vmail` brings
/// `crypt`: mail without its keys cannot be read.
pub fn components(names: &[String]) -> Result<Vec<Component>, UnknownComponent> {
    let mut chosen: Vec<Component> = if names.is_empty() {
        Component::ALL.to_vec()
    } else {
        names.iter().map(|n| n.parse()).collect::<Result<_, _>>()?
    };
    if chosen.contains(&Component::Vmail) && !chosen.contains(&Component::Crypt) {
        chosen.push(Component::Crypt);
    }
    chosen.sort();
    chosen.dedup();
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_parses() {
        let text = r#"
repository = "ssh://u1@host:23/./mailcow"
passphrase_file = "/etc/mailcow-borg/passphrase"
components = ["vmail", "mysql"]
exclude = ["vmail/_garbage"]
lock_wait = 60
metrics_file = "/var/lib/prometheus/node-exporter/mailcow_borg.prom"
"#;
        let config = ConfigFile::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!(
            config.repository.as_deref(),
            Some("ssh://u1@host:23/./mailcow")
        );
        assert_eq!(config.lock_wait, Some(60));
        assert_eq!(
            config.metrics_file.unwrap(),
            Path::new("/var/lib/prometheus/node-exporter/mailcow_borg.prom")
        );
        assert_eq!(config.exclude.unwrap(), ["vmail/_garbage"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_the_file() {
        let e = ConfigFile::parse("repository = \"r\"\nrepo = \"x\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml: line 2: unknown field `repo`"), "{e}");
        let e = ConfigFile::parse("lock_wait = \"soon\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.toml: line 1: lock_wait: invalid type"),
            "{e}"
        );
        let e = ConfigFile::parse("components = [\"mail\"]\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.toml: components: unknown component \"mail\""),
            "{e}"
        );
    }

    #[test]
    fn retention_is_checked_at_load_and_names_the_key() {
        let path = Path::new("c.toml");
        let config =
            ConfigFile::parse("[retention]\nkeep_last = 2\nkeep_within = \"1d\"\n", path).unwrap();
        assert_eq!(
            config.retention,
            Some(Retention {
                keep_within: Some("1d".into()),
                keeps: vec![Keep {
                    period: Period::Secondly,
                    count: 2
                }],
                compact: When::Always,
            })
        );
        assert_eq!(ConfigFile::parse("", path).unwrap().retention, None);
        let refused = |text: &str| ConfigFile::parse(text, path).unwrap_err().to_string();
        let e = refused("[retention]\nkeep_dayly = 7\n");
        assert!(
            e.starts_with("c.toml: line 2: unknown field `keep_dayly`"),
            "{e}"
        );
        let e = refused("[retention]\ncompact = \"never\"\n");
        assert!(e.starts_with("c.toml: retention: no rule given"), "{e}");
        let e = refused("[retention]\nkeep_13weekly = 1\nkeep_3monthly = 1\n");
        assert!(
            e.starts_with("c.toml: retention: keep_13weekly and keep_3monthly"),
            "{e}"
        );
        let e = refused("[retention]\nkeep_within = \"3x\"\n");
        assert!(
            e.starts_with("c.toml: retention: keep_within: Unexpected interval"),
            "{e}"
        );
        let e = refused("[retention]\nkeep_daily = 1\ncompact = \"weekly\"\n");
        assert!(
            e.starts_with("c.toml: retention: compact: \"weekly\" is not"),
            "{e}"
        );
        let e = refused("[retention]\nkeep_last = 1\nkeep_secondly = 1\n");
        assert!(e.contains("the same rule"), "{e}");
    }

    #[test]
    fn check_is_checked_at_load_and_names_the_key() {
        let path = Path::new("c.toml");
        let config = ConfigFile::parse(
            "[check]\nrepository = \"7d\"\ndata = \"5%\"\ndrill = \"30d\"\n",
            path,
        )
        .unwrap();
        assert_eq!(
            config.check,
            Some(CheckSchedule {
                repository: When::Every {
                    amount: 7,
                    unit: 'd'
                },
                archives: When::Never,
                data: DataCheck::Share(5),
                drill: When::Every {
                    amount: 30,
                    unit: 'd'
                },
                drill_sample: DEFAULT_DRILL_SAMPLE,
            })
        );
        assert_eq!(ConfigFile::parse("", path).unwrap().check, None);
        let refused = |text: &str| ConfigFile::parse(text, path).unwrap_err().to_string();
        let e = refused("[check]\ndata = \"150%\"\n");
        assert!(e.starts_with("c.toml: check: data: \"150%\" is not"), "{e}");
        let e = refused("[check]\ndrill = \"monthly\"\n");
        assert!(
            e.starts_with("c.toml: check: drill: \"monthly\" is not"),
            "{e}"
        );
        let e = refused("[check]\ndrill_sample = 0\n");
        assert!(e.contains("drill_sample"), "{e}");
        let e = refused("[check]\nverify = \"always\"\n");
        assert!(e.contains("verify"), "{e}");
    }

    #[test]
    fn vmail_brings_its_keys() {
        assert_eq!(
            components(&["vmail".into()]).unwrap(),
            [Component::Vmail, Component::Crypt]
        );
        assert_eq!(components(&[]).unwrap(), Component::ALL);
    }
}

//! `mailcow-borg config check`: everything a backup needs, checked now, and what a backup would
//! do — for the admin who just wrote the config, and for monitoring. It reads the config,
//! reaches Docker, finds mailcow and each component's volume, looks for the mail_crypt keys,
//! finds the dump tool, opens the repository (from this host, with the helper's security dir),
//! and says whether the helper image exists. The first problem ends it with exit code 2.

use std::io::Write;

use clap::{Args, Subcommand};

use super::Outcome;
use super::access::{AccessArgs, in_state_dir, parse_location, runtime, with_repository};
use super::backup::{BackupSettingsArgs, lock_host, options, start_what_a_dead_restore_stopped};
use super::config;
use crate::docker::Engine;
use crate::format::manifest::Operation;
use crate::mailcow::access::HelperAccess;
use crate::mailcow::backup::OutputOptions;
use crate::mailcow::components::{CONFIG_PATHS, Component};
use crate::mailcow::conf::MailcowConf;
use crate::mailcow::crypt_keys::{self, CRYPT_KEYS, KeyFile};
use crate::mailcow::discover::{Found, discover};
use crate::mailcow::mysql::{self, Login, dump_tool};
use crate::ops::open::AccessOptions;
use crate::repo::location::Location;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check the config, Docker, mailcow and the repository; print what a backup would do.
    Check(Box<CheckArgs>),
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    settings: BackupSettingsArgs,
}

pub fn run(command: ConfigCommand) -> anyhow::Result<Outcome> {
    let ConfigCommand::Check(args) = command;
    let (options, reporting) = options(&args.settings, OutputOptions::default())?;
    let conf = MailcowConf::load(&options.mailcow_dir)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "config: ok")?;
    writeln!(
        out,
        "mailcow: {} (project {})",
        conf.path.display(),
        conf.project
    )?;
    runtime()?.block_on(async {
        let engine = Engine::connect().await?;
        writeln!(
            out,
            "docker: {} (engine {})",
            engine.endpoint(),
            engine.version().await?
        )?;
        // Only when no backup or restore runs now: one that does may have stopped services on
        // purpose.
        if let Some(_lock) = lock_host(&options.access, std::time::Duration::ZERO)? {
            start_what_a_dead_restore_stopped(&engine, &options.access, &conf).await?;
        }
        let found = discover(&engine, &conf, &options.components).await?;
        for component in &options.components {
            let what = match component {
                Component::Mysql => {
                    let mysql = found.mysql.as_ref().expect("discovered");
                    let tool = dump_tool(&engine, mysql).await?;
                    // The backup dumps as DBUSER; a restore imports as root.
                    let client = mysql::client_tool(&engine, mysql).await?;
                    for login in [Login::mailcow(&conf), Login::root(&conf)] {
                        mysql::check_login(&engine, mysql, client, login).await?;
                    }
                    format!(
                        "{tool} of database {} in {} (DBUSER and DBROOT log in)",
                        conf.db_name, mysql.name
                    )
                }
                Component::Config => {
                    let present: Vec<&str> = CONFIG_PATHS
                        .into_iter()
                        .filter(|p| options.mailcow_dir.join(p).exists())
                        .collect();
                    format!(
                        "{} from {}",
                        present.join(", "),
                        options.mailcow_dir.display()
                    )
                }
                Component::Redis => format!(
                    "SAVE in {}, then volume {}",
                    found.redis.as_ref().expect("discovered").name,
                    found.volumes[component]
                ),
                _ => format!("volume {}", found.volumes[component]),
            };
            writeln!(out, "  {:<12} {what}", component.name())?;
        }
        check_crypt_keys(&engine, &found).await?;
        writeln!(out, "  mail_crypt keys: present")?;
        let (location, access) = repository_access(&options.access)?;
        let (server, archives) =
            with_repository(&location, &access, Operation::Read, async |repo| {
                Ok((repo.server_version, repo.manifest.archives.len()))
            })
            .await?;
        writeln!(
            out,
            "repository: {} (borg {}.{}.{} serves it; {archives} archives)",
            options.access.repository, server.0, server.1, server.2,
        )?;
        let image = match &options.access.helper_image {
            Some(image) => format!("{image} (given)"),
            None => "made from this executable on the first backup, then reused".into(),
        };
        writeln!(out, "helper image: {image}")?;
        writeln!(out, "archive name: {}", options.archive)?;
        let retention = &options.retention;
        if let Some(glob) = &retention.prune_glob {
            let rules: Vec<String> = retention
                .keep_within
                .iter()
                .map(|w| format!("keep_within = {w}"))
                .chain(
                    retention
                        .keeps
                        .iter()
                        .map(|k| format!("{} = {}", config::rule_key(k.period), k.count)),
                )
                .collect();
            writeln!(
                out,
                "retention: after each backup, prune the archives matching {glob} ({}); compact = {}",
                rules.join(", "),
                retention.compact
            )?;
        }
        if let Some(check) = &options.check {
            writeln!(
                out,
                "checks after a backup: repository = {}, archives = {}, data = {}, drill = {} ({} mails per mailbox)",
                check.repository, check.archives, check.data, check.drill, check.drill_sample
            )?;
        }
        if let Some(path) = &reporting.metrics_file {
            writeln!(out, "metrics file: {}", path.display())?;
        }
        if let Some(notify) = &reporting.notify {
            notify
                .check_files()
                .map_err(|e| anyhow::anyhow!("notify: {e}"))?;
            writeln!(out, "notify (each call at most {} s):", notify.timeout.as_secs())?;
            for line in notify.lines() {
                writeln!(out, "  {line}")?;
            }
        }
        writeln!(out, "state dir: {}", options.access.state_dir.display())?;
        Ok(Outcome::Ok)
    })
}

/// The mail_crypt keys, seen through dovecot-mailcow's file system (no command run).
async fn check_crypt_keys(engine: &Engine, found: &Found) -> anyhow::Result<()> {
    // Without the container (its volume found by name), the helper checks the keys there.
    let Some(dovecot) = &found.dovecot else {
        return Ok(());
    };
    let mut key_files = Vec::new();
    for name in CRYPT_KEYS {
        let path = format!("/mail_crypt/{name}");
        let file = KeyFile::of_size(engine.file_size(&dovecot.id, &path).await?);
        key_files.push((path, file));
    }
    crypt_keys::require_for_backup(key_files, &dovecot.name)
        .map_err(|e| anyhow::anyhow!("{e}; restore the keys before backing up"))
}

/// The repository as the helper opens it: the same access, key and known_hosts, and the state
/// dir's security dir (where the helper keeps it).
pub(super) fn repository_access(
    options: &HelperAccess,
) -> anyhow::Result<(Location, AccessOptions)> {
    let location = parse_location(Some(&options.repository))?;
    let mut access = AccessArgs::from(&options.repository_access).to_options()?;
    in_state_dir(&mut access, &options.state_dir);
    if options.key_file.is_some() {
        access.key_file = options.key_file.clone();
    }
    Ok((location, access))
}

//! `mailcow-borg restore [ARCHIVE|latest]`: restore this host's mailcow from an archive that
//! `backup` wrote — all of it, some components, or some mailboxes and domains. It prints the
//! plan first and asks (or needs `--yes`); `--dry-run` prints the plan and stops.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::Outcome;
use super::access::runtime;
use super::backup::{host_lock, start_what_a_dead_restore_stopped};
use super::human;
use super::mail_filter::MailFilterArgs;
use super::run_log::RunLog;
use super::settings::{Settings, SettingsArgs, settings};
use super::signals::{self, Interrupted};
use crate::docker::Engine;
use crate::mailcow::access::HelperAccess;
use crate::mailcow::components::UnknownComponent;
use crate::mailcow::conf::MailcowConf;
use crate::mailcow::restore::{
    Prepared, RestoreError, RestoreOptions, RestoreReport, execute, prepare,
};
use crate::mailcow::restore_plan::{
    ConfigTarget, Force, MailMode, MailRequest, RestoreRequest, Resync, Scope,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Check {
    /// Restore mail although the archive's mail_crypt keys are missing or differ.
    CryptKeys,
    /// Restore mail made under another MAILDIR_SUB.
    MaildirSub,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The archive: its name, or `latest` (the newest, not a checkpoint).
    #[arg(default_value = "latest")]
    archive: String,
    #[command(flatten)]
    settings: SettingsArgs,
    /// Restore only this component (repeatable): vmail, crypt, vmail-index, redis, rspamd,
    /// postfix, mysql, sogo, config. Default: everything the archive holds.
    #[arg(long = "component", value_name = "NAME")]
    components: Vec<String>,
    /// Restore only this mailbox's mail (repeatable): merged into the live mailbox, nothing
    /// live removed or changed; dovecot keeps running.
    #[arg(long = "mailbox", value_name = "USER@DOMAIN")]
    mailboxes: Vec<String>,
    /// Restore only this domain's mail (repeatable), merged like --mailbox.
    #[arg(long = "domain", value_name = "DOMAIN")]
    domains: Vec<String>,
    /// Make the mailboxes and domains equal to the archive instead of merging: mail that
    /// arrived since the archive is REMOVED.
    #[arg(long)]
    mirror: bool,
    #[command(flatten)]
    filter: MailFilterArgs,
    /// Put the selected mail into a new folder (default: "Restored <archive date>"),
    /// subscribed; every existing folder stays as it is.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    into_folder: Option<String>,
    /// Restore the --mailbox's mail into this other mailbox (into a new folder, see
    /// --into-folder, unless --keep-folders); it must exist, and the archive's mail_crypt keys
    /// must be this mailcow's.
    #[arg(long, value_name = "USER@DOMAIN")]
    to: Option<String>,
    /// With --to: into the folders of the same names, not into a new one.
    #[arg(long)]
    keep_folders: bool,
    /// Print the plan and change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Do not ask before restoring (needed when stdin is not a terminal).
    #[arg(short = 'y', long)]
    yes: bool,
    /// Skip a safety check (repeatable, or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "CHECK")]
    force: Vec<Check>,
    /// Write the archived configuration over the live one (mailcow.conf is kept as
    /// mailcow.conf.before-restore-<time>). Default: into a directory of its own.
    #[arg(long, conflicts_with = "config_dir")]
    config_in_place: bool,
    /// Where the archived configuration goes (default: <state dir>/restored-config/<archive>).
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
}

pub fn run(args: RestoreArgs) -> anyhow::Result<Outcome> {
    let Settings {
        file,
        mailcow_dir,
        access,
    } = settings(&args.settings)?;
    // A dry run only shows a plan: nothing to tell anyone.
    let notify = file.notify.filter(|_| !args.dry_run);
    let log = RunLog::begin("restore", notify);
    let archive = Some(args.archive.clone());
    log.end(archive, None, None, restore(args, mailcow_dir, access))
}

fn restore(
    args: RestoreArgs,
    mailcow_dir: PathBuf,
    access: HelperAccess,
) -> anyhow::Result<Outcome> {
    // As named: unlike a backup's, a restore's vmail does not bring crypt along (the target's
    // keys may be the right ones), and the plan checks the keys either way.
    let mut components = args
        .components
        .iter()
        .map(|n| n.parse())
        .collect::<Result<Vec<_>, UnknownComponent>>()?;
    components.sort();
    components.dedup();
    let request = RestoreRequest {
        archive: args.archive.clone(),
        components,
        mailboxes: args.mailboxes.clone(),
        domains: args.domains.clone(),
        force: Force {
            crypt_keys: args.force.contains(&Check::CryptKeys),
            maildir_sub: args.force.contains(&Check::MaildirSub),
        },
        mail: MailRequest {
            mode: if args.mirror {
                MailMode::Mirror
            } else {
                MailMode::Merge
            },
            filter: args.filter.filter()?,
            into_folder: args
                .into_folder
                .clone()
                .map(|name| Some(name).filter(|n| !n.is_empty())),
            to: args.to.clone(),
            keep_folders: args.keep_folders,
        },
        config: if args.config_in_place {
            ConfigTarget::InPlace
        } else {
            // Settled once the archive's name is known.
            ConfigTarget::Directory(args.config_dir.clone().unwrap_or_default())
        },
    };
    let options = RestoreOptions {
        mailcow_dir,
        access,
    };
    let _lock = host_lock(&options.access)?;
    let conf = MailcowConf::load(&options.mailcow_dir)?;
    runtime()?.block_on(async {
        let (stop_tx, mut stop) = tokio::sync::watch::channel(None);
        signals::pass_on(
            stop_tx,
            "stopping; the services stopped for the restore are started again",
        )?;
        let engine = Engine::connect().await?;
        // A dry run changes nothing, not even that.
        if !args.dry_run {
            start_what_a_dead_restore_stopped(&engine, &options.access, &conf).await?;
        }
        let mut prepared = match prepare(&engine, &options, &conf, &request, &mut stop).await {
            Err(RestoreError::Stopped(signal)) => {
                return Err(Interrupted::by(signal, "nothing was changed").into());
            }
            other => other?,
        };
        if args.config_dir.is_none()
            && let ConfigTarget::Directory(dir) = &mut prepared.plan.config
        {
            *dir = options
                .access
                .state_dir
                .join("restored-config")
                .join(file_name_for(&prepared.plan.archive));
        }
        print_plan(&prepared, &options, &conf)?;
        if args.dry_run {
            say!("dry run: nothing was changed");
            return Ok(Outcome::Ok);
        }
        confirm(args.yes)?;
        let started = std::time::Instant::now();
        let say = |line: &str| {
            say!(
                "mailcow-borg: [{:>5.1} s] {line}",
                started.elapsed().as_secs_f64()
            )
        };
        let report = execute(&engine, &options, &conf, &prepared, stop, &say).await;
        finish(&report)
    })
}

/// Asks on the terminal unless `--yes`; refuses without a terminal to ask on.
fn confirm(yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "refusing to restore without --yes: stdin is not a terminal to ask on (check the plan above, or with --dry-run, then run again with --yes)"
        );
    }
    say_part!("Restore as planned above? Type yes to go on: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        anyhow::bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

/// The plan, on stdout: what is stopped, overwritten, removed and started.
fn print_plan(
    prepared: &Prepared,
    options: &RestoreOptions,
    conf: &MailcowConf,
) -> anyhow::Result<()> {
    let plan = &prepared.plan;
    let summary = &prepared.summary;
    let mut out = std::io::stdout().lock();
    let origin = match &summary.origin {
        Some(o) => format!(
            "project {}, {}, MAILDIR_SUB={}",
            o.project,
            o.arch,
            if o.maildir_sub.is_empty() {
                "(empty)"
            } else {
                &o.maildir_sub
            }
        ),
        None => "not written by mailcow-borg backup".into(),
    };
    writeln!(
        out,
        "Restore plan: archive {} (made {} UTC on {}; {origin})",
        plan.archive,
        summary.time.chars().take(19).collect::<String>(),
        summary.hostname
    )?;
    writeln!(
        out,
        "  into mailcow project {} ({})",
        conf.project,
        conf.path.display()
    )?;
    let stopped: Vec<&str> = prepared
        .running_to_stop()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    if !stopped.is_empty() {
        writeln!(
            out,
            "  stop        {} (started again at the end, also if the restore fails)",
            stopped.join(", ")
        )?;
    }
    for step in &plan.files {
        let amount = format!(
            "{} items, {}",
            step.tally.items,
            human::size(step.tally.bytes as i128)
        );
        let line = match (&step.scope, step.component) {
            (_, crate::mailcow::components::Component::Config) => match &plan.config {
                ConfigTarget::InPlace => format!(
                    "over {} ({amount}); the old mailcow.conf is kept as mailcow.conf.before-restore-<time>",
                    options.mailcow_dir.display()
                ),
                ConfigTarget::Directory(dir) => format!(
                    "into {} ({amount}); the live configuration is not touched",
                    dir.display()
                ),
            },
            (Scope::Whole, component) => format!(
                "volume {}: made equal to the archive ({amount}); what it holds that the archive does not is removed",
                prepared.found.volumes[&component]
            ),
            (Scope::Subtrees(paths), component) => format!(
                "{} in volume {}: made equal to the archive ({amount}); mail that is not in the archive is REMOVED; the rest of the volume is not touched",
                paths.join(", "),
                prepared.found.volumes[&component]
            ),
            (Scope::Merge(paths), component) => format!(
                "{} in volume {}: merged (from {amount}); nothing live is removed or changed",
                paths.join(", "),
                prepared.found.volumes[&component]
            ),
        };
        writeln!(out, "  {:<11} {line}", step.component.name())?;
    }
    print_mail(&mut out, plan)?;
    if let (Some(dump), Some(mysql)) = (&plan.database, &prepared.found.mysql) {
        writeln!(
            out,
            "  {:<11} database {} in {}: replaced by {} ({}), imported beside it first and swapped in only once complete (as root)",
            "mysql",
            dump.database,
            mysql.name,
            dump.path,
            human::size(dump.bytes as i128),
        )?;
    }
    match &plan.resync {
        Some(Resync::All) => writeln!(
            out,
            "  then        doveadm force-resync -A '*' and doveadm quota recalc -A in dovecot-mailcow"
        )?,
        Some(Resync::Users(users)) => writeln!(
            out,
            "  then        doveadm force-resync and quota recalc for {} in dovecot-mailcow",
            users.join(", ")
        )?,
        None => {}
    }
    for skipped in &plan.skipped {
        writeln!(out, "  skipped     {skipped}")?;
    }
    for warning in &plan.warnings {
        writeln!(out, "  warning     {warning}")?;
    }
    Ok(())
}

/// The mail lines of the plan: per folder, what a merge brings back (and where to) or what a
/// mirror removes.
fn print_mail(
    out: &mut impl Write,
    plan: &crate::mailcow::restore_plan::Plan,
) -> anyhow::Result<()> {
    let mut any = false;
    for folder in &plan.mail {
        let line = match &plan.merge {
            Some(merge) => {
                let comes_back = if merge.selection.into_folder.is_some() {
                    folder.archived
                } else {
                    folder.back
                };
                if comes_back == 0 {
                    continue;
                }
                let to = merge
                    .selection
                    .to
                    .as_deref()
                    .map(crate::mailcow::mail_merge::mailbox_name);
                match (&merge.selection.into_folder, to) {
                    (Some(into), to) => format!(
                        "{} {}: {} messages into {}{into:?} (a new folder)",
                        folder.mailbox,
                        folder.folder,
                        folder.archived,
                        to.map(|t| format!("{t} ")).unwrap_or_default()
                    ),
                    (None, to) => format!(
                        "{} {}: {} of {} messages come back{}{}",
                        folder.mailbox,
                        folder.folder,
                        folder.back,
                        folder.archived,
                        to.map(|t| format!(" into {t}")).unwrap_or_default(),
                        if folder.live {
                            ""
                        } else {
                            " (the folder is made again and subscribed)"
                        }
                    ),
                }
            }
            None => {
                if folder.removed == 0 {
                    continue;
                }
                format!(
                    "{} {}: {} live messages the archive does not hold are REMOVED",
                    folder.mailbox, folder.folder, folder.removed
                )
            }
        };
        any = true;
        writeln!(out, "  {:<11} {line}", "mail")?;
    }
    if !any && plan.files.iter().any(|f| f.scope != Scope::Whole) {
        let nothing = if plan.merge.is_some() {
            "no message comes back: the live mailboxes hold every selected one"
        } else {
            "no live message is removed"
        };
        writeln!(out, "  {:<11} {nothing}", "mail")?;
    }
    Ok(())
}

/// The report as the exit code and the last lines: what was restored, what not, and the state
/// the services are in.
fn finish(report: &RestoreReport) -> anyhow::Result<Outcome> {
    for warning in &report.warnings {
        say!("mailcow-borg: warning: {warning}");
    }
    let services = if report.not_started.is_empty() {
        "every service stopped for the restore was started again".to_string()
    } else {
        format!(
            "NOT started again: {}; start them (docker compose up -d)",
            report.not_started.join("; ")
        )
    };
    if let Some(failure) = &report.failed {
        let restored = if report.restored.is_empty() {
            "nothing".to_string()
        } else {
            report.restored.join(", ")
        };
        let mut services = services;
        services[..1].make_ascii_uppercase();
        let message = format!(
            "the restore failed: {failure}. Restored: {restored}. Not restored: {}. {services}",
            report.not_restored.join(", ")
        );
        if let Some(signal) = report.interrupted {
            say!("mailcow-borg: {message}");
            return Err(Interrupted::by(signal, "the restore is incomplete (see above)").into());
        }
        anyhow::bail!(message);
    }
    if !report.not_started.is_empty() {
        anyhow::bail!("restored {}, but {services}", report.restored.join(", "));
    }
    say!(
        "mailcow-borg: restored {}; {services}",
        report.restored.join(", ")
    );
    Ok(if report.warnings.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Warning
    })
}

/// An archive name as one file name: names come from the repository, and one like `..` or with
/// a `/` must not lead a write out of the directory it is joined to.
fn file_name_for(archive: &str) -> String {
    let name: String = archive
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    match name.as_str() {
        "" | "." | ".." => format!("archive-{}", name.replace('.', "_")),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_become_one_harmless_component() {
        assert_eq!(
            file_name_for("host-mailcow-2026-12-06"),
            "host-mailcow-2026-12-06"
        );
        assert_eq!(file_name_for(".."), "archive-__");
        assert_eq!(file_name_for("."), "archive-_");
        assert_eq!(file_name_for(""), "archive-");
        assert_eq!(file_name_for("../../etc"), ".._.._etc");
        assert_eq!(file_name_for("a/b\0c"), "a_b_c");
        for name in ["..", ".", "../../etc", "/abs", "a/../b"] {
            let joined = std::path::Path::new("/state/restored-config").join(file_name_for(name));
            assert_eq!(
                joined.parent(),
                Some(std::path::Path::new("/state/restored-config")),
                "{name}"
            );
            assert!(
                !matches!(
                    joined.components().next_back(),
                    Some(std::path::Component::ParentDir | std::path::Component::CurDir)
                ),
                "{name}"
            );
        }
    }
}

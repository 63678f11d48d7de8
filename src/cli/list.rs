//! `mailcow-borg list REPO` and `list REPO::ARCHIVE [PATH...]`, in borg's default formats and
//! JSON shapes (`docs/borg-cli.md` §2.3, §2.4, §5).

use std::io::{BufWriter, Write};

use clap::Args;

use super::Outcome;
use super::access::{AccessArgs, runtime, with_repository};
use super::human;
use super::pyjson::Json;
use crate::format::item::{Item, ItemKind};
use crate::format::key::hex;
use crate::format::manifest::{ArchiveRef, Operation, parse_timestamp};
use crate::format::text::with_question_marks as remove_surrogates;
use crate::ops::open::OpenRepository;
use crate::ops::select::PathSelection;

#[derive(Args)]
pub struct ListArgs {
    /// REPOSITORY or REPOSITORY::ARCHIVE (default: BORG_REPO).
    location: Option<String>,
    /// Only items at or below these archive paths.
    paths: Vec<String>,
    /// Archives as one JSON document, in borg's shape.
    #[arg(long)]
    json: bool,
    /// Items as JSON lines, in borg's shape.
    #[arg(long)]
    json_lines: bool,
    /// Only names (archives) or paths (items).
    #[arg(long)]
    short: bool,
    #[command(flatten)]
    access: AccessArgs,
}

pub fn run(args: ListArgs) -> anyhow::Result<Outcome> {
    let (location, options) = args.access.resolve(args.location.as_deref())?;
    if location.archive.is_none() && args.json_lines {
        anyhow::bail!("--json-lines is only valid for listing archive contents, use --json");
    }
    if location.archive.is_some() && args.json {
        anyhow::bail!("--json is only valid for listing archives, use --json-lines");
    }
    // Bad patterns are reported before anything is contacted.
    let paths: Vec<Vec<u8>> = args.paths.iter().map(|p| p.as_bytes().to_vec()).collect();
    PathSelection::new(&paths)?;
    runtime()?.block_on(with_repository(
        &location,
        &options,
        Operation::Read,
        async |repo| match &location.archive {
            None => list_archives(repo, &args, &location.canonical()),
            Some(name) => list_items(repo, name, &args).await,
        },
    ))
}

/// Manifest times are UTC ISO strings; shown in local time.
fn manifest_time(text: &[u8]) -> i64 {
    parse_timestamp(text).unwrap_or(0)
}

/// An archive as borg names it in lists and messages (`format_archive`): name, local start
/// time, id.
pub fn archive_line(name: &[u8], entry: &ArchiveRef) -> String {
    human::archive_line(
        &remove_surrogates(name),
        manifest_time(&entry.time),
        &entry.id,
    )
}

fn list_archives(
    repo: &OpenRepository,
    args: &ListArgs,
    location: &str,
) -> anyhow::Result<Outcome> {
    let archives = repo.archives_by_time();
    let mut out = BufWriter::new(std::io::stdout().lock());
    if args.json {
        let list = archives
            .iter()
            .map(|(name, entry)| {
                let time = Json::str(human::iso_time_seconds(manifest_time(&entry.time)));
                Json::object([
                    ("archive", Json::str(remove_surrogates(name))),
                    ("barchive", Json::str(name)),
                    ("id", Json::str(hex(&entry.id))),
                    ("name", Json::str(remove_surrogates(name))),
                    ("start", time.clone()),
                    ("time", time),
                ])
            })
            .collect();
        let document = Json::object([
            ("archives", Json::List(list)),
            ("encryption", encryption_json(repo)),
            ("repository", repository_json(repo, location)),
        ]);
        writeln!(out, "{}", document.to_document(json_indent()))?;
    } else {
        for (name, entry) in archives {
            if args.short {
                writeln!(out, "{}", remove_surrogates(name))?;
            } else {
                writeln!(out, "{}", archive_line(name, entry))?;
            }
        }
    }
    out.flush()?;
    Ok(Outcome::Ok)
}

/// `BORG_JSON_INDENT`: a number, or `none` for one line; 4 by default.
pub fn json_indent() -> Option<usize> {
    match std::env::var("BORG_JSON_INDENT").ok().as_deref() {
        Some("none") => None,
        Some(n) => n.parse().ok().or(Some(4)),
        None => Some(4),
    }
}

pub fn encryption_json(repo: &OpenRepository) -> Json {
    let mut entries = vec![(
        "mode".to_string(),
        Json::str(repo.key.key_type().mode_name()),
    )];
    if let Some(path) = &repo.key_file {
        entries.push(("keyfile".into(), Json::str(path.display().to_string())));
    }
    Json::Object(entries)
}

pub fn repository_json(repo: &OpenRepository, location: &str) -> Json {
    Json::object([
        ("id", Json::str(hex(repo.repo.id()))),
        (
            "last_modified",
            Json::str(human::iso_time_seconds(manifest_time(
                &repo.manifest.timestamp,
            ))),
        ),
        ("location", Json::str(location)),
    ])
}

async fn list_items(repo: &OpenRepository, name: &str, args: &ListArgs) -> anyhow::Result<Outcome> {
    let archive = repo.archive(name).await?;
    let paths: Vec<Vec<u8>> = args.paths.iter().map(|p| p.as_bytes().to_vec()).collect();
    let mut selection = PathSelection::new(&paths)?;
    let mut batches = repo.items(&archive);
    let mut out = BufWriter::new(std::io::stdout().lock());
    while let Some(batch) = batches.recv().await {
        for item in batch? {
            if !selection.selects(&item.path) {
                continue;
            }
            if args.json_lines {
                writeln!(out, "{}", item_json(&item).to_line())?;
            } else if args.short {
                writeln!(out, "{}", remove_surrogates(&item.path))?;
            } else {
                write_item_line(&mut out, &item)?;
            }
        }
    }
    out.flush()?;
    let mut warnings = selection.unmatched_warnings();
    warnings.extend(archive.tam_warning());
    Ok(Outcome::after_warnings(&warnings))
}

/// `datetime.fromtimestamp(ns / 1e9)`, as borg turns item times into microseconds: through a
/// float, rounded half to even.
fn item_micros(ns: i64) -> i64 {
    let t = ns as f64 / 1e9;
    let whole = t.trunc();
    let micros = ((t - whole) * 1e6).round_ties_even();
    whole as i64 * 1_000_000 + micros as i64
}

/// The `mode` column: `h` marks a hardlink to an earlier item (of any type but symlink).
fn item_mode(item: &Item) -> String {
    let mode = human::filemode(item.mode.unwrap_or(0));
    if item.is_hardlink_slave() {
        format!("h{}", &mode[1..])
    } else {
        mode
    }
}

fn item_type(item: &Item) -> String {
    human::filemode(item.mode.unwrap_or(0))[..1].to_string()
}

/// borg's `Item.get_size`: the stored size; else a symlink's target length; else 0 for a
/// hardlink slave (its content is its master's); else the sum of its chunks.
fn item_size(item: &Item) -> u64 {
    if let Some(size) = item.size {
        return size;
    }
    if item.kind() == ItemKind::Symlink {
        return item.source.as_ref().map_or(0, |s| s.len() as u64);
    }
    if item.is_hardlink_slave() {
        return 0;
    }
    item.chunks_size()
}

/// `item.user or item.uid`: the name if one was stored, else the number.
fn owner(name: &Option<Option<Vec<u8>>>, id: Option<u32>) -> Json {
    match name {
        Some(Some(name)) if !name.is_empty() => Json::str(remove_surrogates(name)),
        _ => Json::Int(i128::from(id.unwrap_or(0))),
    }
}

fn item_json(item: &Item) -> Json {
    let source = remove_surrogates(item.source.as_deref().unwrap_or_default());
    Json::object([
        ("type", Json::str(item_type(item))),
        ("mode", Json::str(item_mode(item))),
        ("user", owner(&item.user, item.uid)),
        ("group", owner(&item.group, item.gid)),
        ("uid", Json::Int(i128::from(item.uid.unwrap_or(0)))),
        ("gid", Json::Int(i128::from(item.gid.unwrap_or(0)))),
        ("path", Json::str(remove_surrogates(&item.path))),
        ("healthy", Json::Bool(item.chunks_healthy.is_none())),
        ("source", Json::str(&source)),
        ("linktarget", Json::str(source)),
        ("flags", Json::Int(i128::from(item.bsdflags.unwrap_or(0)))),
        ("mtime", Json::str(human::iso_time(item_micros(item.mtime)))),
        ("size", Json::Int(i128::from(item_size(item)))),
    ])
}

/// `{mode} {user:6} {group:6} {size:8} {mtime} {path}{extra}`.
fn write_item_line(out: &mut impl Write, item: &Item) -> std::io::Result<()> {
    // Python pads a name on the right and a number on the left.
    let name = |name: &Option<Option<Vec<u8>>>, id: Option<u32>| match owner(name, id) {
        Json::Str(name) => format!("{:<6}", String::from_utf8_lossy(&name)),
        _ => format!("{:>6}", id.unwrap_or(0)),
    };
    write!(
        out,
        "{} {} {} {:>8} {} ",
        item_mode(item),
        name(&item.user, item.uid),
        name(&item.group, item.gid),
        item_size(item),
        human::time(item_micros(item.mtime)),
    )?;
    let extra = match &item.source {
        Some(source) if !source.is_empty() => {
            let arrow = if item.kind() == ItemKind::Symlink {
                " -> "
            } else {
                " link to "
            };
            format!("{arrow}{}", remove_surrogates(source))
        }
        _ => String::new(),
    };
    writeln!(out, "{}{extra}", remove_surrogates(&item.path))
}

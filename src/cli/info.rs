//! `mailcow-borg info REPO::ARCHIVE` (or `info REPO` for every archive), in borg's text and JSON
//! shapes (`docs/borg-cli.md` §2.5, §9.3).

use std::io::Write;

use clap::Args;

use super::Outcome;
use super::access::{AccessArgs, runtime, with_repository};
use super::human;
use super::list::{encryption_json, json_indent, repository_json};
use super::pyjson::Json;
use crate::format::MAX_DATA_SIZE;
use crate::format::archive::ArchiveMeta;
use crate::format::key::hex;
use crate::format::manifest::{Operation, parse_timestamp};
use crate::ops::open::OpenRepository;
use crate::ops::stats::{ArchiveStats, RepoStats};

#[derive(Args)]
pub struct InfoArgs {
    /// REPOSITORY::ARCHIVE, or REPOSITORY for the repository (default: BORG_REPO).
    location: Option<String>,
    /// One JSON document, in borg's shape.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    access: AccessArgs,
}

/// One archive as `info` shows it.
struct Shown {
    id: [u8; 32],
    meta: ArchiveMeta,
    stats: ArchiveStats,
}

pub fn run(args: InfoArgs) -> anyhow::Result<Outcome> {
    let (location, options) = args.access.resolve(args.location.as_deref())?;
    let work = async |repo: &mut OpenRepository| {
        let names: Vec<String> = location.archive.iter().cloned().collect();
        let mut shown = Vec::new();
        let mut warnings = Vec::new();
        for name in &names {
            let archive = repo.archive(name).await?;
            warnings.extend(archive.tam_warning());
            shown.push((archive.id, archive.meta));
        }
        let report = repo.statistics(&names).await?;
        let shown: Vec<Shown> = shown
            .into_iter()
            .zip(&names)
            .map(|((id, meta), name)| Shown {
                id,
                meta,
                stats: report.archives[name],
            })
            .collect();
        let totals = report.repo;
        let canonical = location.canonical();
        let security_dir = options.security_dir.join(hex(repo.repo.id()));
        let mut out = std::io::stdout().lock();
        match (location.archive.is_some(), args.json) {
            (true, true) => {
                let document = Json::object([
                    (
                        "archives",
                        Json::List(shown.iter().map(archive_json).collect()),
                    ),
                    ("cache", Json::object([("stats", totals_json(&totals))])),
                    ("encryption", encryption_json(repo)),
                    ("repository", repository_json(repo, &canonical)),
                ]);
                writeln!(out, "{}", document.to_document(json_indent()))?;
            }
            (true, false) => {
                for archive in &shown {
                    write!(out, "{}", archive_text(archive, &totals))?;
                }
            }
            (false, true) => {
                let document = Json::object([
                    ("cache", Json::object([("stats", totals_json(&totals))])),
                    ("encryption", encryption_json(repo)),
                    ("repository", repository_json(repo, &canonical)),
                    (
                        "security_dir",
                        Json::str(security_dir.display().to_string()),
                    ),
                ]);
                writeln!(out, "{}", document.to_document(json_indent()))?;
            }
            (false, false) => {
                // borg's own test: only these two names count as unencrypted, so
                // "authenticated BLAKE2b" shows as encrypted.
                let mut encryption = match repo.key.key_type().display_name() {
                    "plaintext" | "authenticated" => "No".to_string(),
                    name => format!("Yes ({name})"),
                };
                if let Some(key_file) = &repo.key_file {
                    encryption += &format!("\nKey file: {}", key_file.display());
                }
                write!(
                    out,
                    "Repository ID: {}\nLocation: {canonical}\nEncrypted: {encryption}\n\
                     Security dir: {}\n{}{}",
                    hex(repo.repo.id()),
                    security_dir.display(),
                    STATS_HEADER,
                    totals_text(&totals),
                )?;
            }
        }
        out.flush()?;
        Ok(Outcome::after_warnings(&warnings))
    };
    runtime()?.block_on(with_repository(&location, &options, Operation::Read, work))
}

pub(super) const STATS_HEADER: &str = "------------------------------------------------------------------------------\n\
\x20                      Original size      Compressed size    Deduplicated size\n";

/// The "All archives" and "Chunk index" lines.
pub(super) fn totals_text(totals: &RepoStats) -> String {
    let size = |n: u64| human::size(n.into());
    format!(
        "All archives:   {:>20} {:>20} {:>20}\n\
         \n\
         \x20                      Unique chunks         Total chunks\n\
         Chunk index:    {:>20} {:>20}\n",
        size(totals.total_size),
        size(totals.total_csize),
        size(totals.unique_csize),
        totals.total_unique_chunks,
        totals.total_chunks,
    )
}

fn text(bytes: &Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(bytes.as_deref().unwrap_or_default()).into_owned()
}

fn micros(time: &[u8]) -> i64 {
    parse_timestamp(time).unwrap_or(0)
}

fn times(meta: &ArchiveMeta) -> (i64, i64) {
    let start = micros(&meta.time);
    let end = meta.time_end.as_deref().map_or(start, micros);
    (start, end)
}

fn utilization(stats: &ArchiveStats) -> f64 {
    stats.archive_csize as f64 / MAX_DATA_SIZE as f64
}

fn archive_json(archive: &Shown) -> Json {
    let meta = &archive.meta;
    let (start, end) = times(meta);
    Json::object([
        (
            "chunker_params",
            meta.chunker_params
                .as_ref()
                // As borg prints values stored in the archive: bytes as text.
                .map_or(Json::str(""), |v| Json::from_msgpack(v, &|b| Json::str(b))),
        ),
        (
            "command_line",
            Json::List(meta.cmdline.iter().map(Json::str).collect()),
        ),
        ("comment", Json::str(text(&meta.comment))),
        ("cwd", Json::str(text(&meta.cwd))),
        ("duration", Json::Float((end - start) as f64 / 1e6)),
        ("end", Json::str(human::iso_time_seconds(end))),
        ("hostname", Json::str(text(&meta.hostname))),
        ("id", Json::str(hex(&archive.id))),
        (
            "limits",
            Json::object([("max_archive_size", Json::Float(utilization(&archive.stats)))]),
        ),
        ("name", Json::str(&meta.name)),
        ("start", Json::str(human::iso_time_seconds(start))),
        (
            "stats",
            Json::object([
                (
                    "compressed_size",
                    Json::Int(archive.stats.compressed_size.into()),
                ),
                (
                    "deduplicated_size",
                    Json::Int(archive.stats.deduplicated_size.into()),
                ),
                ("nfiles", Json::Int(archive.stats.nfiles.into())),
                (
                    "original_size",
                    Json::Int(archive.stats.original_size.into()),
                ),
            ]),
        ),
        ("username", Json::str(text(&meta.username))),
    ])
}

fn totals_json(totals: &RepoStats) -> Json {
    Json::object([
        ("total_chunks", Json::Int(totals.total_chunks.into())),
        ("total_csize", Json::Int(totals.total_csize.into())),
        ("total_size", Json::Int(totals.total_size.into())),
        (
            "total_unique_chunks",
            Json::Int(totals.total_unique_chunks.into()),
        ),
        ("unique_csize", Json::Int(totals.unique_csize.into())),
        ("unique_size", Json::Int(totals.unique_size.into())),
    ])
}

/// borg's `format_timedelta`: `0.57 seconds`, `3 minutes 2.00 seconds`, ...
fn duration(micros: i64) -> String {
    let seconds = micros as f64 / 1e6;
    let mut text = format!("{:.2} seconds", seconds % 60.0);
    let minutes = (seconds / 60.0) as i64 % 60;
    let hours = (seconds / 3600.0) as i64 % 24;
    let days = micros.div_euclid(86_400_000_000);
    if minutes != 0 {
        text = format!("{minutes} minutes {text}");
    }
    if hours != 0 {
        text = format!("{hours} hours {text}");
    }
    if days != 0 {
        text = format!("{days} days {text}");
    }
    text
}

/// Python's `shlex.quote` of each word, joined by spaces.
fn command_line(words: &[Vec<u8>]) -> String {
    words
        .iter()
        .map(|w| {
            let w = String::from_utf8_lossy(w);
            let safe = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
            if safe {
                w.into_owned()
            } else {
                format!("'{}'", w.replace('\'', "'\"'\"'"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn archive_text(archive: &Shown, totals: &RepoStats) -> String {
    let meta = &archive.meta;
    let (start, end) = times(meta);
    let stats = &archive.stats;
    let size = |n: u64| human::size(n.into());
    format!(
        "Archive name: {name}\n\
         Archive fingerprint: {id}\n\
         Comment: {comment}\n\
         Hostname: {hostname}\n\
         Username: {username}\n\
         Time (start): {start}\n\
         Time (end): {end}\n\
         Duration: {duration}\n\
         Number of files: {nfiles}\n\
         Working Directory: {cwd}\n\
         Command line: {cmdline}\n\
         Utilization of maximum supported archive size: {utilization:.0}%\n\
         {STATS_HEADER}\
         This archive:   {osize:>20} {csize:>20} {dsize:>20}\n\
         {totals}",
        name = String::from_utf8_lossy(&meta.name),
        id = hex(&archive.id),
        comment = text(&meta.comment),
        hostname = text(&meta.hostname),
        username = text(&meta.username),
        start = human::time(start),
        end = human::time(end),
        duration = duration(end - start),
        nfiles = stats.nfiles,
        cwd = text(&meta.cwd),
        cmdline = command_line(&meta.cmdline),
        utilization = utilization(stats) * 100.0,
        osize = size(stats.original_size),
        csize = size(stats.compressed_size),
        dsize = size(stats.deduplicated_size),
        totals = totals_text(totals),
    )
}

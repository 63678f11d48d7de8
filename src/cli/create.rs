//! `mailcow-borg create REPO::ARCHIVE PATH...`: back up into a new archive, like `borg create`.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use clap::Args;

use super::Outcome;
use super::access::{AccessArgs, UNLOCK_MEMO, cache_base, runtime};
use super::human;
use super::list::{encryption_json, json_indent, repository_json};
use super::pyjson::Json;
use super::signals::{self, Interrupted};
use crate::format::MAX_DATA_SIZE;
use crate::format::chunker::ChunkerParams;
use crate::format::compress::Compression;
use crate::format::key::hex;
use crate::format::manifest::{Operation, parse_timestamp};
use crate::mailcow::helper_command::{BackupCommand, DUMP_MODE};
use crate::ops::create::files_cache::FilesCacheMode;
use crate::ops::create::fsmeta::MetaOptions;
use crate::ops::create::tally::{Tally, tally};
use crate::ops::create::walk::WalkOptions;
use crate::ops::create::{
    ContentStats, CreateError, CreateOptions, CreateReport, Progress, StreamInput, start_walk,
};
use crate::ops::memory::MemoryBudget;
use crate::ops::open::{AccessOptions, OpenRepository, open};
use crate::ops::owners::Owners;
use crate::ops::patterns::{Pattern, Style};
use crate::ops::placeholders::{PlaceholderValues, expand};
use crate::ops::system::now_micros;
use crate::repo::location::Location;

#[derive(Args)]
pub struct CreateArgs {
    /// REPOSITORY::ARCHIVE; the name may hold placeholders such as {hostname} and {now}.
    location: String,
    /// Files and directories to back up.
    #[arg(required = true)]
    paths: Vec<OsString>,
    /// Compression: lz4 (default), zstd[,L], zlib[,L], auto,C[,L], none.
    #[arg(short = 'C', long, default_value = "lz4", value_name = "SPEC")]
    compression: String,
    /// Content chunker: buzhash,MIN_EXP,MAX_EXP,MASK_BITS,WINDOW, fixed,SIZE[,HEADER] or default.
    #[arg(long, default_value = DEFAULT_CHUNKER_PARAMS, value_name = "PARAMS")]
    chunker_params: String,
    /// What decides that a file is unchanged: ctime,size,inode (default), mtime,size,inode,
    /// ctime,size, mtime,size, size, rechunk,ctime, rechunk,mtime or disabled.
    #[arg(long, default_value = DEFAULT_FILES_CACHE, value_name = "MODE")]
    files_cache: String,
    /// Exclude paths matching PATTERN (fm: by default; sh:, pp:, pf: styles).
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// Read exclude patterns from FILE, one per line.
    #[arg(long, value_name = "FILE")]
    exclude_from: Vec<PathBuf>,
    /// Exclude directories that hold a valid CACHEDIR.TAG.
    #[arg(long)]
    exclude_caches: bool,
    /// Exclude directories that contain NAME (repeatable).
    #[arg(long, value_name = "NAME")]
    exclude_if_present: Vec<OsString>,
    /// Keep the directory entries and tag files of directories excluded by tags.
    #[arg(long)]
    keep_exclude_tags: bool,
    /// Stay in the file system of each PATH.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Store owners by number only.
    #[arg(long)]
    numeric_ids: bool,
    /// Store access times.
    #[arg(long)]
    atime: bool,
    /// Do not store ctimes.
    #[arg(long)]
    noctime: bool,
    /// Do not store inode flags.
    #[arg(long)]
    noflags: bool,
    /// Do not store extended attributes.
    #[arg(long)]
    noxattrs: bool,
    /// Do not store ACLs.
    #[arg(long)]
    noacls: bool,
    /// The archive's comment.
    #[arg(long, default_value = "", value_name = "COMMENT")]
    comment: String,
    /// The archive's start time (UTC, YYYY-MM-DDTHH:MM:SS) instead of now.
    #[arg(long, value_name = "TIMESTAMP")]
    timestamp: Option<String>,
    /// Seconds between checkpoints (archives `NAME.checkpoint` that keep what an interrupted
    /// run uploaded; replaced by the archive when the run completes).
    #[arg(short = 'c', long, default_value_t = 1800, value_name = "SECONDS")]
    checkpoint_interval: u64,
    /// Send at most RATE kiB/s to the repository (borg's option; 0: no limit).
    #[arg(long, default_value_t = 0, value_name = "RATE")]
    upload_ratelimit: u64,
    /// Print statistics at the end.
    #[arg(short = 's', long)]
    stats: bool,
    /// Print a JSON summary on stdout (borg's create --json).
    #[arg(long)]
    json: bool,
    /// List each file with its status letter.
    #[arg(long)]
    list: bool,
    /// Show a progress line (default: when stderr is a terminal).
    #[arg(long, overrides_with = "no_progress")]
    progress: bool,
    /// Never show the progress line.
    #[arg(long)]
    no_progress: bool,
    /// With --list, only these status letters (e.g. AME).
    #[arg(long, value_name = "STATUSCHARS")]
    filter: Option<String>,
    /// The path of the item that `-` (standard input) becomes.
    #[arg(long, default_value = DEFAULT_STDIN_NAME, value_name = "NAME")]
    stdin_name: OsString,
    /// Its permission bits, in octal.
    #[arg(long, default_value = "0660", value_name = "M", value_parser = parse_octal_mode)]
    stdin_mode: u32,
    /// Its owner.
    #[arg(long, default_value = DEFAULT_STDIN_OWNER, value_name = "USER")]
    stdin_user: String,
    /// Its group.
    #[arg(long, default_value = DEFAULT_STDIN_OWNER, value_name = "GROUP")]
    stdin_group: String,
    /// Our cache directory (default: ~/.cache/mailcow-borg, or under BORG_BASE_DIR).
    #[arg(long, env = "MAILCOW_BORG_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    access: AccessArgs,
}

/// Defaults of `create`'s flags that [`CreateArgs::from`] a helper's backup command uses too.
const DEFAULT_CHUNKER_PARAMS: &str = "default";
const DEFAULT_FILES_CACHE: &str = "ctime,size,inode";
const DEFAULT_STDIN_NAME: &str = "stdin";
const DEFAULT_STDIN_OWNER: &str = "root";

/// The helper's `agent backup` as `create` arguments: the host's settings, `create`'s defaults
/// for the rest, so that it goes through the same [`CreateSettings::from_args`].
impl From<BackupCommand> for CreateArgs {
    fn from(command: BackupCommand) -> CreateArgs {
        let BackupCommand {
            require_crypt_keys: _,
            // Done by the agent after the archive.
            retention: _,
            comment,
            compression,
            checkpoint_interval,
            upload_ratelimit,
            excludes,
            output,
            dump_name,
            location,
            paths,
            access,
        } = command;
        CreateArgs {
            location: location.to_string(),
            paths: paths.into_iter().map(OsString::from).collect(),
            compression,
            chunker_params: DEFAULT_CHUNKER_PARAMS.into(),
            files_cache: DEFAULT_FILES_CACHE.into(),
            excludes,
            exclude_from: Vec::new(),
            exclude_caches: false,
            exclude_if_present: Vec::new(),
            keep_exclude_tags: false,
            one_file_system: false,
            numeric_ids: false,
            atime: false,
            noctime: false,
            noflags: false,
            noxattrs: false,
            noacls: false,
            comment,
            timestamp: None,
            checkpoint_interval,
            upload_ratelimit,
            stats: output.stats,
            json: output.json,
            list: output.list,
            progress: output.progress,
            no_progress: false,
            filter: None,
            stdin_name: dump_name
                .unwrap_or_else(|| DEFAULT_STDIN_NAME.into())
                .into(),
            stdin_mode: DUMP_MODE,
            stdin_user: DEFAULT_STDIN_OWNER.into(),
            stdin_group: DEFAULT_STDIN_OWNER.into(),
            cache_dir: None,
            access: AccessArgs::from(&access),
        }
    }
}

/// Prints `--list` lines and warnings on stderr, as borg does, and on a terminal a progress
/// line that a ticker redraws (files and bytes gone through with their rates, bytes uploaded,
/// how much is left and for how long, the current path).
struct Printer {
    list: bool,
    filter: Option<String>,
    progress: Option<ProgressLine>,
}

#[derive(Default)]
struct ProgressLine {
    files: AtomicU64,
    original: AtomicU64,
    uploaded: AtomicU64,
    /// What the run has to go through, once counted (see `ops::create::tally`).
    total: OnceLock<Tally>,
    path: std::sync::Mutex<String>,
    /// Whether the line is on screen; held while drawing or clearing it, so the two never mix.
    shown: std::sync::Mutex<bool>,
}

impl ProgressLine {
    /// The line, fitted to the terminal: what is left first, once it is known, so that the
    /// path is what a narrow terminal cuts.
    fn render(&self, elapsed: f64) -> String {
        let files = self.files.load(Ordering::Relaxed);
        let original = self.original.load(Ordering::Relaxed);
        let elapsed = elapsed.max(0.001);
        let byte_rate = original as f64 / elapsed;
        let total = self.total.get();
        let text = format!(
            "{}{files}{} files ({:.0}/s), {}{} ({}/s), {} uploaded, {}",
            total.map_or(String::new(), |total| left_text(total, original, byte_rate)),
            total.map_or(String::new(), |total| format!("/{}", total.files)),
            files as f64 / elapsed,
            human::size(original.into()),
            total.map_or(String::new(), |total| format!(
                "/{}",
                human::size(total.bytes.into())
            )),
            human::size(byte_rate as i128),
            human::size(self.uploaded.load(Ordering::Relaxed).into()),
            self.path.lock().expect("not poisoned"),
        );
        text.chars().take(terminal_width() - 1).collect()
    }
}

/// "42%, 3m 10s left, ": how far along `done` bytes of `total` are, and the time left at `rate`
/// bytes a second.
fn left_text(total: &Tally, done: u64, rate: f64) -> String {
    let percent = (done as f64 * 100.0 / total.bytes.max(1) as f64).min(100.0);
    let left = total.bytes.saturating_sub(done) as f64 / rate.max(1.0);
    let left = match left as u64 {
        0 => "finishing".to_string(),
        s @ ..60 => format!("{s}s left"),
        s @ ..3600 => format!("{}m {:02}s left", s / 60, s % 60),
        s => format!("{}h {:02}m left", s / 3600, s / 60 % 60),
    };
    format!("{percent:.0}%, {left}, ")
}

/// The terminal's width from `COLUMNS`, else 80.
fn terminal_width() -> usize {
    env("COLUMNS")
        .and_then(|c| c.parse().ok())
        .filter(|w| *w > 20)
        .unwrap_or(80)
}

const CLEAR_LINE: &str = "\r\x1b[K";

impl Printer {
    /// Clears the progress line before other output.
    fn clear(&self) {
        if let Some(line) = &self.progress {
            let mut shown = line.shown.lock().expect("not poisoned");
            if *shown {
                say_part!("{CLEAR_LINE}");
                *shown = false;
            }
        }
    }

    /// Redraws the progress line every quarter second until `done` is set.
    fn tick(self: &Arc<Self>, done: Arc<AtomicBool>) {
        let printer = self.clone();
        let started = std::time::Instant::now();
        std::thread::spawn(move || {
            let Some(line) = &printer.progress else {
                return;
            };
            loop {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let mut shown = line.shown.lock().expect("not poisoned");
                if done.load(Ordering::Relaxed) {
                    return;
                }
                say_part!(
                    "{CLEAR_LINE}{}",
                    line.render(started.elapsed().as_secs_f64())
                );
                *shown = true;
            }
        });
    }

    /// Counts what the run has to go through, beside it, for the progress line.
    fn count(self: &Arc<Self>, options: &CreateOptions, done: Arc<AtomicBool>) {
        let printer = self.clone();
        let (roots, excludes) = (options.roots.clone(), options.walk.excludes.clone());
        std::thread::spawn(move || {
            if let (Some(line), Some(total)) = (&printer.progress, tally(&roots, &excludes, &done))
            {
                let _ = line.total.set(total);
            }
        });
    }
}

impl Progress for Printer {
    fn file_status(&self, status: char, path: &[u8]) {
        if let Some(line) = &self.progress {
            *line.path.lock().expect("not poisoned") = String::from_utf8_lossy(path).into_owned();
        }
        if self.list && self.filter.as_ref().is_none_or(|f| f.contains(status)) {
            self.clear();
            say!("{status} {}", String::from_utf8_lossy(path));
        }
    }

    fn warning(&self, message: &str) {
        self.clear();
        say!("{message}");
    }

    fn content(&self, original: u64, uploaded: u64) {
        if let Some(line) = &self.progress {
            line.files.fetch_add(1, Ordering::Relaxed);
            line.original.fetch_add(original, Ordering::Relaxed);
            line.uploaded.fetch_add(uploaded, Ordering::Relaxed);
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn patterns(args: &CreateArgs) -> anyhow::Result<Vec<Pattern>> {
    let mut texts = args.excludes.clone();
    for file in &args.exclude_from {
        let content = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        texts.extend(
            content
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    Ok(texts
        .iter()
        .map(|t| Pattern::parse(t, Style::Fnmatch))
        .collect::<Result<_, _>>()?)
}

fn parse_octal_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{text:?} is not an octal file mode such as 0660"))
}

/// What `-` among the paths reads: standard input, unless the caller gives another stream (the
/// helper container's framed database dump).
fn stream_input(
    args: &CreateArgs,
    reader: Option<(Box<dyn std::io::Read + Send>, bool)>,
) -> anyhow::Result<Option<StreamInput>> {
    match args.paths.iter().filter(|p| p.as_bytes() == b"-").count() {
        0 => return Ok(None),
        1 => {}
        _ => anyhow::bail!("\"-\" (standard input) can be given only once among the paths"),
    }
    let owners = Owners::load();
    // Like borg, the names must exist here; root is uid and gid 0 even where no user database
    // names it (the helper container has none).
    let id_of = |name: &str, found: Option<u32>, kind: &str| match (found, name) {
        (Some(id), _) => Ok(id),
        (None, "root") => Ok(0),
        (None, _) => Err(anyhow::anyhow!("no such {kind}: {name}")),
    };
    let uid = id_of(
        &args.stdin_user,
        owners.uid(args.stdin_user.as_bytes()),
        "user",
    )?;
    let gid = id_of(
        &args.stdin_group,
        owners.gid(args.stdin_group.as_bytes()),
        "group",
    )?;
    let (reader, fatal_errors) =
        reader.unwrap_or_else(|| (Box::new(std::io::stdin()) as Box<_>, false));
    Ok(Some(StreamInput {
        name: args.stdin_name.as_bytes().to_vec(),
        mode: args.stdin_mode,
        uid,
        user: args.stdin_user.clone(),
        gid,
        group: args.stdin_group.clone(),
        fatal_errors,
        reader: std::sync::Mutex::new(Some(reader)),
    }))
}

pub fn run(args: CreateArgs) -> anyhow::Result<Outcome> {
    CreateSettings::from_args(args, Extras::default())?.run()
}

/// What callers of `create` other than its command line may add.
#[derive(Default)]
pub struct Extras {
    /// What `-` reads instead of standard input, and whether its read errors are fatal.
    pub stdin: Option<(Box<dyn std::io::Read + Send>, bool)>,
    /// Leave fifos and devices out.
    pub skip_special: bool,
    /// `--json` also prints `figures`: the archive's figures by top-level name
    /// (`stats_by_top`), how many archives the repository holds (`repository_archives`) — what
    /// the mailcow backup's metrics show per component — and the run's rates
    /// (`files_per_second`, `original_bytes_per_second`).
    pub more_figures: bool,
}

/// `create`'s arguments, checked and turned into what the operation takes — in one place, for
/// `create` and for the helper's `agent backup` alike.
pub struct CreateSettings {
    location: Location,
    access: AccessOptions,
    options: CreateOptions,
    output: Output,
}

/// What the command prints besides the operation's work.
struct Output {
    json: bool,
    more_figures: bool,
    stats: bool,
    list: bool,
    filter: Option<String>,
    progress: bool,
}

impl CreateSettings {
    pub fn from_args(args: CreateArgs, extras: Extras) -> anyhow::Result<CreateSettings> {
        let (location, mut access) = args.access.resolve(Some(&args.location))?;
        let Some(raw_name) = location.archive.clone() else {
            anyhow::bail!(
                "{}: no archive name given (REPOSITORY::ARCHIVE)",
                args.location
            );
        };
        let values = PlaceholderValues::here(now_micros());
        let name = expand(&raw_name, &values)?;
        let compression: Compression = args.compression.parse()?;
        compression.check_writable()?;
        let chunker_params: ChunkerParams = match args.chunker_params.as_str() {
            DEFAULT_CHUNKER_PARAMS => ChunkerParams::DEFAULT,
            spec => spec.parse()?,
        };
        let files_cache: FilesCacheMode = args.files_cache.parse()?;
        let timestamp = match &args.timestamp {
            None => None,
            Some(text) => Some(parse_timestamp(text.as_bytes()).ok_or_else(|| {
                anyhow::anyhow!("invalid --timestamp {text:?}: use YYYY-MM-DDTHH:MM:SS (UTC)")
            })?),
        };
        let excludes = patterns(&args)?;
        let cwd = std::env::current_dir()?;
        let ttl = env("BORG_FILES_CACHE_TTL")
            .map(|t| t.parse::<u8>())
            .transpose()
            .map_err(|_| anyhow::anyhow!("BORG_FILES_CACHE_TTL must be a number from 1 to 255"))?
            .unwrap_or(20);
        let cache_dir = args.cache_dir.clone().unwrap_or_else(cache_base);
        access.unlock_memo = Some(cache_dir.join(UNLOCK_MEMO));
        access.upload_ratelimit =
            std::num::NonZeroU64::new(args.upload_ratelimit.saturating_mul(1024));
        let mut skip = std::collections::HashSet::new();
        if let Ok(st) = std::fs::metadata(&cache_dir) {
            use std::os::unix::fs::MetadataExt;
            skip.insert((st.dev(), st.ino()));
        }
        let options = CreateOptions {
            name,
            roots: args.paths.iter().map(|p| p.as_bytes().to_vec()).collect(),
            compression,
            chunker_params,
            files_cache,
            files_cache_ttl: ttl,
            files_cache_suffix: env("BORG_FILES_CACHE_SUFFIX"),
            walk: WalkOptions {
                excludes,
                exclude_caches: args.exclude_caches,
                exclude_if_present: args
                    .exclude_if_present
                    .iter()
                    .map(|n| n.as_bytes().to_vec())
                    .collect(),
                keep_exclude_tags: args.keep_exclude_tags,
                one_file_system: args.one_file_system,
                meta: MetaOptions {
                    numeric_ids: args.numeric_ids,
                    atime: args.atime,
                    ctime: !args.noctime,
                    flags: !args.noflags,
                    xattrs: !args.noxattrs,
                    acls: !args.noacls,
                },
                skip,
                cwd: cwd.as_os_str().as_bytes().to_vec(),
                skip_special: extras.skip_special,
            },
            cache_dir,
            security_dir: access.security_dir.clone(),
            location: location.canonical(),
            comment: expand(&args.comment, &values)?,
            timestamp,
            checkpoint_interval: std::time::Duration::from_secs(args.checkpoint_interval),
            cmdline: std::env::args_os().map(|a| a.as_bytes().to_vec()).collect(),
            hostname: values.hostname,
            username: values.user,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            stdin: stream_input(&args, extras.stdin)?,
            memory: MemoryBudget::of_this_process(),
        };
        let output = Output {
            json: args.json,
            more_figures: extras.more_figures,
            stats: args.stats,
            list: args.list,
            filter: args.filter,
            progress: args.progress
                || (!args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr())),
        };
        Ok(CreateSettings {
            location,
            access,
            options,
            output,
        })
    }

    /// Backs up, prints what was asked for, and says how it ended.
    pub fn run(self) -> anyhow::Result<Outcome> {
        let CreateSettings {
            location,
            access,
            options,
            output,
        } = self;
        let printer = Arc::new(Printer {
            list: output.list,
            filter: output.filter,
            progress: output.progress.then(ProgressLine::default),
        });
        let ticker_done = Arc::new(AtomicBool::new(false));
        if output.progress {
            printer.tick(ticker_done.clone());
            printer.count(&options, ticker_done.clone());
        }
        let started = std::time::Instant::now();
        runtime()?.block_on(async {
            let stop = Arc::new(AtomicBool::new(false));
            let mut signal = signals::roll_back_on_stop(stop.clone())?;
            // The walk starts now, while the connection and `borg serve` start up.
            let options = Arc::new(options);
            let walk = start_walk(options.clone(), stop);
            // Opening may wait long (for the repository's lock): a signal ends the wait at once.
            // (Not `with_repository`: only the wait may be cut short, never the create.)
            let mut repo = tokio::select! {
                opened = open(&location, &access, Operation::Write) => opened?,
                name = signals::arrived(&mut signal) => {
                    return Err(Interrupted::by(name, Interrupted::NOTHING_COMMITTED).into());
                }
            };
            let result = repo.create(options, walk, printer.clone(), started).await;
            ticker_done.store(true, Ordering::Relaxed);
            printer.clear();
            let first_signal = *signal.borrow();
            let result = match (result, first_signal) {
                (Err(CreateError::Interrupted), Some(name)) => {
                    Err(Interrupted::by(name, Interrupted::NOTHING_COMMITTED).into())
                }
                (result, _) => result.map_err(anyhow::Error::from),
            };
            let report = match result {
                Ok(report) => report,
                Err(e) => {
                    let _ = repo.close().await;
                    return Err(e);
                }
            };
            for note in &report.notes {
                say!("{note}");
            }
            let canonical = location.canonical();
            if output.json {
                let mut document = Json::object([
                    ("archive", archive_json(&report)),
                    ("encryption", encryption_json(&repo)),
                    ("repository", repository_json(&repo, &canonical)),
                ]);
                if let (true, Json::Object(members)) = (output.more_figures, &mut document) {
                    members.push(("figures".into(), figures_json(&report, &repo)));
                }
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", document.to_document(json_indent()))?;
            } else if output.stats {
                say_part!("{}", stats_text(&report, &canonical));
            }
            repo.close().await?;
            Ok(if report.warnings == 0 {
                Outcome::Ok
            } else {
                Outcome::Warning
            })
        })
    }
}

/// Beyond borg's shape, for `Extras::more_figures`.
fn figures_json(report: &CreateReport, repo: &OpenRepository) -> Json {
    let by_top = report
        .by_top
        .iter()
        .map(|(name, stats)| {
            (
                String::from_utf8_lossy(name).into_owned(),
                content_stats_json(stats),
            )
        })
        .collect();
    let per_second = |n: u64| Json::Float(n as f64 / report.duration.max(0.001));
    Json::object([
        ("files_per_second", per_second(report.stats.nfiles)),
        (
            "original_bytes_per_second",
            per_second(report.stats.original_size),
        ),
        (
            "repository_archives",
            Json::Int(repo.manifest.archives.len() as i128),
        ),
        ("stats_by_top", Json::Object(by_top)),
    ])
}

/// borg's `archive.stats`.
fn content_stats_json(stats: &ContentStats) -> Json {
    Json::object([
        ("compressed_size", Json::Int(stats.compressed_size.into())),
        (
            "deduplicated_size",
            Json::Int(stats.deduplicated_size.into()),
        ),
        ("nfiles", Json::Int(stats.nfiles.into())),
        ("original_size", Json::Int(stats.original_size.into())),
    ])
}

fn archive_json(report: &CreateReport) -> Json {
    let stats = &report.stats;
    Json::object([
        (
            "command_line",
            Json::List(std::env::args().map(Json::str).collect()),
        ),
        ("duration", Json::Float(report.duration)),
        ("end", Json::str(human::iso_time_seconds(report.end))),
        ("id", Json::str(hex(&report.id))),
        (
            "limits",
            Json::object([(
                "max_archive_size",
                Json::Float(report.archive_size as f64 / MAX_DATA_SIZE as f64),
            )]),
        ),
        ("name", Json::str(&report.name)),
        ("start", Json::str(human::iso_time_seconds(report.start))),
        ("stats", content_stats_json(stats)),
    ])
}

/// borg's `--stats` block, without the repository-wide rows (see docs/create-notes.md).
fn stats_text(report: &CreateReport, location: &str) -> String {
    let rule = "-".repeat(78);
    let size = |n: u64| human::size(n.into());
    let s = &report.stats;
    format!(
        "{rule}\nRepository: {location}\nArchive name: {}\nArchive fingerprint: {}\n\
         Time (start): {}\nTime (end):   {}\nDuration: {:.2} seconds\nNumber of files: {}\n\
         Utilization of max. archive size: {:.0}%\n{rule}\n\
         \x20                      Original size      Compressed size    Deduplicated size\n\
         {:15} {:>20} {:>20} {:>20}\n{rule}\n",
        report.name,
        hex(&report.id),
        human::time(report.start),
        human::time(report.end),
        report.duration,
        s.nfiles,
        report.archive_size as f64 / MAX_DATA_SIZE as f64 * 100.0,
        "This archive:",
        size(s.original_size),
        size(s.compressed_size),
        size(s.deduplicated_size),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_tells_how_far_and_how_long() {
        let total = Tally {
            files: 1000,
            bytes: 4_000_000,
        };
        assert_eq!(left_text(&total, 1_000_000, 10_000.0), "25%, 5m 00s left, ");
        assert_eq!(left_text(&total, 3_990_000, 1000.0), "100%, 10s left, ");
        assert_eq!(left_text(&total, 5_000_000, 1000.0), "100%, finishing, ");
        assert_eq!(left_text(&total, 0, 100.0), "0%, 11h 06m left, ");
        let line = ProgressLine::default();
        line.files.store(200, Ordering::Relaxed);
        line.original.store(2_000_000, Ordering::Relaxed);
        *line.path.lock().unwrap() = "vmail/a".into();
        assert_eq!(
            line.render(2.0),
            "200 files (100/s), 2.00 MB (1.00 MB/s), 0 B uploaded, vmail/a"
        );
        line.total.set(total).unwrap();
        // What is left comes first; a narrow terminal cuts the path.
        let whole = "50%, 2s left, 200/1000 files (100/s), 2.00 MB/4.00 MB (1.00 MB/s), 0 B \
                     uploaded, vmail/a";
        let fitted: String = whole.chars().take(terminal_width() - 1).collect();
        assert_eq!(line.render(2.0), fitted);
    }
}

//! `mailcow-borg create REPO::ARCHIVE PATH...`: back up into a new archive, like `borg create`.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use clap::Args;

use super::Outcome;
use super::access::{AccessArgs, UNLOCK_MEMO, cache_base, parse_location, runtime};
use super::human;
use super::list::{encryption_json, json_indent, repository_json};
use super::pyjson::Json;
use super::signals;
use crate::format::MAX_DATA_SIZE;
use crate::format::chunker::ChunkerParams;
use crate::format::compress::Compression;
use crate::format::key::hex;
use crate::format::manifest::{Operation, parse_timestamp};
use crate::ops::create::files_cache::FilesCacheMode;
use crate::ops::create::fsmeta::MetaOptions;
use crate::ops::create::walk::WalkOptions;
use crate::ops::create::{
    CreateError, CreateOptions, CreateReport, Progress, StreamInput, create, start_walk,
};
use crate::ops::open::open;
use crate::ops::owners::Owners;
use crate::ops::patterns::{Pattern, Style};
use crate::ops::placeholders::{PlaceholderValues, expand};
use crate::ops::system::now_micros;

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
    #[arg(long, default_value = "default", value_name = "PARAMS")]
    chunker_params: String,
    /// What decides that a file is unchanged: ctime,size,inode (default), mtime,size,inode,
    /// ctime,size, mtime,size, size, rechunk,ctime, rechunk,mtime or disabled.
    #[arg(long, default_value = "ctime,size,inode", value_name = "MODE")]
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
    #[arg(long, default_value = "stdin", value_name = "NAME")]
    stdin_name: OsString,
    /// Its permission bits, in octal.
    #[arg(long, default_value = "0660", value_name = "M", value_parser = parse_octal_mode)]
    stdin_mode: u32,
    /// Its owner.
    #[arg(long, default_value = "root", value_name = "USER")]
    stdin_user: String,
    /// Its group.
    #[arg(long, default_value = "root", value_name = "GROUP")]
    stdin_group: String,
    /// Our cache directory (default: ~/.cache/mailcow-borg, or under BORG_BASE_DIR).
    #[arg(long, env = "MAILCOW_BORG_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    access: AccessArgs,
}

/// Prints `--list` lines and warnings on stderr, as borg does, and on a terminal a progress
/// line that a ticker redraws (files, bytes read and uploaded, rate, current path).
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
    path: std::sync::Mutex<String>,
    /// Whether the line is on screen; held while drawing or clearing it, so the two never mix.
    shown: std::sync::Mutex<bool>,
}

impl ProgressLine {
    /// The line, fitted to `width` columns.
    fn render(&self, elapsed: f64) -> String {
        let original = self.original.load(Ordering::Relaxed);
        let text = format!(
            "{} files, {} read, {} uploaded, {}/s, {}",
            self.files.load(Ordering::Relaxed),
            human::size(original.into()),
            human::size(self.uploaded.load(Ordering::Relaxed).into()),
            human::size(((original as f64) / elapsed.max(0.001)) as i128),
            self.path.lock().expect("not poisoned"),
        );
        text.chars().take(terminal_width() - 1).collect()
    }
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

fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    if ok {
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    } else {
        "localhost".into()
    }
}

pub(super) fn placeholder_values(now_micros: i64) -> PlaceholderValues {
    let fqdn = host_name();
    let random: [u8; 16] = {
        let mut b = [0u8; 16];
        // SAFETY: the buffer is valid for 16 bytes.
        unsafe { libc::getrandom(b.as_mut_ptr().cast(), 16, 0) };
        b
    };
    let h = hex(&random);
    PlaceholderValues {
        hostname: env("BORG_HOSTNAME")
            .unwrap_or_else(|| fqdn.split('.').next().unwrap_or_default().to_string()),
        user: env("BORG_USERNAME")
            .or_else(|| env("LOGNAME"))
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "root".into()),
        fqdn,
        pid: std::process::id(),
        uuid4: format!(
            "{}-{}-4{}-{:x}{}-{}",
            &h[..8],
            &h[8..12],
            &h[13..16],
            8 | (random[8] >> 6),
            &h[17..20],
            &h[20..32]
        ),
        now_micros,
    }
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
    run_with(args, Extras::default())
}

/// What callers of `create` other than its command line may add.
#[derive(Default)]
pub struct Extras {
    /// What `-` reads instead of standard input, and whether its read errors are fatal.
    pub stdin: Option<(Box<dyn std::io::Read + Send>, bool)>,
    /// Leave fifos and devices out.
    pub skip_special: bool,
}

pub fn run_with(args: CreateArgs, extras: Extras) -> anyhow::Result<Outcome> {
    let location = parse_location(Some(&args.location))?;
    let Some(raw_name) = location.archive.clone() else {
        anyhow::bail!(
            "{}: no archive name given (REPOSITORY::ARCHIVE)",
            args.location
        );
    };
    let values = placeholder_values(now_micros());
    let name = expand(&raw_name, &values)?;
    let compression: Compression = args.compression.parse()?;
    compression.check_writable()?;
    let chunker_params: ChunkerParams = match args.chunker_params.as_str() {
        "default" => ChunkerParams::DEFAULT,
        spec => spec.parse()?,
    };
    let files_cache: FilesCacheMode = args
        .files_cache
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let timestamp = match &args.timestamp {
        None => None,
        Some(text) => Some(parse_timestamp(text.as_bytes()).ok_or_else(|| {
            anyhow::anyhow!("invalid --timestamp {text:?}: use YYYY-MM-DDTHH:MM:SS (UTC)")
        })?),
    };
    let excludes = patterns(&args)?;
    let mut access = args.access.to_options()?;
    let cwd = std::env::current_dir()?;
    let ttl = env("BORG_FILES_CACHE_TTL")
        .map(|t| t.parse::<u8>())
        .transpose()
        .map_err(|_| anyhow::anyhow!("BORG_FILES_CACHE_TTL must be a number from 1 to 255"))?
        .unwrap_or(20);
    let cache_dir = args.cache_dir.clone().unwrap_or_else(cache_base);
    access.unlock_memo = Some(cache_dir.join(UNLOCK_MEMO));
    let mut skip = std::collections::HashSet::new();
    if let Ok(st) = std::fs::metadata(&cache_dir) {
        use std::os::unix::fs::MetadataExt;
        skip.insert((st.dev(), st.ino()));
    }
    let options = CreateOptions {
        name: name.clone(),
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
        hostname: values.hostname.clone(),
        username: values.user.clone(),
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        stdin: stream_input(&args, extras.stdin)?,
    };
    let show_progress = args.progress
        || (!args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let printer = Arc::new(Printer {
        list: args.list,
        filter: args.filter.clone(),
        progress: show_progress.then(ProgressLine::default),
    });
    let ticker_done = Arc::new(AtomicBool::new(false));
    if show_progress {
        printer.tick(ticker_done.clone());
    }
    let started = std::time::Instant::now();
    runtime()?.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let mut signal = watch_signals(stop.clone())?;
        // The walk starts now, while the connection and `borg serve` start up.
        let options = Arc::new(options);
        let walk = start_walk(options.clone(), stop);
        // Opening may wait long (for the repository's lock): a signal ends the wait at once.
        let mut repo = tokio::select! {
            opened = open(&location, &access, Operation::Write) => opened?,
            name = signals::arrived(&mut signal) => {
                return Err(Interrupted::by(name, Interrupted::NOTHING_COMMITTED).into());
            }
        };
        let result = create(&mut repo, options, walk, printer.clone(), started).await;
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
        if args.json {
            let document = Json::object([
                ("archive", archive_json(&report)),
                ("encryption", encryption_json(&repo)),
                ("repository", repository_json(&repo, &canonical)),
            ]);
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", document.to_document(json_indent()))?;
        } else if args.stats {
            say_part!("{}", stats_text(&report, &canonical));
        }
        repo.close()
            .await
            .map_err(|e| anyhow::anyhow!("closing the repository: {e}"))?;
        Ok(if report.warnings == 0 {
            Outcome::Ok
        } else {
            Outcome::Warning
        })
    })
}

/// SIGINT or SIGTERM stopped the command; the exit code is borg's for it, and `outcome` says
/// what that left.
#[derive(Debug)]
pub struct Interrupted {
    /// The signal's name (`SIGINT`, `SIGTERM`, `SIGHUP`).
    pub signal: &'static str,
    pub outcome: &'static str,
}

impl Interrupted {
    /// What borg prints when it rolled back an unfinished archive.
    pub const NOTHING_COMMITTED: &'static str = "nothing was committed";

    /// By the signal named `signal`.
    pub fn by(signal: &'static str, outcome: &'static str) -> Interrupted {
        Interrupted { signal, outcome }
    }

    /// The exit code borg gives a command stopped by this signal.
    pub fn code(&self) -> i32 {
        signals::exit_code(self.signal)
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}; {}", signals::describe(self.signal), self.outcome)
    }
}

impl std::error::Error for Interrupted {}

/// On a stop signal, sets `stop`: the backup rolls back and the lock is released, instead of
/// the process dying with the repository locked. The first signal's name, once one came.
fn watch_signals(
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::sync::watch::Receiver<Option<&'static str>>> {
    let seen = signals::first()?;
    let mut first = seen.clone();
    tokio::spawn(async move {
        signals::arrived(&mut first).await;
        stop.store(true, Ordering::Relaxed);
        say!("mailcow-borg: stopping: rolling back what this run wrote");
    });
    Ok(seen)
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
        (
            "stats",
            Json::object([
                ("compressed_size", Json::Int(stats.compressed_size.into())),
                (
                    "deduplicated_size",
                    Json::Int(stats.deduplicated_size.into()),
                ),
                ("nfiles", Json::Int(stats.nfiles.into())),
                ("original_size", Json::Int(stats.original_size.into())),
            ]),
        ),
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

//! The database restore, staged: the archive's dump is imported into a database of its own
//! first, and only a complete import replaces `DBNAME` — in one `RENAME TABLE`.
//!
//! Streaming a dump straight into `DBNAME` (what every mailcow backup script does) drops the
//! database with its first statement: a restore cut off by a signal, a dead SSH session, the
//! OOM killer or a broken archive leaves mailcow with half its tables, and nothing to go back
//! to. Here:
//!
//! 1. **Import** into `<DBNAME>_mcb_restoring` as the server's root (`DBUSER` may not create
//!    databases). The dump on its way is rewritten by [`DumpRewriter`]: its three
//!    database-level statements (`DROP DATABASE`, `CREATE DATABASE`, `USE`) name the staging
//!    database instead; any other database-level statement fails the import, so nothing in the
//!    stream can reach `DBNAME`. The dump's final section — the views, which MariaDB would bind
//!    to the staging database's name for good — is kept aside instead of imported.
//! 2. **Check**: the helper read the whole dump, the client took all of it, and the dump ends
//!    with mysqldump's `-- Dump completed` line. Anything less drops the staging database and
//!    leaves `DBNAME` as it was.
//! 3. **Swap**, in one `RENAME TABLE`: `DBNAME`'s tables to `<DBNAME>_mcb_replaced`, the staged
//!    ones to `DBNAME`. MariaDB renames all or none, and moves foreign keys along; triggers
//!    cannot move between databases, so both sides' triggers are dropped just before.
//! 4. **Derived objects**: `DBNAME`'s old views, events and routines are dropped; the staged
//!    triggers, events and routines (whose bodies MariaDB keeps as written) are dumped from the
//!    staging database before the swap and replayed into `DBNAME` after it, and the archive's
//!    own view definitions are replayed as the dump wrote them (as often as needed for views
//!    on views: each round creates the views whose dependencies exist).
//! 5. Both side databases are dropped.
//!
//! A process killed during 1 or 2 leaves `DBNAME` untouched and a staging database the next
//! restore drops; one killed during 4 leaves `DBNAME` with all the restored data but some of
//! its old views or events, which mailcow's php-fpm container recreates when it starts. The
//! import needs room for a second copy of the database while it runs.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::docker::discover::Container;
use crate::docker::exec::{ExecStream, Input};
use crate::docker::{DockerError, Engine};
use crate::error::ErrorKind;

use super::conf::MailcowConf;
use super::mysql::{self, DumpError, Login};

/// MariaDB's longest database name, in characters.
const MAX_NAME: usize = 64;
const STAGING_SUFFIX: &str = "_mcb_restoring";
const REPLACED_SUFFIX: &str = "_mcb_replaced";

/// The longest line that may hold a database-level statement.
const MAX_STATEMENT_LINE: usize = 4096;
/// The dump's header (its `SET` lines before the first database statement), kept to replay
/// before the views: their last lines restore variables the header saved.
const MAX_HEADER: usize = 64 * 1024;
/// The views section, kept in memory until the swap.
const MAX_VIEWS: usize = 16 * 1024 * 1024;
/// The staged triggers, events and routines, dumped before the swap.
const MAX_DERIVED: usize = 64 * 1024 * 1024;
/// Rounds of view creation: one per level of views built on views.
const VIEW_ROUNDS: usize = 8;

/// What mysqldump's last line starts with, once everything was written.
const COMPLETED: &[u8] = b"-- Dump completed";

/// The statements at a line's start that work on a database as a whole.
const DATABASE_STATEMENTS: [&[u8]; 4] = [
    b"/*!40000 DROP DATABASE",
    b"DROP DATABASE",
    b"CREATE DATABASE",
    b"USE ",
];

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error(
        "the database name {0:?} is too long to stage a restore beside it (at most {max} characters)",
        max = MAX_NAME - STAGING_SUFFIX.len()
    )]
    NameTooLong(String),
    #[error("the dump has a database statement a restore of {database} does not expect: {line}")]
    UnexpectedStatement { database: String, line: String },
    #[error("the dump never selects the database {0} (no USE statement)")]
    NoDatabase(String),
    #[error("the dump does not end with mysqldump's \"-- Dump completed\" line: it is cut off")]
    Incomplete,
    #[error("the dump's {part} is larger than {limit} bytes")]
    TooLarge { part: &'static str, limit: usize },
    #[error("reading the dump: {0}")]
    ReadDump(#[source] std::io::Error),
    #[error("the SQL client stopped reading the dump: {0}")]
    ClientStoppedReading(#[source] std::io::Error),
    #[error("writing to {client}: {source}")]
    WriteClient {
        client: &'static str,
        source: std::io::Error,
    },
    /// Starting the SQL client or the dump tool, or running a query, failed.
    #[error(transparent)]
    Client(#[from] DumpError),
    /// Talking to a command in mysql-mailcow failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The SQL client or the dump tool exited with an error: its last error line.
    #[error("{0}")]
    Failed(String),
    /// What `what` printed is over the `limit`.
    #[error("{what}: more than {limit} bytes")]
    OutputTooLarge { what: &'static str, limit: usize },
    /// The dump tool run for `what` failed: its last error line.
    #[error("{what}: {message}")]
    ToolFailed { what: &'static str, message: String },
    #[error("the server's answer is not UTF-8")]
    AnswerNotUtf8,
    #[error("unexpected line from the server: {0:?}")]
    UnexpectedAnswer(String),
    #[error("{} missing", .0.join(", "))]
    ViewsMissing(Vec<String>),
    #[error("the restored dump holds no tables")]
    NoTables,
    #[error("listing the databases' tables: {0}")]
    Listing(#[source] Box<StagingError>),
    #[error("swapping the restored tables in: {0}")]
    Swapping(#[source] Box<StagingError>),
    #[error("dropping {staging}: {source}")]
    Discarding {
        staging: String,
        source: Box<StagingError>,
    },
}

impl StagingError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            // What the archive's dump holds, or lacks.
            StagingError::UnexpectedStatement { .. }
            | StagingError::NoDatabase(_)
            | StagingError::Incomplete
            | StagingError::TooLarge { .. }
            | StagingError::NoTables => ErrorKind::Integrity,
            StagingError::Listing(e)
            | StagingError::Swapping(e)
            | StagingError::Discarding { source: e, .. } => e.kind(),
            // mailcow's database, its containers, this machine.
            StagingError::NameTooLong(_)
            | StagingError::ReadDump(_)
            | StagingError::ClientStoppedReading(_)
            | StagingError::WriteClient { .. }
            | StagingError::Client(_)
            | StagingError::Docker(_)
            | StagingError::Failed(_)
            | StagingError::OutputTooLarge { .. }
            | StagingError::ToolFailed { .. }
            | StagingError::AnswerNotUtf8
            | StagingError::UnexpectedAnswer(_)
            | StagingError::ViewsMissing(_) => ErrorKind::Environment,
        }
    }
}

/// `name` as a MariaDB identifier: in backquotes, a backquote doubled.
pub(super) fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The three databases of a staged restore.
#[derive(Clone, Debug)]
pub struct Staging {
    /// `DBNAME`, restored.
    pub database: String,
    /// Where the dump is imported.
    pub staging: String,
    /// Where `DBNAME`'s tables go in the swap, until they are dropped.
    pub replaced: String,
}

impl Staging {
    pub fn new(database: &str) -> Result<Staging, StagingError> {
        let longest = database.chars().count() + STAGING_SUFFIX.len().max(REPLACED_SUFFIX.len());
        if longest > MAX_NAME {
            return Err(StagingError::NameTooLong(database.to_string()));
        }
        Ok(Staging {
            database: database.to_string(),
            staging: format!("{database}{STAGING_SUFFIX}"),
            replaced: format!("{database}{REPLACED_SUFFIX}"),
        })
    }

    /// The rewriter for a dump of `DBNAME`, into the staging database.
    pub fn rewriter(&self) -> DumpRewriter {
        DumpRewriter::new(&self.database, &self.staging)
    }
}

/// Where the rewriter is in the dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Before the first `USE`: kept, and passed on.
    Header,
    /// Tables, data, triggers, events, routines: passed on.
    Body,
    /// After the second `USE`: the views' final definitions, kept aside.
    Views,
}

/// Rewrites a `mysqldump --databases DB --add-drop-database` stream, line by line, so that it
/// builds another database; see the module documentation.
///
/// Only a line's first bytes are looked at, so multi-megabyte `INSERT` lines pass through as
/// they come; a line that starts like a database statement is held until its end.
pub struct DumpRewriter {
    database: String,
    from: Vec<u8>,
    to: Vec<u8>,
    part: Part,
    /// The current line's start, while it may be a database statement.
    held: Vec<u8>,
    /// Whether the current line's start was decided: passed on to its end.
    passing: bool,
    header: Vec<u8>,
    create_database: Vec<u8>,
    views: Vec<u8>,
    /// The start of the last line, for [`COMPLETED`].
    last_line: Vec<u8>,
    in_last_line: bool,
}

/// What a complete dump left to do after its import.
#[derive(Debug, Default)]
pub struct Rewritten {
    pub header: Vec<u8>,
    /// The dump's own `CREATE DATABASE … IF NOT EXISTS` line: `DBNAME` with the archive's
    /// character set, for a restore into a server that no longer has it.
    pub create_database: Vec<u8>,
    /// The views section, if the dump has views.
    pub views: Option<Vec<u8>>,
}

impl DumpRewriter {
    pub fn new(database: &str, staging: &str) -> DumpRewriter {
        DumpRewriter {
            database: database.to_string(),
            from: quoted(database).into_bytes(),
            to: quoted(staging).into_bytes(),
            part: Part::Header,
            held: Vec::new(),
            passing: false,
            header: Vec::new(),
            create_database: Vec::new(),
            views: Vec::new(),
            last_line: Vec::new(),
            in_last_line: false,
        }
    }

    /// Takes the next piece of the dump; what goes to the import is appended to `out`.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), StagingError> {
        while !data.is_empty() {
            if !self.in_last_line {
                self.last_line.clear();
                self.in_last_line = true;
            }
            let end = data.iter().position(|&b| b == b'\n');
            let (piece, rest) = match end {
                Some(i) => data.split_at(i + 1),
                None => (data, &data[data.len()..]),
            };
            data = rest;
            let ends_line = end.is_some();
            let room = COMPLETED.len().saturating_sub(self.last_line.len());
            self.last_line
                .extend_from_slice(&piece[..room.min(piece.len())]);
            if self.passing {
                self.emit(piece, out)?;
            } else {
                self.held.extend_from_slice(piece);
                if ends_line || !self.may_be_statement() {
                    let held = std::mem::take(&mut self.held);
                    if ends_line && self.is_statement(&held) {
                        self.statement(&held, out)?;
                    } else {
                        self.emit(&held, out)?;
                        self.passing = !ends_line;
                    }
                } else if self.held.len() > MAX_STATEMENT_LINE {
                    return Err(self.unexpected(&self.held));
                }
            }
            if ends_line {
                self.passing = false;
                self.in_last_line = false;
            }
        }
        Ok(())
    }

    /// Ends the dump: whether it was complete, and what is left to replay.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<Rewritten, StagingError> {
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            if self.is_statement(&held) {
                self.statement(&held, out)?;
            } else {
                self.emit(&held, out)?;
            }
        }
        if self.part == Part::Header {
            return Err(StagingError::NoDatabase(self.database));
        }
        if !self.last_line.starts_with(COMPLETED) {
            return Err(StagingError::Incomplete);
        }
        Ok(Rewritten {
            header: self.header,
            create_database: self.create_database,
            views: (self.part == Part::Views).then_some(self.views),
        })
    }

    /// Whether the held start of a line could still become a database statement.
    fn may_be_statement(&self) -> bool {
        DATABASE_STATEMENTS.iter().any(|s| {
            let n = s.len().min(self.held.len());
            self.held[..n] == s[..n]
        })
    }

    fn is_statement(&self, line: &[u8]) -> bool {
        DATABASE_STATEMENTS.iter().any(|s| line.starts_with(s))
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), StagingError> {
        match self.part {
            Part::Header => {
                keep(&mut self.header, bytes, "header", MAX_HEADER)?;
                out.extend_from_slice(bytes);
            }
            Part::Body => out.extend_from_slice(bytes),
            Part::Views => keep(&mut self.views, bytes, "views section", MAX_VIEWS)?,
        }
        Ok(())
    }

    /// One whole line that is a database statement: the three the dump has, rewritten, in
    /// their places; anything else is refused.
    fn statement(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<(), StagingError> {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let drop = [
            &b"/*!40000 DROP DATABASE IF EXISTS "[..],
            &self.from,
            b"*/;",
        ]
        .concat();
        let create = [
            &b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ "[..],
            &self.from,
        ]
        .concat();
        let select = [&b"USE "[..], &self.from, b";"].concat();
        let with_staging = |prefix_len: usize, statement: &[u8]| {
            let from_at = prefix_len - self.from.len();
            [&statement[..from_at], &self.to, &statement[prefix_len..]].concat()
        };
        match self.part {
            Part::Header if text == drop.as_slice() => {
                let rewritten = with_staging(drop.len() - 3, line);
                out.extend_from_slice(&rewritten);
            }
            Part::Header
                if text.starts_with(&create)
                    && text
                        .get(create.len())
                        .is_some_and(|&b| b == b' ' || b == b';') =>
            {
                out.extend_from_slice(&with_staging(create.len(), line));
                self.create_database = line.to_vec();
            }
            Part::Header if text == select.as_slice() => {
                out.extend_from_slice(&with_staging(select.len() - 1, line));
                self.part = Part::Body;
            }
            Part::Body if text == select.as_slice() => self.part = Part::Views,
            _ => return Err(self.unexpected(text)),
        }
        Ok(())
    }

    fn unexpected(&self, line: &[u8]) -> StagingError {
        let line = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
        StagingError::UnexpectedStatement {
            database: self.database.clone(),
            line,
        }
    }
}

fn keep(
    buffer: &mut Vec<u8>,
    bytes: &[u8],
    part: &'static str,
    limit: usize,
) -> Result<(), StagingError> {
    if buffer.len() + bytes.len() > limit {
        return Err(StagingError::TooLarge { part, limit });
    }
    buffer.extend_from_slice(bytes);
    Ok(())
}

/// Passes the dump from `dump` through `rewriter` into the import's `input`, and shuts the
/// input down at the end whatever happened (a client waiting for more would never exit). What
/// reached the client is complete only if this returns `Ok`: after a refusal the rest of the
/// dump is read and dropped, so that the helper streaming it can finish.
pub async fn rewrite_into(
    mut dump: impl AsyncRead + Unpin,
    mut input: Input,
    mut rewriter: DumpRewriter,
) -> Result<Rewritten, StagingError> {
    let mut buffer = vec![0u8; 256 * 1024];
    let mut out = Vec::with_capacity(buffer.len());
    let mut failure = None;
    loop {
        let n = match dump.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                failure.get_or_insert(StagingError::ReadDump(e));
                break;
            }
        };
        if failure.is_some() {
            continue;
        }
        out.clear();
        if let Err(e) = rewriter.feed(&buffer[..n], &mut out) {
            failure = Some(e);
        } else if let Err(e) = input.write_all(&out).await {
            failure = Some(StagingError::ClientStoppedReading(e));
        }
    }
    let result = match failure {
        Some(failure) => Err(failure),
        None => {
            out.clear();
            match rewriter.finish(&mut out) {
                Ok(rewritten) => input
                    .write_all(&out)
                    .await
                    .map(|()| rewritten)
                    .map_err(StagingError::ClientStoppedReading),
                Err(e) => Err(e),
            }
        }
    };
    let _ = input.shutdown().await;
    result
}

/// The tools in mysql-mailcow a staged restore uses.
#[derive(Clone, Copy)]
pub struct Tools<'a> {
    pub container: &'a Container,
    pub client: &'static str,
    pub dump_tool: &'static str,
}

/// Runs `sql` as root in one client session; `force` goes on past errors. Its exit code and
/// last error line.
async fn run_script(
    engine: &Engine,
    tools: Tools<'_>,
    conf: &MailcowConf,
    sql: &[u8],
    force: bool,
) -> Result<(), StagingError> {
    let extra: &[&str] = if force { &["--force"] } else { &[] };
    let (session, mut input) = mysql::start_import(
        engine,
        tools.container,
        tools.client,
        Login::root(conf),
        extra,
    )
    .await?;
    let written = async {
        input.write_all(sql).await?;
        input.shutdown().await
    };
    let written = written.await;
    let finished = session.finish().await?;
    if finished.exit_code != 0 {
        return Err(StagingError::Failed(finished.last_error_line()));
    }
    written.map_err(|source| StagingError::WriteClient {
        client: tools.client,
        source,
    })
}

/// Drops the staging database after a failed import, so it does not take disk space until the
/// next restore. A failure here is the caller's warning.
pub async fn discard(
    engine: &Engine,
    tools: Tools<'_>,
    conf: &MailcowConf,
    staging: &Staging,
) -> Result<(), StagingError> {
    let sql = format!("DROP DATABASE IF EXISTS {};\n", quoted(&staging.staging));
    run_script(engine, tools, conf, sql.as_bytes(), false)
        .await
        .map_err(|e| StagingError::Discarding {
            staging: staging.staging.clone(),
            source: Box::new(e),
        })
}

/// The objects of the two databases the swap works on.
#[derive(Debug, Default)]
struct Objects {
    /// Base tables: `DBNAME`'s, the staging database's.
    tables: [Vec<String>; 2],
    /// Triggers (schema, name) of both.
    triggers: Vec<(String, String)>,
    /// `DBNAME`'s derived objects, as `DROP` statements.
    drops: Vec<String>,
    /// The staging database's views: the archive's, as the dump's stand-ins.
    views: Vec<String>,
}

/// A hex string from the server, decoded: every name comes hex-encoded, so that no name can
/// break the tab-separated lines.
pub(super) fn unhex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// An SQL string literal.
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// Runs a query as root; its rows, one per line, tab-separated.
async fn root_query(
    engine: &Engine,
    tools: Tools<'_>,
    conf: &MailcowConf,
    sql: &str,
) -> Result<String, StagingError> {
    let (output, finished) = mysql::query(
        engine,
        tools.container,
        tools.client,
        Login::root(conf),
        sql,
    )
    .await?;
    if finished.exit_code != 0 {
        return Err(StagingError::Failed(finished.last_error_line()));
    }
    String::from_utf8(output).map_err(|_| StagingError::AnswerNotUtf8)
}

async fn list_objects(
    engine: &Engine,
    tools: Tools<'_>,
    conf: &MailcowConf,
    staging: &Staging,
) -> Result<Objects, StagingError> {
    let (db, stage) = (literal(&staging.database), literal(&staging.staging));
    let sql = format!(
        "SELECT 'T', HEX(TABLE_SCHEMA), HEX(TABLE_NAME) FROM information_schema.TABLES \
           WHERE TABLE_SCHEMA IN ({db}, {stage}) AND TABLE_TYPE <> 'VIEW' \
         UNION ALL SELECT 'G', HEX(TRIGGER_SCHEMA), HEX(TRIGGER_NAME) FROM information_schema.TRIGGERS \
           WHERE TRIGGER_SCHEMA IN ({db}, {stage}) \
         UNION ALL SELECT 'V', HEX(TABLE_SCHEMA), HEX(TABLE_NAME) FROM information_schema.VIEWS \
           WHERE TABLE_SCHEMA IN ({db}, {stage}) \
         UNION ALL SELECT 'E', HEX(EVENT_SCHEMA), HEX(EVENT_NAME) FROM information_schema.EVENTS \
           WHERE EVENT_SCHEMA = {db} \
         UNION ALL SELECT ROUTINE_TYPE, HEX(ROUTINE_SCHEMA), HEX(ROUTINE_NAME) FROM information_schema.ROUTINES \
           WHERE ROUTINE_SCHEMA = {db}"
    );
    let output = root_query(engine, tools, conf, &sql).await?;
    let mut objects = Objects::default();
    for line in output.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [kind, schema, name] = fields[..] else {
            return Err(StagingError::UnexpectedAnswer(line.to_string()));
        };
        let (Some(schema), Some(name)) = (unhex(schema), unhex(name)) else {
            return Err(StagingError::UnexpectedAnswer(line.to_string()));
        };
        let qualified = format!("{}.{}", quoted(&schema), quoted(&name));
        match kind {
            "T" => objects.tables[usize::from(schema != staging.database)].push(name),
            "G" => objects.triggers.push((schema, name)),
            "V" if schema == staging.database => objects
                .drops
                .push(format!("DROP VIEW IF EXISTS {qualified};")),
            "V" => objects.views.push(name),
            "E" => objects
                .drops
                .push(format!("DROP EVENT IF EXISTS {qualified};")),
            "PROCEDURE" | "FUNCTION" | "PACKAGE" | "PACKAGE BODY" => objects
                .drops
                .push(format!("DROP {kind} IF EXISTS {qualified};")),
            _ => return Err(StagingError::UnexpectedAnswer(line.to_string())),
        }
    }
    Ok(objects)
}

/// Reads a command's whole stdout, refusing more than `limit` bytes.
async fn read_all(
    mut stream: ExecStream,
    limit: usize,
    what: &'static str,
) -> Result<Vec<u8>, StagingError> {
    let mut output = Vec::new();
    while let Some(piece) = stream.next_stdout().await? {
        if output.len() + piece.len() > limit {
            return Err(StagingError::OutputTooLarge { what, limit });
        }
        output.extend_from_slice(&piece);
    }
    let finished = stream.finish().await?;
    if finished.exit_code != 0 {
        return Err(StagingError::ToolFailed {
            what,
            message: finished.last_error_line(),
        });
    }
    Ok(output)
}

/// Runs the dump's views section (`script`) until every view in `expected` exists in
/// `DBNAME`. A view on a view fails while the other is missing, and the client's `--force`
/// exits with 0 whatever failed: so each round goes on past errors, and what exists afterwards
/// decides.
async fn create_views(
    engine: &Engine,
    tools: Tools<'_>,
    conf: &MailcowConf,
    staging: &Staging,
    script: &[u8],
    expected: &[String],
) -> Result<(), StagingError> {
    let sql = format!(
        "SELECT HEX(TABLE_NAME) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {}",
        literal(&staging.database)
    );
    let mut missing = Vec::new();
    for _ in 0..VIEW_ROUNDS {
        run_script(engine, tools, conf, script, true).await?;
        let present: Vec<String> = root_query(engine, tools, conf, &sql)
            .await?
            .lines()
            .filter_map(unhex)
            .collect();
        missing = expected
            .iter()
            .filter(|v| !present.contains(v))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
    }
    Err(StagingError::ViewsMissing(missing))
}

/// Steps 3 to 5 of the module documentation, after a complete import into the staging
/// database. An error means `DBNAME` was left as it was (the swap is one statement); a success
/// returns warnings: what of the derived objects could not be recreated.
pub async fn swap(
    engine: &Engine,
    tools: Tools<'_>,
    conf: &MailcowConf,
    staging: &Staging,
    rewritten: &Rewritten,
) -> Result<Vec<String>, StagingError> {
    let objects = list_objects(engine, tools, conf, staging)
        .await
        .map_err(|e| StagingError::Listing(Box::new(e)))?;
    let [old_tables, new_tables] = &objects.tables;
    if new_tables.is_empty() {
        return Err(StagingError::NoTables);
    }
    let derived = mysql::dump(
        engine,
        tools.container,
        tools.dump_tool,
        Login::root(conf),
        &[
            "--no-create-info",
            "--no-data",
            "--triggers",
            "--routines",
            "--events",
            "--skip-comments",
            &staging.staging,
        ],
    )
    .await?;
    let derived = read_all(
        derived,
        MAX_DERIVED,
        "dumping the restored triggers, events and routines",
    )
    .await?;

    let (db, stage, replaced) = (
        quoted(&staging.database),
        quoted(&staging.staging),
        quoted(&staging.replaced),
    );
    let mut sql = format!("DROP DATABASE IF EXISTS {replaced};\nCREATE DATABASE {replaced};\n");
    sql.push_str(&String::from_utf8_lossy(&rewritten.create_database));
    for (schema, name) in &objects.triggers {
        sql.push_str(&format!(
            "DROP TRIGGER {}.{};\n",
            quoted(schema),
            quoted(name)
        ));
    }
    let moves: Vec<String> = old_tables
        .iter()
        .map(|t| format!("{db}.{0} TO {replaced}.{0}", quoted(t)))
        .chain(
            new_tables
                .iter()
                .map(|t| format!("{stage}.{0} TO {db}.{0}", quoted(t))),
        )
        .collect();
    // One statement: all of it happens, or none.
    sql.push_str(&format!("RENAME TABLE {};\n", moves.join(",\n  ")));
    run_script(engine, tools, conf, sql.as_bytes(), false)
        .await
        .map_err(|e| StagingError::Swapping(Box::new(e)))?;

    let mut warnings = Vec::new();
    let mut recreate = objects.drops.join("\n");
    recreate.push_str(&format!("\nUSE {db};\n"));
    let mut recreate = recreate.into_bytes();
    recreate.extend_from_slice(&derived);
    if let Err(e) = run_script(engine, tools, conf, &recreate, false).await {
        warnings.push(format!(
            "mysql: the restored tables are in place, but the archive's triggers, events and routines could not all be recreated: {e}"
        ));
    }
    if let Some(views) = &rewritten.views {
        let mut script = rewritten.header.clone();
        script.extend_from_slice(format!("USE {db};\n").as_bytes());
        script.extend_from_slice(views);
        if let Err(e) = create_views(engine, tools, conf, staging, &script, &objects.views).await {
            warnings.push(format!(
                "mysql: the restored tables are in place, but the archive's views could not all be created: {e}; mailcow recreates its own views when php-fpm-mailcow starts"
            ));
        }
    }
    let cleanup =
        format!("DROP DATABASE IF EXISTS {stage};\nDROP DATABASE IF EXISTS {replaced};\n");
    if let Err(e) = run_script(engine, tools, conf, cleanup.as_bytes(), false).await {
        warnings.push(format!(
            "mysql: dropping {} and {} after the restore failed: {e}; drop them by hand to free their space",
            staging.staging, staging.replaced
        ));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "/*M!999999\\- enable the sandbox mode */ \n\
-- MariaDB dump 10.19\n\
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n\
\n\
/*!40000 DROP DATABASE IF EXISTS `mailcow`*/;\n\
\n\
CREATE DATABASE /*!32312 IF NOT EXISTS*/ `mailcow` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n\
\n\
USE `mailcow`;\n\
DROP TABLE IF EXISTS `domain`;\n\
CREATE TABLE `domain` (`domain` varchar(255) NOT NULL);\n\
INSERT INTO `domain` VALUES ('USE `mailcow`;'),('x');\n\
\n\
USE `mailcow`;\n\
/*!50001 DROP VIEW IF EXISTS `grouped`*/;\n\
/*!50001 VIEW `grouped` AS select 1 */;\n\
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;\n\
-- Dump completed on 2026-12-06 11:34:47\n";

    /// The dump fed in pieces of `size` bytes.
    fn rewrite(dump: &[u8], size: usize) -> (Result<Rewritten, StagingError>, String) {
        let mut rewriter = DumpRewriter::new("mailcow", "mailcow_mcb_restoring");
        let mut out = Vec::new();
        for piece in dump.chunks(size) {
            if let Err(e) = rewriter.feed(piece, &mut out) {
                return (Err(e), String::from_utf8(out).unwrap());
            }
        }
        let result = rewriter.finish(&mut out);
        (result, String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_database_statements_name_the_staging_database_and_the_views_are_kept_aside() {
        for size in [1, 2, 7, 64, DUMP.len()] {
            let (result, out) = rewrite(DUMP.as_bytes(), size);
            let rewritten = result.unwrap();
            assert!(out.contains("/*!40000 DROP DATABASE IF EXISTS `mailcow_mcb_restoring`*/;\n"));
            assert!(out.contains(
                "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `mailcow_mcb_restoring` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n"
            ));
            assert!(out.contains("\nUSE `mailcow_mcb_restoring`;\nDROP TABLE"));
            // Data passes untouched; nothing names `mailcow` as a database any more.
            assert!(out.contains("VALUES ('USE `mailcow`;'),('x');\n"));
            assert!(!out.contains("VIEW"), "{out}");
            assert!(!out.contains("Dump completed"));
            let views = String::from_utf8(rewritten.views.unwrap()).unwrap();
            assert!(views.starts_with("/*!50001 DROP VIEW IF EXISTS `grouped`*/;\n"));
            assert!(views.ends_with("-- Dump completed on 2026-12-06 11:34:47\n"));
            assert_eq!(
                rewritten.create_database,
                b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `mailcow` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n"
            );
            let header = String::from_utf8(rewritten.header).unwrap();
            assert!(header.contains("SET @OLD_CHARACTER_SET_CLIENT"));
            assert!(!header.contains("DATABASE"));
        }
    }

    #[test]
    fn a_cut_off_dump_is_incomplete() {
        let cut = &DUMP.as_bytes()[..DUMP.find("INSERT").unwrap()];
        assert!(matches!(rewrite(cut, 5).0, Err(StagingError::Incomplete)));
        let no_use = &DUMP.as_bytes()[..DUMP.find("USE").unwrap()];
        assert!(matches!(
            rewrite(no_use, 5).0,
            Err(StagingError::NoDatabase(_))
        ));
    }

    #[test]
    fn any_other_database_statement_is_refused() {
        for line in [
            "DROP DATABASE `mailcow`;\n",
            "/*!40000 DROP DATABASE IF EXISTS `mysql`*/;\n",
            "USE `other`;\n",
            "CREATE DATABASE `mailcow2`;\n",
            "USE `mailcow`;\n", // a third one
        ] {
            let dump = DUMP.replace("-- Dump completed", &format!("{line}-- Dump completed"));
            let (result, out) = rewrite(dump.as_bytes(), 3);
            assert!(
                matches!(result, Err(StagingError::UnexpectedStatement { .. })),
                "{line}"
            );
            assert!(!out.contains(&format!("\n{line}")), "{line} was passed on");
        }
        // In the body, even the dump's own statements are refused.
        let dump = DUMP.replace(
            "DROP TABLE IF EXISTS `domain`;\n",
            "/*!40000 DROP DATABASE IF EXISTS `mailcow`*/;\n",
        );
        assert!(matches!(
            rewrite(dump.as_bytes(), 4).0,
            Err(StagingError::UnexpectedStatement { .. })
        ));
    }

    #[test]
    fn a_long_line_that_starts_like_a_statement_is_refused_without_holding_it_all() {
        let long = format!("USE {}", "a".repeat(2 * MAX_STATEMENT_LINE));
        let dump = DUMP.replace("-- Dump completed", &format!("{long}\n-- Dump completed"));
        let (result, _) = rewrite(dump.as_bytes(), 1000);
        assert!(matches!(
            result,
            Err(StagingError::UnexpectedStatement { .. })
        ));
    }

    #[test]
    fn names_are_quoted_and_checked() {
        assert_eq!(quoted("a`b"), "`a``b`");
        let staging = Staging::new("mailcow").unwrap();
        assert_eq!(staging.staging, "mailcow_mcb_restoring");
        assert_eq!(staging.replaced, "mailcow_mcb_replaced");
        assert!(Staging::new(&"d".repeat(50)).is_ok());
        assert!(matches!(
            Staging::new(&"d".repeat(51)),
            Err(StagingError::NameTooLong(_))
        ));
        assert_eq!(unhex("6D61696C636F77").as_deref(), Some("mailcow"));
        assert_eq!(unhex("6D6"), None);
        assert_eq!(unhex("ZZ"), None);
        assert_eq!(literal("a'b\\"), "'a''b\\\\'");
    }
}

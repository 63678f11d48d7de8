//! `mailcow-borg key export|import|change-passphrase`: the repository key backed up, put back and
//! given a new passphrase, as `borg key` does (`docs/borg-cli.md` §9.2); exports are borg's bytes,
//! and each tool imports the other's.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::Outcome;
use super::access::{AccessArgs, runtime, with_repository};
use crate::format::key_export::{
    self, PaperKeyError, paper_answer, parse_paper_id, parse_paper_line,
};
use crate::format::manifest::Operation;
use crate::ops::key_manager::{KeyHome, KeySession, change_passphrase};
use crate::repo::location::Location;

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Write the repository key (encrypted, as stored) to PATH or stdout, to keep it safe.
    Export(ExportArgs),
    /// Put back a key written by `key export` (ours or borg's).
    Import(ImportArgs),
    /// Protect the repository key with a new passphrase (BORG_NEW_PASSPHRASE, or asked).
    ChangePassphrase(ChangePassphraseArgs),
}

#[derive(Args)]
pub struct ExportArgs {
    /// REPOSITORY (default: BORG_REPO).
    location: Option<String>,
    /// Where to write the backup (default, or `-`: stdout).
    path: Option<PathBuf>,
    /// For printing and typing in later: hex lines with a checksum each.
    #[arg(long, conflicts_with = "qr_html")]
    paper: bool,
    /// An HTML page for printing, with a QR code and the paper form.
    #[arg(long)]
    qr_html: bool,
    #[command(flatten)]
    access: AccessArgs,
}

#[derive(Args)]
pub struct ImportArgs {
    /// REPOSITORY (default: BORG_REPO).
    location: Option<String>,
    /// The backup to import (`-`: stdin). Not with --paper.
    path: Option<PathBuf>,
    /// Type in a `--paper` backup line by line (or pipe its lines into stdin).
    #[arg(long)]
    paper: bool,
    #[command(flatten)]
    access: AccessArgs,
}

#[derive(Args)]
pub struct ChangePassphraseArgs {
    /// REPOSITORY (default: BORG_REPO).
    location: Option<String>,
    /// Read the new passphrase from this file (first line) instead of BORG_NEW_PASSPHRASE.
    #[arg(long, value_name = "FILE")]
    new_passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    access: AccessArgs,
}

/// What was asked of a key command that cannot be done as asked.
#[derive(Debug, thiserror::Error)]
pub enum KeyArgsError {
    #[error("'{0}' must be a file, not a directory")]
    Directory(String),
    #[error("with --paper the key is typed in (or piped into stdin), not read from a file")]
    PaperFromFile,
    #[error("give the file to import the key from (or - for stdin)")]
    NoInput,
    #[error("input file does not exist: {0}")]
    NoSuchInput(String),
    #[error("the key backup is larger than {MAX_BACKUP} bytes: not a borg key backup")]
    TooLarge,
    #[error("the paper key ended after {done} of {lines} lines")]
    PaperEnded { done: usize, lines: u16 },
    #[error("paper key line {line}: {message}")]
    PaperLine { line: String, message: String },
    #[error(
        "no new passphrase: set BORG_NEW_PASSPHRASE or use --new-passphrase-file (or run on a terminal to be asked)"
    )]
    NoNewPassphrase,
    #[error("the new passphrase was not entered the same twice, 10 times; nothing was changed")]
    PassphrasesDiffer,
}

/// A key backup is about 600 bytes (its QR page 70 kB); more is not one.
const MAX_BACKUP: u64 = 1 << 20;

pub fn run(command: KeyCommand) -> anyhow::Result<Outcome> {
    match command {
        KeyCommand::Export(args) => export(args),
        KeyCommand::Import(args) => import(args),
        KeyCommand::ChangePassphrase(args) => change(args),
    }
}

fn export(args: ExportArgs) -> anyhow::Result<Outcome> {
    let (location, options) = args.access.resolve(args.location.as_deref())?;
    let output = runtime()?.block_on(async {
        let session = KeySession::open(&location, &options).await?;
        let id = *session.repository_id();
        let output = if args.paper {
            session
                .stored_blob(&location, &options)
                .map(|blob| key_export::paper(&id, &blob).into_bytes())
        } else {
            session.stored_text(&location, &options).map(|(text, _)| {
                let plain = key_export::keyfile_text(&id, &text);
                if args.qr_html {
                    key_export::qr_html(&plain)
                } else {
                    plain.into_bytes()
                }
            })
        };
        let closed = session.close().await;
        let output = output?;
        closed?;
        anyhow::Ok(output)
    })?;
    match args.path.as_deref().filter(|p| *p != Path::new("-")) {
        None => std::io::stdout().lock().write_all(&output)?,
        Some(path) => write_export(path, &output)?,
    }
    Ok(Outcome::Ok)
}

/// Writes an export to `path` as borg does: created for the owner only (borg's umask), an
/// existing file overwritten, a directory refused.
fn write_export(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.is_dir() {
        return Err(KeyArgsError::Directory(path.display().to_string()).into());
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    file.write_all(content)?;
    Ok(file.sync_all()?)
}

fn import(args: ImportArgs) -> anyhow::Result<Outcome> {
    let (location, options) = args.access.resolve(args.location.as_deref())?;
    // Input problems are found before the repository is reached.
    let plain = match (args.paper, args.path.as_deref()) {
        (true, Some(_)) => return Err(KeyArgsError::PaperFromFile.into()),
        (true, None) => None,
        (false, None) => return Err(KeyArgsError::NoInput.into()),
        (false, Some(path)) => Some(read_backup(path)?),
    };
    let stored = runtime()?.block_on(async {
        let session = KeySession::open(&location, &options).await?;
        let id = *session.repository_id();
        let blob = match &plain {
            Some(text) => key_export::parse_plain(text, &id)
                .map(Some)
                .map_err(Into::into),
            None if std::io::stdin().is_terminal() => Terminal::new().paper_key(&id),
            None => read_paper_key(&id).map(Some),
        };
        let stored = match blob {
            Ok(Some(blob)) => session
                .store(&blob, &location, &options)
                .await
                .map(Some)
                .map_err(Into::into),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        let closed = session.close().await;
        let stored = stored?;
        closed?;
        anyhow::Ok(stored)
    })?;
    match stored {
        Some(home) if args.access.info => say!("Key imported: {}", describe(&home, &location)),
        Some(_) => {}
        // Borg's words when the typing was given up.
        None => println!("\n - aborted"),
    }
    Ok(Outcome::Ok)
}

/// A plain key backup's text from `path` (`-`: stdin).
fn read_backup(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_BACKUP + 1)
            .read_to_string(&mut text)?;
    } else {
        if !path.exists() {
            return Err(KeyArgsError::NoSuchInput(path.display().to_string()).into());
        }
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_BACKUP + 1).read_to_string(&mut text))
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    }
    if text.len() as u64 > MAX_BACKUP {
        return Err(KeyArgsError::TooLarge.into());
    }
    Ok(text)
}

/// The terminal's end of the paper key dialogue: prompts on stdout, as borg's `input()` writes
/// them.
struct Terminal {
    stdin: std::io::StdinLock<'static>,
}

impl Terminal {
    fn new() -> Terminal {
        Terminal {
            stdin: std::io::stdin().lock(),
        }
    }

    /// The answer to `prompt`; `None` at the end of input.
    fn ask(&mut self, prompt: &str) -> anyhow::Result<Option<String>> {
        print!("{prompt}");
        std::io::stdout().flush()?;
        let mut line = String::new();
        if self.stdin.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
    }

    /// For a blank line: whether to give up (borg's `Abort import? [yN]:`).
    fn abort(&mut self) -> anyhow::Result<bool> {
        say_part!("Abort import? [yN]: ");
        let mut answer = String::new();
        if self.stdin.read_line(&mut answer)? == 0 {
            return Ok(true);
        }
        Ok(matches!(
            answer.trim(),
            "y" | "Y" | "yes" | "Yes" | "YES" | "1"
        ))
    }

    /// One answer to `prompt`, or `None` when the user gives up (end of input, or a blank line
    /// and yes to the question).
    fn answer(&mut self, prompt: &str) -> anyhow::Result<Option<String>> {
        let Some(line) = self.ask(prompt)? else {
            return Ok(None);
        };
        if line.trim().is_empty() && self.abort()? {
            return Ok(None);
        }
        Ok(Some(line))
    }

    /// Asks for the paper key as borg does: line by line, a line that does not check asked
    /// again, a wrong overall checksum starting over, a blank line asking whether to give up.
    /// `None`: given up.
    fn paper_key(&mut self, id: &[u8; 32]) -> anyhow::Result<Option<Vec<u8>>> {
        loop {
            let paper_id = loop {
                let Some(line) = self.answer("id: ")? else {
                    return Ok(None);
                };
                match parse_paper_id(&line) {
                    Ok(paper_id) => break paper_id,
                    Err(e) => println!("{e}"),
                }
            };
            paper_id.check_repository(id)?;
            let mut data = Vec::new();
            let mut index = 1;
            while index <= paper_id.lines {
                let Some(line) = self.answer(&format!("{index:2}: "))? else {
                    return Ok(None);
                };
                match parse_paper_line(index, &line) {
                    Ok(bytes) => {
                        data.extend(bytes);
                        index += 1;
                    }
                    Err(e) => println!("{e}"),
                }
            }
            match paper_id.finish(data) {
                Ok(blob) => return Ok(Some(blob)),
                Err(PaperKeyError::Total) => println!("{}", PaperKeyError::Total),
                Err(PaperKeyError::Import(e)) => return Err(e.into()),
            }
        }
    }
}

/// Reads a paper key from stdin that is not a terminal: a line per prompt (or the `--paper`
/// export itself); the first line that does not check ends the import.
fn read_paper_key(id: &[u8; 32]) -> anyhow::Result<Vec<u8>> {
    let stdin = std::io::stdin().lock();
    let mut lines = stdin.take(MAX_BACKUP).lines();
    let mut next = || -> anyhow::Result<Option<String>> {
        for line in lines.by_ref() {
            if let Some(answer) = paper_answer(&line?) {
                return Ok(Some(answer.to_string()));
            }
        }
        Ok(None)
    };
    let line_error = |line: &str, e: &dyn std::fmt::Display| KeyArgsError::PaperLine {
        line: line.to_string(),
        message: e.to_string(),
    };
    let first = next()?.ok_or(KeyArgsError::PaperEnded { done: 0, lines: 0 })?;
    let paper_id = parse_paper_id(&first).map_err(|e| line_error("id", &e))?;
    paper_id.check_repository(id)?;
    let mut data = Vec::new();
    for index in 1..=paper_id.lines {
        let line = next()?.ok_or(KeyArgsError::PaperEnded {
            done: usize::from(index) - 1,
            lines: paper_id.lines,
        })?;
        data.extend(
            parse_paper_line(index, &line).map_err(|e| line_error(&index.to_string(), &e))?,
        );
    }
    paper_id.finish(data).map_err(|e| match e {
        PaperKeyError::Total => line_error("id", &"the overall checksum did not match").into(),
        PaperKeyError::Import(e) => anyhow::Error::from(e),
    })
}

fn change(args: ChangePassphraseArgs) -> anyhow::Result<Outcome> {
    let (location, options) = args.access.resolve(args.location.as_deref())?;
    let home = runtime()?.block_on(with_repository(
        &location,
        &options,
        Operation::Check,
        async |repo| {
            // Asked only once the old passphrase has opened the repository, as borg does.
            let new = new_passphrase(args.new_passphrase_file.as_deref())?;
            Ok(change_passphrase(repo, &new).await?)
        },
    ))?;
    if args.access.info {
        say!("Key updated");
        say!("Key location: {}", describe(&home, &location));
    }
    Ok(Outcome::Ok)
}

/// Where the key is, as borg's `Key location:` says it: the key file, or the repository.
fn describe(home: &KeyHome, location: &Location) -> String {
    match home {
        KeyHome::File(path) => path.display().to_string(),
        KeyHome::Repository => location.canonical(),
    }
}

/// The new passphrase: `--new-passphrase-file`, `BORG_NEW_PASSPHRASE` (empty allowed, as borg
/// allows it), else asked twice on the terminal.
fn new_passphrase(file: Option<&Path>) -> anyhow::Result<String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        return Ok(text.lines().next().unwrap_or_default().to_string());
    }
    if let Some(passphrase) = super::access::new_passphrase_env() {
        return Ok(passphrase);
    }
    use super::new_passphrase::{NewPassphraseError, ask_twice};
    ask_twice().map_err(|e| match e {
        NewPassphraseError::NotATerminal => KeyArgsError::NoNewPassphrase.into(),
        NewPassphraseError::Retries => KeyArgsError::PassphrasesDiffer.into(),
        other => other.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        key: KeyCommand,
    }

    #[test]
    fn paper_and_qr_html_exclude_each_other() {
        assert!(Cli::try_parse_from(["k", "export", "--paper", "--qr-html", "/r"]).is_err());
        let Ok(Cli {
            key: KeyCommand::Export(args),
        }) = Cli::try_parse_from(["k", "export", "--qr-html", "/r", "out.html"])
        else {
            panic!("export parses");
        };
        assert!(args.qr_html && !args.paper);
        assert_eq!(args.path.as_deref(), Some(Path::new("out.html")));
    }

    #[test]
    fn import_input_problems_are_found_before_connecting() {
        let run_import = |argv: &[&str]| {
            let Ok(Cli {
                key: KeyCommand::Import(args),
            }) = Cli::try_parse_from(argv)
            else {
                panic!("import parses");
            };
            import(args).unwrap_err().to_string()
        };
        // The repository does not exist: these fail before any attempt to reach it.
        let repo = "/nonexistent/mailcow-borg-test-repo";
        assert!(
            run_import(&["k", "import", "--paper", repo, "file"]).contains("not read from a file")
        );
        assert!(run_import(&["k", "import", repo]).contains("give the file"));
        assert!(run_import(&["k", "import", repo, "/nonexistent/key"]).contains("does not exist"));
    }
}

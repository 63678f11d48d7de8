//! Key backups as `borg key export` writes them and `borg key import` reads them
//! (`crypto/keymanager.py`, `docs/borg-cli.md` §9.2): the plain form (a key file: `BORG_KEY
//! <repository id>` and the key blob's base64), the `--paper` form (the blob in hex, 18 bytes a
//! line, each line and the whole with a short SHA-256 check so that typing errors are caught line
//! by line), and the `--qr-html` page (borg's template with the plain form in it).
//!
//! Everything here is text in, text out; the key blob stays encrypted throughout (no passphrase
//! is needed to export or import it).

use base64::Engine;
use sha2::{Digest, Sha256};

use super::key::{EncryptedKey, KeyError, hex};

/// The first word of a key file and of a plain export.
pub const FILE_ID: &str = "BORG_KEY";

/// Borg 1.4.5's `paperkey.html`, byte for byte, so that `--qr-html` pages are borg's: the page
/// draws the QR code and the paper form itself, in the browser, from the key file text that
/// [`qr_html`] puts into its `<textarea>`. It is borg's file (BSD-3-Clause), with the two MIT
/// licensed JavaScript libraries it names at its top; kept unchanged as data we output, never
/// run by us. Borg 1.2's template differs in a few comment words.
const PAPERKEY_HTML: &[u8] = include_bytes!("borg_paperkey.html");

/// The paper form's header line.
const PAPER_MAGIC: &str = "BORG PAPER KEY v1";

/// The longest paper key accepted: a borg 1.x key blob has 20 (HMAC-SHA256 types) or 31
/// (BLAKE2b types) lines; anything far beyond is not a key.
pub const MAX_PAPER_LINES: usize = 200;

/// Base64 at 70 columns, lines joined by `\n`, no final newline: how borg writes a key blob
/// (`textwrap.wrap` of `b2a_base64`).
pub fn wrap_base64(blob: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    b64.as_bytes()
        .chunks(70)
        .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The key blob's bytes from its base64 text (line breaks and other whitespace ignored).
pub fn decode_base64(text: &str) -> Result<Vec<u8>, KeyError> {
    let compact: String = text.split_whitespace().collect();
    if compact.is_empty() {
        return Err(KeyError::Corrupt("the key text is empty".into()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| KeyError::Corrupt(format!("key text is not base64: {e}")))
}

/// The plain export and a key file's content: `BORG_KEY <id>`, then the blob text as it is
/// stored, ending in one newline (`KeyManager.get_keyfile_data`).
pub fn keyfile_text(repository_id: &[u8; 32], blob_text: &str) -> String {
    let mut text = format!("{FILE_ID} {}\n{blob_text}", hex(repository_id));
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// The `--qr-html` page: borg's template with the key file text before `</textarea>`.
pub fn qr_html(keyfile_text: &str) -> Vec<u8> {
    const CLOSE: &[u8] = b"</textarea>";
    let at = PAPERKEY_HTML
        .windows(CLOSE.len())
        .position(|w| w == CLOSE)
        .expect("the template has a textarea");
    [
        &PAPERKEY_HTML[..at],
        keyfile_text.as_bytes(),
        &PAPERKEY_HTML[at..],
    ]
    .concat()
}

/// The first `n` hex digits of the SHA-256 of `data`: the paper form's checksums.
fn sha256_prefix(data: &[u8], n: usize) -> String {
    let mut digest = hex(&Sha256::digest(data));
    digest.truncate(n);
    digest
}

/// `s` with a space after every 6 characters (not at the end).
fn grouped(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 6);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && i % 6 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// A data line's checksum: over its number (16-bit big-endian) and its bytes.
fn line_checksum(index: u16, bytes: &[u8]) -> String {
    sha256_prefix(&[&index.to_be_bytes()[..], bytes].concat(), 2)
}

/// The `--paper` export of the key blob `blob` (its bytes, not its base64).
pub fn paper(repository_id: &[u8; 32], blob: &[u8]) -> String {
    let mut out =
        format!("To restore key use borg key import --paper /path/to/repo\n\n{PAPER_MAGIC}\n");
    let lines = blob.len().div_ceil(18);
    let id_prefix = &hex(repository_id)[..18];
    let total = sha256_prefix(blob, 12);
    let id_sum = sha256_prefix(format!("{lines}/{id_prefix}/{total}").as_bytes(), 2);
    out.push_str(&format!(
        "id: {lines} / {} / {} - {id_sum}\n",
        grouped(id_prefix),
        grouped(&total)
    ));
    for (i, chunk) in blob.chunks(18).enumerate() {
        // Blobs are a few hundred bytes; a paper key of 65,535 lines is not a thing.
        let index = u16::try_from(i + 1).unwrap_or(u16::MAX);
        out.push_str(&format!(
            "{index:2}: {} - {}\n",
            grouped(&hex(chunk)),
            line_checksum(index, chunk)
        ));
    }
    out
}

/// Why an import was refused, with borg's messages (`keymanager.py`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("this file is not a borg key backup (no BORG_KEY line at its start)")]
    NotAKeyBackup,
    #[error("this key backup is for a different repository (id {found}), not this one")]
    RepoIdMismatch { found: String },
    #[error("the key backup's key is damaged: {0}")]
    Corrupt(KeyError),
}

/// The key blob's bytes from a plain export (or a key file): its first line must be
/// `BORG_KEY <this repository's id>`, and the rest must be a key blob.
pub fn parse_plain(text: &str, repository_id: &[u8; 32]) -> Result<Vec<u8>, ImportError> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    // Borg reads the file with universal newlines, so a CRLF line ends as an LF one.
    let first = first.strip_suffix('\r').unwrap_or(first);
    if first != format!("{FILE_ID} {}", hex(repository_id)) {
        return Err(match first.strip_prefix(FILE_ID) {
            Some(found) => ImportError::RepoIdMismatch {
                found: found.trim().chars().take(64).collect(),
            },
            None => ImportError::NotAKeyBackup,
        });
    }
    checked_blob(decode_base64(rest).map_err(ImportError::Corrupt)?)
}

/// `blob` if it is a key blob borg 1.x can read (borg itself stores whatever it was given).
fn checked_blob(blob: Vec<u8>) -> Result<Vec<u8>, ImportError> {
    EncryptedKey::from_msgpack(&blob).map_err(ImportError::Corrupt)?;
    Ok(blob)
}

/// A line of a paper key that was not accepted; the message says what to do, in borg's words.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PaperLineError {
    #[error("each line must contain exactly one '-', try again")]
    Dash,
    #[error("the id line must contain exactly two '/', try again")]
    Slashes,
    #[error(
        "the id line's number of lines must be a number from 1 to {MAX_PAPER_LINES}, try again"
    )]
    LineCount,
    #[error("line checksum did not match, try same line again")]
    IdChecksum,
    #[error("only characters 0-9 and a-f and '-' are valid, try again")]
    Hex,
    #[error("line checksum did not match, try line {0} again")]
    Checksum(u16),
}

/// The paper key's `id:` line, as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperId {
    pub lines: u16,
    /// The first 18 hex digits of the repository id.
    pub repository: String,
    /// The first 12 hex digits of the blob's SHA-256.
    total: String,
}

/// `line` without spaces, split at its one `-` into data and checksum.
fn split_dash(line: &str) -> Result<(String, String), PaperLineError> {
    let compact: String = line.chars().filter(|c| *c != ' ').collect();
    let mut parts = compact.split('-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(data), Some(sum), None) => Ok((data.to_string(), sum.to_string())),
        _ => Err(PaperLineError::Dash),
    }
}

/// Reads the `id:` line (without its `id:` prompt).
pub fn parse_paper_id(line: &str) -> Result<PaperId, PaperLineError> {
    let (data, sum) = split_dash(line)?;
    let fields: Vec<&str> = data.split('/').collect();
    let [lines, repository, total] = fields[..] else {
        return Err(PaperLineError::Slashes);
    };
    if sha256_prefix(data.to_lowercase().as_bytes(), 2) != sum {
        return Err(PaperLineError::IdChecksum);
    }
    let lines = lines
        .parse::<u16>()
        .ok()
        .filter(|n| (1..=MAX_PAPER_LINES).contains(&usize::from(*n)))
        .ok_or(PaperLineError::LineCount)?;
    Ok(PaperId {
        lines,
        repository: repository.to_string(),
        total: total.to_string(),
    })
}

/// Reads data line `index` (without its ` N:` prompt): its bytes.
pub fn parse_paper_line(index: u16, line: &str) -> Result<Vec<u8>, PaperLineError> {
    let (data, sum) = split_dash(line)?;
    let bytes = super::key::parse_hex(&data).ok_or(PaperLineError::Hex)?;
    if line_checksum(index, &bytes) != sum {
        return Err(PaperLineError::Checksum(index));
    }
    Ok(bytes)
}

/// Why a fully typed paper key is not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PaperKeyError {
    /// Borg asks for the whole key again after this one.
    #[error("The overall checksum did not match, retry or enter a blank line to abort.")]
    Total,
    #[error(transparent)]
    Import(#[from] ImportError),
}

impl PaperId {
    /// Refuses a paper key of another repository, as borg does right after the `id:` line.
    pub fn check_repository(&self, repository_id: &[u8; 32]) -> Result<(), ImportError> {
        if self.repository == hex(repository_id)[..18] {
            Ok(())
        } else {
            Err(ImportError::RepoIdMismatch {
                found: self.repository.chars().take(18).collect(),
            })
        }
    }

    /// The key blob from all data lines' bytes, checked against the id line's overall checksum.
    pub fn finish(&self, data: Vec<u8>) -> Result<Vec<u8>, PaperKeyError> {
        if sha256_prefix(&data, 12) != self.total {
            return Err(PaperKeyError::Total);
        }
        Ok(checked_blob(data)?)
    }
}

/// What a line of a paper key read from a file or pipe answers: the line without the prompt it
/// may carry (`id:`, ` 7:`), or `None` for a line to skip (blank, or one of the export's two
/// header lines), so that both the answers alone and the `--paper` export itself can be fed in.
pub fn paper_answer(line: &str) -> Option<&str> {
    let line = line.trim();
    if line.is_empty() || line == PAPER_MAGIC || line.starts_with("To restore key use ") {
        return None;
    }
    Some(line.rsplit_once(':').map_or(line, |(_, answer)| answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `borg key export` and `borg key export --paper` (borg 1.4.5) of one repokey-blake2
    /// repository: 31 paper lines, the last a short one.
    const BORG_PLAIN: &str = include_str!("../../testdata/key_export/repokey-blake2.key");
    const BORG_PAPER: &str = include_str!("../../testdata/key_export/repokey-blake2.paper");

    fn borg_repository_id() -> [u8; 32] {
        let hex_id = BORG_PLAIN.lines().next().unwrap().strip_prefix("BORG_KEY ");
        super::super::key::parse_hex32(hex_id.unwrap()).unwrap()
    }

    fn borg_blob() -> Vec<u8> {
        parse_plain(BORG_PLAIN, &borg_repository_id()).unwrap()
    }

    #[test]
    fn plain_and_paper_exports_are_borgs_bytes() {
        let id = borg_repository_id();
        let blob = borg_blob();
        assert_eq!(keyfile_text(&id, &wrap_base64(&blob)), BORG_PLAIN);
        assert_eq!(
            keyfile_text(&id, &format!("{}\n", wrap_base64(&blob))),
            BORG_PLAIN
        );
        assert_eq!(paper(&id, &blob), BORG_PAPER);
    }

    #[test]
    fn qr_html_is_the_template_with_the_key_in_its_textarea() {
        let page = String::from_utf8(qr_html(BORG_PLAIN)).unwrap();
        assert!(page.contains("<title>BorgBackup Printable Key Template</title>"));
        assert!(page.contains(&format!("{BORG_PLAIN}</textarea>")));
        assert_eq!(page.len(), PAPERKEY_HTML.len() + BORG_PLAIN.len());
    }

    /// The answers to the prompts, as typed from borg's paper export.
    fn answers() -> Vec<String> {
        BORG_PAPER
            .lines()
            .skip(3)
            .map(|l| l.split_once(": ").unwrap().1.to_string())
            .collect()
    }

    #[test]
    fn borgs_paper_key_reads_back_to_the_blob() {
        let answers = answers();
        let id = parse_paper_id(&answers[0]).unwrap();
        assert_eq!(id.lines, 31);
        id.check_repository(&borg_repository_id()).unwrap();
        assert!(matches!(
            id.check_repository(&[0; 32]),
            Err(ImportError::RepoIdMismatch { .. })
        ));
        let mut data = Vec::new();
        for (i, line) in answers[1..].iter().enumerate() {
            // Spaces anywhere are ignored, as borg ignores them.
            let squeezed = line.replace(' ', "");
            data.extend(parse_paper_line(i as u16 + 1, &squeezed).unwrap());
        }
        assert_eq!(id.finish(data.clone()).unwrap(), borg_blob());
        data[0] ^= 1;
        assert_eq!(id.finish(data), Err(PaperKeyError::Total));
    }

    #[test]
    fn piped_lines_may_be_the_export_itself() {
        let answers: Vec<&str> = BORG_PAPER.lines().filter_map(paper_answer).collect();
        assert_eq!(answers.len(), 32);
        assert_eq!(
            answers[0].trim(),
            "31 / 632def e12be8 459c8a / c5c2b4 ef81ed - 9c"
        );
        assert_eq!(paper_answer("86a961 - 14"), Some("86a961 - 14"));
        assert_eq!(paper_answer("   "), None);
    }

    #[test]
    fn typing_errors_are_named_per_line() {
        let answers = answers();
        assert_eq!(
            parse_paper_line(1, &answers[2]),
            Err(PaperLineError::Checksum(1))
        );
        assert_eq!(parse_paper_line(1, "86a961"), Err(PaperLineError::Dash));
        assert_eq!(parse_paper_line(1, "86a9g1 - 14"), Err(PaperLineError::Hex));
        assert_eq!(parse_paper_line(1, "86a96 - 14"), Err(PaperLineError::Hex));
        let typo = answers[0].replacen('3', "4", 1);
        assert_eq!(parse_paper_id(&typo), Err(PaperLineError::IdChecksum));
        assert_eq!(
            parse_paper_id("31 / 632def - 9c"),
            Err(PaperLineError::Slashes)
        );
        // The count is checked after the checksum, so it must be a well-formed line.
        let sum = sha256_prefix(b"0/632defe12be8459c8a/c5c2b4ef81ed", 2);
        assert_eq!(
            parse_paper_id(&format!("0/632defe12be8459c8a/c5c2b4ef81ed-{sum}")),
            Err(PaperLineError::LineCount)
        );
    }

    #[test]
    fn plain_imports_check_the_header_and_the_blob() {
        let id = borg_repository_id();
        let crlf = BORG_PLAIN.replace('\n', "\r\n");
        assert_eq!(parse_plain(&crlf, &id).unwrap(), borg_blob());
        assert_eq!(parse_plain("hello\n", &id), Err(ImportError::NotAKeyBackup));
        assert!(matches!(
            parse_plain(BORG_PLAIN, &[7; 32]),
            Err(ImportError::RepoIdMismatch { .. })
        ));
        let header = BORG_PLAIN.lines().next().unwrap();
        assert!(matches!(
            parse_plain(&format!("{header}\nnot base64!\n"), &id),
            Err(ImportError::Corrupt(_))
        ));
        assert!(matches!(
            parse_plain(&format!("{header}\naGVsbG8=\n"), &id),
            Err(ImportError::Corrupt(_))
        ));
    }
}

//! Names in a mailcow maildir, as mailcow's dovecot writes them; pure functions, no I/O.
//!
//! mailcow's dovecot keeps a mailbox under `mail_home/MAILDIR_SUB` (`Maildir`) in the maildir++
//! layout, with the `inbox` namespace's separator `/` and the `listescape` plugin
//! (`listescape_char = "\\"`). So an IMAP folder name maps to a directory of the maildir as
//! dovecot maps it (checked against the real dovecot 2.3 of the test image, which `doveadm
//! mailbox create` then `ls` shows):
//! - `INBOX` (any case) is the maildir itself (its `cur`, `new`, `tmp`): [`INBOX_DIR`];
//! - any other folder is one directory `.` + its levels joined by `.`: `Projects/2025` is
//!   `.Projects.2025`;
//! - inside a level, listescape writes `\` + two lower-case hex digits for the characters the
//!   layout cannot hold as they are: the maildir++ separator `.`, the escape `\` itself, and a
//!   `~` that starts a level (`a.b` is `.a\2eb`, `~x/a~b` is `.\7ex.a~b`);
//! - then the whole name is stored in modified UTF-7 (RFC 3501 §5.1.3): `&` is `&-`, anything
//!   outside printable ASCII is `&` + base64 (`,` for `/`) of its UTF-16 + `-`.
//!
//! A message's file name is `<secs>.M<usecs>P<pid>.<host>,S=<size>,W=<vsize>:2,<flags>`: its
//! identity is the part before `:2,` (a flag change renames the file, but it stays the same
//! message), and its leading seconds are the time dovecot saved (delivered) it.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The name IMAP gives the maildir itself; matched without regard to case (RFC 3501 §5.1).
pub const INBOX: &str = "INBOX";
/// The directory of `INBOX`, relative to the maildir: the maildir itself.
pub const INBOX_DIR: &str = "";

/// IMAP's (and the `inbox` namespace's) hierarchy separator.
const IMAP_SEPARATOR: char = '/';
/// maildir++'s separator of levels in a folder's directory name.
const MAILDIR_SEPARATOR: char = '.';
/// mailcow's `listescape_char`.
const ESCAPE: char = '\\';
/// What separates a message file's identity from its flags (the maildir standard's `:2,`).
pub const INFO_SEPARATOR: &str = ":2,";

/// RFC 3501's modified base64: the IMAP alphabet, no padding, no stray bits.
const MUTF7_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::IMAP_MUTF7,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Why a folder name or a date given on the command line is refused, or the window two dates
/// make.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("folder name {0:?} is empty or has an empty level (IMAP names are like Projects/2025)")]
    EmptyLevel(String),
    #[error("folder name {0:?} has a control character")]
    ControlCharacter(String),
    #[error("date {0:?} is neither YYYY-MM-DD nor RFC 3339 (2026-11-30T08:00:00+01:00)")]
    Date(String),
    #[error("--since must be before --before")]
    EmptyWindow,
}

/// The directory, relative to the maildir, dovecot keeps the IMAP folder `name` in:
/// [`INBOX_DIR`] for INBOX, `.Projects.2025` for `Projects/2025`.
pub fn folder_dir(name: &str) -> Result<String, NameError> {
    if name.eq_ignore_ascii_case(INBOX) {
        return Ok(INBOX_DIR.to_string());
    }
    if name.split(IMAP_SEPARATOR).any(str::is_empty) {
        return Err(NameError::EmptyLevel(name.to_string()));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter(name.to_string()));
    }
    let mut escaped = String::with_capacity(name.len() + 1);
    escaped.push(MAILDIR_SEPARATOR);
    let mut level_start = true;
    for c in name.chars() {
        match c {
            IMAP_SEPARATOR => escaped.push(MAILDIR_SEPARATOR),
            MAILDIR_SEPARATOR | ESCAPE => push_escaped(&mut escaped, c),
            // A level starting with `~` would read as a home directory.
            '~' if level_start => push_escaped(&mut escaped, c),
            _ => escaped.push(c),
        }
        level_start = c == IMAP_SEPARATOR;
    }
    Ok(mutf7_encode(&escaped))
}

/// The IMAP name of the folder whose directory (relative to the maildir) is `dir`; `None` when
/// `dir` is not a folder's (`cur`, `dovecot-uidlist`, `.`, `..`, a level that is empty or not
/// valid modified UTF-7 or listescape).
pub fn folder_name(dir: &str) -> Option<String> {
    if dir == INBOX_DIR {
        return Some(INBOX.to_string());
    }
    let levels = dir.strip_prefix(MAILDIR_SEPARATOR)?;
    let decoded = mutf7_decode(levels)?;
    let mut name = String::with_capacity(decoded.len());
    for level in decoded.split(MAILDIR_SEPARATOR) {
        if level.is_empty() {
            return None;
        }
        if !name.is_empty() {
            name.push(IMAP_SEPARATOR);
        }
        name.push_str(&unescape(level)?);
    }
    Some(name)
}

/// `c` as listescape writes it: the escape and two lower-case hex digits (only ASCII is ever
/// escaped).
fn push_escaped(out: &mut String, c: char) {
    out.push(ESCAPE);
    out.push_str(&format!("{:02x}", c as u32));
}

/// A level with listescape's `\xx` turned back into characters; `None` for a malformed escape.
fn unescape(level: &str) -> Option<String> {
    let mut out = String::with_capacity(level.len());
    let mut rest = level;
    while let Some(at) = rest.find(ESCAPE) {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 1..at + 3)?;
        let byte = u8::from_str_radix(hex, 16).ok().filter(u8::is_ascii)?;
        out.push(char::from(byte));
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// `text` in modified UTF-7 (RFC 3501 §5.1.3).
fn mutf7_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut wide: Vec<u16> = Vec::new();
    let flush = |wide: &mut Vec<u16>, out: &mut String| {
        if !wide.is_empty() {
            let bytes: Vec<u8> = wide.iter().flat_map(|unit| unit.to_be_bytes()).collect();
            out.push('&');
            out.push_str(&MUTF7_BASE64.encode(bytes));
            out.push('-');
            wide.clear();
        }
    };
    for c in text.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut wide, &mut out);
            out.push(c);
            if c == '&' {
                out.push('-');
            }
        } else {
            wide.extend(c.encode_utf16(&mut [0; 2]).iter());
        }
    }
    flush(&mut wide, &mut out);
    out
}

/// Modified UTF-7 back to text; `None` unless it is well formed (printable ASCII outside the
/// shifts, whole UTF-16 inside them).
fn mutf7_decode(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let shifted = &rest[at + 1..];
        let end = shifted.find('-')?;
        if end == 0 {
            out.push('&');
        } else {
            let bytes = MUTF7_BASE64.decode(&shifted[..end]).ok()?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units = bytes
                .chunks(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            for c in char::decode_utf16(units) {
                out.push(c.ok()?);
            }
        }
        rest = &shifted[end + 1..];
    }
    out.push_str(rest);
    out.chars().all(|c| !c.is_ascii_control()).then_some(out)
}

/// A message file's identity: its name without the flags after `:2,` (a flag change renames
/// the file; it is the same message).
pub fn message_identity(file_name: &str) -> &str {
    file_name
        .find(INFO_SEPARATOR)
        .map_or(file_name, |at| &file_name[..at])
}

/// When dovecot saved (delivered) the message, in seconds since the Unix epoch: the leading
/// digits of its file name. `None` for a name that does not start with them.
pub fn delivery_time(file_name: &str) -> Option<i64> {
    let (seconds, _) = file_name.split_once('.')?;
    if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seconds.parse().ok()
}

/// A `--since`/`--before` date as seconds since the Unix epoch: `YYYY-MM-DD` is that day's
/// midnight in UTC (the same on every host, and the zone of the delivery times it is compared
/// with); RFC 3339 (`2026-11-30T08:00:00+01:00`, `...Z`, fractions dropped) is that instant.
pub fn parse_date(text: &str) -> Result<i64, NameError> {
    let refused = || NameError::Date(text.to_string());
    let (date, time) = match text.find(['T', 't']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let midnight = parse_day(date).ok_or_else(refused)?;
    let Some(time) = time else {
        return Ok(midnight);
    };
    let (clock, offset) = split_offset(time).ok_or_else(refused)?;
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let [hour, minute, second] = fixed_fields::<3>(hms, ':').ok_or_else(refused)?;
    if hms.len() != "HH:MM:SS".len()
        || hour > 23
        || minute > 59
        || second > 60
        || fraction.is_empty()
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(refused());
    }
    Ok(midnight + hour * 3600 + minute * 60 + second - offset)
}

/// Days of `YYYY-MM-DD` as its midnight, UTC, in seconds; `None` unless it is a real date.
fn parse_day(date: &str) -> Option<i64> {
    let [year, month, day] = fixed_fields::<3>(date, '-')?;
    if date.len() != 10 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = crate::format::manifest::days_from_civil(year, month, day);
    // Refuses the 30th of February: a real date comes back as itself.
    (crate::format::manifest::civil_from_days(days) == (year, month, day)).then_some(days * 86_400)
}

/// RFC 3339's `time-offset` split from the clock: `Z` or `±HH:MM`, as seconds east of UTC.
fn split_offset(time: &str) -> Option<(&str, i64)> {
    if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    let at = time.rfind(['+', '-'])?;
    let offset = &time[at + 1..];
    let [hours, minutes] = fixed_fields::<2>(offset, ':')?;
    if offset.len() != "HH:MM".len() || hours > 23 || minutes > 59 {
        return None;
    }
    let east = hours * 3600 + minutes * 60;
    Some((
        &time[..at],
        if time[at..].starts_with('-') {
            -east
        } else {
            east
        },
    ))
}

/// `text` as exactly `N` fields of ASCII digits separated by `separator`.
fn fixed_fields<const N: usize>(text: &str, separator: char) -> Option<[i64; N]> {
    let mut fields = [0; N];
    let mut parts = text.split(separator);
    for field in &mut fields {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 4 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *field = part.parse().ok()?;
    }
    parts.next().is_none().then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IMAP names and the directories the real dovecot 2.3 of the test image (mailcow's
    /// namespace and listescape settings) made for them with `doveadm mailbox create`.
    const DOVECOT_MADE: [(&str, &str); 12] = [
        ("Projects", ".Projects"),
        ("Projects/2025", ".Projects.2025"),
        ("v1.2", ".v1\\2e2"),
        ("a/.b", ".a.\\2eb"),
        (".dot", ".\\2edot"),
        ("back\\slash", ".back\\5cslash"),
        ("~tilde/~x", ".\\7etilde.\\7ex"),
        ("x~y", ".x~y"),
        ("Q&A", ".Q&-A"),
        ("Entwürfe", ".Entw&APw-rfe"),
        ("日本語/メール", ".&ZeVnLIqe-.&MOEw,DDr-"),
        ("INBOX/Sub", ".INBOX.Sub"),
    ];

    #[test]
    fn folder_names_map_to_the_directories_dovecot_makes_and_back() {
        for (name, dir) in DOVECOT_MADE {
            assert_eq!(folder_dir(name).unwrap(), dir, "{name}");
            assert_eq!(folder_name(dir).as_deref(), Some(name), "{dir}");
        }
    }

    #[test]
    fn inbox_is_the_maildir_itself_in_any_case() {
        for name in ["INBOX", "inbox", "Inbox"] {
            assert_eq!(folder_dir(name).unwrap(), INBOX_DIR);
        }
        assert_eq!(folder_name(INBOX_DIR).as_deref(), Some(INBOX));
    }

    #[test]
    fn bad_folder_names_are_refused() {
        for name in ["", "/a", "a/", "a//b"] {
            assert_eq!(folder_dir(name), Err(NameError::EmptyLevel(name.into())));
        }
        assert_eq!(
            folder_dir("a\tb"),
            Err(NameError::ControlCharacter("a\tb".into()))
        );
    }

    #[test]
    fn what_is_not_a_folder_directory_has_no_name() {
        for dir in [
            "cur",
            "dovecot-uidlist",
            ".",
            "..",
            ".a..b",
            ".a.",
            ".&Jjo",      // a shift never closed
            ".bad\\zz",   // not hex
            ".short\\2",  // a cut escape
            ".&2AA-",     // an unpaired surrogate
            ".ctl&AAk-x", // a tab
        ] {
            assert_eq!(folder_name(dir), None, "{dir}");
        }
    }

    #[test]
    fn identity_is_the_name_before_the_flags_and_time_is_the_leading_seconds() {
        let name = "1733900000.M417367P92.mail,S=1234,W=1260:2,RS";
        assert_eq!(
            message_identity(name),
            "1733900000.M417367P92.mail,S=1234,W=1260"
        );
        assert_eq!(
            message_identity("1733900000.M417367P92.mail,S=1234,W=1260:2,"),
            message_identity(name)
        );
        // In new/ a message has no flags yet.
        assert_eq!(
            message_identity("1733900000.M1P2.mail"),
            "1733900000.M1P2.mail"
        );
        assert_eq!(delivery_time(name), Some(1_733_900_000));
        for no_time in ["mail", ".1733900000", "17339x.M1", "", "-5.M1"] {
            assert_eq!(delivery_time(no_time), None, "{no_time}");
        }
    }

    #[test]
    fn dates_are_utc_days_or_rfc3339_instants() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("2026-12-07"), Ok(1_796_601_600));
        assert_eq!(parse_date("2024-02-29"), Ok(1_709_164_800));
        assert_eq!(parse_date("2026-12-07T00:00:00Z"), Ok(1_796_601_600));
        assert_eq!(parse_date("2026-12-07T01:30:00+01:30"), Ok(1_796_601_600));
        assert_eq!(
            parse_date("2026-12-06t22:00:00.999-02:00"),
            Ok(1_796_601_600)
        );
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-12-7",
            "07.12.2026",
            "2026-12-07T25:00:00Z",
            "2026-12-07T10:00:00",
            "2026-12-07T10:00Z",
            "2026-12-07T10:00:00+1",
            "2026-12-07T10:00:00.Z",
            "yesterday",
            "",
        ] {
            assert_eq!(parse_date(bad), Err(NameError::Date(bad.into())), "{bad}");
        }
    }
}

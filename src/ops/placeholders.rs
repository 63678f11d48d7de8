//! borg's placeholders in archive names, locations and comments (`helpers/parseformat.py:
//! replace_placeholders`, `docs/borg-cli.md` §3.1): `{hostname}`, `{now:%Y-%m-%d}`, `{utcnow}`,
//! `{user}`, ... expanded with Python's `str.format` rules, so that the archive names a borg
//! user's scripts produce today come out the same.
//!
//! Times go through the C library's `strftime`, as Python's do, after Python's own additions
//! (`%f` microseconds, `%z` offset, `%Z` zone name) are put in. Other keys take no format spec
//! beyond fill, alignment and width; anything more is refused rather than guessed.

/// The borg release whose behaviour we follow; `{borgversion}` and friends report it, so archive
/// names stay what they would be with that borg.
const BORG_VERSION: (u32, u32, u32) = (1, 4, 5);

/// Everything placeholders can expand to, gathered once per command.
#[derive(Clone, Debug)]
pub struct PlaceholderValues {
    /// Short host name (`BORG_HOSTNAME`, else the host name up to its first dot).
    pub hostname: String,
    pub fqdn: String,
    /// `BORG_USERNAME`, else the login name.
    pub user: String,
    pub pid: u32,
    pub uuid4: String,
    /// The time `{now}`/`{utcnow}` stand for, in microseconds since the epoch.
    pub now_micros: i64,
}

impl PlaceholderValues {
    /// This process's values on this host, at `now_micros`: the host name from the kernel,
    /// `BORG_HOSTNAME` and `BORG_USERNAME` over it as borg reads them, a fresh random UUID.
    pub fn here(now_micros: i64) -> PlaceholderValues {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let fqdn = host_name();
        let random: [u8; 16] = super::system::random_bytes();
        let h = crate::format::key::hex(&random);
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
}

/// This host's name as the kernel has it (borg's `{fqdn}`).
pub fn host_name() -> String {
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlaceholderError {
    #[error("invalid placeholder \"{key}\" in {text:?}")]
    Invalid { key: String, text: String },
    #[error("cannot expand {text:?}: {detail}")]
    Format {
        text: String,
        #[source]
        detail: FormatProblem,
    },
}

/// What is wrong with a template by Python's `str.format` rules, or with a field's format spec.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatProblem {
    #[error("single '}}' encountered")]
    SingleClosingBrace,
    #[error("nested fields are not supported")]
    NestedField,
    #[error("expected '}}' before end of string")]
    UnclosedField,
    #[error("unsupported format spec {0:?}")]
    UnsupportedSpec(String),
    #[error("NUL in format")]
    NulInTimeFormat,
    #[error("the time is not UTF-8")]
    TimeNotUtf8,
}

enum Value {
    Text(String),
    Number(i64),
    Time { micros: i64, utc: bool },
}

impl PlaceholderValues {
    fn lookup(&self, key: &str) -> Option<Value> {
        let (major, minor, patch) = BORG_VERSION;
        let text = |s: String| Some(Value::Text(s));
        match key {
            "pid" => Some(Value::Number(self.pid.into())),
            "fqdn" => text(self.fqdn.clone()),
            "reverse-fqdn" => text(self.fqdn.split('.').rev().collect::<Vec<_>>().join(".")),
            "hostname" => text(self.hostname.clone()),
            "now" => Some(Value::Time {
                micros: self.now_micros,
                utc: false,
            }),
            "utcnow" => Some(Value::Time {
                micros: self.now_micros,
                utc: true,
            }),
            "unixtime" => Some(Value::Number(self.now_micros.div_euclid(1_000_000))),
            "user" => text(self.user.clone()),
            "uuid4" => text(self.uuid4.clone()),
            "borgversion" | "borgpatch" => text(format!("{major}.{minor}.{patch}")),
            "borgmajor" => text(major.to_string()),
            "borgminor" => text(format!("{major}.{minor}")),
            _ => None,
        }
    }
}

/// Expands the placeholders in `text`.
pub fn expand(text: &str, values: &PlaceholderValues) -> Result<String, PlaceholderError> {
    substitute(text, values, false)
}

/// The archive glob (`-a`) that selects every name `text` expands to on this host: what varies
/// from run to run (`{now}`, `{utcnow}`, `{unixtime}`, `{uuid4}`, `{pid}`) becomes `*`, the
/// rest is expanded, and glob characters of the literal text are escaped (`[*]`, `[?]`, `[[]`),
/// so `backup`'s retention touches no archive of another name.
pub fn name_glob(text: &str, values: &PlaceholderValues) -> Result<String, PlaceholderError> {
    substitute(text, values, true)
}

/// Whether a placeholder's value differs from one run to the next.
fn varies(key: &str) -> bool {
    matches!(key, "now" | "utcnow" | "unixtime" | "uuid4" | "pid")
}

fn push_literal(out: &mut String, c: char, glob: bool) {
    match c {
        '*' | '?' | '[' if glob => {
            out.push('[');
            out.push(c);
            out.push(']');
        }
        _ => out.push(c),
    }
}

/// Python's `str.format` walk over `text`: expanded, or as a glob of its expansions.
fn substitute(
    text: &str,
    values: &PlaceholderValues,
    glob: bool,
) -> Result<String, PlaceholderError> {
    let format_error = |detail: FormatProblem| PlaceholderError::Format {
        text: text.to_string(),
        detail,
    };
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                push_literal(&mut out, '{', glob);
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                push_literal(&mut out, '}', glob);
            }
            '}' => return Err(format_error(FormatProblem::SingleClosingBrace)),
            '{' => {
                let mut field = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') => return Err(format_error(FormatProblem::NestedField)),
                        Some(c) => field.push(c),
                        None => return Err(format_error(FormatProblem::UnclosedField)),
                    }
                }
                let (name, spec) = field.split_once(':').unwrap_or((&field, ""));
                // A conversion (`!r`) or an unknown key is "invalid", as in borg.
                let value = (!name.contains('!'))
                    .then(|| values.lookup(name))
                    .flatten()
                    .ok_or_else(|| PlaceholderError::Invalid {
                        key: name.to_string(),
                        text: text.to_string(),
                    })?;
                let rendered = render(value, spec).map_err(format_error)?;
                if !glob {
                    out.push_str(&rendered);
                } else if varies(name) {
                    // One star however many fields: globs collapse runs of stars anyway.
                    if !out.ends_with('*') || out.ends_with("[*]") {
                        out.push('*');
                    }
                } else {
                    rendered
                        .chars()
                        .for_each(|c| push_literal(&mut out, c, true));
                }
            }
            other => push_literal(&mut out, other, glob),
        }
    }
    Ok(out)
}

fn render(value: Value, spec: &str) -> Result<String, FormatProblem> {
    match value {
        Value::Time { micros, utc } => {
            let spec = if spec.is_empty() {
                "%Y-%m-%dT%H:%M:%S"
            } else {
                spec
            };
            strftime(micros, utc, spec)
        }
        Value::Text(text) => pad(text, spec, '<'),
        Value::Number(n) => pad(n.to_string(), spec, '>'),
    }
}

/// Python's `[[fill]align][width]` (strings align left by default, numbers right).
fn pad(text: String, spec: &str, default_align: char) -> Result<String, FormatProblem> {
    if spec.is_empty() {
        return Ok(text);
    }
    let chars: Vec<char> = spec.chars().collect();
    let is_align = |c: char| matches!(c, '<' | '>' | '^');
    let (fill, align, rest) = match chars.as_slice() {
        [f, a, rest @ ..] if is_align(*a) => (*f, *a, rest),
        [a, rest @ ..] if is_align(*a) => (' ', *a, rest),
        rest => (' ', default_align, rest),
    };
    let width: String = rest.iter().collect();
    let width: usize = width
        .parse()
        .map_err(|_| FormatProblem::UnsupportedSpec(spec.to_string()))?;
    let missing = width.saturating_sub(text.chars().count());
    let fill_str = |n: usize| fill.to_string().repeat(n);
    Ok(match align {
        '<' => text + &fill_str(missing),
        '>' => fill_str(missing) + &text,
        _ => fill_str(missing / 2) + &text + &fill_str(missing - missing / 2),
    })
}

/// `datetime.__format__`: Python's `%f`, `%z`, `%Z` first, the rest by the C library.
fn strftime(micros: i64, utc: bool, spec: &str) -> Result<String, FormatProblem> {
    let seconds = micros.div_euclid(1_000_000) as libc::time_t;
    // SAFETY: `tm` is plain data, filled by gmtime_r/localtime_r from a valid time_t; both are
    // the thread-safe variants and touch nothing else.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe {
        if utc {
            libc::gmtime_r(&seconds, &mut tm);
        } else {
            libc::localtime_r(&seconds, &mut tm);
        }
    }
    let offset = if utc { 0 } else { tm.tm_gmtoff };
    let mut wrapped = String::new();
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            wrapped.push(c);
            continue;
        }
        match chars.next() {
            Some('f') => wrapped.push_str(&format!("{:06}", micros.rem_euclid(1_000_000))),
            Some('z') => {
                let sign = if offset < 0 { '-' } else { '+' };
                let minutes = offset.abs() / 60;
                wrapped.push_str(&format!("{sign}{:02}{:02}", minutes / 60, minutes % 60));
            }
            Some('Z') if utc => wrapped.push_str("UTC"),
            Some(other) => {
                wrapped.push('%');
                wrapped.push(other);
            }
            None => wrapped.push('%'),
        }
    }
    let format = std::ffi::CString::new(wrapped).map_err(|_| FormatProblem::NulInTimeFormat)?;
    let mut buf = vec![0u8; 256 + 4 * spec.len()];
    // SAFETY: `buf` is writable for its length, `format` is NUL-terminated, `tm` is valid.
    let written =
        unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm) };
    buf.truncate(written);
    String::from_utf8(buf).map_err(|_| FormatProblem::TimeNotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> PlaceholderValues {
        PlaceholderValues {
            hostname: "mail".into(),
            fqdn: "mail.example.org".into(),
            user: "root".into(),
            pid: 4242,
            uuid4: "9412f359-0000-4000-8000-000000000000".into(),
            now_micros: 1_795_898_147_123_456,
        }
    }

    #[test]
    fn a_name_pattern_becomes_the_glob_of_its_names() {
        let v = values();
        assert_eq!(
            name_glob("{hostname}-mailcow-{now}", &v).unwrap(),
            "mail-mailcow-*"
        );
        assert_eq!(
            name_glob("{fqdn}*{user}?[x]-{utcnow:%Y}{now:%H}-{uuid4}.{pid}", &v).unwrap(),
            "mail.example.org[*]root[?][[]x]-*-*.*"
        );
        assert_eq!(name_glob("{{now}}-{unixtime}", &v).unwrap(), "{now}-*");
        assert!(name_glob("{nope}", &v).is_err());
        // The glob selects what the pattern expands to, at any time, and nothing else.
        let glob =
            crate::ops::patterns::ArchiveGlob::parse(&name_glob("{hostname}-*-{now}", &v).unwrap());
        let later = PlaceholderValues {
            now_micros: v.now_micros + 86_400_000_000,
            ..v.clone()
        };
        assert!(glob.matches(expand("{hostname}-*-{now}", &later).unwrap().as_bytes()));
        assert!(!glob.matches(b"mail-x-2026-11-28T20:35:47"));
        assert!(!glob.matches(b"other-*-2026-11-28T20:35:47"));
    }

    #[test]
    fn keys_braces_and_errors() {
        let v = values();
        assert_eq!(
            expand("{hostname}-{utcnow}-{{lit}}", &v).unwrap(),
            "mail-2026-11-28T20:35:47-{lit}"
        );
        assert_eq!(
            expand("{reverse-fqdn}|{pid:>6}|{borgminor}", &v).unwrap(),
            "org.example.mail|  4242|1.4"
        );
        assert_eq!(
            expand("{utcnow:%Y%m%d %f %z %Z}", &v).unwrap(),
            "20261128 123456 +0000 UTC"
        );
        assert!(matches!(
            expand("{nope}", &v),
            Err(PlaceholderError::Invalid { .. })
        ));
        assert!(matches!(
            expand("{user!r}", &v),
            Err(PlaceholderError::Invalid { .. })
        ));
        assert!(matches!(
            expand("a}b", &v),
            Err(PlaceholderError::Format { .. })
        ));
        assert!(matches!(
            expand("{now", &v),
            Err(PlaceholderError::Format { .. })
        ));
        // The messages are Python's.
        assert_eq!(
            expand("a}b", &v).unwrap_err().to_string(),
            "cannot expand \"a}b\": single '}' encountered"
        );
        assert_eq!(
            expand("{now", &v).unwrap_err().to_string(),
            "cannot expand \"{now\": expected '}' before end of string"
        );
        assert_eq!(
            expand("{pid:x}", &v).unwrap_err(),
            PlaceholderError::Format {
                text: "{pid:x}".into(),
                detail: FormatProblem::UnsupportedSpec("x".into())
            }
        );
    }
}

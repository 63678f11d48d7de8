//! borg's path patterns (`patterns.py`, `docs/borg-cli.md` §4): `--exclude` and PATH selectors with
//! the styles `fm:` (fnmatch: `*` crosses `/`), `sh:` (shell: `*` stops at `/`, `**/` spans
//! directories), `pp:` (path prefix) and `pf:` (full path).
//!
//! Each style is borg's rewrite of the pattern followed by an anchored match against the path
//! with a `/` appended — which is what makes `fm:a/b` also match everything below `a/b`, and a
//! trailing `/` mean "the contents, not the directory". Matching is on characters, as Python's is
//! on `str`: a path byte that is not UTF-8 counts as one character, like the lone surrogate
//! Python's `surrogateescape` makes of it.
//!
//! `re:` patterns need a regular expression engine with Python's syntax and are not supported
//! yet; they are refused with a clear error rather than half-matched.

use crate::format::text::{self, Unit};
use crate::repo::location::normpath;

/// A pattern style; `fm` is borg's default for `--exclude`, `pp` for extract's PATHs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Fnmatch,
    Shell,
    PathPrefix,
    PathFull,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("unknown pattern style {0:?} (borg's styles: fm, sh, re, pp, pf)")]
    UnknownStyle(String),
    #[error("re: patterns are not supported yet; use sh: or fm: ({0:?})")]
    RegexUnsupported(String),
}

/// One glob element.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Char(u32),
    /// `*`: any run of characters; `crosses` says whether it may include `/`.
    AnyRun {
        crosses: bool,
    },
    /// `?`: one character (`/` only when `crosses`).
    AnyOne {
        crosses: bool,
    },
    /// `[...]`: one character in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(u32, u32)>,
    },
    /// `**/` in shell patterns: zero or more whole directory names, each with its `/`.
    AnyDirs,
}

#[derive(Clone, Debug)]
enum Matcher {
    Glob(Vec<Token>),
    Prefix(Vec<u32>),
    Full(Vec<u32>),
}

/// A parsed pattern, ready to match archive paths.
#[derive(Clone, Debug)]
pub struct Pattern {
    /// As the user wrote it, for messages.
    pub text: String,
    matcher: Matcher,
}

const SLASH: u32 = '/' as u32;

/// Text as Python sees it after `surrogateescape`: one code point per character or stray byte.
fn units(bytes: &[u8]) -> Vec<u32> {
    text::decode(bytes)
        .into_iter()
        .map(Unit::code_point)
        .collect()
}

impl Pattern {
    /// Parses `text`, which may start with a style prefix (`sh:`); otherwise `default` applies.
    pub fn parse(text: &str, default: Style) -> Result<Pattern, PatternError> {
        let bytes = text.as_bytes();
        let (style, body) = if bytes.len() > 2
            && bytes[2] == b':'
            && bytes[..2].iter().all(u8::is_ascii_alphanumeric)
        {
            let style = match &text[..2] {
                "fm" => Style::Fnmatch,
                "sh" => Style::Shell,
                "pp" => Style::PathPrefix,
                "pf" => Style::PathFull,
                "re" => return Err(PatternError::RegexUnsupported(text.to_string())),
                other => return Err(PatternError::UnknownStyle(other.to_string())),
            };
            (style, &text[3..])
        } else {
            (default, text)
        };
        Ok(Pattern {
            text: text.to_string(),
            matcher: prepare(style, body),
        })
    }

    /// Whether the archive path `path` (no leading `/`) matches.
    pub fn matches(&self, path: &[u8]) -> bool {
        let mut path = units(path);
        match &self.matcher {
            Matcher::Full(pattern) => path == *pattern,
            Matcher::Prefix(pattern) => {
                path.push(SLASH);
                path.starts_with(pattern)
            }
            Matcher::Glob(tokens) => {
                path.push(SLASH);
                glob(tokens, &path)
            }
        }
    }
}

/// An archive name glob, `-a/--glob-archives` (borg's `shellpattern.translate` matched against
/// the whole name): `*` and `?` do not cross `/`, `**/` is any run of `name/` groups, `[...]`
/// classes as in paths.
#[derive(Clone, Debug)]
pub struct ArchiveGlob(Vec<Token>);

impl ArchiveGlob {
    pub fn parse(text: &str) -> ArchiveGlob {
        ArchiveGlob(tokens(&units(text.as_bytes()), false))
    }

    pub fn matches(&self, name: &[u8]) -> bool {
        glob(&self.0, &units(name))
    }
}

/// borg's `_prepare` of each style: normalise, add the suffix that makes a directory pattern
/// cover its contents, drop leading slashes.
fn prepare(style: Style, body: &str) -> Matcher {
    let trailing = body.ends_with('/');
    let normal = normpath(body);
    let stripped = normal.trim_end_matches('/');
    let unit = |s: &str| units(s.trim_start_matches('/').as_bytes());
    match style {
        Style::PathFull => Matcher::Full(unit(&normal)),
        Style::PathPrefix => Matcher::Prefix(unit(&format!("{stripped}/"))),
        Style::Fnmatch => {
            let pattern = if trailing {
                format!("{stripped}/*/")
            } else {
                format!("{normal}/*")
            };
            Matcher::Glob(tokens(&unit(&pattern), true))
        }
        Style::Shell => {
            let pattern = if trailing {
                format!("{stripped}/**/*/")
            } else {
                format!("{normal}/**/*")
            };
            Matcher::Glob(tokens(&unit(&pattern), false))
        }
    }
}

/// Translates a glob (`fnmatch.translate` when `fnmatch`, else `shellpattern.translate`).
fn tokens(pattern: &[u32], fnmatch: bool) -> Vec<Token> {
    let star = '*' as u32;
    let mut out = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        let c = pattern[i];
        i += 1;
        match char::from_u32(c) {
            Some('*')
                if !fnmatch
                    && pattern.get(i) == Some(&star)
                    && pattern.get(i + 1) == Some(&SLASH) =>
            {
                out.push(Token::AnyDirs);
                i += 2;
            }
            Some('*') => {
                // fnmatch collapses runs of stars; one is the same as many.
                if out.last() != Some(&Token::AnyRun { crosses: fnmatch }) {
                    out.push(Token::AnyRun { crosses: fnmatch });
                }
            }
            Some('?') => out.push(Token::AnyOne { crosses: fnmatch }),
            Some('[') => match class(pattern, i) {
                Some((token, next)) => {
                    out.push(token);
                    i = next;
                }
                None => out.push(Token::Char(c)),
            },
            _ => out.push(Token::Char(c)),
        }
    }
    out
}

/// A `[...]` class starting after the `[` at `start`: the token and the index after `]`, or
/// `None` when there is no closing bracket (then `[` is literal).
fn class(pattern: &[u32], start: usize) -> Option<(Token, usize)> {
    let bang = '!' as u32;
    let close = ']' as u32;
    let mut j = start;
    if pattern.get(j) == Some(&bang) {
        j += 1;
    }
    if pattern.get(j) == Some(&close) {
        j += 1;
    }
    while j < pattern.len() && pattern[j] != close {
        j += 1;
    }
    if j >= pattern.len() {
        return None;
    }
    let mut body = &pattern[start..j];
    let negated = body.first() == Some(&bang);
    if negated {
        body = &body[1..];
    }
    let dash = '-' as u32;
    let mut ranges = Vec::new();
    let mut k = 0;
    while k < body.len() {
        if k + 2 < body.len() && body[k + 1] == dash {
            ranges.push((body[k], body[k + 2]));
            k += 3;
        } else {
            ranges.push((body[k], body[k]));
            k += 1;
        }
    }
    Some((Token::Class { negated, ranges }, j + 1))
}

/// Anchored match of the whole `text` (backtracking; patterns are short).
fn glob(tokens: &[Token], text: &[u32]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    match first {
        Token::Char(c) => text.first() == Some(c) && glob(rest, &text[1..]),
        Token::AnyOne { crosses } => {
            text.first().is_some_and(|c| *crosses || *c != SLASH) && glob(rest, &text[1..])
        }
        Token::Class { negated, ranges } => {
            text.first()
                .is_some_and(|c| ranges.iter().any(|(lo, hi)| lo <= c && c <= hi) != *negated)
                && glob(rest, &text[1..])
        }
        Token::AnyRun { crosses } => {
            let limit = if *crosses {
                text.len()
            } else {
                text.iter().position(|c| *c == SLASH).unwrap_or(text.len())
            };
            (0..=limit).any(|skip| glob(rest, &text[skip..]))
        }
        Token::AnyDirs => {
            // Zero or more "name/" groups: try after each slash.
            glob(rest, text)
                || text
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == SLASH)
                    .any(|(i, _)| glob(rest, &text[i + 1..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        Pattern::parse(pattern, Style::Fnmatch)
            .unwrap()
            .matches(path.as_bytes())
    }

    #[test]
    fn styles_follow_borgs_rules() {
        // Examples from borg's documentation of `borg help patterns`.
        assert!(m("*.o", "home/a/b.o"));
        assert!(!m("*.o", "home/a/c.odt"));
        assert!(m("fm:home/user", "home/user/x/y"));
        assert!(m("sh:home/*/junk", "home/user/junk/file"));
        assert!(!m("sh:home/*/junk", "home/user/sub/junk"));
        assert!(m("sh:**/junk", "a/b/junk"));
        assert!(m("pp:home/user", "home/user"));
        assert!(!m("pp:home/user", "home/username"));
        assert!(m("pf:/home/user/file", "home/user/file"));
        assert!(!m("pf:home/user", "home/user/file"));
        // A trailing slash: the contents, not the directory.
        assert!(!m("home/user/.cache/", "home/user/.cache"));
        assert!(m("home/user/.cache/", "home/user/.cache/x"));
        assert_eq!(
            Pattern::parse("xx:a", Style::Fnmatch).unwrap_err(),
            PatternError::UnknownStyle("xx".into())
        );
        assert!(matches!(
            Pattern::parse("re:a", Style::Fnmatch),
            Err(PatternError::RegexUnsupported(_))
        ));
    }

    #[test]
    fn archive_globs_match_whole_names() {
        let g = |pattern: &str, name: &str| ArchiveGlob::parse(pattern).matches(name.as_bytes());
        assert!(g("mail-*", "mail-2026-12-06"));
        assert!(!g("mail-*", "web-mail-2026"));
        assert!(g("h-2025-0[13]*", "h-2025-03-15"));
        assert!(!g("h-2025-0[13]*", "h-2025-02-10"));
        assert!(g("a?c", "abc"));
        assert!(!g("a", "ab"));
    }
}

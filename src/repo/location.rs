//! Repository locations, parsed exactly as borg 1.x parses them (`helpers/parseformat.py:
//! Location`), so that every URL a borg user already has in a script works unchanged:
//!
//! - `ssh://[user@]host[:port]/abs/path`, `ssh://host/./rel-to-cwd`, `ssh://host/~/rel-to-home`;
//! - scp style `[user@]host:path` (relative paths are relative to the login directory);
//! - `file:///abs/path`, and plain local paths;
//! - each optionally followed by `::archive`; an empty location or a bare `::archive` takes the
//!   repository from `BORG_REPO`.
//!
//! Borg does this with regular expressions; the rules below are the same rules written out. The
//! path is sent to `borg serve` as parsed (the server resolves `~` and `/./`,
//! `docs/borg-format.md` §1.1), after Python's `os.path.normpath` with borg's exception that keeps
//! a leading `/./`.

use std::fmt;

/// Where a repository is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repo {
    /// A path on this machine.
    Local { path: String },
    /// A path on an SSH server, as the server's `borg serve` should see it.
    Ssh(SshTarget),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    /// Host name or address; IPv6 addresses without their brackets.
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
}

/// A repository and, optionally, an archive in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub repo: Repo,
    pub archive: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    #[error(
        "invalid repository location {0:?}: expected ssh://[user@]host[:port]/path, [user@]host:path or a local path, optionally followed by ::ARCHIVE"
    )]
    Invalid(String),
    #[error("no repository given, and BORG_REPO is not set")]
    NoRepository,
    #[error("port {0} in {1:?} is not a valid TCP port")]
    BadPort(String, String),
}

impl Location {
    /// Parses `text` as borg does; `borg_repo` is the value of `BORG_REPO`, used when `text` is
    /// empty or only `::archive`.
    pub fn parse(text: &str, borg_repo: Option<&str>) -> Result<Location, LocationError> {
        if let Some(location) = parse_full(text)? {
            return Ok(location);
        }
        // Only the archive part (or nothing): the repository comes from BORG_REPO.
        let archive = match text {
            "" | "::" => None,
            _ => match text.strip_prefix("::") {
                Some(name) if !name.contains('/') => Some(name.to_string()),
                _ => return Err(LocationError::Invalid(text.to_string())),
            },
        };
        let repo_text = borg_repo.ok_or(LocationError::NoRepository)?;
        match parse_full(repo_text)? {
            Some(location) if location.archive.is_none() || archive.is_none() => Ok(Location {
                archive: archive.or(location.archive),
                repo: location.repo,
            }),
            _ => Err(LocationError::Invalid(repo_text.to_string())),
        }
    }

    /// The URL borg records in the security dir's `location` file (`canonical_path`).
    pub fn canonical(&self) -> String {
        match &self.repo {
            // Python's `os.path.abspath`: absolute, then normalised lexically.
            Repo::Local { path } => std::path::absolute(path)
                .map(|p| normpath(&p.display().to_string()))
                .unwrap_or_else(|_| path.clone()),
            Repo::Ssh(t) => {
                let path = if t.path.starts_with('~') {
                    format!("/{}", t.path)
                } else if !t.path.starts_with('/') {
                    format!("/./{}", t.path)
                } else {
                    t.path.clone()
                };
                let user = t.user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
                let port = t.port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("ssh://{user}{}{port}{path}", bracketed(&t.host))
            }
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())?;
        match &self.archive {
            Some(archive) => write!(f, "::{archive}"),
            None => Ok(()),
        }
    }
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The `ssh://`, `file://` and scp/local forms; `None` if none of them matches.
fn parse_full(text: &str) -> Result<Option<Location>, LocationError> {
    if let Some(rest) = text.strip_prefix("ssh://") {
        return parse_ssh_url(text, rest);
    }
    if let Some(rest) = text.strip_prefix("file://") {
        // `file://[server]/path`: the path keeps its slash, the server part is ignored.
        let Some(slash) = rest.find('/') else {
            return Ok(None);
        };
        return Ok(split_path_archive(&rest[slash..])
            .filter(|(path, _)| path.len() > 1)
            .map(|(path, archive)| Location {
                repo: Repo::Local {
                    path: normpath_special(path),
                },
                archive,
            }));
    }
    Ok(parse_scp(text))
}

fn parse_ssh_url(text: &str, rest: &str) -> Result<Option<Location>, LocationError> {
    let (user, rest) = split_user(rest);
    let Some((host, rest)) = split_host(rest) else {
        return Ok(None);
    };
    let (port, rest) = match rest.strip_prefix(':') {
        Some(after) => {
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return Ok(None);
            }
            let port = &after[..digits];
            let port = port
                .parse::<u16>()
                .map_err(|_| LocationError::BadPort(port.to_string(), text.to_string()))?;
            (Some(port), &after[digits..])
        }
        None => (None, rest),
    };
    // The path is absolute and at least one character after its slash.
    if !rest.starts_with('/') {
        return Ok(None);
    }
    Ok(split_path_archive(rest)
        .filter(|(path, _)| path.len() > 1)
        .map(|(path, archive)| Location {
            repo: Repo::Ssh(SshTarget {
                user: user.map(str::to_string),
                host: unbracket(host).to_string(),
                port,
                path: normpath_special(path),
            }),
            archive,
        }))
}

/// scp style `[user@]host:path`, or else a local path.
fn parse_scp(text: &str) -> Option<Location> {
    let (user, rest) = split_user(text);
    if let Some((host, after_host)) = split_host(rest)
        && let Some(path_part) = after_host.strip_prefix(':')
        && let Some(location) = scp_path(path_part)
    {
        let Location { repo, archive } = location;
        let Repo::Local { path } = repo else {
            unreachable!("scp_path makes local locations")
        };
        return Some(Location {
            repo: Repo::Ssh(SshTarget {
                user: user.map(str::to_string),
                host: unbracket(host).to_string(),
                port: None,
                path,
            }),
            archive,
        });
    }
    // Without the `user@host:` part the whole text is a local path.
    scp_path(text)
}

/// A path in scp syntax: not starting with `:`, `//` or `ssh://`, no `::` inside.
fn scp_path(text: &str) -> Option<Location> {
    if text.starts_with(':') || text.starts_with("//") || text.starts_with("ssh://") {
        return None;
    }
    split_path_archive(text)
        .filter(|(path, _)| !path.is_empty())
        .map(|(path, archive)| Location {
            repo: Repo::Local {
                path: normpath_special(path),
            },
            archive,
        })
}

/// `user@` is optional; a user contains no `@`, `:` or `/`.
fn split_user(text: &str) -> (Option<&str>, &str) {
    match text.find(['@', ':', '/']) {
        Some(at) if at > 0 && text.as_bytes()[at] == b'@' => (Some(&text[..at]), &text[at + 1..]),
        _ => (None, text),
    }
}

/// A host name or IPv4 address (no `:` or `/`, not bracketed), or an IPv6 address in brackets.
fn split_host(text: &str) -> Option<(&str, &str)> {
    if text.starts_with('[') {
        let close = text.find(']')?;
        let inside = &text[1..close];
        let valid = !inside.is_empty()
            && inside
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        return valid.then(|| (&text[..=close], &text[close + 1..]));
    }
    let end = text.find([':', '/']).unwrap_or(text.len());
    let host = &text[..end];
    (!host.is_empty() && !host.ends_with(']')).then(|| (host, &text[end..]))
}

fn unbracket(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Splits `path[::archive]`: the path ends at the first `::`; an archive name is not empty and
/// has no `/`.
fn split_path_archive(text: &str) -> Option<(&str, Option<String>)> {
    match text.find("::") {
        None => Some((text, None)),
        Some(i) => {
            let archive = &text[i + 2..];
            (!archive.is_empty() && !archive.contains('/'))
                .then(|| (&text[..i], Some(archive.to_string())))
        }
    }
}

/// `os.path.normpath`, except that a leading `/./` (borg's "relative to the server's working
/// directory" marker) survives.
fn normpath_special(path: &str) -> String {
    let normalized = normpath(path);
    if path.starts_with("/./") {
        format!("/.{normalized}")
    } else {
        normalized
    }
}

/// Python's `posixpath.normpath`: lexical, no file system access (patterns use it too).
pub fn normpath(path: &str) -> String {
    String::from_utf8(normpath_bytes(path.as_bytes())).expect("only ASCII separators are removed")
}

/// [`normpath`] on raw path bytes (file names need not be UTF-8).
pub fn normpath_bytes(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    // POSIX lets exactly two leading slashes mean something else, so Python keeps them.
    let leading = if path.starts_with(b"//") && !path.starts_with(b"///") {
        2
    } else if path.starts_with(b"/") {
        1
    } else {
        0
    };
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if leading > 0 && parts.is_empty() => {}
            b".." if parts.last().is_some_and(|p| *p != b"..") => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut joined = b"/".repeat(leading);
    joined.extend_from_slice(&parts.join(&b'/'));
    if joined.is_empty() {
        b".".to_vec()
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> Repo {
        Repo::Ssh(SshTarget {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    fn local(path: &str) -> Repo {
        Repo::Local {
            path: path.to_string(),
        }
    }

    fn parse(text: &str) -> (Repo, Option<String>) {
        let location = Location::parse(text, None).unwrap_or_else(|e| panic!("{text}: {e}"));
        (location.repo, location.archive)
    }

    // Expected values are what borg 1.4.5's `Location` gives for the same text.
    #[test]
    fn ssh_urls() {
        assert_eq!(
            parse("ssh://user@host:1234/some/path::archive"),
            (
                ssh(Some("user"), "host", Some(1234), "/some/path"),
                Some("archive".into())
            )
        );
        assert_eq!(
            parse("ssh://host/./rel/repo"),
            (ssh(None, "host", None, "/./rel/repo"), None)
        );
        assert_eq!(
            parse("ssh://host/~/repo"),
            (ssh(None, "host", None, "/~/repo"), None)
        );
        assert_eq!(
            parse("ssh://u@[2001:db8::1]:22/srv//repo/./x/../y"),
            (ssh(Some("u"), "2001:db8::1", Some(22), "/srv/repo/y"), None)
        );
        assert_eq!(
            parse("ssh://host/path:with:colons::a:b"),
            (
                ssh(None, "host", None, "/path:with:colons"),
                Some("a:b".into())
            )
        );
    }

    #[test]
    fn scp_style_and_local() {
        assert_eq!(
            parse("user@host:repo"),
            (ssh(Some("user"), "host", None, "repo"), None)
        );
        assert_eq!(
            parse("host:~/repo::x"),
            (ssh(None, "host", None, "~/repo"), Some("x".into()))
        );
        assert_eq!(
            parse("[::1]:/srv/repo"),
            (ssh(None, "::1", None, "/srv/repo"), None)
        );
        assert_eq!(
            parse("/srv/repo::a"),
            (local("/srv/repo"), Some("a".into()))
        );
        assert_eq!(parse("repo"), (local("repo"), None));
        assert_eq!(parse("./a/../b/"), (local("b"), None));
        // A slash before the first colon makes it a local path.
        assert_eq!(parse("dir/x:y"), (local("dir/x:y"), None));
        // `host:` with nothing after is not a remote location; borg takes it as a local path.
        assert_eq!(parse("host:"), (local("host:"), None));
        assert_eq!(
            parse("file:///tmp/r::a"),
            (local("/tmp/r"), Some("a".into()))
        );
    }

    #[test]
    fn borg_repo_fills_in_the_repository() {
        let from_env = |text: &str| Location::parse(text, Some("ssh://h/r")).unwrap();
        assert_eq!(from_env("::arch").archive.as_deref(), Some("arch"));
        assert_eq!(from_env("").repo, ssh(None, "h", None, "/r"));
        assert_eq!(from_env("::").archive, None);
        assert_eq!(
            Location::parse("::a", None),
            Err(LocationError::NoRepository)
        );
    }

    #[test]
    fn invalid_locations_are_refused() {
        for text in [
            "ssh://host",
            "ssh://host/",
            "ssh://host:x/p",
            "repo::a/b",
            ":repo",
        ] {
            assert!(Location::parse(text, None).is_err(), "{text}");
        }
        assert!(matches!(
            Location::parse("ssh://h:99999/p", None),
            Err(LocationError::BadPort(..))
        ));
    }

    #[test]
    fn canonical_urls_match_borgs() {
        let canonical = |text: &str| Location::parse(text, None).unwrap().canonical();
        assert_eq!(canonical("u@h:repo"), "ssh://u@h/./repo");
        assert_eq!(canonical("h:~/repo"), "ssh://h/~/repo");
        assert_eq!(canonical("ssh://h:2222/srv/r"), "ssh://h:2222/srv/r");
        assert_eq!(canonical("[::1]:/r"), "ssh://[::1]/r");
        assert_eq!(canonical("/srv/r"), "/srv/r");
    }

    #[test]
    fn normpath_is_pythons() {
        for (input, expected) in [
            ("", "."),
            ("/", "/"),
            ("//a", "//a"),
            ("///a//b/", "/a/b"),
            ("/../a", "/a"),
            ("../a/..", ".."),
            ("a/./b/../../..", ".."),
        ] {
            assert_eq!(normpath(input), expected, "{input}");
        }
    }
}

//! Host key verification against an OpenSSH `known_hosts` file.
//!
//! We have no `ssh` binary to defer to, so this is the check `ssh` would make with
//! `StrictHostKeyChecking=yes` (or `accept-new`, when the user opts in):
//!
//! - entries name hosts by patterns (`host`, `*.example.org`, `!bad.example.org`, `[host]:2222`)
//!   or by a salted HMAC-SHA1 of the name (`|1|salt|hash`, written by `HashKnownHosts yes`);
//!   a host on a port other than 22 is looked up as `[host]:port`, as OpenSSH does;
//! - a key of a matching entry equal to the server's key means known; a `@revoked` entry with that
//!   key refuses it; a host that has entries but none with this key has *changed* its key, which
//!   is refused even with `accept-new` (that is the man-in-the-middle case);
//! - lines that do not parse (unknown key types, `@cert-authority` lines) are skipped, like ssh
//!   skips them, rather than failing the whole file.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::ssh_key::{HashAlg, PublicKey};

/// What the file says about a host and the key it presented.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Known,
    /// No entry matches the host.
    Unknown,
    /// Entries for the host exist, none with this key; `line` is the first such entry (1-based).
    Changed {
        line: usize,
    },
    /// The key is listed as `@revoked` on `line`.
    Revoked {
        line: usize,
    },
}

/// The parsed entries of one known_hosts file.
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<(usize, Entry)>,
}

impl KnownHosts {
    /// Reads `path`; a missing file has no entries.
    pub fn load(path: &Path) -> std::io::Result<KnownHosts> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let entries = text
            .lines()
            .enumerate()
            .filter_map(|(i, line)| {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    return None;
                }
                line.parse::<Entry>().ok().map(|entry| (i + 1, entry))
            })
            .collect();
        Ok(KnownHosts {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks `key` presented by `host` on `port`.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let name = lookup_name(host, port);
        let mut first_other = None;
        let mut known = false;
        for (line, entry) in &self.entries {
            if !host_matches(entry.host_patterns(), &name) {
                continue;
            }
            let same_key = entry.public_key().key_data() == key.key_data();
            match entry.marker() {
                Some(Marker::Revoked) if same_key => return Verdict::Revoked { line: *line },
                Some(_) => {}
                None if same_key => known = true,
                None => {
                    first_other.get_or_insert(*line);
                }
            }
        }
        match (known, first_other) {
            (true, _) => Verdict::Known,
            (false, Some(line)) => Verdict::Changed { line },
            (false, None) => Verdict::Unknown,
        }
    }

    /// The key algorithms the file knows for this host, so the client can ask the server for one
    /// of those first (as OpenSSH does) instead of being offered a type it cannot verify.
    pub fn known_algorithms(&self, host: &str, port: u16) -> Vec<russh::keys::Algorithm> {
        let name = lookup_name(host, port);
        let mut algorithms = Vec::new();
        for (_, entry) in &self.entries {
            if entry.marker().is_none() && host_matches(entry.host_patterns(), &name) {
                let algorithm = entry.public_key().algorithm();
                if !algorithms.contains(&algorithm) {
                    algorithms.push(algorithm);
                }
            }
        }
        algorithms
    }
}

/// The known_hosts line that records `key` for `host`/`port`.
pub fn entry_line(host: &str, port: u16, key: &PublicKey) -> String {
    let key_text = key.to_openssh().unwrap_or_default();
    // `to_openssh` appends the key's comment; a known_hosts line wants only type and key.
    let mut parts = key_text.split(' ');
    let (kind, data) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    format!("{} {kind} {data}", lookup_name(host, port))
}

/// Appends the entry for `key` (the `accept-new` case), creating the file and its directory.
pub fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{}", entry_line(host, port, key))
}

/// `SHA256:...`, the fingerprint form OpenSSH shows.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// OpenSSH looks a host up by its name on port 22 and by `[name]:port` on any other port.
fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    }
}

fn host_matches(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt).expect("any key length");
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(patterns) => {
            let mut positive = false;
            for pattern in patterns {
                let pattern = pattern.to_ascii_lowercase();
                match pattern.strip_prefix('!') {
                    // A matching negation excludes the host whatever else matches.
                    Some(negated) if glob_match(negated.as_bytes(), name.as_bytes()) => {
                        return false;
                    }
                    Some(_) => {}
                    None => positive |= glob_match(pattern.as_bytes(), name.as_bytes()),
                }
            }
            positive
        }
    }
}

/// OpenSSH's `match_pattern`: `*` matches any run, `?` any one character.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob_match(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDNTVsQMV6XkBdh7HPGUKSUSkIrvjyb8FM4nSQNiVHuF";
    const ED25519_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIETgoFyuDNV3kLYBhkkrpK+sHZCboL+Pan8U+0OrSPWZ";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).unwrap()
    }

    fn file(text: &str) -> (tempfile::TempDir, KnownHosts) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, text).unwrap();
        let hosts = KnownHosts::load(&path).unwrap();
        (dir, hosts)
    }

    #[test]
    fn plain_bracketed_and_pattern_entries() {
        let (_dir, hosts) = file(&format!(
            "# comment\n\
             garbage line that does not parse\n\
             backup.example.org,10.0.0.1 {ED25519_A}\n\
             [127.0.0.1]:2222 {ED25519_A}\n\
             *.example.net,!evil.example.net {ED25519_B}\n"
        ));
        let (a, b) = (key(ED25519_A), key(ED25519_B));
        assert_eq!(hosts.check("backup.example.org", 22, &a), Verdict::Known);
        assert_eq!(hosts.check("BACKUP.example.org", 22, &a), Verdict::Known);
        assert_eq!(
            hosts.check("backup.example.org", 22, &b),
            Verdict::Changed { line: 3 }
        );
        // The same host on another port is another entry.
        assert_eq!(
            hosts.check("backup.example.org", 2222, &a),
            Verdict::Unknown
        );
        assert_eq!(hosts.check("127.0.0.1", 2222, &a), Verdict::Known);
        assert_eq!(hosts.check("127.0.0.1", 22, &a), Verdict::Unknown);
        assert_eq!(hosts.check("box.example.net", 22, &b), Verdict::Known);
        assert_eq!(hosts.check("evil.example.net", 22, &b), Verdict::Unknown);
    }

    #[test]
    fn hashed_entries_and_revocation() {
        // `ssh-keygen -H` (OpenSSH 9.2) of `[127.0.0.1]:2222 KEY` and `backup.example.org KEY`.
        let (_dir, hosts) = file(&format!(
            "|1|0PchLO6iSYE4fnbuA59xic9zuQc=|aX/Xc2s+QIyHrYcm2tGN1fEiVVU= {ED25519_A}\n\
             |1|epd6wDQF3toj/u2yNg5yt93n9SQ=|/nAMLgE41zxX+80TDzaLX1u6o28= {ED25519_A}\n\
             @revoked * {ED25519_B}\n"
        ));
        let a = key(ED25519_A);
        assert_eq!(hosts.check("127.0.0.1", 2222, &a), Verdict::Known);
        assert_eq!(hosts.check("backup.example.org", 22, &a), Verdict::Known);
        assert_eq!(hosts.check("127.0.0.2", 2222, &a), Verdict::Unknown);
        assert_eq!(hosts.check("127.0.0.1", 22, &a), Verdict::Unknown);
        assert_eq!(
            hosts.check("127.0.0.1", 2222, &key(ED25519_B)),
            Verdict::Revoked { line: 3 }
        );
    }

    #[test]
    fn an_appended_entry_is_then_known() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        append(&path, "::1", 2200, &key(ED25519_A)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("[::1]:2200 {ED25519_A}\n"));
        let hosts = KnownHosts::load(&path).unwrap();
        assert_eq!(hosts.check("::1", 2200, &key(ED25519_A)), Verdict::Known);
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*.org", b"a.b.org"));
        assert!(glob_match(b"10.0.0.?", b"10.0.0.7"));
        assert!(!glob_match(b"10.0.0.?", b"10.0.0.17"));
        assert!(glob_match(b"*", b""));
    }
}

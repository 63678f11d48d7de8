//! `mailcow.conf`: the settings of a mailcow installation, as `KEY=VALUE` lines. It is also the
//! project's `.env` file (a symlink), so Compose's reading of it is the reference: comments
//! start with `#`, values may be quoted with `"` or `'`, an unquoted value ends before ` #`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error(
        "cannot read {path}: {detail}; is {dir} the mailcow directory? (set mailcow_dir in the config, or --mailcow-dir)"
    )]
    Unreadable {
        path: String,
        dir: String,
        detail: String,
    },
    #[error("{path} does not set {key}")]
    Missing { path: String, key: &'static str },
}

/// What we use of `mailcow.conf`.
#[derive(Clone, PartialEq, Eq)]
pub struct MailcowConf {
    pub path: PathBuf,
    /// `COMPOSE_PROJECT_NAME`, sanitised as mailcow's scripts do (`[0-9A-Za-z_-]` only).
    pub project: String,
    pub db_name: String,
    pub db_user: String,
    pub db_pass: String,
    pub db_root: String,
    /// `REDISPASS`; empty on installations from before Redis had a password.
    pub redis_pass: String,
    /// `MAILDIR_SUB`; empty on old installations.
    pub maildir_sub: String,
}

impl std::fmt::Debug for MailcowConf {
    /// Without the database and Redis passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailcowConf")
            .field("path", &self.path)
            .field("project", &self.project)
            .field("db_name", &self.db_name)
            .field("db_user", &self.db_user)
            .field("db_pass", &"<redacted>")
            .field("db_root", &"<redacted>")
            .field("redis_pass", &"<redacted>")
            .field("maildir_sub", &self.maildir_sub)
            .finish()
    }
}

impl MailcowConf {
    /// Reads `<dir>/mailcow.conf`.
    pub fn load(dir: &Path) -> Result<MailcowConf, ConfError> {
        let path = dir.join("mailcow.conf");
        let text = std::fs::read_to_string(&path).map_err(|e| ConfError::Unreadable {
            path: path.display().to_string(),
            dir: dir.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: PathBuf) -> Result<MailcowConf, ConfError> {
        let values = parse_env(text);
        let get = |key: &'static str| values.get(key).cloned().unwrap_or_default();
        let required = |key: &'static str| {
            values
                .get(key)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| ConfError::Missing {
                    path: path.display().to_string(),
                    key,
                })
        };
        let project: String = required("COMPOSE_PROJECT_NAME")?
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        Ok(MailcowConf {
            project,
            db_name: required("DBNAME")?,
            db_user: required("DBUSER")?,
            db_pass: required("DBPASS")?,
            db_root: get("DBROOT"),
            redis_pass: get("REDISPASS"),
            maildir_sub: get("MAILDIR_SUB"),
            path,
        })
    }
}

/// `KEY=VALUE` lines, as Compose reads an env file.
fn parse_env(text: &str) -> HashMap<String, String> {
    let mut values = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let raw = raw.trim();
        let value = match raw.chars().next() {
            Some(q @ ('"' | '\'')) => match raw[1..].find(q) {
                Some(end) => raw[1..1 + end].to_string(),
                None => raw.to_string(),
            },
            _ => match raw.find(" #") {
                Some(end) => raw[..end].trim_end().to_string(),
                None => raw.to_string(),
            },
        };
        values.insert(key.trim().to_string(), value);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailcow_conf_as_generate_config_writes_it() {
        let text = "\
# ------------------------------
# mailcow web ui configuration
# ------------------------------
MAILCOW_HOSTNAME=mail.example.org
DBNAME=mailcow
DBUSER=mailcow
DBPASS=aVeryLongRandomPassword1234
DBROOT='root pass with spaces'
REDISPASS=\"redisSecret\" # quoted
# Fixed project name
# Please use lowercase letters only
COMPOSE_PROJECT_NAME=mail cow.prod # trailing comment
MAILDIR_SUB=Maildir
";
        let conf = MailcowConf::parse(text, "x/mailcow.conf".into()).unwrap();
        assert_eq!(conf.project, "mailcowprod");
        assert_eq!(conf.db_name, "mailcow");
        assert_eq!(conf.db_pass, "aVeryLongRandomPassword1234");
        assert_eq!(conf.db_root, "root pass with spaces");
        assert_eq!(conf.redis_pass, "redisSecret");
        assert_eq!(conf.maildir_sub, "Maildir");
        let shown = format!("{conf:?}");
        for secret in ["aVeryLongRandomPassword1234", "root pass", "redisSecret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("mailcowprod"), "{shown}");
    }

    #[test]
    fn a_missing_key_is_named() {
        let e = MailcowConf::parse("DBNAME=x\n", "d/mailcow.conf".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "d/mailcow.conf does not set COMPOSE_PROJECT_NAME"
        );
    }
}

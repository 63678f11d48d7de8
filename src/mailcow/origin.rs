//! Where an archive came from, as far as a restore must know: recorded by `backup` in the
//! archive's comment (borg shows it in `borg info`), as `key=value` words after a fixed prefix:
//!
//! ```text
//! mailcow-borg backup: project=mailcowdockerized arch=x86_64 maildir_sub=Maildir db=mailcow components=vmail,crypt,…
//! ```
//!
//! - the CPU architecture, because rspamd's data (hyperscan caches) does not work on another;
//! - `MAILDIR_SUB`, because mail restored under another one is invisible to dovecot;
//! - the database name, because the dump re-creates that database and no other.
//!
//! Archives without such a comment (written by borg itself, or edited) restore too; the checks
//! that need the facts then say they could not be made.

use super::components::Component;
use super::conf::MailcowConf;

const PREFIX: &str = "mailcow-borg backup:";

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    pub project: String,
    /// Rust's name for the CPU architecture (`x86_64`, `aarch64`), as `uname -m` says it.
    pub arch: String,
    pub maildir_sub: String,
    pub db: String,
    pub components: Vec<String>,
}

impl Origin {
    /// The origin of a backup made now, of `components`, on this machine.
    pub fn here(conf: &MailcowConf, components: &[Component]) -> Origin {
        Origin {
            project: conf.project.clone(),
            arch: std::env::consts::ARCH.into(),
            maildir_sub: conf.maildir_sub.clone(),
            db: conf.db_name.clone(),
            components: components.iter().map(|c| c.name().to_string()).collect(),
        }
    }

    pub fn comment(&self) -> String {
        format!(
            "{PREFIX} project={} arch={} maildir_sub={} db={} components={}",
            self.project,
            self.arch,
            self.maildir_sub,
            self.db,
            self.components.join(",")
        )
    }

    /// Reads a comment [`Origin::comment`] wrote; `None` for any other comment.
    pub fn parse(comment: &str) -> Option<Origin> {
        let words = comment.strip_prefix(PREFIX)?;
        let mut origin = Origin::default();
        for word in words.split_whitespace() {
            let (key, value) = word.split_once('=')?;
            let value = value.to_string();
            match key {
                "project" => origin.project = value,
                "arch" => origin.arch = value,
                "maildir_sub" => origin.maildir_sub = value,
                "db" => origin.db = value,
                "components" => {
                    origin.components = value
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(String::from)
                        .collect()
                }
                // Words a later version may add.
                _ => {}
            }
        }
        Some(origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comment_round_trips_also_with_an_empty_maildir_sub() {
        let origin = Origin {
            project: "mailcowdockerized".into(),
            arch: "aarch64".into(),
            maildir_sub: String::new(),
            db: "mailcow".into(),
            components: vec!["vmail".into(), "crypt".into()],
        };
        assert_eq!(
            origin.comment(),
            "mailcow-borg backup: project=mailcowdockerized arch=aarch64 maildir_sub= db=mailcow components=vmail,crypt"
        );
        assert_eq!(Origin::parse(&origin.comment()), Some(origin));
        assert_eq!(Origin::parse("my own comment"), None);
        assert_eq!(Origin::parse(""), None);
    }
}

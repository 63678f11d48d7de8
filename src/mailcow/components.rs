//! What a mailcow backup is made of, where each part lives, and where it goes in the archive.
//!
//! The archive layout (one archive per run; paths relative, as borg stores them):
//!
//! | component     | source                                             | archive path            |
//! |---------------|----------------------------------------------------|-------------------------|
//! | `vmail`       | `vmail-vol-1` (dovecot-mailcow `/var/vmail`)        | `vmail/<domain>/<user>/…` |
//! | `crypt`       | `crypt-vol-1` (dovecot-mailcow `/mail_crypt`)       | `crypt/ecprivkey.pem`, … |
//! | `vmail-index` | `vmail-index-vol-1` (dovecot `/var/vmail_index`)    | `vmail-index/…`         |
//! | `redis`       | `redis-vol-1` (redis-mailcow `/data`), after `SAVE` | `redis/dump.rdb`        |
//! | `rspamd`      | `rspamd-vol-1` (rspamd-mailcow `/var/lib/rspamd`)   | `rspamd/…`              |
//! | `postfix`     | `postfix-vol-1` (postfix-mailcow `/var/spool/postfix`) | `postfix/…`          |
//! | `sogo`        | `sogo-userdata-backup-vol-1` (sogo-mailcow `/sogo_backup`) | `sogo/…`         |
//! | `mysql`       | `mariadb-dump` run in mysql-mailcow, streamed       | `mysql/<DBNAME>.sql`    |
//! | `config`      | the mailcow directory                               | `config/mailcow.conf`, `config/docker-compose.override.yml`, `config/data/conf/…`, `config/data/assets/ssl/…` |
//!
//! Volumes are found from the mounts of the container that uses them (by destination), so a
//! renamed project or a volume name Compose chose differently is still found; when that
//! container does not exist, `<project>_<volume>` is tried.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Vmail,
    Crypt,
    VmailIndex,
    Redis,
    Rspamd,
    Postfix,
    Mysql,
    Sogo,
    Config,
}

/// Where a volume component's data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeSource {
    /// The Compose service whose container mounts it.
    pub service: &'static str,
    /// Where that container mounts it.
    pub destination: &'static str,
    /// The volume's name in mailcow's docker-compose.yml (the project name goes before it).
    pub volume: &'static str,
}

impl Component {
    pub const ALL: [Component; 9] = [
        Component::Vmail,
        Component::Crypt,
        Component::VmailIndex,
        Component::Redis,
        Component::Rspamd,
        Component::Postfix,
        Component::Mysql,
        Component::Sogo,
        Component::Config,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Vmail => "vmail",
            Component::Crypt => "crypt",
            Component::VmailIndex => "vmail-index",
            Component::Redis => "redis",
            Component::Rspamd => "rspamd",
            Component::Postfix => "postfix",
            Component::Mysql => "mysql",
            Component::Sogo => "sogo",
            Component::Config => "config",
        }
    }

    /// The top-level directory of the component in the archive.
    pub fn archive_dir(self) -> &'static str {
        self.name()
    }

    /// The volume it is read from, for volume components.
    pub fn volume(self) -> Option<VolumeSource> {
        let (service, destination, volume) = match self {
            Component::Vmail => ("dovecot-mailcow", "/var/vmail", "vmail-vol-1"),
            Component::Crypt => ("dovecot-mailcow", "/mail_crypt", "crypt-vol-1"),
            Component::VmailIndex => ("dovecot-mailcow", "/var/vmail_index", "vmail-index-vol-1"),
            Component::Redis => ("redis-mailcow", "/data", "redis-vol-1"),
            Component::Rspamd => ("rspamd-mailcow", "/var/lib/rspamd", "rspamd-vol-1"),
            Component::Postfix => ("postfix-mailcow", "/var/spool/postfix", "postfix-vol-1"),
            Component::Sogo => ("sogo-mailcow", "/sogo_backup", "sogo-userdata-backup-vol-1"),
            Component::Mysql | Component::Config => return None,
        };
        Some(VolumeSource {
            service,
            destination,
            volume,
        })
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A component name that is none of [`Component::ALL`]'s; the message lists them.
#[derive(Debug, thiserror::Error)]
#[error("unknown component {name:?}: use {}", Component::ALL.map(Component::name).join(", "))]
pub struct UnknownComponent {
    pub name: String,
}

impl FromStr for Component {
    type Err = UnknownComponent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Component::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownComponent { name: s.into() })
    }
}

/// Paths in the mailcow directory that the `config` component holds (those that exist).
pub const CONFIG_PATHS: [&str; 4] = [
    "mailcow.conf",
    "docker-compose.override.yml",
    "data/conf",
    "data/assets/ssl",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_choices() {
        for c in Component::ALL {
            assert_eq!(c.name().parse::<Component>().unwrap(), c);
        }
        let e = "mail".parse::<Component>().unwrap_err().to_string();
        assert!(e.contains("vmail, crypt, vmail-index"), "{e}");
    }
}

//! Which messages of a mailbox a merge-restore or an `export` takes: by IMAP folder and by
//! delivery time. One type from the command line (`cli/mail_filter.rs`) through the plan to the
//! helper's command line, so that the two commands select alike.

use std::collections::BTreeSet;

use super::maildir_names::{self, NameError};

/// Which messages; the default takes all of them.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct MailFilter {
    /// Only this folder (IMAP name; repeatable); none means every folder.
    #[arg(long = "folder", value_name = "NAME")]
    pub folders: Vec<String>,
    /// Only mail delivered at or after this time (seconds since the epoch).
    #[arg(long, value_name = "SECONDS")]
    pub since: Option<i64>,
    /// Only mail delivered before this time.
    #[arg(long, value_name = "SECONDS")]
    pub before: Option<i64>,
}

impl MailFilter {
    /// Refuses what is wrong without looking at any archive: a folder name that names no
    /// maildir folder, a window with nothing in it.
    pub fn check(&self) -> Result<(), NameError> {
        self.folder_dirs()?;
        match (self.since, self.before) {
            (Some(since), Some(before)) if since >= before => Err(NameError::EmptyWindow),
            _ => Ok(()),
        }
    }

    /// The first option given, as the command line names it: for the errors about options
    /// that do not go with the rest.
    pub fn first_option(&self) -> Option<&'static str> {
        [
            (!self.folders.is_empty(), "folder"),
            (self.since.is_some(), "since"),
            (self.before.is_some(), "before"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    }

    /// Whether every message is taken.
    pub fn is_all(&self) -> bool {
        self.first_option().is_none()
    }

    /// The directories (relative to the maildir) of the folders asked for; `None`: every one.
    pub fn folder_dirs(&self) -> Result<Option<BTreeSet<String>>, NameError> {
        if self.folders.is_empty() {
            return Ok(None);
        }
        let dirs = self.folders.iter().map(|f| maildir_names::folder_dir(f));
        dirs.collect::<Result<_, _>>().map(Some)
    }

    /// Whether the message file `file_name` was delivered inside the window, by the time in
    /// its name (`maildir_names::delivery_time`); a name without one is only in an open window.
    pub fn in_window(&self, file_name: &str) -> bool {
        if self.since.is_none() && self.before.is_none() {
            return true;
        }
        maildir_names::delivery_time(file_name)
            .is_some_and(|t| self.since.is_none_or(|s| t >= s) && self.before.is_none_or(|b| t < b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_takes_its_start_not_its_end_and_no_undated_name() {
        let window = MailFilter {
            since: Some(1000),
            before: Some(2000),
            ..MailFilter::default()
        };
        assert!(window.in_window("1000.M1P2.host:2,S"));
        assert!(window.in_window("1999.M1P2.host"));
        assert!(!window.in_window("2000.M1P2.host"));
        assert!(!window.in_window("999.M1P2.host"));
        assert!(!window.in_window("mail"));
        assert!(MailFilter::default().in_window("mail"));
        assert_eq!(window.first_option(), Some("since"));
        assert!(!window.is_all() && MailFilter::default().is_all());
    }

    #[test]
    fn bad_folders_and_empty_windows_are_refused() {
        let folders = |names: &[&str]| MailFilter {
            folders: names.iter().map(|n| n.to_string()).collect(),
            ..MailFilter::default()
        };
        assert_eq!(
            folders(&["inbox", "Projects/2025"]).folder_dirs(),
            Ok(Some(["".to_string(), ".Projects.2025".to_string()].into()))
        );
        assert_eq!(
            folders(&["a//b"]).check(),
            Err(NameError::EmptyLevel("a//b".into()))
        );
        let empty = MailFilter {
            since: Some(5),
            before: Some(5),
            ..MailFilter::default()
        };
        assert_eq!(empty.check(), Err(NameError::EmptyWindow));
    }
}

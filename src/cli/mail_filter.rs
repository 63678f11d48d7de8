//! `--folder`, `--since`, `--before`: which mail of a mailbox `restore --mailbox` and `export`
//! take, declared once. Dates are parsed here rather than by clap so that a bad one is our usual
//! one-line error, not clap's usage block.

use clap::Args;

use crate::mailcow::mail_filter::MailFilter;
use crate::mailcow::maildir_names::{NameError, parse_date};

#[derive(Args)]
pub struct MailFilterArgs {
    /// Only this folder, by its IMAP name (repeatable): INBOX, Projects/2025.
    #[arg(long = "folder", value_name = "NAME")]
    folders: Vec<String>,
    /// Only mail delivered at or after DATE: YYYY-MM-DD (midnight UTC) or RFC 3339.
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// Only mail delivered before DATE: YYYY-MM-DD (midnight UTC) or RFC 3339.
    #[arg(long, value_name = "DATE")]
    before: Option<String>,
}

impl MailFilterArgs {
    /// The filter, its dates parsed; the folder names and the window are checked with the
    /// rest of the request (`MailFilter::check`, by the plan and by `export`).
    pub fn filter(&self) -> Result<MailFilter, NameError> {
        Ok(MailFilter {
            folders: self.folders.clone(),
            since: self.since.as_deref().map(parse_date).transpose()?,
            before: self.before.as_deref().map(parse_date).transpose()?,
        })
    }
}

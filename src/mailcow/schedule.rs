//! How often `backup` does the work that need not run every night — compacting, the checks,
//! the restore drill — and when each last ran.
//!
//! A nightly cron line is the only schedule an admin should need: each kind of work says how
//! often it runs ([`When`]), and the state dir remembers when it last succeeded ([`Stamps`]),
//! so a weekly repository check and a monthly drill ride on the nightly backup. A stamp is
//! written only after a success: a check that failed, or a run cut off, is due again the next
//! night. Stamps are per repository, so pointing the config at another repository starts its
//! schedule afresh instead of inheriting the old one's.
//!
//! `data` is the exception that is not an interval: verifying every object's data takes as
//! long as downloading the repository, so it can instead verify a share of the object ids per
//! run ([`DataCheck::Share`]), walking through the id space with a cursor kept with the stamps:
//! ids are keyed hashes, so each slice of the id space holds about that share of the objects,
//! and 100 / share runs have verified them all.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::ErrorKind;
use crate::ops::durable::write_durably;
use crate::ops::id_slice::IdSlice;

/// How often a kind of work runs after a backup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum When {
    /// After every backup.
    #[default]
    Always,
    Never,
    /// When its last success is at least this long ago: `amount` of `unit` (h, d, w).
    Every {
        amount: u64,
        unit: char,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not always, never or an interval such as 12h, 7d or 2w")]
pub struct WhenError(pub String);

impl WhenError {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::BadInput
    }
}

impl When {
    /// The interval in seconds; `None` for always and never.
    pub fn interval_seconds(self) -> Option<u64> {
        match self {
            When::Every { amount, unit } => {
                let unit_seconds = match unit {
                    'h' => 3600,
                    'd' => 86_400,
                    _ => 7 * 86_400,
                };
                Some(amount.saturating_mul(unit_seconds))
            }
            _ => None,
        }
    }

    /// Whether the work is due at `now` (Unix seconds), its last success having been at `last`.
    pub fn is_due(self, last: Option<i64>, now: i64) -> bool {
        match (self, self.interval_seconds()) {
            (When::Never, _) => false,
            (_, Some(interval)) => {
                last.is_none_or(|last| now.saturating_sub(last) >= interval as i64)
            }
            _ => true,
        }
    }
}

impl FromStr for When {
    type Err = WhenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refused = || WhenError(text.to_string());
        match text {
            "always" => return Ok(When::Always),
            "never" => return Ok(When::Never),
            _ => {}
        }
        let unit = text.chars().last().filter(|u| matches!(u, 'h' | 'd' | 'w'));
        let unit = unit.ok_or_else(refused)?;
        let digits = &text[..text.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refused());
        }
        let amount: u64 = digits.parse().map_err(|_| refused())?;
        if amount == 0 {
            return Err(refused());
        }
        Ok(When::Every { amount, unit })
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            When::Always => f.write_str("always"),
            When::Never => f.write_str("never"),
            When::Every { amount, unit } => write!(f, "{amount}{unit}"),
        }
    }
}

/// How much of the repository's data `backup` verifies (`borg check --verify-data`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataCheck {
    /// Every object, this often.
    Whole(When),
    /// This percentage of the objects on every run (1–100), the next slice each time.
    Share(u8),
}

impl Default for DataCheck {
    fn default() -> Self {
        DataCheck::Whole(When::Never)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a share of the objects per backup (1% to 100%) or always, never or an interval such as 12h, 7d or 2w"
)]
pub struct DataCheckError(pub String);

impl FromStr for DataCheck {
    type Err = DataCheckError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refused = || DataCheckError(text.to_string());
        match text.strip_suffix('%') {
            Some(digits) => {
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(refused());
                }
                match digits.parse::<u8>() {
                    Ok(percent @ 1..=100) => Ok(DataCheck::Share(percent)),
                    _ => Err(refused()),
                }
            }
            None => text.parse().map(DataCheck::Whole).map_err(|_| refused()),
        }
    }
}

impl fmt::Display for DataCheck {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            DataCheck::Whole(when) => when.fmt(f),
            DataCheck::Share(percent) => write!(f, "{percent}%"),
        }
    }
}

/// The kinds of work whose last success is stamped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stamped {
    Compact,
    RepositoryCheck,
    ArchivesCheck,
    DataCheck,
    /// Not a time: where the next share of the data check starts in the id space.
    DataCursor,
    Drill,
}

impl Stamped {
    const ALL: [Stamped; 6] = [
        Stamped::Compact,
        Stamped::RepositoryCheck,
        Stamped::ArchivesCheck,
        Stamped::DataCheck,
        Stamped::DataCursor,
        Stamped::Drill,
    ];

    fn name(self) -> &'static str {
        match self {
            Stamped::Compact => "compact",
            Stamped::RepositoryCheck => "check-repository",
            Stamped::ArchivesCheck => "check-archives",
            Stamped::DataCheck => "check-data",
            Stamped::DataCursor => "check-data-cursor",
            Stamped::Drill => "drill",
        }
    }
}

/// The stamps file in the state dir: one line per kind and repository, `<kind> <value>
/// <repository>`, the value a Unix time in seconds (or the data cursor). A line that does not
/// parse is ignored: the worst a lost stamp does is run its work once more.
pub struct Stamps {
    path: PathBuf,
    values: BTreeMap<(Stamped, String), i64>,
}

/// The file's name in the state dir.
pub const STAMPS_FILE: &str = "schedule-stamps";

impl Stamps {
    /// The stamps in `state_dir`; none when the file is missing or unreadable.
    pub fn load(state_dir: &Path) -> Stamps {
        let path = state_dir.join(STAMPS_FILE);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let values = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, ' ');
                let kind = fields.next()?;
                let kind = Stamped::ALL.into_iter().find(|k| k.name() == kind)?;
                let value = fields.next()?.parse().ok()?;
                let repository = fields.next()?;
                Some(((kind, repository.to_string()), value))
            })
            .collect();
        Stamps { path, values }
    }

    pub fn get(&self, kind: Stamped, repository: &str) -> Option<i64> {
        self.values.get(&(kind, repository.to_string())).copied()
    }

    /// Sets a value and writes the file at once (replaced whole, so it is never half written).
    pub fn set(&mut self, kind: Stamped, repository: &str, value: i64) -> io::Result<()> {
        self.values.insert((kind, repository.to_string()), value);
        let text: String = self
            .values
            .iter()
            .map(|((kind, repository), value)| format!("{} {value} {repository}\n", kind.name()))
            .collect();
        write_durably(&self.path, text.as_bytes())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `[check]`: how often `backup` checks the repository and drills a restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSchedule {
    /// The server's check of its segments (`check --repository-only`).
    pub repository: When,
    /// The archives' consistency (`check --archives-only`).
    pub archives: When,
    pub data: DataCheck,
    pub drill: When,
    /// Mails read per mailbox by a scheduled drill.
    pub drill_sample: u32,
}

/// What is due after this backup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DueChecks {
    pub repository: bool,
    pub archives: bool,
    /// The part of the id space whose objects' data is verified.
    pub data: Option<IdSlice>,
    pub drill: bool,
}

impl DueChecks {
    /// Whether the repository is opened for a check at all.
    pub fn any_check(&self) -> bool {
        self.repository || self.archives || self.data.is_some()
    }
}

impl CheckSchedule {
    /// What is due at `now` (Unix seconds) for `repository`, by its stamps.
    pub fn due(&self, stamps: &Stamps, repository: &str, now: i64) -> DueChecks {
        let due = |when: When, kind| when.is_due(stamps.get(kind, repository), now);
        let data = match self.data {
            DataCheck::Whole(when) => due(when, Stamped::DataCheck).then_some(IdSlice::ALL),
            DataCheck::Share(percent) => {
                let start = stamps.get(Stamped::DataCursor, repository).unwrap_or(0);
                Some(IdSlice::share(start as u32, percent))
            }
        };
        DueChecks {
            repository: due(self.repository, Stamped::RepositoryCheck),
            archives: due(self.archives, Stamped::ArchivesCheck),
            data,
            drill: due(self.drill, Stamped::Drill),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bad_ones_are_refused() {
        for text in ["always", "never", "12h", "7d", "2w"] {
            assert_eq!(text.parse::<When>().unwrap().to_string(), text);
        }
        assert_eq!(
            "7d".parse::<When>().unwrap().interval_seconds(),
            Some(7 * 86_400)
        );
        for bad in ["", "d", "0d", "7", "7m", "-1d", "1.5d", "sometimes"] {
            assert!(bad.parse::<When>().is_err(), "{bad}");
        }
        for text in ["5%", "100%", "1%", "30d", "never"] {
            assert_eq!(text.parse::<DataCheck>().unwrap().to_string(), text);
        }
        for bad in ["0%", "101%", "%", "5.5%", "-5%", "5 %", "monthly"] {
            assert!(bad.parse::<DataCheck>().is_err(), "{bad}");
        }
    }

    #[test]
    fn work_is_due_as_configured() {
        let week = When::Every {
            amount: 7,
            unit: 'd',
        };
        let now = 1_800_000_000;
        assert!(When::Always.is_due(Some(now), now));
        assert!(!When::Never.is_due(None, now));
        assert!(week.is_due(None, now));
        assert!(!week.is_due(Some(now - 6 * 86_400), now));
        assert!(week.is_due(Some(now - 7 * 86_400), now));
    }

    #[test]
    fn stamps_are_per_repository_survive_a_reload_and_ignore_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut stamps = Stamps::load(dir.path());
        assert_eq!(stamps.get(Stamped::Drill, "ssh://h/./r"), None);
        stamps
            .set(Stamped::Drill, "ssh://h/./r", 1_700_000_000)
            .unwrap();
        stamps
            .set(Stamped::Compact, "/path with spaces/r", 1_700_000_001)
            .unwrap();
        let mut text = std::fs::read_to_string(stamps.path()).unwrap();
        text.push_str("garbage line\ndrill notanumber ssh://h/./x\n");
        std::fs::write(stamps.path(), text).unwrap();

        let stamps = Stamps::load(dir.path());
        assert_eq!(
            stamps.get(Stamped::Drill, "ssh://h/./r"),
            Some(1_700_000_000)
        );
        assert_eq!(stamps.get(Stamped::Drill, "ssh://h/./other"), None);
        assert_eq!(
            stamps.get(Stamped::Compact, "/path with spaces/r"),
            Some(1_700_000_001)
        );
        assert_eq!(stamps.get(Stamped::Drill, "ssh://h/./x"), None);
    }

    #[test]
    fn a_share_walks_the_id_space_from_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let mut stamps = Stamps::load(dir.path());
        let schedule = CheckSchedule {
            repository: When::Every {
                amount: 7,
                unit: 'd',
            },
            archives: When::Never,
            data: DataCheck::Share(25),
            drill: When::Always,
            drill_sample: 10,
        };
        let now = 1_800_000_000;
        let due = schedule.due(&stamps, "r", now);
        assert!(due.repository && !due.archives && due.drill);
        let first = due.data.unwrap();
        assert_eq!(first, IdSlice::share(0, 25));
        stamps
            .set(Stamped::DataCursor, "r", first.end() as i64)
            .unwrap();
        stamps.set(Stamped::RepositoryCheck, "r", now).unwrap();
        let due = schedule.due(&stamps, "r", now + 86_400);
        assert!(!due.repository);
        assert_eq!(due.data.unwrap(), IdSlice::share(first.end(), 25));
    }
}

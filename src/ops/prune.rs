//! Which archives `prune` keeps: borg 1.4.5's selection, exactly (`archiver.py: do_prune`,
//! `helpers/misc.py: prune_within, prune_split, PRUNING_PATTERNS`; `docs/borg-cli.md` §7.1).
//! Pure: the archives, the rules and "now" go in, a verdict for every archive comes out; nothing
//! is read or deleted here.
//!
//! **Order.** Everything walks the archives newest first, in borg's order: the manifest's
//! archives (sorted by name, as borg writes them) stably sorted by start time, then reversed.
//! Archives that started in the same second therefore come in reverse name order, and since every
//! rule below keeps the first archive it meets in a period, that order decides which of them
//! survives.
//!
//! **Checkpoints** (names ending in `.checkpoint` or `.checkpoint.<digits>`) are split off
//! first and never count for any rule: an incomplete backup must not take the place of a
//! complete one. The newest checkpoint is kept, and only when it is newer than every normal
//! archive (then it is the best data there is, until the next complete backup); every other
//! checkpoint is pruned.
//!
//! **`--keep-within`** runs first: every archive that started after `now − interval` is kept,
//! numbered `within #1, #2, …`. The interval is `<int><H|d|w|m|y>`, with a month taken as 31
//! days and a year as 365 — no seconds or minutes in borg 1.x.
//!
//! **Period rules** then run one after another in a fixed order — secondly (`--keep-last` is
//! the same rule), minutely, hourly, daily, weekly, monthly, 13-weekly, 3-monthly, yearly —
//! whatever order the flags came in. Each gives every archive a period key from its start time
//! in *local* time (`TZ` is honoured: the same repository prunes differently in Berlin and in
//! New York), with borg's `strftime` formats: `%Y-%m-%d %H:%M:%S` down to `%Y-%m-%d`, ISO week
//! `%G-%V` (Monday to Sunday; the first days of January may belong to the previous ISO year),
//! `%Y-%m`, `%Y`; the 13-weekly key is the ISO year and its quarter of weeks (1–13, 14–26, 27–39,
//! 40 and later), the 3-monthly key the calendar year and quarter. A rule walks the archives and
//! looks only at the first — newest — archive of each new period. Borg's quirk: when an earlier
//! rule has already kept that archive, the rule does not count it, and does not look further
//! into the period either: the period is used up. So `--keep-daily 3 --keep-weekly 2` does not
//! keep a weekly archive in the weeks whose newest archive a daily one is; the weekly rule moves
//! on to older weeks. A rule stops once it has kept N archives; N < 0 means no limit.
//!
//! **The oldest fallback** (since borg 1.2): a rule that kept fewer than N archives also keeps
//! the oldest archive, as `<rule>[oldest] #k`, unless something kept it already — so the first
//! backup ages on until a newer one takes its place in the rule. A rule with no limit never
//! falls back.
//!
//! Whatever no rule kept is pruned. Archives are identified by their place in the list, not by
//! their ids, so a manifest that (wrongly) names one id twice cannot make one verdict serve two
//! archives.

use super::patterns::ArchiveGlob;
use super::system::local_time;
use crate::error::ErrorKind;
use crate::format::envelope::ObjectId;
use crate::format::manifest::{Manifest, parse_timestamp};

/// The period rules, in the order borg applies them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Secondly,
    Minutely,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Quarterly13Weekly,
    Quarterly3Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 9] = [
        Period::Secondly,
        Period::Minutely,
        Period::Hourly,
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Quarterly13Weekly,
        Period::Quarterly3Monthly,
        Period::Yearly,
    ];

    /// The rule's name in borg's `--list` lines (`--keep-last` is `secondly` there too).
    pub fn name(self) -> &'static str {
        match self {
            Period::Secondly => "secondly",
            Period::Minutely => "minutely",
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Quarterly13Weekly => "quarterly_13weekly",
            Period::Quarterly3Monthly => "quarterly_3monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The period `t` falls in. Borg compares `strftime` strings (or tuples); equal strings are
    /// exactly equal fields, so the fields themselves serve as the key.
    fn key(self, t: &libc::tm) -> [i32; 6] {
        let (year, month, day) = (t.tm_year + 1900, t.tm_mon + 1, t.tm_mday);
        let (iso_year, iso_week) = iso_week(t);
        match self {
            Period::Secondly => [year, month, day, t.tm_hour, t.tm_min, t.tm_sec],
            Period::Minutely => [year, month, day, t.tm_hour, t.tm_min, 0],
            Period::Hourly => [year, month, day, t.tm_hour, 0, 0],
            Period::Daily => [year, month, day, 0, 0, 0],
            Period::Weekly => [iso_year, iso_week, 0, 0, 0, 0],
            Period::Monthly => [year, month, 0, 0, 0, 0],
            Period::Quarterly13Weekly => [iso_year, ((iso_week - 1) / 13 + 1).min(4), 0, 0, 0, 0],
            Period::Quarterly3Monthly => [year, (month - 1) / 3 + 1, 0, 0, 0, 0],
            Period::Yearly => [year, 0, 0, 0, 0, 0],
        }
    }
}

/// The ISO 8601 year and week of `t` (`%G`, `%V`): weeks run Monday to Sunday, and week 1 is
/// the one holding the year's first Thursday.
fn iso_week(t: &libc::tm) -> (i32, i32) {
    let year = t.tm_year + 1900;
    let weekday = (t.tm_wday + 6).rem_euclid(7) + 1; // Monday 1 … Sunday 7
    let week = (t.tm_yday + 1 - weekday + 10) / 7;
    if week < 1 {
        (year - 1, weeks_in_iso_year(year - 1))
    } else if week > weeks_in_iso_year(year) {
        (year + 1, 1)
    } else {
        (year, week)
    }
}

/// 53 when the year starts on a Thursday, or is a leap year starting on a Wednesday; else 52.
fn weeks_in_iso_year(year: i32) -> i32 {
    // The weekday (0 = Sunday) of 31 December of `y`.
    let dec31 =
        |y: i32| (y + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400)).rem_euclid(7);
    if dec31(year) == 4 || dec31(year - 1) == 3 {
        53
    } else {
        52
    }
}

/// Why the rules were refused; the texts are borg's where borg has one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RulesError {
    #[error(
        "At least one of the \"keep-within\", \"keep-last\", \"keep-secondly\", \"keep-minutely\", \"keep-hourly\", \"keep-daily\", \"keep-weekly\", \"keep-monthly\", \"keep-13weekly\", \"keep-3monthly\", or \"keep-yearly\" settings must be specified."
    )]
    NoRule,
    #[error(
        "--keep-13weekly and --keep-3monthly are two strategies for the same quarters; use one of them"
    )]
    BothQuarterly,
    #[error("argument --keep-within: {0}")]
    Within(#[from] WithinError),
}

impl RulesError {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::BadInput
    }
}

/// A `--keep-within` value borg would refuse, in borg's words.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WithinError {
    #[error("Unexpected interval time unit \"{0}\": expected one of ['H', 'd', 'w', 'm', 'y']")]
    Unit(String),
    #[error("Unexpected interval number \"{0}\": expected an integer greater than 0")]
    Number(String),
}

/// `--keep-within`'s `<int><H|d|w|m|y>` as a number of hours (borg's `interval`).
pub fn parse_within(text: &str) -> Result<i64, WithinError> {
    let Some(unit) = text.chars().last() else {
        return Err(WithinError::Unit(String::new()));
    };
    let hours_per_unit = match unit {
        'H' => 1,
        'd' => 24,
        'w' => 24 * 7,
        'm' => 24 * 31,
        'y' => 24 * 365,
        other => return Err(WithinError::Unit(other.to_string())),
    };
    let number = &text[..text.len() - unit.len_utf8()];
    python_int(number)
        .and_then(|n| n.checked_mul(hours_per_unit))
        .filter(|hours| *hours > 0)
        .ok_or_else(|| WithinError::Number(number.to_string()))
}

/// Python's `int(text)` for the values borg's options take: surrounding white space, a sign,
/// and `_` between digits. (Python also takes non-ASCII digits; nobody types those.)
pub fn python_int(text: &str) -> Option<i64> {
    let text = text.trim();
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let well_formed = !digits.is_empty()
        && digits
            .split('_')
            .all(|group| !group.is_empty() && group.bytes().all(|b| b.is_ascii_digit()));
    if !well_formed {
        return None;
    }
    let magnitude: i64 = digits.replace('_', "").parse().ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Checked prune rules: at least one, and at most one quarterly strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneRules {
    within_hours: Option<i64>,
    /// N per period in [`Period::ALL`]'s order; 0 is off, < 0 unlimited.
    counts: [i64; 9],
}

impl PruneRules {
    /// The rules from borg's settings: `within` as `--keep-within` writes it, and N for each
    /// period (a period given twice takes the last N). 0 turns a rule off, < 0 is unlimited.
    pub fn new(
        within: Option<&str>,
        counts: impl IntoIterator<Item = (Period, i64)>,
    ) -> Result<PruneRules, RulesError> {
        let within_hours = within.map(parse_within).transpose()?;
        let mut rules = PruneRules {
            within_hours,
            counts: [0; 9],
        };
        for (period, n) in counts {
            rules.counts[period as usize] = n;
        }
        // Borg's argparse group refuses the two flags together only when both are set to
        // something other than 0; so do we.
        if rules.count(Period::Quarterly13Weekly) != 0
            && rules.count(Period::Quarterly3Monthly) != 0
        {
            return Err(RulesError::BothQuarterly);
        }
        if rules.within_hours.is_none() && rules.counts.iter().all(|n| *n == 0) {
            return Err(RulesError::NoRule);
        }
        Ok(rules)
    }

    fn count(&self, period: Period) -> i64 {
        self.counts[period as usize]
    }
}

/// One archive of the manifest, as prune sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: Vec<u8>,
    /// The start time the manifest records, in UTC microseconds since the epoch.
    pub start: i64,
    pub id: ObjectId,
}

impl Candidate {
    pub fn is_checkpoint(&self) -> bool {
        checkpoint_suffix(&self.name).is_some()
    }
}

/// The length of the `.checkpoint` or `.checkpoint.<digits>` suffix that makes `name` a
/// checkpoint's name. (Python's `\d` also takes non-ASCII digits; we take ASCII ones only:
/// `docs/borg-cli.md` §7.1.)
pub fn checkpoint_suffix(name: &[u8]) -> Option<usize> {
    const MARK: &[u8] = b".checkpoint";
    if name.ends_with(MARK) {
        return Some(MARK.len());
    }
    let digits = name.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let rest = &name[..name.len() - digits];
    (digits > 0 && rest.ends_with(b".") && rest[..rest.len() - 1].ends_with(MARK))
        .then_some(MARK.len() + 1 + digits)
}

/// The manifest's archives that `glob` selects, as candidates in the manifest's order. Like
/// borg, the glob also selects a name with a checkpoint suffix added to one it matches
/// (`-a 'web-*'` takes `web-1.checkpoint` along; `-a web` takes `web.checkpoint.3`).
pub fn candidates(
    manifest: &Manifest,
    glob: Option<&ArchiveGlob>,
) -> Result<Vec<Candidate>, PruneError> {
    let selected = |name: &[u8]| match glob {
        None => true,
        Some(glob) => {
            glob.matches(name)
                || checkpoint_suffix(name).is_some_and(|n| glob.matches(&name[..name.len() - n]))
        }
    };
    manifest
        .archives
        .iter()
        .filter(|(name, _)| selected(name))
        .map(|(name, entry)| {
            let start = parse_timestamp(&entry.time).ok_or_else(|| PruneError::BadTime {
                name: String::from_utf8_lossy(name).into_owned(),
                time: String::from_utf8_lossy(&entry.time).into_owned(),
            })?;
            Ok(Candidate {
                name: name.clone(),
                start,
                id: entry.id,
            })
        })
        .collect()
}

/// How many of all the manifest's archives are normal ones and how many checkpoints (borg's
/// first `-v` line counts them all, whatever the glob).
pub fn manifest_counts(manifest: &Manifest) -> (usize, usize) {
    let checkpoints = manifest
        .archives
        .iter()
        .filter(|(name, _)| checkpoint_suffix(name).is_some())
        .count();
    (manifest.archives.len() - checkpoints, checkpoints)
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(
        "the manifest gives archive {name:?} the start time {time:?}, which is not a time; prune decides by start times, so it stops (run borg check)"
    )]
    BadTime { name: String, time: String },
}

impl PruneError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PruneError::BadTime { .. } => ErrorKind::Integrity,
        }
    }
}

/// Why an archive stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Within,
    Period(Period),
    /// The oldest fallback of a period rule that kept fewer than it may.
    Oldest(Period),
}

impl std::fmt::Display for Reason {
    /// As borg's `--list` names it: `within`, `daily`, `monthly[oldest]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Within => f.write_str("within"),
            Reason::Period(p) => f.write_str(p.name()),
            Reason::Oldest(p) => write!(f, "{}[oldest]", p.name()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Kept by `reason` as its `number`th archive (counting from 1, newest first).
    Keep {
        reason: Reason,
        number: usize,
    },
    /// The newest checkpoint, newer than every normal archive.
    KeepCheckpoint,
    Prune,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub archive: Candidate,
    pub decision: Decision,
}

/// Every candidate's verdict, newest first in borg's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub verdicts: Vec<Verdict>,
}

/// Counts for borg's `-v` summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub archives: usize,
    pub checkpoints: usize,
    pub kept_archives: usize,
    pub kept_checkpoints: usize,
    pub pruned_archives: usize,
    pub pruned_checkpoints: usize,
}

impl Selection {
    /// The archives to delete, newest first.
    pub fn pruned(&self) -> impl Iterator<Item = &Candidate> {
        self.verdicts
            .iter()
            .filter(|v| v.decision == Decision::Prune)
            .map(|v| &v.archive)
    }

    pub fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for v in &self.verdicts {
            let checkpoint = v.archive.is_checkpoint();
            let kept = v.decision != Decision::Prune;
            let (total, kept_count, pruned) = if checkpoint {
                (
                    &mut tally.checkpoints,
                    &mut tally.kept_checkpoints,
                    &mut tally.pruned_checkpoints,
                )
            } else {
                (
                    &mut tally.archives,
                    &mut tally.kept_archives,
                    &mut tally.pruned_archives,
                )
            };
            *total += 1;
            *if kept { kept_count } else { pruned } += 1;
        }
        tally
    }
}

/// Applies `rules` to `candidates` (the manifest's archives that the archive glob selects, in
/// the manifest's order) at `now` (UTC microseconds), in this process's local time.
pub fn select(candidates: Vec<Candidate>, rules: &PruneRules, now: i64) -> Selection {
    select_in(candidates, rules, now, local_time)
}

/// [`select`] with `zone` turning UTC microseconds into the broken-down time periods are keyed
/// on.
fn select_in(
    candidates: Vec<Candidate>,
    rules: &PruneRules,
    now: i64,
    zone: fn(i64) -> libc::tm,
) -> Selection {
    let mut order = candidates;
    order.sort_by_key(|c| c.start); // stable: ties stay in manifest order …
    order.reverse(); // … and come out reversed, as borg's `list(sort_by=['ts'], reverse=True)`
    let normal: Vec<usize> = (0..order.len())
        .filter(|i| !order[*i].is_checkpoint())
        .collect();
    let mut kept: Vec<Option<(Reason, usize)>> = vec![None; order.len()];

    if let Some(hours) = rules.within_hours {
        let cutoff = now.saturating_sub(hours.saturating_mul(3_600_000_000));
        let within = normal.iter().filter(|i| order[**i].start > cutoff);
        for (number, i) in within.enumerate() {
            kept[*i] = Some((Reason::Within, number + 1));
        }
    }

    let local: Vec<libc::tm> = normal.iter().map(|i| zone(order[*i].start)).collect();
    for period in Period::ALL {
        let limit = rules.count(period);
        if limit == 0 {
            continue;
        }
        let mut count = 0usize;
        let mut last = None;
        for (i, t) in normal.iter().zip(&local) {
            let key = period.key(t);
            if last == Some(key) {
                continue;
            }
            last = Some(key);
            if kept[*i].is_none() {
                count += 1;
                kept[*i] = Some((Reason::Period(period), count));
                if count as i64 == limit {
                    break;
                }
            }
        }
        if let Some(oldest) = normal.last()
            && (count as i64) < limit
            && kept[*oldest].is_none()
        {
            kept[*oldest] = Some((Reason::Oldest(period), count + 1));
        }
    }

    let newest_is_checkpoint = order.first().is_some_and(Candidate::is_checkpoint);
    let verdicts = order
        .into_iter()
        .zip(kept)
        .enumerate()
        .map(|(i, (archive, kept))| {
            let decision = match kept {
                Some((reason, number)) => Decision::Keep { reason, number },
                None if i == 0 && newest_is_checkpoint => Decision::KeepCheckpoint,
                None => Decision::Prune,
            };
            Verdict { archive, decision }
        })
        .collect();
    Selection { verdicts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> i64 {
        parse_timestamp(text.as_bytes()).unwrap()
    }

    fn archive(name: &str, start: &str) -> Candidate {
        let mut id = [0u8; 32];
        id[..name.len().min(32)].copy_from_slice(&name.as_bytes()[..name.len().min(32)]);
        Candidate {
            name: name.as_bytes().to_vec(),
            start: utc(start),
            id,
        }
    }

    fn rules(within: Option<&str>, counts: &[(Period, i64)]) -> PruneRules {
        PruneRules::new(within, counts.iter().copied()).unwrap()
    }

    /// `name: rule #k` lines, newest first; `-` for pruned, `cp` for a kept checkpoint.
    fn show(selection: &Selection) -> Vec<String> {
        selection
            .verdicts
            .iter()
            .map(|v| {
                let name = String::from_utf8_lossy(&v.archive.name);
                match v.decision {
                    Decision::Keep { reason, number } => format!("{name}: {reason} #{number}"),
                    Decision::KeepCheckpoint => format!("{name}: cp"),
                    Decision::Prune => format!("{name}: -"),
                }
            })
            .collect()
    }

    /// The data of `docs/borg-cli.md` §7.2, whose borg output (TZ=UTC) is recorded there.
    fn spec_example() -> Vec<Candidate> {
        let mut v = vec![
            archive("h-2024-12-31T23:30:00", "2024-12-31T23:30:00"),
            archive("h-2025-01-01T10:00:00", "2025-01-01T10:00:00"),
            archive("h-2025-01-01T20:00:00", "2025-01-01T20:00:00"),
            archive("h-2025-01-02T10:00:00", "2025-01-02T10:00:00"),
            archive("h-2025-01-05T12:00:00", "2025-01-05T12:00:00"),
            archive("h-2025-01-06T12:00:00", "2025-01-06T12:00:00"),
            archive("h-2025-01-13T12:00:00", "2025-01-13T12:00:00"),
            archive("h-2025-02-10T12:00:00", "2025-02-10T12:00:00"),
            archive("h-2025-03-15T12:00:00", "2025-03-15T12:00:00"),
            archive("h-2025-03-16T12:00:00", "2025-03-16T12:00:00"),
            archive("h-old.checkpoint", "2025-03-10T00:00:00"),
            archive("h-cp.checkpoint", "2025-03-17T00:00:00"),
        ];
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Broken-down UTC: the unit tests must not depend on the zone the test process runs in
    /// (the CLI tests against borg cover zones).
    fn gm(unix_micros: i64) -> libc::tm {
        let seconds = unix_micros.div_euclid(1_000_000) as libc::time_t;
        // SAFETY: as in `local_time`: plain data filled by the thread-safe gmtime_r.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        unsafe { libc::gmtime_r(&seconds, &mut tm) };
        tm
    }

    fn select_utc(candidates: Vec<Candidate>, rules: &PruneRules, now: i64) -> Vec<String> {
        show(&select_in(candidates, rules, now, gm))
    }

    #[test]
    fn the_spec_example_comes_out_as_borg_printed_it() {
        let r = rules(
            None,
            &[
                (Period::Daily, 3),
                (Period::Weekly, 2),
                (Period::Monthly, 2),
            ],
        );
        let got = select_utc(spec_example(), &r, utc("2025-04-01T00:00:00"));
        assert_eq!(
            got,
            [
                "h-cp.checkpoint: cp",
                "h-2025-03-16T12:00:00: daily #1",
                "h-2025-03-15T12:00:00: daily #2",
                "h-old.checkpoint: -",
                "h-2025-02-10T12:00:00: daily #3",
                "h-2025-01-13T12:00:00: weekly #1",
                "h-2025-01-06T12:00:00: weekly #2",
                "h-2025-01-05T12:00:00: -",
                "h-2025-01-02T10:00:00: -",
                "h-2025-01-01T20:00:00: -",
                "h-2025-01-01T10:00:00: -",
                "h-2024-12-31T23:30:00: monthly #1",
            ]
        );
    }

    #[test]
    fn within_runs_first_and_uses_periods_up() {
        let r = rules(Some("3650d"), &[(Period::Daily, 1)]);
        let now = utc("2025-04-01T00:00:00");
        let got = select_utc(spec_example(), &r, now);
        assert_eq!(got[1], "h-2025-03-16T12:00:00: within #1");
        assert!(got.iter().all(|l| !l.contains("daily")), "{got:?}");
        // Only archives after now − interval: 1 day back from the 16th's noon + 1 s.
        let r = rules(Some("1d"), &[]);
        let got = select_utc(spec_example(), &r, utc("2025-03-17T12:00:01"));
        assert_eq!(got[0], "h-cp.checkpoint: cp");
        assert_eq!(got[1], "h-2025-03-16T12:00:00: -");
    }

    #[test]
    fn unlimited_and_oldest_fallback() {
        let r = rules(None, &[(Period::Monthly, -1)]);
        let got = select_utc(spec_example(), &r, 0);
        let kept: Vec<_> = got.iter().filter(|l| l.contains("monthly")).collect();
        assert_eq!(kept.len(), 4, "{got:?}"); // 2025-03, -02, -01, 2024-12
        assert!(got.iter().all(|l| !l.contains("oldest")));
        let r = rules(None, &[(Period::Yearly, 5)]);
        let got = select_utc(spec_example(), &r, 0);
        assert_eq!(got[1], "h-2025-03-16T12:00:00: yearly #1");
        assert_eq!(got[11], "h-2024-12-31T23:30:00: yearly #2");
        let r = rules(None, &[(Period::Daily, 1), (Period::Yearly, 5)]);
        let got = select_utc(spec_example(), &r, 0);
        assert_eq!(got[11], "h-2024-12-31T23:30:00: yearly #1");
        let r = rules(None, &[(Period::Secondly, 1), (Period::Monthly, 5)]);
        let got = select_utc(spec_example(), &r, 0);
        assert_eq!(got[11], "h-2024-12-31T23:30:00: monthly #3");
        let r = rules(None, &[(Period::Secondly, 20)]);
        let got = select_utc(spec_example(), &r, 0);
        assert_eq!(got[11], "h-2024-12-31T23:30:00: secondly #10");
    }

    #[test]
    fn ties_in_time_come_in_reverse_name_order() {
        let candidates = vec![
            archive("a", "2025-01-01T00:00:00"),
            archive("b", "2025-01-01T00:00:00"),
        ];
        let got = select_utc(candidates, &rules(None, &[(Period::Daily, 1)]), 0);
        assert_eq!(got, ["b: daily #1", "a: -"]);
    }

    #[test]
    fn a_checkpoint_older_than_a_normal_archive_is_pruned() {
        let candidates = vec![
            archive("x.checkpoint.2", "2025-01-01T00:00:00"),
            archive("y", "2025-01-02T00:00:00"),
        ];
        let got = select_utc(candidates, &rules(None, &[(Period::Secondly, -1)]), 0);
        assert_eq!(got, ["y: secondly #1", "x.checkpoint.2: -"]);
    }

    #[test]
    fn iso_weeks_and_quarters_at_year_edges() {
        let at = |text: &str| gm(utc(text));
        assert_eq!(iso_week(&at("2024-12-30T12:00:00")), (2025, 1));
        assert_eq!(iso_week(&at("2021-01-03T12:00:00")), (2020, 53));
        assert_eq!(iso_week(&at("2026-12-31T12:00:00")), (2026, 53));
        assert_eq!(iso_week(&at("2027-01-01T12:00:00")), (2026, 53));
        assert_eq!(iso_week(&at("2025-06-15T12:00:00")), (2025, 24));
        let q13 = |text: &str| Period::Quarterly13Weekly.key(&at(text))[..2].to_vec();
        assert_eq!(q13("2026-12-31T12:00:00"), [2026, 4]);
        assert_eq!(q13("2025-03-30T12:00:00"), [2025, 1]); // week 13
        assert_eq!(q13("2025-03-31T12:00:00"), [2025, 2]); // week 14
        let q3 = |text: &str| Period::Quarterly3Monthly.key(&at(text))[..2].to_vec();
        assert_eq!(q3("2025-03-31T12:00:00"), [2025, 1]);
        assert_eq!(q3("2025-10-01T12:00:00"), [2025, 4]);
    }

    #[test]
    fn keep_within_accepts_what_borg_accepts() {
        assert_eq!(parse_within("2d"), Ok(48));
        assert_eq!(parse_within("1m"), Ok(744));
        assert_eq!(parse_within("1y"), Ok(8760));
        assert_eq!(parse_within("3H"), Ok(3));
        assert_eq!(parse_within(" +1_0w"), Ok(1680));
        assert_eq!(
            parse_within("5s").unwrap_err().to_string(),
            "Unexpected interval time unit \"s\": expected one of ['H', 'd', 'w', 'm', 'y']"
        );
        assert_eq!(
            parse_within("0d").unwrap_err().to_string(),
            "Unexpected interval number \"0\": expected an integer greater than 0"
        );
        assert_eq!(parse_within("-1d"), Err(WithinError::Number("-1".into())));
        assert_eq!(parse_within("d"), Err(WithinError::Number(String::new())));
        assert_eq!(parse_within("1_d"), Err(WithinError::Number("1_".into())));
        assert_eq!(parse_within(""), Err(WithinError::Unit(String::new())));
    }

    #[test]
    fn rules_are_checked_in_one_place() {
        assert_eq!(PruneRules::new(None, []), Err(RulesError::NoRule));
        assert_eq!(
            PruneRules::new(None, [(Period::Daily, 0)]),
            Err(RulesError::NoRule)
        );
        assert!(PruneRules::new(None, [(Period::Daily, -1)]).is_ok());
        assert_eq!(
            PruneRules::new(
                None,
                [
                    (Period::Quarterly13Weekly, 1),
                    (Period::Quarterly3Monthly, 2)
                ]
            ),
            Err(RulesError::BothQuarterly)
        );
        assert!(
            PruneRules::new(
                None,
                [
                    (Period::Quarterly13Weekly, 0),
                    (Period::Quarterly3Monthly, 2)
                ]
            )
            .is_ok()
        );
        assert!(matches!(
            PruneRules::new(Some("1x"), [(Period::Daily, 1)]),
            Err(RulesError::Within(WithinError::Unit(_)))
        ));
    }

    #[test]
    fn checkpoint_names() {
        assert_eq!(checkpoint_suffix(b"a.checkpoint"), Some(11));
        assert_eq!(checkpoint_suffix(b"a.checkpoint.12"), Some(14));
        assert_eq!(checkpoint_suffix(b".checkpoint.1"), Some(13));
        assert_eq!(checkpoint_suffix(b"a.checkpoint."), None);
        assert_eq!(checkpoint_suffix(b"a.checkpoint.1x"), None);
        assert_eq!(checkpoint_suffix(b"a.checkpoints"), None);
        assert_eq!(checkpoint_suffix(b"a12"), None);
    }
}

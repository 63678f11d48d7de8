//! Retention after a backup (the config's `[retention]`): which of prune's rules, and when to
//! compact. The values travel to the helper on its command line
//! ([`super::helper_command::RetentionCommand`]), so each has one text form, parsed and
//! written here.

use std::fmt;
use std::str::FromStr;

use crate::error::ErrorKind;
use crate::ops::prune::Period;

/// One period rule: keep `count` archives of each period (`count` < 0: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep {
    pub period: Period,
    pub count: i64,
}

/// When `backup` compacts the repository after pruning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompactWhen {
    /// After every backup: pruning frees no space by itself (borg 1.2 and later).
    #[default]
    Always,
    Never,
    /// When the last compaction is at least this long ago: `amount` of `unit` (h, d, w).
    Every {
        amount: u64,
        unit: char,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetentionValueError {
    #[error("{0:?} is not always, never or an interval such as 12h, 7d or 2w")]
    Compact(String),
    #[error("{0:?} is not PERIOD=N (a period of prune's rules, N a whole number)")]
    Keep(String),
}

impl RetentionValueError {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::BadInput
    }
}

impl CompactWhen {
    /// The interval in seconds; `None` for always and never.
    pub fn interval_seconds(self) -> Option<u64> {
        match self {
            CompactWhen::Every { amount, unit } => {
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
}

impl FromStr for CompactWhen {
    type Err = RetentionValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refused = || RetentionValueError::Compact(text.to_string());
        match text {
            "always" => return Ok(CompactWhen::Always),
            "never" => return Ok(CompactWhen::Never),
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
        Ok(CompactWhen::Every { amount, unit })
    }
}

impl fmt::Display for CompactWhen {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            CompactWhen::Always => f.write_str("always"),
            CompactWhen::Never => f.write_str("never"),
            CompactWhen::Every { amount, unit } => write!(f, "{amount}{unit}"),
        }
    }
}

impl FromStr for Keep {
    type Err = RetentionValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refused = || RetentionValueError::Keep(text.to_string());
        let (name, count) = text.split_once('=').ok_or_else(refused)?;
        let period = Period::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(refused)?;
        let count = count.parse().map_err(|_| refused())?;
        Ok(Keep { period, count })
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}={}", self.period.name(), self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bad_ones_are_refused() {
        for text in ["always", "never", "12h", "7d", "2w"] {
            assert_eq!(text.parse::<CompactWhen>().unwrap().to_string(), text);
        }
        assert_eq!(
            "7d".parse::<CompactWhen>().unwrap().interval_seconds(),
            Some(7 * 86_400)
        );
        for bad in ["", "d", "0d", "7", "7m", "-1d", "1.5d", "sometimes"] {
            assert!(bad.parse::<CompactWhen>().is_err(), "{bad}");
        }
        for period in Period::ALL {
            let keep = Keep { period, count: -1 };
            assert_eq!(keep.to_string().parse::<Keep>().unwrap(), keep);
        }
        for bad in ["daily", "daily=x", "fortnightly=2", "=3"] {
            assert!(bad.parse::<Keep>().is_err(), "{bad}");
        }
    }
}

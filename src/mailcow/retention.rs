//! Retention after a backup (the config's `[retention]`): which of prune's rules (when to
//! compact is a [`super::schedule::When`]). The values travel to the helper on its command line
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not PERIOD=N (a period of prune's rules, N a whole number)")]
pub struct KeepError(pub String);

impl KeepError {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::BadInput
    }
}

impl FromStr for Keep {
    type Err = KeepError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refused = || KeepError(text.to_string());
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
    fn keeps_round_trip_and_bad_ones_are_refused() {
        for period in Period::ALL {
            let keep = Keep { period, count: -1 };
            assert_eq!(keep.to_string().parse::<Keep>().unwrap(), keep);
        }
        for bad in ["daily", "daily=x", "fortnightly=2", "=3"] {
            assert!(bad.parse::<Keep>().is_err(), "{bad}");
        }
    }
}

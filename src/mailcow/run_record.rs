//! One run of a mailcow command as it ended: what ran, when, how it ended, what it wrote. The
//! journal keeps these ([`super::journal`]), `status` and the metrics file read them, and
//! anything else that reports on runs (a notifier) can take one as it is.

use serde::{Deserialize, Serialize};

/// The longest error line kept: a record is read back by monitoring, not by a debugger.
pub const MAX_ERROR_CHARS: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `backup`, `restore`, ...
    pub command: String,
    /// Unix time in microseconds.
    pub start: i64,
    /// Unix time in microseconds.
    pub end: i64,
    /// The process's exit code: 0 ok, 1 warning, 2 error, 3 archive written but pruning
    /// failed, 128 + N stopped by signal N.
    pub exit_code: i32,
    /// The archive the run wrote or tried to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<Figures>,
    /// The error the run ended with, one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a backup wrote, from its `create --json` summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    pub files: u64,
    pub original_bytes: u64,
    pub compressed_bytes: u64,
    pub deduplicated_bytes: u64,
}

impl Figures {
    /// The figures of the first JSON document in `summary` (the helper's `create --json`
    /// output, which prune's document may follow); `None` when there is none or it lacks them.
    pub fn from_create_json(summary: &[u8]) -> Option<Figures> {
        let document: serde_json::Value = serde_json::Deserializer::from_slice(summary)
            .into_iter()
            .next()?
            .ok()?;
        let stats = &document["archive"]["stats"];
        let figure = |key: &str| stats[key].as_u64();
        Some(Figures {
            files: figure("nfiles")?,
            original_bytes: figure("original_size")?,
            compressed_bytes: figure("compressed_size")?,
            deduplicated_bytes: figure("deduplicated_size")?,
        })
    }
}

impl RunRecord {
    /// A record with the error line cut to [`MAX_ERROR_CHARS`] and kept on one line.
    pub fn new(
        command: &str,
        start: i64,
        end: i64,
        exit_code: i32,
        archive: Option<String>,
        figures: Option<Figures>,
        error: Option<&str>,
    ) -> RunRecord {
        RunRecord {
            command: command.into(),
            start,
            end,
            exit_code,
            archive,
            figures,
            error: error.map(|line| {
                line.chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(MAX_ERROR_CHARS)
                    .collect()
            }),
        }
    }

    /// Whether the run did its work: a backup with 0 or 1 wrote its archive.
    pub fn succeeded(&self) -> bool {
        matches!(self.exit_code, 0 | 1)
    }

    pub fn duration_seconds(&self) -> f64 {
        (self.end - self.start).max(0) as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_creates_summary_and_a_prune_document_after_it_is_ignored() {
        let summary = br#"{"archive": {"name": "a", "stats": {"nfiles": 3, "original_size": 300,
            "compressed_size": 200, "deduplicated_size": 100}}}
            {"prune": {}}"#;
        assert_eq!(
            Figures::from_create_json(summary),
            Some(Figures {
                files: 3,
                original_bytes: 300,
                compressed_bytes: 200,
                deduplicated_bytes: 100
            })
        );
        assert_eq!(Figures::from_create_json(b""), None);
        assert_eq!(Figures::from_create_json(b"not json"), None);
        assert_eq!(Figures::from_create_json(br#"{"archive": {}}"#), None);
    }

    #[test]
    fn an_error_line_is_one_line_and_bounded() {
        let long = format!("first\nsecond{}", "x".repeat(5000));
        let record = RunRecord::new("backup", 0, 2_500_000, 2, None, None, Some(long.as_str()));
        let error = record.error.as_deref().unwrap();
        assert!(error.starts_with("first second"));
        assert_eq!(error.chars().count(), MAX_ERROR_CHARS);
        assert_eq!(record.duration_seconds(), 2.5);
        assert!(!record.succeeded());
    }
}

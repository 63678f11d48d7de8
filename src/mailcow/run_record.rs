//! One run of a mailcow command as it ended: what ran, when, how it ended, what it wrote. The
//! journal keeps these ([`super::journal`]), `status` and the metrics file read them, and
//! anything else that reports on runs (a notifier) can take one as it is.

use std::collections::BTreeMap;

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
    /// The archive's figures by component (`vmail`, `mysql`, …: its top-level directories).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, Figures>,
    /// How many archives the repository holds after the run (after its prune, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archives: Option<u64>,
    /// The repository's size (the stored size of every object it keeps), known after a prune
    /// that deleted archives: it counts every archive's references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_bytes: Option<u64>,
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
    /// borg's `stats` object (`nfiles`, `original_size`, …).
    fn from_stats(stats: &serde_json::Value) -> Option<Figures> {
        let figure = |key: &str| stats[key].as_u64();
        Some(Figures {
            files: figure("nfiles")?,
            original_bytes: figure("original_size")?,
            compressed_bytes: figure("compressed_size")?,
            deduplicated_bytes: figure("deduplicated_size")?,
        })
    }
}

/// The JSON documents of a helper's summary, as far as they parse.
fn documents(summary: &[u8]) -> impl Iterator<Item = serde_json::Value> + '_ {
    serde_json::Deserializer::from_slice(summary)
        .into_iter()
        .map_while(Result::ok)
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
            components: BTreeMap::new(),
            archives: None,
            repository_bytes: None,
        }
    }

    /// The record with what the helper's JSON `summary` tells: its first document is
    /// `create --json`'s, with the archive's figures (`archive.stats`), the figures by component
    /// and the repository's archive count (`figures`); prune's may follow, with the count and
    /// size it left (`prune.repository`).
    pub fn with_summary(mut self, summary: &[u8]) -> RunRecord {
        for (n, document) in documents(summary).enumerate() {
            if n == 0 {
                self.figures = Figures::from_stats(&document["archive"]["stats"]);
            }
            let figures = &document["figures"];
            if let Some(by_top) = figures["stats_by_top"].as_object() {
                self.components = by_top
                    .iter()
                    .filter_map(|(name, stats)| Some((name.clone(), Figures::from_stats(stats)?)))
                    .collect();
            }
            let after_prune = &document["prune"]["repository"];
            if let Some(archives) = after_prune["archives"]
                .as_u64()
                .or(figures["repository_archives"].as_u64())
            {
                self.archives = Some(archives);
            }
            if let Some(bytes) = after_prune["unique_csize"].as_u64() {
                self.repository_bytes = Some(bytes);
            }
        }
        self
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
        let figures = |summary: &[u8]| {
            RunRecord::new("backup", 0, 1, 0, None, None, None)
                .with_summary(summary)
                .figures
        };
        assert_eq!(
            figures(summary),
            Some(Figures {
                files: 3,
                original_bytes: 300,
                compressed_bytes: 200,
                deduplicated_bytes: 100
            })
        );
        assert_eq!(figures(b""), None);
        assert_eq!(figures(b"not json"), None);
        assert_eq!(figures(br#"{"archive": {}}"#), None);
    }

    #[test]
    fn components_and_the_repository_come_from_create_and_prune() {
        let stats =
            r#"{"nfiles": 2, "original_size": 20, "compressed_size": 10, "deduplicated_size": 5}"#;
        let create = format!(
            r#"{{"archive": {{"stats": {stats}}}, "figures": {{"repository_archives": 8,
                "stats_by_top": {{"vmail": {stats}, "mysql": {{"nfiles": "x"}}}}}}}}"#
        );
        let prune = r#"{"prune": {"repository": {"archives": 7, "unique_csize": 1234}}}"#;
        let record = RunRecord::new("backup", 0, 1, 0, None, None, None)
            .with_summary(format!("{create}\n{prune}").as_bytes());
        assert_eq!(record.components.keys().collect::<Vec<_>>(), ["vmail"]);
        assert_eq!(record.components["vmail"].deduplicated_bytes, 5);
        assert_eq!(
            (record.archives, record.repository_bytes),
            (Some(7), Some(1234))
        );
        // Without a prune: create's count, no size.
        let record =
            RunRecord::new("backup", 0, 1, 0, None, None, None).with_summary(create.as_bytes());
        assert_eq!((record.archives, record.repository_bytes), (Some(8), None));
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

//! The runs as Prometheus metrics, in the text exposition format node_exporter's textfile
//! collector reads: `# HELP` and `# TYPE` before each metric, label values escaped.

use std::fmt::Write;

use super::run_record::{Figures, RunRecord};

/// The metrics of the runs in `records` (oldest first, as the journal keeps them): the last
/// run, and the last successful one, which a failed run leaves in place. Figures are the last
/// successful run's: what the newest archive holds.
pub fn render(records: &[RunRecord]) -> String {
    let mut out = String::new();
    let Some(last) = records.last() else {
        return out;
    };
    let success = records.iter().rev().find(|r| r.succeeded());
    let seconds = |micros: i64| micros as f64 / 1e6;
    // One metric: its HELP and TYPE lines, then a sample per label set.
    let mut gauges = |name: &str, help: &str, samples: &[(&[(&str, &str)], f64)]| {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{} {value}", label_set(labels));
        }
    };
    let mut gauge = |name: &str, help: &str, labels: &[(&str, &str)], value: f64| {
        gauges(name, help, &[(labels, value)]);
    };
    gauge(
        "mailcow_borg_last_run_timestamp_seconds",
        "When the last backup run ended (Unix time).",
        &[],
        seconds(last.end),
    );
    gauge(
        "mailcow_borg_last_exit_code",
        "The last backup run's exit code: 0 ok, 1 warning, 2 error, 3 archive written but pruning failed, 128+N stopped by signal N.",
        &[],
        last.exit_code.into(),
    );
    gauge(
        "mailcow_borg_last_duration_seconds",
        "How long the last backup run took.",
        &[],
        last.duration_seconds(),
    );
    // Never a success: 0, so an alert on its age fires.
    gauge(
        "mailcow_borg_last_success_timestamp_seconds",
        "When the last backup run that wrote its archive ended (Unix time; 0: none recorded).",
        &[],
        success.map_or(0.0, |s| seconds(s.end)),
    );
    let Some(success) = success else {
        return out;
    };
    if let Some(archive) = &success.archive {
        gauge(
            "mailcow_borg_last_archive_info",
            "The archive the last successful backup run wrote.",
            &[("archive", archive)],
            1.0,
        );
    }
    if let Some(figures) = success.figures {
        for (name, help, value) in [
            (
                "mailcow_borg_files",
                "Files in the last successful backup's archive.",
                figures.files,
            ),
            (
                "mailcow_borg_original_bytes",
                "Size of the last successful backup's archive before compression.",
                figures.original_bytes,
            ),
            (
                "mailcow_borg_compressed_bytes",
                "Size of the last successful backup's archive after compression.",
                figures.compressed_bytes,
            ),
            (
                "mailcow_borg_deduplicated_bytes",
                "What the last successful backup added to the repository.",
                figures.deduplicated_bytes,
            ),
        ] {
            gauge(name, help, &[], value as f64);
        }
    }
    if !success.components.is_empty() {
        type Pick = fn(&Figures) -> u64;
        let by_component: [(&str, &str, Pick); 4] = [
            (
                "mailcow_borg_component_files",
                "Files of each component in the last successful backup's archive (mysql: the dump).",
                |f| f.files,
            ),
            (
                "mailcow_borg_component_original_bytes",
                "Size of each component in the last successful backup's archive before compression.",
                |f| f.original_bytes,
            ),
            (
                "mailcow_borg_component_compressed_bytes",
                "Size of each component in the last successful backup's archive after compression.",
                |f| f.compressed_bytes,
            ),
            (
                "mailcow_borg_component_deduplicated_bytes",
                "What each component of the last successful backup added to the repository.",
                |f| f.deduplicated_bytes,
            ),
        ];
        for (name, help, pick) in by_component {
            let labels: Vec<[(&str, &str); 1]> = success
                .components
                .keys()
                .map(|component| [("component", component.as_str())])
                .collect();
            let samples: Vec<(&[(&str, &str)], f64)> = labels
                .iter()
                .zip(success.components.values())
                .map(|(labels, figures)| (&labels[..], pick(figures) as f64))
                .collect();
            gauges(name, help, &samples);
        }
    }
    if let Some(archives) = success.archives {
        gauges(
            "mailcow_borg_archives",
            "Archives in the repository after the last successful backup (and its prune).",
            &[(&[], archives as f64)],
        );
    }
    // Known only after a prune that deleted archives: the newest such figure.
    if let Some(bytes) = records.iter().rev().find_map(|r| r.repository_bytes) {
        gauges(
            "mailcow_borg_repository_stored_bytes",
            "Stored size of every object the repository keeps, as of the last prune that deleted archives.",
            &[(&[], bytes as f64)],
        );
    }
    out
}

/// `{name="value",...}`, or nothing without labels.
fn label_set(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", escape_label(value)))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// A label value as the exposition format wants it: backslash, double quote and line feed
/// escaped by a backslash.
fn escape_label(value: &str) -> String {
    escape_help(value).replace('"', "\\\"")
}

/// Help text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(end_seconds: i64, exit_code: i32, archive: &str) -> RunRecord {
        let figures = Figures {
            files: 7,
            original_bytes: 7000,
            compressed_bytes: 5000,
            deduplicated_bytes: 100,
        };
        RunRecord::new(
            "backup",
            (end_seconds - 2) * 1_000_000,
            end_seconds * 1_000_000,
            exit_code,
            Some(archive.into()),
            (exit_code == 0).then_some(figures),
            None,
        )
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(
            label_set(&[("archive", "a\\b\"c\nd")]),
            r#"{archive="a\\b\"c\nd"}"#
        );
        assert_eq!(label_set(&[]), "");
        assert_eq!(escape_help("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
    }

    #[test]
    fn every_metric_has_help_and_type_and_a_failure_keeps_the_last_success() {
        let text = render(&[run(1000, 0, "host-mailcow-\"1\""), run(2000, 2, "host-2")]);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        for sample in &samples {
            let name = sample.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# HELP {name} ")), "{text}");
            assert!(text.contains(&format!("# TYPE {name} gauge\n")), "{text}");
        }
        for expected in [
            "mailcow_borg_last_run_timestamp_seconds 2000\n",
            "mailcow_borg_last_exit_code 2\n",
            "mailcow_borg_last_duration_seconds 2\n",
            "mailcow_borg_last_success_timestamp_seconds 1000\n",
            "mailcow_borg_last_archive_info{archive=\"host-mailcow-\\\"1\\\"\"} 1\n",
            "mailcow_borg_files 7\n",
            "mailcow_borg_deduplicated_bytes 100\n",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
        assert_eq!(samples.len(), 9, "{text}");
    }

    #[test]
    fn components_archives_and_the_repository_size_are_labelled_samples() {
        let mut good = run(1000, 0, "a");
        let vmail = Figures {
            files: 5,
            original_bytes: 500,
            compressed_bytes: 400,
            deduplicated_bytes: 40,
        };
        good.components = [
            ("vmail".to_string(), vmail),
            ("mysql".into(), Figures { files: 1, ..vmail }),
        ]
        .into();
        good.archives = Some(30);
        good.repository_bytes = Some(123_456);
        let text = render(&[good, run(2000, 2, "b")]);
        for expected in [
            "mailcow_borg_component_files{component=\"mysql\"} 1\n",
            "mailcow_borg_component_files{component=\"vmail\"} 5\n",
            "mailcow_borg_component_deduplicated_bytes{component=\"vmail\"} 40\n",
            "mailcow_borg_archives 30\n",
            "mailcow_borg_repository_stored_bytes 123456\n",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
        assert_eq!(
            text.matches("# TYPE mailcow_borg_component_files gauge")
                .count(),
            1
        );
    }

    #[test]
    fn without_a_success_its_timestamp_is_zero_and_there_are_no_figures() {
        let text = render(&[run(2000, 2, "host-2")]);
        assert!(text.contains("mailcow_borg_last_success_timestamp_seconds 0\n"));
        assert!(!text.contains("mailcow_borg_files"));
        assert_eq!(render(&[]), "");
    }
}

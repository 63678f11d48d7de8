//! Monitoring of `backup` runs, with real parts: backups of the mailcow stand-in over the
//! loopback sshd leave their record in the journal and their metrics in `metrics_file`;
//! Debian's prometheus-node-exporter serves that file and a scrape over HTTP reads it without
//! errors; `status` judges fresh, stale, failed and unreachable cases with its exit codes, in
//! text, JSON and Nagios form.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::Ran;
use common::mailcow::{Mailcow, docker};
use common::mailcow_repo::Setup;
use common::sshd::free_port;

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// node_exporter with only its textfile collector, on a loopback port, for as long as it lives.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start(textfile_dir: &Path) -> NodeExporter {
        let port = free_port();
        let child = Command::new(NODE_EXPORTER)
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!(
                "--collector.textfile.directory={}",
                textfile_dir.display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let exporter = NodeExporter { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while exporter.try_scrape().is_none() {
            assert!(Instant::now() < deadline, "node_exporter did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        exporter
    }

    fn try_scrape(&self) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200").then(|| body.to_string())
    }

    /// The metrics it serves now; panics on a scrape error of the textfile collector.
    fn scrape(&self) -> String {
        let body = self.try_scrape().expect("a scrape of node_exporter");
        assert!(
            body.contains("node_textfile_scrape_error 0"),
            "the textfile collector reports an error:\n{body}"
        );
        body
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample `name` (no labels) in `metrics`.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
        .parse()
        .unwrap()
}

fn status(setup: &Setup, args: &[&str]) -> Ran {
    let ran = Ran::from(setup.command(&["status"], args).output().unwrap());
    eprintln!(
        "--- status {args:?}: exit {}\n{}{}",
        ran.code,
        ran.stdout_text(),
        ran.stderr
    );
    ran
}

fn says(ran: &Ran, expected: &str) {
    assert!(
        ran.stdout_text().contains(expected),
        "should say {expected:?}:\n{}",
        ran.stdout_text()
    );
}

#[test]
fn metrics_and_status_follow_good_and_failed_backups() {
    require!(Borg14, Sshd, Docker, Root, NodeExporter);
    let mailcow = Mailcow::create(20);
    mailcow.start();
    mailcow.fill_database();
    let setup = Setup::new(&mailcow);
    let textfiles = tempfile::tempdir().unwrap();
    let metrics_file = textfiles.path().join("mailcow_borg.prom");
    // Each good backup prunes the one before it: the repository's size is known after the
    // second.
    setup.add_to_config(&format!(
        "metrics_file = \"{}\"\n[retention]\nkeep_last = 1\n",
        metrics_file.display()
    ));
    let exporter = NodeExporter::start(textfiles.path());

    // Nothing backed up yet: critical.
    let ran = status(&setup, &[]).expect(2, "status before any backup");
    says(&ran, "CRITICAL: no good backup is recorded");
    let ran = status(&setup, &["--nagios"]).expect(2, "status --nagios before any backup");
    says(&ran, "MAILCOW-BORG CRITICAL - ");

    // A good backup: quiet as before (the summary it now captures is not printed), fresh,
    // and its metrics served.
    let ran = setup.backup(&[]).expect(0, "backup");
    assert!(ran.stdout.is_empty(), "{}", ran.stdout_text());
    let ran = status(&setup, &[]).expect(0, "status after a backup");
    says(&ran, "OK: the newest good backup is ");
    says(&ran, "repository:   newest archive ");
    let ran = status(&setup, &["--nagios", "--max-age", "26h"]).expect(0, "status --nagios");
    let line = ran.stdout_text();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.starts_with("MAILCOW-BORG OK - the newest good backup is "),
        "{line}"
    );
    assert!(line.contains(" | age="), "{line}");
    assert!(line.contains("s;;93600 "), "{line}");
    assert!(line.contains(" archives=1"), "{line}");
    let ran = status(&setup, &["--json"]).expect(0, "status --json");
    let document: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(document["status"], "ok");
    assert_eq!(document["repository"]["reachable"], true);
    assert_eq!(document["repository"]["archives"], 1);
    let archive = document["last_run"]["archive"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(document["repository"]["newest_archive"]["name"], archive);
    assert!(document["last_run"]["figures"]["files"].as_u64().unwrap() > 20);

    let metrics = exporter.scrape();
    assert_eq!(sample(&metrics, "mailcow_borg_last_exit_code"), 0.0);
    assert!(sample(&metrics, "mailcow_borg_files") > 20.0);
    assert!(sample(&metrics, "mailcow_borg_original_bytes") > 0.0);
    assert!(sample(&metrics, "mailcow_borg_compressed_bytes") > 0.0);
    assert!(sample(&metrics, "mailcow_borg_deduplicated_bytes") > 0.0);
    assert!(sample(&metrics, "mailcow_borg_last_duration_seconds") > 0.0);
    let success = sample(&metrics, "mailcow_borg_last_success_timestamp_seconds");
    assert_eq!(
        success,
        sample(&metrics, "mailcow_borg_last_run_timestamp_seconds")
    );
    assert!(
        metrics.contains(&format!(
            "mailcow_borg_last_archive_info{{archive=\"{archive}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE mailcow_borg_files gauge"),
        "{metrics}"
    );
    for component in ["vmail", "crypt", "mysql", "redis"] {
        let files = format!("mailcow_borg_component_files{{component=\"{component}\"}}");
        assert!(sample(&metrics, &files) >= 1.0, "{metrics}");
    }
    assert!(
        sample(
            &metrics,
            "mailcow_borg_component_original_bytes{component=\"vmail\"}"
        ) > sample(
            &metrics,
            "mailcow_borg_component_original_bytes{component=\"crypt\"}"
        )
    );
    assert_eq!(sample(&metrics, "mailcow_borg_archives"), 1.0);
    assert!(
        !metrics.contains("mailcow_borg_repository_stored_bytes"),
        "{metrics}"
    );
    // A second good backup prunes the first: the count stays, the size is known.
    setup.backup(&[]).expect(0, "second backup");
    let metrics = exporter.scrape();
    assert_eq!(sample(&metrics, "mailcow_borg_archives"), 1.0);
    assert!(sample(&metrics, "mailcow_borg_repository_stored_bytes") > 0.0);
    let success = sample(&metrics, "mailcow_borg_last_success_timestamp_seconds");

    // A backup holds the repository's exclusive lock for as long as it runs (here real borg's
    // `with-lock` stands in for it): status still reads the newest archive, without waiting.
    let repo = setup.repo.display().to_string();
    let mut holder = setup
        .world
        .borg_command(
            &common::borg14(),
            setup.dir.path(),
            &["with-lock", repo.as_str(), "sleep", "60"],
            &[],
        )
        .spawn()
        .unwrap();
    let lock = setup.repo.join("lock.exclusive");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lock.exists() {
        assert!(Instant::now() < deadline, "borg with-lock did not lock");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ran = status(&setup, &[]).expect(0, "status while the repository is locked");
    says(&ran, "repository:   newest archive ");
    holder.kill().unwrap();
    holder.wait().unwrap();
    setup.borg(&["break-lock", repo.as_str()]);

    // The repository out of reach (a port nothing listens on): the journal still answers,
    // with a warning that says so.
    let closed = format!("ssh://root@127.0.0.1:{}/nowhere", free_port());
    let ran = status(&setup, &["--repo", &closed]).expect(1, "status, repository unreachable");
    says(&ran, "WARNING: the newest good backup is ");
    says(&ran, "repository:   unreachable: ");
    let ran = status(&setup, &["--repo", &closed, "--nagios"]).expect(1, "nagios, unreachable");
    says(&ran, "MAILCOW-BORG WARNING - ");
    says(&ran, "repository unreachable");

    // Time moves on: stale.
    std::thread::sleep(Duration::from_secs(2));
    let ran = status(&setup, &["--max-age", "1s"]).expect(2, "status, stale");
    says(&ran, "CRITICAL: the newest good backup is ");
    says(&ran, "old, more than 1s");
    let ran = status(&setup, &["--max-age", "1s", "--nagios"]).expect(2, "nagios, stale");
    says(&ran, "MAILCOW-BORG CRITICAL - ");

    // A failed backup (the database stopped): failed, and the metrics show it, with the last
    // success kept.
    docker(&["stop", "-t", "1", &mailcow.container("mysql-mailcow")]);
    let ran = setup.backup(&[]).expect(2, "backup with mysql stopped");
    assert!(
        ran.stderr.contains("mysql-mailcow is not running"),
        "{}",
        ran.stderr
    );
    let ran = status(&setup, &[]).expect(2, "status after a failed backup");
    says(&ran, "CRITICAL: the last backup failed (exit 2, ");
    says(&ran, "mysql-mailcow is not running");
    let ran = status(&setup, &["--nagios"]).expect(2, "nagios after a failed backup");
    says(&ran, "MAILCOW-BORG CRITICAL - the last backup failed");
    says(&ran, "exit_code=2");
    let metrics = exporter.scrape();
    assert_eq!(sample(&metrics, "mailcow_borg_last_exit_code"), 2.0);
    assert_eq!(
        sample(&metrics, "mailcow_borg_last_success_timestamp_seconds"),
        success
    );
    assert!(sample(&metrics, "mailcow_borg_last_run_timestamp_seconds") > success);

    // The journal holds both runs, one JSON line each.
    let journal = std::fs::read_to_string(setup.dir.path().join("state/journal.jsonl")).unwrap();
    let runs: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), 3, "{journal}");
    assert_eq!(runs[0]["exit_code"], 0);
    assert!(runs[0]["components"]["vmail"]["files"].as_u64().unwrap() > 0);
    assert_eq!(runs[1]["archives"], 1);
    assert_eq!(runs[2]["exit_code"], 2);
    assert!(
        runs[2]["error"]
            .as_str()
            .unwrap()
            .contains("mysql-mailcow is not running")
    );
}

#[test]
fn a_metrics_file_that_cannot_be_written_is_a_warning_that_leaves_the_exit_code() {
    require!(Borg14, Sshd, Docker, Root);
    let mailcow = Mailcow::create(5);
    mailcow.start();
    let setup = Setup::new(&mailcow);
    setup.add_to_config("metrics_file = \"/nonexistent-dir/mailcow_borg.prom\"\n");
    let ran = setup
        .backup(&["--component", "vmail"])
        .expect(0, "backup with an unwritable metrics file");
    assert!(
        ran.stderr
            .contains("warning: cannot write the metrics file /nonexistent-dir/mailcow_borg.prom"),
        "{}",
        ran.stderr
    );
    let ran = status(&setup, &[]).expect(0, "status");
    says(&ran, "OK: ");
}

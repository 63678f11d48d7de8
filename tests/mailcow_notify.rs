//! Notifications of runs, with real parts: backups of the mailcow stand-in over the loopback
//! sshd, a drill and a check tell a recording HTTP server (plain and HTTPS through a test CA
//! given as `ca_file`) and two aiosmtpd SMTP servers (plain as the mailcow's postfix would be,
//! and STARTTLS with AUTH) how they went; a webhook that never answers delays a run by no
//! more than the timeout and leaves the exit code alone; no token appears on stderr.

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::cli::Ran;
use common::mailcow::{Mailcow, docker};
use common::mailcow_repo::Setup;
use common::sshd::free_port;

/// A sink of `tests/oracle/notify_sinks.py`, for as long as it lives.
struct Sink {
    child: Child,
    port: u16,
    /// The HTTP sink's log file, or the SMTP sink's directory.
    target: PathBuf,
}

impl Sink {
    fn start(kind: &str, target: PathBuf, extra: &[&str]) -> Sink {
        let port = free_port();
        let mut child = Command::new(common::borg14_python())
            .arg(common::repo_root().join("tests/oracle/notify_sinks.py"))
            .arg(kind)
            .arg(port.to_string())
            .arg(&target)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the {kind} sink did not start");
        Sink {
            child,
            port,
            target,
        }
    }

    /// The HTTP requests recorded so far.
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.target)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The mails taken so far, oldest first.
    fn mails(&self) -> Vec<serde_json::Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.target)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a certificate it signed for 127.0.0.1, as PEM files in `dir`: (CA, cert, key).
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

const SECRETS: [&str; 5] = [
    "hc-secret-uuid",
    "kuma-secret-token",
    "ntfy-secret-token",
    "webhook-secret-token",
    "smtp-secret-password",
];

fn no_secret_in(ran: &Ran) {
    for secret in SECRETS {
        assert!(
            !ran.stderr.contains(secret) && !ran.stdout_text().contains(secret),
            "{secret} shown:\n{}",
            ran.stderr
        );
    }
}

/// The requests of `sink` whose path contains `part`.
fn calls(sink: &Sink, part: &str) -> Vec<serde_json::Value> {
    sink.requests()
        .into_iter()
        .filter(|r| r["path"].as_str().unwrap().contains(part))
        .collect()
}

fn header<'a>(request: &'a serde_json::Value, name: &str) -> &'a str {
    request["headers"][name].as_str().unwrap_or("")
}

#[test]
fn runs_tell_pings_ntfy_webhooks_and_mail_how_they_went() {
    require!(Borg14, Sshd, Docker, Root, Aiosmtpd);
    let mailcow = Mailcow::create(5);
    mailcow.start();
    mailcow.fill_database();
    // A mailbox without its maildir: the drill's warning.
    mailcow.mailbox_rows_matching_maildirs(&["ghost@domain0.test"]);
    let setup = Setup::new(&mailcow);
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(dir.path());
    let tls = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let http = Sink::start("http", dir.path().join("http.jsonl"), &[]);
    let https = Sink::start("http", dir.path().join("https.jsonl"), &tls);
    let postfix_dir = dir.path().join("postfix");
    let submission_dir = dir.path().join("submission");
    std::fs::create_dir(&postfix_dir).unwrap();
    std::fs::create_dir(&submission_dir).unwrap();
    let postfix = Sink::start("smtp", postfix_dir, &[]);
    let mut with_auth = tls.to_vec();
    with_auth.extend(["--auth", "backup:smtp-secret-password"]);
    let submission = Sink::start("smtp", submission_dir, &with_auth);
    // Takes connections into its backlog and never answers.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    let secret_file = |name: &str, secret: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        path.display().to_string()
    };
    let timeout = 3;
    setup.add_to_config(&format!(
        r#"
[notify]
timeout = {timeout}
ca_file = "{ca}"

[notify.healthchecks]
url = "http://127.0.0.1:{http}/ping/hc-secret-uuid"

[notify.uptime_kuma]
url = "https://127.0.0.1:{https}/api/push/kuma-secret-token?status=up&msg=OK&ping="

[[notify.ntfy]]
url = "http://127.0.0.1:{http}/ntfy-topic"
events = ["success", "warning", "failure"]
tags = ["mailcow"]
token_file = "{ntfy_token}"

[[notify.webhook]]
url = "https://127.0.0.1:{https}/hook"
token_file = "{webhook_token}"

[[notify.webhook]]
url = "http://127.0.0.1:{dead_port}/never-answers"

[[notify.mail]]
to = ["admin@example.test"]
port = {postfix}

[[notify.mail]]
to = ["ops@example.test", "oncall@example.test"]
from = "backup@example.test"
host = "127.0.0.1"
port = {submission}
tls = "starttls"
user = "backup"
password_file = "{password}"
"#,
        ca = ca.display(),
        http = http.port,
        https = https.port,
        postfix = postfix.port,
        submission = submission.port,
        ntfy_token = secret_file("ntfy-token", "ntfy-secret-token"),
        webhook_token = secret_file("webhook-token", "webhook-secret-token"),
        password = secret_file("smtp-password", "smtp-secret-password"),
    ));

    // `config check` lists the targets without their secrets, and reads every file they need.
    let ran = setup.check(&[]).expect(0, "config check");
    no_secret_in(&ran);
    for expected in [
        format!("notify (each call at most {timeout} s):"),
        "  the healthchecks ping to http://127.0.0.1/… (start, success, warning, failure)".into(),
        "  the Uptime Kuma push to https://127.0.0.1/… (success, warning, failure)".into(),
        format!(
            "  the mail through 127.0.0.1:{} (STARTTLS) to ops@example.test, oncall@example.test (warning, failure)",
            submission.port
        ),
    ] {
        assert!(
            ran.stdout_text().contains(&expected),
            "{expected}\n{}",
            ran.stdout_text()
        );
    }
    let password = dir.path().join("smtp-password");
    std::fs::rename(&password, dir.path().join("elsewhere")).unwrap();
    let ran = setup
        .check(&[])
        .expect(2, "config check without the SMTP password");
    assert!(
        ran.stderr.contains("notify: cannot read "),
        "{}",
        ran.stderr
    );
    std::fs::rename(dir.path().join("elsewhere"), &password).unwrap();

    // A good backup: start and success pings, no mail (mail is for warnings and failures).
    let started = Instant::now();
    let ran = setup.backup(&[]).expect(0, "backup");
    let took = started.elapsed();
    no_secret_in(&ran);
    // The dead webhook: one warning per event, by kind and host only.
    assert!(
        ran.stderr.contains(&format!(
            "warning: the webhook http://127.0.0.1/… (success) failed: no answer within {timeout} s"
        )),
        "{}",
        ran.stderr
    );
    let hc = calls(&http, "/ping/hc-secret-uuid");
    let paths: Vec<&str> = hc.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["/ping/hc-secret-uuid/start", "/ping/hc-secret-uuid"],
        "{hc:?}"
    );
    let kuma = calls(&https, "/api/push/kuma-secret-token");
    assert_eq!(kuma.len(), 1, "{kuma:?}");
    let push = kuma[0]["path"].as_str().unwrap();
    assert!(
        push.starts_with("/api/push/kuma-secret-token?status=up&msg=mailcow-borg%20backup%20on%20"),
        "{push}"
    );
    let ping: u64 = push.rsplit_once("&ping=").unwrap().1.parse().unwrap();
    assert!(ping > 0 && ping < took.as_millis() as u64, "{push}");
    let ntfy = calls(&http, "/ntfy-topic");
    assert_eq!(ntfy.len(), 1, "{ntfy:?}");
    assert!(
        header(&ntfy[0], "title").ends_with(" succeeded"),
        "{ntfy:?}"
    );
    assert_eq!(header(&ntfy[0], "priority"), "2");
    assert_eq!(header(&ntfy[0], "tags"), "white_check_mark,mailcow");
    assert_eq!(
        header(&ntfy[0], "authorization"),
        "Bearer ntfy-secret-token"
    );
    assert!(
        ntfy[0]["body"].as_str().unwrap().contains("Files: "),
        "{ntfy:?}"
    );
    let hooks = calls(&https, "/hook");
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert_eq!(
        header(&hooks[1], "authorization"),
        "Bearer webhook-secret-token"
    );
    assert_eq!(header(&hooks[1], "content-type"), "application/json");
    let start: serde_json::Value =
        serde_json::from_str(hooks[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(start["event"], "start");
    assert_eq!(start["command"], "backup");
    let end: serde_json::Value = serde_json::from_str(hooks[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(end["event"], "success");
    assert_eq!(end["exit_code"], 0);
    assert!(end["figures"]["files"].as_u64().unwrap() > 5, "{end}");
    assert!(
        end["archive"].as_str().unwrap().contains("-mailcow-"),
        "{end}"
    );
    assert!(end["end_time"].as_str().unwrap().ends_with('Z'), "{end}");
    assert!(postfix.mails().is_empty() && submission.mails().is_empty());
    // What the dead endpoint cost: the end's calls waited at most the timeout for it.
    let last_answered = hooks[1]["time"].as_f64().unwrap();
    let finished = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        finished - last_answered < f64::from(timeout) + 10.0,
        "the run went on {} s after its notifications",
        finished - last_answered
    );

    // The repository check, with the config: its own start and success.
    let ran = Ran::from(
        setup
            .command(&["check"], &["--archives-only"])
            .output()
            .unwrap(),
    )
    .expect(0, "check");
    no_secret_in(&ran);
    let hooks = calls(&https, "/hook");
    let last: serde_json::Value =
        serde_json::from_str(hooks.last().unwrap()["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (last["command"].as_str(), last["event"].as_str()),
        (Some("check"), Some("success"))
    );

    // A drill that warns (a mailbox without its maildir): a warning everywhere, and mail.
    let ran =
        Ran::from(setup.command(&["drill"], &["latest"]).output().unwrap()).expect(1, "drill");
    no_secret_in(&ran);
    let ntfy = calls(&http, "/ntfy-topic");
    let warned = ntfy.last().unwrap();
    assert!(
        header(warned, "title").contains("drill on ")
            && header(warned, "title").ends_with(" succeeded with warnings"),
        "{warned}"
    );
    assert_eq!(header(warned, "priority"), "3");
    let mails = postfix.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(
        mails[0]["rcpt_tos"],
        serde_json::json!(["admin@example.test"])
    );
    assert!(
        mails[0]["mail_from"]
            .as_str()
            .unwrap()
            .starts_with("mailcow-borg@")
    );
    assert!(
        mails[0]["subject"]
            .as_str()
            .unwrap()
            .ends_with(" succeeded with warnings"),
        "{mails:?}"
    );
    assert_eq!(mails[0]["tls"], false);
    let mails = submission.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(
        (mails[0]["tls"].as_bool(), mails[0]["login"].as_str()),
        (Some(true), Some("backup"))
    );
    assert_eq!(mails[0]["mail_from"], "backup@example.test");
    assert_eq!(
        mails[0]["rcpt_tos"],
        serde_json::json!(["ops@example.test", "oncall@example.test"])
    );

    // A failed backup (the database stopped): /fail with the log, down, urgent, and mail that
    // names what failed.
    docker(&["stop", "-t", "1", &mailcow.container("mysql-mailcow")]);
    let ran = setup.backup(&[]).expect(2, "backup with mysql stopped");
    no_secret_in(&ran);
    let failed = calls(&http, "/ping/hc-secret-uuid/fail");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]["body"]
            .as_str()
            .unwrap()
            .contains("mysql-mailcow is not running"),
        "{failed:?}"
    );
    let kuma = calls(&https, "/api/push/kuma-secret-token");
    assert!(
        kuma.last().unwrap()["path"]
            .as_str()
            .unwrap()
            .contains("status=down&msg="),
        "{kuma:?}"
    );
    let ntfy = calls(&http, "/ntfy-topic");
    let urgent = ntfy.last().unwrap();
    assert!(header(urgent, "title").ends_with(" FAILED"), "{urgent}");
    assert_eq!(header(urgent, "priority"), "4");
    assert_eq!(header(urgent, "tags"), "rotating_light,mailcow");
    let hooks = calls(&https, "/hook");
    let last: serde_json::Value =
        serde_json::from_str(hooks.last().unwrap()["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (last["event"].as_str(), last["exit_code"].as_i64()),
        (Some("failure"), Some(2))
    );
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("mysql-mailcow is not running"),
        "{last}"
    );
    assert!(
        last["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("mysql-mailcow")),
        "{last}"
    );
    for sink in [&postfix, &submission] {
        let mails = sink.mails();
        assert_eq!(mails.len(), 2, "{mails:?}");
        let mail = &mails[1];
        assert!(
            mail["subject"].as_str().unwrap().ends_with(" FAILED"),
            "{mail}"
        );
        let text = mail["text"].as_str().unwrap();
        assert!(
            text.contains("Error: ") && text.contains("mysql-mailcow is not running"),
            "{text}"
        );
        assert!(text.contains("The run's last lines:"), "{text}");
    }
    drop(dead);
}

#[test]
fn a_notify_table_with_mistakes_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "repository = \"/nowhere\"\n[notify.healthchecks]\nurl = \"ftp://hc-ping.com/hc-secret-uuid\"\n",
    )
    .unwrap();
    let ran = Ran::from(
        Command::new(env!("CARGO_BIN_EXE_mailcow-borg"))
            .args(["backup", "--config"])
            .arg(&config)
            .env_clear()
            .output()
            .unwrap(),
    )
    .expect(2, "backup with a bad notify table");
    assert!(
        ran.stderr
            .contains("notify.healthchecks: url: give an http:// or https:// URL"),
        "{}",
        ran.stderr
    );
    no_secret_in(&ran);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
}

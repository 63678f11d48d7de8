//! `schedule install|show|remove` into temporary unit and cron dirs: the systemd units pass
//! real `systemd-analyze verify`, the cron entry parses as a cron.d line, installing twice
//! writes the same bytes, a file we did not write is refused and left alone, and `remove`
//! leaves nothing of ours.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::cli::{Ran, World};

const MARKER: &str =
    "# written by mailcow-borg schedule install; remove it with: mailcow-borg schedule remove";

/// A config file and empty unit and cron dirs in a temporary directory.
struct Place {
    dir: tempfile::TempDir,
    world: World,
}

impl Place {
    fn new() -> Place {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "repository = \"/nonexistent/repo\"\nstate_dir = \"{}\"\n",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("units")).unwrap();
        std::fs::create_dir(dir.path().join("cron.d")).unwrap();
        Place {
            dir,
            world: World::new("unused"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn service(&self) -> PathBuf {
        self.path("units/mailcow-borg.service")
    }

    fn timer(&self) -> PathBuf {
        self.path("units/mailcow-borg.timer")
    }

    fn cron(&self) -> PathBuf {
        self.path("cron.d/mailcow-borg")
    }

    /// `schedule SUBCOMMAND ARGS…` with our temporary dirs.
    fn schedule(&self, subcommand: &str, args: &[&str]) -> Ran {
        let units = self.path("units");
        let cron = self.path("cron.d");
        let mut all = vec![
            "schedule",
            subcommand,
            "--unit-dir",
            units.to_str().unwrap(),
            "--cron-dir",
            cron.to_str().unwrap(),
        ];
        let config = self.path("config.toml");
        if subcommand == "install" {
            all.extend(["--config", config.to_str().unwrap()]);
        }
        all.extend(args);
        self.world.ours(self.dir.path(), &all, &[])
    }

    /// Every file below the unit and cron dirs (directories not counted).
    fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, into: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.symlink_metadata().unwrap().is_dir() {
                    walk(&path, into);
                } else {
                    into.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.path("units"), &mut files);
        walk(&self.path("cron.d"), &mut files);
        files.sort();
        files
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_ours_and_0644(path: &Path) {
    let text = String::from_utf8(read(path)).unwrap();
    assert!(text.starts_with(&format!("{MARKER}\n")), "{text}");
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644, "{}", path.display());
}

/// A one-line error on stderr naming `what`.
fn assert_one_line_error(ran: &Ran, what: &str) {
    let lines: Vec<&str> = ran.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", ran.stderr);
    assert!(
        lines[0].starts_with("mailcow-borg: error: "),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(what), "{}", lines[0]);
}

fn systemd_analyze_verify(units: &[PathBuf]) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // It exits 0 on lines it ignores ("Failed to parse …, ignoring"), so those are looked for.
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("mailcow-borg"))
        .collect();
    assert!(about_ours.is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn systemd_units_verify_install_idempotently_and_remove_cleanly() {
    require!(SystemdAnalyze);
    let place = Place::new();
    let installed = place
        .schedule(
            "install",
            &["--systemd", "--time", "03:15", "--randomize", "30m"],
        )
        .expect(0, "install --systemd");
    let said = installed.stdout_text();
    assert!(said.contains("systemctl daemon-reload && systemctl enable --now mailcow-borg.timer"));
    assert_eq!(place.files(), [place.service(), place.timer()]);
    assert_ours_and_0644(&place.service());
    assert_ours_and_0644(&place.timer());
    // The unit's ExecStart names this binary, which the verifier checks is executable.
    let service = String::from_utf8(read(&place.service())).unwrap();
    let exe = env!("CARGO_BIN_EXE_mailcow-borg");
    let config = place.path("config.toml");
    assert!(service.contains(&format!(
        "\nExecStart={exe} backup --config {}\n",
        config.display()
    )));
    let timer = String::from_utf8(read(&place.timer())).unwrap();
    assert!(timer.contains("\nOnCalendar=*-*-* 03:15:00\n"));
    assert!(timer.contains("\nRandomizedDelaySec=30min\n"));
    systemd_analyze_verify(&[place.service(), place.timer()]);
    assert!(place.path("state").is_dir(), "the state dir is made");

    let before = (read(&place.service()), read(&place.timer()));
    let again = place
        .schedule(
            "install",
            &["--systemd", "--time", "03:15", "--randomize", "30m"],
        )
        .expect(0, "install --systemd again");
    assert!(
        !again.stdout_text().contains("wrote"),
        "{}",
        again.stdout_text()
    );
    assert!(again.stdout_text().contains("nothing changed"));
    assert_eq!((read(&place.service()), read(&place.timer())), before);

    let shown = place.schedule("show", &[]).expect(0, "show").stdout_text();
    assert!(
        shown.contains(&place.service().display().to_string()),
        "{shown}"
    );
    assert!(
        shown.contains(&place.timer().display().to_string()),
        "{shown}"
    );
    assert!(shown.contains("OnCalendar=*-*-* 03:15:00"), "{shown}");

    // What `systemctl enable` links goes with the timer.
    let wants = place.path("units/timers.target.wants");
    std::fs::create_dir(&wants).unwrap();
    std::os::unix::fs::symlink(place.timer(), wants.join("mailcow-borg.timer")).unwrap();
    let removed = place.schedule("remove", &[]).expect(0, "remove");
    for path in [
        place.service(),
        place.timer(),
        wants.join("mailcow-borg.timer"),
    ] {
        assert!(
            removed
                .stdout_text()
                .contains(&format!("removed {}", path.display())),
            "{}",
            removed.stdout_text()
        );
    }
    assert_eq!(place.files(), Vec::<PathBuf>::new());
    let shown = place.schedule("show", &[]).expect(0, "show").stdout_text();
    assert!(shown.starts_with("no schedule installed"), "{shown}");
    let nothing = place.schedule("remove", &[]).expect(0, "remove again");
    assert!(nothing.stdout_text().starts_with("nothing to remove"));
}

#[test]
fn a_file_we_did_not_write_is_refused_and_left_alone() {
    let place = Place::new();
    let foreign = b"[Unit]\nDescription=the admin's own\n";
    std::fs::write(place.timer(), foreign).unwrap();
    let refused = place
        .schedule("install", &["--systemd"])
        .expect(2, "install over a foreign timer");
    assert_one_line_error(&refused, "was not written by mailcow-borg");
    assert_eq!(read(&place.timer()), foreign);
    assert!(
        !place.service().exists(),
        "nothing is written when one file is refused"
    );

    std::fs::write(place.cron(), b"0 1 * * * root true\n").unwrap();
    let refused = place
        .schedule("install", &["--cron"])
        .expect(2, "install over a foreign cron entry");
    assert_one_line_error(&refused, "was not written by mailcow-borg");
    assert_eq!(read(&place.cron()), b"0 1 * * * root true\n");

    // `remove` leaves them too, and says so with a warning.
    let removed = place.schedule("remove", &[]).expect(1, "remove");
    assert!(removed.stdout_text().starts_with("nothing to remove"));
    assert!(
        removed.stderr.contains("is left as it is"),
        "{}",
        removed.stderr
    );
    assert_eq!(read(&place.timer()), foreign);
    assert_eq!(read(&place.cron()), b"0 1 * * * root true\n");
    let shown = place.schedule("show", &[]).expect(0, "show").stdout_text();
    assert!(shown.contains("not written by mailcow-borg"), "{shown}");
}

/// The fields of the one job line of a cron.d file, checked as cron reads it: environment
/// lines, comments, and `minute hour day month weekday user command`.
fn cron_job(text: &str) -> (u32, u32, String, String) {
    assert!(
        text.ends_with('\n'),
        "cron ignores a last line without a newline"
    );
    let jobs: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter(|l| {
            // NAME=value lines set the environment.
            !l.split_once('=').is_some_and(|(name, _)| {
                name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
        })
        .collect();
    assert_eq!(jobs.len(), 1, "{text}");
    let fields: Vec<&str> = jobs[0].splitn(7, ' ').collect();
    assert_eq!(fields.len(), 7, "{}", jobs[0]);
    let number = |field: &str, max: u32| -> u32 {
        let n: u32 = field
            .parse()
            .unwrap_or_else(|_| panic!("{field} in {}", jobs[0]));
        assert!(n <= max, "{field} in {}", jobs[0]);
        n
    };
    let minute = number(fields[0], 59);
    let hour = number(fields[1], 23);
    assert_eq!(fields[2..5], ["*", "*", "*"], "every day");
    (minute, hour, fields[5].to_string(), fields[6].to_string())
}

#[test]
fn the_cron_entry_parses_installs_idempotently_and_gives_way_to_systemd() {
    require!(SystemdAnalyze);
    let place = Place::new();
    place
        .schedule(
            "install",
            &["--cron", "--time", "23:50", "--randomize", "30m"],
        )
        .expect(0, "install --cron");
    assert_eq!(place.files(), [place.cron()]);
    assert_ours_and_0644(&place.cron());
    // run-parts, which Debian's cron uses for cron.d, skips names with a dot.
    assert!(!"mailcow-borg".contains('.'));
    let text = String::from_utf8(read(&place.cron())).unwrap();
    assert!(text.lines().any(|l| l.starts_with("PATH=/")), "{text}");
    let (minute, hour, user, command) = cron_job(&text);
    let late = (hour * 60 + minute + 24 * 60 - (23 * 60 + 50)) % (24 * 60);
    assert!(late < 30, "23:50 + up to 30 min: {hour}:{minute}");
    assert_eq!(user, "root");
    let exe = env!("CARGO_BIN_EXE_mailcow-borg");
    assert_eq!(
        command,
        format!(
            "{exe} backup --config {} 2>&1 | logger -t mailcow-borg",
            place.path("config.toml").display()
        )
    );

    let before = read(&place.cron());
    let again = place
        .schedule(
            "install",
            &["--cron", "--time", "23:50", "--randomize", "30m"],
        )
        .expect(0, "install --cron again");
    assert!(
        !again.stdout_text().contains("wrote"),
        "{}",
        again.stdout_text()
    );
    assert_eq!(read(&place.cron()), before);

    // Without randomizing, the time is taken as it is.
    place
        .schedule(
            "install",
            &["--cron", "--time", "04:05", "--randomize", "0"],
        )
        .expect(0, "install --cron at another time");
    let (minute, hour, _, _) = cron_job(&String::from_utf8(read(&place.cron())).unwrap());
    assert_eq!((hour, minute), (4, 5));

    // Switching to systemd removes our cron entry: one schedule, not two.
    let switched = place
        .schedule("install", &["--systemd"])
        .expect(0, "install --systemd over cron");
    assert!(
        switched
            .stdout_text()
            .contains(&format!("removed {}", place.cron().display())),
        "{}",
        switched.stdout_text()
    );
    assert_eq!(place.files(), [place.service(), place.timer()]);
    systemd_analyze_verify(&[place.service(), place.timer()]);

    place.schedule("remove", &[]).expect(0, "remove");
    assert_eq!(place.files(), Vec::<PathBuf>::new());
}

#[test]
fn bad_times_spans_and_configs_are_one_line_errors_that_write_nothing() {
    let place = Place::new();
    for (args, what) in [
        (&["--time", "24:00"][..], "--time \"24:00\""),
        (&["--time", "3:15"][..], "--time \"3:15\""),
        (&["--randomize", "1d"][..], "--randomize \"1d\""),
        (&["--randomize", "24h"][..], "--randomize \"24h\""),
    ] {
        let ran = place.schedule("install", args).expect(2, what);
        assert_one_line_error(&ran, what);
    }
    std::fs::write(place.path("config.toml"), "no_such_key = 1\n").unwrap();
    let ran = place
        .schedule("install", &["--cron"])
        .expect(2, "a bad config");
    assert_one_line_error(&ran, "no_such_key");
    std::fs::remove_file(place.path("config.toml")).unwrap();
    let ran = place
        .schedule("install", &["--cron"])
        .expect(2, "no config");
    assert_one_line_error(&ran, "config.toml");
    assert_eq!(place.files(), Vec::<PathBuf>::new());
}

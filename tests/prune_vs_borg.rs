//! `prune --dry-run --list` of our binary against borg 1.4.5's, line for line: the archives
//! kept and pruned, the rule and number of each, the interleaved checkpoints, the `-v` summary.
//!
//! Real borg writes a series of archives over several years (irregular gaps, several a day,
//! weeks of nothing, year and month ends, the DST switches of Berlin and New York, archives
//! started in the same second, `.checkpoint` and `.checkpoint.N` archives, a few in the last
//! hours and days for `--keep-within`), then both tools prune it (dry runs) with seeded random
//! rule sets — every rule alone and in combinations, negative counts, `-a` globs — in several
//! time zones. Then a real prune of twin copies: the same archives remain, and borg's `check`
//! passes on ours. Also borg's verified example (`docs/borg-cli.md` §7.2) and the errors.
//! `MCB_PRUNE_SEED` replays a run; the seed is in every failure message.

use crate::common;

use std::path::PathBuf;

use common::cli::{Ran, World};
use mailcow_borg::format::manifest::format_timestamp;

const ZONES: [&str; 4] = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu"];

/// splitmix64: small, seeded, good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of Unix seconds, as `create --timestamp` takes it.
fn utc_text(seconds: i64) -> String {
    let text = format_timestamp(seconds * 1_000_000);
    text.split('.').next().unwrap().to_string()
}

fn utc_seconds(text: &str) -> i64 {
    mailcow_borg::format::manifest::parse_timestamp(text.as_bytes()).unwrap() / 1_000_000
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A repository (`-e none`, a local path) holding `series` (name, UTC start), made by borg.
struct Series {
    world: World,
    _dir: tempfile::TempDir,
    empty: PathBuf,
    repo: String,
    names: Vec<String>,
    starts: Vec<i64>,
}

impl Series {
    fn create(series: &[(String, i64)]) -> Series {
        let world = World::new("");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let repo_path = dir.path().join("repo");
        world.borg_init(&common::borg14(), &empty, "none", &repo_path);
        let listing: Vec<(String, String)> = series
            .iter()
            .map(|(name, start)| (name.clone(), utc_text(*start)))
            .collect();
        let list_file = dir.path().join("series.json");
        std::fs::write(&list_file, serde_json::to_vec(&listing).unwrap()).unwrap();
        let script = common::repo_root().join("tests/oracle/create_series.py");
        let repo = repo_path.to_str().unwrap().to_string();
        world
            .borg(
                &common::borg14_python(),
                &empty,
                &[script.to_str().unwrap(), &repo, list_file.to_str().unwrap()],
            )
            .expect(0, "create the archive series with borg");
        Series {
            world,
            _dir: dir,
            empty,
            repo,
            names: series.iter().map(|(n, _)| n.clone()).collect(),
            starts: series.iter().map(|(_, s)| *s).collect(),
        }
    }

    fn args<'a>(&'a self, rules: &'a [String]) -> Vec<&'a str> {
        let mut args = vec!["prune"];
        args.extend(rules.iter().map(String::as_str));
        args.push(&self.repo);
        args
    }

    fn borg(&self, rules: &[String], zone: &str) -> Ran {
        self.world.borg_env(
            &common::borg14(),
            &self.empty,
            &self.args(rules),
            &[("TZ", zone)],
        )
    }

    fn ours(&self, rules: &[String], zone: &str) -> Ran {
        self.world
            .ours(&self.empty, &self.args(rules), &[("TZ", zone)])
    }

    /// Both tools' stderr and exit codes must be the same.
    fn compare(&self, rules: &[String], zone: &str, context: &str) -> String {
        let theirs = self.borg(rules, zone);
        let ours = self.ours(rules, zone);
        let what = format!("{context}: TZ={zone} prune {}", rules.join(" "));
        assert_eq!(theirs.code, 0, "{what}: borg failed:\n{}", theirs.stderr);
        assert_eq!(ours.code, 0, "{what}: we failed:\n{}", ours.stderr);
        if ours.stderr != theirs.stderr {
            let mut report = String::new();
            let (a, b): (Vec<_>, Vec<_>) = (
                theirs.stderr.lines().collect(),
                ours.stderr.lines().collect(),
            );
            for i in 0..a.len().max(b.len()) {
                let (x, y) = (a.get(i).unwrap_or(&"∅"), b.get(i).unwrap_or(&"∅"));
                let mark = if x == y { ' ' } else { '≠' };
                report.push_str(&format!("{mark} borg: {x}\n{mark} ours: {y}\n"));
            }
            panic!("{what}: output differs\n{report}");
        }
        theirs.stderr
    }
}

/// The series: fixed edge cases plus seeded random ones, `(name, start)`, unique names.
fn make_series(rng: &mut Rng, now: i64) -> Vec<(String, i64)> {
    let mut starts: Vec<(&str, i64)> = [
        // Year and month ends (in UTC; in other zones they move across the edge).
        "2022-12-31T23:30:00",
        "2023-01-01T00:30:00",
        "2023-12-31T22:59:59",
        "2024-01-01T03:00:00",
        "2024-02-29T23:59:59",
        "2024-03-31T23:00:00",
        "2025-06-30T22:30:00",
        // ISO weeks that belong to the neighbouring year.
        "2020-12-31T12:00:00",
        "2021-01-03T12:00:00",
        "2026-01-01T12:00:00",
        // Berlin's switches (01:00 UTC), on both sides.
        "2023-03-26T00:30:00",
        "2023-03-26T01:30:00",
        "2023-10-29T00:30:00",
        "2023-10-29T01:30:00",
        // New York's (07:00 UTC in March, 06:00 UTC in November).
        "2024-03-10T06:30:00",
        "2024-03-10T07:30:00",
        "2024-11-03T05:30:00",
        "2024-11-03T06:30:00",
        // Several a day, two in one minute, two in one hour.
        "2025-02-14T08:00:00",
        "2025-02-14T08:00:30",
        "2025-02-14T08:40:00",
        "2025-02-14T19:00:00",
    ]
    .iter()
    .map(|t| ("web", utc_seconds(t)))
    .collect();
    // Two archives in the same second: borg's order among them is reverse name order.
    let tie = utc_seconds("2025-09-01T10:00:00");
    starts.push(("tie-a", tie));
    starts.push(("tie-b", tie));
    // Irregular runs: mostly hours to days apart, sometimes weeks of nothing.
    let mut t = utc_seconds("2021-06-01T00:00:00");
    while t < now - 40 * 86_400 {
        let gap = if rng.chance(15) {
            (14 + rng.below(50)) as i64 * 86_400
        } else {
            (1 + rng.below(5 * 24 * 60)) as i64 * 60
        };
        t += gap;
        if rng.chance(12) {
            starts.push(("db", t));
        } else if rng.chance(28) {
            starts.push(("web", t));
        }
    }
    // The last weeks, for --keep-within: from hours to days back.
    for back in [
        40 * 86_400 - 7,
        9 * 86_400 + 13,
        50 * 3_600 + 17,
        5 * 3_600 + 11,
        1_800 + 3,
    ] {
        starts.push(("web", now - back));
    }
    let mut series: Vec<(String, i64)> = starts
        .into_iter()
        .map(|(prefix, start)| {
            let name = if prefix.starts_with("tie") {
                prefix.to_string()
            } else {
                format!("{prefix}-{}", utc_text(start))
            };
            (name, start)
        })
        .collect();
    // Checkpoints: older ones, one that shares its base name with a normal archive, and the
    // newest archive of all.
    let base = series[5].clone();
    series.push((format!("{}.checkpoint", base.0), base.1 + 60));
    series.push((format!("{}.checkpoint.3", base.0), base.1 + 120));
    for (i, when) in ["2024-05-05T05:05:05", "2025-01-10T10:00:00"]
        .iter()
        .enumerate()
    {
        series.push((format!("db-cp{i}.checkpoint.{}", i + 1), utc_seconds(when)));
    }
    series.push(("web-newest.checkpoint".into(), now - 60));
    series.sort();
    series.dedup_by(|a, b| a.0 == b.0);
    series
}

/// `--keep-within` values and whether one cuts too close to an archive to be decided the same
/// by two processes started moments apart (then another is taken).
fn within_value(rng: &mut Rng, starts: &[i64]) -> String {
    loop {
        let value = rng
            .pick(&["1H", "2H", "36H", "3d", "10d", "2w", "1m", "6m", "1y", "3y"])
            .to_string();
        let hours: i64 = mailcow_borg::ops::prune::parse_within(&value).unwrap();
        let cutoff = now_seconds() - hours * 3600;
        // The cutoff moves on with the clock until both tools have run: no archive may be
        // near it for the next 15 minutes.
        if starts.iter().all(|s| *s < cutoff - 60 || *s > cutoff + 900) {
            return value;
        }
    }
}

const COUNT_FLAGS: [&str; 9] = [
    "--keep-last",
    "--keep-minutely",
    "--keep-hourly",
    "--keep-daily",
    "--keep-weekly",
    "--keep-monthly",
    "--keep-13weekly",
    "--keep-3monthly",
    "--keep-yearly",
];

const GLOBS: [&str; 6] = [
    "web-*",
    "db-*",
    "web-202[34]*",
    "*-2024-0?-*",
    "tie-?",
    "nothing-matches-*",
];

fn count_value(rng: &mut Rng) -> String {
    rng.pick(&["-1", "1", "2", "3", "4", "7", "12", "40"])
        .to_string()
}

/// A random combination of rules (never both quarterly ones), maybe a glob, maybe `-v`.
fn combination(rng: &mut Rng, starts: &[i64]) -> Vec<String> {
    loop {
        let mut rules = vec!["--dry-run".to_string(), "--list".to_string()];
        if rng.chance(30) {
            rules.extend(["--keep-within".into(), within_value(rng, starts)]);
        }
        let quarterly = rng
            .pick(&["--keep-13weekly", "--keep-3monthly"])
            .to_string();
        for flag in COUNT_FLAGS {
            let is_quarterly = flag == "--keep-13weekly" || flag == "--keep-3monthly";
            if is_quarterly && flag != quarterly {
                continue;
            }
            if rng.chance(35) {
                rules.extend([flag.to_string(), count_value(rng)]);
            }
        }
        if rules.len() == 2 {
            continue;
        }
        if rng.chance(35) {
            rules.extend(["-a".into(), rng.pick(&GLOBS).to_string()]);
        }
        if rng.chance(40) {
            rules.push("-v".into());
        }
        return rules;
    }
}

#[test]
fn random_rules_in_several_zones_select_as_borg_does() {
    require!(Borg14);
    let seed = std::env::var("MCB_PRUNE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_seconds() as u64);
    let mut rng = Rng(seed);
    let context = format!("MCB_PRUNE_SEED={seed}");
    let now = now_seconds();
    let series = Series::create(&make_series(&mut rng, now));
    let starts = series.starts.clone();

    // Every rule alone once (spread over the zones), then combinations in each zone.
    let mut cases: Vec<(String, Vec<String>)> = Vec::new();
    let mut zone = ZONES.iter().cycle();
    for flag in COUNT_FLAGS {
        let rules = vec![
            "--dry-run".into(),
            "--list".into(),
            flag.into(),
            count_value(&mut rng),
        ];
        cases.push((zone.next().unwrap().to_string(), rules));
    }
    let within = vec![
        "-n".into(),
        "--list".into(),
        "--keep-within".into(),
        within_value(&mut rng, &starts),
    ];
    cases.push((zone.next().unwrap().to_string(), within));
    for zone in ZONES {
        for _ in 0..4 {
            cases.push((zone.to_string(), combination(&mut rng, &starts)));
        }
    }
    // A glob naming a normal archive takes its checkpoints along.
    let base = series
        .names
        .iter()
        .find_map(|n| n.strip_suffix(".checkpoint.3"))
        .expect("the series has a .checkpoint.3 archive")
        .to_string();
    cases.push((
        "UTC".into(),
        ["-n", "--list", "-v", "--keep-last", "1", "-a", &base]
            .map(String::from)
            .to_vec(),
    ));
    // Two archives of one second: which one a rule keeps depends on borg's tie order.
    cases.push((
        "UTC".into(),
        ["-n", "--list", "-d", "1", "-a", "tie-?"]
            .map(String::from)
            .to_vec(),
    ));
    for (zone, rules) in &cases {
        series.compare(rules, zone, &context);
    }
    series.prune_twins(&context);
}

impl Series {
    /// Prunes for real: borg this repository, we a copy of it (in a world of its own, so the
    /// two security dirs do not see each other's manifests). The `--list` lines agree, the same
    /// archives remain, and borg's `check` passes on ours.
    fn prune_twins(&self, context: &str) {
        let twin_world = World::new("");
        let twin = format!("{}-twin", self.repo);
        let copied = std::process::Command::new("cp")
            .args(["-a", &self.repo, &twin])
            .status()
            .unwrap();
        assert!(copied.success());
        let rules = [
            "--list",
            "-d",
            "5",
            "-w",
            "3",
            "-m",
            "4",
            "-y",
            "-1",
            "--keep-within",
            "36H",
        ];
        let args = |repo: &str| {
            let mut args = vec!["prune"];
            args.extend(rules);
            args.push(repo);
            args.into_iter().map(String::from).collect::<Vec<_>>()
        };
        let borg = common::borg14();
        let theirs = self
            .world
            .borg(&borg, &self.empty, &args(&self.repo))
            .expect(0, "borg prune");
        let ours = twin_world
            .ours(&self.empty, &args(&twin), &[])
            .expect(0, "our prune");
        let list_lines = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("Keeping ") || l.starts_with("Pruning "))
                .map(String::from)
                .collect()
        };
        let borg_lines = list_lines(&theirs.stderr);
        assert!(
            borg_lines
                .iter()
                .any(|l| l.starts_with("Pruning archive (")),
            "{context}: the rules prune nothing:\n{}",
            theirs.stderr
        );
        assert_eq!(
            list_lines(&ours.stderr),
            borg_lines,
            "{context}: real prune"
        );
        let listing = |world: &World, repo: &str| {
            world
                .borg(
                    &borg,
                    &self.empty,
                    &[
                        "list",
                        "--consider-checkpoints",
                        "--format",
                        "{archive} {id}{NL}",
                        repo,
                    ],
                )
                .expect(0, "borg list")
                .stdout_text()
        };
        assert_eq!(
            listing(&twin_world, &twin),
            listing(&self.world, &self.repo),
            "{context}: what remains"
        );
        twin_world
            .borg(&borg, &self.empty, &["check", &twin])
            .expect(0, "borg check of the repository we pruned");
    }
}

/// `docs/borg-cli.md` §7.2: the verified example, in UTC and in Berlin (where the oldest
/// archive moves into a used-up month and the oldest fallback keeps it).
#[test]
fn the_documented_example_matches_borg() {
    require!(Borg14);
    let series: Vec<(String, i64)> = [
        "2024-12-31T23:30:00",
        "2025-01-01T10:00:00",
        "2025-01-01T20:00:00",
        "2025-01-02T10:00:00",
        "2025-01-05T12:00:00",
        "2025-01-06T12:00:00",
        "2025-01-13T12:00:00",
        "2025-02-10T12:00:00",
        "2025-03-15T12:00:00",
        "2025-03-16T12:00:00",
    ]
    .iter()
    .map(|t| (format!("h-{t}"), utc_seconds(t)))
    .chain([
        (
            "h-old.checkpoint".into(),
            utc_seconds("2025-03-10T00:00:00"),
        ),
        ("h-cp.checkpoint".into(), utc_seconds("2025-03-17T00:00:00")),
    ])
    .collect();
    let series = Series::create(&series);
    let rules: Vec<String> = ["-n", "--list", "-d", "3", "-w", "2", "-m", "2"]
        .map(String::from)
        .to_vec();
    let utc = series.compare(&rules, "UTC", "§7.2");
    assert!(utc.contains("Keeping archive (rule: monthly #1):          h-2024-12-31T23:30:00"));
    let berlin = series.compare(&rules, "Europe/Berlin", "§7.2");
    assert!(berlin.contains("Keeping archive (rule: monthly[oldest] #1):  h-2024-12-31T23:30:00"));
    let rules: Vec<String> = ["-n", "--list", "--keep-last", "2", "-a", "h-2025-0[13]*"]
        .map(String::from)
        .to_vec();
    series.compare(&rules, "UTC", "§7.2 glob");
    let rules: Vec<String> = ["-n", "--list", "-v", "--keep-within", "3650d", "-d", "1"]
        .map(String::from)
        .to_vec();
    series.compare(&rules, "UTC", "§7.2 within");
}

/// The refusals: no rule (borg's text, rc 2), a bad `--keep-within`, both quarterly rules;
/// and `--stats` with a dry run, which borg ignores with a warning.
#[test]
fn refusals_say_what_borg_says() {
    require!(Borg14);
    let series = Series::create(&[("a".into(), utc_seconds("2025-01-01T00:00:00"))]);
    let run = |rules: &[&str]| {
        let rules: Vec<String> = rules.iter().map(|s| s.to_string()).collect();
        (series.borg(&rules, "UTC"), series.ours(&rules, "UTC"))
    };
    let (theirs, ours) = run(&["--dry-run", "--list"]);
    assert_eq!((theirs.code, ours.code), (2, 2));
    let message = theirs
        .stderr
        .trim()
        .strip_prefix("Command Error: ")
        .unwrap();
    assert_eq!(
        ours.stderr.trim(),
        format!("mailcow-borg: error: {message}")
    );

    for bad in ["5s", "0d", "-1d", "d"] {
        let (theirs, ours) = run(&["-n", &format!("--keep-within={bad}")]);
        assert_eq!((theirs.code, ours.code), (2, 2), "{bad}");
        let borg_says = theirs.stderr.lines().last().unwrap();
        let reason = borg_says.split("argument --keep-within: ").nth(1).unwrap();
        assert!(ours.stderr.contains(reason), "{bad}: {}", ours.stderr);
    }

    let (theirs, ours) = run(&["-n", "--keep-13weekly", "1", "--keep-3monthly", "1"]);
    assert_eq!((theirs.code, ours.code), (2, 2));
    // borg's argparse lets the pair through when one of them is 0.
    let (theirs, ours) = run(&[
        "-n",
        "--list",
        "--keep-13weekly",
        "0",
        "--keep-3monthly",
        "1",
    ]);
    assert_eq!((theirs.code, ours.code), (0, 0), "{}", ours.stderr);
    assert_eq!(ours.stderr, theirs.stderr);

    let (theirs, ours) = run(&["-n", "--stats", "-d", "1"]);
    assert_eq!((theirs.code, ours.code), (0, 0));
    assert_eq!(ours.stderr, theirs.stderr);
}

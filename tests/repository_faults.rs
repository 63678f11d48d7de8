//! Faults real parts cannot produce on demand, injected between our operations and real `borg
//! serve` 1.4.5 by `FaultyRepository`: a `put` refused midway, the connection gone after some
//! puts, a refused `commit`. Each time `create` must fail with an error, commit nothing, and
//! leave a repository that real borg lists without the archive and checks clean — and the next
//! honest run must succeed.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use common::cli::World;
use common::{access_options, borg14, noise};
use mailcow_borg::format::chunker::ChunkerParams;
use mailcow_borg::format::manifest::Operation;
use mailcow_borg::ops::create::files_cache::FilesCacheMode;
use mailcow_borg::ops::create::fsmeta::MetaOptions;
use mailcow_borg::ops::create::walk::WalkOptions;
use mailcow_borg::ops::create::{CreateOptions, Progress, start_walk};
use mailcow_borg::ops::open::open;
use mailcow_borg::repo::faults::{FaultPlan, FaultyRepository, Method};
use mailcow_borg::repo::location::Location;

struct Quiet;

impl Progress for Quiet {
    fn file_status(&self, _status: char, _path: &[u8]) {}
    fn warning(&self, message: &str) {
        panic!("unexpected warning: {message}");
    }
}

/// A source tree of 40 files of 64 KiB random content: 40 puts at least, one per file.
fn source(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..40u64 {
        std::fs::write(dir.join(format!("file{i:02}")), noise(i, 64 * 1024)).unwrap();
    }
}

fn create_options(name: &str, source: &Path, base: &Path, location: &Location) -> CreateOptions {
    CreateOptions {
        name: name.into(),
        roots: vec![source.to_str().unwrap().as_bytes().to_vec()],
        compression: "lz4".parse().unwrap(),
        chunker_params: ChunkerParams::DEFAULT,
        files_cache: FilesCacheMode::default(),
        files_cache_ttl: 20,
        files_cache_suffix: None,
        walk: WalkOptions {
            excludes: Vec::new(),
            exclude_caches: false,
            exclude_if_present: Vec::new(),
            keep_exclude_tags: false,
            one_file_system: false,
            meta: MetaOptions::default(),
            skip: Default::default(),
            cwd: b"/".to_vec(),
            skip_special: false,
        },
        cache_dir: base.join("cache"),
        security_dir: base.join("security"),
        location: location.canonical(),
        comment: String::new(),
        timestamp: None,
        checkpoint_interval: std::time::Duration::from_secs(1800),
        cmdline: vec![b"test".to_vec()],
        hostname: "test".into(),
        username: "test".into(),
        workers: 2,
        stdin: None,
        memory: None,
    }
}

/// Runs `create` of `source` into `repo` as archive `name`, with `plan`'s faults between it and
/// the repository; returns the error text, or `None` when it succeeded.
fn create_with_faults(
    world: &World,
    repo: &Path,
    source: &Path,
    name: &str,
    plan: FaultPlan,
) -> Option<String> {
    let location = Location::parse(repo.to_str().unwrap(), None).unwrap();
    let base = world.base.path();
    let access = access_options(&borg14(), &world.passphrase, base);
    let options = Arc::new(create_options(name, source, base, &location));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let walk = start_walk(options.clone(), Arc::new(AtomicBool::new(false)));
        let mut opened = open(&location, &access, Operation::Write).await.unwrap();
        opened.repo = Arc::new(FaultyRepository::new(opened.repo.clone(), plan));
        let result = opened
            .create(options, walk, Arc::new(Quiet), Instant::now())
            .await;
        // Closing after a dropped connection fails too; what counts is the create's outcome.
        let _ = opened.close().await;
        result.err().map(|e| e.to_string())
    })
}

/// Real borg's view afterwards: the archive names, and whether `borg check` is clean.
fn borg_sees(world: &World, repo: &Path) -> Vec<String> {
    let repo_arg = repo.to_str().unwrap();
    world
        .borg(&borg14(), repo, &["check", repo_arg])
        .expect(0, "borg check after the fault");
    let listed = world.borg(&borg14(), repo, &["list", "--short", repo_arg]);
    listed
        .expect(0, "borg list")
        .stdout_text()
        .lines()
        .map(str::to_string)
        .collect()
}

fn fault_leaves_nothing(plan: FaultPlan, expected: &str) {
    let world = World::new("faults");
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let data = work.path().join("data");
    source(&data);
    world.borg_init(&borg14(), work.path(), "repokey-blake2", &repo);

    let error = create_with_faults(&world, &repo, &data, "faulty", plan)
        .unwrap_or_else(|| panic!("create succeeded despite {plan:?}"));
    assert!(error.contains(expected), "{plan:?}: {error}");
    assert!(
        borg_sees(&world, &repo).is_empty(),
        "{plan:?}: an archive was committed"
    );

    // Nothing of the failed run misleads the next one (chunk index, files cache, nonces).
    assert_eq!(
        create_with_faults(&world, &repo, &data, "honest", FaultPlan::default()),
        None
    );
    assert_eq!(borg_sees(&world, &repo), ["honest"]);
    let restored = work.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    world
        .borg(
            &borg14(),
            &restored,
            &["extract", &format!("{}::honest", repo.display())],
        )
        .expect(0, "borg extract of the honest archive");
    let extracted = restored.join(data.strip_prefix("/").unwrap());
    for i in 0..40u64 {
        let name = format!("file{i:02}");
        assert_eq!(
            std::fs::read(extracted.join(&name)).unwrap(),
            noise(i, 64 * 1024),
            "{name}"
        );
    }
}

#[test]
fn a_put_refused_midway_commits_nothing() {
    require!(Borg14);
    fault_leaves_nothing(
        FaultPlan {
            fail_call: Some((Method::Put, 17)),
            ..FaultPlan::default()
        },
        "InjectedFault",
    );
}

#[test]
fn a_connection_dropped_after_some_puts_commits_nothing() {
    require!(Borg14);
    fault_leaves_nothing(
        FaultPlan {
            disconnect_after_puts: Some(10),
            ..FaultPlan::default()
        },
        "connection",
    );
}

#[test]
fn a_refused_commit_commits_nothing() {
    require!(Borg14);
    fault_leaves_nothing(
        FaultPlan {
            fail_call: Some((Method::Commit, 1)),
            ..FaultPlan::default()
        },
        "InjectedFault",
    );
}

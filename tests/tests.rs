//! The integration tests, as one test binary (`cargo test --test integration`): each file in
//! `tests/` is a module here, so the suite is linked once instead of once per file. A test's name
//! starts with its file's (`cargo test --test integration read_faults::`).
//!
//! A file that changes the state of its whole process (`placeholders_vs_borg` sets `TZ`) stays a
//! binary of its own, named as a `[[test]]` in `Cargo.toml`; `every_test_file_is_built` below
//! fails when a file is neither a module here nor such a binary (with `autotests = false`, cargo
//! would not build it).

#[macro_use]
mod common;

mod borg_fixtures;
mod borg_reads_ours;
mod check_vs_borg;
mod chunker_vs_borg;
mod config_fallback;
mod create_faults;
mod create_vs_borg;
mod delete_vs_borg;
mod docker_engine;
mod hostile_server;
mod init;
mod item_stream_vs_borg;
mod key;
mod lifecycle_faults;
mod mailcow_backup;
mod mailcow_drill;
mod mailcow_export;
mod mailcow_merge;
mod mailcow_monitor;
mod mailcow_notify;
mod mailcow_restore;
mod patterns_vs_borg;
mod properties;
mod prune_vs_borg;
mod read_commands;
mod read_faults;
mod repository_faults;
mod rpc_local_serve;
mod schedule_install;
mod ssh_transport;
mod static_binary;
mod transport_limits;
mod write_session;

#[test]
fn every_test_file_is_built() {
    let root = common::repo_root();
    let this = std::fs::read_to_string(root.join("tests/tests.rs")).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for entry in std::fs::read_dir(root.join("tests")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        if module == "tests" {
            continue;
        }
        assert!(
            this.contains(&format!("\nmod {module};\n"))
                || manifest.contains(&format!("path = \"tests/{name}\"")),
            "tests/{name} is neither a module of tests/tests.rs nor a [[test]] in Cargo.toml"
        );
    }
}

//! The repository commands without a REPO take the mailcow config file (`--config`, or
//! `MAILCOW_BORG_CONFIG`): its repository, passphrase file, SSH key, known_hosts and remote
//! path, and the state dir for borg's security dir — proven over a real sshd with borg 1.4.5,
//! which reads what we wrote (the key export is compared byte for byte with borg's).

use crate::common;

use std::path::Path;

use common::cli::{Ran, World};
use common::sshd::Sshd;

const PASSPHRASE: &str = "mcb-config-fallback";

#[test]
fn init_key_export_delete_prune_compact_take_the_config() {
    require!(Borg14, Sshd);
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let repo = dir.join("repo");
    let state = dir.join("state");
    let passphrase = dir.join("passphrase");
    std::fs::write(&passphrase, format!("{PASSPHRASE}\n")).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "repository = \"{}\"\npassphrase_file = \"{}\"\nssh_key = \"{}\"\nknown_hosts = \"{}\"\nremote_path = \"{}\"\nstate_dir = \"{}\"\n",
            sshd.url(&repo),
            passphrase.display(),
            sshd.path("id_ed25519").display(),
            sshd.known_hosts().display(),
            common::borg14().display(),
            state.display(),
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    // Nothing of the repository's access in the environment: all of it comes from the file.
    let ours = |args: &[&str], env: &[(&str, &str)]| -> Ran {
        let mut command = world.ours_command(dir, args, env);
        command
            .env_remove("BORG_PASSPHRASE")
            .env_remove("BORG_REMOTE_PATH");
        Ran::from(command.output().unwrap())
    };
    let borg = |args: &[&str]| world.borg(&common::borg14(), dir, args);
    let repo_arg = repo.to_str().unwrap();

    ours(
        &["init", "-e", "repokey-blake2", "--config", config_arg],
        &[],
    )
    .expect(0, "init with the config");
    // The security dir is the one the backup's helper uses, under the state dir.
    let security = state.join(".config/borg/security");
    let known: Vec<_> = std::fs::read_dir(&security)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert_eq!(known.len(), 1, "one repository in {}", security.display());
    assert!(
        !Path::new(&world.base.path().join(".config/borg/security")).exists(),
        "nothing in the user's own security dir"
    );

    // borg opens it with the config's passphrase, and exports the same paper key.
    let ours_paper = ours(&["key", "export", "--paper", "--config", config_arg], &[])
        .expect(0, "key export --paper with the config");
    let borgs_paper = borg(&["key", "export", "--paper", repo_arg]).expect(0, "borg key export");
    assert_eq!(ours_paper.stdout_text(), borgs_paper.stdout_text());
    assert!(ours_paper.stdout_text().contains("BORG PAPER KEY"));

    let source = dir.join("source");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("file"), "some data\n").unwrap();
    for name in ["a1", "a2", "a3"] {
        world
            .borg(
                &common::borg14(),
                &source,
                &["create", &format!("{repo_arg}::{name}"), "."],
            )
            .expect(0, "borg create");
    }
    // MAILCOW_BORG_CONFIG names the file as --config does.
    let listed = ours(&["list", "--short"], &[("MAILCOW_BORG_CONFIG", config_arg)])
        .expect(0, "list with MAILCOW_BORG_CONFIG");
    assert_eq!(listed.stdout_text(), "a1\na2\na3\n");
    // A flag wins over the file.
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "not it\n").unwrap();
    let refused = ours(
        &[
            "list",
            "--config",
            config_arg,
            "--passphrase-file",
            wrong.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(refused.code, 2, "{}", refused.stderr);

    // `::ARCHIVE` takes the config's repository, as it takes BORG_REPO's.
    ours(&["delete", "--config", config_arg, "::a1"], &[]).expect(0, "delete ::a1");
    ours(&["prune", "--config", config_arg, "--keep-last", "1"], &[]).expect(0, "prune");
    ours(&["compact", "--config", config_arg], &[]).expect(0, "compact");
    assert_eq!(
        borg(&["list", "--short", repo_arg])
            .expect(0, "borg list")
            .stdout_text(),
        "a3\n"
    );
    borg(&["check", repo_arg]).expect(0, "borg check");
}

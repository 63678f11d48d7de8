//! `check` against real borg 1.4.5's verdict on the same damaged repositories: one repository
//! with an archive by borg (`b1`) and one by us (`o1`), copied once per damage; real borg's
//! `check` and ours run over SSH (the test's sshd) against the same copy, served by borg 1.4.5
//! or by Debian's borg 1.2. Both must end with the same exit code and report the same findings
//! (the lines that name a problem), and both be clean where the repository is.

use crate::common;

use std::path::{Path, PathBuf};

use common::cli::{Ran, World};
use common::sshd::Sshd;
use mailcow_borg::format::envelope::{ObjectId, ObjectKey};
use mailcow_borg::format::key::{EncryptedKey, KeyType, hex};

const PASSPHRASE: &str = "mcb-check-test";

/// A damaged copy's findings are the lines that name a problem; progress and timing differ.
/// (Lines starting with "chunk " too: `--verify-data`'s.)
const FINDINGS: [&str; 8] = [
    "New missing file chunk",
    "orphaned objects found",
    "Archive TAM authentication issue",
    "Segment entry checksum mismatch",
    "errors found",
    "Index object count mismatch",
    "Archive consistency check complete",
    "Finished cryptographic data integrity verification",
];

/// Rewrites archive `argv[2]` of the repository at `argv[1]` without its TAM, with borg's own
/// modules (as an archive from before borg 1.0.9 looks, or a forged one): the archive object
/// re-encrypted without the `tam` key and the manifest pointed at it.
const WITHOUT_TAM: &str = r#"
import sys
from borg.logger import setup_logging
setup_logging()
from borg.repository import Repository
from borg.helpers import Manifest, msgpack
path, name = sys.argv[1], sys.argv[2]
with Repository(path, exclusive=True) as repository:
    manifest, key = Manifest.load(repository, (Manifest.Operation.CHECK,))
    info = manifest.archives[name]
    archive = msgpack.unpackb(key.decrypt(info.id, repository.get(info.id)))
    for tam in ('tam', b'tam'):
        archive.pop(tam, None)
    data = msgpack.packb(archive)
    new_id = key.id_hash(data)
    repository.put(new_id, key.encrypt(data))
    manifest.archives[name] = (new_id, info.ts)
    manifest.write()
    repository.commit(compact=False)
"#;

struct Twin {
    sshd: Sshd,
    world: World,
    work: tempfile::TempDir,
    master: PathBuf,
    /// `b1`'s and `o1`'s own file (one chunk each), by content.
    borg_file: Vec<u8>,
    our_file: Vec<u8>,
}

/// The repository (repokey), `b1` by borg of `source/b`, `o1` by us of `source/o`; each tree
/// has a file of its own and a file both share.
fn twin() -> Twin {
    let sshd = Sshd::start();
    let world = World::new(PASSPHRASE).with_ssh(&sshd);
    let work = tempfile::tempdir().unwrap();
    let master = work.path().join("master");
    let borg = common::borg14();
    world.borg_init(&borg, work.path(), "repokey", &master);
    let borg_file = common::noise(1, 60_000);
    let our_file = common::noise(2, 70_000);
    for (dir, own) in [("b", &borg_file), ("o", &our_file)] {
        let tree = work.path().join(dir);
        std::fs::create_dir_all(tree.join("mail")).unwrap();
        std::fs::write(tree.join("mail/own"), own).unwrap();
        std::fs::write(tree.join("mail/shared"), common::noise(3, 90_000)).unwrap();
    }
    let master_arg = master.to_str().unwrap();
    world
        .borg(
            &borg,
            &work.path().join("b"),
            &["create", &format!("{master_arg}::b1"), "."],
        )
        .expect(0, "borg create b1");
    world
        .ours(
            &work.path().join("o"),
            &["create", &format!("{}::o1", sshd.url(&master)), "."],
            &[],
        )
        .expect(0, "our create o1");
    Twin {
        sshd,
        world,
        work,
        master,
        borg_file,
        our_file,
    }
}

impl Twin {
    /// A fresh copy of the repository, for one damage.
    fn copy(&self, name: &str) -> PathBuf {
        let dir = self.work.path().join(name);
        common::copy_tree(&self.master, &dir);
        dir
    }

    /// The repository's key, unlocked.
    fn key(&self) -> ObjectKey {
        let config = std::fs::read_to_string(self.master.join("config")).unwrap();
        let text: String = config
            .lines()
            .skip_while(|l| !l.starts_with("key ="))
            .map(|l| l.trim_start_matches("key =").trim())
            .collect::<Vec<_>>()
            .join("\n");
        let blob = EncryptedKey::from_text(&text).expect("repokey");
        let material = blob.open(PASSPHRASE.as_bytes()).expect("passphrase");
        ObjectKey::new(KeyType::Repokey, material)
    }

    /// The id of the one chunk of a file with `content` (smaller than borg's minimum chunk).
    fn chunk_of(&self, content: &[u8]) -> ObjectId {
        self.key().id_hash(content)
    }

    /// `borg check ARGS REPO` and our `check ARGS REPO`, both over SSH to `server`.
    fn both(&self, repo: &Path, args: &[&str], server: &Path) -> (Ran, Ran) {
        self.both_at(&self.sshd.url(repo), args, server)
    }

    /// [`Twin::both`] of `url` (`REPO` or `REPO::ARCHIVE`).
    fn both_at(&self, url: &str, args: &[&str], server: &Path) -> (Ran, Ran) {
        let rsh = format!(
            "ssh -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
            self.sshd.path("id_ed25519").display(),
            self.sshd.known_hosts().display()
        );
        let server = server.to_str().unwrap();
        let command: Vec<&str> = [&["check"], args, &[url]].concat();
        let theirs = self.world.borg_env(
            &common::borg14(),
            self.work.path(),
            &command,
            &[("BORG_RSH", &rsh), ("BORG_REMOTE_PATH", server)],
        );
        let ours = self
            .world
            .ours(self.work.path(), &command, &[("BORG_REMOTE_PATH", server)]);
        (theirs, ours)
    }
}

/// The lines of `stderr` that report findings, sorted (the order of objects verified at once
/// differs): the client's own, and the server's (`Remote: `).
fn findings(stderr: &str) -> (Vec<String>, Vec<String>) {
    let (mut client, mut server) = (Vec::new(), Vec::new());
    for line in stderr.lines().map(str::trim_end) {
        let (text, side) = match line.strip_prefix("Remote: ") {
            Some(text) => (text, &mut server),
            None => (line, &mut client),
        };
        if text.starts_with("chunk ") || FINDINGS.iter().any(|f| text.contains(f)) {
            side.push(text.to_string());
        }
    }
    client.sort();
    server.sort();
    (client, server)
}

/// Same exit code `code`, same findings; each finding in `expected` is among them.
fn agree(theirs: &Ran, ours: &Ran, code: i32, expected: &[&str], what: &str) {
    let context = || {
        format!(
            "{what}\n--- borg (rc {})\n{}\n--- ours (rc {})\n{}",
            theirs.code, theirs.stderr, ours.code, ours.stderr
        )
    };
    assert_eq!(theirs.code, code, "borg's exit code: {}", context());
    assert_eq!(ours.code, code, "our exit code: {}", context());
    let (our_client, our_server) = findings(&ours.stderr);
    let (their_client, their_server) = findings(&theirs.stderr);
    assert_eq!(our_client, their_client, "findings differ: {}", context());
    // borg's client may exit before it has shown the server's last lines (seen with a 1.2
    // server); what it did show must be among ours.
    for line in &their_server {
        assert!(
            our_server.contains(line),
            "the server's {line:?} not shown: {}",
            context()
        );
    }
    for line in expected {
        assert!(
            ours.stderr.contains(line),
            "{line:?} not reported: {}",
            context()
        );
    }
}

fn damages_are_found_as_borg_finds_them(server: PathBuf) {
    let t = twin();

    let clean = t.copy("clean");
    for args in [
        &["-v"][..],
        &["-v", "--verify-data"],
        &["--repository-only"],
    ] {
        let (theirs, ours) = t.both(&clean, args, &server);
        agree(&theirs, &ours, 0, &[], &format!("clean, check {args:?}"));
    }
    // With -v, the client's own lines are borg's, line for line (the server's come as it sends
    // them).
    let (theirs, ours) = t.both(&clean, &["-v", "--verify-data"], &server);
    let own = |ran: &Ran| -> Vec<String> {
        ran.stderr
            .lines()
            .filter(|l| !l.starts_with("Remote: "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        own(&ours),
        own(&theirs),
        "-v lines: {}\n{}",
        ours.stderr,
        theirs.stderr
    );
    for line in [
        "Starting archive consistency check...",
        "Analyzing archive b1 (1/2)",
        "Analyzing archive o1 (2/2)",
        "Starting cryptographic data integrity verification...",
        "Archive consistency check complete, no problems found.",
    ] {
        assert!(ours.stderr.contains(line), "{line:?}: {}", ours.stderr);
    }

    // Only the MAC can tell: --verify-data finds it, the repository check does not.
    let our_chunk = t.chunk_of(&t.our_file);
    let flipped = t.copy("flipped");
    common::corrupt_object(&flipped, &our_chunk);
    let (theirs, ours) = t.both(&flipped, &["--verify-data"], &server);
    let named = format!("chunk {}, integrity error", hex(&our_chunk));
    agree(&theirs, &ours, 1, &[&named], "flipped byte, CRC fixed");
    assert!(
        ours.stderr.contains("o1: mail/own: damaged file chunk"),
        "the damaged chunk is named by archive and file: {}",
        ours.stderr
    );
    let (theirs, ours) = t.both(&flipped, &["--repository-only"], &server);
    agree(
        &theirs,
        &ours,
        0,
        &[],
        "flipped byte, CRC fixed, repository only",
    );

    // The server's CRC check finds it.
    let borg_chunk = t.chunk_of(&t.borg_file);
    let crc = t.copy("crc");
    common::flip_object_byte(&crc, &borg_chunk, false);
    for args in [&["--repository-only"][..], &[]] {
        let (theirs, ours) = t.both(&crc, args, &server);
        agree(
            &theirs,
            &ours,
            1,
            &["Segment entry checksum mismatch"],
            &format!("flipped byte without CRC, check {args:?}"),
        );
    }

    let deleted = t.copy("deleted");
    let deleted_arg = deleted.to_str().unwrap();
    t.world
        .borg(
            &common::borg14(),
            t.work.path(),
            &["debug", "delete-obj", deleted_arg, &hex(&borg_chunk)],
        )
        .expect(0, "borg debug delete-obj");
    let missing = format!(
        "b1: mail/own: New missing file chunk detected (Byte 0-60000, Chunk {}). Would replace it with all-zero chunk with --repair.",
        hex(&borg_chunk)
    );
    let (theirs, ours) = t.both(&deleted, &[], &server);
    agree(&theirs, &ours, 1, &[&missing], "deleted file chunk");
    // Only b1 checked: the chunk is still missing, orphans are not counted.
    let (theirs, ours) = t.both(&deleted, &["-v", "-a", "b*"], &server);
    agree(&theirs, &ours, 1, &[&missing], "deleted chunk, -a b*");
    assert!(
        ours.stderr
            .contains("Orphaned objects check skipped (needs all archives checked)."),
        "{}",
        ours.stderr
    );
    let (theirs, ours) = t.both_at(&format!("{}::o1", t.sshd.url(&deleted)), &[], &server);
    agree(&theirs, &ours, 0, &[], "deleted chunk of b1, REPO::o1");

    let orphan = t.copy("orphan");
    let extra = t.work.path().join("extra-object");
    let content = b"an object no archive references";
    std::fs::write(&extra, content).unwrap();
    t.world
        .borg(
            &common::borg14(),
            t.work.path(),
            &[
                "debug",
                "put-obj",
                orphan.to_str().unwrap(),
                &hex(&t.chunk_of(content)),
                extra.to_str().unwrap(),
            ],
        )
        .expect(0, "borg debug put-obj");
    let (theirs, ours) = t.both(&orphan, &[], &server);
    agree(&theirs, &ours, 1, &["1 orphaned objects found!"], "orphan");
    let (theirs, ours) = t.both(&orphan, &["--last", "1"], &server);
    agree(&theirs, &ours, 0, &[], "orphan, --last 1");

    let untrusted = t.copy("untrusted");
    t.world
        .borg_command(
            &common::borg14_python(),
            t.work.path(),
            &["-c", WITHOUT_TAM, untrusted.to_str().unwrap(), "o1"],
            &[],
        )
        .output()
        .map(Ran::from)
        .unwrap()
        .expect(0, "rewriting o1 without its TAM with borg's code");
    let (theirs, ours) = t.both(&untrusted, &[], &server);
    agree(
        &theirs,
        &ours,
        1,
        &[
            "Archive TAM authentication issue for archive o1: Archive 'o1' is unauthenticated, but it is required for this repository.",
            "This archive would be *removed* / *deleted* when using --repair!",
        ],
        "archive without TAM",
    );

    let truncated = t.copy("truncated");
    let segments = common::segment_files(&truncated.join("data"));
    // The biggest segment but the last (which holds the last commit): its end cut off.
    let victim = segments[..segments.len() - 1]
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let length = std::fs::metadata(victim).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap()
        .set_len(length / 2)
        .unwrap();
    for args in [&["--repository-only"][..], &[]] {
        let (theirs, ours) = t.both(&truncated, args, &server);
        agree(
            &theirs,
            &ours,
            1,
            &["repository check, errors found."],
            &format!("truncated segment, check {args:?}"),
        );
    }
}

#[test]
fn damages_are_found_as_borg_finds_them_through_a_borg_14_server() {
    require!(Borg14, Sshd);
    damages_are_found_as_borg_finds_them(common::borg14());
}

#[test]
fn damages_are_found_as_borg_finds_them_through_a_borg_12_server() {
    require!(Borg14, Borg12, Sshd);
    damages_are_found_as_borg_finds_them(common::borg12());
}

/// The segment files' names and contents.
fn snapshot(repo: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    common::segment_files(&repo.join("data"))
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn repair_and_wrong_option_mixes_are_refused_like_borg() {
    require!(Borg14, Sshd);
    let t = twin();
    let repo = t.copy("deleted");
    t.world
        .borg(
            &common::borg14(),
            t.work.path(),
            &[
                "debug",
                "delete-obj",
                repo.to_str().unwrap(),
                &hex(&t.chunk_of(&t.borg_file)),
            ],
        )
        .expect(0, "borg debug delete-obj");
    let before = snapshot(&repo);
    let url = t.sshd.url(&repo);
    let ran = t
        .world
        .ours(t.work.path(), &["check", "--repair", &url], &[])
        .expect(2, "check --repair");
    assert!(ran.stderr.contains("borg check --repair"), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
    assert!(snapshot(&repo) == before, "--repair changed the repository");

    for (args, message) in [
        (
            &["--max-duration", "10"][..],
            "--repository-only is required for --max-duration support.",
        ),
        (
            &["--repository-only", "--verify-data"],
            "--repository-only contradicts --first, --last, --glob-archives, --prefix and --verify-data arguments.",
        ),
    ] {
        let (theirs, ours) = t.both(&repo, args, &common::borg14());
        assert_eq!(theirs.code, 2, "borg {args:?}: {}", theirs.stderr);
        assert_eq!(ours.code, 2, "ours {args:?}: {}", ours.stderr);
        assert!(theirs.stderr.contains(message), "{}", theirs.stderr);
        assert!(ours.stderr.contains(message), "{}", ours.stderr);
    }
    assert!(
        snapshot(&repo) == before,
        "a refused check changed the repository"
    );

    // A partial repository check, as borg's: the server checks for at most a second.
    let (theirs, ours) = t.both(
        &repo,
        &["--repository-only", "--max-duration", "1"],
        &common::borg14(),
    );
    assert_eq!(
        (theirs.code, ours.code),
        (0, 0),
        "{}\n{}",
        theirs.stderr,
        ours.stderr
    );
}

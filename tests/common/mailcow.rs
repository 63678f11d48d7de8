//! The mailcow stand-in world for the end-to-end tests, on the real Docker engine, from local
//! images only (no registry is reachable; `scripts/build-test-images.sh` builds them):
//!
//! - a Compose-like project under a random, non-default project name: volumes named
//!   `<project>_<volume>` and labelled as Compose labels them, containers named as Compose v2
//!   names them and labelled with mailcow's service names, mounting the volumes at mailcow's
//!   paths;
//! - **real MariaDB** (mysql-mailcow) with a `mailcow` database, user, tables and rows, and
//!   **real Redis** (redis-mailcow) with a password and automatic saves off (so only a `SAVE`
//!   puts fresh keys on disk);
//! - **real dovecot** (dovecot-mailcow) with mail_crypt, configured where it matters for the
//!   files on disk as mailcow configures it ([`dovecot_config`]): every test mailbox holds mail
//!   delivered through it, so encrypted with the world's own EC key pair, made in the crypt
//!   volume at the container's start as mailcow's entrypoint makes it; `doveadm` records its
//!   calls (in `/doveadm.log`) and runs the real one, and [`Mailcow::read_all_mail`] reads mail
//!   back through dovecot, the proof that it can still be decrypted;
//! - busybox stand-ins for postfix, rspamd, sogo and the watchdog, holding their volumes;
//! - a mailcow directory with `mailcow.conf`, an override file, `data/conf` and certificates.
//!
//! Everything is removed when the world is dropped. The docker CLI is the test's tool here;
//! the product itself uses only the API.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian bookworm with real MariaDB and Redis.
pub const DB_IMAGE: &str = "mcb-test/debian-db:bookworm-1";
/// What the busybox stand-ins run: nothing, but they end at once on `docker stop` (a shell
/// runs its trap only between commands, and `wait` is one a signal interrupts).
const IDLE: &str = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done";

/// Debian's busybox-static alone.
pub const BUSYBOX_IMAGE: &str = "mcb-test/busybox:bookworm-1";

/// Debian bookworm with real dovecot (2.3: mail_crypt, zlib with lz4, quota), openssl and
/// busybox; no configuration of its own ([`dovecot_config`] is the test's). Its real `doveadm`
/// is `/usr/bin/doveadm`.
pub const DOVECOT_IMAGE: &str = "mcb-test/dovecot:bookworm-1";

/// dovecot-mailcow's command, what mailcow's entrypoint does that matters here: a fresh
/// prime256v1 key pair when either key is missing or empty (owned by 401, mailcow's dovecot
/// user), vmail's and the index's trees given to vmail (5000) when their top is not vmail's,
/// then dovecot in the foreground (it ends at once on `docker stop`). Its runtime directory
/// `/run/dovecot` is a tmpfs (see [`Mailcow::start`]), so every start begins without the pid
/// file of the last run — which a dovecot killed before it could remove it leaves behind and
/// which makes the next one refuse to start (`Dovecot is already running with PID 1`) — and
/// its fifos and sockets are not on Docker's storage driver (fuse-overlayfs on CI machines
/// failed dovecot's `mkfifo` there with EIO after a restart).
const DOVECOT_START: &str = "\
    if [ ! -s /mail_crypt/ecprivkey.pem ] || [ ! -s /mail_crypt/ecpubkey.pem ]; then \
        openssl ecparam -name prime256v1 -genkey | openssl pkey -out /mail_crypt/ecprivkey.pem && \
        openssl pkey -in /mail_crypt/ecprivkey.pem -pubout -out /mail_crypt/ecpubkey.pem || exit 1; \
    fi; \
    chown 401 /mail_crypt/ecprivkey.pem /mail_crypt/ecpubkey.pem && \
    for dir in /var/vmail /var/vmail_index; do \
        [ \"$(stat -c %u $dir)\" = 5000 ] || chown -R 5000:5000 $dir || exit 1; \
    done && \
    exec dovecot -F";

/// Records each call in `/doveadm.log` (the tests assert on what the restore ran), then runs
/// the real doveadm. It comes first in the PATH Docker gives an image without one.
const DOVEADM_RECORDER: &str =
    "#!/bin/sh\necho \"$*\" >> /doveadm.log\nexec /usr/bin/doveadm \"$@\"\n";

/// The mailbox that is not in the generated maildir (the database's and sogo's user).
pub const EXTRA_MAILBOX: &str = "user@example.org";

/// The folders mail is delivered into, through dovecot, in every mailbox; and how many mails
/// each gets.
const DELIVERED_FOLDERS: [&str; 3] = ["INBOX", "Sent", "Archive"];
const DELIVERED_PER_FOLDER: usize = 4;
/// The mails delivered through dovecot into each mailbox.
pub const DELIVERED_PER_MAILBOX: usize = DELIVERED_FOLDERS.len() * DELIVERED_PER_FOLDER;

/// A mail as dovecot reads it: its folder and its bytes.
pub type Mail = (String, Vec<u8>);
/// The mails of one mailbox, by its user (`user@domain`).
pub type MailboxMail = (String, Vec<Mail>);

/// The images the world runs, all built by `scripts/build-test-images.sh`.
pub const TEST_IMAGES: [&str; 3] = [DB_IMAGE, DOVECOT_IMAGE, BUSYBOX_IMAGE];

/// Passwords with characters that need quoting in an option file, SQL and redis-cli.
pub const DB_PASS: &str = "db-pass \"with\" #hash\\backslash";
pub const DB_ROOT: &str = "db-root-pass";
pub const REDIS_PASS: &str = "redis pass\"word";

/// Runs the docker CLI; panics with its output unless it succeeds.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker exec -i CONTAINER CMD…` with `stdin`; (exit code, stdout, stderr).
pub fn docker_exec(container: &str, cmd: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    use std::io::Write;
    let mut child = Command::new("docker")
        .args(["exec", "-i", container])
        .args(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker exec");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn require_images() {
    for image in TEST_IMAGES {
        let ok = Command::new("docker")
            .args(["image", "inspect", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "image {image} is missing: run scripts/build-test-images.sh"
        );
    }
}

/// Polls `ready` until it holds, for up to a minute.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A mailcow-like project on the engine.
pub struct Mailcow {
    pub project: String,
    /// The mailcow directory (mailcow.conf, data/…).
    pub dir: tempfile::TempDir,
    /// The maildir written into vmail-vol-1, as generated.
    pub maildir: PathBuf,
    /// Every mailbox dovecot knows (`user@domain`): the generated maildir's and
    /// [`EXTRA_MAILBOX`].
    pub users: Vec<String>,
}

/// dovecot's configuration for the mailboxes `users`, as (path in the container, content):
/// mailcow's layout (`data/conf/dovecot/dovecot.conf` and the user query of its entrypoint)
/// where it decides what is on disk — homes `/var/vmail/<domain>/<user>`, mail in `Maildir`
/// below (MAILDIR_SUB), the index in `/var/vmail_index/<user>`, owner vmail (5000), the plugins
/// quota, zlib (lz4) and mail_crypt with the global key pair in `/mail_crypt`, the `inbox`
/// namespace with the separator `/` and listescape (`\`), so folders are named on disk as
/// mailcow's dovecot names them — and a
/// passwd-file as the user database instead of mailcow's SQL, so that `doveadm -A` iterates
/// them. Quota counts (`count`) instead of mailcow's SQL dict; no protocol is served.
pub fn dovecot_config(users: &[String]) -> Vec<(&'static str, String)> {
    let conf = "\
protocols =
ssl = no
log_path = /dev/stderr
mail_home = /var/vmail/%d/%n
mail_location = maildir:~/Maildir:INDEX=/var/vmail_index/%u
mail_uid = 5000
mail_gid = 5000
first_valid_uid = 5000
maildir_very_dirty_syncs = yes
mail_plugins = quota zlib mail_crypt listescape
namespace inbox {
  inbox = yes
  separator = /
}
passdb {
  driver = passwd-file
  args = /etc/dovecot/users
}
userdb {
  driver = passwd-file
  args = /etc/dovecot/users
}
plugin {
  quota = count:User quota
  quota_rule = *:storage=1G
  quota_vsizes = yes
  mail_crypt_global_private_key = </mail_crypt/ecprivkey.pem
  mail_crypt_global_public_key = </mail_crypt/ecpubkey.pem
  mail_crypt_save_version = 2
  zlib_save = lz4
  listescape_char = \"\\\\\"
}
";
    // No password: nobody logs in, doveadm only looks users up.
    let passwd: String = users
        .iter()
        .map(|user| format!("{user}::5000:5000::::\n"))
        .collect();
    vec![
        ("/etc/dovecot/dovecot.conf", conf.to_string()),
        ("/etc/dovecot/users", passwd),
    ]
}

/// Copies `files` (path, content, mode) into the container `container` (created or running).
pub fn put_files(container: &str, files: &[(&str, &str, u32)]) {
    use std::os::unix::fs::PermissionsExt;
    let staging = tempfile::tempdir().unwrap();
    for (i, (path, content, mode)) in files.iter().enumerate() {
        let local = staging.path().join(i.to_string());
        std::fs::write(&local, content).unwrap();
        std::fs::set_permissions(&local, std::fs::Permissions::from_mode(*mode)).unwrap();
        docker(&[
            "cp",
            local.to_str().unwrap(),
            &format!("{container}:{path}"),
        ]);
    }
}

/// mailcow's services in the stand-in, with (volume, destination) mounts.
const SERVICES: [(&str, &[(&str, &str)]); 7] = [
    ("watchdog-mailcow", &[]),
    (
        "dovecot-mailcow",
        &[
            ("vmail-vol-1", "/var/vmail"),
            ("vmail-index-vol-1", "/var/vmail_index"),
            ("crypt-vol-1", "/mail_crypt"),
        ],
    ),
    (
        "postfix-mailcow",
        &[
            ("postfix-vol-1", "/var/spool/postfix"),
            ("crypt-vol-1", "/var/lib/zeyple"),
        ],
    ),
    ("rspamd-mailcow", &[("rspamd-vol-1", "/var/lib/rspamd")]),
    (
        "sogo-mailcow",
        &[("sogo-userdata-backup-vol-1", "/sogo_backup")],
    ),
    ("redis-mailcow", &[("redis-vol-1", "/data")]),
    (
        "mysql-mailcow",
        &[
            ("mysql-vol-1", "/var/lib/mysql"),
            ("mysql-socket-vol-1", "/var/run/mysqld"),
        ],
    ),
];

impl Mailcow {
    /// Creates the volumes and the mailcow directory; nothing runs yet.
    pub fn create(mails: u32) -> Mailcow {
        require_images();
        // Unique per test (tests of one binary run in parallel, in one process).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let project = format!("mcbtest{}x{n}", std::process::id());
        let world = Mailcow {
            project,
            dir: tempfile::tempdir().unwrap(),
            maildir: PathBuf::new(),
            users: Vec::new(),
        };
        for (_, mounts) in SERVICES {
            for (volume, _) in mounts {
                let name = world.volume(volume);
                if Command::new("docker")
                    .args(["volume", "inspect", &name])
                    .output()
                    .unwrap()
                    .status
                    .success()
                {
                    continue;
                }
                docker(&[
                    "volume",
                    "create",
                    "--label",
                    &format!("com.docker.compose.project={}", world.project),
                    "--label",
                    &format!("com.docker.compose.volume={volume}"),
                    &name,
                ]);
            }
        }
        world.write_mailcow_dir();
        world.fill_volumes(mails)
    }

    pub fn volume(&self, short: &str) -> String {
        format!("{}_{short}", self.project)
    }

    pub fn container(&self, service: &str) -> String {
        format!("{}-{service}-1", self.project)
    }

    /// Where a volume's data is on this host (tests write into it directly).
    pub fn volume_dir(&self, short: &str) -> PathBuf {
        PathBuf::from(docker(&[
            "volume",
            "inspect",
            "-f",
            "{{.Mountpoint}}",
            &self.volume(short),
        ]))
    }

    fn write_mailcow_dir(&self) {
        let d = self.dir.path();
        std::fs::write(
            d.join("mailcow.conf"),
            format!(
                "# mailcow configuration\nMAILCOW_HOSTNAME=mail.example.org\nDBNAME=mailcow\nDBUSER=mailcow\nDBPASS='{DB_PASS}'\nDBROOT={DB_ROOT}\nREDISPASS='{REDIS_PASS}'\nCOMPOSE_PROJECT_NAME={}\nMAILDIR_SUB=Maildir\n",
                self.project
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("docker-compose.override.yml"),
            "services:\n  nginx-mailcow:\n    ports: []\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.join("data/conf/postfix")).unwrap();
        std::fs::write(
            d.join("data/conf/postfix/extra.cf"),
            "smtpd_banner = test\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.join("data/assets/ssl")).unwrap();
        std::fs::write(
            d.join("data/assets/ssl/cert.pem"),
            "-----BEGIN CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            d.join("data/assets/ssl/key.pem"),
            "-----BEGIN PRIVATE KEY-----\n",
        )
        .unwrap();
    }

    fn fill_volumes(mut self, mails: u32) -> Mailcow {
        // vmail: the synthetic maildir, owned by vmail (5000) and private, as dovecot keeps it.
        let generated = self.dir.path().join("generated-maildir");
        let status = Command::new("python3")
            .arg(super::repo_root().join("tests/oracle/gen_maildir.py"))
            .args(["--mails", &mails.to_string(), "--seed", "5"])
            .arg(&generated)
            .status()
            .expect("python3 gen_maildir.py");
        assert!(status.success(), "gen_maildir.py");
        let vmail = self.volume_dir("vmail-vol-1");
        copy_into(&generated, &vmail);
        chown_private(&vmail, 5000);
        // Dovecot's users: the generated mailboxes (<domain>/<user>) and one more.
        for domain in std::fs::read_dir(&generated).unwrap() {
            let domain = domain.unwrap();
            for user in std::fs::read_dir(domain.path()).unwrap() {
                self.users.push(format!(
                    "{}@{}",
                    user.unwrap().file_name().to_str().unwrap(),
                    domain.file_name().to_str().unwrap()
                ));
            }
        }
        self.users.push(EXTRA_MAILBOX.to_string());
        self.users.sort();
        self.maildir = generated;
        // The crypt volume stays empty: dovecot-mailcow makes the keys when it starts, and the
        // index volume is dovecot's to fill.
        let rspamd = self.volume_dir("rspamd-vol-1");
        std::fs::write(rspamd.join("rspamd.history"), "history").unwrap();
        let postfix = self.volume_dir("postfix-vol-1");
        for dir in ["public", "private", "deferred/1"] {
            std::fs::create_dir_all(postfix.join(dir)).unwrap();
        }
        std::fs::write(postfix.join("deferred/1/ABC123"), "queued mail").unwrap();
        let fifo = std::ffi::CString::new(postfix.join("public/pickup").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o622) }, 0);
        let sogo = self.volume_dir("sogo-userdata-backup-vol-1");
        std::fs::write(sogo.join("user@example.org"), "sogo user data").unwrap();
        self
    }

    /// Starts every service's container.
    pub fn start(&self) {
        for (service, mounts) in SERVICES {
            let mut args: Vec<String> = vec![
                "create".into(),
                "--name".into(),
                self.container(service),
                "--label".into(),
                format!("com.docker.compose.project={}", self.project),
                "--label".into(),
                format!("com.docker.compose.service={service}"),
            ];
            for (volume, destination) in mounts {
                args.extend([
                    "-v".into(),
                    format!("{}:{destination}", self.volume(volume)),
                ]);
            }
            match service {
                "redis-mailcow" => args.extend(
                    [
                        DB_IMAGE,
                        "redis-server",
                        "--requirepass",
                        REDIS_PASS,
                        "--dir",
                        "/data",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ]
                    .map(String::from),
                ),
                "mysql-mailcow" => args.extend(
                    [
                        DB_IMAGE,
                        "sh",
                        "-c",
                        "chown mysql:mysql /var/lib/mysql /var/run/mysqld && \
                         mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null && \
                         exec mariadbd --user=mysql --datadir=/var/lib/mysql",
                    ]
                    .map(String::from),
                ),
                "dovecot-mailcow" => args.extend(
                    [
                        "--tmpfs",
                        "/run/dovecot:mode=0755",
                        DOVECOT_IMAGE,
                        "sh",
                        "-c",
                        DOVECOT_START,
                    ]
                    .map(String::from),
                ),
                _ => args.extend([BUSYBOX_IMAGE, "sh", "-c", IDLE].map(String::from)),
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            docker(&args);
            let container = self.container(service);
            if service == "dovecot-mailcow" {
                let config = dovecot_config(&self.users);
                let mut files: Vec<(&str, &str, u32)> = config
                    .iter()
                    .map(|(path, content)| (*path, content.as_str(), 0o644))
                    .collect();
                files.push(("/usr/local/bin/doveadm", DOVEADM_RECORDER, 0o755));
                put_files(&container, &files);
            }
            docker(&["start", &container]);
        }
        let mysql = self.container("mysql-mailcow");
        wait_until("mariadbd", || {
            docker_exec(&mysql, &["mariadb-admin", "ping"], b"").0 == 0
        });
        let redis = self.container("redis-mailcow");
        wait_until("redis", || {
            docker_exec(
                &redis,
                &["redis-cli", "--no-auth-warning", "-a", REDIS_PASS, "ping"],
                b"",
            )
            .1 == b"PONG\n"
        });
        self.wait_for_dovecot();
        self.deliver_mail();
    }

    /// Waits until dovecot-mailcow's dovecot serves (its keys are made before it starts):
    /// until then, looking a user up finds no auth service to ask.
    pub fn wait_for_dovecot(&self) {
        let dovecot = self.container("dovecot-mailcow");
        wait_until("dovecot", || {
            docker_exec(&dovecot, &["/usr/bin/doveadm", "user", EXTRA_MAILBOX], b"").0 == 0
        });
    }

    /// Delivers [`DELIVERED_PER_FOLDER`] mails into each of [`DELIVERED_FOLDERS`] of every
    /// mailbox through dovecot (`doveadm import` from a plain maildir), so they are stored
    /// compressed and encrypted; asserts that they are, on disk.
    fn deliver_mail(&self) {
        let dovecot = self.container("dovecot-mailcow");
        let seed = tempfile::tempdir().unwrap();
        for folder in DELIVERED_FOLDERS {
            let cur = match folder {
                "INBOX" => seed.path().join("cur"),
                _ => seed.path().join(format!(".{folder}/cur")),
            };
            std::fs::create_dir_all(&cur).unwrap();
            for i in 0..DELIVERED_PER_FOLDER {
                std::fs::write(
                    cur.join(format!("{i}.seed:2,S")),
                    seed_mail(&self.project, folder, i),
                )
                .unwrap();
            }
        }
        docker(&[
            "cp",
            seed.path().to_str().unwrap(),
            &format!("{dovecot}:/tmp/seed"),
        ]);
        let users = self.users.join("\n") + "\n";
        let (code, _, err) = docker_exec(
            &dovecot,
            &[
                "sh",
                "-c",
                "chown -R 5000:5000 /tmp/seed && \
                 while read -r user; do \
                     /usr/bin/doveadm import -u \"$user\" maildir:/tmp/seed:INDEX=MEMORY '' all || exit 1; \
                 done && rm -rf /tmp/seed",
            ],
            users.as_bytes(),
        );
        assert_eq!(code, 0, "delivering mail through dovecot: {err}");
        let vmail = self.volume_dir("vmail-vol-1");
        let (mut stored, mut mail) = (0, 0);
        for user in &self.users {
            let encrypted = encrypted_mail_files(&vmail, user);
            assert_eq!(
                encrypted.len(),
                DELIVERED_PER_MAILBOX,
                "mail files of {user} encrypted by dovecot's mail_crypt"
            );
            for file in encrypted {
                stored += std::fs::metadata(&file).unwrap().len();
                mail += size_in_name(&file);
            }
        }
        // Compressed (lz4, as mailcow's zlib_save) before they were encrypted.
        assert!(
            stored * 2 < mail,
            "{stored} bytes on disk for {mail} bytes of mail"
        );
    }

    /// Every mail of `user` as dovecot reads it (decrypted, decompressed), with its folder,
    /// sorted; an error when dovecot cannot read one (e.g. it cannot decrypt it).
    pub fn read_all_mail(&self, user: &str) -> Result<Vec<Mail>, String> {
        let mut read = self.read_mailboxes(&[user.to_string()])?;
        Ok(read.pop().map(|(_, mails)| mails).unwrap_or_default())
    }

    /// [`Mailcow::read_all_mail`] of every mailbox, by user; panics when dovecot cannot read a
    /// mail or a mailbox has none.
    pub fn read_every_mailbox(&self) -> Vec<MailboxMail> {
        let read = self.read_mailboxes(&self.users).unwrap();
        for (user, mails) in &read {
            assert!(!mails.is_empty(), "{user} has no mail");
        }
        read
    }

    /// `doveadm fetch` of every mail of each of `users`, in one `docker exec`: per user a line
    /// with its name, then one with the mails as JSON (which escapes line ends).
    fn read_mailboxes(&self, users: &[String]) -> Result<Vec<MailboxMail>, String> {
        let (code, out, err) = docker_exec(
            &self.container("dovecot-mailcow"),
            &[
                "sh",
                "-c",
                "while read -r user; do \
                     echo \"$user\"; \
                     /usr/bin/doveadm -f json fetch -u \"$user\" 'mailbox text' all || exit 1; \
                     echo; \
                 done",
            ],
            (users.join("\n") + "\n").as_bytes(),
        );
        if code != 0 || err.contains("Error") {
            return Err(format!("doveadm fetch: exit code {code}: {err}"));
        }
        let out = String::from_utf8(out).map_err(|e| format!("doveadm fetch: {e}"))?;
        let mut lines = out.lines();
        let mut read = Vec::new();
        while let Some(user) = lines.next() {
            let json = lines.next().ok_or("doveadm fetch: output cut short")?;
            // Nothing at all when the mailbox has no mail.
            let fetched: Vec<std::collections::BTreeMap<String, String>> = match json {
                "" => Vec::new(),
                json => serde_json::from_str(json)
                    .map_err(|e| format!("doveadm fetch for {user}: {e}"))?,
            };
            let mut mails = Vec::new();
            for mut mail in fetched {
                match (mail.remove("mailbox"), mail.remove("text")) {
                    (Some(folder), Some(text)) => mails.push((folder, text.into_bytes())),
                    _ => {
                        return Err(format!(
                            "doveadm fetch for {user}: a mail without its fields"
                        ));
                    }
                }
            }
            mails.sort();
            read.push((user.to_string(), mails));
        }
        if read.len() != users.len() {
            return Err(format!(
                "doveadm fetch: {} of {} users read",
                read.len(),
                users.len()
            ));
        }
        Ok(read)
    }

    /// The stand-in's database with a mailbox row for every mailbox of the world (each has its
    /// maildir), plus `extra` rows.
    pub fn mailbox_rows_matching_maildirs(&self, extra: &[&str]) {
        let mut sql = String::from("USE mailcow; DELETE FROM mailbox;");
        for d in 0..4 {
            sql.push_str(&format!(
                "INSERT INTO domain VALUES ('domain{d}.test', NULL);"
            ));
        }
        let rows: Vec<String> = self
            .users
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .map(|username| {
                let domain = username.split_once('@').unwrap().1;
                format!("('{username}', '{domain}', 0, 'User')")
            })
            .collect();
        sql.push_str(&format!("INSERT INTO mailbox VALUES {};", rows.join(",")));
        let (code, _, err) = docker_exec(
            &self.container("mysql-mailcow"),
            &["mariadb", "-uroot"],
            sql.as_bytes(),
        );
        assert_eq!(code, 0, "{err}");
    }

    /// The database mailcow would have: user, tables with a foreign key, rows (utf8mb4 and a
    /// long one included), views (one on the other), a trigger, an event and a function — all
    /// defined by mailcow's user, as mailcow's own are (its dump may show no others).
    pub fn fill_database(&self) {
        let sql = format!(
            "CREATE DATABASE mailcow CHARACTER SET utf8mb4;
             CREATE USER 'mailcow'@'localhost' IDENTIFIED BY '{}';
             GRANT ALL ON mailcow.* TO 'mailcow'@'localhost';
             USE mailcow;
             CREATE TABLE domain (domain VARCHAR(255) PRIMARY KEY, description TEXT) CHARACTER SET utf8mb4;
             CREATE TABLE mailbox (username VARCHAR(255) PRIMARY KEY, domain VARCHAR(255), quota BIGINT, name TEXT,
                                   CONSTRAINT fk_domain FOREIGN KEY (domain) REFERENCES domain (domain)) CHARACTER SET utf8mb4;
             INSERT INTO domain VALUES ('example.org', 'Beispiel ✉ 📬'), ('example.net', NULL),
                                       ('long.example', '{long}');
             INSERT INTO mailbox VALUES ('user@example.org', 'example.org', 1073741824, 'Jürgen 😀'),
                                        ('info@example.net', 'example.net', 0, 'Info');
             CREATE DEFINER=mailcow@localhost VIEW mailboxes_per_domain AS SELECT domain, COUNT(*) AS n FROM mailbox GROUP BY domain;
             CREATE DEFINER=mailcow@localhost VIEW busy_domains AS SELECT domain FROM mailboxes_per_domain WHERE n > 0;
             CREATE DEFINER=mailcow@localhost TRIGGER mailbox_quota BEFORE INSERT ON mailbox FOR EACH ROW SET NEW.quota = IFNULL(NEW.quota, 0);
             CREATE DEFINER=mailcow@localhost EVENT clean_mailboxes ON SCHEDULE EVERY 1 DAY DO DELETE FROM mailbox WHERE quota < 0;
             CREATE DEFINER=mailcow@localhost FUNCTION quota_of(u VARCHAR(255)) RETURNS BIGINT READS SQL DATA RETURN (SELECT quota FROM mailbox WHERE username = u);",
            DB_PASS.replace('\\', "\\\\").replace('\'', "''"),
            // One line of the dump longer than a small max_allowed_packet.
            long = "x".repeat(3000),
        );
        let (code, _, err) = docker_exec(
            &self.container("mysql-mailcow"),
            &["mariadb", "-uroot"],
            sql.as_bytes(),
        );
        assert_eq!(code, 0, "filling the database: {err}");
    }

    /// Rows of the test tables, as text, from the container `mysql`.
    pub fn rows(container: &str) -> String {
        let (code, out, err) = docker_exec(
            container,
            &[
                "mariadb",
                "-uroot",
                "--default-character-set=utf8mb4",
                "-N",
                "-e",
                "SELECT * FROM mailcow.domain ORDER BY 1; SELECT * FROM mailcow.mailbox ORDER BY 1;",
            ],
            b"",
        );
        assert_eq!(code, 0, "reading rows: {err}");
        String::from_utf8(out).unwrap()
    }

    /// The database's other objects and what they give, as text: the views' rows, the
    /// trigger, event and routine names, the foreign key, and any database beside `mailcow`
    /// whose name says a restore left it.
    pub fn schema(container: &str) -> String {
        let (code, out, err) = docker_exec(
            container,
            &["mariadb", "-uroot", "-N", "mailcow"],
            b"SELECT * FROM busy_domains ORDER BY 1;
              SELECT * FROM mailboxes_per_domain ORDER BY 1;
              SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'mailcow';
              SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'mailcow';
              SELECT ROUTINE_NAME, quota_of('user@example.org') FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'mailcow';
              SELECT CONSTRAINT_NAME, REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = 'mailcow';
              SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '%mcb%';",
        );
        assert_eq!(code, 0, "reading the schema: {err}");
        String::from_utf8(out).unwrap()
    }

    /// Writes keys into Redis (not saved to disk: automatic saves are off).
    pub fn set_redis_keys(&self, keys: &[(&str, &str)]) {
        let mut script = format!("AUTH \"{}\"\n", REDIS_PASS.replace('"', "\\\""));
        for (key, value) in keys {
            script.push_str(&format!("SET {key} \"{value}\"\n"));
        }
        let (code, out, err) = docker_exec(
            &self.container("redis-mailcow"),
            &["redis-cli"],
            script.as_bytes(),
        );
        assert_eq!(code, 0, "redis-cli: {err}");
        assert!(
            !String::from_utf8_lossy(&out).contains("ERR"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
}

/// A mailbox's home below vmail: `<domain>/<user>`.
pub fn home_of(user: &str) -> PathBuf {
    let (local, domain) = user.split_once('@').expect("user@domain");
    Path::new(domain).join(local)
}

/// The mail files of a maildir: those in any folder's `cur` and `new`.
fn mail_files(maildir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut folders = vec![maildir.to_path_buf()];
    for entry in std::fs::read_dir(maildir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && path.file_name().unwrap().to_string_lossy().starts_with('.') {
            folders.push(path);
        }
    }
    for folder in folders {
        for sub in ["cur", "new"] {
            let Ok(entries) = std::fs::read_dir(folder.join(sub)) else {
                continue;
            };
            files.extend(entries.map(|e| e.unwrap().path()));
        }
    }
    files
}

/// `user`'s mail files in the vmail tree `vmail` that mail_crypt encrypted.
pub fn encrypted_mail_files(vmail: &Path, user: &str) -> Vec<PathBuf> {
    mail_files(&vmail.join(home_of(user)).join("Maildir"))
        .into_iter()
        .filter(|file| std::fs::read(file).unwrap().starts_with(b"CRYPTED"))
        .collect()
}

/// The mail's size as its maildir file name says it (`,S=<size>`): the size before dovecot
/// compressed and encrypted it.
fn size_in_name(file: &Path) -> u64 {
    let name = file.file_name().unwrap().to_str().unwrap();
    let size = name.split(",S=").nth(1).expect("a size in the name");
    size.split([',', ':']).next().unwrap().parse().unwrap()
}

/// The `i`th mail delivered into `folder`: its size grows with `i` (2 kB for the first, 30 kB for the fourth).
fn seed_mail(project: &str, folder: &str, i: usize) -> String {
    let mut mail = format!(
        "From: Sender <sender@example.org>\nTo: someone@example.org\nSubject: {folder} mail {i}\nMessage-ID: <{i}.{folder}@{project}>\nDate: Tue, 1 Dec 2026 10:{i:02}:00 +0000\n\n"
    );
    for line in 0..((i + 1) * (i + 1) * 40) {
        mail.push_str(&format!(
            "line {line} of mail {i} in {folder}, kept through dovecot\n"
        ));
    }
    mail
}

/// Copies `from`'s contents into `to` (cp -a).
pub fn copy_into(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a");
}

/// Owner `uid`, directories 0700, files 0600, as mail servers keep their data.
fn chown_private(dir: &Path, uid: u32) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "chown -R {uid}:{uid} '{0}' && find '{0}' -mindepth 1 -type d -exec chmod 700 {{}} + && find '{0}' -type f -exec chmod 600 {{}} +",
            dir.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
}

impl Drop for Mailcow {
    fn drop(&mut self) {
        let filter = format!("label=com.docker.compose.project={}", self.project);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        for id in ids.split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
        }
        let volumes = docker(&["volume", "ls", "-q", "--filter", &filter]);
        for volume in volumes.split_whitespace() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", volume])
                .output();
        }
    }
}

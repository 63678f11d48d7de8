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
//! - busybox stand-ins for dovecot, postfix, rspamd, sogo and the watchdog, holding their
//!   volumes; dovecot's `doveadm` only records its calls (in `/doveadm.log`);
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
    for image in [DB_IMAGE, BUSYBOX_IMAGE] {
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
        self.maildir = generated;
        // Keys, as dovecot makes them (the content does not matter here, only that it is there).
        let crypt = self.volume_dir("crypt-vol-1");
        std::fs::write(
            crypt.join("ecprivkey.pem"),
            "-----BEGIN PRIVATE KEY-----\nabc\n",
        )
        .unwrap();
        std::fs::write(
            crypt.join("ecpubkey.pem"),
            "-----BEGIN PUBLIC KEY-----\ndef\n",
        )
        .unwrap();
        chown_private(&crypt, 401);
        let index = self.volume_dir("vmail-index-vol-1");
        std::fs::create_dir_all(index.join("user@example.org")).unwrap();
        std::fs::write(
            index.join("user@example.org/dovecot.index"),
            vec![7u8; 4096],
        )
        .unwrap();
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
                "run".into(),
                "-d".into(),
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
                // Its doveadm records how it was called, in /doveadm.log.
                "dovecot-mailcow" => args.extend(
                    [
                        BUSYBOX_IMAGE,
                        "sh",
                        "-c",
                        &format!(
                            "printf '#!/bin/sh\\necho \"$*\" >> /doveadm.log\\n' > /bin/doveadm && chmod 755 /bin/doveadm && {IDLE}"
                        ),
                    ]
                    .map(String::from),
                ),
                _ => args.extend([BUSYBOX_IMAGE, "sh", "-c", IDLE].map(String::from)),
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            docker(&args);
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

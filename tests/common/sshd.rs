//! A real OpenSSH server on loopback, started by the test that needs it and stopped when dropped.
//!
//! Everything it uses lives in its own temporary directory: host keys (ed25519, ecdsa, rsa),
//! client keys of every type (one passphrase-protected, one not authorized, one confined to a
//! forced `borg serve --restrict-to-path`), an authorized_keys file, and a known_hosts file that
//! trusts its ed25519 host key on its port. Logins are as the
//! user running the tests (root in CI), with public keys only.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The only path the `id_restricted` key may access.
const RESTRICTED_TO: &str = "/nonexistent-restricted";

/// The passphrase of [`Sshd::encrypted_key`].
pub const KEY_PASSPHRASE: &str = "mcb-ssh-key-passphrase";

pub struct Sshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-C", "mcb-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (Debian package openssh-client; run scripts/setup-oracles.sh)");
    assert!(status.success(), "ssh-keygen -t {kind}");
}

/// A loopback port nothing listens on (bound, then let go).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for kind in ["ed25519", "ecdsa", "rsa"] {
            keygen(&d.join(format!("host_{kind}")), kind, "");
            keygen(&d.join(format!("id_{kind}")), kind, "");
        }
        keygen(&d.join("id_encrypted"), "ed25519", KEY_PASSPHRASE);
        keygen(&d.join("id_stranger"), "ed25519", "");
        keygen(&d.join("id_restricted"), "ed25519", "");
        let mut authorized: String = ["id_ed25519", "id_ecdsa", "id_rsa", "id_encrypted"]
            .iter()
            .map(|name| std::fs::read_to_string(d.join(format!("{name}.pub"))).unwrap())
            .collect();
        // The way hosting providers confine a key: a forced `borg serve` with restrictions.
        authorized.push_str(&format!(
            "command=\"{} serve --restrict-to-path {RESTRICTED_TO}\",restrict {}",
            super::borg14().display(),
            std::fs::read_to_string(d.join("id_restricted.pub")).unwrap()
        ));
        std::fs::write(d.join("authorized_keys"), authorized).unwrap();
        // sshd insists on its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();

        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\n\
             HostKey {d}/host_ed25519\nHostKey {d}/host_ecdsa\nHostKey {d}/host_rsa\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile none\nStrictModes no\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nLogLevel FATAL\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let host_pub = std::fs::read_to_string(d.join("host_ed25519.pub")).unwrap();
        let mut fields = host_pub.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kind} {key}\n"),
        )
        .unwrap();

        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .spawn()
            .expect("/usr/sbin/sshd (Debian package openssh-server; run scripts/setup-oracles.sh)");
        let sshd = Sshd { port, dir, child };
        sshd.wait_listening();
        sshd
    }

    fn wait_listening(&self) {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The listening sshd; its children are the per-connection processes.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.path("known_hosts")
    }

    pub fn encrypted_key(&self) -> PathBuf {
        self.path("id_encrypted")
    }

    /// `ssh-keygen -lf` of one of the server's host keys: `256 SHA256:... comment (ED25519)`.
    pub fn host_fingerprint(&self, kind: &str) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.path(&format!("host_{kind}.pub")))
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }

    /// A location URL for `path` on this server.
    pub fn url(&self, path: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, path.display())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

# Shared by the benchmark scripts (sourced, not run): a temporary work directory that is removed
# on exit (with anything mounted below it), a private sshd on a free loopback port that trusts a
# fresh client key, and the environment that points both our binary and borg at it.
# Sets: work, port, sshd_pid, login; exports the BORG_* and MAILCOW_BORG_* variables. Needs:
# root, `borg14` set by the caller.
#
# MCB_BENCH_LOGIN=plain logs both tools in as a temporary account with root's permissions but
# /bin/sh and an empty home, like a dedicated account on a backup server, instead of root: every
# SSH command runs through the login shell, and a root whose ~/.bashrc does work (this
# workplace's runs `pyenv init`, ~70 ms) adds that to every connection of both tools.
work="$(mktemp -d)"
sshd_pid=""
login=root
created_login=""
cleanup() {
    [[ -n "$sshd_pid" ]] && kill "$sshd_pid" 2>/dev/null || true
    # -f: the account shares uid 0 with running processes.
    [[ -n "$created_login" ]] && userdel -f "$created_login" 2>/dev/null || true
    awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/mounts | xargs -r -n1 umount || true
    rm -rf "$work"
}
trap cleanup EXIT

# A private sshd on a free loopback port, trusted through its own known_hosts file.
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$work/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PidFile none
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
LogLevel FATAL
EOF
if [[ "${MCB_BENCH_LOGIN:-root}" == plain ]]; then
    login=mcb-bench-login
    mkdir -p "$work/login-home"
    userdel -f "$login" 2>/dev/null || true
    # '*': no password, but not locked (sshd without PAM refuses a locked account's keys too).
    useradd -o -u 0 -g 0 -M -d "$work/login-home" -s /bin/sh -p '*' "$login"
    created_login="$login"
fi
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$work/sshd_config" &
sshd_pid=$!
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$work/host_key.pub")" > "$work/known_hosts"
for _ in $(seq 100); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

export BORG_PASSPHRASE=mcb-bench BORG_BASE_DIR="$work/base" BORG_REMOTE_PATH="$borg14"
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export MAILCOW_BORG_SSH_KEY="$work/client_key" MAILCOW_BORG_KNOWN_HOSTS="$work/known_hosts"
export BORG_RSH="ssh -i $work/client_key -o UserKnownHostsFile=$work/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes"


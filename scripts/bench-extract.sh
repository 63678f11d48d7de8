#!/usr/bin/env bash
# Extract benchmark: the same archive restored by our binary and by real borg 1.4.5, both over
# SSH to the same loopback sshd and the same `borg serve`, alternating, in one run. Prints the
# median wall time and the peak memory (max RSS) of each, and their ratios (ours / borg).
# Not a test: compare the ratios, not the absolute numbers, which depend on the machine.
#
#   scripts/bench-extract.sh [MAILS] [ROUNDS]      (defaults: 20000 mails, 3 rounds)
#
# MCB_EXTRA_BINARIES="name=path ..." also times other builds of ours in the same rounds (to
# compare a change against the build before it on the same noisy machine).
#
# Data: the synthetic maildir of shared/tools/gen_maildir.py (the project's shared notes).
# Needs: scripts/setup-oracles.sh done; root (sshd, root's login, loop mounts); ~4 GB of disk.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
mails="${1:-20000}"
rounds="${2:-3}"
borg14="${MCB_BORG14:-$repo/.oracle/venv-borg-1.4.5/bin/borg}"
ours="$repo/target/x86_64-unknown-linux-gnu/release/mailcow-borg"
cargo build --release --quiet

work="$(mktemp -d)"
sshd_pid=""
cleanup() {
    [[ -n "$sshd_pid" ]] && kill "$sshd_pid" 2>/dev/null || true
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

python3 "$repo/../shared/tools/gen_maildir.py" --mails "$mails" --seed 1 "$work/maildir" >/dev/null
"$borg14" init -e repokey-blake2 "$work/repo" 2>/dev/null
(cd "$work/maildir" && "$borg14" create "$work/repo::mail" .)
url="ssh://root@127.0.0.1:$port$work/repo::mail"
size="$(du -sh "$work/maildir" | cut -f1)"
files="$(find "$work/maildir" -type f | wc -l)"

# One timed extract into a fresh directory: prints "seconds max_rss_kib cpu_seconds".
# Each extract gets a fresh ext4 file system of its own (a loop-mounted image), as a restore
# onto a new server would: on a long-used file system where many files were deleted (a test
# machine's /tmp), ext4 spends most of the time of creating 20,000 inodes searching its
# bitmaps, the same large cost on both sides, which hides their difference.
timed() {
    local dest="$work/dest-$1"
    shift
    truncate -s 4G "$dest.img"
    mkfs.ext4 -q -F "$dest.img"
    mkdir "$dest"
    mount -o loop "$dest.img" "$dest"
    (cd "$dest" && /usr/bin/time -f '%e %M %U %S' -o "$work/time" "$@" >/dev/null)
    read -r wall rss user sys < "$work/time"
    echo "$wall $rss $(python3 -c "print($user + $sys)")"
}

: > "$work/results"
for round in $(seq "$rounds"); do
    echo "ours $(timed "ours-$round" "$ours" extract "$url")" >> "$work/results"
    echo "borg $(timed "borg-$round" "$borg14" extract "$url")" >> "$work/results"
    for extra in ${MCB_EXTRA_BINARIES:-}; do
        name="${extra%%=*}"
        echo "$name $(timed "$name-$round" "${extra#*=}" extract "$url")" >> "$work/results"
    done
done
# Both restored the same files.
diff -r "$work/dest-ours-1" "$work/dest-borg-1" >/dev/null || { echo "the trees differ" >&2; exit 1; }

python3 - "$work/results" "$mails" "$files" "$size" "$rounds" <<'PY'
import statistics, sys
results, mails, files, size, rounds = sys.argv[1:]
runs = {}
for line in open(results):
    who, seconds, rss, cpu = line.split()
    runs.setdefault(who, []).append((float(seconds), int(rss), float(cpu)))
wall = {w: statistics.median(r[0] for r in rs) for w, rs in runs.items()}
rss = {w: max(r[1] for r in rs) for w, rs in runs.items()}
cpu = {w: statistics.median(r[2] for r in rs) for w, rs in runs.items()}
print(f"extract over ssh (loopback), {mails} mails = {files} files, {size}, median of {rounds} rounds")
print("| | wall s | client CPU s | peak RSS MiB |")
print("|---|---:|---:|---:|")
for who in runs:
    print(f"| {who} | {wall[who]:.2f} | {cpu[who]:.2f} | {rss[who] / 1024:.0f} |")
for who in runs:
    if who != "borg":
        print(f"| {who} / borg | {wall[who] / wall['borg']:.2f} | {cpu[who] / cpu['borg']:.2f} | {rss[who] / rss['borg']:.2f} |")
PY

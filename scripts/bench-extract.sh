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
# Data: the synthetic maildir of tests/oracle/gen_maildir.py.
# Needs: scripts/setup-oracles.sh done; root (sshd, root's login, loop mounts); ~4 GB of disk.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
mails="${1:-20000}"
rounds="${2:-3}"
borg14="${MCB_BORG14:-$repo/.oracle/venv-borg-1.4.5/bin/borg}"
ours="$repo/target/x86_64-unknown-linux-gnu/release/mailcow-borg"
cargo build --release --quiet

source "$repo/scripts/lib/bench-sshd.sh"

python3 "$repo/tests/oracle/gen_maildir.py" --mails "$mails" --seed 1 "$work/maildir" >/dev/null
"$borg14" init -e repokey-blake2 "$work/repo" 2>/dev/null
(cd "$work/maildir" && "$borg14" create "$work/repo::mail" .)
url="ssh://$login@127.0.0.1:$port$work/repo::mail"
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

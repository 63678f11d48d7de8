#!/usr/bin/env bash
# Create benchmark: the same maildir backed up by our binary and by real borg 1.4.5, each into a
# repository of its own, both over SSH to the same loopback sshd and `borg serve`, in one run:
#   1. first backup (empty repository, no caches),
#   2. second backup, nothing changed,
#   3. after adding 1% new mails (gen_maildir.py --mutate 1),
#   4. restore-one: extracting one mailbox (domain0.test/user0) from that archive.
# Prints wall time, client CPU time and peak memory (max RSS) per step and tool, and the ratios
# ours / borg. Not a test: compare the ratios, not the absolute numbers.
#
#   scripts/bench-create.sh [MAILS] [ROUNDS] [COMPRESSION]   (defaults: 20000 mails, 1 round, lz4)
#
# Each round starts from a fresh copy of the generated maildir, fresh repositories and empty
# caches. MCB_EXTRA_BINARIES="name=path ..." also times other builds of ours in the same rounds.
# MCB_BENCH_SMALL=1 makes the mails small (1-3 kB, gen_maildir.py --small): a million of them
# take ~4 GB of disk (and as many inodes), for the scale curve.
# Needs: scripts/setup-oracles.sh done; root (sshd); ~3 GB of disk per 20,000 mails.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
mails="${1:-20000}"
rounds="${2:-1}"
compression="${3:-lz4}"
borg14="${MCB_BORG14:-$repo/.oracle/venv-borg-1.4.5/bin/borg}"
ours="$repo/target/x86_64-unknown-linux-gnu/release/mailcow-borg"
cargo build --release --quiet

source "$repo/scripts/lib/bench-sshd.sh"

gen="$repo/tests/oracle/gen_maildir.py"
small=()
[[ "${MCB_BENCH_SMALL:-}" == 1 ]] && small=(--small)
python3 "$gen" --mails "$mails" --seed 1 "${small[@]}" "$work/pristine" >/dev/null
size="$(du -sh "$work/pristine" | cut -f1)"
files="$(find "$work/pristine" -type f | wc -l)"

tools=("ours=$ours" "borg=$borg14")
for extra in ${MCB_EXTRA_BINARIES:-}; do
    tools+=("$extra")
done

# One timed command, run in directory $1: prints "seconds max_rss_kib cpu_seconds".
timed() {
    local dir="$1"
    shift
    (cd "$dir" && /usr/bin/time -f '%e %M %U %S' -o "$work/time" "$@" >/dev/null)
    read -r wall rss user sys < "$work/time"
    echo "$wall $rss $(python3 -c "print($user + $sys)")"
}

: > "$work/results"
for round in $(seq "$rounds"); do
    rm -rf "$work/maildir"
    cp -a "$work/pristine" "$work/maildir"
    for tool in "${tools[@]}"; do
        name="${tool%%=*}"
        rm -rf "$work/repo-$name" "$work/base-$name"
        BORG_BASE_DIR="$work/base-$name" "$borg14" init -e repokey-blake2 "$work/repo-$name" 2>/dev/null
    done
    for step in first unchanged one-percent; do
        if [[ "$step" == one-percent ]]; then
            python3 "$gen" --mails "$mails" --seed 1 --mutate 1 "${small[@]}" "$work/maildir" >/dev/null
        fi
        for tool in "${tools[@]}"; do
            name="${tool%%=*}"
            url="ssh://$login@127.0.0.1:$port$work/repo-$name::$step"
            echo "$step $name $(BORG_BASE_DIR="$work/base-$name" timed "$work/maildir" "${tool#*=}" create -C "$compression" "$url" .)" >> "$work/results"
        done
    done
    for tool in "${tools[@]}"; do
        name="${tool%%=*}"
        rm -rf "$work/restored-$name"
        mkdir "$work/restored-$name"
        url="ssh://$login@127.0.0.1:$port$work/repo-$name::one-percent"
        echo "restore-one $name $(BORG_BASE_DIR="$work/base-$name" timed "$work/restored-$name" "${tool#*=}" extract "$url" domain0.test/user0)" >> "$work/results"
    done
    diff -r "$work/restored-ours" "$work/restored-borg" >/dev/null || { echo "the restored mailboxes differ" >&2; exit 1; }
done
# Both stored the same files.
for tool in "${tools[@]}"; do
    name="${tool%%=*}"
    BORG_BASE_DIR="$work/base-$name" "$borg14" list --short "$work/repo-$name::one-percent" | sort > "$work/list-$name"
done
cmp -s "$work/list-ours" "$work/list-borg" || { echo "the archives list different files" >&2; exit 1; }

python3 - "$work/results" "$mails" "$files" "$size" "$rounds" "$compression" "$login" <<'PY'
import statistics, sys
results, mails, files, size, rounds, compression, login = sys.argv[1:]
runs = {}
for line in open(results):
    step, who, seconds, rss, cpu = line.split()
    runs.setdefault(step, {}).setdefault(who, []).append((float(seconds), int(rss), float(cpu)))
print(f"create over ssh (loopback, login {login}), {mails} mails = {files} files, {size}, -C {compression}, median of {rounds} round(s)")
print("| step | tool | wall s | client CPU s | peak RSS MiB | wall / borg | RSS / borg |")
print("|---|---|---:|---:|---:|---:|---:|")
for step, by_tool in runs.items():
    wall = {w: statistics.median(r[0] for r in rs) for w, rs in by_tool.items()}
    rss = {w: max(r[1] for r in rs) for w, rs in by_tool.items()}
    cpu = {w: statistics.median(r[2] for r in rs) for w, rs in by_tool.items()}
    for who in by_tool:
        print(f"| {step} | {who} | {wall[who]:.2f} | {cpu[who]:.2f} | {rss[who] / 1024:.0f} "
              f"| {wall[who] / wall['borg']:.2f} | {rss[who] / rss['borg']:.2f} |")
PY

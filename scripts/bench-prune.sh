#!/usr/bin/env bash
# Repository-lifecycle benchmark: `init`, then `prune` + `compact`, by our binary and by real borg
# 1.4.5, each on a repository of its own over SSH to the same loopback sshd and `borg serve`, in
# one run:
#   1. init -e repokey-blake2 (timed);
#   2. ARCHIVES archives of the maildir, each after ~1% new mail (gen_maildir.py --mutate 1),
#      made by each tool in its own repository (not timed: this leaves borg's cache warm, as
#      borg's own backups leave it, and ours as our backups leave it);
#   3. prune --keep-last KEEP, then compact (timed together).
# Prints wall time, client CPU time and peak memory per step and tool, and the ratios ours /
# borg. Not a test: compare the ratios, not the absolute numbers.
#
#   scripts/bench-prune.sh [MAILS] [ARCHIVES] [KEEP]   (defaults: 20000 mails, 30 archives, keep 10)
#
# Needs: scripts/setup-oracles.sh done; root (sshd); ~3 GB of disk per 20,000 mails.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
mails="${1:-20000}"
archives="${2:-30}"
keep="${3:-10}"
borg14="${MCB_BORG14:-$repo/.oracle/venv-borg-1.4.5/bin/borg}"
ours="$repo/target/x86_64-unknown-linux-gnu/release/mailcow-borg"
cargo build --release --quiet

source "$repo/scripts/lib/bench-sshd.sh"

gen="$repo/tests/oracle/gen_maildir.py"
python3 "$gen" --mails "$mails" --seed 1 "$work/maildir" >/dev/null
size="$(du -sh "$work/maildir" | cut -f1)"

tools=("ours=$ours" "borg=$borg14")

# One timed command in the maildir: prints "seconds max_rss_kib cpu_seconds".
timed() {
    (cd "$work/maildir" && /usr/bin/time -f '%e %M %U %S' -o "$work/time" "$@" >/dev/null 2>"$work/stderr") \
        || { cat "$work/stderr" >&2; exit 1; }
    read -r wall rss user sys < "$work/time"
    echo "$wall $rss $(python3 -c "print($user + $sys)")"
}

url() { echo "ssh://$login@127.0.0.1:$port$work/repo-$1"; }

: > "$work/results"
for tool in "${tools[@]}"; do
    name="${tool%%=*}"
    echo "init $name $(BORG_BASE_DIR="$work/base-$name" BORG_NEW_PASSPHRASE=mcb-bench timed "${tool#*=}" init -e repokey-blake2 "$(url "$name")")" >> "$work/results"
done
for i in $(seq "$archives"); do
    [[ "$i" -gt 1 ]] && python3 "$gen" --mails "$mails" --seed "$i" --mutate 1 "$work/maildir" >/dev/null
    for tool in "${tools[@]}"; do
        name="${tool%%=*}"
        (cd "$work/maildir" && BORG_BASE_DIR="$work/base-$name" "${tool#*=}" create "$(url "$name")::mail-$(printf %03d "$i")" . >/dev/null)
    done
done
# prune + compact, timed as one: a small script per tool.
for tool in "${tools[@]}"; do
    name="${tool%%=*}"
    cat > "$work/prune-$name.sh" <<EOF
#!/bin/sh
set -e
"${tool#*=}" prune --keep-last $keep "$(url "$name")"
"${tool#*=}" compact "$(url "$name")"
EOF
    chmod +x "$work/prune-$name.sh"
    echo "prune+compact $name $(BORG_BASE_DIR="$work/base-$name" timed "$work/prune-$name.sh")" >> "$work/results"
done
# Both kept the same archives, and borg finds ours consistent.
for tool in "${tools[@]}"; do
    name="${tool%%=*}"
    BORG_BASE_DIR="$work/base-$name" "$borg14" list --short "$work/repo-$name" > "$work/list-$name"
done
cmp -s "$work/list-ours" "$work/list-borg" || { echo "the tools kept different archives" >&2; exit 1; }
BORG_BASE_DIR="$work/base-ours" "$borg14" check "$work/repo-ours"
sizes="ours $(du -sb "$work/repo-ours" | cut -f1) B, borg $(du -sb "$work/repo-borg" | cut -f1) B"

python3 - "$work/results" "$mails" "$size" "$archives" "$keep" "$login" "$sizes" <<'PY'
import sys
results, mails, size, archives, keep, login, sizes = sys.argv[1:]
runs = {}
for line in open(results):
    step, who, seconds, rss, cpu = line.split()
    runs.setdefault(step, {})[who] = (float(seconds), int(rss), float(cpu))
print(f"init, then prune --keep-last {keep} + compact of {archives} archives of {mails} mails ({size}), "
      f"1% new mail each, over ssh (loopback, login {login}); repositories after: {sizes}")
print("| step | tool | wall s | client CPU s | peak RSS MiB | wall / borg |")
print("|---|---|---:|---:|---:|---:|")
for step, by_tool in runs.items():
    for who, (wall, rss, cpu) in by_tool.items():
        print(f"| {step} | {who} | {wall:.2f} | {cpu:.2f} | {rss / 1024:.0f} | {wall / by_tool['borg'][0]:.2f} |")
PY

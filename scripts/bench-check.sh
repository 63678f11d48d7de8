#!/usr/bin/env bash
# `check --verify-data` benchmark: our binary and real borg 1.4.5 check the same repository (one
# archive of the maildir, made by borg, repokey-blake2) over SSH to the same loopback sshd and
# `borg serve`, in one run, one after the other (the check takes the exclusive lock):
#   1. `check --verify-data` (timed): every object fetched, authenticated, decompressed;
#   2. `check` (timed): the repository's own check on the server, then the archives.
# Prints wall time, client CPU time, the server's CPU time (`borg serve`, measured through a
# wrapper as BORG_REMOTE_PATH) and peak memory per step and tool, and the ratios ours / borg,
# the median of ROUNDS rounds. Not a test: compare the ratios, not the absolute numbers.
# "floor / borg" is the client's and the server's CPU time together, divided by the machine's
# cores and by borg's wall time: where client and server share the cores (as over loopback), no
# run of that tool can be faster than this ratio — sshd's own work left out, which raises it.
#
#   scripts/bench-check.sh [MAILS] [ROUNDS]   (defaults: 20000 mails, 3 rounds)
#
# Needs: scripts/setup-oracles.sh done; root (sshd); ~2 GB of disk per 20,000 mails.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
mails="${1:-20000}"
rounds="${2:-3}"
borg14="${MCB_BORG14:-$repo/.oracle/venv-borg-1.4.5/bin/borg}"
ours="${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-gnu/release/mailcow-borg"
cargo build --release --quiet

source "$repo/scripts/lib/bench-sshd.sh"

gen="$repo/tests/oracle/gen_maildir.py"
python3 "$gen" --mails "$mails" --seed 1 "$work/maildir" >/dev/null
size="$(du -sh "$work/maildir" | cut -f1)"

tools=("ours=$ours" "borg=$borg14")

# The server, timed: every `borg serve` of the run appends its CPU seconds.
cat > "$work/serve-timed" <<EOF
#!/bin/sh
exec /usr/bin/time -a -f '%U %S' -o "$work/server-time" "$borg14" "\$@"
EOF
chmod +x "$work/serve-timed"

# One timed command: prints "seconds max_rss_kib cpu_seconds server_cpu_seconds". A check that
# finds problems (rc 1) would make the comparison meaningless: any rc but 0 ends the run.
timed() {
    : > "$work/server-time"
    BORG_REMOTE_PATH="$work/serve-timed" /usr/bin/time -f '%e %M %U %S' -o "$work/time" "$@" \
        >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
    read -r wall rss user sys < "$work/time"
    # The server's record is written as it exits, which may trail the client's exit.
    sleep 1
    server="$(awk '{s += $1 + $2} END {print s + 0}' "$work/server-time")"
    echo "$wall $rss $(python3 -c "print($user + $sys)") $server"
}

url="ssh://$login@127.0.0.1:$port$work/repo"
export BORG_BASE_DIR="$work/base" BORG_NEW_PASSPHRASE=mcb-bench
"$borg14" init -e repokey-blake2 "$url"
(cd "$work/maildir" && "$borg14" create "$url::mail" . >/dev/null)
objects="$("$borg14" info "$url" | awk '/Chunk index:/ {print $3}')"

: > "$work/results"
for round in $(seq "$rounds"); do
    for tool in "${tools[@]}"; do
        name="${tool%%=*}"
        echo "check-verify-data $name $(timed "${tool#*=}" check --verify-data "$url")" >> "$work/results"
        echo "check $name $(timed "${tool#*=}" check "$url")" >> "$work/results"
    done
done

python3 - "$work/results" "$mails" "$size" "$rounds" "$login" "$objects" "$(nproc)" <<'PY'
import statistics, sys
results, mails, size, rounds, login, objects, cores = sys.argv[1:]
runs = {}
for line in open(results):
    step, who, seconds, rss, cpu, server = line.split()
    runs.setdefault(step, {}).setdefault(who, []).append(
        (float(seconds), int(rss), float(cpu), float(server)))
print(f"check of one archive of {mails} mails ({size}, {objects} objects), repokey-blake2, "
      f"over ssh (loopback, login {login}); median of {rounds} rounds")
print("| step | tool | wall s | client CPU s | server CPU s | peak RSS MiB | wall / borg | "
      "floor / borg | RSS / borg |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
median = lambda runs, i: statistics.median(r[i] for r in runs)
for step, by_tool in runs.items():
    borg_wall, borg_rss = median(by_tool['borg'], 0), median(by_tool['borg'], 1)
    for who, r in by_tool.items():
        wall, rss, cpu, server = median(r, 0), median(r, 1), median(r, 2), median(r, 3)
        floor = (cpu + server) / int(cores) / borg_wall
        print(f"| {step} | {who} | {wall:.2f} | {cpu:.2f} | {server:.2f} | {rss / 1024:.0f} | "
              f"{wall / borg_wall:.2f} | {floor:.2f} | {rss / borg_rss:.2f} |")
PY

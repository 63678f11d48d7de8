#!/usr/bin/env bash
# Notification overhead: `mailcow-borg check --archives-only` of a small local repository (made
# by real borg 1.4.5), with the config alone and with a [notify] table that calls four targets
# (healthchecks, Uptime Kuma, ntfy, webhook) on a recording HTTP server on loopback
# (tests/oracle/notify_sinks.py) at start and end, alternating, in one run. Prints the medians
# and their difference: what notifications add to a run. Not a test: the machine is shared.
#
#   scripts/bench-notify.sh [ROUNDS]        (default 21)
#
# Needs: scripts/setup-oracles.sh done (borg 1.4.5 and its python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds="${1:-21}"
borg="${MCB_BORG14:-$PWD/.oracle/venv-borg-1.4.5/bin/borg}"
python="$(dirname "$borg")/python"
cargo build --release --locked --quiet
exe="$PWD/target/x86_64-unknown-linux-gnu/release/mailcow-borg"
work="$(mktemp -d)"
sink_pid=""
trap '[[ -n "$sink_pid" ]] && kill "$sink_pid" 2>/dev/null; rm -rf "$work"' EXIT

echo passphrase > "$work/passphrase"
BORG_PASSPHRASE=passphrase "$borg" init -e repokey-blake2 "$work/repo" > /dev/null 2>&1
mkdir "$work/data" && echo mail > "$work/data/one"
BORG_PASSPHRASE=passphrase "$borg" create "$work/repo::one" "$work/data"
port="$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$python" tests/oracle/notify_sinks.py http "$port" "$work/calls.jsonl" > "$work/sink.out" &
sink_pid=$!
until grep -q ready "$work/sink.out" 2>/dev/null; do sleep 0.1; done

base="repository = \"$work/repo\"
passphrase_file = \"$work/passphrase\"
remote_path = \"$borg\"
state_dir = \"$work/state\""
echo "$base" > "$work/plain.toml"
cat > "$work/notify.toml" <<TOML
$base
[notify]
[notify.healthchecks]
url = "http://127.0.0.1:$port/ping/uuid"
[notify.uptime_kuma]
url = "http://127.0.0.1:$port/api/push/token"
[notify.ntfy]
url = "http://127.0.0.1:$port/topic"
events = ["start", "success", "warning", "failure"]
[notify.webhook]
url = "http://127.0.0.1:$port/hook"
TOML

run() { # config → milliseconds
    local t0 t1
    t0=$(date +%s%N)
    "$exe" check --archives-only --config "$1" > /dev/null 2>&1
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}
plain=() notify=()
run "$work/plain.toml" > /dev/null   # warm caches
for ((i = 0; i < rounds; i++)); do
    plain+=("$(run "$work/plain.toml")")
    notify+=("$(run "$work/notify.toml")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
calls=$(wc -l < "$work/calls.jsonl")
p=$(median "${plain[@]}") n=$(median "${notify[@]}")
echo "| run | median wall (ms, $rounds rounds) |"
echo "|---|---:|"
echo "| check, no notifications | $p |"
echo "| check, 4 targets notified at start and end ($calls calls in all) | $n |"
echo "| difference | $((n - p)) |"

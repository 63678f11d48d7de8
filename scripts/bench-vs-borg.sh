#!/usr/bin/env bash
# Measures our format primitives against real borg 1.4.5's, on the same data, in one run, on this
# machine, and prints a Markdown table of MB/s and ratios (ours / borg). Not a test: figures vary
# with the machine and its load; compare ratios, not absolute numbers.
#
#   scripts/bench-vs-borg.sh [SECONDS_PER_MEASUREMENT]
#
# Needs: scripts/setup-oracles.sh done (MCB_BORG14 as in the README), a release build.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
seconds="${1:-1}"
borg14="${MCB_BORG14:-$repo/.oracle/venv-borg-1.4.5/bin/borg}"
python="$(dirname "$borg14")/python"
ours="$repo/target/x86_64-unknown-linux-gnu/release/mailcow-borg"
[[ -x "$ours" ]] || cargo build --release --quiet

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Samples: 8 MiB of seeded random bytes; 8 MiB of synthetic mail (tests/oracle/gen_maildir.py);
# 256 MiB of seeded random bytes for the chunker over a file.
python3 - "$work" <<'PY'
import random, sys
d = sys.argv[1]
for name, seed, mib in (("random.bin", 1, 8), ("big.bin", 2, 256)):
    rng = random.Random(seed)
    with open(f"{d}/{name}", "wb") as f:
        for _ in range(mib):
            f.write(rng.randbytes(1 << 20))
PY
gen_maildir="$repo/tests/oracle/gen_maildir.py"
python3 "$gen_maildir" --mails 400 --seed 1 "$work/maildir" >/dev/null
find "$work/maildir" -type f | sort | xargs cat 2>/dev/null | head -c $((8 << 20)) > "$work/text.bin" || true

"$ours" benchmark cpu --seconds "$seconds" --random "$work/random.bin" --text "$work/text.bin" --json > "$work/ours.jsonl"
"$python" benches/borg_primitives.py "$seconds" "$work/random.bin" "$work/text.bin" > "$work/borg.jsonl"

# The in-memory chunkers once more, alternating for 5 rounds; the median round is reported.
for _ in 1 2 3 4 5; do
    "$ours" benchmark cpu --only chunker --seconds "$seconds" --random "$work/random.bin" --text "$work/text.bin" --json
    "$python" benches/borg_primitives.py "$seconds" "$work/random.bin" "$work/text.bin" chunker
done > "$work/chunker-rounds.jsonl"

# The chunker over a 256 MiB file, as create would read it: 7 alternating rounds. Ours: the whole
# `debug chunk` process (start-up and reading included); borg: its chunking loop only. CPU time
# (user + system) is the figure, since on a shared machine wall time mostly measures neighbours;
# the round with the median ratio is reported.
read -r best_ours best_borg < <("$python" - "$ours" "$work/big.bin" <<'PY'
import json, resource, subprocess, sys
ours, big = sys.argv[1], sys.argv[2]
def cpu_of_child(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, check=True, capture_output=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, out
rounds = []
for _ in range(7):
    o, _ = cpu_of_child([ours, "debug", "chunk", "--seed", "0", big])
    _, out = cpu_of_child([sys.executable, "tests/oracle/borg_oracle.py", "bench-chunker", "--seed", "0",
                           "--params", "buzhash,19,23,21,4095", big])
    rounds.append((o, json.loads(out)["cpu_seconds"]))
# The round with the median ratio: both sides measured back to back, under the same conditions.
o, b = sorted(rounds, key=lambda r: r[1] / r[0])[len(rounds) // 2]
print(o, b)
PY
)
"$ours" debug chunk --seed 0 "$work/big.bin" > "$work/ours.sizes"
"$python" tests/oracle/borg_oracle.py chunk --seed 0 --params buzhash,19,23,21,4095 "$work/big.bin" > "$work/borg.sizes"
cmp -s "$work/ours.sizes" "$work/borg.sizes" || { echo "chunk sizes differ from borg's!" >&2; exit 1; }

# Deterministic: instructions each chunker executes on the first 32 MiB of the file (callgrind,
# minus a run on an empty file to take out start-up), if valgrind is installed.
instr_ours=0 instr_borg=0
if command -v valgrind >/dev/null; then
    head -c $((32 << 20)) "$work/big.bin" > "$work/32.bin"
    : > "$work/empty"
    count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null | sed -n 's/.*Collected : //p'; }
    instr_ours=$(( $(count "$ours" debug chunk "$work/32.bin") - $(count "$ours" debug chunk "$work/empty") ))
    oracle_chunk=("$python" tests/oracle/borg_oracle.py chunk --seed 0 --params buzhash,19,23,21,4095)
    instr_borg=$(( $(count "${oracle_chunk[@]}" "$work/32.bin") - $(count "${oracle_chunk[@]}" "$work/empty") ))
fi

python3 - "$work" "$best_ours" "$best_borg" "$instr_ours" "$instr_borg" <<'PY'
import json, sys
d, ours_s, borg_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
instr_ours, instr_borg = int(sys.argv[4]), int(sys.argv[5])
load = lambda f: {(m["section"], m["name"]): m["mb_per_s"] for m in map(json.loads, open(f"{d}/{f}"))}
ours, borg = load("ours.jsonl"), load("borg.jsonl")
# Rounds alternate: ours (2 lines), borg (2 lines). Keep the round with the median buzhash ratio.
lines = [json.loads(l) for l in open(f"{d}/chunker-rounds.jsonl")]
rounds = [lines[i:i + 4] for i in range(0, len(lines), 4)]
ratio = lambda r: r[0]["mb_per_s"] / r[2]["mb_per_s"]
median = sorted(rounds, key=ratio)[len(rounds) // 2]
for m in median[:2]:
    ours[(m["section"], m["name"])] = m["mb_per_s"]
for m in median[2:]:
    borg[(m["section"], m["name"])] = m["mb_per_s"]
mb = (256 << 20) / 1e6
print("| primitive | ours MB/s | borg 1.4.5 MB/s | ours / borg |")
print("|---|---:|---:|---:|")
print(f"| chunker buzhash,19,23,21,4095, 256 MiB file, CPU time (ours: whole process) | {mb/ours_s:.0f} | {mb/borg_s:.0f} | **{borg_s/ours_s:.2f}×** |")
if instr_ours:
    per = (32 << 20)
    print(f"| chunker buzhash,19,23,21,4095, instructions per byte (callgrind, 32 MiB) | {instr_ours/per:.2f} | {instr_borg/per:.2f} | **{instr_borg/instr_ours:.2f}× fewer** |")
for key in ours:
    if key in borg:
        print(f"| {key[0]} {key[1]} | {ours[key]:.0f} | {borg[key]:.0f} | {ours[key]/borg[key]:.2f}× |")
PY

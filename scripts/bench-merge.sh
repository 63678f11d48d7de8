#!/usr/bin/env bash
# Merge-restore benchmark: `mailcow-borg restore --mailbox` of one mailbox holding a quarter of
# the archive's mails, into the live mailbox that lost a folder and kept receiving mail,
# against `borg extract REPO::ARCHIVE vmail/<domain>/<user>` into an empty directory, both over
# the same loopback sshd and `borg serve` 1.4.5, alternating, in one run
# (tests/mailcow_merge.rs: benchmark_merge). Prints a Markdown table. Not a test: compare the
# ratios, not the absolute numbers.
#
#   scripts/bench-merge.sh [MAILS] [ROUNDS]        (defaults: 20000 mails, 3 rounds)
#
# Needs: root, a running Docker engine, scripts/setup-oracles.sh and
# scripts/build-test-images.sh done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MCB_BENCH_MAILS="${1:-20000}" MCB_BENCH_ROUNDS="${2:-3}"
cargo test --release --quiet --test integration -- --ignored --exact mailcow_merge::benchmark_merge --nocapture 2>&1 |
    grep -v '^wrote \|^running\|^test \|^$\|test result\|^--- merge\|^Restore plan\|^  \|^mailcow-borg\|^restored \|^dry run'

#!/usr/bin/env bash
# Restore benchmark: `mailcow-borg restore` of a mailcow stand-in (real MariaDB and Redis,
# tests/common/mailcow.rs) into emptied volumes, against `borg extract` of the same archive's
# file components into an empty directory, both over the same loopback sshd and `borg serve`
# 1.4.5, alternating, in one run. Prints a Markdown table. Not a test: compare the ratios, not
# the absolute numbers.
#
#   scripts/bench-restore.sh [MAILS] [ROUNDS]        (defaults: 2000 mails, 3 rounds)
#
# Needs: root, a running Docker engine, scripts/setup-oracles.sh and
# scripts/build-test-images.sh done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MCB_BENCH_MAILS="${1:-2000}" MCB_BENCH_ROUNDS="${2:-3}"
cargo test --release --quiet --test integration -- --ignored --exact mailcow_restore::benchmark_restore --nocapture 2>&1 |
    grep -v '^wrote \|^running\|^test \|^$\|test result'

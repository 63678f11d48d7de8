#!/usr/bin/env bash
# Backup benchmark: what the Docker orchestration of `mailcow-borg backup` costs (the helper
# image made from our executable, its reuse, a helper container's start and removal), and the
# whole backup of a mailcow stand-in (real MariaDB and Redis, tests/common/mailcow.rs) against
# the same work done on the host without the helper — our `create` and borg 1.4.5's, with the
# same redis SAVE and the database dump piped in — each into its own repository on the same
# loopback sshd and `borg serve`, in one run. Prints Markdown tables. Not a test: compare the
# ratios and differences, not the absolute numbers.
#
#   scripts/bench-backup.sh [MAILS] [ROUNDS]        (defaults: 2000 mails, 3 rounds)
#
# Needs: root, a running Docker engine, scripts/setup-oracles.sh and
# scripts/build-test-images.sh done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MCB_BENCH_MAILS="${1:-2000}" MCB_BENCH_ROUNDS="${2:-3}"
cargo test --release --quiet --test integration -- --ignored --exact mailcow_backup::benchmark_backup --nocapture 2>&1 |
    grep -v '^wrote \|^running\|^test \|^$\|test result'

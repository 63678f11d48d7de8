#!/usr/bin/env bash
# Export benchmark: `mailcow-borg export` of one mailbox holding a quarter of a mailcow
# stand-in's mail (real dovecot with mail_crypt, tests/common/mailcow.rs), as mbox and as
# maildir, against `borg extract REPO::ARCHIVE vmail/<domain>/<user>` of the same mailbox into
# an empty directory, both over the same loopback sshd and `borg serve` 1.4.5, alternating, in
# one run. Prints a Markdown table. Not a test: compare the ratios, not the absolute numbers.
#
#   scripts/bench-export.sh [MAILS] [ROUNDS]        (defaults: 2000 mails, 3 rounds)
#
# Needs: root, a running Docker engine, scripts/setup-oracles.sh and
# scripts/build-test-images.sh done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MCB_BENCH_MAILS="${1:-2000}" MCB_BENCH_ROUNDS="${2:-3}"
cargo test --release --quiet --test integration -- --ignored --exact mailcow_export::benchmark_export --nocapture 2>&1 |
    grep -v '^wrote \|^running\|^test \|^$\|test result'

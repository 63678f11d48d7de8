#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs the oracles (real borg 1.4.5 from
# PyPI, Debian's borg 1.2.x, openssh-server), builds the local Docker images of the mailcow
# stand-in (real MariaDB and Redis; needs a running Docker engine), builds the static release
# binary, runs every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-oracles.sh
bash scripts/build-test-images.sh
cargo build --release --locked
# Every test runs: a test whose oracle, sshd, Docker or root is missing fails instead of skipping.
export MCB_TEST_STRICT=1
# Benchmarks once each in test mode (a smoke test), then every test (unit and integration; the
# crate has no doc tests), so that the suite's own summary comes last.
cargo test --locked --bench primitives
cargo test --locked --lib --bins --tests

#!/usr/bin/env bash
# Installs what the test suite needs, idempotently, on a Debian (bookworm) machine:
#  - Debian packages: the -dev libraries borg 1.4.5 builds against, Debian's borgbackup (1.2.x,
#    the second oracle), openssh-server (the tests start their own sshd), `file` (the
#    static-binary check), `acl` (setfacl/getfacl, for tests/oracle/tricky_tree.py),
#    `procps` (pkill, for the tests that kill a server mid-restore),
#    `prometheus-node-exporter` (serves the metrics file in tests/mailcow_monitor.rs) and
#    `systemd` (systemd-analyze verify, for the units `schedule install` writes).
#  - real borg 1.4.5 from PyPI, built from source into a virtualenv, and aiosmtpd beside it
#    (the SMTP server of tests/mailcow_notify.rs).
# Where things go (the tests read the same variables, with the same defaults):
#   MCB_ORACLE_DIR   default: <repo>/.oracle
#   MCB_BORG14       default: $MCB_ORACLE_DIR/venv-borg-1.4.5/bin/borg
#   MCB_BORG12       default: /usr/bin/borg   (Debian's package)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
oracle_dir="${MCB_ORACLE_DIR:-$repo/.oracle}"
venv="$oracle_dir/venv-borg-1.4.5"
borg_version="1.4.5"

debs=(libssl-dev liblz4-dev libzstd-dev libxxhash-dev libacl1-dev pkg-config python3-venv
      borgbackup openssh-server file acl procps prometheus-node-exporter systemd)
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup-oracles: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ -x "$venv/bin/borg" ]] && "$venv/bin/borg" --version 2>/dev/null | grep -qx "borg $borg_version"; then
    echo "setup-oracles: borg $borg_version present in $venv"
else
    echo "setup-oracles: building borg $borg_version from PyPI into $venv (takes a few minutes)"
    mkdir -p "$oracle_dir"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip setuptools wheel pkgconfig
    "$venv/bin/pip" install -q "borgbackup==$borg_version"
    "$venv/bin/borg" --version
fi
if ! "$venv/bin/python" -c "import aiosmtpd" 2>/dev/null; then
    echo "setup-oracles: installing aiosmtpd from PyPI into $venv"
    "$venv/bin/pip" install -q "aiosmtpd==1.4.6"
fi
echo "setup-oracles: $(/usr/bin/borg --version) (Debian) and $("$venv/bin/borg" --version) (PyPI) ready"

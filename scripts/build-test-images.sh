#!/usr/bin/env bash
# Builds, once, the local Docker images the mailcow end-to-end tests run (no registry is needed
# or reachable):
#   mcb-test/debian-db:<tag>  Debian bookworm (debootstrap, minbase) with real MariaDB and Redis:
#                             the stand-ins for mysql-mailcow and redis-mailcow.
#   mcb-test/busybox:<tag>    Debian's busybox-static alone: the stand-ins for dovecot, rspamd,
#                             postfix and sogo (they only need to run and hold volumes).
# An image whose tag exists is kept.
# Needs root, debootstrap (installed here from Debian's packages) and the docker CLI.
set -euo pipefail

# The tests name these tags (tests/common/mailcow.rs): change both, and the tag, when what goes
# into an image changes.
db_packages="mariadb-server,mariadb-client,redis-server,redis-tools,busybox"
db_image="mcb-test/debian-db:bookworm-1"
busybox_image="mcb-test/busybox:bookworm-1"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if have_image "$db_image"; then
    echo "build-test-images: $db_image present"
else
    if ! command -v debootstrap >/dev/null; then
        echo "build-test-images: installing debootstrap"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    echo "build-test-images: debootstrap of $db_image (about a minute)"
    rootfs="$work/rootfs"
    mkdir "$rootfs"
    # Services must not start inside the chroot while packages are configured.
    mkdir -p "$rootfs/usr/sbin"
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    debootstrap --variant=minbase --include="$db_packages" bookworm "$rootfs" \
        http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
        { tail -30 "$work/debootstrap.log"; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/lib/mysql/* "$rootfs/usr/sbin/policy-rc.d"
    tar -C "$rootfs" -c . | docker import - "$db_image" >/dev/null
    echo "build-test-images: $db_image built"
fi

if have_image "$busybox_image"; then
    echo "build-test-images: $busybox_image present"
else
    echo "build-test-images: $busybox_image from Debian's busybox-static"
    (cd "$work" && apt-get download -qq busybox-static >/dev/null 2>&1)
    dpkg-deb -x "$work"/busybox-static_*.deb "$work/bb"
    mkdir -p "$work/bbroot/bin" "$work/bbroot/tmp"
    cp "$work/bb/bin/busybox" "$work/bbroot/bin/busybox"
    for applet in sh sleep cat ls mkdir mkfifo rm chmod chown touch true; do
        ln -s busybox "$work/bbroot/bin/$applet"
    done
    tar -C "$work/bbroot" -c . | docker import - "$busybox_image" >/dev/null
    echo "build-test-images: $busybox_image built"
fi
echo "build-test-images: ready: $db_image $busybox_image"

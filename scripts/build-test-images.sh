#!/usr/bin/env bash
# Builds, once, the local Docker images the mailcow end-to-end tests run (no registry is needed
# or reachable):
#   mcb-test/debian-db:<tag>  Debian bookworm (debootstrap, minbase) with real MariaDB and Redis:
#                             the stand-ins for mysql-mailcow and redis-mailcow.
#   mcb-test/dovecot:<tag>    Debian bookworm (debootstrap, minbase) with real dovecot (its
#                             mail_crypt, zlib and quota plugins), openssl and busybox: the
#                             stand-in for dovecot-mailcow. It holds no configuration: the tests
#                             write their own (tests/common/mailcow.rs).
#   mcb-test/busybox:<tag>    Debian's busybox-static alone: the stand-ins for rspamd, postfix
#                             and sogo (they only need to run and hold volumes).
# An image whose tag exists is kept.
# Needs root, debootstrap (installed here from Debian's packages) and the docker CLI.
set -euo pipefail

# The tests name these tags (tests/common/mailcow.rs): change both, and the tag, when what goes
# into an image changes.
db_packages="mariadb-server,mariadb-client,redis-server,redis-tools,busybox"
db_image="mcb-test/debian-db:bookworm-1"
dovecot_packages="dovecot-core,openssl,busybox"
dovecot_image="mcb-test/dovecot:bookworm-1"
busybox_image="mcb-test/busybox:bookworm-1"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# debootstrap_image IMAGE PACKAGES [PATH…]: a Debian bookworm minbase with PACKAGES, imported as
# IMAGE; the PATHs (patterns inside the root file system) are removed first, e.g. data a
# package's setup made that the tests make themselves.
debootstrap_image() {
    local image="$1" packages="$2"
    shift 2
    if have_image "$image"; then
        echo "build-test-images: $image present"
        return
    fi
    if ! command -v debootstrap >/dev/null; then
        echo "build-test-images: installing debootstrap"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    echo "build-test-images: debootstrap of $image (about a minute)"
    local rootfs="$work/rootfs-${image//[^a-z0-9]/_}"
    mkdir "$rootfs"
    # Services must not start inside the chroot while packages are configured.
    mkdir -p "$rootfs/usr/sbin"
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" \
        http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
        { tail -30 "$work/debootstrap.log"; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs/usr/sbin/policy-rc.d"
    local path
    for path in "$@"; do
        # Unquoted: the pattern is expanded inside the root file system.
        rm -rf "${rootfs:?}"$path
    done
    # An imported image has no environment: Docker gives its containers (and what is exec'd in
    # them, e.g. doveadm by name) the default PATH, /usr/local/bin first.
    tar -C "$rootfs" -c . | docker import - "$image" >/dev/null
    rm -rf "$rootfs"
    echo "build-test-images: $image built"
}

debootstrap_image "$db_image" "$db_packages" '/var/lib/mysql/*'
debootstrap_image "$dovecot_image" "$dovecot_packages"

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
echo "build-test-images: ready: $db_image $dovecot_image $busybox_image"

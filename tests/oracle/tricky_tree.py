#!/usr/bin/env python3
"""A deterministic "tricky" directory tree for testing extract fidelity, and a canonical snapshot of it.

Stdlib only; runs under any Python >= 3.8 on Linux (the tests use the venv Python next to
$MCB_BORG14 and Debian's /usr/bin/python3).

    tricky_tree.py make DIR
        Create the tree in DIR (created if missing; refused if it exists and is not empty).
        DIR's own mode and owner are left alone; its mtime is set to a fixed value.
        Must run as root (mknod, chown to foreign ids, trusted.* xattrs, file capabilities) and
        needs `setfacl` (Debian package `acl`, installed by scripts/setup-oracles.sh).
        Running it twice into two empty directories on the same kind of filesystem gives
        identical `snapshot` output. About 118 MB apparent size, 66 MB allocated (the rest is holes).

    tricky_tree.py snapshot [OPTIONS] DIR
        Print a canonical, sorted, one-line-per-entry description of the tree under DIR (DIR
        itself is not listed). See "Snapshot format" below.

    tricky_tree.py diff [OPTIONS] A B
        Snapshot A and B and print a unified diff of the two snapshots. Exit 0 if identical,
        1 if different.

    OPTIONS (snapshot and diff):
        --ignore PATTERN   leave out entries whose relative path matches PATTERN (fnmatch, on the
                           path decoded with os.fsdecode, i.e. undecodable bytes become surrogates;
                           `*` also matches `/`). Repeatable. Does not affect hardlink labels.
        --no-xattr PATTERN leave out xattrs whose name matches PATTERN (fnmatch), e.g.
                           'security.capability' or 'system.posix_acl_*'. Repeatable.
        --no-dir-mtime PATTERN
                           leave out the mtime of directories whose relative path matches
                           PATTERN (as --ignore), e.g. where a program keeps lock files.
                           Repeatable.
        --holes            add the data extents of regular files (SEEK_DATA/SEEK_HOLE), to check
                           that sparse files stay sparse. Depends on the filesystem's block size
                           and allocation, so only compare trees on the same filesystem type.

    Exit status: 0 ok (diff: identical), 1 diff: different, 2 usage or runtime error.

Snapshot format
---------------
One line per entry, sorted by the raw bytes of the relative path:

    "<path>" <type> mode=<oooo> uid=<n> gid=<n> mtime_ns=<n> [type-specific] [hardlink=...] [xattrs={...}]

* <path>: relative to DIR. Bytes 0x21..0x7e and space are printed as they are, except `"` and
  `\\`; every other byte (newline, tab, non-ASCII, non-UTF-8, `"`, `\\`) is printed as \\xNN.
  So a literal backslash in the output always starts an escape, and names cannot break lines.
* <type>: file, dir, symlink, fifo, chardev, blockdev, socket.
* mode: the permission bits incl. setuid/setgid/sticky (st_mode & 0o7777), 4 octal digits.
* mtime_ns: st_mtime_ns from lstat (so a symlink's own mtime).
* file: `size=<n> sha256=<hex>`; symlink: `target="<escaped>"`; chardev/blockdev:
  `rdev=<major>:<minor>`. Directories have no size (it is filesystem-specific).
* hardlink="<path>": only for non-directories with st_nlink > 1; the lexicographically smallest
  (by bytes) relative path of that inode within DIR. Two trees with the same link structure get
  the same labels, whatever the inode numbers are.
* xattrs={name=hex,...}: every xattr os.listxattr(follow_symlinks=False) lists, in any
  namespace (user.*, trusted.*, security.*, system.posix_acl_access/default as the kernel's raw
  binary form), sorted by name. Values longer than 256 bytes are shown as `len:<n>:sha256:<hex>`.
  Left out when there are none.
* Not shown: atime, ctime, inode numbers, st_dev, st_nlink (except via hardlink=), directory
  sizes, block counts (use --holes for sparseness).

The tree
--------
See tests/oracle/README.md for the list and the reasons. Content of "random" files is SHAKE-256
in counter mode: block i (64 KiB) = shake_256(b"mcb-tricky:" + name + b":" + i as 8 bytes
big-endian).digest(65536), truncated to the wanted length. mtimes are fixed nanosecond values
derived from the path (sha256), except for the entries in times/ which have chosen edge values.
Directory mtimes are set last, after all their contents exist.
"""

import difflib
import fnmatch
import hashlib
import os
import shutil
import stat
import struct
import subprocess
import sys

KiB = 1024
MiB = 1024 * 1024


class Usage(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# content helpers

def stream(name, length):
    """Deterministic, incompressible bytes (SHAKE-256 counter mode), as an iterator of blocks."""
    block = 64 * KiB
    i = 0
    remaining = length
    while remaining > 0:
        data = hashlib.shake_256(b"mcb-tricky:" + name + b":" + i.to_bytes(8, "big")).digest(block)
        if remaining < block:
            data = data[:remaining]
        yield data
        remaining -= len(data)
        i += 1


def random_bytes(name, length):
    return b"".join(stream(name, length))


def text_bytes(name, length):
    """Deterministic compressible text: words picked by a hash stream."""
    words = [b"borg", b"chunk", b"mailcow", b"archive", b"segment", b"deduplicate", b"manifest",
             b"the", b"a", b"of", b"repository", b"key", b"nonce", b"item", b"\n"]
    out = bytearray()
    for blk in stream(b"text:" + name, max(length // 4 + 64, 64)):
        for b in blk:
            out += words[b % len(words)]
            out += b" "
            if len(out) >= length:
                return bytes(out[:length])
    while len(out) < length:  # pragma: no cover (the stream is always long enough)
        out += b"x"
    return bytes(out[:length])


def path_mtime_ns(rel):
    """A fixed mtime with nanoseconds, derived from the path: 2020-09-13 + up to ~3 years."""
    h = int.from_bytes(hashlib.sha256(b"mtime:" + rel).digest()[:8], "big")
    return 1_600_000_000 * 10**9 + h % (100_000_000 * 10**9)


# ---------------------------------------------------------------------------------------------
# make

class Maker:
    def __init__(self, top):
        self.top = top              # bytes
        self.mtimes = {}            # rel path -> mtime_ns, for non-directories (one name per inode)
        self.dir_mtimes = {}        # rel path -> mtime_ns
        self.dir_modes = {}         # rel path -> (mode, uid, gid), applied at the end

    def p(self, rel):
        return os.path.join(self.top, rel)

    # -- entries --

    def mkdir(self, rel, mode=0o755, uid=0, gid=0, mtime_ns=None):
        os.mkdir(self.p(rel), 0o700)
        # Ownership/mode are applied at the end (a 0000 or setgid dir would get in the way now).
        self.dir_modes[rel] = (mode, uid, gid)
        self.dir_mtimes[rel] = path_mtime_ns(rel) if mtime_ns is None else mtime_ns

    def _finish(self, rel, mode, uid, gid, mtime_ns):
        path = self.p(rel)
        os.chown(path, uid, gid, follow_symlinks=False)   # chown first: it clears setuid/setgid
        os.chmod(path, mode)
        self.mtimes[rel] = path_mtime_ns(rel) if mtime_ns is None else mtime_ns

    def file(self, rel, data=b"", mode=0o644, uid=0, gid=0, mtime_ns=None):
        with open(self.p(rel), "xb") as f:
            if isinstance(data, (bytes, bytearray)):
                f.write(data)
            else:
                for blk in data:
                    f.write(blk)
        self._finish(rel, mode, uid, gid, mtime_ns)

    def sparse(self, rel, size, islands, mode=0o644, mtime_ns=None):
        """size bytes of hole, with data `islands` [(offset, length)] of random bytes."""
        with open(self.p(rel), "xb") as f:
            for off, length in islands:
                f.seek(off)
                for blk in stream(rel + b"@" + str(off).encode(), length):
                    f.write(blk)
            f.truncate(size)
        self._finish(rel, mode, 0, 0, mtime_ns)

    def symlink(self, rel, target, uid=0, gid=0, mtime_ns=None):
        os.symlink(target, self.p(rel))
        os.chown(self.p(rel), uid, gid, follow_symlinks=False)
        self.mtimes[rel] = path_mtime_ns(rel) if mtime_ns is None else mtime_ns

    def fifo(self, rel, mode=0o644, uid=0, gid=0, mtime_ns=None):
        os.mkfifo(self.p(rel), 0o600)
        self._finish(rel, mode, uid, gid, mtime_ns)

    def device(self, rel, kind, major, minor, mode=0o660, uid=0, gid=0, mtime_ns=None):
        fmt = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
        os.mknod(self.p(rel), fmt | 0o600, os.makedev(major, minor))
        self._finish(rel, mode, uid, gid, mtime_ns)

    def hardlink(self, existing, rel):
        os.link(self.p(existing), self.p(rel))   # same inode: its mtime is set via `existing`

    def xattr(self, rel, name, value):
        os.setxattr(self.p(rel), name, value, follow_symlinks=False)

    def setfacl(self, rel, *args):
        subprocess.run([b"setfacl"] + [a.encode() if isinstance(a, str) else a for a in args]
                       + [b"--", self.p(rel)], check=True)

    # -- final pass --

    def finish(self):
        for rel, ns in self.mtimes.items():
            os.utime(self.p(rel), ns=(ns, ns), follow_symlinks=False)
        # Directories last, deepest first (order does not matter for mtimes, but it does for
        # chmod 0000 when we are not root-with-CAP_DAC_OVERRIDE; be tidy anyway).
        for rel in sorted(self.dir_modes, key=lambda r: (-r.count(b"/"), r)):
            mode, uid, gid = self.dir_modes[rel]
            os.chown(self.p(rel), uid, gid)
            os.chmod(self.p(rel), mode)
        for rel in sorted(self.dir_mtimes, key=lambda r: (-r.count(b"/"), r)):
            ns = self.dir_mtimes[rel]
            os.utime(self.p(rel), ns=(ns, ns))
        # DIR itself is not in the snapshot, but `borg create .` archives it as ".": fix its
        # mtime too, so archives of two trees differ only where borg itself adds randomness.
        ns = path_mtime_ns(b".")
        os.utime(self.top, ns=(ns, ns))


def build(m):
    """The tree. All paths are bytes, relative to the top directory."""
    # --- names/: odd and non-UTF-8 names ---------------------------------------------------
    m.mkdir(b"names")
    odd = [
        b"with space.txt",
        b" leading-space",
        b"trailing-space ",
        b"new\nline.txt",
        b"carriage\rreturn",
        b"tab\there",
        b"-rf",
        b"--help",
        b".hidden",
        b"..double-dot",
        b"back\\slash",
        b"co:lon",
        b"glob*?[x]{a,b}",
        b"quote\"and'apostrophe",
        b"percent%s%n",
        b"unicode-\xc3\xbcn\xc3\xafc\xc3\xb8d\xc3\xa9-\xe5\x90\x8d\xe5\x89\x8d.txt",   # valid UTF-8
        b"nfd-e\xcc\x81.txt",                                                         # combining accent
        b"latin1-\xe9.txt",                                                           # not UTF-8
        b"\xff\xfe-bad-utf8",
        b"\x01ctrl\x7fchars",
        b"n" * 255,                                                                   # NAME_MAX
    ]
    for name in odd:
        m.file(b"names/" + name, b"name: " + name + b"\n")
    m.mkdir(b"names/dir-\xe9-latin1")
    m.file(b"names/dir-\xe9-latin1/inner-\xff.bin", random_bytes(b"inner", 3000))
    m.mkdir(b"names/dir-\xe9-latin1/sub dir")
    m.file(b"names/dir-\xe9-latin1/sub dir/x", b"x\n")

    # --- deep/: 40 nested directories ----------------------------------------------------------
    rel = b"deep"
    m.mkdir(rel)
    for i in range(1, 41):
        rel += b"/level-%02d" % i
        m.mkdir(rel)
    m.file(rel + b"/bottom.txt", b"40 levels down\n")

    # --- hardlinks/ ------------------------------------------------------------------------------
    m.mkdir(b"hardlinks")
    for d in (b"a", b"b", b"c", b"c/sub", b"other"):
        m.mkdir(b"hardlinks/" + d)
    m.file(b"hardlinks/b/trio.bin", random_bytes(b"trio", 100_000), mode=0o640, uid=1234, gid=5678)
    m.xattr(b"hardlinks/b/trio.bin", "user.on-hardlink", b"shared by 3 names")
    m.hardlink(b"hardlinks/b/trio.bin", b"hardlinks/a/trio-second.bin")
    m.hardlink(b"hardlinks/b/trio.bin", b"hardlinks/c/sub/trio-third.bin")
    m.file(b"hardlinks/pair-1.txt", text_bytes(b"pair", 5000))
    m.hardlink(b"hardlinks/pair-1.txt", b"hardlinks/other/pair-2.txt")
    m.file(b"hardlinks/empty-pair-1", b"")                       # hardlinked empty file
    m.hardlink(b"hardlinks/empty-pair-1", b"hardlinks/other/empty-pair-2")
    m.fifo(b"hardlinks/fifo-pair-1")                             # hardlinked fifo
    m.hardlink(b"hardlinks/fifo-pair-1", b"hardlinks/other/fifo-pair-2")

    # --- symlinks/ -------------------------------------------------------------------------------
    m.mkdir(b"symlinks")
    m.symlink(b"symlinks/relative", b"../names/with space.txt")
    m.symlink(b"symlinks/absolute", b"/etc/passwd")
    m.symlink(b"symlinks/dangling", b"does/not/exist")
    m.symlink(b"symlinks/to-dir", b"../deep/level-01")
    m.symlink(b"symlinks/to-dot", b".")
    m.symlink(b"symlinks/self-loop", b"self-loop")
    m.symlink(b"symlinks/non-utf8-target", b"../names/latin1-\xe9.txt")
    m.symlink(b"symlinks/newline-target", b"../names/new\nline.txt")
    m.symlink(b"symlinks/long-target", b"/" + b"/".join([b"x" * 200] * 15))   # 3015 bytes
    m.symlink(b"symlinks/owned-1234", b"relative", uid=1234, gid=5678)
    m.symlink(b"symlinks/link-\xe9", b"to-dir")

    # --- empty/ ----------------------------------------------------------------------------------
    m.mkdir(b"empty")
    m.mkdir(b"empty/empty-dir")
    m.mkdir(b"empty/only-a-zero-byte-file")
    m.file(b"empty/only-a-zero-byte-file/zero", b"")
    m.file(b"empty/empty.txt", b"")
    m.file(b"empty/empty-mode-0000", b"", mode=0o000)
    m.file(b"empty/empty-with-xattr", b"")
    m.xattr(b"empty/empty-with-xattr", "user.only", b"metadata")
    m.file(b"empty/one-byte", b"\x00")

    # --- sizes/: around borg 1.x default chunker limits (min 512 KiB, max 8 MiB) ------------------
    m.mkdir(b"sizes")
    for name, size in [
        (b"512KiB-1.bin", 512 * KiB - 1),
        (b"512KiB.bin", 512 * KiB),
        (b"512KiB+1.bin", 512 * KiB + 1),
        (b"1MiB.bin", 1 * MiB),
        (b"2MiB.bin", 2 * MiB),
        (b"8MiB-1.bin", 8 * MiB - 1),
        (b"8MiB.bin", 8 * MiB),
        (b"8MiB+1.bin", 8 * MiB + 1),
        (b"12MiB+7.bin", 12 * MiB + 7),
        (b"17MiB.bin", 17 * MiB),
    ]:
        m.file(b"sizes/" + name, stream(name, size))
    m.file(b"sizes/text-3MiB.txt", text_bytes(b"text-3MiB", 3 * MiB))
    # Written zeros (allocated, not sparse). borg 1.2+ may treat all-zero chunks specially.
    m.file(b"sizes/zeros-written-3MiB.bin", iter([bytes(MiB)] * 3))

    # --- sparse/ ---------------------------------------------------------------------------------
    m.mkdir(b"sparse")
    m.sparse(b"sparse/islands-20MiB.bin", 20 * MiB,
             [(1 * MiB, 4 * KiB), (7 * MiB + 123, 100_000), (15 * MiB, 1 * MiB)])
    m.sparse(b"sparse/all-hole-16MiB.bin", 16 * MiB, [])
    m.sparse(b"sparse/hole-then-data-9MiB.bin", 9 * MiB, [(9 * MiB - 4 * KiB, 4 * KiB)])
    m.sparse(b"sparse/data-then-hole-9MiB.bin", 9 * MiB, [(0, 64 * KiB)])

    # --- xattrs/ ---------------------------------------------------------------------------------
    m.mkdir(b"xattrs")
    m.file(b"xattrs/file", b"has xattrs\n")
    m.xattr(b"xattrs/file", "user.binary", bytes(range(256)))
    m.xattr(b"xattrs/file", "user.empty", b"")
    m.xattr(b"xattrs/file", "user.nul-inside", b"a\x00b\x00")
    m.xattr(b"xattrs/file", "user.big", random_bytes(b"xattr-big", 2000))
    m.xattr(b"xattrs/file", "user.\xfcml\xe4ut", b"utf-8 name")                 # str name -> UTF-8
    m.xattr(b"xattrs/file", "trusted.mcb", b"trusted namespace (root only)")
    m.mkdir(b"xattrs/dir-with-xattrs")
    m.xattr(b"xattrs/dir-with-xattrs", "user.dir", b"\x00dir\xff")
    m.xattr(b"xattrs/dir-with-xattrs", "user.second", b"2")
    m.file(b"xattrs/dir-with-xattrs/plain", b"plain\n")
    m.fifo(b"xattrs/fifo-with-xattr")
    m.xattr(b"xattrs/fifo-with-xattr", "trusted.on-fifo", b"fifo")
    # File capability (security.capability, VFS_CAP_REVISION_2): cap_net_bind_service permitted,
    # effective flag set. chown and writes clear it, so it comes after both (see Maker._finish).
    m.file(b"xattrs/capability", b"#!/bin/sh\n", mode=0o755)
    m.xattr(b"xattrs/capability", "security.capability",
            struct.pack("<IIIII", 0x02000000 | 0x000001, 1 << 10, 0, 0, 0))

    # --- acls/ (setfacl writes system.posix_acl_access / _default) ------------------------------
    m.mkdir(b"acls")
    m.file(b"acls/file-acl", b"acl\n", mode=0o640)
    m.setfacl(b"acls/file-acl", "-m", "u:1234:rw-,g:5678:r--,u:0:r--,m::rw-")
    m.mkdir(b"acls/default-acl-dir", mode=0o750)
    os.chmod(m.p(b"acls/default-acl-dir"), 0o750)
    m.setfacl(b"acls/default-acl-dir", "-m", "u:1234:rwx,g:5678:r-x")
    m.setfacl(b"acls/default-acl-dir", "-d", "-m", "u::rwx,g::r-x,o::---,u:1234:rwx,g:5678:r-x")
    # Created inside: inherits the default ACL (access ACL; a subdir also gets the default ACL).
    m.file(b"acls/default-acl-dir/inherited.txt", b"inherits\n", mode=0o640)
    m.mkdir(b"acls/default-acl-dir/inherited-subdir", mode=0o750)
    m.setfacl(b"acls/default-acl-dir/inherited-subdir", "-m", "m::r-x")

    # --- special/ --------------------------------------------------------------------------------
    m.mkdir(b"special")
    m.fifo(b"special/fifo", mode=0o644)
    m.device(b"special/chardev-1-3", "c", 1, 3, mode=0o666)
    m.device(b"special/blockdev-7-200", "b", 7, 200, mode=0o660, gid=6)
    m.device(b"special/chardev-big-300-70000", "c", 300, 70000, mode=0o600)   # >8-bit major, >8-bit minor
    m.fifo(b"special/fifo-owned-1234", mode=0o620, uid=1234, gid=5678)

    # --- modes/ ----------------------------------------------------------------------------------
    m.mkdir(b"modes")
    for mode in (0o600, 0o644, 0o755, 0o000, 0o444, 0o777, 0o4755, 0o2755, 0o6755, 0o4000,
                 0o2000, 0o1755, 0o7777):
        m.file(b"modes/file-%04o" % mode, b"mode %04o\n" % mode, mode=mode)
    m.file(b"modes/setuid-owned-1234-4750", b"setuid, foreign owner\n", mode=0o4750, uid=1234, gid=5678)
    m.mkdir(b"modes/dir-sticky-1777", mode=0o1777)
    m.file(b"modes/dir-sticky-1777/inside", b"in a sticky dir\n", uid=1234, gid=5678)
    m.mkdir(b"modes/dir-setgid-2775", mode=0o2775, gid=5678)
    m.mkdir(b"modes/dir-setgid-2775/child-dir-0755", mode=0o755)
    m.file(b"modes/dir-setgid-2775/child-file", b"child\n")
    m.mkdir(b"modes/dir-0000", mode=0o000)
    m.file(b"modes/dir-0000/hidden-inside", b"inside a 0000 dir\n")
    m.mkdir(b"modes/dir-0700", mode=0o700)
    m.mkdir(b"modes/dir-0555-readonly", mode=0o555)
    m.file(b"modes/dir-0555-readonly/in-readonly-dir", b"ro\n", mode=0o444)

    # --- owners/ ---------------------------------------------------------------------------------
    m.mkdir(b"owners")
    m.file(b"owners/root-0-0", b"0:0\n", uid=0, gid=0)
    m.file(b"owners/unnamed-1234-5678", b"1234:5678\n", uid=1234, gid=5678)
    m.file(b"owners/nobody-65534-65534", b"65534:65534\n", uid=65534, gid=65534)
    m.file(b"owners/large-2000000-3000000", b"2000000:3000000\n", uid=2000000, gid=3000000)
    m.file(b"owners/mixed-0-5678", b"0:5678\n", uid=0, gid=5678)
    m.mkdir(b"owners/dir-1234-5678", mode=0o750, uid=1234, gid=5678)
    m.file(b"owners/dir-1234-5678/inside-root", b"root file in foreign dir\n")

    # --- times/: edge mtimes -------------------------------------------------------------------
    m.mkdir(b"times", mtime_ns=1_234_567_890_987_654_321)
    for name, ns in [
        (b"epoch-0", 0),
        (b"epoch+1ns", 1),
        (b"before-1970", -1_000_000_001),            # 1969-12-31T23:59:58.999999999
        (b"ns-999999999", 1_700_000_000_999_999_999),
        (b"ns-000000001", 1_700_000_000_000_000_001),
        (b"round-usec-up", 1_700_000_000_123_456_789),   # microsecond rounding would change it
        (b"y2038+1", (2**31) * 10**9 + 7),
        (b"y2100", 4_102_444_800_000_000_001),
    ]:
        m.file(b"times/" + name, name + b"\n", mtime_ns=ns)
    m.symlink(b"times/symlink-ns", b"epoch-0", mtime_ns=1_111_111_111_222_222_223)
    m.mkdir(b"times/dir-ns", mtime_ns=1_500_000_000_000_000_999)
    m.file(b"times/dir-ns/child", b"the dir's mtime is set after this file exists\n")

    # --- many/: a directory with many small entries ---------------------------------------------
    m.mkdir(b"many")
    for i in range(100):
        m.file(b"many/f%03d" % i, b"%d\n" % i)


def cmd_make(args):
    if len(args) != 1:
        raise Usage("make DIR")
    top = os.fsencode(args[0])
    if os.geteuid() != 0:
        raise RuntimeError("make must run as root (mknod, chown, trusted.* xattrs, capabilities)")
    if shutil.which("setfacl") is None:
        raise RuntimeError("setfacl not found: install Debian package `acl` (scripts/setup-oracles.sh)")
    if os.path.lexists(top):
        if not os.path.isdir(top) or os.path.islink(top):
            raise RuntimeError("%r exists and is not a directory" % args[0])
        if os.listdir(top):
            raise RuntimeError("%r exists and is not empty" % args[0])
    else:
        os.mkdir(top)
    old = os.umask(0o022)
    try:
        m = Maker(top)
        build(m)
        m.finish()
    finally:
        os.umask(old)
    return 0


# ---------------------------------------------------------------------------------------------
# snapshot

_SAFE = frozenset(range(0x20, 0x7F)) - {ord('"'), ord("\\")}


def esc(b):
    if isinstance(b, str):
        b = os.fsencode(b)
    return "".join(chr(c) if c in _SAFE else "\\x%02x" % c for c in b)


def kind_of(mode):
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "chardev"), (stat.S_ISBLK, "blockdev"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "unknown-%o" % stat.S_IFMT(mode)


def walk(top):
    """Yield (rel, abs, lstat) for everything under top (bytes), not top itself."""
    stack = [b""]
    while stack:
        rel_dir = stack.pop()
        abs_dir = os.path.join(top, rel_dir) if rel_dir else top
        with os.scandir(abs_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            rel = os.path.join(rel_dir, e.name) if rel_dir else e.name
            st = os.lstat(e.path)
            yield rel, e.path, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def data_extents(path, size):
    """Data extents via SEEK_DATA/SEEK_HOLE, as 'start-end,...' (end exclusive)."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:   # ENXIO: no more data
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append("%d-%d" % (start, end))
            pos = end
    finally:
        os.close(fd)
    return ",".join(out) if out else "none"


def snapshot_lines(top, ignore=(), no_xattr=(), no_dir_mtime=(), holes=False):
    top = os.fsencode(top)
    if not os.path.isdir(top):
        raise RuntimeError("%r is not a directory" % os.fsdecode(top))
    items = list(walk(top))
    groups = {}
    for rel, _, st in items:
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key not in groups or rel < groups[key]:
                groups[key] = rel
    lines = []
    for rel, path, st in sorted(items, key=lambda t: t[0]):
        if any(fnmatch.fnmatchcase(os.fsdecode(rel), pat) for pat in ignore):
            continue
        mode = st.st_mode
        kind = kind_of(mode)
        parts = ['"%s"' % esc(rel), kind, "mode=%04o" % stat.S_IMODE(mode),
                 "uid=%d" % st.st_uid, "gid=%d" % st.st_gid]
        if not (kind == "dir" and
                any(fnmatch.fnmatchcase(os.fsdecode(rel), pat) for pat in no_dir_mtime)):
            parts.append("mtime_ns=%d" % st.st_mtime_ns)
        if kind == "file":
            parts.append("size=%d" % st.st_size)
            parts.append("sha256=%s" % sha256_file(path))
            if holes:
                parts.append("data=%s" % data_extents(path, st.st_size))
        elif kind == "symlink":
            parts.append('target="%s"' % esc(os.readlink(path)))
        elif kind in ("chardev", "blockdev"):
            parts.append("rdev=%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
        if kind != "dir" and st.st_nlink > 1:
            parts.append('hardlink="%s"' % esc(groups[(st.st_dev, st.st_ino)]))
        xa = []
        for name in sorted(os.listxattr(path, follow_symlinks=False), key=os.fsencode):
            if any(fnmatch.fnmatchcase(name, pat) for pat in no_xattr):
                continue
            value = os.getxattr(path, name, follow_symlinks=False)
            if len(value) > 256:
                shown = "len:%d:sha256:%s" % (len(value), hashlib.sha256(value).hexdigest())
            else:
                shown = value.hex()
            xa.append("%s=%s" % (esc(name), shown))
        if xa:
            parts.append("xattrs={%s}" % ",".join(xa))
        lines.append(" ".join(parts))
    return lines


def parse_opts(args):
    patterns = {"--ignore": [], "--no-xattr": [], "--no-dir-mtime": []}
    holes, rest = False, []
    it = iter(args)
    for a in it:
        name, eq, value = a.partition("=")
        if name in patterns:
            if not eq:
                try:
                    value = next(it)
                except StopIteration:
                    raise Usage("%s needs a PATTERN" % a)
            patterns[name].append(value)
        elif a == "--holes":
            holes = True
        elif a.startswith("--") and a != "--":
            raise Usage("unknown option %s" % a)
        else:
            rest.append(a)
    return dict(ignore=patterns["--ignore"], no_xattr=patterns["--no-xattr"],
                no_dir_mtime=patterns["--no-dir-mtime"], holes=holes), rest


def write_out(text):
    sys.stdout.buffer.write(text.encode("ascii", "backslashreplace"))
    sys.stdout.flush()


def cmd_snapshot(args):
    opts, rest = parse_opts(args)
    if len(rest) != 1:
        raise Usage("snapshot [--ignore PATTERN]... [--no-xattr PATTERN]... [--no-dir-mtime PATTERN]... [--holes] DIR")
    lines = snapshot_lines(rest[0], **opts)
    write_out("".join(line + "\n" for line in lines))
    return 0


def cmd_diff(args):
    opts, rest = parse_opts(args)
    if len(rest) != 2:
        raise Usage("diff [--ignore PATTERN]... [--no-xattr PATTERN]... [--no-dir-mtime PATTERN]... [--holes] A B")
    a = snapshot_lines(rest[0], **opts)
    b = snapshot_lines(rest[1], **opts)
    if a == b:
        return 0
    out = difflib.unified_diff(a, b, fromfile=rest[0], tofile=rest[1], lineterm="", n=2)
    write_out("".join(line + "\n" for line in out))
    return 1


def main(argv):
    cmds = {"make": cmd_make, "snapshot": cmd_snapshot, "diff": cmd_diff}
    if len(argv) < 2 or argv[1] not in cmds:
        print("usage: tricky_tree.py {make DIR | snapshot [OPTIONS] DIR | diff [OPTIONS] A B}",
              file=sys.stderr)
        return 2
    try:
        return cmds[argv[1]](argv[2:])
    except Usage as e:
        print("usage: tricky_tree.py %s" % e, file=sys.stderr)
        return 2
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        print("tricky_tree: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

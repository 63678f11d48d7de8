#!/usr/bin/env bash
# Regenerates testdata/repos/: small real borg 1.x repositories, made by real borg, for every key
# mode and both oracle versions. See testdata/README.md for what ends up where.
#
#   testdata/gen-fixtures.sh            # deletes and rebuilds testdata/repos/
#
# Environment (same variables and defaults as scripts/setup-oracles.sh and the tests):
#   MCB_BORG14   borg 1.4.5   default: <repo>/.oracle/venv-borg-1.4.5/bin/borg
#   MCB_BORG12   borg 1.2.x   default: /usr/bin/borg   (Debian's package)
#   MCB_FIXTURE_VERSIONS  which to build, default "borg14 borg12"
#   MCB_FIXTURE_MODES     which key modes, default all 7
#
# Nothing is written outside testdata/repos/ and a temporary directory (BORG_BASE_DIR, the key
# dir and the source tree all live there), so ~/.config/borg and ~/.cache/borg stay untouched.
# The source tree is generated deterministically (seeded, fixed mtimes); the repositories are not
# (borg draws random keys, repo ids, chunker seeds, TAM salts and timestamps).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/.." && pwd)"
out="$here/repos"

absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
borg14="$(absolute "${MCB_BORG14:-$repo_root/.oracle/venv-borg-1.4.5/bin/borg}")"
borg12="$(absolute "${MCB_BORG12:-/usr/bin/borg}")"
versions=(${MCB_FIXTURE_VERSIONS:-borg14 borg12})
modes=(${MCB_FIXTURE_MODES:-none authenticated authenticated-blake2 repokey repokey-blake2 keyfile keyfile-blake2})
passphrase="mcb-fixture-passphrase"
py="${PYTHON:-python3}"

# name | --compression | --chunker-params ("" = borg's default) | excludes (space separated patterns)
# The two chunker archives leave out the big shared files (re-chunked they would not dedup and
# would double the fixture size); their unique files (50 kB text + 4 kB random) get many chunks.
archives=(
    "comp-none|none||"
    "comp-lz4|lz4||"
    "comp-zstd-3|zstd,3||"
    "comp-zlib-6|zlib,6||"
    "comp-lzma-6|lzma,6||"
    "comp-auto-zstd-9|auto,zstd,9||"
    "comp-obfuscate-110-zstd-3|obfuscate,110,zstd,3||"
    "chunker-buzhash-10-16-12-4095|lz4|buzhash,10,16,12,4095|pf:src/random.bin pf:src/text.txt"
    "chunker-fixed-4096|lz4|fixed,4096|pf:src/random.bin pf:src/text.txt"
)
default_chunker_params="buzhash,19,23,21,4095"

log() { printf 'gen-fixtures: %s\n' "$*"; }
die() { printf 'gen-fixtures: ERROR: %s\n' "$*" >&2; exit 1; }

borg_for() {
    case "$1" in
        borg14) echo "$borg14" ;;
        borg12) echo "$borg12" ;;
        *) die "unknown version tag $1" ;;
    esac
}

for v in "${versions[@]}"; do
    b="$(borg_for "$v")"
    [[ -x "$b" ]] || die "$v: $b not found or not executable (run scripts/setup-oracles.sh, or set MCB_BORG14/MCB_BORG12)"
done
command -v "$py" >/dev/null || die "need $py"

work="$(mktemp -d "${TMPDIR:-/tmp}/mcb-fixtures.XXXXXX")"
cleanup() { rm -rf "$work" "$out.new"; }   # on success $out.new has already become $out
trap cleanup EXIT

# ----------------------------------------------------------------------------------------------
# Helper script: builds the deterministic source tree and assembles the per-repo metadata JSON.
cat >"$work/tree.py" <<'PYEOF'
import hashlib, json, os, stat, sys

SEED = b"mailcow-borg fixture tree v1"
BASE_NS = 1_700_000_000_123_456_789           # 2023-11-14T22:13:20.123456789Z
RANDOM_SIZE = 800_000                         # incompressible, shared by all archives of a repo
TEXT_SIZE = 100_000                           # compressible text
UNIQUE_TEXT_SIZE = 50_000                     # per-archive compressible file
UNIQUE_BIN_SIZE = 4_096                       # per-archive incompressible file
XATTR_NAME, XATTR_VALUE = "user.test", b"mcb xattr value"
NON_UTF8_NAME = b"name-\xff-non-utf8.txt"

WORDS = ("borg backup chunk segment manifest archive repository key nonce cipher hash "
         "mailcow postfix dovecot rspamd sogo redis mysql unbound nginx clamd olefy "
         "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def stream(label, n):
    """n deterministic pseudo-random bytes (SHA-256 in counter mode; stable across Pythons)."""
    out, i = bytearray(), 0
    while len(out) < n:
        out += hashlib.sha256(SEED + b"/" + label.encode() + i.to_bytes(8, "little")).digest()
        i += 1
    return bytes(out[:n])


def text(label, n, header=""):
    rnd = stream("text/" + label, n)
    words, lines, line, size, k = [], [], [], 0, 0
    out = header
    while len(out) < n:
        w = WORDS[rnd[k % len(rnd)] % len(WORDS)]
        k += 1
        line.append(w)
        if len(line) >= 8 + rnd[(k * 7) % len(rnd)] % 8:
            out += " ".join(line) + ".\n"
            line = []
    return out[:n].encode()


def set_times(path, ns):
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def write(path, data, mode, ns):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    set_times(path, ns)


# Paths below are bytes relative to the tree root (the cwd of borg create), like borg stores them.
def make(root):
    src = os.path.join(root, b"src")
    os.makedirs(os.path.join(src, b"sub", b"deeper"))
    xattr_ok = True
    write(os.path.join(src, b"text.txt"), text("text", TEXT_SIZE, "compressible text for mailcow-borg fixtures\n"), 0o644, BASE_NS + 1)
    write(os.path.join(src, b"random.bin"), stream("random", RANDOM_SIZE), 0o644, BASE_NS + 2)
    write(os.path.join(src, b"empty"), b"", 0o644, BASE_NS + 3)
    write(os.path.join(src, b"hardlink-a.txt"), b"this file has two names\n" * 10, 0o644, BASE_NS + 4)
    os.link(os.path.join(src, b"hardlink-a.txt"), os.path.join(src, b"sub", b"hardlink-b.txt"))
    write(os.path.join(src, b"xattr.txt"), b"file with an extended attribute\n", 0o644, BASE_NS + 5)
    try:
        os.setxattr(os.path.join(src, b"xattr.txt"), XATTR_NAME, XATTR_VALUE)
        set_times(os.path.join(src, b"xattr.txt"), BASE_NS + 5)
    except OSError as e:
        print(f"tree.py: warning: setxattr not supported here ({e}); fixture has no xattr", file=sys.stderr)
        xattr_ok = False
    write(os.path.join(src, NON_UTF8_NAME), b"the name of this file is not valid UTF-8\n", 0o644, BASE_NS + 6)
    write(os.path.join(src, b"private.txt"), b"mode 0600\n", 0o600, BASE_NS + 7)
    write(os.path.join(src, b"sub", b"script.sh"), b"#!/bin/sh\necho mode 0755\n", 0o755, BASE_NS + 8)
    write(os.path.join(src, b"sub", b"deeper", b"small.txt"), b"small\n", 0o644, BASE_NS + 9)
    os.symlink(b"text.txt", os.path.join(src, b"link-to-text"))
    set_times(os.path.join(src, b"link-to-text"), BASE_NS + 10)
    os.symlink(b"does/not/exist", os.path.join(src, b"dangling-link"))
    set_times(os.path.join(src, b"dangling-link"), BASE_NS + 11)
    fix_dirs(root)
    return xattr_ok


def fix_dirs(root):
    src = os.path.join(root, b"src")
    for d, ns in ((os.path.join(src, b"sub", b"deeper"), BASE_NS + 100),
                  (os.path.join(src, b"sub"), BASE_NS + 101),
                  (src, BASE_NS + 102)):
        os.chmod(d, 0o755)
        set_times(d, ns)


def unique_names(slug):
    return (b"src/unique-" + slug.encode() + b".txt", b"src/unique-" + slug.encode() + b".bin")


def unique(root, slug, archive):
    t, b = unique_names(slug)
    write(os.path.join(root, t), text("unique/" + slug, UNIQUE_TEXT_SIZE,
                                      f"unique file of archive {archive}\n"), 0o644, BASE_NS + 200)
    write(os.path.join(root, b), stream("unique/" + slug, UNIQUE_BIN_SIZE), 0o644, BASE_NS + 201)
    fix_dirs(root)


def clean(root, slug):
    for p in unique_names(slug):
        os.unlink(os.path.join(root, p))
    fix_dirs(root)


def lossy(b):
    # what borg 1.x prints for a path that is not valid UTF-8: every undecodable byte becomes '?'
    s = b.decode("utf-8", "surrogateescape")
    return "".join("?" if 0xdc80 <= ord(c) <= 0xdcff else c for c in s)


def describe(root, rel, inodes):
    p = os.path.join(root, rel)
    st = os.lstat(p)
    e = {"path": lossy(rel), "path_hex": rel.hex(), "st_mode": st.st_mode,
         "mode_octal": "%o" % st.st_mode, "mtime_ns": st.st_mtime_ns}
    if stat.S_ISDIR(st.st_mode):
        e["type"] = "d"
    elif stat.S_ISLNK(st.st_mode):
        e["type"] = "l"
        e["link_target"] = lossy(os.readlink(p))
    else:
        e["type"] = "-"
        e["size"] = st.st_size
        with open(p, "rb") as f:
            e["sha256"] = hashlib.sha256(f.read()).hexdigest()
        if st.st_nlink > 1:
            e["nlink"] = st.st_nlink
            # all names of this inode; which one borg makes the master depends on its walk order
            e["hardlink_paths"] = inodes.setdefault((st.st_dev, st.st_ino), [])
            e["hardlink_paths"].append(lossy(rel))
    try:
        xs = {n: os.getxattr(p, n, follow_symlinks=False).hex()
              for n in sorted(os.listxattr(p, follow_symlinks=False)) if n.startswith("user.")}
    except OSError:
        xs = {}
    if xs:
        e["xattrs_hex"] = xs
    return e


def walk(root, skip=()):
    """All paths of the tree, depth-first, names sorted. (Not necessarily borg's order: borg 1.x
    visits directory entries sorted by inode number.)"""
    out = []

    def rec(rel):
        out.append(rel)
        if os.path.isdir(os.path.join(root, rel)) and not os.path.islink(os.path.join(root, rel)):
            for name in sorted(os.listdir(os.path.join(root, rel))):
                child = rel + b"/" + name
                if child not in skip:
                    rec(child)
    rec(b"src")
    return out


def main():
    cmd, root = sys.argv[1], os.fsencode(sys.argv[2])
    if cmd == "make":
        print(json.dumps({"xattr": make(root)}))
    elif cmd == "unique":
        unique(root, sys.argv[3], sys.argv[4])
    elif cmd == "clean":
        clean(root, sys.argv[3])
    elif cmd == "meta":
        meta(root, sys.argv[3])
    else:
        sys.exit(f"tree.py: unknown command {cmd}")


ITEM_KEY_ORDER = ["type", "mode", "path", "path_hex", "size", "mtime", "isomtime", "source", "linktarget",
                  "sha256", "num_chunks", "user", "group", "uid", "gid", "healthy", "flags"]


def item_key_order(k):
    # borg emits the --format keys in set order, which varies between runs; normalise it
    return (ITEM_KEY_ORDER.index(k), k) if k in ITEM_KEY_ORDER else (len(ITEM_KEY_ORDER), k)


def meta(root, spec_file):
    """Assemble testdata/repos/<ver>-<mode>.json from the listings bash collected."""
    with open(spec_file) as f:
        spec = json.load(f)
    inodes = {}
    common = [describe(root, rel, inodes) for rel in walk(root)]
    by_path = {e["path"]: e for e in common}
    archives = []
    listing = json.load(open(spec["list_json"]))
    ids = {a["name"]: a["id"] for a in listing["archives"]}
    for a in spec["archives"]:
        # describe() needs the archive's unique files; they are gone by now, so recreate them
        unique(root, a["slug"], a["name"])
        try:
            uniq = [describe(root, rel, {}) for rel in unique_names(a["slug"])]
        finally:
            clean(root, a["slug"])
        known = dict(by_path)
        known.update({e["path"]: e for e in uniq})
        items = []
        with open(a["jsonl"], encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                it = json.loads(line)
                gt = known.get(it["path"])
                if gt is None:
                    sys.exit(f"tree.py: archive {a['name']}: item {it['path']!r} not in the source tree")
                it["path_hex"] = gt["path_hex"]
                if it["type"] == "-" and it.get("source"):
                    it.pop("sha256", None)        # hardlink slave: borg prints "" (no content here)
                elif it["type"] != "-":
                    it.pop("sha256", None)        # only regular files have a content hash
                items.append({k: it[k] for k in sorted(it, key=item_key_order)})
        archives.append({
            "name": a["name"],
            "id": ids[a["name"]],
            "compression": a["compression"],
            "chunker_params": a["chunker_params"],
            "excludes": a["excludes"],
            "unique_files": uniq,
            "items": items,
        })
    doc = {
        "borg_version": spec["borg_version"],
        "version_tag": spec["version_tag"],
        "mode": spec["mode"],
        "key_type": spec["key_type"],
        "passphrase": spec["passphrase"],
        "repository_id": listing["repository"]["id"],
        "key_file": spec["key_file"],
        "archives": archives,
        "source_tree": common,
    }
    # indented JSON, but every item / tree entry on one line to keep the files small
    with open(spec["out"], "w") as f:
        f.write(compact_json(doc))
        f.write("\n")


def compact_json(v, ind=0):
    pad = " " * ind
    if isinstance(v, dict) and any(isinstance(x, list) and any(isinstance(y, dict) for y in x)
                                   for x in v.values()):
        parts = [f'{pad} {json.dumps(k)}: {compact_json(x, ind + 1).lstrip()}' for k, x in v.items()]
        return pad + "{\n" + ",\n".join(parts) + "\n" + pad + "}"
    if isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v):
        return pad + "[\n" + ",\n".join(compact_json(x, ind + 1) for x in v) + "\n" + pad + "]"
    return pad + json.dumps(v, ensure_ascii=True)


if __name__ == "__main__":
    main()
PYEOF

tree="$work/tree"
mkdir -p "$tree"
log "generating source tree in a temp dir"
tree_info="$("$py" "$work/tree.py" make "$tree")"
log "source tree: $tree_info"

rm -rf "$out.new"
mkdir -p "$out.new"

key_type_of() {
    case "$1" in
        keyfile) echo 0 ;; none) echo 2 ;; repokey) echo 3 ;; keyfile-blake2) echo 4 ;;
        repokey-blake2) echo 5 ;; authenticated-blake2) echo 6 ;; authenticated) echo 7 ;;
    esac
}

# Archives record argv (`cmdline`) and, in 1.4, the cwd. To keep machine paths out of them, borg is
# started as `<its python> borg ...` with `borg` a symlink in the cwd (so argv[0] is just "borg")
# and the repository is addressed as ../repos/<name> (a symlink to the output dir). The cwd that
# 1.4 stores is the temporary tree dir (e.g. /tmp/mcb-fixtures.XXXXXX/tree).
ln -s "$out.new" "$work/repos"
borg_run=()
set_borg() {
    local b="$1" first
    first="$(head -c 200 "$b" | head -n 1)"
    ln -sfn "$b" "$tree/borg"
    if [[ "$first" == '#!'*python* ]]; then
        read -r -a borg_run <<<"${first#\#!}"
        borg_run+=(borg)
    else
        borg_run=("$b")   # not a Python script: argv[0] will be its full path
    fi
}

build_repo() {
    local v="$1" mode="$2"
    local b name r base keyfile rc borg_version slug
    b="$(borg_for "$v")"
    name="$v-$mode"
    r="../repos/$name"   # relative to $tree, the cwd of every borg call below
    base="$work/base-$name"
    keyfile="$work/keys/$name.key"
    mkdir -p "$base" "$work/keys" "$work/lists/$name"
    borg_version="$("$b" --version | awk '{print $2}')"
    log "== $name (borg $borg_version)"

    (
        export BORG_BASE_DIR="$base"
        export BORG_CONFIG_DIR="$base/config" BORG_CACHE_DIR="$base/cache" BORG_SECURITY_DIR="$base/security"
        export BORG_KEYS_DIR="$work/keys"
        export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
        export BORG_DISPLAY_PASSPHRASE=no BORG_EXIT_CODES=legacy
        export TZ=UTC LANG=C.UTF-8 LC_ALL=C.UTF-8
        unset BORG_REPO BORG_PASSCOMMAND BORG_PASSPHRASE_FD BORG_NEW_PASSPHRASE BORG_RSH
        if [[ "$mode" == none ]]; then
            unset BORG_PASSPHRASE
        else
            export BORG_PASSPHRASE="$passphrase"
        fi
        if [[ "$mode" == keyfile* ]]; then
            export BORG_KEY_FILE="$keyfile"
        else
            unset BORG_KEY_FILE
        fi
        cd "$tree"
        set_borg "$b"

        log "   init -e $mode"
        rc=0
        "${borg_run[@]}" init -e "$mode" "$r" >"$work/lists/$name/init.log" 2>&1 || rc=$?
        [[ $rc -eq 0 ]] || { cat "$work/lists/$name/init.log" >&2; die "$name: borg init exited $rc"; }

        local spec_archives="" sep=""
        for a in "${archives[@]}"; do
            IFS='|' read -r aname comp cp excl <<<"$a"
            slug="$aname"
            "$py" "$work/tree.py" unique "$tree" "$slug" "$aname"
            args=(create --files-cache=disabled --compression "$comp")
            [[ -n "$cp" ]] && args+=(--chunker-params "$cp")
            for e in $excl; do args+=(--exclude "$e"); done
            log "   create ::$aname --compression $comp${cp:+ --chunker-params $cp}${excl:+ --exclude $excl}"
            rc=0
            "${borg_run[@]}" "${args[@]}" "$r::$aname" src || rc=$?
            "$py" "$work/tree.py" clean "$tree" "$slug"
            [[ $rc -eq 0 ]] || die "$name: borg create ::$aname exited $rc"
            "${borg_run[@]}" list --json-lines \
                --format '{type}{mode}{path}{size}{mtime}{isomtime}{source}{sha256}{num_chunks}' \
                "$r::$aname" >"$work/lists/$name/$aname.jsonl"
            excl_json="$("$py" -c 'import json,sys; print(json.dumps(sys.argv[1:]))' $excl)"
            spec_archives+="$sep{\"name\": \"$aname\", \"slug\": \"$slug\", \"compression\": \"$comp\", \"chunker_params\": \"${cp:-$default_chunker_params}\", \"excludes\": $excl_json, \"jsonl\": \"$work/lists/$name/$aname.jsonl\"}"
            sep=", "
        done
        "${borg_run[@]}" list --json "$r" >"$work/lists/$name/repo.json"

        local key_file_json=null
        if [[ "$mode" == keyfile* ]]; then
            [[ -f "$keyfile" ]] || die "$name: key file was not written to $keyfile"
            cp "$keyfile" "$out.new/$name.key"
            key_file_json="\"$name.key\""
        fi
        local pp_json=null
        [[ "$mode" != none ]] && pp_json="\"$passphrase\""
        cat >"$work/lists/$name/spec.json" <<EOF
{"borg_version": "$borg_version", "version_tag": "$v", "mode": "$mode", "key_type": $(key_type_of "$mode"),
 "passphrase": $pp_json, "key_file": $key_file_json,
 "list_json": "$work/lists/$name/repo.json", "out": "$out.new/$name.json",
 "archives": [$spec_archives]}
EOF
        "$py" "$work/tree.py" meta "$tree" "$work/lists/$name/spec.json"

        log "   check --verify-data"
        rc=0
        "${borg_run[@]}" check --verify-data "$r" || rc=$?
        [[ $rc -eq 0 ]] || die "$name: borg $borg_version check --verify-data exited $rc"
    )
}

for v in "${versions[@]}"; do
    for mode in "${modes[@]}"; do
        build_repo "$v" "$mode"
    done
done

rm -rf "$out"
mv "$out.new" "$out"
log "done: $(du -sh "$out" | cut -f1) in testdata/repos/ ($(ls -d "$out"/*/ | wc -l) repositories)"
du -sh "$out"/*/ | sed 's|'"$out"'/|    |'

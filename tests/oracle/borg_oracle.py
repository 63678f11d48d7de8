#!/usr/bin/env python3
"""Test oracle for mailcow-borg: answers questions with real borg 1.x code (``import borg``).

Run it with the Python that has the borg you want as the oracle:

    <python> tests/oracle/borg_oracle.py SUBCOMMAND ...

    borg 1.4.5:  python next to $MCB_BORG14 (default .oracle/venv-borg-1.4.5/bin/python)
    borg 1.2.x:  /usr/bin/python3 (Debian's borgbackup package installs `borg` for it)

Every subcommand exits 0 on success and prints its result to stdout. On failure it exits 1 (2 for
usage errors) and prints exactly one line ``borg_oracle: <ExceptionClass>: <message>`` to stderr.
Hex strings are lowercase. "FILE" arguments accept ``-`` for stdin.

chunk --seed N --params PARAMS FILE
    Cut FILE with borg's own chunker (borg.chunker.get_chunker) and print one chunk size per line
    (decimal; nothing at all for an empty file). N is the chunker seed, a signed 32-bit int as
    stored in the key (0 for mode none). PARAMS is borg's --chunker-params syntax:
      buzhash,MIN_EXP,MAX_EXP,MASK_BITS,WINDOW     e.g. buzhash,19,23,21,4095 (default params)
      MIN_EXP,MAX_EXP,MASK_BITS,WINDOW              (legacy form, = buzhash)
      fixed,BLOCK[,HEADER]                          e.g. fixed,4096
    The values are handed to borg as-is (no CLI validation), so edge cases borg's CLI would refuse
    can be tested too. FILE is read through a Python file object (fd=f, fh=-1).

match-patterns REQUEST
    REQUEST (JSON): {"patterns": [...], "default": "fm"|"sh"|"pp", "paths_hex": [...]}. Prints,
    per pattern, {"matches": [bool per path]} or {"error": ExceptionClass}, from borg's
    patterns.parse_pattern(...).match(path); paths are hex bytes, decoded as borg decodes them.

placeholders REQUEST
    REQUEST (JSON): {"values": {hostname, fqdn, user, pid, uuid4, now_micros}, "templates": [...]}.
    Prints a JSON list with {"ok": expansion} or {"error": ExceptionClass} per template, from
    borg's replace_placeholders with those values (borg's version keys are its own).

bench-chunker --seed N --params PARAMS [--fh] FILE
    Read FILE once (warm-up, so it sits in the page cache), then time borg's chunker over it and
    print {"bytes": N, "seconds": S, "cpu_seconds": C, "chunks": K}. Only the chunking loop is timed
    (wall: time.perf_counter; CPU, user + system, which a busy shared machine disturbs less: time.process_time),
    reading through a normal Python file object; --fh makes borg read via the OS-level handle
    instead, as `borg create` does (note: borg then posix_fadvise(DONTNEED)s what it read).

verify-objects REQUEST.json
    REQUEST: {"key_text": str, "passphrase": str, "key_type": int, "repository_id": hex,
              "objects": [{"id": hex, "data": hex, "kind": "chunk"|"manifest"|"archive",
                           "force_tam_not_required": bool (optional, archive/manifest only)}]}
      key_text: the base64 key blob as borg stores it (repo config `key =` value, or the key file
                body; lines joined by "\\n"). A whole key file ("BORG_KEY <id>\\n..." first line)
                is accepted too. Empty for mode none (key_type 2); passphrase is then ignored.
      key_type: the type byte (0 keyfile, 2 none, 3 repokey, 4 keyfile-blake2, 5 repokey-blake2,
                6 authenticated-blake2, 7 authenticated; 1 = legacy passphrase, treated as repokey
                like borg's identify_key does).
      repository_id: 64 hex chars (only used where borg looks things up by repo id; may be omitted).
    Output: {"results": [ one entry per object, in order ]}, each entry one of
      chunk:    {"id", "kind": "chunk", "plaintext": hex, "compressor": name,
                 ["inner_compressor": name]}            # key.decrypt(id, data): MAC + decompress + id check
      manifest: {"id", "kind": "manifest", "plaintext": hex, "compressor": name, "tam_verified": bool,
                 "object": {...}}                       # key.decrypt(None, data) (borg never checks
                                                        # the manifest id) + key.unpack_and_verify_manifest
      archive:  {"id", "kind": "archive", "plaintext": hex, "compressor": name, "tam_verified": bool,
                 "tam_check": "borg"|"oracle-fallback", "object": {...}}
                                                        # key.decrypt(id, data) + key.unpack_and_verify_archive
      failure:  {"id", "kind", "error": "<ExceptionClass>: <message>"}   (the run goes on)
    A key that cannot be loaded (wrong passphrase -> PassphraseWrong, bad key_text -> e.g.
    KeyfileInvalidError) fails the whole command (exit 1); everything after that is per object.
    "object" is the unpacked msgpack map (borg unpacks with raw=True): every msgpack str/bin value
    becomes a lowercase hex string, map keys become text (utf-8; undecodable bytes as \\xNN),
    ints/bools/None/lists stay. borg pops "tam" out of the map before returning it, so "object" has
    no "tam" key; the full bytes are in "plaintext".
    TAM policy: by default the strict one (as in `borg check`): for keyed modes a manifest or
    archive without TAM is an error (TAMRequiredError / ArchiveTAMRequiredError). Set
    "force_tam_not_required": true on an object to get borg list/extract's lenient policy (missing
    TAM -> "tam_verified": false; a present but wrong TAM is still an error).
    borg 1.2.4 writes archive TAMs but has no code to verify them (unpack_and_verify_archive came
    with 1.2.5, CVE-2023-36811). Where it is missing the oracle unpacks the archive with borg's
    msgpack and checks a present TAM itself with borg's key._tam_key(salt, b"archive") and the same
    policy as 1.4.5 ("tam_check": "oracle-fallback"; error classes named like 1.4.5's).

show-key REQUEST.json
    REQUEST: {"key_text", "passphrase", "key_type", "repository_id"} as for verify-objects.
    Unwraps the key with borg and prints its material:
      {"key_type": int, "class": borg class name, "repository_id": hex (from the key blob),
       "enc_key": hex, "enc_hmac_key": hex, "id_key": hex, "chunk_seed": int, "tam_required": bool}
    (mode none: the key fields and repository_id are null, chunk_seed 0, tam_required false).

make-key MODE PASSPHRASE OUT.json
    Make a fresh key with borg's own code, without a repository: a random 32-byte repository id,
    key.init_from_random_data(), key._save(passphrase) (the wrapped, base64, 70-column text).
    MODE is a borg --encryption value (none, authenticated, authenticated-blake2, repokey,
    repokey-blake2, keyfile, keyfile-blake2). Writes to OUT.json (``-`` = stdout only) and prints:
      {"mode", "key_type": int, "passphrase", "repository_id": hex, "key_text": str,
       "key_file_text": str|null (keyfile modes: the complete key file borg would write),
       "enc_key": hex, "enc_hmac_key": hex, "id_key": hex, "chunk_seed": int, "tam_required": bool}
    For mode none: key_text "" and the key material fields are null (chunk_seed 0).

encrypt-object REQUEST.json
    REQUEST: {"key_text", "passphrase", "key_type", "repository_id" (as for verify-objects),
              "compression": borg --compression spec ("none", "lz4", "zstd,3", "zlib,6", "lzma,6",
                             "auto,zstd,9", "obfuscate,110,zstd,3", ...; default "lz4";
                             obfuscate,250 (Padme) exists in 1.4 only),
              "plaintext": hex, "iv": int (optional, AES modes: IV counter to use, default 0),
              "random_seed": int (optional; seeds Python's `random`, which borg's obfuscate
                             padding uses, for reproducible obfuscate output)}
    Uses key.id_hash + key.encrypt (borg's compressor and envelope) and prints
      {"id": hex, "data": hex, "iv": int|null, "next_iv": int|null}
    (iv/next_iv are null for the non-AES modes). The nonce manager is replaced by a stub that
    hands out the requested IV, so no nonce files are read or written.

version
    Print the version of the borg package the oracle runs on (e.g. 1.4.5, 1.2.4).

Side effects: none outside a temporary BORG_BASE_DIR that is deleted on exit (borg looks at
<security_dir>/<repo_id>/tam_required while loading a key).
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

# Keep borg away from the user's ~/.config/borg and ~/.cache/borg: all of borg's per-user dirs
# go into a throwaway base dir. Must happen before borg computes any of them.
_BASE_DIR = tempfile.mkdtemp(prefix="mcb-borg-oracle-")
os.environ["BORG_BASE_DIR"] = _BASE_DIR
for _v in ("BORG_CONFIG_DIR", "BORG_CACHE_DIR", "BORG_SECURITY_DIR", "BORG_KEYS_DIR", "BORG_KEY_FILE",
           "BORG_WORKAROUNDS", "BORG_PASSCOMMAND", "BORG_PASSPHRASE_FD"):
    os.environ.pop(_v, None)

import borg  # noqa: E402
from borg import compress as _compress  # noqa: E402
from borg import chunker as _chunker  # noqa: E402
from borg.crypto import key as _key  # noqa: E402
from borg.helpers import msgpack as _msgpack  # noqa: E402
from borg.logger import setup_logging  # noqa: E402

# borg's code logs (debug/warning) and refuses to run before logging is set up; keep it quiet so
# stderr only ever carries the oracle's own one-line error. BORG_LOGGING_CONF is ignored.
os.environ.pop("BORG_LOGGING_CONF", None)
setup_logging(stream=sys.stderr, level="critical")

BORG_VERSION = getattr(borg, "__version__", "unknown")

KEY_TYPE_BY_MODE = {
    "keyfile": 0x00, "none": 0x02, "repokey": 0x03, "keyfile-blake2": 0x04,
    "repokey-blake2": 0x05, "authenticated-blake2": 0x06, "authenticated": 0x07,
}


class OracleError(Exception):
    pass


def fail(msg, code=1):
    print("borg_oracle: " + " ".join(str(msg).split()), file=sys.stderr)
    sys.exit(code)


def describe_exc(e):
    """'<ExceptionClass>: <message>' on one line (borg's Error classes format their docstring)."""
    msg = None
    if hasattr(e, "get_message"):
        try:
            msg = e.get_message()
        except Exception:
            msg = None
    if msg is None:
        msg = str(e)
    msg = " ".join(msg.split()) or "(no message)"
    return f"{type(e).__name__}: {msg}"


# ---------------------------------------------------------------------------------------------
# input helpers

def read_input(path):
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def read_json(path):
    try:
        return json.loads(read_input(path))
    except (OSError, ValueError) as e:
        raise OracleError(f"cannot read request {path}: {e}")


def unhex(s, what):
    try:
        return bytes.fromhex(s or "")
    except (TypeError, ValueError):
        raise OracleError(f"{what} is not a hex string")


def jsonable(obj):
    """Unpacked borg msgpack (raw=True) -> JSON: bytes -> hex, map keys -> text."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, (bytes, bytearray)):
                k = bytes(k).decode("utf-8", "backslashreplace")
            else:
                k = str(k)
            out[k] = jsonable(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [jsonable(x) for x in obj]
    if isinstance(obj, (bool, int, float)) or obj is None:
        return obj
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogateescape").hex()
    # borg's msgpack may hand out ext types etc.; make them visible instead of failing
    return repr(obj)


# ---------------------------------------------------------------------------------------------
# keys

class _FakeLocation:
    def canonical_path(self):
        return "borg-oracle-fake-repository"


class FakeRepository:
    """The few attributes borg's key classes use from a Repository."""

    def __init__(self, repo_id, key_text=""):
        self.id = repo_id
        self.id_str = repo_id.hex()
        self._location = _FakeLocation()
        self._key_text = key_text
        self.saved_key = None

    def load_key(self):
        return self._key_text.encode("utf-8")

    def save_key(self, keydata):
        self.saved_key = keydata

    # nonce API (unused: the nonce manager gets replaced, see FixedNonceManager)
    def get_free_nonce(self):
        return None

    def commit_nonce_reservation(self, next_unreserved, start_nonce):
        pass


class FixedNonceManager:
    """Stands in for borg.crypto.nonces.NonceManager: every encrypt uses the IV it asks for
    (key.cipher.next_iv()), so results are reproducible and no nonce file is touched."""

    def ensure_reservation(self, nonce, nonce_space_needed):
        return nonce


def key_class_for_type(key_type):
    if not isinstance(key_type, int) or not 0 <= key_type <= 255:
        raise OracleError(f"key_type must be an int 0..255, got {key_type!r}")
    # borg's own dispatch (identify_key looks at the first byte of the manifest object)
    return _key.identify_key(bytes([key_type]))


def key_class_for_mode(mode):
    for cls in _key.AVAILABLE_KEY_TYPES:
        if cls.ARG_NAME == mode:
            return cls
    raise OracleError(f"unknown mode {mode!r} (want one of {', '.join(KEY_TYPE_BY_MODE)})")


def normalise_key_text(text):
    text = (text or "").strip()
    if text.startswith("BORG_KEY "):
        text = text.split("\n", 1)[1] if "\n" in text else ""
    return text


def load_key(req):
    """Build borg's key object from a request's key_text/passphrase/key_type/repository_id."""
    key_type = req.get("key_type")
    cls = key_class_for_type(key_type)
    repo_id = unhex(req.get("repository_id") or "", "repository_id") or bytes(32)
    key_text = normalise_key_text(req.get("key_text"))
    repo = FakeRepository(repo_id, key_text)
    key = cls(repo)
    if cls is _key.PlaintextKey:
        # nothing to load; PlaintextKey has no key material and no cipher
        return key
    if not key_text:
        raise OracleError(f"key_type {key_type} ({cls.__name__}) needs key_text")
    passphrase = _key.Passphrase(req.get("passphrase") or "")
    # KeyfileKeyBase._load: base64 -> decrypt_key_file (PBKDF2 + AES-CTR + HMAC) -> inner key dict.
    # The same code path RepoKey.load (repo config) and KeyfileKey.load (key file body) use.
    if not key._load(key_text, passphrase):
        raise _key.PassphraseWrong()
    key.init_ciphers()
    if hasattr(key, "nonce_manager"):
        key.nonce_manager = FixedNonceManager()
    return key


# ---------------------------------------------------------------------------------------------
# verify-objects

def compressor_info(key, obj_id, data):
    """Name of the compressor borg detects on the stored payload (after decryption)."""
    info = {}
    try:
        payload = bytes(key.decrypt(obj_id, data, decompress=False))
        cls = _compress.Compressor.detect(payload)
        info["compressor"] = cls.name
        if cls.name == "obfuscate" and len(payload) >= 6:
            info["inner_compressor"] = _compress.Compressor.detect(payload[6:]).name
    except Exception:
        pass
    return info


class ArchiveTAMRequiredError(Exception):
    """fallback stand-in for borg 1.4's class of the same name"""


class ArchiveTAMInvalid(Exception):
    """fallback stand-in for borg 1.4's class of the same name"""


class TAMUnsupportedSuiteError(Exception):
    """fallback stand-in for borg's class of the same name"""


def unpack_archive_fallback(key, data, force_tam_not_required):
    """borg 1.2.4 has no unpack_and_verify_archive; do the same with its building blocks."""
    import hmac as _hmac
    data = bytearray(data)
    unpacked = _msgpack.unpackb(bytes(data))
    tam_required = key.tam_required and not force_tam_not_required
    if not isinstance(unpacked, dict):
        raise ArchiveTAMInvalid("archive object is not a msgpack map (oracle fallback)")
    if b"tam" not in unpacked:
        if tam_required:
            raise ArchiveTAMRequiredError("archive has no TAM, but it is required (oracle fallback)")
        return unpacked, False
    tam = unpacked.pop(b"tam")
    if not isinstance(tam, dict):
        raise ArchiveTAMInvalid("tam is not a map (oracle fallback)")
    tam_type = tam.get(b"type", b"<none>").decode("ascii", "replace")
    if tam_type != "HKDF_HMAC_SHA512":
        if tam_required:
            raise TAMUnsupportedSuiteError(f"{tam_type!r} (oracle fallback)")
        return unpacked, False
    tam_hmac, tam_salt = tam.get(b"hmac"), tam.get(b"salt")
    if not isinstance(tam_salt, bytes) or not isinstance(tam_hmac, bytes):
        raise ArchiveTAMInvalid("hmac/salt not bytes (oracle fallback)")
    offset = data.index(tam_hmac)
    data[offset:offset + 64] = bytes(64)
    calculated = _hmac.digest(key._tam_key(tam_salt, context=b"archive"), bytes(data), "sha512")
    if not _hmac.compare_digest(calculated, tam_hmac):
        raise ArchiveTAMInvalid("Archive authentication did not verify (oracle fallback)")
    return unpacked, True


def verify_one(key, obj):
    kind = obj.get("kind", "chunk")
    obj_id = unhex(obj.get("id"), "object id")
    data = unhex(obj.get("data"), "object data")
    res = {"id": obj_id.hex(), "kind": kind}
    if not data:
        raise OracleError("object data is empty")
    force = bool(obj.get("force_tam_not_required", False))
    if kind == "chunk":
        plaintext = bytes(key.decrypt(obj_id, data))
        res["plaintext"] = plaintext.hex()
        res.update(compressor_info(key, obj_id, data))
    elif kind == "manifest":
        # borg's Manifest.load: key.decrypt(None, cdata) - the manifest id (32 zero bytes) is
        # never compared with a hash of the plaintext.
        plaintext = bytes(key.decrypt(None, data))
        res["plaintext"] = plaintext.hex()
        res.update(compressor_info(key, None, data))
        manifest, verified = key.unpack_and_verify_manifest(plaintext, force_tam_not_required=force)
        res["tam_verified"] = bool(verified)
        res["object"] = jsonable(manifest)
    elif kind == "archive":
        plaintext = bytes(key.decrypt(obj_id, data))
        res["plaintext"] = plaintext.hex()
        res.update(compressor_info(key, obj_id, data))
        if hasattr(key, "unpack_and_verify_archive"):
            archive, verified, _salt = key.unpack_and_verify_archive(plaintext, force_tam_not_required=force)
            res["tam_check"] = "borg"
        else:
            archive, verified = unpack_archive_fallback(key, plaintext, force)
            res["tam_check"] = "oracle-fallback"
        res["tam_verified"] = bool(verified)
        res["object"] = jsonable(archive)
    else:
        raise OracleError(f"unknown object kind {kind!r}")
    return res


def cmd_verify_objects(args):
    req = read_json(args.request)
    key = load_key(req)
    results = []
    for obj in req.get("objects", []):
        try:
            results.append(verify_one(key, obj))
        except Exception as e:  # noqa: BLE001 - every borg failure is a result, not a crash
            results.append({"id": str(obj.get("id", "")), "kind": obj.get("kind", "chunk"),
                            "error": describe_exc(e)})
    json.dump({"results": results}, sys.stdout)
    sys.stdout.write("\n")


def cmd_show_key(args):
    req = read_json(args.request)
    key = load_key(req)
    if isinstance(key, _key.PlaintextKey):
        out = {"key_type": key.TYPE, "class": type(key).__name__, "repository_id": None,
               "enc_key": None, "enc_hmac_key": None, "id_key": None,
               "chunk_seed": key.chunk_seed, "tam_required": bool(key.tam_required)}
    else:
        out = {"key_type": key.TYPE, "class": type(key).__name__,
               "repository_id": key.repository_id.hex(), "enc_key": key.enc_key.hex(),
               "enc_hmac_key": key.enc_hmac_key.hex(), "id_key": key.id_key.hex(),
               "chunk_seed": key.chunk_seed, "tam_required": bool(key.tam_required)}
    print(json.dumps(out))


# ---------------------------------------------------------------------------------------------
# make-key / encrypt-object

def cmd_make_key(args):
    cls = key_class_for_mode(args.mode)
    repo = FakeRepository(os.urandom(32))
    out = {"mode": args.mode, "key_type": cls.TYPE, "passphrase": args.passphrase,
           "repository_id": repo.id.hex()}
    if cls is _key.PlaintextKey:
        key = cls(repo)
        out.update(key_text="", key_file_text=None, enc_key=None, enc_hmac_key=None, id_key=None,
                   chunk_seed=key.chunk_seed, tam_required=bool(key.tam_required))
    else:
        key = cls(repo)
        key.repository_id = repo.id
        key.init_from_random_data()
        passphrase = _key.Passphrase(args.passphrase)
        key_text = key._save(passphrase)  # the text borg puts into repo config / key file
        key_file_text = None
        if cls.STORAGE == _key.KeyBlobStorage.KEYFILE:
            key_file_text = f"{cls.FILE_ID} {repo.id.hex()}\n{key_text}\n"
        out.update(key_text=key_text, key_file_text=key_file_text, enc_key=key.enc_key.hex(),
                   enc_hmac_key=key.enc_hmac_key.hex(), id_key=key.id_key.hex(),
                   chunk_seed=key.chunk_seed, tam_required=bool(key.tam_required))
        # sanity: borg must be able to read back what it just wrote
        check = cls(FakeRepository(repo.id, key_text))
        if not check._load(key_text, passphrase) or check.enc_key != key.enc_key:
            raise OracleError("borg could not load the key it just created")
    text = json.dumps(out)
    if args.out != "-":
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


def cmd_encrypt_object(args):
    req = read_json(args.request)
    key = load_key(req)
    spec = req.get("compression") or "lz4"
    try:
        key.compressor = _compress.CompressionSpec(spec).compressor
    except Exception as e:
        raise OracleError(f"bad compression spec {spec!r}: {describe_exc(e)}")
    # key.decompress stays borg's auto-detecting Compressor('lz4').decompress, as in borg itself
    if req.get("random_seed") is not None:
        random.seed(req["random_seed"])
    plaintext = unhex(req.get("plaintext"), "plaintext")
    iv = next_iv = None
    if hasattr(key, "cipher"):
        iv = int(req.get("iv") or 0)
        key.cipher.set_iv(iv)
    obj_id = key.id_hash(plaintext)
    data = key.encrypt(plaintext)
    if hasattr(key, "cipher"):
        next_iv = key.cipher.next_iv()
    # round trip through borg to be sure what we hand out is valid
    if bytes(key.decrypt(obj_id, data)) != plaintext:
        raise OracleError("borg could not decrypt the object it just encrypted")
    print(json.dumps({"id": obj_id.hex(), "data": bytes(data).hex(), "iv": iv, "next_iv": next_iv}))


# ---------------------------------------------------------------------------------------------
# chunker

def parse_chunker_params(s):
    parts = [p.strip() for p in s.split(",")]
    try:
        if parts[0] == "fixed":
            nums = [int(p) for p in parts[1:]]
            if not 1 <= len(nums) <= 2:
                raise ValueError
            return ("fixed",) + tuple(nums)
        if parts[0] == "buzhash":
            nums = [int(p) for p in parts[1:]]
        else:
            nums = [int(p) for p in parts]  # legacy 4-tuple
        if len(nums) != 4:
            raise ValueError
        return ("buzhash",) + tuple(nums)
    except ValueError:
        raise OracleError(f"bad --params {s!r}: want buzhash,MIN,MAX,MASK,WINDOW or fixed,BLOCK[,HEADER]")


def make_chunker(params, seed):
    if params[0] == "buzhash":
        return _chunker.get_chunker(*params, seed=seed, sparse=False)
    return _chunker.get_chunker(*params, sparse=False)  # fixed: no seed


def chunk_sizes(chunker, fd, fh=-1):
    for c in chunker.chunkify(fd, fh):
        yield c.meta["size"] if hasattr(c, "meta") else len(c)


def cmd_chunk(args):
    chunker = make_chunker(parse_chunker_params(args.params), args.seed)
    out = sys.stdout
    if args.file == "-":
        for size in chunk_sizes(chunker, sys.stdin.buffer):
            out.write(f"{size}\n")
    else:
        with open(args.file, "rb") as f:
            for size in chunk_sizes(chunker, f):
                out.write(f"{size}\n")


def cmd_bench_chunker(args):
    params = parse_chunker_params(args.params)
    if args.file == "-":
        raise OracleError("bench-chunker needs a real file")
    with open(args.file, "rb") as f:  # warm-up: pull the file into the page cache
        while f.read(1 << 24):
            pass
    chunker = make_chunker(params, args.seed)
    nbytes = nchunks = 0
    with open(args.file, "rb", buffering=0 if args.fh else -1) as f:
        fd, fh = (None, f.fileno()) if args.fh else (f, -1)
        t0, c0 = time.perf_counter(), time.process_time()
        for size in chunk_sizes(chunker, fd, fh):
            nbytes += size
            nchunks += 1
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"bytes": nbytes, "seconds": seconds, "cpu_seconds": cpu_seconds,
                      "chunks": nchunks}))


# ---------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        fail(f"usage: {message}", code=2)


def seed_arg(s):
    v = int(s, 0)
    if not -2**31 <= v < 2**32:
        raise argparse.ArgumentTypeError("seed must fit in 32 bits")
    if v >= 2**31:  # accept the unsigned spelling, hand borg the signed value it stores in keys
        v -= 2**32
    return v


def cmd_match_patterns(args):
    """Matches paths against patterns with borg's patterns.parse_pattern (see the docstring)."""
    from borg.patterns import parse_pattern, FnmatchPattern, ShellPattern, PathPrefixPattern
    request = json.loads(read_input(args.request))
    fallback = {"fm": FnmatchPattern, "sh": ShellPattern, "pp": PathPrefixPattern}[request["default"]]
    paths = [os.fsdecode(bytes.fromhex(h)) for h in request["paths_hex"]]
    results = []
    for text in request["patterns"]:
        try:
            pattern = parse_pattern(text, fallback)
        except Exception as e:  # noqa: BLE001 - the error class is the answer
            results.append({"error": type(e).__name__})
            continue
        results.append({"matches": [pattern.match(p) for p in paths]})
    print(json.dumps(results))


def cmd_placeholders(args):
    """Expands templates with borg's replace_placeholders and fixed values (see the docstring)."""
    from datetime import datetime, timezone
    from borg.helpers.parseformat import replace_placeholders, DatetimeWrapper
    request = json.loads(read_input(args.request))
    v = request["values"]
    now = datetime.fromtimestamp(v["now_micros"] // 1_000_000, timezone.utc).replace(
        microsecond=v["now_micros"] % 1_000_000)
    overrides = {
        "pid": v["pid"], "fqdn": v["fqdn"],
        "reverse-fqdn": ".".join(reversed(v["fqdn"].split("."))),
        "hostname": v["hostname"], "user": v["user"], "uuid4": v["uuid4"],
        "now": DatetimeWrapper(now.astimezone(None)), "utcnow": DatetimeWrapper(now),
        "unixtime": int(now.timestamp()),
    }
    results = []
    for template in request["templates"]:
        try:
            results.append({"ok": replace_placeholders(template, overrides)})
        except Exception as e:  # noqa: BLE001 - the error class is the answer
            results.append({"error": type(e).__name__})
    print(json.dumps(results))


def main(argv=None):
    p = _Parser(prog="borg_oracle.py", description=f"test oracle using borg {BORG_VERSION}")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("chunk")
    c.add_argument("--seed", type=seed_arg, default=0)
    c.add_argument("--params", required=True)
    c.add_argument("file")
    c.set_defaults(func=cmd_chunk)
    c = sub.add_parser("bench-chunker")
    c.add_argument("--seed", type=seed_arg, default=0)
    c.add_argument("--params", required=True)
    c.add_argument("--fh", action="store_true")
    c.add_argument("file")
    c.set_defaults(func=cmd_bench_chunker)
    c = sub.add_parser("verify-objects")
    c.add_argument("request")
    c.set_defaults(func=cmd_verify_objects)
    c = sub.add_parser("show-key")
    c.add_argument("request")
    c.set_defaults(func=cmd_show_key)
    c = sub.add_parser("make-key")
    c.add_argument("mode")
    c.add_argument("passphrase")
    c.add_argument("out")
    c.set_defaults(func=cmd_make_key)
    c = sub.add_parser("encrypt-object")
    c.add_argument("request")
    c.set_defaults(func=cmd_encrypt_object)
    c = sub.add_parser("match-patterns")
    c.add_argument("request")
    c.set_defaults(func=cmd_match_patterns)
    c = sub.add_parser("placeholders")
    c.add_argument("request")
    c.set_defaults(func=cmd_placeholders)
    c = sub.add_parser("version")
    c.set_defaults(func=lambda a: print(BORG_VERSION))
    args = p.parse_args(argv)
    try:
        args.func(args)
    except OracleError as e:
        fail(str(e))
    except BrokenPipeError:
        sys.exit(1)
    except Exception as e:  # noqa: BLE001
        fail(describe_exc(e))


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still clean up _BASE_DIR
    try:
        main()
    finally:
        shutil.rmtree(_BASE_DIR, ignore_errors=True)

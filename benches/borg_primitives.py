#!/usr/bin/env python3
"""borg 1.x's own primitives, timed on given sample files; the counterpart of
`mailcow-borg benchmark cpu --random R --text T --json` (same names, same data, one thread).

Run with the Python that has borg:  <python> benches/borg_primitives.py SECONDS RANDOM TEXT [SECTION]
Prints one JSON object per measurement: {"section", "name", "mb_per_s"}; with SECTION, only that
section's (chunker, id-hash, encrypt, decrypt, compress, decompress).
"""

import hashlib
import io
import json
import sys
import time

from borg.chunker import get_chunker
from borg.compress import Compressor
from borg.crypto.low_level import (AES256_CTR_BLAKE2b, AES256_CTR_HMAC_SHA256, blake2b_256,
                                   hmac_sha256)


def throughput(budget, nbytes, f):
    f()  # warm-up
    rounds = 0
    start = time.perf_counter()
    while rounds == 0 or time.perf_counter() - start < budget:
        f()
        rounds += 1
    return nbytes * rounds / (time.perf_counter() - start) / 1e6


ONLY = sys.argv[4] if len(sys.argv) > 4 else None


def wanted(section):
    return ONLY is None or ONLY == section


def emit(section, name, mbs):
    print(json.dumps({"section": section, "name": name, "mb_per_s": round(mbs, 1)}), flush=True)


def main():
    budget = float(sys.argv[1])
    random_data = open(sys.argv[2], "rb").read()
    text = open(sys.argv[3], "rb").read()
    if wanted("chunker"):
        chunkers(budget, random_data)
    key32, key128 = bytes(range(32)), bytes(range(64)) + bytes(64)
    if wanted("id-hash"):
        hashes(budget, random_data, key32, key128)
    envelopes(budget, random_data, key32, key128)
    compressors(budget, random_data, text)


def chunkers(budget, random_data):
    for spec in (("buzhash", 19, 23, 21, 4095), ("fixed", 4194304)):
        chunker = get_chunker(*spec, seed=0, sparse=False)

        def run():
            for _ in chunker.chunkify(io.BytesIO(random_data)):
                pass
        emit("chunker", ",".join(map(str, spec)), throughput(budget, len(random_data), run))


def hashes(budget, random_data, key32, key128):
    emit("id-hash", "sha256",
         throughput(budget, len(random_data), lambda: hashlib.sha256(random_data).digest()))
    emit("id-hash", "hmac-sha256",
         throughput(budget, len(random_data), lambda: hmac_sha256(key32, random_data)))
    emit("id-hash", "blake2b-256",
         throughput(budget, len(random_data), lambda: blake2b_256(key128, random_data)))


def envelopes(budget, random_data, key32, key128):
    for name, suite, mac_key in (("aes-256-ctr+hmac-sha256", AES256_CTR_HMAC_SHA256, key32),
                                 ("aes-256-ctr+blake2b-256", AES256_CTR_BLAKE2b, key128)):
        cipher = suite(mac_key=mac_key, enc_key=key32, header_len=1, aad_offset=1)
        if wanted("encrypt"):
            emit("encrypt", name, throughput(
                budget, len(random_data), lambda: cipher.encrypt(random_data, header=b"\x03", iv=1)))
        if wanted("decrypt"):
            envelope = cipher.encrypt(random_data, header=b"\x03", iv=1)
            emit("decrypt", name, throughput(budget, len(random_data), lambda: cipher.decrypt(envelope)))


def compressors(budget, random_data, text):
    def compressor(spec):
        name, _, level = spec.partition(",")
        if name == "auto":
            inner, _, inner_level = level.partition(",")
            return Compressor("auto", compressor=Compressor(inner, level=int(inner_level)).compressor)
        return Compressor(name, level=int(level)) if level else Compressor(name)

    for spec in ("lz4", "zstd,1", "zstd,3", "zlib,6", "auto,zstd,3") if wanted("compress") else ():
        c = compressor(spec)
        for kind, data in (("text", text), ("random", random_data)):
            emit("compress", f"{spec} {kind}", throughput(budget, len(data), lambda: c.compress(data)))
    for spec in ("lz4", "zstd,3", "zlib,6") if wanted("decompress") else ():
        c = compressor(spec)
        packed = c.compress(text)
        emit("decompress", f"{spec} text", throughput(budget, len(text), lambda: c.decompress(packed)))


if __name__ == "__main__":
    main()

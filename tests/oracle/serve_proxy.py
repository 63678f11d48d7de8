#!/usr/bin/env python3
"""A hostile repository host for tests: real `borg serve`, with some of its answers changed.

The client under test runs this instead of borg (as `--remote-path`, for a local repository):

    <python with msgpack> tests/oracle/serve_proxy.py serve [borg serve's arguments]

It starts the real `borg serve` ($MCB_PROXY_BORG) with the same arguments, passes the client's
requests to it unchanged, and passes its answers back — except where a rule in $MCB_PROXY_RULES
(JSON, a list) says otherwise. Each rule names the RPC method whose answers it changes:

    {"method": "get_free_nonce", "result": 18446744073709551000}
        answer with this result instead of the server's (also instead of an exception it
        raised: {"method": "commit_nonce_reservation", "result": null} makes a refused
        reservation look accepted).
    {"method": "get", "id": "<hex>", "result_file": "PATH"}
        answer `get` of that object id with PATH's bytes (as a raw), instead of the object.
    {"method": "get", "result_nils": N, "pieces": K}
        answer every `get` but the manifest's with an array of N nils, written K bytes at a time.
    {"method": "get", "stall": true}
        from the first answer to a `get` (but the manifest's) on, answer nothing more: a server
        that hangs but keeps the connection open.

Answers are re-packed as borg packs them (msgpack's old raw type). What the proxy did is
appended to $MCB_PROXY_LOG, if set, one line per changed answer, so a test can tell that its
rule was used. The proxy ends when the client closes its side, or when borg serve ends.
"""

import json
import os
import subprocess
import sys
import threading
import time

import msgpack

MANIFEST_ID = bytes(32)


def log(line):
    path = os.environ.get("MCB_PROXY_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def matching_rule(rules, method, args):
    for rule in rules:
        if rule["method"] != method:
            continue
        object_id = args.get(b"id") if isinstance(args, dict) else None
        if "id" in rule and object_id != bytes.fromhex(rule["id"]):
            continue
        if method == "get" and object_id == MANIFEST_ID and "id" not in rule:
            continue
        return rule
    return None


def main():
    rules = json.loads(os.environ.get("MCB_PROXY_RULES", "[]"))
    borg = subprocess.Popen(
        [os.environ["MCB_PROXY_BORG"]] + sys.argv[1:],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    methods = {}  # msgid -> (method, args) of requests not answered yet
    lock = threading.Lock()

    def requests():
        unpacker = msgpack.Unpacker(raw=True, max_buffer_size=1 << 30)
        stdin = sys.stdin.buffer.raw
        while True:
            data = stdin.read(1 << 16)
            if not data:
                break
            unpacker.feed(data)
            for request in unpacker:
                if isinstance(request, dict):
                    method = request.get(b"m", b"").decode()
                    with lock:
                        methods[request.get(b"i")] = (method, request.get(b"a", {}))
            borg.stdin.write(data)
            borg.stdin.flush()
        borg.stdin.close()

    threading.Thread(target=requests, daemon=True).start()

    out = sys.stdout.buffer
    unpacker = msgpack.Unpacker(raw=True, max_buffer_size=1 << 30)
    stalled = False
    while True:
        data = borg.stdout.read1(1 << 16)
        if not data:
            break
        unpacker.feed(data)
        for answer in unpacker:
            with lock:
                method, args = methods.pop(answer.get(b"i"), ("", {}))
            rule = matching_rule(rules, method, args)
            if stalled:
                continue
            if rule is None:
                out.write(msgpack.packb(answer, use_bin_type=False))
                out.flush()
                continue
            log(f"changed the answer to {method}")
            if rule.get("stall"):
                stalled = True
                continue
            if "result_nils" in rule:
                packed = msgpack.packb(
                    {b"i": answer[b"i"], b"r": [None] * rule["result_nils"]},
                    use_bin_type=False,
                )
                step = rule.get("pieces", 1 << 16)
                for at in range(0, len(packed), step):
                    out.write(packed[at : at + step])
                    out.flush()
                continue
            if "result_file" in rule:
                with open(rule["result_file"], "rb") as f:
                    result = f.read()
            else:
                result = rule["result"]
            answer = {b"i": answer[b"i"], b"r": result}
            out.write(msgpack.packb(answer, use_bin_type=False))
            out.flush()
    if stalled:
        # Hang with the connection open until the client gives up and closes it.
        while borg.poll() is None:
            time.sleep(0.1)
    sys.exit(borg.wait())


if __name__ == "__main__":
    main()

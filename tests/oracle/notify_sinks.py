#!/usr/bin/env python3
"""Real servers that receive notifications, for tests/mailcow_notify.rs.

    notify_sinks.py http PORT LOG [--cert PEM --key PEM]
        An HTTP/1.1 server on 127.0.0.1:PORT (HTTPS with --cert/--key) that answers every
        request 200 and appends it to LOG as one JSON line: method, path (with query),
        headers (lower-case names), body (text). A path containing /status-500 is answered 500.

    notify_sinks.py smtp PORT DIR [--cert PEM --key PEM --auth USER:PASSWORD]
        aiosmtpd on 127.0.0.1:PORT; every message taken is written to DIR as one JSON file:
        mail_from, rcpt_tos, data (text), subject and text (decoded by Python's email package),
        tls (whether STARTTLS was on), login (the user).
        With --cert/--key STARTTLS is required; with --auth AUTH PLAIN/LOGIN is required.

Each prints "ready" on stdout once it listens, and runs until killed. Standard library only,
but for aiosmtpd (in the venv beside $MCB_BORG14, see scripts/setup-oracles.sh).
"""

import argparse
import email
import email.policy
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def tls_context(args):
    if not args.cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    return context


def serve_http(args):
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_any(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            record = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
                "time": time.time(),
            }
            with lock, open(args.target, "a") as log:
                log.write(json.dumps(record) + "\n")
            status = 500 if "/status-500" in self.path else 200
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = do_POST = do_HEAD = handle_any

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    context = tls_context(args)
    if context:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


def serve_smtp(args):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    counter = [0]

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            counter[0] += 1
            parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
            record = {
                "subject": str(parsed["subject"]),
                "text": parsed.get_body(("plain",)).get_content(),
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", "replace"),
                "tls": session.ssl is not None,
                "login": session.auth_data.login.decode() if session.auth_data else None,
            }
            path = os.path.join(args.target, f"{time.time():.6f}-{counter[0]}.json")
            with open(path + ".tmp", "w") as out:
                json.dump(record, out)
            os.rename(path + ".tmp", path)
            return "250 OK"

    def authenticate(server, session, envelope, mechanism, auth_data):
        user, password = args.auth.split(":", 1)
        ok = auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok, auth_data=auth_data)

    options = {}
    context = tls_context(args)
    if context:
        options.update(tls_context=context, require_starttls=True)
    if args.auth:
        options.update(authenticator=authenticate, auth_required=True,
                       auth_require_tls=bool(context))
    controller = Controller(Handler(), hostname="127.0.0.1", port=args.port, **options)
    controller.start()
    print("ready", flush=True)
    threading.Event().wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["http", "smtp"])
    parser.add_argument("port", type=int)
    parser.add_argument("target")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--auth")
    args = parser.parse_args()
    (serve_http if args.kind == "http" else serve_smtp)(args)


if __name__ == "__main__":
    sys.exit(main())

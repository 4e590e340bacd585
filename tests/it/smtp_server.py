"""A real SMTP server for the tests (aiosmtpd), writing each mail it accepts
as JSON (envelope and decoded parts) into a directory.

Usage: smtp_server.py DIR [--tls starttls|implicit --cert PEM --key PEM]
                          [--auth USER:PASSWORD] [--fail-first N]
Prints "PORT <n>" once it listens; stops when its standard input closes.
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import socket
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, directory, fail_first):
        self.directory = directory
        self.fail_first = fail_first
        self.attempts = 0
        self.saved = 0

    async def handle_DATA(self, server, session, envelope):
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return "451 4.3.0 Try again later"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = {}
        for part in message.walk():
            if part.get_content_maintype() == "text":
                parts[part.get_content_subtype()] = part.get_content()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(message["From"]),
            "to": str(message["To"]),
            "subject": str(message["Subject"]),
            "text": parts.get("plain", ""),
            "html": parts.get("html", ""),
            "authenticated": session.authenticated,
            "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
            "attempt": self.attempts,
        }
        self.saved += 1
        path = os.path.join(self.directory, "%05d.json" % self.saved)
        with open(path + ".tmp", "w") as out:
            json.dump(record, out)
        os.rename(path + ".tmp", path)
        return "250 OK"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--tls", choices=["starttls", "implicit"])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--auth")
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)

    kwargs = {}
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
            return AuthResult(success=ok)

        # Implicit TLS is not seen by aiosmtpd as TLS (it checks STARTTLS only).
        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=args.tls == "starttls")
    if args.tls == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    elif args.tls == "implicit":
        kwargs.update(ssl_context=context)

    port = args.port or free_port()
    controller = Controller(Handler(args.directory, args.fail_first), hostname="127.0.0.1", port=port, **kwargs)
    if args.tls == "implicit":
        # aiosmtpd's readiness probe would wrap its client socket with the
        # server's context: probe as a TLS client instead.
        def probe():
            client = ssl.create_default_context()
            client.check_hostname = False
            client.verify_mode = ssl.CERT_NONE
            with socket.create_connection(("127.0.0.1", port), 1.0) as raw:
                with client.wrap_socket(raw) as tls:
                    tls.recv(1024)

        controller._trigger_server = probe
    controller.start()
    print("PORT %d" % port, flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()

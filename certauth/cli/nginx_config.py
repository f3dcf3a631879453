"""``certauth nginx-config``: print an nginx configuration for this deployment (see certauth.nginxconf)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from certauth import nginxconf
from certauth.conf import settings

from . import CommandError, Subcommand


class NginxConfig(Subcommand):
    name = "nginx-config"
    help = (
        "Print an nginx server config that terminates mutual TLS and forwards the client certificate "
        "to certauth (snippet for conf.d, or a complete nginx.conf with --standalone)."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--mode",
            choices=nginxconf.MODES,
            default="on",
            help="ssl_verify_client: 'on' (nginx verifies against --client-ca, the default), 'optional', "
            "or 'optional_no_ca' (certauth verifies the chain; set CERTAUTH_PROXY_VERIFIES_CERTIFICATE=false)",
        )
        parser.add_argument("--listen", default="127.0.0.1:8443", help="address:port (default 127.0.0.1:8443)")
        parser.add_argument("--server-name", default="localhost")
        parser.add_argument("--server-cert", required=True, type=Path, help="server certificate chain (PEM)")
        parser.add_argument("--server-key", required=True, type=Path, help="server private key (PEM)")
        parser.add_argument(
            "--client-ca", type=Path, help="CA bundle client certificates must chain to (not for optional_no_ca)"
        )
        parser.add_argument("--crl", type=Path, help="CRLs of every CA in --client-ca (PEM)")
        parser.add_argument(
            "--upstream",
            action="append",
            metavar="ADDRESS",
            help="gunicorn address, repeatable: 127.0.0.1:8000 or unix:/run/certauth/gunicorn.sock "
            "(default 127.0.0.1:8000)",
        )
        parser.add_argument("--verify-depth", type=int, default=3)
        parser.add_argument("--static-root", type=Path, help="serve this directory at /static/")
        parser.add_argument(
            "--standalone", action="store_true", help="a complete nginx.conf for `nginx -p PREFIX -c FILE`"
        )
        parser.add_argument("--prefix", type=Path, help="with --standalone: where pid, logs and temp files go")
        parser.add_argument(
            "--proxy-secret-file",
            type=Path,
            help="file holding the proxy secret nginx sends in X-Certauth-Proxy-Secret (the same file as "
            "CERTAUTH['PROXY_SECRET_FILE']; default: certauth's configured secret, if any). The output then "
            "contains the secret: write it to a private file",
        )
        parser.add_argument(
            "--check-files",
            action="store_true",
            help="fail if a certificate, key, CA or CRL file does not exist on this machine",
        )

    def handle(self, **options: Any) -> int:
        mode = options["mode"]
        if mode != "optional_no_ca" and options["client_ca"] is None:
            raise CommandError(f"--mode {mode} needs --client-ca (the CA bundle nginx verifies against)")
        if options["standalone"] and options["prefix"] is None:
            raise CommandError("--standalone needs --prefix")
        # nginx resolves relative paths against its own prefix, not the directory this ran in: write
        # absolute ones so the rendered file means what the operator typed.
        for option in ("server_cert", "server_key", "client_ca", "crl", "static_root", "prefix"):
            if options[option] is not None:
                options[option] = options[option].absolute()
        if options["check_files"]:
            for option in ("server_cert", "server_key", "client_ca", "crl"):
                path = options[option]
                if path is not None and not path.is_file():
                    raise CommandError(f"--{option.replace('_', '-')} {path}: no such file")
        proxy_secret = self._proxy_secret(options["proxy_secret_file"])
        try:
            text = nginxconf.render(
                mode=mode,
                listen=options["listen"],
                server_name=options["server_name"],
                server_cert=options["server_cert"],
                server_key=options["server_key"],
                client_ca=options["client_ca"],
                crl=options["crl"],
                upstream=options["upstream"] or ["127.0.0.1:8000"],
                verify_depth=options["verify_depth"],
                standalone=options["standalone"],
                prefix=options["prefix"],
                static_root=options["static_root"],
                proxy_secret=proxy_secret,
                # The header certauth reads it from: the two must agree.
                proxy_secret_header=str(settings.PROXY_SECRET_HEADER),
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(text)
        return 0

    @staticmethod
    def _proxy_secret(path: Path | None) -> str | None:
        if path is None:
            from certauth.authenticator import load_proxy_secret

            configured, problem = load_proxy_secret()
            if problem:
                raise CommandError(problem)
            return None if configured is None else configured.decode()
        try:
            secret = path.read_text().strip()
        except OSError as error:
            raise CommandError(f"--proxy-secret-file {path}: {error.strerror}") from error
        if not secret:
            raise CommandError(f"--proxy-secret-file {path} is empty")
        return secret

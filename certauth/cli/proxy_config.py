"""``certauth proxy-config --proxy nginx|haproxy|apache|caddy``: print the configuration of a TLS proxy that
terminates mutual TLS in front of certauth (``certauth.proxyconf``), and the CERTAUTH settings that match it.

The settings come after the configuration as comment lines ("#", which nginx, HAProxy, Apache and Caddyfiles
all read as comments), so ``> proxy.conf`` still gives a file the proxy loads; ``--settings stderr`` prints
them to stderr instead, ``--settings none`` not at all."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from certauth import proxyconf
from certauth.conf import settings

from . import CommandError, Subcommand

SETTINGS_PLACES = ("comment", "stderr", "none")


class ProxyConfig(Subcommand):
    name = "proxy-config"
    help = (
        "Print a TLS proxy configuration (nginx, HAProxy, Apache or Caddy) that terminates mutual TLS and "
        "forwards the client certificate to certauth, followed by the matching CERTAUTH settings as comments."
    )
    #: The proxy this subcommand always renders (None: the --proxy argument says).
    proxy: str | None = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        if self.proxy is None:
            parser.add_argument(
                "--proxy",
                required=True,
                choices=proxyconf.PROXIES,
                help="the proxy in front of certauth (certauth.proxyconf.<name> renders it)",
            )
            parser.add_argument(
                "--settings",
                choices=SETTINGS_PLACES,
                default="comment",
                help="where the matching CERTAUTH settings go: 'comment' (after the configuration, as '#' "
                "lines: the output stays a valid configuration file, the default), 'stderr', or 'none'",
            )
        parser.add_argument(
            "--mode",
            choices=proxyconf.MODES,
            default="on",
            help="'on' (the proxy requires a certificate and verifies it against --client-ca, the default), "
            "'optional' (verifies one when it comes), or 'optional_no_ca' (certauth verifies the chain; "
            "CERTAUTH_PROXY_VERIFIES_CERTIFICATE=false); not every proxy renders every mode",
        )
        parser.add_argument("--listen", default="127.0.0.1:8443", help="address:port (default 127.0.0.1:8443)")
        parser.add_argument("--server-name", default="localhost")
        parser.add_argument("--server-cert", required=True, type=Path, help="server certificate chain (PEM)")
        parser.add_argument(
            "--server-key",
            required=True,
            type=Path,
            help="server private key (PEM); HAProxy 2.6 wants it in the --server-cert file (give that file twice) "
            "or at <server-cert>.key",
        )
        parser.add_argument(
            "--client-ca", type=Path, help="CA bundle client certificates must chain to (not for optional_no_ca)"
        )
        parser.add_argument("--crl", type=Path, help="CRLs of EVERY CA in --client-ca (PEM)")
        parser.add_argument(
            "--upstream",
            action="append",
            metavar="ADDRESS",
            help="gunicorn address, repeatable: 127.0.0.1:8000 or unix:/run/certauth/gunicorn.sock "
            "(default 127.0.0.1:8000)",
        )
        parser.add_argument("--verify-depth", type=int, default=3)
        parser.add_argument("--static-root", type=Path, help="serve this directory at /static/ (where supported)")
        parser.add_argument(
            "--standalone",
            action="store_true",
            help="a complete configuration that runs in the foreground as the invoking user",
        )
        parser.add_argument("--prefix", type=Path, help="with --standalone: where pid, logs and temp files go")
        parser.add_argument(
            "--proxy-secret-file",
            type=Path,
            help="file holding the proxy secret the proxy sends in X-Certauth-Proxy-Secret (the same file as "
            "CERTAUTH['PROXY_SECRET_FILE']; default: certauth's configured secret, if any). The output then "
            "contains the secret: write it to a private file",
        )
        parser.add_argument(
            "--check-files",
            action="store_true",
            help="fail if a certificate, key, CA or CRL file does not exist on this machine",
        )

    def handle(self, **options: Any) -> int:
        name = self.proxy or options["proxy"]
        module = self._renderer(name)
        mode = options["mode"]
        if mode not in module.MODES:
            raise CommandError(
                f"{name} cannot render --mode {mode}: it renders {', '.join(module.MODES)} (docs/proxies.md says why)"
            )
        if mode != "optional_no_ca" and options["client_ca"] is None:
            raise CommandError(f"--mode {mode} needs --client-ca (the CA bundle {name} verifies against)")
        if options["standalone"] and options["prefix"] is None:
            raise CommandError("--standalone needs --prefix")
        # Proxies resolve relative paths against their own directories, not the one this ran in: write
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
            proxy_options = proxyconf.ProxyOptions(
                mode=mode,
                server_cert=options["server_cert"],
                server_key=options["server_key"],
                client_ca=options["client_ca"],
                crl=options["crl"],
                listen=options["listen"],
                server_name=options["server_name"],
                upstream=tuple(options["upstream"] or ["127.0.0.1:8000"]),
                verify_depth=options["verify_depth"],
                standalone=options["standalone"],
                prefix=options["prefix"],
                static_root=options["static_root"],
                proxy_secret=proxy_secret,
                # The header certauth reads it from: the two must agree.
                proxy_secret_header=str(settings.PROXY_SECRET_HEADER),
            )
            text = module.render(proxy_options)
            matching = module.certauth_settings(proxy_options)
        except ValueError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(text)
        place = options.get("settings", "none")
        if place != "none":
            block = settings_block(name, self._settings_for(matching, proxy_secret, options["proxy_secret_file"]))
            if place == "comment":
                self.stdout.write("\n" + block)
            else:
                self.stderr.write(block)
        return 0

    @staticmethod
    def _renderer(name: str) -> proxyconf.Renderer:
        try:
            return proxyconf.renderer(name)
        except ModuleNotFoundError as error:
            if error.name != f"{proxyconf.__name__}.{name}":
                raise
            raise CommandError(
                f"this certauth has no {name} renderer (certauth/proxyconf/{name}.py is missing): "
                f"upgrade certauth, or choose another --proxy"
            ) from error
        except ValueError as error:
            raise CommandError(str(error)) from error

    @staticmethod
    def _settings_for(matching: dict[str, Any], secret: str | None, secret_file: Path | None) -> dict[str, Any]:
        matching = dict(matching)
        if secret_file is not None:
            matching["PROXY_SECRET_FILE"] = str(secret_file.absolute())
        elif settings.PROXY_SECRET_FILE:
            matching["PROXY_SECRET_FILE"] = str(settings.PROXY_SECRET_FILE)
        elif secret is None:
            matching.pop("PROXY_SECRET_FILE", None)
        else:
            matching["PROXY_SECRET_FILE"] = "<a private file holding the secret in the configuration above>"  # noqa: S105
        return matching

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


def settings_block(proxy: str, matching: dict[str, Any]) -> str:
    """``matching`` as the lines of a ``CERTAUTH = {...}`` for settings.py, each commented out with "#"."""
    lines = [
        f"# --- The CERTAUTH settings that match this {proxy} configuration: merge them into settings.py",
        "# --- (the reference project also reads each from a CERTAUTH_<NAME> environment variable).",
        "# CERTAUTH = {",
        *(f"#     {key!r}: {value!r}," for key, value in matching.items()),
        "# }",
    ]
    return "\n".join(lines) + "\n"

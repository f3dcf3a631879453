"""Caddy: a Caddyfile that terminates mutual TLS in front of certauth (``certauth.proxyconf``).  Pure Python.

Facts the template relies on, checked against Caddy 2.6.2 (Debian 12's ``caddy``, Go's crypto/tls):

* Caddy forwards an unknown placeholder literally: ``header_up X-SSL-Client-Cert
  {http.request.tls.client.certificate_der_base64}`` sends the text ``{http.request.tls.client...}`` when
  the client presented no certificate (certauth saw a malformed certificate).  The certificate and verdict
  headers are therefore set by ``request_header @certauth_certificate ...`` only, under a matcher that
  requires the placeholder to hold base64: ``vars_regexp`` on it.  ``expression {...} != ""`` is true
  without a certificate too (the placeholder is CEL ``null``, not ``""``), and an expression that fails to
  evaluate answers 500 rather than "no match".
* Caddy passes client-sent headers through, ``X-Real-IP`` included (the audit recorded a forged address).
  Every header certauth reads is deleted first (``request_header -Name``, case-insensitive) and the ones
  Caddy vouches for are set afterwards; ``request_header -*_*`` deletes every header spelt with an
  underscore, as nginx's ``underscores_in_headers off`` does (Django folds ``X-SSL_Client_Cert`` into the
  same META key as ``X-SSL-Client-Cert``).  ``X-Forwarded-For`` is set to the peer's address only.
* Caddy (Go) verifies client certificates during the handshake: in ``on`` (``require_and_verify``) and
  ``optional`` (``verify_if_given``) a certificate that fails verification, and in ``on`` a missing one,
  ends the TLS connection with an alert.  No request exists then, so unlike nginx's ``error_page 495 496``
  nothing can be routed to certauth's JSON 401 (``REFUSED_PATH``), and those refusals are not in certauth's
  audit: Caddy's log has them.  A certificate that reaches a handler in these modes was verified, so the
  verdict header says ``SUCCESS`` exactly when the certificate header is set.  ``optional_no_ca``
  (``request``) verifies nothing and sends no verdict: certauth checks the chain.
* Caddy has no CRL support (nor ``ssl_verify_depth``): revocation is certauth's (its registry, and CRL/OCSP
  checking with ``REVOCATION_MODE``).  Rendering with a CRL is refused rather than silently ignored.
* With client authentication configured Caddy enforces that the TLS server name equals the Host header
  (421 otherwise); a client that connects to an IP address sends no server name.  The standalone
  configuration (one site, one TLS policy: nothing to confuse) turns that off so ``https://127.0.0.1``
  works; in your own Caddyfile, leave it on and give clients a host name.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from ..nginxconf import PROXY_SECRET_MIN_LENGTH
from . import (
    CERTIFICATE_HEADER,
    CLIENT_IP_HEADER,
    FOREIGN_CERTIFICATE_HEADERS,
    ORIGINAL_METHOD_HEADER,
    ORIGINAL_URI_HEADER,
    REFUSED_PATH,
    VERIFY_HEADER,
    ProxyOptions,
    common_settings,
)

MODES: tuple[str, ...] = ("on", "optional", "optional_no_ca")
BINARIES: tuple[str, ...] = ("caddy",)

#: ``tls { client_auth { mode ... } }`` per certauth mode.
CLIENT_AUTH_MODES = {"on": "require_and_verify", "optional": "verify_if_given", "optional_no_ca": "request"}
#: The placeholder holding the client certificate as base64 DER on one line (``FORWARDING_FORMAT`` base64_der).
CERTIFICATE_PLACEHOLDER = "{http.request.tls.client.certificate_der_base64}"
#: What the certificate placeholder holds when a certificate came: base64 and nothing else (an unreplaced
#: placeholder or an empty value does not match).
BASE64 = r"^[A-Za-z0-9+/]+=*$"
MATCHER = "@certauth_certificate"
#: TLS 1.2 suites: forward secrecy and AEAD only (Go's names; TLS 1.3 suites are always these).
CIPHERS = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)
#: The headers Caddy sets towards certauth besides the certificate, verdict and Host (client copies deleted first).
SET_HEADERS: tuple[str, ...] = (CLIENT_IP_HEADER, "X-Forwarded-For", "X-Forwarded-Proto")

# A Caddyfile token written unquoted: no spaces, quotes, braces (placeholders), comments or escapes.
_UNSAFE = re.compile(r"[\s;{}'\"\\#`$]")
_HEADER_NAME = re.compile(r"\A[A-Za-z0-9-]+\Z")
# A site address's host name (a wildcard label first at most), and an upstream's host:port.
_SERVER_NAME = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")
_HOST_PORT = re.compile(r"\A(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}\Z")
# secrets.token_urlsafe and base64 alphabets: nothing Caddy would read as a placeholder or escape.  \A...\Z,
# not ^...$: "$" also matches before a final newline, which would end the Caddyfile line.
_SECRET = re.compile(r"\A[A-Za-z0-9._~+/=-]+\Z")

_MODE_COMMENTS = {
    "on": (
        "# on (require_and_verify): a certificate is required and Caddy verifies it against the CA bundle\n"
        "# during the TLS handshake.  Without one, or with one that fails, the connection ends there (a TLS\n"
        "# alert, no HTTP answer, nothing in certauth's audit): Caddy cannot route it to certauth's JSON 401.\n"
        "# CERTAUTH_PROXY_VERIFIES_CERTIFICATE=true."
    ),
    "optional": (
        "# optional (verify_if_given): Caddy asks for a certificate and verifies one if it comes (a failing\n"
        "# one ends the TLS handshake: no HTTP answer, nothing in certauth's audit); requests without one\n"
        "# reach certauth, which refuses them where the view needs a certificate.\n"
        "# CERTAUTH_PROXY_VERIFIES_CERTIFICATE=true."
    ),
    "optional_no_ca": (
        "# optional_no_ca (request): Caddy asks for a certificate and checks nothing about it (not even its\n"
        "# dates); certauth verifies the chain against the trusted CAs in its admin.\n"
        "# CERTAUTH_PROXY_VERIFIES_CERTIFICATE=false."
    ),
}


def _token(value: object, what: str) -> str:
    text = str(value)
    if not text or _UNSAFE.search(text):
        raise ValueError(f"{what} {text!r} is empty or contains characters Caddy would misread")
    return text


def _path(value: Path | None, what: str) -> str:
    """An absolute path: a relative one is taken from the current directory, as the operator typed it (Caddy
    would resolve it against its own working directory, wherever it was started)."""
    _token(value, what)
    return _token(Path(str(value)).absolute(), what)


def _header(name: str, what: str) -> str:
    if not _HEADER_NAME.match(name):
        raise ValueError(f"{what} {name!r} must be a header name of letters, digits and dashes")
    return name


def _listen(listen: str) -> tuple[str | None, int]:
    """``host:port``, ``[v6]:port`` or ``port`` -> (IP literal or None, port)."""
    text = _token(listen, "listen")
    host: str | None
    if text.isdigit():
        host, port_text = None, text
    elif text.startswith("[") and "]:" in text:
        host, port_text = text[1 : text.index("]:")], text[text.index("]:") + 2 :]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        raise ValueError(f"listen {listen!r} must be PORT, IP:PORT or [IPv6]:PORT")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"listen {listen!r}: the port must be a number from 1 to 65535")
    if host is not None:
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            raise ValueError(f"listen {listen!r}: Caddy binds to an IP address, not {host!r}") from None
    return host, int(port_text)


def _upstream(address: str) -> str:
    """``unix:/path`` -> ``unix//path`` (Caddy's spelling); ``host:port`` unchanged."""
    text = _token(address, "upstream")
    if text.startswith("unix:"):
        return "unix/" + _path(Path(text[len("unix:") :]), "upstream socket")
    if not _HOST_PORT.match(text):
        raise ValueError(f"upstream {address!r} must be unix:/path or host:port")
    return text


def _secret(options: ProxyOptions) -> str | None:
    secret = options.proxy_secret
    if secret is None:
        return None
    if not _SECRET.match(secret):
        raise ValueError("proxy_secret may hold letters, digits and ._~+/=- only (e.g. secrets.token_urlsafe(32))")
    if len(secret) < PROXY_SECRET_MIN_LENGTH:
        raise ValueError(
            f"proxy_secret must be at least {PROXY_SECRET_MIN_LENGTH} characters (e.g. secrets.token_urlsafe(32))"
        )
    return secret


def deleted_headers(options: ProxyOptions) -> tuple[str, ...]:
    """The headers whose client-sent copies the configuration deletes (by name, any case).  Underscore
    spellings of any header are deleted as a whole (``-*_*``)."""
    names = (
        CERTIFICATE_HEADER,
        VERIFY_HEADER,
        *SET_HEADERS,
        "X-Forwarded-Host",
        ORIGINAL_URI_HEADER,
        ORIGINAL_METHOD_HEADER,
        options.proxy_secret_header,
        *FOREIGN_CERTIFICATE_HEADERS,
    )
    return tuple(dict.fromkeys(names))


def render(options: ProxyOptions) -> str:
    """The Caddyfile for ``options``: a site block to put in your Caddyfile, or with ``standalone`` a
    complete one (global options included) for ``caddy run --adapter caddyfile``.  Raises ``ValueError``
    on a value Caddy would misread, and on a CRL (Caddy cannot check one)."""
    mode = options.mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if options.crl is not None and mode != "optional_no_ca":
        raise ValueError(
            "Caddy has no CRL support: leave crl out and let certauth check revocation (its registry, and "
            "CERTAUTH REVOCATION_MODE for CRL/OCSP), or use a proxy that checks CRLs (nginx)"
        )
    host, port = _listen(options.listen)
    server_name = _token(options.server_name, "server_name")
    if not _SERVER_NAME.match(server_name):
        raise ValueError(f"server_name {server_name!r} must be a host name (the site address Caddy answers for)")
    secret = _secret(options)
    secret_header = _header(options.proxy_secret_header, "proxy_secret_header")
    upstreams = " ".join(_upstream(address) for address in options.upstream)
    cert = _path(options.server_cert, "server_cert")
    key = _path(options.server_key, "server_key")
    client_ca = None if mode == "optional_no_ca" or options.client_ca is None else _path(options.client_ca, "client_ca")
    if mode != "optional_no_ca" and client_ca is None:
        raise ValueError(f"mode {mode} needs client_ca: Caddy verifies the certificate against it")
    static_root = None if options.static_root is None else _path(options.static_root, "static_root")
    prefix = None if options.prefix is None else _path(options.prefix, "prefix").rstrip("/") or "/"

    lines: list[str] = []
    add = lines.append
    # In a standalone configuration the site answers every host name and IP address on the port (one site, one
    # TLS policy); in yours it is the API's host name.
    add(f"https://:{port} {{" if options.standalone else f"https://{server_name}:{port} {{")
    if host is not None:
        add(f"\tbind {host}")
        add("")
    add("\t# --- TLS ------------------------------------------------------------------------------------")
    add(f"\ttls {cert} {key} {{")
    add("\t\t# TLS 1.0 and 1.1 are deprecated (RFC 8996); forward secrecy and AEAD only in TLS 1.2.")
    add("\t\tprotocols tls1.2 tls1.3")
    add(f"\t\tciphers {' '.join(CIPHERS)}")
    add("\t\tclient_auth {")
    for line in _MODE_COMMENTS[mode].splitlines():
        add(f"\t\t\t{line}")
    add(f"\t\t\tmode {CLIENT_AUTH_MODES[mode]}")
    if client_ca is not None:
        add("\t\t\t# The CAs client certificates may chain to (root and intermediates, one PEM file).  Caddy has")
        add("\t\t\t# no CRL support and no depth limit: revocation is certauth's (registry, REVOCATION_MODE).")
        add(f"\t\t\ttrusted_ca_cert_file {client_ca}")
    add("\t\t}")
    add("\t}")
    add("")
    if options.standalone:
        add("\t# One JSON line per request (the client's own headers, Cookie and Authorization redacted).")
        add("\tlog {")
        add(f"\t\toutput file {prefix}/logs/access.log")
        add("\t}")
        add("")
    add("\t# No product name in responses, Caddy's or the upstream's.")
    add("\theader -Server")
    add("")
    add("\t# The client certificate, only when one came: the placeholder then holds base64 DER.  Without a")
    add("\t# certificate Caddy would forward the placeholder's own text.")
    add(f"\t{MATCHER} vars_regexp {CERTIFICATE_PLACEHOLDER} {BASE64}")
    if static_root is not None:
        add("")
        add("\t# The admin's CSS and JS, collected by `manage.py collectstatic`; public files.")
        add("\thandle_path /static/* {")
        add(f"\t\troot * {static_root}")
        add('\t\theader Cache-Control "max-age=3600"')
        add("\t\tfile_server")
        add("\t}")
    add("")
    add("\t# --- what certauth receives --------------------------------------------------------------------")
    add("\t# In the order written (a route block is not sorted by Caddy): deletions, then what Caddy vouches for.")
    add("\troute {")
    add("\t\t# certauth's refusal view is for nginx's error_page; Caddy refuses at the TLS handshake instead.")
    add(f"\t\trespond {REFUSED_PATH} 404")
    add("\t\t# Client-sent copies of every header certauth reads, and of other proxies' certificate headers")
    add("\t\t# (CERTIFICATE_HEADER pointed at one of them must not be fed by the client): deleted first.")
    add("\t\t# Any header spelt with an underscore goes too: Django reads X-SSL_Client_Cert as X-SSL-Client-Cert.")
    add("\t\trequest_header -*_*")
    for name in deleted_headers(options):
        add(f"\t\trequest_header -{_header(name, 'header')}")
    add(f"\t\trequest_header {MATCHER} {CERTIFICATE_HEADER} {CERTIFICATE_PLACEHOLDER}")
    if mode != "optional_no_ca":
        add("\t\t# Caddy verified it during the handshake (a failing one never gets here).")
        add(f"\t\trequest_header {MATCHER} {VERIFY_HEADER} SUCCESS")
    else:
        add(f"\t\t# No {VERIFY_HEADER}: Caddy verified nothing (CERTAUTH_PROXY_VERIFIES_CERTIFICATE=false).")
    add(f"\t\treverse_proxy {upstreams} {{")
    add("\t\t\t# The peer's address, never one the client claims; X-Forwarded-For overwritten, not appended.")
    add(f"\t\t\theader_up {CLIENT_IP_HEADER} {{remote_host}}")
    add("\t\t\t# (Caddy calls this one unnecessary: 2.6 already ignores the client's X-Forwarded-For.  It stays, so a")
    add("\t\t\t# trusted_proxies added here later cannot make Caddy pass on addresses a client claims.)")
    add("\t\t\theader_up X-Forwarded-For {remote_host}")
    add("\t\t\theader_up X-Forwarded-Proto https")
    add("\t\t\theader_up -X-Forwarded-Host")
    add("\t\t\t# The Host the client sent, with its port (also [IPv6]:port), so Django's absolute URLs and CSRF")
    add("\t\t\t# origin check match what the browser used.")
    add("\t\t\theader_up Host {http.request.hostport}")
    add("\t\t\theader_down -Server")
    if secret is None:
        add("\t\t\t# No proxy secret: certauth believes any process that reaches the upstream.  Render one")
        add("\t\t\t# (--proxy-secret-file) unless the upstream is a private unix socket.")
    else:
        add('\t\t\t# The proxy secret (CERTAUTH["PROXY_SECRET_FILE"] holds the same value): keep this file 0600.')
        add(f"\t\t\theader_up {secret_header} {secret}")
    if len(options.upstream) > 1:
        add("\t\t\t# A request whose upstream refuses the connection is retried on another for up to 5 s.")
        add("\t\t\tlb_policy round_robin")
        add("\t\t\tlb_try_duration 5s")
    add("\t\t}")
    add("\t}")
    add("}")
    site = "\n".join(lines) + "\n"
    if not options.standalone:
        return (
            f"# certauth behind Caddy 2.6+, client_auth {CLIENT_AUTH_MODES[mode]} (certauth mode {mode}).\n"
            "# Rendered by certauth.proxyconf.caddy; change its arguments rather than this block.  Put it in\n"
            "# your Caddyfile.\n"
            "# Clients must connect by host name: with client authentication Caddy requires the TLS server\n"
            "# name to equal the Host header (strict_sni_host).  Recommended global options (see the\n"
            "# standalone rendering): servers { protocols h1 h2  timeouts { ... } }.\n\n" + site
        )
    assert prefix is not None  # ProxyOptions requires one with standalone
    return _standalone(site, prefix=prefix, mode=mode)


def _standalone(site: str, *, prefix: str, mode: str) -> str:
    return f"""# certauth development/test Caddy, client_auth {CLIENT_AUTH_MODES[mode]} (certauth mode {mode}).
# Generated; do not edit.  Run in the foreground, unprivileged:
#   env HOME={prefix}/caddy XDG_DATA_HOME={prefix}/caddy/data XDG_CONFIG_HOME={prefix}/caddy/config \\
#       caddy run --config <this file> --adapter caddyfile --pidfile {prefix}/caddy.pid
{{
	# No admin endpoint (nothing listens on :2019), no ACME, no redirect listener on :80, no root CA in
	# the system trust store: this Caddy only serves the site below.
	admin off
	auto_https off
	skip_install_trust
	# Certificates and locks under the prefix, never in $HOME.
	storage file_system {prefix}/caddy/data
	# Logs to stderr (the stack keeps them in logs/caddy-stderr.log).
	log {{
		output stderr
		level INFO
	}}
	grace_period 5s
	servers {{
		# HTTP/1.1 and HTTP/2 only: no HTTP/3 listener on UDP.
		protocols h1 h2
		# One site, one TLS policy: nothing a server name could switch between, and clients connecting
		# to 127.0.0.1 send none.
		strict_sni_host insecure_off
		# Slow or idle connections are closed soon (as nginx's client_header_timeout and keepalive_timeout).
		timeouts {{
			read_header 10s
			read_body 10s
			write 60s
			idle 30s
		}}
		# The request line and headers a client may send; certauth's own headers come on top.
		max_header_size 32KB
	}}
}}

{site}"""


def certauth_settings(options: ProxyOptions) -> dict[str, Any]:
    settings = {**common_settings(options), "FORWARDING_FORMAT": "base64_der"}
    return settings


def environment(prefix: Path) -> dict[str, str]:
    """Where Caddy keeps state when run standalone: under ``prefix``, never the invoking user's home (Caddy
    writes ``$XDG_CONFIG_HOME/caddy/autosave.json`` and its PKI library ``$HOME/.step``)."""
    base = Path(prefix) / "caddy"
    return {"HOME": str(base), "XDG_DATA_HOME": str(base / "data"), "XDG_CONFIG_HOME": str(base / "config")}


def command(binary: str, config: Path, prefix: Path) -> list[str]:
    """``caddy run`` in the foreground with its state under ``prefix`` (``env`` sets ``environment``: the
    command stays one argv).  Caddy never switches users, so as root it runs as root, like the rest of the
    stack (loopback only)."""
    assignments = [f"{name}={value}" for name, value in environment(prefix).items()]
    return [
        "env",
        *assignments,
        binary,
        "run",
        "--config",
        str(config),
        "--adapter",
        "caddyfile",
        "--pidfile",
        str(Path(prefix) / "caddy.pid"),
    ]

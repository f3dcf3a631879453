"""Apache httpd 2.4 (mod_ssl, mod_headers, mod_proxy_http) terminating mutual TLS in front of certauth.  Pure
Python: no Django imports.

``render(options)`` returns either a ``<VirtualHost>`` for ``/etc/apache2/sites-available/``
(``standalone=False``; ``a2enmod ssl headers proxy proxy_http``) or a complete ``httpd.conf`` that runs in the
foreground with ``apache2 -f FILE -DFOREGROUND`` (``standalone=True``: ``scripts/stack.py``, the e2e tests).

Facts the template relies on, checked against Apache 2.4.71 (Debian 12, OpenSSL 3.0):

* ``RequestHeader set X "%{SSL_CLIENT_CERT}s"`` sends the literal ``(null)`` when the client presented no
  certificate, and turns the PEM's line breaks into spaces.  The ``expr=`` value form forwards raw line breaks
  instead, which gunicorn refuses with a bare 400.  So the certificate goes as
  ``expr=%{escape:%{SSL_CLIENT_CERT}}`` -- the PEM URL-escaped on one line, exactly nginx's
  ``$ssl_client_escaped_cert`` (``FORWARDING_FORMAT = "nginx_escaped"``) -- and only under the condition
  ``expr=-n %{SSL_CLIENT_CERT}``: no certificate, no header.  The intermediates the client sent go the same
  way in ``CHAIN_HEADER`` (``SSL_CLIENT_CERT_CHAIN_<n>``), so certauth needs only the roots trusted.
* mod_headers runs its directives in order and ``set`` with a false condition leaves a client-sent header of
  the same name in place, so every header is first ``unset``.  ``unset`` matches the name case-insensitively
  but literally: ``X_SSL_Client_Cert`` is another header to Apache, which passes underscores through, while
  Django (behind uvicorn, or gunicorn with ``header_map = dangerous``) files it under the same META key.  So
  every dash/underscore spelling of each header is unset (``spellings``).
* ``%{SSL_CLIENT_VERIFY}`` is ``NONE``, ``SUCCESS`` or ``FAILED:<OpenSSL reason>`` (and ``GENEROUS`` in some
  ``optional_no_ca`` cases): nginx's vocabulary, forwarded as is.  ``GENEROUS`` is not ``SUCCESS``, so certauth
  never counts it as verified (``reason_for_proxy_verdict``: proxy_verification_failed); in
  ``optional_no_ca`` certauth ignores the verdict and verifies the chain itself.
* mod_ssl refuses a certificate it cannot verify in the TLS handshake, before any request exists: an expired
  or unknown-CA certificate with ``optional`` (an expired one with ``optional_no_ca`` too), a missing one with
  ``require``.  Unlike nginx (495/496 + ``error_page``), nothing can route those to certauth's JSON 401; the
  client gets a TLS alert and the refusal is in Apache's error log, not in certauth's audit.  A request
  without a certificate in ``optional``/``optional_no_ca`` reaches certauth, which answers
  ``missing_certificate``.
* mod_proxy appends the client's ``X-Forwarded-For`` (``ProxyAddHeaders On``): turned off, and the header is
  set to the connection's address alone.  ``%{CONN_REMOTE_ADDR}`` is the TCP peer even if someone enables
  mod_remoteip later.
* Run as root, Apache switches its children to ``User`` and refuses ``User root``; without ``User`` it tries
  uid -1, logs AH02155 and (the hook's -1 reads as "declined") leaves them root.  The dev stack's state is in
  0700 directories owned by the invoking user, so as root ``command`` starts Apache as ``nobody`` with only
  ``CAP_DAC_OVERRIDE`` (``setpriv``): unprivileged workers that can still reach the unix socket.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
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
#: The certificate header's value and the condition under which it is set (see the module docstring).
CERTIFICATE_VALUE = "expr=%{escape:%{SSL_CLIENT_CERT}}"
CERTIFICATE_CONDITION = "expr=-n %{SSL_CLIENT_CERT}"
#: The intermediates the client sent (``SSL_CLIENT_CERT_CHAIN_<n>``, leaf excluded), escaped PEM blocks one after
#: another (``CERTAUTH["CHAIN_HEADER"]``): certauth builds the chain to a trusted root with them, so only the
#: roots need to be trusted in its admin.
CHAIN_HEADER = "X-SSL-Client-Chain"
CHAIN_CONDITION = "expr=-n %{SSL_CLIENT_CERT_CHAIN_0}"


def chain_value(depth: int) -> str:
    """The chain header's value: each of the first ``depth`` chain certificates, escaped (absent ones are empty)."""
    return "expr=" + "".join(f"%{{escape:%{{SSL_CLIENT_CERT_CHAIN_{index}}}}}" for index in range(depth))


#: The access log: who, what, and Apache's verdict on the certificate.
LOG_FORMAT = r'"%a %t \"%r\" %>s %b verify=\"%{SSL_CLIENT_VERIFY}x\" subject=\"%{SSL_CLIENT_S_DN}x\" rt=%Dus" certauth'
#: Debian/Ubuntu call the server ``apache2``, Red Hat and the upstream build ``httpd``.
BINARIES: tuple[str, ...] = ("apache2", "httpd")
#: What this configuration sends in CERTIFICATE_HEADER: ``escape(%{SSL_CLIENT_CERT})``, nginx's escaped PEM.
FORWARDING_FORMAT = "nginx_escaped"
#: Where Debian's apache2 keeps its modules (``ProxyOptions.extra["modules_dir"]`` for another layout, e.g.
#: ``/usr/lib64/httpd/modules``).
MODULES_DIR = "/usr/lib/apache2/modules"
#: ``SSLVerifyClient`` per certauth mode.
VERIFY_CLIENT = {"on": "require", "optional": "optional", "optional_no_ca": "optional_no_ca"}
#: Headers mod_proxy would set (``ProxyAddHeaders``, off here) that a client could otherwise send in its place.
PROXY_ADDED_HEADERS: tuple[str, ...] = ("X-Forwarded-Host", "X-Forwarded-Server")

# Paths, addresses and names are written inside double quotes or bare: nothing that ends a token, starts an
# Apache variable/format ("%", "$") or a comment.
_UNSAFE = re.compile(r"[\s\"'\\$%#<>|;`{}]|[^\x21-\x7e]")
# The proxy secret is a mod_headers format string ("%" starts a format): base64/urlsafe characters only.
_SECRET = re.compile(r"\A[A-Za-z0-9._~+/=-]+\Z")
_HEADER_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9-]*\Z")
_HOST_PORT = re.compile(r"\A(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}\Z")

_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)

_MODE_COMMENTS = {
    "on": (
        "# on (SSLVerifyClient require): a client without a certificate the CA bundle verifies does not\n"
        "# complete the TLS handshake, so nothing reaches Django without one (the admin and /healthz\n"
        "# included). Apache cannot hand those refusals to certauth: the client gets a TLS alert and the\n"
        "# reason is in Apache's error log, not in certauth's audit. certauth additionally requires\n"
        "# X-SSL-Client-Verify: SUCCESS (CERTAUTH_PROXY_VERIFIES_CERTIFICATE=true)."
    ),
    "optional": (
        "# optional: Apache asks for a certificate and verifies one if it comes (an unverifiable one\n"
        "# fails the TLS handshake: expired, unknown CA, revoked). Requests without one reach Django,\n"
        "# which refuses them where the view needs a certificate (missing_certificate)\n"
        "# (CERTAUTH_PROXY_VERIFIES_CERTIFICATE=true)."
    ),
    "optional_no_ca": (
        "# optional_no_ca: Apache asks for a certificate but does not check its issuer; certauth verifies\n"
        "# the chain against the trusted CAs in its admin (CERTAUTH_PROXY_VERIFIES_CERTIFICATE=false).\n"
        "# Apache still fails the handshake for expired and not-yet-valid certificates."
    ),
}


def spellings(name: str) -> list[str]:
    """Every spelling of header ``name`` with each ``-`` kept or made ``_`` (``X-Real-IP``: ``X-Real-IP``,
    ``X-Real_IP``, ``X_Real-IP``, ``X_Real_IP``): Django files them all under one META key, Apache under four
    names.  Case does not matter to either."""
    parts = name.split("-")
    result = []
    for separators in itertools.product("-_", repeat=len(parts) - 1):
        spelled = parts[0]
        for separator, part in zip(separators, parts[1:], strict=True):
            spelled += separator + part
        result.append(spelled)
    return result


def _token(value: object, what: str) -> str:
    text = str(value)
    if not text or _UNSAFE.search(text):
        raise ValueError(f"{what} {text!r} is empty or contains characters Apache would misread")
    return text


def _header_name(value: str, what: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"{what} {value!r} is not a header name (letters, digits and dashes)")
    return value


def _upstream_url(address: str) -> str:
    """``unix:/run/gunicorn.sock`` -> ``unix:/run/gunicorn.sock|http://localhost/``; ``127.0.0.1:8000`` ->
    ``http://127.0.0.1:8000/``."""
    if address.startswith("unix:"):
        path = _token(address[len("unix:") :], "upstream socket path")
        if not path.startswith("/"):
            raise ValueError(f"upstream socket path {path!r} must be absolute")
        return f"unix:{path}|http://localhost/"
    if not _HOST_PORT.match(address):
        raise ValueError(f"upstream {address!r} is neither unix:/absolute/path nor host:port")
    return f"http://{address}/"


def _listen(value: str) -> str:
    if not _HOST_PORT.match(value):
        raise ValueError(f"listen {value!r} must be address:port (e.g. 127.0.0.1:8443 or [::1]:8443)")
    return value


def _modules(balanced: bool, static: bool) -> list[str]:
    names = ["mpm_event", "authz_core", "headers", "proxy", "proxy_http", "socache_shmcb", "ssl", "reqtimeout"]
    if balanced:
        names += ["proxy_balancer", "slotmem_shm", "lbmethod_byrequests"]
    if static:
        names += ["alias", "mime"]
    return names


def _headers(options: ProxyOptions) -> str:
    """The mod_headers lines: every spelling of every header unset, then the proxy's own values set."""
    secret_header = _header_name(options.proxy_secret_header, "proxy_secret_header")
    own = [
        CERTIFICATE_HEADER, CHAIN_HEADER, VERIFY_HEADER, CLIENT_IP_HEADER, "X-Forwarded-For", "X-Forwarded-Proto",
        secret_header,
    ]  # fmt: skip
    # Once each: CHAIN_HEADER is this configuration's own and, for the other proxies, a foreign one.
    cleared = dict.fromkeys(
        [*own, ORIGINAL_URI_HEADER, ORIGINAL_METHOD_HEADER, *FOREIGN_CERTIFICATE_HEADERS, *PROXY_ADDED_HEADERS]
    )
    unset = [f"RequestHeader unset {spelling}" for name in cleared for spelling in spellings(name)]
    lines = [
        "# --- what Django receives ------------------------------------------------------------------",
        "# Whatever the client sent under these names, in any dash/underscore spelling, goes first:",
        "# mod_headers applies these lines in order, and a conditional `set` whose condition is false",
        "# would leave the client's copy in place. Other proxies' certificate headers are cleared too,",
        "# so CERTIFICATE_HEADER/CHAIN_HEADER pointed at one of them cannot be fed through this Apache.",
        *unset,
        "",
        "# The certificate as nginx's $ssl_client_escaped_cert (URL-escaped PEM, one line: gunicorn",
        '# refuses raw line breaks), and only when one was presented: "%{SSL_CLIENT_CERT}s" would send',
        '# the literal "(null)" on every request without one.',
        f'RequestHeader set {CERTIFICATE_HEADER} "{CERTIFICATE_VALUE}" "{CERTIFICATE_CONDITION}"',
        "# The intermediates the client sent (not the leaf), escaped PEM blocks one after another: certauth",
        "# builds the chain to a root trusted in its admin with them (CHAIN_HEADER).",
        f'RequestHeader set {CHAIN_HEADER} "{chain_value(options.verify_depth)}" "{CHAIN_CONDITION}"',
        "# NONE, SUCCESS or FAILED:<reason> (nginx's words; GENEROUS in optional_no_ca): certauth counts",
        "# only SUCCESS as verified.",
        f'RequestHeader set {VERIFY_HEADER} "expr=%{{SSL_CLIENT_VERIFY}}"',
        "# The TCP peer (never a header, even with mod_remoteip): overwritten, not appended.",
        f'RequestHeader set {CLIENT_IP_HEADER} "expr=%{{CONN_REMOTE_ADDR}}"',
        'RequestHeader set X-Forwarded-For "expr=%{CONN_REMOTE_ADDR}"',
        "RequestHeader set X-Forwarded-Proto https",
        "# With the port, so Django's absolute URLs and CSRF origin check match what the browser used:",
        "# SERVER_NAME and SERVER_PORT from the request, the port from the socket when the client named none.",
        "UseCanonicalName Off",
        "UseCanonicalPhysicalPort On",
        'RequestHeader set Host "expr=%{SERVER_NAME}:%{SERVER_PORT}"',
    ]
    if options.proxy_secret is None:
        lines += [
            "# No proxy secret: certauth believes any process that reaches gunicorn. Render one",
            "# (certauth proxy-config --proxy apache --proxy-secret-file) unless gunicorn is on a private",
            "# unix socket.",
        ]
    else:
        secret = options.proxy_secret
        if len(secret) < PROXY_SECRET_MIN_LENGTH:
            raise ValueError(
                f"proxy_secret must be at least {PROXY_SECRET_MIN_LENGTH} characters (e.g. secrets.token_urlsafe(32))"
            )
        if not _SECRET.match(secret):
            raise ValueError(
                "proxy_secret may hold only letters, digits and . _ ~ + / = - (a mod_headers value reads % and "
                "quotes): use secrets.token_urlsafe(32)"
            )
        lines += [
            '# The proxy secret (CERTAUTH["PROXY_SECRET_FILE"] holds the same value): without it certauth',
            "# believes no forwarded certificate, so another local process reaching gunicorn is not the",
            "# proxy. Keep this file private (0600) for that reason.",
            f'RequestHeader set {secret_header} "{secret}"',
        ]
    return "\n".join(lines)


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


def _virtual_host(options: ProxyOptions) -> str:
    mode = options.mode
    listen = _listen(options.listen)
    server_name = _token(options.server_name, "server_name")
    verification = [
        _MODE_COMMENTS[mode],
        f"SSLVerifyClient {VERIFY_CLIENT[mode]}",
        f"SSLVerifyDepth {options.verify_depth}",
    ]
    if not 1 <= options.verify_depth <= 10:
        raise ValueError("verify_depth must be between 1 and 10")
    if mode != "optional_no_ca":
        assert options.client_ca is not None  # ProxyOptions checks it
        verification += [
            "# The CAs whose client certificates Apache accepts (root and intermediates); their names are",
            "# also sent to the client so it can pick the right certificate.",
            f'SSLCACertificateFile "{_token(options.client_ca, "client_ca")}"',
        ]
        if options.crl is not None:
            verification += [
                "# Revoked certificates fail the handshake. `chain` checks every certificate of the chain, so",
                "# this file must hold a CRL from EVERY CA in it (root and intermediates): one missing and",
                "# intermediate-issued clients are refused at TLS (unable to get certificate CRL).",
                f'SSLCARevocationFile "{_token(options.crl, "crl")}"',
                "SSLCARevocationCheck chain",
            ]
    elif options.crl is not None:
        raise ValueError("crl needs a verifying mode (on or optional): optional_no_ca checks no chain")

    upstreams = [_upstream_url(address) for address in options.upstream]
    if len(upstreams) == 1:
        balancer = ""
        target = upstreams[0]
    else:
        members = "\n".join(f'    BalancerMember "{url}"' for url in upstreams)
        balancer = f'<Proxy "balancer://certauth">\n{members}\n</Proxy>\n\n'
        target = "balancer://certauth/"

    static = ""
    if options.static_root is not None:
        root = _token(options.static_root, "static_root").rstrip("/") or "/"
        static = (
            "\n# The admin's CSS and JS, collected by `manage.py collectstatic`; public files.\n"
            'ProxyPass "/static/" "!"\n'
            f'Alias "/static/" "{root}/"\n'
            f'<Directory "{root}">\n'
            "    Options None\n"
            "    AllowOverride None\n"
            "    Require all granted\n"
            "</Directory>\n"
        )

    verification_text = _indent("\n".join(verification), 4)
    return f"""{balancer}<VirtualHost {listen}>
    ServerName {server_name}

    # --- TLS -----------------------------------------------------------------------------------
    SSLEngine on
    SSLCertificateFile "{_token(options.server_cert, "server_cert")}"
    SSLCertificateKeyFile "{_token(options.server_key, "server_key")}"
    # TLS 1.0 and 1.1 are deprecated (RFC 8996).
    SSLProtocol -all +TLSv1.2 +TLSv1.3
    # Forward secrecy and AEAD only (TLS 1.2; TLS 1.3 suites are always these).
    SSLCipherSuite {_CIPHERS}
    SSLHonorCipherOrder off
    SSLCompression off
    # Apache never rotates ticket keys by itself; the session cache is enough.
    SSLSessionTickets off

    # --- client certificate --------------------------------------------------------------------
{verification_text}

{_indent(_headers(options), 4)}

    # --- to gunicorn ---------------------------------------------------------------------------
    # gunicorn must be reachable by Apache only: whoever reaches it directly can forge the certificate
    # header. Prefer a unix socket in a directory only Apache's user may enter (CERTAUTH
    # TRUSTED_PROXIES = ["unix:"]), and send the proxy secret above whichever way Apache connects.
    # Not appended: the X-Forwarded-For above is the whole header.
    ProxyAddHeaders Off
    # The Host set above (with the port), not the upstream's name.
    ProxyPreserveHost On
    ProxyRequests Off
    # certauth's refusal view is for proxies that route their own refusals there; Apache cannot (see
    # the client certificate section), and a client asking for it directly gets 403.
    <Location "{REFUSED_PATH}">
        Require all denied
    </Location>
{_indent(static, 4)}
    ProxyPass "/" "{target}"
</VirtualHost>
"""


def render(options: ProxyOptions) -> str:
    """The configuration for ``options``: a ``<VirtualHost>`` for Apache's own configuration, or with
    ``standalone`` a complete ``httpd.conf`` with its pid, logs, lock files and session cache under ``prefix``.
    Raises ``ValueError`` for a value Apache would misread (quotes, spaces, ``%``, ``$``...) or an
    inconsistent option."""
    if options.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {options.mode!r}")
    vhost = _virtual_host(options)
    if not options.standalone:
        modules = " ".join(
            m
            for m in _modules(len(options.upstream) > 1, options.static_root is not None)
            if m not in {"mpm_event", "authz_core", "socache_shmcb", "reqtimeout"}
        )
        return (
            f"# certauth behind Apache httpd, SSLVerifyClient {VERIFY_CLIENT[options.mode]}. Rendered by\n"
            f"# `certauth proxy-config --proxy apache`; change its arguments rather than this file.\n"
            f"# Needs: a2enmod {modules}; and `Listen {options.listen}` (ports.conf) unless it is there.\n"
            f"# Put it in /etc/apache2/sites-available/certauth.conf and a2ensite certauth.\n\n" + vhost
        )
    prefix = _token(str(options.prefix).rstrip("/") or "/", "prefix")
    modules_dir = _token(str(options.extra.get("modules_dir", MODULES_DIR)).rstrip("/"), "modules_dir")
    loads = "\n".join(
        f"<IfModule !mod_{name}.c>\n    LoadModule {name}_module {modules_dir}/mod_{name}.so\n</IfModule>"
        if name != "mpm_event"
        else f"LoadModule {name}_module {modules_dir}/mod_{name}.so"
        for name in _modules(len(options.upstream) > 1, options.static_root is not None)
    )
    mime = ""
    if options.static_root is not None:
        mime = (
            "\n# Self-contained (no system mime.types): what the admin's static files need.\n"
            "TypesConfig /dev/null\n"
            "AddType text/css .css\nAddType application/javascript .js .mjs\nAddType application/json .json .map\n"
            "AddType image/svg+xml .svg\nAddType image/png .png\nAddType image/gif .gif\n"
            "AddType image/jpeg .jpg .jpeg\nAddType image/x-icon .ico\nAddType font/woff .woff\n"
            "AddType font/woff2 .woff2\nAddType text/plain .txt\n"
        )
    verify_client = VERIFY_CLIENT[options.mode]
    return f"""# certauth development/test Apache httpd, SSLVerifyClient {verify_client}. Generated; do not edit.
# Run in the foreground: apache2 -f {prefix}/apache.conf -DFOREGROUND
# ({prefix}/logs must exist.) No User/Group: the workers run as the invoking user. Started as root,
# Apache refuses "User root" and without User keeps root workers after an AH02155 alert, so
# certauth.proxyconf.apache.command starts it as nobody with only CAP_DAC_OVERRIDE instead.
ServerRoot "{prefix}"
DefaultRuntimeDir "{prefix}"
PidFile "{prefix}/apache.pid"
# Lock files under the prefix, not /var/lock/apache2.
Mutex file:{prefix} default
ErrorLog "{prefix}/logs/error.log"
LogLevel warn

{loads}

ServerName {_token(options.server_name, "server_name")}
ServerTokens Prod
ServerSignature Off
TraceEnable Off
# Slow or idle connections are closed soon, so a flood of half-open ones expires instead of holding
# every worker.
Timeout 30
KeepAliveTimeout 30
RequestReadTimeout handshake=10 header=10-20,MinRate=500 body=10,MinRate=500
StartServers 1
ServerLimit 4
ThreadsPerChild 64
MaxRequestWorkers 256

LogFormat {LOG_FORMAT}
CustomLog "{prefix}/logs/access.log" certauth
SSLSessionCache "shmcb:{prefix}/ssl_scache(512000)"
SSLSessionCacheTimeout 600

# Nothing from the file system unless a <Directory> below says so.
<Directory />
    Options None
    AllowOverride None
    Require all denied
</Directory>
{mime}
Listen {_listen(options.listen)}

{vhost}"""


def certauth_settings(options: ProxyOptions) -> dict[str, Any]:
    return {**common_settings(options), "FORWARDING_FORMAT": FORWARDING_FORMAT, "CHAIN_HEADER": CHAIN_HEADER}


def command(binary: str, config: Path, prefix: Path) -> list[str]:
    """``apache2 -f CONFIG -DFOREGROUND``.  As root, Apache switches its children to ``User`` and refuses
    ``User root`` (without one they stay root after an AH02155 alert); the dev stack keeps its sockets, keys and
    logs in 0700 directories of the invoking user.  So as root it runs as ``nobody`` with only
    ``CAP_DAC_OVERRIDE`` (``setpriv``, util-linux): unprivileged workers that still reach those files.  Loopback
    only (``scripts.stack.Stack``)."""
    run = [binary, "-f", str(config), "-DFOREGROUND"]
    if os.geteuid() != 0:
        return run
    setpriv = shutil.which("setpriv")
    if setpriv is None:  # no util-linux: the workers stay root (after AH02155), as nginx's "user root;"
        return run
    return [
        setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
        "--inh-caps=+dac_override", "--ambient-caps=+dac_override", *run,
    ]  # fmt: skip


__all__ = [
    "BINARIES",
    "CHAIN_HEADER",
    "FORWARDING_FORMAT",
    "MODES",
    "MODULES_DIR",
    "PROXY_ADDED_HEADERS",
    "VERIFY_CLIENT",
    "certauth_settings",
    "chain_value",
    "command",
    "render",
    "spellings",
]

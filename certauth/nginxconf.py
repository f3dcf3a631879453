"""Render nginx configurations that terminate mutual TLS in front of certauth.  Pure Python: no Django
imports, so ``scripts/stack.py`` and the tests can use it without settings.

``render(...)`` returns either a ``server {}`` + ``upstream {}`` snippet for ``/etc/nginx/conf.d/``
(``standalone=False``) or a complete ``nginx.conf`` that runs unprivileged with
``nginx -p PREFIX -c FILE -e stderr`` (``standalone=True``, used by ``make run`` and the e2e tests).

Facts the templates rely on, checked against nginx 1.22 (Debian 12, OpenSSL 3.0):

* ``proxy_set_header`` replaces a client-sent header of the same name, even when the value is empty
  (then nothing is sent): a client cannot smuggle its own ``X-SSL-Client-Cert``.
* nginx refuses some certificates itself before any ``location`` runs: 495 for a verification error
  (expired, not yet valid, unknown CA, revoked by ``ssl_crl``) -- in ``optional_no_ca`` too, for
  expired and not-yet-valid ones -- and 496 when ``ssl_verify_client on`` and no certificate came.
  ``error_page 495 496 = @certauth_refused`` hands those requests to certauth's refusal view, so the
  client gets certauth's JSON 401 with a reason and the refusal lands in the audit.
* That location never forwards the refused request itself (it would reach the view it asked for, with
  its method and body: ``on`` would behave like ``optional``).  It sends ``GET /-/certauth/refused``
  without a body; the original method and URI travel in ``X-Certauth-Original-Method`` and
  ``X-Certauth-Original-URI`` for the audit.
* Inside that location ``$ssl_client_escaped_cert`` still holds the refused certificate and
  ``$ssl_client_verify`` says ``FAILED:<openssl reason>`` (``NONE`` for 496), so certauth can name the
  reason and record the thumbprint.
* A ``proxy_set_header`` in a location drops every server-level one there (nginx inheritance), so the
  refusal location, which needs ``Content-Length ""``, repeats all of them (``UPSTREAM_HEADERS``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from os import PathLike
from typing import Literal

Mode = Literal["on", "optional", "optional_no_ca"]
MODES: tuple[str, ...] = ("on", "optional", "optional_no_ca")

UPSTREAM_NAME = "certauth_django"
ERROR_LOCATION = "@certauth_refused"
#: Where the refusal location sends nginx's own certificate refusals (``certauth.urls``).
REFUSED_PATH = "/-/certauth/refused"
#: The header carrying the proxy secret (``CERTAUTH["PROXY_SECRET_HEADER"]``'s default): a random value only
#: nginx and Django know, so Django can tell this nginx from another local process (issue 15).
PROXY_SECRET_HEADER = "X-Certauth-Proxy-Secret"  # noqa: S105 - a header name

#: The ``limit_req`` rate per client address, unless ``render`` is told otherwise.
DEFAULT_REQUESTS_PER_SECOND = 500
#: What the committed examples carry instead of a secret: replace it, or render your own with
#: ``certauth nginx-config --proxy-secret-file``.  certauth, given its real secret, refuses requests carrying
#: this one (``untrusted_proxy``): a forgotten placeholder fails closed.
PROXY_SECRET_PLACEHOLDER = "REPLACE-with-the-content-of-CERTAUTH-PROXY_SECRET_FILE"  # noqa: S105
#: The shortest proxy secret certauth and this renderer accept: a shorter one a neighbour guesses (each attempt
#: costs them only an audit row).  ``secrets.token_urlsafe(32)`` gives 43 characters.
PROXY_SECRET_MIN_LENGTH = 16
#: gunicorn's largest request line (its ``MAX_REQUEST_LINE``): nginx's header buffers are no larger, so a
#: request line nginx accepts is one gunicorn accepts too.
CLIENT_HEADER_BUFFER = "8k"
#: ``--limit-request-field_size`` for gunicorn: above the escaped form of the largest certificate OpenSSL
#: accepts (its certificate list is at most 100 KiB: about 140 KiB escaped), so every certificate nginx
#: forwards reaches certauth, which refuses the oversized ones itself (malformed_certificate, audited)
#: instead of gunicorn's bare 431.  ``scripts/stack.py`` and docs/deployment.md use it.
GUNICORN_FIELD_SIZE = 256 * 1024
#: ``--limit-request-line`` for gunicorn (its maximum; see CLIENT_HEADER_BUFFER).
GUNICORN_REQUEST_LINE = 8190
#: ``--h11-max-incomplete-event-size`` for uvicorn: its one limit covers the request line and every header
#: together (it has no per-field one), so room for two certificate-sized fields at gunicorn's limit plus the
#: rest: whatever gunicorn accepts from nginx, uvicorn accepts too (``scripts/stack.py``, docs/deployment.md).
UVICORN_HEADER_BLOCK = 2 * GUNICORN_FIELD_SIZE + 64 * 1024
#: Headers carrying the client's request line to the refusal view (set on every request).
ORIGINAL_URI_HEADER = "X-Certauth-Original-URI"
ORIGINAL_METHOD_HEADER = "X-Certauth-Original-Method"

#: Certificate headers of other proxies' dialects (docs/proxies.md).  This nginx never sets them, so it
#: clears them: with CERTIFICATE_HEADER or CHAIN_HEADER pointed at one of them, a client could otherwise
#: send its own certificate through.  ``X-SSL-Client-Chain`` is the chain header of certauth's own Apache
#: configuration (``certauth.proxyconf.apache.CHAIN_HEADER``): an operator who moves to another proxy and
#: keeps that ``CHAIN_HEADER`` must not get a chain the client wrote (docs/SECURITY.md §45).
FOREIGN_CERTIFICATE_HEADERS: tuple[str, ...] = (
    "Client-Cert",
    "Client-Cert-Chain",
    "X-SSL-Client-Chain",
    "X-Forwarded-Client-Cert",
    "X-Forwarded-Tls-Client-Cert",
    "X-Amzn-Mtls-Clientcert",
    "X-Amzn-Mtls-Clientcert-Leaf",
    "X-ARR-ClientCert",
)

#: Every header nginx sets towards Django, as ``(comment lines, name, value)``.  ``proxy_set_header``
#: replaces a client-sent header of the same name and sends none for an empty value (``""``).
UPSTREAM_HEADERS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    ((), "X-SSL-Client-Cert", "$ssl_client_escaped_cert"),
    ((), "X-SSL-Client-Verify", "$ssl_client_verify"),
    (
        (
            "The request line as the client sent it, for the audit of a refusal (location",
            f"{ERROR_LOCATION} rewrites it).  Set on every request, so no client can send its own.",
        ),
        ORIGINAL_URI_HEADER,
        "$request_uri",
    ),
    ((), ORIGINAL_METHOD_HEADER, "$request_method"),
    (
        (
            "Other proxies' certificate headers: cleared, so CERTIFICATE_HEADER/CHAIN_HEADER pointed at",
            "one of them cannot be fed by the client through this nginx.",
        ),
        FOREIGN_CERTIFICATE_HEADERS[0],
        '""',
    ),
    *(((), name, '""') for name in FOREIGN_CERTIFICATE_HEADERS[1:]),
    ((), "X-Real-IP", "$remote_addr"),
    (
        ("Overwritten, not appended: nginx is the edge, anything the client claims is not evidence.",),
        "X-Forwarded-For",
        "$remote_addr",
    ),
    ((), "X-Forwarded-Proto", "https"),
    (
        ("With the port, so Django's absolute URLs and CSRF origin check match what the browser used.",),
        "Host",
        "$host:$server_port",
    ),
    (("Keepalive to the upstream (with proxy_http_version 1.1).",), "Connection", '""'),
)

StrPath = str | PathLike[str]

# Characters that would end or escape an nginx token; paths and addresses are written unquoted.
_UNSAFE = re.compile(r"[\s;{}'\"\\$#]")

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
        "# on: a certificate is required and nginx verifies it against ssl_client_certificate (and the\n"
        "# CRL). Django additionally requires X-SSL-Client-Verify: SUCCESS\n"
        "# (CERTAUTH_PROXY_VERIFIES_CERTIFICATE=true). Without a certificate nothing reaches a view, the\n"
        '# admin and /healthz included: use "optional" (or another server block) for password-only browsers.'
    ),
    "optional": (
        "# optional: nginx asks for a certificate and verifies one if it comes; requests without one\n"
        "# reach Django, which refuses them where the view needs a certificate\n"
        "# (CERTAUTH_PROXY_VERIFIES_CERTIFICATE=true)."
    ),
    "optional_no_ca": (
        "# optional_no_ca: nginx asks for a certificate but does not check its issuer; certauth verifies\n"
        "# the chain against the trusted CAs in its admin (CERTAUTH_PROXY_VERIFIES_CERTIFICATE=false).\n"
        "# nginx still refuses expired and not-yet-valid certificates itself (495, routed below)."
    ),
}


def _token(value: StrPath, what: str) -> str:
    text = str(value)
    if not text or _UNSAFE.search(text):
        raise ValueError(f"{what} {text!r} is empty or contains characters nginx would misread")
    return text


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


def render(
    *,
    mode: Mode,
    listen: str = "127.0.0.1:8443",
    server_name: str = "localhost",
    server_cert: StrPath,
    server_key: StrPath,
    client_ca: StrPath | None = None,
    crl: StrPath | None = None,
    upstream: Sequence[str],
    verify_depth: int = 3,
    standalone: bool = False,
    prefix: StrPath | None = None,
    static_root: StrPath | None = None,
    proxy_secret: str | None = None,
    proxy_secret_header: str = PROXY_SECRET_HEADER,
    requests_per_second: int = DEFAULT_REQUESTS_PER_SECOND,
    connections_per_address: int = 128,
) -> str:
    """Return an nginx configuration for ``mode`` (``on``, ``optional`` or ``optional_no_ca``).

    ``upstream`` lists gunicorn addresses (``"127.0.0.1:8000"``, ``"unix:/run/gunicorn.sock"``).
    ``client_ca`` is the CA bundle nginx verifies against; required unless ``optional_no_ca``.
    ``standalone`` needs ``prefix``, under which pid, logs and temp files go.  ``static_root`` adds
    ``location /static/``.  ``proxy_secret`` is sent to Django in ``proxy_secret_header`` on every request
    (``CERTAUTH["PROXY_SECRET"]``/``PROXY_SECRET_FILE`` must hold the same value); the result then contains it,
    so keep the file private.  ``requests_per_second`` and ``connections_per_address`` bound what one client
    address may use.  Raises ``ValueError`` on inconsistent arguments."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if client_ca is None and mode != "optional_no_ca":
        raise ValueError(f"mode {mode!r} needs client_ca: nginx verifies the certificate against it")
    if crl is not None and client_ca is None:
        raise ValueError("crl needs client_ca: nginx checks CRLs only while verifying a chain")
    if not upstream:
        raise ValueError("upstream needs at least one address")
    if standalone and prefix is None:
        raise ValueError("standalone needs prefix (pid, logs and temp files go there)")
    if not 1 <= verify_depth <= 10:
        raise ValueError("verify_depth must be between 1 and 10")
    if proxy_secret is not None and len(_token(proxy_secret, "proxy_secret")) < PROXY_SECRET_MIN_LENGTH:
        raise ValueError(
            f"proxy_secret must be at least {PROXY_SECRET_MIN_LENGTH} characters (e.g. secrets.token_urlsafe(32))"
        )
    if requests_per_second < 1 or connections_per_address < 1:
        raise ValueError("requests_per_second and connections_per_address must be at least 1")

    server = _server(
        mode=mode,
        listen=_token(listen, "listen"),
        server_name=_token(server_name, "server_name"),
        server_cert=_token(server_cert, "server_cert"),
        server_key=_token(server_key, "server_key"),
        client_ca=None if client_ca is None else _token(client_ca, "client_ca"),
        crl=None if crl is None else _token(crl, "crl"),
        upstream=[_token(address, "upstream") for address in upstream],
        verify_depth=verify_depth,
        static_root=None if static_root is None else _token(static_root, "static_root"),
        proxy_secret=proxy_secret,
        proxy_secret_header=_token(proxy_secret_header, "proxy_secret_header"),
        requests_per_second=requests_per_second,
        connections_per_address=connections_per_address,
    )
    if not standalone:
        header = (
            f"# certauth behind nginx, ssl_verify_client {mode}.  Rendered by\n"
            f"# `python manage.py certauth nginx-config`; change its arguments rather than this file.\n"
            f"# Include it in the http {{}} block (e.g. /etc/nginx/conf.d/certauth.conf).\n\n"
        )
        return header + server
    return _standalone(server, prefix=_token(str(prefix).rstrip("/") or "/", "prefix"), mode=mode)


def _server(
    *,
    mode: str,
    listen: str,
    server_name: str,
    server_cert: str,
    server_key: str,
    client_ca: str | None,
    crl: str | None,
    upstream: list[str],
    verify_depth: int,
    static_root: str | None,
    proxy_secret: str | None,
    proxy_secret_header: str,
    requests_per_second: int,
    connections_per_address: int,
) -> str:
    servers = "\n".join(f"    server {address};" for address in upstream)
    verification = [_MODE_COMMENTS[mode], f"ssl_verify_client {mode};"]
    if client_ca is not None:
        verification += [
            "# The CAs nginx accepts client certificates from (root and intermediates); their names are",
            "# also sent to the client so it can pick the right certificate.",
            f"ssl_client_certificate {client_ca};",
            "# leaf -> intermediate(s) -> root",
            f"ssl_verify_depth {verify_depth};",
        ]
    if crl is not None:
        verification += [
            "# Revoked certificates fail the handshake check (495, routed to certauth below).  OpenSSL",
            "# then wants a CRL for every CA in the chain: put the intermediates' CRLs in this file too.",
            f"ssl_crl {crl};",
        ]
    static = ""
    static_rescue = ""
    if static_root is not None:
        static = (
            "\n    # The admin's CSS and JS, collected by `manage.py collectstatic`; public files.\n"
            "    location /static/ {\n"
            "        # root + rewrite rather than alias: alias refuses URIs rewritten by the rescue below.\n"
            f"        root {static_root.rstrip('/') or '/'};\n"
            "        rewrite ^/static/(.*)$ /$1 break;\n"
            "        expires 1h;\n"
            "    }\n"
        )
        static_rescue = (
            "        # A browser without a client certificate gets 496 for every URI; static files need\n"
            "        # none, so send those back to location /static/ (the 495/496 check runs only once).\n"
            "        rewrite ^/static/ $uri last;\n"
        )
    verification_text = _indent("\n".join(verification), 4)
    return f"""# gunicorn must be reachable by nginx only: whoever reaches it directly can forge the certificate
# header.  Every local user reaches 127.0.0.1, so prefer a unix socket in a directory only nginx's user
# may enter (gunicorn --bind unix:PATH, CERTAUTH["TRUSTED_PROXIES"] = ["unix:"]), and send the proxy
# secret below (CERTAUTH["PROXY_SECRET_FILE"]) whichever way nginx connects.
upstream {UPSTREAM_NAME} {{
{servers}
    # Idle connections kept open to gunicorn, so a request does not pay a TCP connect (needs
    # proxy_http_version 1.1 and an empty Connection header below).
    keepalive 16;
}}

# Per client address: open connections and request rate (one address cannot take every worker
# connection or every gunicorn worker).  Excess requests get 429 from nginx.
limit_conn_zone $binary_remote_addr zone=certauth_conn:10m;
limit_req_zone $binary_remote_addr zone=certauth_req:10m rate={requests_per_second}r/s;

server {{
    listen {listen} ssl;
    server_name {server_name};
    server_tokens off;

    # --- TLS -----------------------------------------------------------------------------------
    ssl_certificate {server_cert};
    ssl_certificate_key {server_key};
    # TLS 1.0 and 1.1 are deprecated (RFC 8996).
    ssl_protocols TLSv1.2 TLSv1.3;
    # Forward secrecy and AEAD only (TLS 1.2; TLS 1.3 suites are always these).
    ssl_ciphers {_CIPHERS};
    ssl_prefer_server_ciphers off;
    # Resumed sessions skip the full handshake (and the certificate check).  1m (about 4000
    # sessions) overflowed during a short load test; 10m holds about 40000.
    ssl_session_cache shared:certauth_ssl:10m;
    ssl_session_timeout 10m;
    # nginx never rotates ticket keys by itself; session IDs in the shared cache are enough.
    ssl_session_tickets off;

    # --- client certificate --------------------------------------------------------------------
{verification_text}

    # --- headers from the client ---------------------------------------------------------------
    # Django folds "-" and "_" into the same META key (HTTP_X_SSL_CLIENT_CERT), so a client-sent
    # "X-SSL_Client_Cert" would slip past the proxy_set_header below (CVE-2015-0219).  These are
    # nginx's defaults, made explicit: headers with underscores are dropped.  nginx reads them from
    # the default server of this address:port, so keep them there too.
    underscores_in_headers off;
    ignore_invalid_headers on;
    # A request line must fit one buffer: {CLIENT_HEADER_BUFFER}, so gunicorn's limit (8190) never answers a bare
    # 414 for what nginx let through.  Client certificates do not come in headers (see below).
    large_client_header_buffers 4 {CLIENT_HEADER_BUFFER};

    # --- floods --------------------------------------------------------------------------------
    # Slow or idle connections are closed soon, so a flood of half-open ones expires instead of
    # holding every worker connection.  Before nginx 1.25.5 client_header_timeout also bounds the TLS
    # handshake (later versions: ssl_handshake_timeout, same value).
    client_header_timeout 10s;
    client_body_timeout 10s;
    send_timeout 10s;
    keepalive_timeout 30s;
    limit_conn certauth_conn {connections_per_address};
    limit_req zone=certauth_req burst={2 * requests_per_second} nodelay;
    limit_conn_status 429;
    limit_req_status 429;

    # --- what Django receives ------------------------------------------------------------------
    # proxy_set_header replaces any client-sent header of the same name (an empty value sends none),
    # so these cannot be forged through nginx.  A proxy_set_header inside a location silently drops
    # all of these there: only location {ERROR_LOCATION} has its own, and it repeats every one.
{_indent(_header_lines(comments=True), 4)}
{_indent(_secret_lines(proxy_secret, proxy_secret_header, comments=True), 4)}
    proxy_http_version 1.1;
    # Response headers from Django fit.  The forwarded certificate (2-3 KB escaped, at most about
    # 140 KB: OpenSSL's 100 KiB certificate-list limit) goes upstream whatever its size; gunicorn must
    # accept it (--limit-request-field_size {GUNICORN_FIELD_SIZE}), certauth refuses oversized ones itself.
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;

    # nginx's own certificate refusals (495 verification failed, 496 none with "on") would be a
    # bare HTML 400.  Hand them to certauth's refusal view instead (location {ERROR_LOCATION}).
    error_page 495 496 = {ERROR_LOCATION};

    location / {{
        proxy_pass http://{UPSTREAM_NAME};
    }}

    # Health check for load balancers and the test-suite; needs no certificate in "optional" and
    # "optional_no_ca".  With "on" nothing reaches Django without one, this included: probe with a
    # client certificate, or from a separate listener.
    location = /healthz {{
        proxy_pass http://{UPSTREAM_NAME};
    }}

    # Only nginx's refusals below go there; a client asking for it directly gets a plain 404.
    location = {REFUSED_PATH} {{
        return 404;
    }}
{static}
    # Never the refused request itself: its view would run (with its method and body), and "on"
    # would behave like "optional".  certauth's refusal view gets GET {REFUSED_PATH}
    # without a body and answers 401 with the reason; it audits the original method and URI.
    # $ssl_client_escaped_cert is still the refused certificate (empty for 496, so certauth sees none
    # and answers missing_certificate) and $ssl_client_verify is "FAILED:<reason>" ("NONE" for 496).
    location {ERROR_LOCATION} {{
{static_rescue}        # "?": without the client's query string.  "break": proxy_pass sends the rewritten URI.
        rewrite ^ {REFUSED_PATH}? break;
        proxy_method GET;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        # A proxy_set_header here drops the server-level ones, so all of them again:
{_indent(_header_lines(comments=False), 8)}
{_indent(_secret_lines(proxy_secret, proxy_secret_header, comments=False), 8)}
        proxy_pass http://{UPSTREAM_NAME};
    }}
}}
"""


def _header_lines(*, comments: bool) -> str:
    lines = []
    for comment, name, value in UPSTREAM_HEADERS:
        if comments:
            lines += [f"# {line}" for line in comment]
        lines.append(f"proxy_set_header {name} {value};")
    return "\n".join(lines)


def _secret_lines(proxy_secret: str | None, header: str, *, comments: bool) -> str:
    if proxy_secret is None:
        if not comments:
            return "# (no proxy secret: only the socket's permissions tell nginx from other local processes)"
        return (
            "# No proxy secret: certauth believes any process that reaches gunicorn.  Render one\n"
            "# (certauth nginx-config --proxy-secret-file) unless gunicorn is on a private unix socket."
        )
    line = f"proxy_set_header {header} {proxy_secret};"
    if not comments:
        return line
    return (
        '# The proxy secret (CERTAUTH["PROXY_SECRET_FILE"] holds the same value): without it certauth\n'
        "# believes no forwarded certificate, so another local process reaching gunicorn is not the\n"
        "# proxy.  Keep this file private (0600) for that reason.\n" + line
    )


def _standalone(server: str, *, prefix: str, mode: str) -> str:
    return f"""# certauth development/test nginx, ssl_verify_client {mode}.  Generated; do not edit.
# Run unprivileged: nginx -p {prefix} -c {prefix}/nginx.conf -e stderr
# ({prefix}/logs must exist; the temp directories are created by nginx.)

# In the foreground, so the process that started it owns it and can stop it.
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;

# A flood of idle connections must not use up the connections a legitimate client needs (1024
# went in 2 s); the timeouts above close them, these bound how many are held meanwhile.
worker_rlimit_nofile 16384;
events {{
    worker_connections 8192;
}}

http {{
    log_format certauth '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
                        'verify="$ssl_client_verify" subject="$ssl_client_s_dn" '
                        'rt=$request_time urt=$upstream_response_time';
    access_log {prefix}/logs/access.log certauth;

    # Everything nginx writes stays under the prefix, so no root and no /var/lib/nginx needed.
    client_body_temp_path {prefix}/client_body_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;

    # Self-contained (no include of the system mime.types): what the admin's static files need.
    types {{
        text/html html;
        text/css css;
        text/plain txt;
        application/javascript js mjs;
        application/json json map;
        image/svg+xml svg;
        image/png png;
        image/gif gif;
        image/jpeg jpg jpeg;
        image/x-icon ico;
        font/woff woff;
        font/woff2 woff2;
    }}
    default_type application/octet-stream;
    sendfile on;

{_indent(server, 4)}
}}
"""


__all__ = [
    "FOREIGN_CERTIFICATE_HEADERS",
    "GUNICORN_FIELD_SIZE",
    "GUNICORN_REQUEST_LINE",
    "MODES",
    "ORIGINAL_METHOD_HEADER",
    "ORIGINAL_URI_HEADER",
    "PROXY_SECRET_HEADER",
    "PROXY_SECRET_MIN_LENGTH",
    "PROXY_SECRET_PLACEHOLDER",
    "REFUSED_PATH",
    "UPSTREAM_HEADERS",
    "UPSTREAM_NAME",
    "UVICORN_HEADER_BLOCK",
    "Mode",
    "render",
]

"""HAProxy (2.6, Debian 12's ``haproxy``) terminating mutual TLS in front of certauth.  Pure Python.

``render(options)`` returns a ``frontend`` + ``backend`` pair to add to haproxy.cfg (``standalone=False``;
they set their own ``mode`` and timeouts, so the operator's ``defaults`` cannot weaken them), or a complete
configuration that runs in the foreground as the invoking user (``haproxy -db -f FILE``; ``standalone=True``,
the dev stack and the end-to-end tests).

Facts the configuration relies on, checked against HAProxy 2.6.12 with OpenSSL 3.0 (tests/test_proxyconf_haproxy.py
runs the real program, tests/e2e/test_haproxy.py the whole stack):

* ``verify required`` / ``verify optional`` abort the handshake on ANY verification error unless the error is
  listed in ``crt-ignore-err`` (leaf) / ``ca-ignore-err`` (issuers).  With ``all`` in both, a bad certificate
  completes the handshake and HAProxy's HTTP rules see it: ``ssl_c_verify`` is OpenSSL's verify result (also
  on a resumed session), ``ssl_c_err`` / ``ssl_c_ca_err`` the first leaf / issuer error.  The rules below call a
  certificate verified only when all three are 0, write OpenSSL's own words for the error into the verdict
  header (``FAILED:certificate has expired``: what nginx's ``$ssl_client_verify`` says, so
  ``certauth.proxies.reason_for_proxy_verdict`` names the reason) and, in ``on``/``optional``, send the request
  to certauth's refusal view instead of where it was going (nginx's ``error_page 495``).  certauth checks the
  verdict again itself (``PROXY_VERIFIES_CERTIFICATE``): a rule that let a failure through would still be
  refused.
* ``verify required`` (mode ``on``) refuses a handshake without a certificate; that refusal stays a TLS alert
  (HAProxy has no HTTP request to route).  ``optional_no_ca`` is ``verify optional`` with every error ignored
  and no routing: certauth verifies the chain (``PROXY_VERIFIES_CERTIFICATE = False``).  HAProxy will not ask
  for a certificate without a ``ca-file``; without ``client_ca`` the server's own certificate file stands in
  (it decides nothing, and ``no-ca-names`` keeps its names from the CertificateRequest).
* ``crt`` must name ONE file holding the certificate chain and the key (or the key at ``<crt>.key``): HAProxy
  2.6 has no separate key directive.
* HAProxy keeps header names lower-case; ``del-header -m reg`` with ``(?i)`` and ``[-_]`` removes every
  client-sent spelling of a header this configuration sets (``X_SSL_Client_Cert`` too: under ASGI, Django maps
  it to the same META key as ``X-SSL-Client-Cert``, and gunicorn's ``header_map`` is configurable).
* ``set-header`` replaces; a header is only set when its value exists (``%[ssl_c_der,base64]`` only with
  ``ssl_c_used``), so no empty or placeholder value is ever forwarded.
* HAProxy cannot drop a request body: the refused request goes to the refusal view as ``GET`` with its body,
  which that view never reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..nginxconf import CLIENT_HEADER_BUFFER, PROXY_SECRET_MIN_LENGTH
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
BINARIES: tuple[str, ...] = ("haproxy",)
#: How certauth reads the certificate this configuration forwards (``certauth.forwarding``).
FORWARDING_FORMAT = "base64_der"
FRONTEND_NAME = "certauth_https"
BACKEND_NAME = "certauth_django"
#: HAProxy's ``crt`` wants the key in the certificate file (or at ``<crt>.key``); ``scripts/stack.py`` writes one
#: file holding both when a renderer says so.
COMBINED_CERTIFICATE_AND_KEY = True

#: ``ssl_c_verify`` values (OpenSSL's X509_V_ERR_*) -> the words OpenSSL (and so nginx) uses for them
#: (``X509_verify_cert_error_string``, OpenSSL 3.0; tests compare them with the system's libcrypto).  Any other
#: code is sent as "FAILED:verify error <n> ...", which certauth refuses as proxy_verification_failed.
VERIFY_ERRORS: dict[int, str] = {
    2: "unable to get issuer certificate",
    3: "unable to get certificate CRL",
    4: "unable to decrypt certificate's signature",
    5: "unable to decrypt CRL's signature",
    6: "unable to decode issuer public key",
    7: "certificate signature failure",
    8: "CRL signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    11: "CRL is not yet valid",
    12: "CRL has expired",
    13: "format error in certificate's notBefore field",
    14: "format error in certificate's notAfter field",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    22: "certificate chain too long",
    23: "certificate revoked",
    24: "issuer certificate doesn't have a public key",
    25: "path length constraint exceeded",
    26: "unsuitable certificate purpose",
    27: "certificate not trusted",
    28: "certificate rejected",
    33: "unable to get CRL issuer certificate",
    54: "CRL path validation error",
    79: "invalid CA certificate",
}

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

# Characters HAProxy's configuration parser would read as something else (quotes, escapes, comments,
# environment variables, log-format samples, argument separators); paths and names are written unquoted.
_UNSAFE = re.compile(r"[\s'\"\\#$%{}();,]")
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}")
#: What a proxy secret may contain: printable ASCII without quotes, backslash, "%" (log-format) or "$".
_SECRET = re.compile(r"[!&(-\[\]-~]+")


def _token(value: object, what: str) -> str:
    text = str(value)
    if not text or _UNSAFE.search(text):
        raise ValueError(f"{what} {text!r} is empty or contains characters HAProxy would misread")
    return text


def _address(value: str, what: str) -> str:
    """``host:port`` (``[v6]:port``) as HAProxy writes it."""
    if not _HOST_PORT.fullmatch(value) or not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        raise ValueError(f"{what} {value!r} is not host:port (or [IPv6]:port)")
    return value


def _upstream(value: str) -> str:
    """``unix:/run/x.sock`` -> ``/run/x.sock`` (HAProxy reads an absolute path as a unix socket); else
    ``host:port``."""
    if value.startswith("unix:"):
        path = _token(value[len("unix:") :], "upstream unix socket")
        if not path.startswith("/"):
            raise ValueError(f"upstream {value!r}: a unix socket needs an absolute path")
        return path
    return _address(_token(value, "upstream"), "upstream")


def _header(name: str, what: str) -> str:
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a header name (letters, digits and dashes)")
    return name


def key_file_for(server_cert: Path, server_key: Path) -> str | None:
    """How HAProxy finds ``server_key``: None when it is the certificate file itself or ``<cert>.key``
    (HAProxy's own lookup); else ``ValueError`` saying how to combine them."""
    if server_key == server_cert or str(server_key) == f"{server_cert}.key":
        return None
    raise ValueError(
        f"HAProxy 2.6 reads the server key from the certificate file or from {server_cert}.key, not from "
        f"{server_key}: concatenate them (cat {server_cert} {server_key} > combined.pem, mode 0600) and give "
        "that file as both certificate and key"
    )


def render(options: ProxyOptions) -> str:
    """The configuration for ``options``; ``ValueError`` on a value HAProxy would misread or cannot use."""
    mode = options.mode
    if mode not in MODES:
        raise ValueError(f"HAProxy renders modes {', '.join(MODES)}, not {mode!r}")
    if not 1 <= options.verify_depth <= 10:
        raise ValueError("verify_depth must be between 1 and 10")
    if options.crl is not None and (mode == "optional_no_ca" or options.client_ca is None):
        raise ValueError(
            "crl needs client_ca and mode on/optional: in optional_no_ca HAProxy ignores every verification "
            "error (certauth checks revocation itself)"
        )
    if options.requests_per_second < 1:
        raise ValueError("requests_per_second must be at least 1")
    secret = options.proxy_secret
    if secret is not None:
        if not _SECRET.fullmatch(secret):
            raise ValueError(
                "proxy_secret may hold printable ASCII except spaces, quotes, backslash, '%' and '$' "
                "(e.g. secrets.token_urlsafe(32))"
            )
        if len(secret) < PROXY_SECRET_MIN_LENGTH:
            raise ValueError(
                f"proxy_secret must be at least {PROXY_SECRET_MIN_LENGTH} characters (e.g. secrets.token_urlsafe(32))"
            )
    server_cert = _token(options.server_cert, "server_cert")
    key_file_for(Path(server_cert), Path(_token(options.server_key, "server_key")))
    frontend_backend = _frontend(options, server_cert) + "\n" + _backend(options)
    if not options.standalone:
        return (
            f"# certauth behind HAProxy 2.6, client certificates: {mode}.  Rendered by\n"
            "# `python manage.py certauth proxy-config --proxy haproxy`; change its arguments rather than this file.\n"
            "# Add it to haproxy.cfg (or a file of `haproxy -f DIRECTORY`).  Both sections set their own mode and\n"
            "# timeouts: the defaults section of your haproxy.cfg does not change what they do.\n\n" + frontend_backend
        )
    prefix = _token(str(options.prefix).rstrip("/") or "/", "prefix")
    return _standalone(frontend_backend, prefix=prefix, mode=mode)


_MODE_COMMENTS = {
    "on": (
        "# on: a certificate is required (verify required: no certificate, no handshake) and HAProxy verifies it",
        "# against ca-file (and the CRLs). A certificate that fails verification still completes the handshake",
        "# (crt-ignore-err/ca-ignore-err all) so that the rules below can send it to certauth's refusal view",
        "# with the real reason (JSON 401, audited). certauth additionally requires X-SSL-Client-Verify: SUCCESS",
        "# (CERTAUTH_PROXY_VERIFIES_CERTIFICATE=true).",
    ),
    "optional": (
        "# optional: HAProxy asks for a certificate and verifies one if it comes; requests without one reach",
        "# Django (verdict NONE), which refuses them where the view needs a certificate. A certificate that",
        "# fails verification completes the handshake (crt-ignore-err/ca-ignore-err all) so that the rules",
        "# below send it to certauth's refusal view with the real reason (JSON 401, audited)",
        "# (CERTAUTH_PROXY_VERIFIES_CERTIFICATE=true).",
    ),
    "optional_no_ca": (
        "# optional_no_ca: HAProxy asks for a certificate and forwards any one (every verification error",
        "# ignored); certauth verifies the chain against the trusted CAs in its admin, validity and",
        "# revocation included (CERTAUTH_PROXY_VERIFIES_CERTIFICATE=false).",
    ),
}


def _protected_headers(options: ProxyOptions) -> list[str]:
    """Every header a client must not send through: the ones set below and the other dialects'."""
    return [
        CERTIFICATE_HEADER,
        VERIFY_HEADER,
        CLIENT_IP_HEADER,
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        ORIGINAL_URI_HEADER,
        ORIGINAL_METHOD_HEADER,
        _header(options.proxy_secret_header, "proxy_secret_header"),
        *FOREIGN_CERTIFICATE_HEADERS,
    ]


def header_regex(names: list[str]) -> str:
    """One ``del-header -m reg`` pattern matching each of ``names`` in any case, "-" and "_" alike."""
    alternatives = "|".join(re.escape(name.lower()).replace("\\-", "-").replace("-", "[-_]") for name in names)
    return f"^(?i)({alternatives})$"


def _frontend(options: ProxyOptions, server_cert: str) -> str:
    mode = options.mode
    verifies = mode != "optional_no_ca"
    bind = [
        f"bind {_address(_token(options.listen, 'listen'), 'listen')} ssl",
        f"crt {server_cert}",
        "verify required" if mode == "on" else "verify optional",
    ]
    ca_comment: list[str]
    if options.client_ca is not None:
        bind.append(f"ca-file {_token(options.client_ca, 'client_ca')}")
        ca_comment = [
            "# ca-file: the CAs client certificates must chain to (root and intermediates); their names are sent",
            "# to the client so it can pick the right certificate.",
        ]
    else:
        bind += [f"ca-file {server_cert}", "no-ca-names"]
        ca_comment = [
            "# ca-file: HAProxy asks for no certificate without one. Every verification error is ignored here, so",
            "# the server's own certificate file stands in; no-ca-names keeps its names out of the request.",
        ]
    if options.crl is not None:
        bind.append(f"crl-file {_token(options.crl, 'crl')}")
        ca_comment += [
            "# crl-file: revoked certificates fail verification (routed to certauth: crl_revoked). It must hold",
            "# the CRL of EVERY CA in ca-file, intermediates included: a CA without its CRL fails verification",
            "# of every certificate it issued (unable to get certificate CRL -> crl_unavailable), so clients of",
            "# an intermediate are all refused.",
        ]
    bind += [
        "crt-ignore-err all",
        "ca-ignore-err all",
        "ssl-min-ver TLSv1.2",
        f"ciphers {_CIPHERS}",
        "no-tls-tickets",
    ]
    headers = _protected_headers(options)
    lines: list[str] = [
        f"frontend {FRONTEND_NAME}",
        "    mode http",
        "    # HTTP/1.1 only (no alpn): what the rules below were tested with.",
        "    # TLS 1.0 and 1.1 are deprecated (RFC 8996); forward secrecy and AEAD only; no session tickets",
        "    # (HAProxy's ticket keys never rotate by themselves; its session cache is enough).",
        *("    " + line for line in _MODE_COMMENTS[mode]),
        *("    " + line for line in ca_comment),
        "    # crt: ONE file with the certificate chain and its key (or the key at <crt>.key).",
        "    " + " ".join(bind),
        "",
        "    # --- floods --------------------------------------------------------------------------------",
        "    # Slow or idle clients are closed soon: the request headers must be complete within timeout",
        "    # http-request (HAProxy 2.6 bounds the TLS handshake only by timeout client, an inactivity",
        "    # timeout). Per client address: open connections and request rate (429 beyond).",
        "    timeout client 30s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 30s",
        "    stick-table type ipv6 size 100k expire 30s store conn_cur,http_req_rate(1s)",
        "    tcp-request connection track-sc0 src",
        "    tcp-request connection reject if { sc0_conn_cur gt 128 }",
        f"    http-request deny deny_status 429 if {{ sc0_http_req_rate gt {3 * options.requests_per_second} }}",
        "",
        "    # --- headers from the client ---------------------------------------------------------------",
        "    # Every client-sent copy of a header set below, and of the other proxies' certificate headers, in any",
        "    # spelling: Django (under ASGI; under WSGI when gunicorn's header_map allows it) folds X_SSL_Client_Cert",
        "    # and X-SSL-Client-Cert into the same META key (CVE-2015-0219).",
        f"    http-request del-header '{header_regex(headers)}' -m reg",
        "",
        "    # --- the client certificate ----------------------------------------------------------------",
        "    # A certificate counts as verified only when OpenSSL's verify result and HAProxy's first leaf and",
        "    # issuer errors are all 0 (ssl_c_verify also holds for a resumed session).",
        "    acl certauth_certificate ssl_c_used",
        "    acl certauth_unverified ssl_c_verify gt 0",
        "    acl certauth_unverified ssl_c_err gt 0",
        "    acl certauth_unverified ssl_c_ca_err gt 0",
        "    # The leaf as base64 DER on one line (CERTAUTH FORWARDING_FORMAT base64_der), only when one came.",
        f"    http-request set-header {CERTIFICATE_HEADER} %[ssl_c_der,base64] if certauth_certificate",
        "    # The verdict in nginx's words (certauth.proxies.reason_for_proxy_verdict): SUCCESS only for a",
        "    # certificate HAProxy verified, NONE without one, else FAILED:<OpenSSL's reason>.",
        f"    http-request set-header {VERIFY_HEADER} NONE unless certauth_certificate",
        f"    http-request set-header {VERIFY_HEADER} SUCCESS if certauth_certificate !certauth_unverified",
        f'    http-request set-header {VERIFY_HEADER} "FAILED:verify error %[ssl_c_verify] (leaf %[ssl_c_err], '
        'issuer %[ssl_c_ca_err] at depth %[ssl_c_ca_err_depth])" if certauth_certificate certauth_unverified',
    ]
    for code, text in VERIFY_ERRORS.items():
        lines.append(
            f'    http-request set-header {VERIFY_HEADER} "FAILED:{text}" '
            f"if certauth_certificate {{ ssl_c_verify {code} }}"
        )
    lines += [
        "",
        "    # --- what Django receives ------------------------------------------------------------------",
        "    # The client's address as HAProxy saw it; X-Forwarded-For overwritten, not appended: HAProxy is the",
        "    # edge, anything the client claims is not evidence.",
        f"    http-request set-header {CLIENT_IP_HEADER} %[src]",
        "    http-request set-header X-Forwarded-For %[src]",
        "    http-request set-header X-Forwarded-Proto https",
        "    # With the port, so Django's absolute URLs and CSRF origin check match what the browser used.",
        "    http-request set-header Host %[req.hdr(host),regsub(':[0-9]+$','')]:%[dst_port] "
        "if { req.hdr(host) -m found }",
        f"    http-request set-header Host {_token(options.server_name, 'server_name')}:%[dst_port] "
        "unless { req.hdr(host) -m found }",
        "    # The request line as the client sent it, for the audit of a refusal (rewritten below). Set on",
        "    # every request, so no client can send its own.",
        f"    http-request set-header {ORIGINAL_URI_HEADER} %[pathq]",
        f"    http-request set-header {ORIGINAL_METHOD_HEADER} %[method]",
        *_secret_lines(options),
        "",
        "    # --- refusals --------------------------------------------------------------------------------",
        "    # Only HAProxy's refusals go to the refusal view; a client asking for it directly gets a plain 404.",
        f"    http-request deny deny_status 404 if {{ path,url_dec -m str {REFUSED_PATH} }}",
    ]
    if verifies:
        lines += [
            "    # A certificate that failed verification: never the request itself (its view would run, and",
            "    # verify required would behave like optional). certauth's refusal view gets",
            f"    # GET {REFUSED_PATH} (no query; HAProxy cannot drop a body, the view reads none) and",
            "    # answers 401 with the reason in the verdict above; it audits the original method and URI.",
            "    http-request set-method GET if certauth_certificate certauth_unverified",
            f"    http-request set-uri {REFUSED_PATH} if certauth_certificate certauth_unverified",
        ]
    lines += [
        "",
        f"    default_backend {BACKEND_NAME}",
        "",
    ]
    return "\n".join(lines)


def _secret_lines(options: ProxyOptions) -> list[str]:
    if options.proxy_secret is None:
        return [
            "    # No proxy secret: certauth believes any process that reaches gunicorn. Render one",
            "    # (certauth proxy-config --proxy-secret-file) unless gunicorn is on a private unix socket.",
        ]
    return [
        '    # The proxy secret (CERTAUTH["PROXY_SECRET_FILE"] holds the same value): without it certauth',
        "    # believes no forwarded certificate, so another local process reaching gunicorn is not the proxy.",
        "    # Keep this file private (0600) for that reason.",
        f"    http-request set-header {options.proxy_secret_header} '{options.proxy_secret}'",
    ]


def _backend(options: ProxyOptions) -> str:
    servers = "\n".join(
        f"    server {BACKEND_NAME}_{number} {_upstream(address)}"
        for number, address in enumerate(options.upstream, start=1)
    )
    return f"""# gunicorn must be reachable by HAProxy only: whoever reaches it directly can forge the certificate
# header. Every local user reaches 127.0.0.1, so prefer a unix socket in a directory only HAProxy's user may
# enter (gunicorn --bind unix:PATH, CERTAUTH["TRUSTED_PROXIES"] = ["unix:"]), and send the proxy secret
# whichever way HAProxy connects.
backend {BACKEND_NAME}
    mode http
    timeout connect 5s
    timeout server 60s
    balance roundrobin
    # The forwarded certificate (2-3 KB base64) must fit HAProxy's buffer with the request (tune.bufsize);
    # gunicorn's --limit-request-field_size must accept it too.
{servers}
"""


def _standalone(frontend_backend: str, *, prefix: str, mode: str) -> str:
    return f"""# certauth development/test HAProxy, client certificates: {mode}.  Generated; do not edit.
# Run in the foreground as the invoking user: haproxy -db -f {prefix}/haproxy.conf

global
    # No daemon, no master-worker, no user/chroot: the process that started it owns it, as that user.
    pidfile {prefix}/haproxy.pid
    log stderr format raw local0 info
    # A forwarded certificate plus the request must fit one buffer; a request line as long as gunicorn's
    # (8190) too ({CLIENT_HEADER_BUFFER} as nginx's large_client_header_buffers).
    tune.bufsize 65536
    tune.maxrewrite 16384
    tune.ssl.cachesize 40000
    maxconn 8192

defaults
    log global
    option httplog
    timeout connect 5s
    timeout client 30s
    timeout server 60s

{frontend_backend}"""


def certauth_settings(options: ProxyOptions) -> dict[str, Any]:
    return {**common_settings(options), "FORWARDING_FORMAT": FORWARDING_FORMAT}


def command(binary: str, config: Path, prefix: Path) -> list[str]:
    # -db: in the foreground, no daemon; the pid file and logs as the configuration says (under prefix).
    return [binary, "-db", "-f", str(config)]


__all__ = [
    "BACKEND_NAME",
    "BINARIES",
    "COMBINED_CERTIFICATE_AND_KEY",
    "FORWARDING_FORMAT",
    "FRONTEND_NAME",
    "MODES",
    "VERIFY_ERRORS",
    "certauth_settings",
    "command",
    "header_regex",
    "key_file_for",
    "render",
]

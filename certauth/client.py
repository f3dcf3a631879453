"""Client side helpers: present a client certificate from Python (the counterpart of .NET's
``HttpClientHandler.ClientCertificates``).

One ``ssl.SSLContext`` carries both the trust anchors and the client identity; ``requests`` and
``httpx`` are handed that context and nothing else, so environment variables such as
``REQUESTS_CA_BUNDLE`` cannot widen the trust.  PKCS#12 files are decrypted in memory and their key is
only ever written to disk re-encrypted with a one-time password, in a private directory that is
deleted before this module returns.  ``requests`` and ``httpx`` are optional (``certauth[client]``)
and imported lazily.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx
    import requests

__all__ = ["build_ssl_context", "httpx_client", "requests_session"]

StrPath = str | os.PathLike[str]

_PRIVATE_KEY_MARK = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def _check_arguments(cert: StrPath | None, key: StrPath | None, pkcs12: StrPath | None, password: str | None) -> None:
    if pkcs12 is not None and (cert is not None or key is not None):
        raise ValueError("Pass either pkcs12= or cert=/key=, not both.")
    if key is not None and cert is None:
        raise ValueError("key= needs the matching cert=.")
    if cert is not None and key is None and not _PRIVATE_KEY_MARK.search(Path(cert).read_bytes()):
        raise ValueError("cert= holds no private key: pass key= too (or a PEM file with certificate and key).")
    if password is not None and cert is None and pkcs12 is None:
        raise ValueError("password= is for an encrypted key or a PKCS#12 file; neither was given.")


def _trust_context(ca: StrPath | bool) -> ssl.SSLContext:
    if ca is True:
        context = ssl.create_default_context()  # the operating system's trust store
    elif ca is False:
        # Explicit opt-out, e.g. against a throw-away dev server; hostname checking must go first.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif Path(ca).is_dir():
        context = ssl.create_default_context(capath=os.fspath(ca))
    else:
        context = ssl.create_default_context(cafile=os.fspath(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load_pkcs12(context: ssl.SSLContext, pkcs12: StrPath, password: str | None) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12 as p12

    try:
        key, certificate, extra = p12.load_key_and_certificates(
            Path(pkcs12).read_bytes(), password.encode() if password is not None else None
        )
    except ValueError as exc:
        raise ValueError(f"Could not open {os.fspath(pkcs12)}: wrong password or not a PKCS#12 file.") from exc
    if key is None or certificate is None:
        raise ValueError(f"{os.fspath(pkcs12)} must hold a certificate and its private key.")

    # ssl can only load a key from a file.  The key never touches disk in clear: it is re-encrypted
    # with a random password that exists only in this frame, in a 0700 directory removed at once.
    one_time = secrets.token_urlsafe(32)
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    # The extra certificates (intermediates) follow the leaf so the server receives the chain.
    pem += b"".join(extra_cert.public_bytes(serialization.Encoding.PEM) for extra_cert in extra)
    pem += key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(one_time.encode()),
    )
    directory = tempfile.mkdtemp(prefix="certauth-p12-")
    try:
        path = os.path.join(directory, "identity.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        context.load_cert_chain(path, password=one_time)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def build_ssl_context(
    *,
    cert: StrPath | None = None,
    key: StrPath | None = None,
    pkcs12: StrPath | None = None,
    password: str | None = None,
    ca: StrPath | bool = True,
) -> ssl.SSLContext:
    """A TLS >= 1.2 client context trusting ``ca`` and presenting the given client certificate.

    ``ca``: a CA file or directory, True for the system store, False to skip server verification.
    Identity: ``cert`` (+ ``key``, or a PEM holding both; ``password`` for an encrypted key), or
    ``pkcs12`` (+ ``password``), or nothing for an anonymous context.
    """
    _check_arguments(cert, key, pkcs12, password)
    context = _trust_context(ca)
    if pkcs12 is not None:
        _load_pkcs12(context, pkcs12, password)
    elif cert is not None:
        try:
            context.load_cert_chain(os.fspath(cert), os.fspath(key) if key is not None else None, password=password)
        except ssl.SSLError as exc:
            raise ValueError(
                "Could not load the client certificate: key does not match, wrong password or not PEM."
            ) from exc
    return context


def _verify_setting(ca: StrPath | bool) -> str | bool:
    return ca if isinstance(ca, bool) else os.fspath(ca)


def requests_session(
    *,
    cert: StrPath | None = None,
    key: StrPath | None = None,
    pkcs12: StrPath | None = None,
    password: str | None = None,
    ca: StrPath | bool = True,
) -> requests.Session:
    """A ``requests.Session`` whose https:// requests use :func:`build_ssl_context`'s context."""
    import requests
    from requests.adapters import HTTPAdapter

    context = build_ssl_context(cert=cert, key=key, pkcs12=pkcs12, password=password, ca=ca)
    verify = _verify_setting(ca)

    def _cert_reqs() -> str:
        # urllib3 copies this onto the context; it must agree with how the context was built.
        return "CERT_NONE" if context.verify_mode == ssl.CERT_NONE else "CERT_REQUIRED"

    class _SSLContextAdapter(HTTPAdapter):
        """Hands urllib3 our context and stops requests from adding CA files or certs to it."""

        def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
            pool_kwargs["ssl_context"] = context
            super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            proxy_kwargs["ssl_context"] = context
            return super().proxy_manager_for(proxy, **proxy_kwargs)

        def build_connection_pool_key_attributes(
            self, request: Any, verify: Any, cert: Any = None
        ) -> tuple[dict[str, Any], dict[str, Any]]:
            host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, None)
            # urllib3 would load these into the shared context (certifi, REQUESTS_CA_BUNDLE...).
            for name in ("ca_certs", "ca_cert_dir", "cert_file", "key_file"):
                pool_kwargs.pop(name, None)
            pool_kwargs["cert_reqs"] = _cert_reqs()
            return host_params, pool_kwargs

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            # The context alone decides: same reason as above.
            conn.cert_reqs = _cert_reqs()
            conn.ca_certs = None
            conn.ca_cert_dir = None

        def send(
            self,
            request: Any,
            stream: bool = False,
            timeout: Any = None,
            verify: Any = True,
            cert: Any = None,
            proxies: Any = None,
        ) -> Any:
            if cert is not None:
                raise ValueError("This session already presents a client certificate; do not pass cert=.")
            return super().send(request, stream=stream, timeout=timeout, verify=verify, proxies=proxies)

    session = requests.Session()
    session.verify = verify  # informative: the adapter above ignores per-request overrides
    session.mount("https://", _SSLContextAdapter())
    return session


def httpx_client(
    *,
    cert: StrPath | None = None,
    key: StrPath | None = None,
    pkcs12: StrPath | None = None,
    password: str | None = None,
    ca: StrPath | bool = True,
    base_url: str = "",
    **kwargs: Any,
) -> httpx.Client:
    """An ``httpx.Client`` using :func:`build_ssl_context`'s context; extra kwargs go to ``httpx.Client``."""
    import httpx

    for name in ("verify", "cert"):
        if name in kwargs:
            raise ValueError(f"httpx_client builds its own TLS settings; do not pass {name}=.")
    context = build_ssl_context(cert=cert, key=key, pkcs12=pkcs12, password=password, ca=ca)
    return httpx.Client(verify=context, base_url=base_url, **kwargs)

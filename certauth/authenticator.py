"""The one decision: does this request carry a certificate that authenticates an identity?

The Django backend, the middleware, the DRF authentication class and the decorator all call
``evaluate(request)``; the answer is computed once per request and kept on it.  The steps, in order:

1. Read the forwarded certificate header — believed only from ``TRUSTED_PROXIES``, and with the proxy secret
   when one is configured (else ``untrusted_proxy``).
2. When the proxy verifies certificates, its verdict must be ``SUCCESS``.
3. Parse the certificate (cached by the exact header value) — else ``malformed_certificate``.
4. Policy: validity period and clientAuth usage; then trust: allowed types, chain to an enabled trusted
   authority, CRLs / OCSP (``certauth.trust`` via ``certauth.authorities``).
5. Registry: pinned thumbprint, else an identity rule (``certauth.rules``) -> entry, revoked?, identity active?
   Any revoked entry that is the same certificate in another encoding (issuer and serial, or signed
   content), or that revoked its key as compromised, refuses it too (``certauth.registry.related_entry``).

An acceptance of a pinned certificate is remembered per worker for the exact header value(s) (filed under
the value's tail, compared in full before it is served), and served again (steps 3-5 skipped) only while
the proxy's verdict is still SUCCESS, ``now`` is inside every validity window that was checked (certificate,
registry entry, chain, CRL nextUpdate), and neither the registry cache nor the trust store has been dropped
since (``Registry.epoch``): the same answer the full path would give, for a dictionary lookup and a few
comparisons.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from cryptography import x509
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError
from django.http import HttpRequest
from django.utils import timezone

from . import audit, metrics, signals
from .certificates import CertificateInfo, describe, thumbprint_of
from .conf import settings
from .forwarding import is_absent, is_absent_verdict, parse_chain_header, parse_forwarded
from .lru import MISSING, BoundedCache
from .nginxconf import PROXY_SECRET_MIN_LENGTH, PROXY_SECRET_PLACEHOLDER
from .policy import PolicyOptions, check_certificate
from .principal import CertificateAuth, CertificatePrincipal
from .privatefiles import shared_secret_exposure
from .proxies import (
    UNIX_SOCKET,
    ProxyAllowList,
    canonical_ip,
    forwarded_addresses,
    peer_address,
    reason_for_proxy_verdict,
    secret_matches,
)
from .reasons import CertificateRefused, Reason
from .registry import (
    EntrySnapshot,
    RegistryUnavailable,
    last_used_due,
    record_issuance_keys,
    registry,
    related_entry,
    touch_last_used,
)
from .trust import TrustResult, TrustStore

logger = logging.getLogger("certauth")

REQUEST_ATTRIBUTE = "_certauth_outcome"


@dataclass(slots=True)
class Outcome:
    """The answer for one request."""

    reason: Reason | None
    detail: str = ""
    auth: CertificateAuth | None = None
    certificate: CertificateInfo | None = None
    identity_id: int | None = None
    identity_name: str = ""
    client_ip: str | None = None
    proxy_ip: str | None = None
    recorded: bool = False
    # Set when a certificate was accepted although its CRL was missing or stale, or OCSP gave no usable
    # answer (REVOCATION_FAIL_OPEN); audited under revocation_warning_reason.
    revocation_warning: str = ""
    revocation_warning_reason: Reason = Reason.CRL_UNAVAILABLE
    _user: Any = None

    @property
    def ok(self) -> bool:
        return self.reason is None and self.auth is not None

    @property
    def user(self) -> Any:
        """The identity's linked Django user (checked by ``_with_linked_user``) or a ``CertificatePrincipal``."""
        if self._user is None and self.auth is not None:
            self._user = CertificatePrincipal(self.auth.identity)
        return self._user

    def body(self) -> dict[str, Any]:
        assert self.reason is not None
        return {"reason": str(self.reason), "detail": self.detail or self.reason.message}


class _Config:
    """Values derived from settings once per settings generation (not per request)."""

    def __init__(self) -> None:
        self.generation = settings.generation
        self.proxies = ProxyAllowList(settings.TRUSTED_PROXIES)
        self.cert_key = meta_key(settings.CERTIFICATE_HEADER)
        self.chain_key = meta_key(settings.CHAIN_HEADER) if settings.CHAIN_HEADER else None
        self.verify_key = meta_key(settings.VERIFY_HEADER)
        self.client_ip_key = meta_key(settings.CLIENT_IP_HEADER) if settings.CLIENT_IP_HEADER else None
        self.proxy_secret_header = settings.PROXY_SECRET_HEADER
        self.proxy_secret_key = meta_key(settings.PROXY_SECRET_HEADER)
        self.proxy_secret, self.proxy_secret_problem = load_proxy_secret()
        if self.proxy_secret_problem:
            # The operator's to read (with certauth.E012); a client only learns that the secret is unusable.
            logger.error(
                "certauth proxy secret unusable, every forwarded certificate is refused: %s", self.proxy_secret_problem
            )
        self.format = settings.FORWARDING_FORMAT
        self.xfcc_require_hash = bool(settings.XFCC_REQUIRE_HASH)
        self.proxy_verifies = bool(settings.PROXY_VERIFIES_CERTIFICATE)
        # timezone.now()'s zone, read once: django.conf.settings costs a LazyObject lookup per read (certauth's
        # settings reload, and this config with them, when USE_TZ changes).
        self.tz = dt.UTC if django_settings.USE_TZ else None
        self.policy = PolicyOptions(
            validate_validity_period=settings.VALIDATE_VALIDITY_PERIOD,
            validate_certificate_use=settings.VALIDATE_CERTIFICATE_USE,
        )
        self.parsed: BoundedCache[tuple[str, str | None], Presented] = BoundedCache(settings.CACHE_SIZE)
        # Filed under accepted_key(): the value's tail (each entry holds the whole value it is served to).
        self.accepted: BoundedCache[tuple[str, str | None], _Accepted] = BoundedCache(settings.CACHE_SIZE)


_config: _Config | None = None


def config() -> _Config:
    global _config
    if _config is None or _config.generation != settings.generation:
        _config = _Config()
    return _config


def load_proxy_secret() -> tuple[bytes | None, str]:
    """``(secret, problem)`` from ``PROXY_SECRET`` or ``PROXY_SECRET_FILE``; ``(None, "")`` when neither is
    set.  A secret others know or can learn gives ``b""`` (which no header matches: fail closed) and the
    problem: an unreadable or empty file, a file every local user can read (``shared_secret_exposure``), the
    committed examples' placeholder, or fewer than ``PROXY_SECRET_MIN_LENGTH`` characters."""
    if settings.PROXY_SECRET:
        return _guessable_or_not(str(settings.PROXY_SECRET), "PROXY_SECRET")
    if not settings.PROXY_SECRET_FILE:
        return None, ""
    path = Path(settings.PROXY_SECRET_FILE)
    try:
        # O_NONBLOCK: a FIFO there must not hang the worker (it is then refused as no regular file).
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            refuse, _warn = shared_secret_exposure(os.fstat(handle.fileno()))
            raw = b"" if refuse else handle.read()
        secret = raw.decode().strip()
    except (OSError, UnicodeDecodeError) as error:
        return b"", f"PROXY_SECRET_FILE {path} cannot be read ({getattr(error, 'strerror', None) or error})"
    if refuse:
        return b"", (
            f"PROXY_SECRET_FILE {path} {refuse}; then write a new secret into it and into nginx's config "
            "(others may have read the old one)"
        )
    if not secret:
        return b"", f"PROXY_SECRET_FILE {path} is empty"
    return _guessable_or_not(secret, f"PROXY_SECRET_FILE {path}")


def _guessable_or_not(secret: str, where: str) -> tuple[bytes, str]:
    fix = (
        "put a random one there (python -c 'import secrets; print(secrets.token_urlsafe(32))') and render "
        "nginx's config from it (certauth nginx-config --proxy-secret-file)"
    )
    if secret == PROXY_SECRET_PLACEHOLDER:
        return b"", f"{where} holds the placeholder of the committed nginx examples, which everyone can read: {fix}"
    if len(secret) < PROXY_SECRET_MIN_LENGTH:
        return b"", f"{where} is shorter than {PROXY_SECRET_MIN_LENGTH} characters, a neighbour could guess it: {fix}"
    return secret.encode(), ""


def proxy_secret_file_warning() -> str:
    """What is not quite private about ``PROXY_SECRET_FILE`` (group-readable, root's): '' when nothing."""
    if settings.PROXY_SECRET or not settings.PROXY_SECRET_FILE:
        return ""
    try:
        return shared_secret_exposure(os.stat(settings.PROXY_SECRET_FILE))[1]
    except OSError:
        return ""  # reported by load_proxy_secret as a problem


def proxy_check(cfg: _Config, meta: dict[str, Any]) -> tuple[str, bool, str]:
    """``(peer, trusted, why_not)``: who connected (``peer_address``), whether it is our proxy (a trusted
    address, and the proxy secret when one is configured), and, when not, a detail telling how to fix it."""
    peer = peer_address(meta)
    trusted_address = cfg.proxies.trusts(peer)  # == peer in cfg.proxies (peer_address gives a str)
    if trusted_address and (
        cfg.proxy_secret is None or secret_matches(cfg.proxy_secret, meta.get(cfg.proxy_secret_key))
    ):
        return peer, True, ""
    where = "the unix socket" if peer == UNIX_SOCKET else (peer or "an unknown address")
    if not trusted_address:
        detail = f"A certificate header came from {where}, which is not a trusted proxy."
        if rewritten_by_server(cfg, meta, peer):
            detail += " " + REWRITTEN_FIX
            _warn_rewritten_once(canonical_ip(peer) or "")  # canonical: never the header's raw text in the log
        return peer, False, detail
    name = cfg.proxy_secret_header
    if cfg.proxy_secret_problem:
        why = (
            "certauth cannot check the proxy secret: the server's PROXY_SECRET / PROXY_SECRET_FILE is unusable (its "
            "log and `manage.py check` say why). Fix it and restart the workers."
        )
    elif meta.get(cfg.proxy_secret_key) is None:
        why = (
            f"The request came from {where} without the proxy secret header {name}, so it did not come through "
            f"the proxy, or the proxy is not configured to send it: add `proxy_set_header {name} <secret>;` "
            f"to every location (certauth nginx-config --proxy-secret-file renders it)."
        )
    else:
        why = (
            f"The request came from {where} with a wrong proxy secret in {name}: give the proxy and certauth the "
            f"same current secret (`make run` makes a new one each start) and reload both."
        )
    return peer, False, why


#: What to do when the application server put the forwarded client address in REMOTE_ADDR.
REWRITTEN_FIX = (
    "That address is one the proxy wrote in X-Forwarded-For: the application server replaced the proxy's "
    "address with the client's (uvicorn does so by default for peers in --forwarded-allow-ips / "
    "$FORWARDED_ALLOW_IPS, which default to 127.0.0.1). Run uvicorn with --no-proxy-headers: certauth checks "
    "the real peer and reads the client's address itself (docs/deployment.md, Running under ASGI)."
)
#: When the rewritten-peer warning was last logged (time.monotonic()), None: never.  At most once a minute, not
#: once per process: a client that copies its own address into X-Forwarded-For (possible where no proxy secret
#: is configured) cannot use the warning up and silence the operator's later, genuine one.
_rewrite_warned_at: float | None = None
REWRITE_WARNING_INTERVAL = 60.0


def rewritten_by_server(cfg: _Config, meta: dict[str, Any], peer: str) -> bool:
    """Does an untrusted ``peer`` look like a client address the server copied from X-Forwarded-For?  The
    peer is one of that header's entries and, when a proxy secret is configured, the request carries it (so
    it came through the proxy).  Only chooses the refusal's detail: the request is refused either way."""
    forwarded = meta.get("HTTP_X_FORWARDED_FOR")
    if not forwarded or peer == UNIX_SOCKET or (address := canonical_ip(peer)) is None:
        return False
    if cfg.proxy_secret is not None and not secret_matches(cfg.proxy_secret, meta.get(cfg.proxy_secret_key)):
        return False
    return address in forwarded_addresses(str(forwarded))


def _warn_rewritten_once(peer: str) -> None:
    global _rewrite_warned_at
    clock = time.monotonic()
    if _rewrite_warned_at is None or clock - _rewrite_warned_at >= REWRITE_WARNING_INTERVAL:
        _rewrite_warned_at = clock
        logger.warning(
            "certauth: a request through the proxy arrived with REMOTE_ADDR=%s, an X-Forwarded-For address, so "
            "every forwarded certificate is untrusted_proxy. %s",
            peer,
            REWRITTEN_FIX,
        )


def meta_key(header: str) -> str:
    """``X-SSL-Client-Cert`` -> ``HTTP_X_SSL_CLIENT_CERT`` (how WSGI servers name it in ``META``)."""
    return "HTTP_" + header.upper().replace("-", "_")


@dataclass(frozen=True, slots=True)
class Presented:
    """A parsed forwarded certificate: its facts and the intermediates the proxy sent with it."""

    info: CertificateInfo
    chain: tuple[x509.Certificate, ...] = ()
    # SHA-256 thumbprints of the leaf and of ``chain`` (computed once, the trust store's cache key).
    thumbprints: tuple[str, ...] = ()


_LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)

#: Forwarded values longer than this (a certificate and its chain are a few KiB) are parsed but not cached.
MAX_CACHED_VALUE_LENGTH = 16 * 1024


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A remembered acceptance (see the module docstring for when it may be served again)."""

    auth: CertificateAuth
    revocation_warning: str
    revocation_warning_reason: Reason
    valid_from: float  # POSIX timestamps (compared with ``_timestamp()``, a C call, on every warm request)
    valid_until: float
    store: TrustStore
    epoch: int
    value: tuple[str, str | None]  # the forwarded value(s) it was decided for, compared in full before serving


#: Remembered acceptances are filed under the forwarded value's last characters (hashing a whole certificate
#: costs more than the rest of the warm path) and served only to the identical value, compared in full.
ACCEPTED_KEY_TAIL = 96


def accepted_key(raw: str, chain_raw: str | None) -> tuple[str, str | None]:
    """Where a remembered acceptance for these forwarded value(s) is filed (``_Accepted.value`` decides)."""
    return raw[-ACCEPTED_KEY_TAIL:], chain_raw


def parse_cached(cfg: _Config, raw: str, chain_raw: str | None) -> Presented:
    """Parse the forwarded value, memoised by the exact header value(s): the dictionary compares the
    whole strings, so a cached answer is only ever given for the very same bytes."""
    key = (raw, chain_raw)
    cached = cfg.parsed.get(key)
    if cached is not MISSING:
        return cached  # type: ignore[return-value]
    forwarded = parse_forwarded(raw, cfg.format, xfcc_require_hash=cfg.xfcc_require_hash)
    chain = forwarded.chain
    if chain_raw:
        chain += parse_chain_header(chain_raw, cfg.format)
    info = describe(forwarded.leaf)
    presented = Presented(info, chain, (info.thumbprint_sha256, *(thumbprint_of(c) for c in chain)))
    if len(raw) + len(chain_raw or "") <= MAX_CACHED_VALUE_LENGTH:
        # The key holds the whole value: only certificate-sized ones are kept, so a flood of distinct
        # near-64-KiB values cannot pin CACHE_SIZE x 64 KiB of memory per worker.
        cfg.parsed.set(key, presented)
    return presented


def evaluate(request: HttpRequest, *, path: str | None = None, method: str | None = None) -> Outcome:
    """Decide once per request; later calls return the same ``Outcome``.  ``path`` and ``method`` replace
    the request's in the audit row of a refusal (``certauth.views.refused``: the proxy rewrote them)."""
    outcome: Outcome | None = getattr(request, REQUEST_ATTRIBUTE, None)
    if outcome is None:
        meter = metrics.active()
        started = _perf_counter() if meter is not None else 0.0
        outcome = _decide(_warm(request, on_loop=False) or _decide_certificate(request))
        setattr(request, REQUEST_ATTRIBUTE, outcome)
        if meter is not None:
            meter.decided(outcome.ok, _perf_counter() - started)
        if outcome.ok:
            if signals.certificate_authenticated.receivers:  # none connected: not even the call
                _send(signals.certificate_authenticated, request=request, auth=outcome.auth)
            if outcome.revocation_warning:
                record_fail_open(request, outcome)
        elif outcome.reason is not Reason.MISSING_CERTIFICATE:
            record_refusal(request, outcome, path=path, method=method)
    return outcome


async def aevaluate(
    request: HttpRequest, *, path: str | None = None, method: str | None = None, as_sent: bool = False
) -> Outcome:
    """``evaluate`` for async code: the same decision and the same ``Outcome`` on the request, and no blocking
    call on the event loop's thread.

    Answered on the loop, with no thread: no certificate (nothing to read, nothing to audit), and a remembered
    acceptance that needs no read or write right now (``_decide_on_loop``).  Everything else (a cold cache,
    a refusal and its audit row, a linked user, a due registry-freshness read or last-used write, a shared
    cache, OCSP) runs ``evaluate`` itself in one ``sync_to_async`` hop: one hop per such request, not one per
    query, and the very code the sync path runs.  ``as_sent``: a refusal is audited under the request line the
    client sent (``certauth.views.original_request_line``), worked out in that thread, only when needed."""
    outcome: Outcome | None = getattr(request, REQUEST_ATTRIBUTE, None)
    if outcome is not None:
        return outcome
    meter = metrics.active()
    started = _perf_counter() if meter is not None else 0.0
    outcome = _decide_on_loop(request)
    if outcome is None:
        if as_sent:
            return await sync_to_async(_evaluate_as_sent)(request)
        return await sync_to_async(evaluate)(request, path=path, method=method)  # counted there
    setattr(request, REQUEST_ATTRIBUTE, outcome)
    if meter is not None:
        meter.decided(outcome.ok, _perf_counter() - started)
    if outcome.ok and signals.certificate_authenticated.receivers:  # none connected: no coroutine either
        await _asend(signals.certificate_authenticated, request=request, auth=outcome.auth)
    return outcome


def _evaluate_as_sent(request: HttpRequest) -> Outcome:
    """``evaluate``, a refusal audited under the client's own request line (the proxy's original-URI and
    method headers, believed from a trusted proxy only), as ``certauth.views.refused`` audits it."""
    from .views import original_request_line  # views imports this module

    method, path = original_request_line(request)
    return evaluate(request, path=path, method=method)


def _decide_on_loop(request: HttpRequest) -> Outcome | None:
    """The answer when it needs no database, file or network access (see ``aevaluate``), else None: the
    remembered acceptance (``_warm``, on the loop), or no certificate at all.  Never builds the config: that
    reads ``PROXY_SECRET_FILE`` (and may log), so the first request of a process or settings generation hops."""
    if _config is None or _config.generation != settings.generation:
        return None
    outcome = _warm(request, on_loop=True)
    if outcome is not None:
        return outcome
    early = _arrival(config(), request.META)[0]
    return early if early is not None and early.reason is Reason.MISSING_CERTIFICATE else None  # refusals: a hop


async def arecord_refusal(request: HttpRequest, outcome: Outcome, **kwargs: Any) -> None:
    """``record_refusal`` from async code (the audit write runs in a thread)."""
    if not outcome.recorded:
        await sync_to_async(record_refusal)(request, outcome, **kwargs)


async def _asend(signal: Any, **kwargs: Any) -> None:
    # asend_robust: async receivers on the loop, sync ones in a thread; returns at once without receivers.
    for receiver, result in await signal.asend_robust(sender=Outcome, **kwargs):
        if isinstance(result, Exception):
            logger.error("certauth signal receiver %r failed", receiver, exc_info=result)


def _decide(outcome: Outcome) -> Outcome:
    """The certificate's answer (remembered or decided), with the identity's linked user when it has one."""
    auth = outcome.auth
    if auth is not None and auth.identity.user_id is not None and outcome.reason is None:
        return _with_linked_user(outcome, auth.identity.user_id)
    return outcome


def _with_linked_user(outcome: Outcome, user_id: int) -> Outcome:
    """Load the identity's linked Django user on every decision (one primary-key query, only for identities
    that have one): a certificate never acts as an inactive, staff or superuser account, whatever changed
    the user and however (admin, ``update()``, another host) — no cache stands in between."""
    try:
        user = get_user_model()._default_manager.filter(pk=user_id).first()
    except DatabaseError:
        logger.error("certauth registry unavailable (linked user)", exc_info=True)
        return refusal_after_authentication(outcome, Reason.REGISTRY_UNAVAILABLE, Reason.REGISTRY_UNAVAILABLE.message)
    if user is None:  # deleted since the registry was read (on_delete=SET_NULL unlinks it): a plain principal
        return outcome
    if not getattr(user, "is_active", True) or getattr(user, "is_staff", False) or getattr(user, "is_superuser", False):
        detail = "The identity's linked user is inactive or a staff account, which a certificate may not act as."
        return refusal_after_authentication(outcome, Reason.IDENTITY_DISABLED, detail)
    outcome._user = user
    return outcome


def _arrival(cfg: _Config, meta: dict[str, Any]) -> tuple[Outcome | None, str | None, str | None, str]:
    """Steps 1 and the header's presence, pure: ``(refusal or None, client_ip, proxy_ip, raw header)``."""
    remote, from_proxy, untrusted_detail = proxy_check(cfg, meta)
    forwarded_ip = None
    if from_proxy and cfg.client_ip_key:
        forwarded_ip = cfg.proxies.client_address(meta.get(cfg.client_ip_key))
    remote_ip = canonical_ip(remote)
    client_ip = forwarded_ip or remote_ip
    proxy_ip = remote_ip if from_proxy else None
    raw = meta.get(cfg.cert_key)

    early = None
    if raw is None or (from_proxy and is_absent(raw)):
        early = _no_certificate(cfg, meta, from_proxy, client_ip, proxy_ip)
    elif not from_proxy:
        early = Outcome(Reason.UNTRUSTED_PROXY, untrusted_detail, client_ip=client_ip, proxy_ip=proxy_ip)
    return early, client_ip, proxy_ip, raw or ""


def _no_certificate(
    cfg: _Config, meta: dict[str, Any], from_proxy: bool, client_ip: str | None, proxy_ip: str | None
) -> Outcome:
    """The answer when the proxy forwarded no certificate (no header, or a value that says none:
    ``certauth.forwarding.is_absent``): ``missing_certificate``, never audited, so an anonymous visit (the admin
    login) leaves no refusal behind.  But when the proxy verifies and its verdict is neither "none"
    (``is_absent_verdict``) nor SUCCESS, it refused a certificate the client did send: that verdict's reason,
    a refusal.  Either answer grants nothing: no identity is ever looked at here (docs/SECURITY.md §40)."""
    if from_proxy and cfg.proxy_verifies:
        verdict = meta.get(cfg.verify_key)
        if verdict is not None and not is_absent_verdict(verdict):
            reason = reason_for_proxy_verdict(verdict)
            if reason is not None:
                return Outcome(reason, proxy_detail(verdict), client_ip=client_ip, proxy_ip=proxy_ip)
    return Outcome(Reason.MISSING_CERTIFICATE, client_ip=client_ip, proxy_ip=proxy_ip)


def _decide_certificate(request: HttpRequest) -> Outcome:
    cfg = config()
    meta = request.META
    early, client_ip, proxy_ip, raw = _arrival(cfg, meta)
    if early is not None:
        return early
    now = _now(cfg.tz)
    key = (raw, meta.get(cfg.chain_key) if cfg.chain_key else None)
    info: CertificateInfo | None = None
    try:
        try:
            presented = parse_cached(cfg, raw, key[1])
            info = presented.info
        except CertificateRefused:
            if cfg.proxy_verifies:
                verdict_reason = reason_for_proxy_verdict(meta.get(cfg.verify_key, "NONE"))
                if verdict_reason is not None:
                    raise CertificateRefused(verdict_reason, proxy_detail(meta.get(cfg.verify_key, ""))) from None
            raise
        if cfg.proxy_verifies:
            verdict = meta.get(cfg.verify_key, "NONE")
            verdict_reason = reason_for_proxy_verdict(verdict)
            if verdict_reason is not None:
                raise CertificateRefused(verdict_reason, proxy_detail(verdict))
        check_certificate(info, now, cfg.policy)
        trusted = _check_trust(presented, now)
        outcome = _match_registry(info, now, trusted, client_ip, proxy_ip)
        if trusted.cacheable and outcome.ok:
            _remember(cfg, key, outcome, trusted, now)
        return outcome
    except CertificateRefused as refused:
        return Outcome(refused.reason, refused.detail, certificate=info, client_ip=client_ip, proxy_ip=proxy_ip)
    except RegistryUnavailable:
        logger.error("certauth registry unavailable", exc_info=True)
        return Outcome(Reason.REGISTRY_UNAVAILABLE, certificate=info, client_ip=client_ip, proxy_ip=proxy_ip)


def _warm(request: HttpRequest, *, on_loop: bool) -> Outcome | None:
    """The warm path, in one function for both paths (``evaluate`` and, with ``on_loop``, ``aevaluate``): the
    remembered acceptance of this very forwarded value when it may answer this request, else None (then the
    full path decides, and names any refusal).  Served only when all of these hold, checked here in this order:

    1. the peer is a trusted proxy and sent the proxy secret, when one is configured (``proxy_check``'s test);
    2. an acceptance is filed under the value's tail and its whole value equals this one (docs/SECURITY.md);
    3. the proxy's verdict is still SUCCESS (when it verifies), and ``now`` is inside the remembered window;
    4. the trust store is the one it was decided with and the registry epoch has not moved: the sync path gets
       the store with ``current_trust_store`` (which re-reads the registry generation when due) and records
       the use (``touch_last_used``); ``on_loop``, where nothing may read or write, it is served only when the
       store needs no read (``cached_trust_store``) and no last-used write is due, and never for an identity
       with a linked user or a fail-open acceptance (loaded and audited by ``evaluate``, from a thread).

    Flat on purpose (one call instead of about fifteen: this is the whole per-request cost of an
    authenticated request); the values it returns are the ones the full path gave when it remembered them
    (tests/test_registry_cache.py compares every field)."""
    cfg = _config if _config is not None and _config.generation == settings.generation else config()
    meta = request.META
    peer = peer_address(meta)
    if not cfg.proxies.trusts(peer):
        return None
    if cfg.proxy_secret is not None and not secret_matches(cfg.proxy_secret, meta.get(cfg.proxy_secret_key)):
        return None
    raw = meta.get(cfg.cert_key)
    if not raw:
        return None
    chain_raw = meta.get(cfg.chain_key) if cfg.chain_key else None
    accepted = cfg.accepted.peek((raw[-ACCEPTED_KEY_TAIL:], chain_raw))  # == accepted_key(raw, chain_raw)
    if not isinstance(accepted, _Accepted) or accepted.value != (raw, chain_raw):
        return None  # not remembered for this very value (filed under its tail: compared in full here)
    auth = accepted.auth
    if on_loop and (accepted.revocation_warning or auth.identity.user_id):
        return None
    if cfg.proxy_verifies:
        verdict = meta.get(cfg.verify_key, "NONE")
        if verdict != "SUCCESS" and reason_for_proxy_verdict(verdict) is not None:
            return None
    if not accepted.valid_from <= _timestamp() < accepted.valid_until:
        return None
    entry_id = auth.entry_id
    if entry_id is None:  # always set for a pinned entry
        return None
    store = (_cached_store_function or _cached_trust_store)()  # None when getting it would read
    if store is None and not on_loop:
        try:
            store = (_trust_store_function or _current_trust_store)()  # the registry's freshness read
        except RegistryUnavailable:
            return None  # the full path tries again and answers registry_unavailable
    if store is not accepted.store or registry.epoch != accepted.epoch:
        return None  # the registry or the trust store changed (or, on the loop, a read is due)
    if last_used_due(entry_id):
        if on_loop:
            return None
        touch_last_used(entry_id, _now(cfg.tz))
    client_ip, proxy_ip = cfg.proxies.addresses(peer, meta.get(cfg.client_ip_key) if cfg.client_ip_key else None)
    identity = auth.identity
    # Positional (Outcome's field order): half the cost of keywords.
    return Outcome(
        None, "", auth, auth.certificate, identity.id, identity.name, client_ip, proxy_ip, False,
        accepted.revocation_warning, accepted.revocation_warning_reason,
    )  # fmt: skip


def _remember(cfg: _Config, key: tuple[str, str | None], outcome: Outcome, trusted: _Trusted, now: dt.datetime) -> None:
    """Remember an acceptance by a pinned entry until the earliest instant at which any check that admitted
    it could answer otherwise; from ``now`` only (were the clock to step back, the full path runs again)."""
    auth = outcome.auth
    assert auth is not None and trusted.entry is not None
    if len(key[0]) + len(key[1] or "") > MAX_CACHED_VALUE_LENGTH:
        return
    valid_until = min(trusted.entry.not_after, trusted.result.valid_until or _LATEST)
    if cfg.policy.validate_validity_period:
        valid_until = min(valid_until, auth.certificate.not_after)
    cfg.accepted.set(
        accepted_key(*key),
        _Accepted(
            auth,
            trusted.result.revocation_warning,
            trusted.result.revocation_warning_reason,
            now.timestamp(),
            valid_until.timestamp(),
            trusted.store,
            trusted.epoch,
            key,
        ),
    )


def proxy_detail(verdict: str) -> str:
    # nginx's verdict is OpenSSL's short text (e.g. "FAILED:certificate has expired"); keep it short and printable.
    text = "".join(ch for ch in verdict if ch.isprintable())[:200]
    return f"The TLS proxy refused the certificate ({text or 'no verdict'})."


@dataclass(slots=True)
class _Trusted:
    store: TrustStore
    result: TrustResult
    forwarded: tuple[x509.Certificate, ...]
    epoch: int  # Registry.epoch right after the store was obtained
    entry: EntrySnapshot | None = None  # the registry entry that admitted the certificate
    cacheable: bool = False  # admitted by a pinned entry (not an identity rule): may be remembered


_trust_store_function: Any = None
#: timezone.now() with the zone from the config (``_Config.tz``), one C call; tests move it.
_now = dt.datetime.now
#: The same clock as a POSIX timestamp, for the remembered acceptance's window; tests move it with ``_now``.
_timestamp = time.time
#: The clock the decision time (``certauth_authentication_seconds``) is measured with.
_perf_counter = time.perf_counter


_cached_store_function: Any = None


def _cached_trust_store() -> TrustStore | None:
    global _cached_store_function
    if _cached_store_function is None:
        from .authorities import cached_trust_store  # models: importable only once apps are ready

        _cached_store_function = cached_trust_store
    return _cached_store_function()  # type: ignore[no-any-return]


def _current_trust_store() -> TrustStore:
    global _trust_store_function
    if _trust_store_function is None:
        from .authorities import current_trust_store  # models: importable only once apps are ready

        _trust_store_function = current_trust_store
    return _trust_store_function()  # type: ignore[no-any-return]


def _check_trust(presented: Presented, now: dt.datetime) -> _Trusted:
    """Allowed types, chain to an enabled authority, CRLs (``certauth.trust``).  Runs in both proxy modes:
    nginx ``on`` checked the chain against its CA file, certauth still applies its own authorities."""
    leaf = presented.info.certificate
    if leaf is None:
        raise CertificateRefused(Reason.MALFORMED_CERTIFICATE)
    store = _current_trust_store()
    epoch = registry.epoch
    result = store.evaluate(leaf, presented.chain, now, thumbprints=presented.thumbprints or None)
    return _Trusted(store, result, presented.chain, epoch)


def _match_registry(
    info: CertificateInfo, now: dt.datetime, trusted: _Trusted, client_ip: str | None, proxy_ip: str | None
) -> Outcome:
    entry = registry.lookup(info.thumbprint_sha256)
    if entry is not None and not entry.has_issuance_keys:
        record_issuance_keys(entry, info)  # a typed thumbprint, seen for the first time
    if entry is None or not entry.revoked:
        # Before any rule may admit (and record) it: the same certificate in another encoding, or its key.
        refusal = _related_refusal(info, entry, client_ip, proxy_ip)
        if refusal is not None:
            return refusal
    pinned = entry is not None and entry.source != "rule"
    if entry is None or (entry.source == "rule" and not entry.revoked):
        # Not pinned (or pinned by a rule earlier): an identity rule may admit it.
        from . import rules

        entry = rules.resolve(info, trusted.forwarded, trusted.result, trusted.store, entry, now)
    identity = entry.identity
    common: dict[str, Any] = {
        "certificate": info,
        "identity_id": identity.id,
        "identity_name": identity.name,
        "client_ip": client_ip,
        "proxy_ip": proxy_ip,
    }
    if entry.revoked:
        reason = f" ({entry.revocation_reason})" if entry.revocation_reason else ""
        return Outcome(Reason.CERTIFICATE_REVOKED, f"The certificate was revoked{reason}.", **common)
    if not identity.is_active:
        return Outcome(Reason.IDENTITY_DISABLED, **common)
    if entry.not_after <= now:
        return Outcome(Reason.CERTIFICATE_EXPIRED, "The registered entry has expired.", **common)
    if entry.not_before is not None and entry.not_before > now:
        return Outcome(Reason.CERTIFICATE_NOT_YET_VALID, "The registered entry is not valid yet.", **common)
    touch_last_used(entry.entry_id, now)
    trusted.entry, trusted.cacheable = entry, pinned
    return Outcome(
        None,
        auth=CertificateAuth(identity=identity, certificate=info, entry_id=entry.entry_id),
        revocation_warning=trusted.result.revocation_warning,
        revocation_warning_reason=trusted.result.revocation_warning_reason,
        **common,
    )


def _related_refusal(
    info: CertificateInfo, entry: EntrySnapshot | None, client_ip: str | None, proxy_ip: str | None
) -> Outcome | None:
    """The refusal owed to another entry that is this certificate (see ``certauth.registry.related_entry``):

    * a revoked entry of the same issuance (issuer and serial, or signed content): ``certificate_revoked``,
      whichever entry the presented bytes have; a re-encoded signature does not make a new certificate;
    * an entry revoked as ``key_compromise`` for the same public key: ``certificate_revoked``, whoever issued
      the presented certificate and however it is registered;
    * a live entry of the same issuance while these bytes have no entry of their own: ``unknown_certificate``
      (the pin is the registered encoding; no identity rule records a second entry for one certificate)."""
    related = related_entry(info)
    if related is None:
        return None
    common: dict[str, Any] = {
        "certificate": info,
        "identity_id": entry.identity.id if entry is not None else related.identity_id,
        "identity_name": entry.identity.name if entry is not None else related.identity_name,
        "client_ip": client_ip,
        "proxy_ip": proxy_ip,
    }
    if related.revoked and related.same_issuance:
        reason = f" ({related.revocation_reason})" if related.revocation_reason else ""
        detail = (
            f"Same issuance as revoked entry {related.thumbprint}{reason}: the same issuer and serial number (or "
            "signed content) in another encoding is the same certificate, and stays revoked."
        )
        return Outcome(Reason.CERTIFICATE_REVOKED, detail, **common)
    if related.revoked:
        detail = (
            f"Its key was revoked as compromised (entry {related.thumbprint}): every certificate for that key is "
            "refused; issue a certificate for a new key."
        )
        return Outcome(Reason.CERTIFICATE_REVOKED, detail, **common)
    if entry is None:
        detail = (
            f"A re-encoding of registered certificate {related.thumbprint} (same issuer and serial number, "
            "different bytes): present the certificate as it was registered."
        )
        return Outcome(Reason.UNKNOWN_CERTIFICATE, detail, **common)
    return None


def _event(
    request: HttpRequest, outcome: Outcome, reason: Reason, detail: str, path: str | None, method: str | None
) -> audit.RefusalEvent:
    return audit.RefusalEvent(
        reason=reason,
        detail=detail,
        at=timezone.now(),
        certificate=outcome.certificate,
        identity_id=outcome.identity_id,
        identity_name=outcome.identity_name,
        client_ip=outcome.client_ip,
        proxy_ip=outcome.proxy_ip,
        method=(request.method or "") if method is None else method,
        path=request.path if path is None else path,
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
    )


def record_fail_open(request: HttpRequest, outcome: Outcome) -> None:
    """Audit an acceptance without a usable CRL or OCSP answer (``REVOCATION_FAIL_OPEN``): a
    ``crl_unavailable`` / ``ocsp_unavailable`` row whose detail starts with "Accepted" and that names the
    identity.  No ``certificate_rejected`` signal."""
    detail = f"Accepted (REVOCATION_FAIL_OPEN): {outcome.revocation_warning}"
    audit.record(_event(request, outcome, outcome.revocation_warning_reason, detail, None, None))


def record_refusal(
    request: HttpRequest,
    outcome: Outcome,
    *,
    reason: Reason | None = None,
    detail: str = "",
    path: str | None = None,
    method: str | None = None,
) -> None:
    """Audit, log and signal a refusal once per request.  ``path`` and ``method`` replace the request's in
    the audit row (the request line the client sent, when the proxy rewrote it)."""
    if outcome.recorded:
        return
    outcome.recorded = True
    reason = reason or outcome.reason
    assert reason is not None
    meter = metrics.active()
    if meter is not None:
        meter.refused_for(reason)
    event = _event(request, outcome, reason, detail or outcome.detail or reason.message, path, method)
    audit.record(event)
    _send(
        signals.certificate_rejected,
        request=request,
        reason=reason,
        detail=event.detail,
        certificate=outcome.certificate,
        identity_name=outcome.identity_name,
        client_ip=outcome.client_ip,
    )


def _send(signal: Any, **kwargs: Any) -> None:
    if not signal.receivers:  # nobody connected (send_robust would answer []): skip the call on the warm path
        return
    # No has_listeners() check: it costs more than send() itself, which returns at once without live receivers.
    # send_robust: a raising receiver neither stops the ones after it nor reaches the request.
    for receiver, result in signal.send_robust(sender=Outcome, **kwargs):
        if isinstance(result, Exception):
            logger.error("certauth signal receiver %r failed", receiver, exc_info=result)


def www_authenticate(reason: Reason | None = None) -> str:
    value = f'ClientCertificate realm="{settings.WWW_AUTHENTICATE_REALM}"'
    if reason is not None and reason is not Reason.MISSING_CERTIFICATE:
        value += f', error="{reason}"'
    return value


def refusal_after_authentication(outcome: Outcome, reason: Reason, detail: str) -> Outcome:
    """A refusal of an authenticated request (scope, cross-site), carrying who it was for the audit."""
    return Outcome(
        reason,
        detail,
        certificate=outcome.certificate,
        identity_id=outcome.identity_id,
        identity_name=outcome.identity_name,
        client_ip=outcome.client_ip,
        proxy_ip=outcome.proxy_ip,
    )

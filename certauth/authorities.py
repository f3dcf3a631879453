"""Trusted authorities, Django side: the per-worker trust store, authority and CRL services, CRL fetching.

* ``current_trust_store()`` builds a ``certauth.trust.TrustStore`` from the enabled ``TrustedAuthority``
  rows (the disabled ones go in as its blocklist) once per registry generation (saving or deleting an
  authority bumps it), so disabling an authority takes effect on every worker within
  ``REGISTRY_MAX_STALENESS_SECONDS``.  Parsed CRLs are kept across
  generations, keyed by the row's ``updated_at``: a 100,000-entry CRL is parsed and signature-checked once
  per change of the CRL, never per request.
* ``add_authority`` / ``fill_authority`` / ``store_crl`` are shared by the admin, the CLI and tests;
  ``store_crl`` is the one writer of a CRL onto an existing row (locked re-read, checked, conditional write).
* ``refresh_crl`` fetches ``crl_url`` through ``certauth.fetch`` (checked redirects, one total deadline);
  ``refresh_due_crls`` is what ``certauth crl-refresh`` runs on a schedule (every ``CRL_REFRESH_SECONDS``
  and at each nextUpdate), downloading the due CRLs concurrently so one slow authority delays no other.
  With CRLs alone the request path never touches the network.
* ``ocsp_checker()`` is the worker's ``certauth.ocsp.OcspChecker`` (REVOCATION_MODE ocsp / crl+ocsp): a
  certificate's first sight asks its responder once (``OCSP_TIMEOUT_SECONDS`` in total); the answer is
  reused until its nextUpdate, across trust-store rebuilds.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.db import DatabaseError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from . import proxybundle
from .certificates import printable, thumbprint_of
from .conf import settings
from .fetch import FetchError, fetch
from .models import TrustedAuthority
from .ocsp import MAX_RESPONSE_BYTES as MAX_OCSP_RESPONSE_BYTES
from .ocsp import OcspChecker
from .reasons import CertificateRefused, Reason
from .registry import RegistryUnavailable, registry, registry_changed
from .trust import (
    Authority,
    CrlIndex,
    TrustPolicy,
    TrustStore,
    check_crl_succession,
    index_crl,
    load_authority_certificate,
    load_crl,
    parse_crl,
)

logger = logging.getLogger("certauth")

#: After a failed fetch of a CRL whose nextUpdate has passed, wait this long before trying again.
CRL_RETRY_SECONDS = 60


# --------------------------------------------------------------------------------------------------
# The per-worker trust store
# --------------------------------------------------------------------------------------------------


class _TrustStoreCache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.epoch = 0
        self.store: TrustStore | None = None
        self.settings_generation = -1
        # (authority id, updated_at) -> (CrlIndex or None, problem); survives generations.
        self.crls: dict[tuple[int, dt.datetime], tuple[CrlIndex | None, str]] = {}

    def drop(self) -> None:
        with self.lock:
            self.epoch += 1
            self.store = None


_cache = _TrustStoreCache()
registry.on_invalidate(_cache.drop)


def trust_policy() -> TrustPolicy:
    mode = settings.REVOCATION_MODE
    return TrustPolicy(
        allowed_types=settings.ALLOWED_CERTIFICATE_TYPES,
        validate_validity_period=bool(settings.VALIDATE_VALIDITY_PERIOD),
        validate_certificate_use=bool(settings.VALIDATE_CERTIFICATE_USE),
        require_subject_alternative_name=bool(settings.REQUIRE_SUBJECT_ALTERNATIVE_NAME),
        check_crl=mode in {"crl", "crl+ocsp"},
        check_ocsp=mode in {"ocsp", "crl+ocsp"},
        revocation_fail_open=bool(settings.REVOCATION_FAIL_OPEN),
    )


class _OcspCheckerHolder:
    """The worker's OCSP checker: its answers outlive trust-store rebuilds (a registry change does not make
    every certificate ask its responder again); rebuilt only when the settings change."""

    def __init__(self) -> None:
        self.checker: OcspChecker | None = None
        self.settings_generation = -1


_ocsp = _OcspCheckerHolder()


def ocsp_checker() -> OcspChecker:
    """This worker's ``OcspChecker``, asking responders through ``certauth.fetch`` (POST, no redirect, one
    total deadline of ``OCSP_TIMEOUT_SECONDS``)."""
    checker = _ocsp.checker
    if checker is None or _ocsp.settings_generation != settings.generation:
        timeout = float(settings.OCSP_TIMEOUT_SECONDS)

        def post(url: str, request: bytes) -> bytes:
            return fetch(
                url,
                timeout=timeout,
                max_bytes=MAX_OCSP_RESPONSE_BYTES,
                data=request,
                content_type="application/ocsp-request",
                accept="application/ocsp-response",
            )

        checker = OcspChecker(
            post,
            cache_size=settings.CACHE_SIZE,
            max_age_seconds=float(settings.OCSP_MAX_AGE_SECONDS),
            skew_seconds=float(settings.OCSP_CLOCK_SKEW_SECONDS),
            retry_seconds=float(settings.OCSP_RETRY_SECONDS),
        )
        _ocsp.checker, _ocsp.settings_generation = checker, settings.generation
    return checker


def current_trust_store() -> TrustStore:
    """The trust store for the current registry generation.  Raises ``RegistryUnavailable``."""
    registry.ensure_fresh()  # drops the cached store (via on_invalidate) when the generation moved
    store = _cache.store
    if store is not None and _cache.settings_generation == settings.generation:
        return store
    epoch = _cache.epoch
    policy = trust_policy()
    store = TrustStore(
        load_authorities(),
        policy,
        cache_size=settings.CACHE_SIZE,
        ocsp=ocsp_checker() if policy.check_ocsp else None,
        disabled=load_disabled_authorities(),
    )
    with _cache.lock:
        if _cache.epoch == epoch:  # no invalidation raced with the load: safe to keep
            _cache.store = store
            _cache.settings_generation = settings.generation
    return store


def cached_trust_store() -> TrustStore | None:
    """What ``current_trust_store`` returns when that reads nothing (no database, no shared cache), else None."""
    store = _cache.store
    if store is None or _cache.settings_generation != settings.generation:
        return None
    # The registry's quiet window: until it ends ensure_fresh returns without reading (judged by its clock).
    if not registry.is_quiet():
        return None
    return store


def load_authorities() -> list[Authority]:
    """The enabled authorities with their parsed CRLs.  Raises ``RegistryUnavailable``."""
    try:
        rows = list(
            TrustedAuthority.objects.filter(is_enabled=True)
            .order_by("pk")
            .values("id", "name", "certificate_pem", "updated_at", "crl_last_update", "ocsp_url")
        )
    except DatabaseError as exc:
        raise RegistryUnavailable(str(exc)) from exc
    authorities = []
    live_keys = set()
    for row in rows:
        try:
            certificate = load_authority_certificate(row["certificate_pem"].encode("ascii", "replace"))
        except CertificateRefused:
            logger.error("certauth trusted authority %r has an unreadable certificate; skipped", row["name"])
            continue
        crl, problem = None, ""
        if row["crl_last_update"] is not None:
            key = (row["id"], row["updated_at"])
            live_keys.add(key)
            if key not in _cache.crls:
                _cache.crls[key] = _load_stored_crl(row["id"], certificate)
            crl, problem = _cache.crls[key]
        authorities.append(
            Authority.from_certificate(row["id"], row["name"], certificate, crl, problem, row["ocsp_url"])
        )
    for key in set(_cache.crls) - live_keys:  # forget CRLs of changed or removed authorities
        _cache.crls.pop(key, None)
    return authorities


def load_disabled_authorities() -> list[Authority]:
    """The disabled authorities (certificates only): the trust store's blocklist.  Raises
    ``RegistryUnavailable``."""
    try:
        rows = list(
            TrustedAuthority.objects.filter(is_enabled=False).order_by("pk").values("id", "name", "certificate_pem")
        )
    except DatabaseError as exc:
        raise RegistryUnavailable(str(exc)) from exc
    disabled = []
    for row in rows:
        try:
            certificate = load_authority_certificate(row["certificate_pem"].encode("ascii", "replace"))
        except CertificateRefused:
            logger.error("certauth disabled authority %r has an unreadable certificate; skipped", row["name"])
            continue
        disabled.append(Authority.from_certificate(row["id"], row["name"], certificate))
    return disabled


def _load_stored_crl(authority_id: int, certificate: x509.Certificate) -> tuple[CrlIndex | None, str]:
    try:
        der = TrustedAuthority.objects.filter(pk=authority_id).values_list("crl_der", flat=True).first()
    except DatabaseError as exc:
        raise RegistryUnavailable(str(exc)) from exc
    if not der:
        return None, "no CRL is stored"
    try:
        return parse_crl(bytes(der), certificate), ""
    except CertificateRefused as refused:
        logger.error("certauth stored CRL of authority %s is unusable: %s", authority_id, refused.detail)
        return None, refused.detail


def clear_trust_store() -> None:
    """Forget the cached trust store, parsed CRLs and OCSP answers of this worker (tests, after bulk updates)."""
    _cache.drop()
    _cache.crls.clear()
    _ocsp.checker = None


# --------------------------------------------------------------------------------------------------
# Services: adding authorities and CRLs (admin, CLI, tests)
# --------------------------------------------------------------------------------------------------


def fill_authority(authority: TrustedAuthority, certificate: x509.Certificate) -> None:
    """Copy the CA certificate's facts onto the row (PEM, thumbprint, subject, issuer, validity)."""
    authority.certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    authority.thumbprint_sha256 = thumbprint_of(certificate)
    authority.subject = certificate.subject.rfc4514_string()
    authority.issuer = certificate.issuer.rfc4514_string()
    authority.not_before = certificate.not_valid_before_utc
    authority.not_after = certificate.not_valid_after_utc


def apply_crl(authority: TrustedAuthority, data: bytes, certificate: x509.Certificate | None = None) -> CrlIndex:
    """Verify a CRL (PEM or DER) against the authority and put it on the row (not saved).  Raises
    ``CertificateRefused(CRL_UNAVAILABLE)``, leaving the row as it was, when the CRL does not parse, its
    signature does not verify, it is not a complete CRL certauth can apply (a delta CRL, a partial scope, an
    unknown critical extension: ``certauth.trust.crl_scope``), or it would not succeed the CRL held (older,
    lower CRLNumber, or the same number with other content: ``certauth.trust.check_crl_succession``)."""
    issuer = certificate or load_authority_certificate(authority.certificate_pem.encode("ascii", "replace"))
    crl = load_crl(data)
    index = index_crl(crl, issuer)
    held = _held_crl(authority)
    if held is None and authority.crl_last_update is not None and index.last_update < authority.crl_last_update:
        # The CRL held is unreadable, but its date is known: still never go back in time.
        raise CertificateRefused(
            Reason.CRL_UNAVAILABLE,
            f"The CRL was issued at {index.last_update.isoformat()}, before the one already held "
            f"({authority.crl_last_update.isoformat()}): refusing to go back in time.",
        )
    if held is not None and held.issuer == crl.issuer:  # not when the row now holds another CA's certificate
        check_crl_succession(held, crl)
    authority.crl_der = crl.public_bytes(serialization.Encoding.DER)
    authority.crl_last_update = index.last_update
    authority.crl_next_update = index.next_update
    authority.crl_error = ""
    return index


#: The columns a stored CRL occupies; written only by ``store_crl`` (and, for a new row, ``add_authority``).
CRL_FIELDS = ("crl_der", "crl_last_update", "crl_next_update", "crl_error", "crl_fetched_at")

#: How often ``store_crl`` re-reads and re-checks when another writer changed the row under it.
STORE_CRL_ATTEMPTS = 3


def store_crl(authority: TrustedAuthority, data: bytes, *, fetched_at: dt.datetime | None = None) -> CrlIndex:
    """Verify a CRL (PEM or DER) against the authority *as stored now* and store it: the one function that
    writes a CRL onto an existing row (``refresh_crl``, so ``crl-refresh`` and the admin's "Fetch the CRL
    now"; the admin's CRL upload).

    A download takes up to ``CRL_FETCH_TIMEOUT_SECONDS`` (a peer on the plain-HTTP path stretches it at will):
    checking the succession ("never go back") against the row as read before it would let an older CRL
    overwrite a newer one another writer stored meanwhile.  So the row is re-read here, locked
    (``select_for_update``: PostgreSQL holds the row until commit), the CRL checked against that fresh row and
    written with an UPDATE that only matches while the row's ``updated_at`` is still the one checked
    (SQLite has no row locks: a write that slipped in between is seen, and the check runs again on the newer
    row).  Raises ``CertificateRefused(CRL_UNAVAILABLE)`` like ``apply_crl``; either way ``authority``'s CRL
    fields are left as stored, so ``refusal_message(authority, ...)`` names the CRL really kept."""
    for _attempt in range(STORE_CRL_ATTEMPTS):
        with transaction.atomic():
            fresh = TrustedAuthority.objects.select_for_update().filter(pk=authority.pk).first()
            if fresh is None:
                raise CertificateRefused(
                    Reason.CRL_UNAVAILABLE, "The authority was removed while its CRL was being fetched."
                )
            try:
                index = apply_crl(fresh, data)  # the issuer too is the stored one (a CA replaced meanwhile)
            except CertificateRefused:
                _copy_crl_fields(fresh, authority)  # apply_crl left ``fresh`` as stored
                raise
            if fetched_at is not None:
                fresh.crl_fetched_at = fetched_at
            stamp = timezone.now()
            written = TrustedAuthority.objects.filter(pk=fresh.pk, updated_at=fresh.updated_at).update(
                **{field: getattr(fresh, field) for field in CRL_FIELDS}, updated_at=stamp
            )
            if written:
                registry_changed()  # update() sends no post_save: every worker reloads its trust store
                authority.updated_at = stamp
                _copy_crl_fields(fresh, authority)
                return index
        # Another writer changed the row between the read and the write: read it again and check again.
    raise CertificateRefused(
        Reason.CRL_UNAVAILABLE,
        "The authority's row kept changing while this CRL was being stored; nothing was written. Try again.",
    )


def save_without_crl(authority: TrustedAuthority) -> None:
    """Save an existing row's columns except its CRL ones.  The CRL on an instance is the one read when the
    instance was loaded (an admin form, say); written back as a whole row it would undo a CRL ``store_crl``
    stored meanwhile.  A CRL goes onto an existing row only through ``store_crl``."""
    fields = [f.name for f in authority._meta.concrete_fields if not f.primary_key and f.name not in CRL_FIELDS]
    authority.save(update_fields=fields)


def _copy_crl_fields(source: TrustedAuthority, target: TrustedAuthority) -> None:
    for field in CRL_FIELDS:
        setattr(target, field, getattr(source, field))


def _held_crl(authority: TrustedAuthority) -> x509.CertificateRevocationList | None:
    if not authority.crl_der:
        return None
    try:
        return x509.load_der_x509_crl(bytes(authority.crl_der))
    except ValueError:
        return None


def refusal_message(authority: TrustedAuthority, why: str) -> str:
    """What an operator reads when a new CRL for ``authority`` was refused: why, and what stays in force."""
    if authority.crl_last_update is None:
        return f"CRL refused: {why} No CRL is held for this authority (in 'crl' mode: crl_unavailable)."
    next_update = authority.crl_next_update
    if next_update is None:
        return f"CRL refused: {why} The previous CRL is kept (it has no nextUpdate)."
    if next_update <= timezone.now():
        return (
            f"CRL refused: {why} The previous CRL is kept, but its nextUpdate {next_update.isoformat()} has "
            "passed: in 'crl' mode requests get crl_unavailable (or are accepted with REVOCATION_FAIL_OPEN)."
        )
    return f"CRL refused: {why} The previous CRL is kept until its nextUpdate {next_update.isoformat()}."


@transaction.atomic
def add_authority(
    name: str,
    certificate_data: bytes,
    *,
    notes: str = "",
    crl_data: bytes | None = None,
    crl_url: str = "",
    ocsp_url: str = "",
    enabled: bool = True,
) -> TrustedAuthority:
    """Register a CA certificate (PEM or DER) as a trusted authority, optionally with a CRL file or URL and
    an OCSP responder URL.
    Raises ``CertificateRefused`` for a non-CA certificate or a CRL that does not verify."""
    certificate = load_authority_certificate(certificate_data)
    authority = TrustedAuthority(name=name, notes=notes, crl_url=crl_url, ocsp_url=ocsp_url, is_enabled=enabled)
    fill_authority(authority, certificate)
    if crl_data is not None:
        apply_crl(authority, crl_data, certificate)
    authority.save()
    return authority


# --------------------------------------------------------------------------------------------------
# CRL fetching
# --------------------------------------------------------------------------------------------------


#: CRLs of this many authorities are downloaded at once by ``refresh_due_crls``.
CRL_FETCH_CONCURRENCY = 8


class CrlFetchError(Exception):
    """A CRL could not be downloaded; the message is one of ``certauth.fetch``'s fixed texts."""


def fetch_crl(url: str, *, timeout: float | None = None, max_bytes: int | None = None) -> bytes:
    """Download a CRL (``certauth.fetch``: http(s) only, checked redirects, one total deadline of
    ``CRL_FETCH_TIMEOUT_SECONDS``, at most ``CRL_MAX_BYTES``).  Raises ``CrlFetchError``."""
    timeout = float(settings.CRL_FETCH_TIMEOUT_SECONDS if timeout is None else timeout)
    limit = int(settings.CRL_MAX_BYTES if max_bytes is None else max_bytes)
    try:
        return fetch(url, timeout=timeout, max_bytes=limit, accept="application/pkix-crl, */*")
    except FetchError as exc:
        raise CrlFetchError(str(exc)) from None


@dataclass(frozen=True)
class RefreshResult:
    authority: str
    ok: bool
    message: str


def refresh_crl(
    authority: TrustedAuthority, *, now: dt.datetime | None = None, fetched: bytes | CrlFetchError | None = None
) -> RefreshResult:
    """Fetch the authority's CRL from ``crl_url`` (or take ``fetched``, what a concurrent fetch got) and store
    it through ``store_crl`` (checked against the row as stored after the download, not as read before it).
    On failure the previous CRL stays (it turns stale at its nextUpdate) and ``crl_error`` says why; that
    write does not bump the registry generation."""
    now = now or timezone.now()
    try:
        data = fetch_crl(authority.crl_url) if fetched is None else fetched
        if isinstance(data, CrlFetchError):
            raise data
        index = store_crl(authority, data, fetched_at=now)
    except (CrlFetchError, CertificateRefused) as exc:
        if isinstance(exc, CertificateRefused):
            message = refusal_message(authority, exc.detail)
        else:
            message = f"Could not fetch the CRL: {exc}"
        message = printable(message)  # fixed texts today; escaped anyway before a log line or the admin
        TrustedAuthority.objects.filter(pk=authority.pk).update(crl_error=message[:2000], crl_fetched_at=now)
        logger.warning("certauth CRL refresh failed for %r: %s", authority.name, message)
        return RefreshResult(authority.name, False, message)
    next_update = index.next_update.isoformat() if index.next_update else "never"
    return RefreshResult(authority.name, True, f"{len(index)} revoked serials, next update {next_update}")


def due_for_refresh(now: dt.datetime | None = None) -> QuerySet[TrustedAuthority]:
    """Authorities with a ``crl_url`` whose CRL was never fetched, is older than ``CRL_REFRESH_SECONDS``,
    or whose nextUpdate has passed (retried every ``CRL_RETRY_SECONDS``)."""
    now = now or timezone.now()
    refresh_before = now - dt.timedelta(seconds=settings.CRL_REFRESH_SECONDS)
    retry_before = now - dt.timedelta(seconds=CRL_RETRY_SECONDS)
    return (
        TrustedAuthority.objects.exclude(crl_url="")
        .filter(
            Q(crl_fetched_at__isnull=True)
            | Q(crl_fetched_at__lte=refresh_before)
            | Q(crl_next_update__lte=now, crl_fetched_at__lte=retry_before)
        )
        .order_by("name")
    )


def stale_crls(now: dt.datetime | None = None) -> QuerySet[TrustedAuthority]:
    """Enabled authorities whose CRL is past its nextUpdate, or whose CRL URL has not been fetched successfully
    for two ``CRL_REFRESH_SECONDS`` (never fetched, fetched long ago, or the last fetch failed): what the admin
    dashboard counts and the authorities' "CRL: stale" filter lists."""
    now = now or timezone.now()
    late = now - dt.timedelta(seconds=2 * settings.CRL_REFRESH_SECONDS)
    not_refreshed = ~Q(crl_url="") & (Q(crl_fetched_at__isnull=True) | Q(crl_fetched_at__lte=late) | ~Q(crl_error=""))
    return TrustedAuthority.objects.filter(is_enabled=True).filter(Q(crl_next_update__lte=now) | not_refreshed)


def refresh_due_crls(*, force: bool = False, now: dt.datetime | None = None) -> list[RefreshResult]:
    """Refresh every CRL that is due (or every CRL with a URL when ``force``)."""
    authorities = list(TrustedAuthority.objects.exclude(crl_url="").order_by("name") if force else due_for_refresh(now))
    if not authorities:
        return []
    # The downloads run concurrently, each within its own CRL_FETCH_TIMEOUT_SECONDS: a slow or trickling
    # distribution point holds one worker thread until its deadline and delays no other authority.  Only the
    # network runs in threads; verifying and storing stay on this thread (one database connection).
    with ThreadPoolExecutor(max_workers=min(CRL_FETCH_CONCURRENCY, len(authorities))) as pool:
        downloads = list(pool.map(_download, [authority.crl_url for authority in authorities]))
    return [refresh_crl(a, now=now, fetched=data) for a, data in zip(authorities, downloads, strict=True)]


def _download(url: str) -> bytes | CrlFetchError:
    try:
        return fetch_crl(url)
    except CrlFetchError as exc:
        return exc
    except Exception:
        # fetch() raises FetchError alone; should anything else ever escape, it costs this authority's
        # refresh only, never the whole run (pool.map would re-raise it and drop every other result).
        logger.exception("certauth CRL download failed unexpectedly")
        return CrlFetchError("connection failed")


def seconds_until_next_refresh(now: dt.datetime | None = None) -> float:
    """How long ``crl-refresh --loop`` may sleep: until the earliest nextUpdate or scheduled refresh."""
    now = now or timezone.now()
    interval = float(settings.CRL_REFRESH_SECONDS)
    candidates = [interval]
    for fetched, next_update in TrustedAuthority.objects.exclude(crl_url="").values_list(
        "crl_fetched_at", "crl_next_update"
    ):
        if fetched is None:
            return 0.0
        candidates.append((fetched - now).total_seconds() + interval)
        if next_update is not None:
            candidates.append(max((next_update - now).total_seconds(), CRL_RETRY_SECONDS))
    return max(0.0, min(candidates))


# --- the proxy's CA bundle ------------------------------------------------------------------------------
def enabled_bundle_authorities(using: str | None = None) -> list[proxybundle.Authority]:
    """The enabled authorities as ``certauth.proxybundle`` compares them, by name (an unreadable stored
    certificate is skipped, as ``load_authorities`` does).  Raises ``DatabaseError``."""
    rows = TrustedAuthority.objects.using(using).filter(is_enabled=True).order_by("name")
    authorities = []
    for name, pem in rows.values_list("name", "certificate_pem"):
        try:
            certificate = load_authority_certificate(pem.encode("ascii", "replace"))
        except CertificateRefused:
            continue
        authorities.append(proxybundle.Authority(name, certificate))
    return authorities


def proxy_bundle_report(using: str | None = None) -> proxybundle.BundleReport | None:
    """The differences between ``PROXY_CA_BUNDLE`` and the enabled authorities; None when the setting is
    unset (nothing to compare).  Raises ``DatabaseError``."""
    if not settings.PROXY_CA_BUNDLE:
        return None
    return proxybundle.compare(settings.PROXY_CA_BUNDLE, enabled_bundle_authorities(using))

"""OCSP (RFC 6960): ask the issuing authority's responder whether a certificate is revoked.  Pure Python on
``cryptography.x509.ocsp``: no Django imports.  ``certauth.trust`` calls ``OcspChecker.check`` for every
certificate below the anchor when ``REVOCATION_MODE`` includes OCSP; ``certauth.authorities`` builds the
checker with ``certauth.fetch`` as its transport.

What is accepted, and why:

* **The responder**: the one configured on the issuing authority (``TrustedAuthority.ocsp_url``) when set,
  else the first http(s) OCSP URL of the certificate's Authority Information Access.
* **The signature** must verify with the issuing CA's key (responder id = the CA), or with a *delegated
  responder* certificate carried in the response that the same CA issued directly, that has the
  id-kp-OCSPSigning extended key usage, is valid now (RFC 6960 4.2.2.2) and carries id-pkix-ocsp-nocheck.
  Anything else, an unrelated key above all, is refused: an attacker on the path could otherwise answer
  "good" for anything.  The responder certificate's own revocation is not checked (asking its own
  responder would have it vouch for itself); id-pkix-ocsp-nocheck is the CA saying so (RFC 6960 4.2.2.2.1,
  required of delegated responders by the CA/Browser Forum), and a CA that sets it keeps the certificate
  short-lived.  A responder certificate without it is refused rather than trusted unchecked for its whole
  life.
* **Freshness**: thisUpdate may be at most ``skew`` in the future; nextUpdate, when present, must not have
  passed (by more than ``skew``); a response without nextUpdate counts as fresh for ``max_age`` after its
  thisUpdate.  The request carries a nonce; when the response echoes one it must match (pre-signed
  responses from a CDN carry none, which is allowed: the freshness rules still hold).
* **The answer** is cached per certificate (issuer + serial) in a bounded LRU until the earliest of its
  nextUpdate and ``max_age`` from now, so a known certificate costs no network call; a failure is cached
  for ``retry_seconds`` so a responder that is down does not make every request wait for the timeout.
  A certificate's responder is asked by one thread at a time (per checker, so per worker process): the
  requests that arrive while it is being asked wait for that answer (or failure) instead of each sending
  their own, so a cold cache after a restart costs the responder one request per certificate per worker.

Errors are ``OcspError`` with a fixed, safe text (never the responder's words).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from .fetch import FetchError
from .lru import BoundedCache

#: A responder's answer is at most this large (they are a few KiB).
MAX_RESPONSE_BYTES = 64 * 1024

Status = Literal["good", "revoked", "unknown"]
#: How the transport is called: (responder URL, DER request) -> DER response.  Raises on any failure.
Post = Callable[[str, bytes], bytes]


class OcspError(Exception):
    """The status could not be established (responder down, bad signature, stale answer...).  ``str()`` is a
    fixed text, safe to log, store and show."""


@dataclass(frozen=True, slots=True)
class OcspAnswer:
    """A verified answer for one certificate, usable until ``cache_until``."""

    status: Status
    this_update: dt.datetime
    next_update: dt.datetime | None
    cache_until: dt.datetime
    revocation_time: dt.datetime | None = None
    revocation_reason: str = ""


@dataclass(frozen=True, slots=True)
class _Failed:
    message: str
    retry_at: dt.datetime


# --------------------------------------------------------------------------------------------------
# Requests and responses
# --------------------------------------------------------------------------------------------------


def responder_urls(certificate: x509.Certificate) -> list[str]:
    """The http(s) OCSP responder URLs in the certificate's Authority Information Access, in order."""
    try:
        access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except Exception:
        return []
    urls = []
    for description in access:
        location = description.access_location
        if description.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            location, x509.UniformResourceIdentifier
        ):
            if location.value.lower().startswith(("http://", "https://")):
                urls.append(location.value)
    return urls


def build_request(certificate: x509.Certificate, issuer: x509.Certificate, nonce: bytes | None = None) -> bytes:
    """A DER OCSP request for one certificate.  CertID hashes with SHA-1, which every responder understands
    (RFC 5019); it only names the certificate, the response's own signature is what is trusted."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())  # noqa: S303
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def verify_response(
    data: bytes,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    now: dt.datetime,
    *,
    nonce: bytes | None = None,
    skew: dt.timedelta = dt.timedelta(minutes=1),
    max_age: dt.timedelta = dt.timedelta(hours=1),
) -> OcspAnswer:
    """Check a DER OCSP response for ``certificate`` (issued by ``issuer``) at ``now``: signature, responder,
    freshness, nonce.  Returns the answer (good, revoked or unknown).  Raises ``OcspError`` and nothing else."""
    try:
        response = ocsp.load_der_ocsp_response(data)
    except Exception:
        raise OcspError("the responder's answer is not an OCSP response") from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspError(f"the responder answered {response.response_status.name.lower()}")
    try:
        single = _single_response_for(response, certificate, issuer)
        _check_signature(response, issuer, now)
        _check_nonce(response, nonce)
        this_update, next_update = single.this_update_utc, single.next_update_utc
        status = single.certificate_status
        revocation_time = single.revocation_time_utc if status == ocsp.OCSPCertStatus.REVOKED else None
        reason = single.revocation_reason if status == ocsp.OCSPCertStatus.REVOKED else None
    except OcspError:
        raise
    except Exception:
        raise OcspError("the OCSP response could not be read") from None
    if this_update > now + skew:
        raise OcspError("the OCSP response is not valid yet (thisUpdate is in the future)")
    if next_update is not None:
        if now > next_update + skew:
            raise OcspError("the OCSP response is stale (its nextUpdate has passed)")
        cache_until = min(next_update, now + max_age)
    else:
        if now > this_update + max_age:
            raise OcspError("the OCSP response is stale (no nextUpdate and thisUpdate too old)")
        cache_until = min(this_update + max_age, now + max_age)
    return OcspAnswer(
        status=_STATUS[status],
        this_update=this_update,
        next_update=next_update,
        cache_until=max(now, cache_until),
        revocation_time=revocation_time,
        revocation_reason=reason.name if reason is not None else "",
    )


_STATUS: dict[ocsp.OCSPCertStatus, Status] = {
    ocsp.OCSPCertStatus.GOOD: "good",
    ocsp.OCSPCertStatus.REVOKED: "revoked",
    ocsp.OCSPCertStatus.UNKNOWN: "unknown",
}


def _single_response_for(
    response: ocsp.OCSPResponse, certificate: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse:
    for single in response.responses:
        if single.serial_number != certificate.serial_number:
            continue
        # The CertID's hashes, computed with the algorithm the responder chose.
        expected = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, single.hash_algorithm).build()
        if single.issuer_name_hash == expected.issuer_name_hash and single.issuer_key_hash == expected.issuer_key_hash:
            return single
    raise OcspError("the OCSP response does not answer for this certificate")


def _key_hash(certificate: x509.Certificate) -> bytes:
    # RFC 6960 ResponderID byKey: SHA-1 of the subjectPublicKey BIT STRING, which is what a key identifier
    # "method 1" computes.
    return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest  # type: ignore[arg-type]


def _is_responder(response: ocsp.OCSPResponse, certificate: x509.Certificate) -> bool:
    if response.responder_name is not None:
        return bool(response.responder_name == certificate.subject)
    return response.responder_key_hash == _key_hash(certificate)


def _check_signature(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime) -> None:
    if _is_responder(response, issuer):
        signer = issuer
    else:
        signer = _delegated_responder(response, issuer, now)
    hash_algorithm = response.signature_hash_algorithm
    try:
        _verify(signer.public_key(), response.signature, response.tbs_response_bytes, hash_algorithm)
    except (InvalidSignature, ValueError, TypeError):
        raise OcspError("the OCSP response's signature does not verify") from None


def _delegated_responder(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime) -> x509.Certificate:
    for candidate in response.certificates:
        if not _is_responder(response, candidate):
            continue
        try:
            if candidate.issuer != issuer.subject:
                continue
            candidate.verify_directly_issued_by(issuer)
            usages = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except Exception:  # noqa: S112 - a certificate the CA did not issue (or without EKU) is no responder
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
            raise OcspError("the OCSP responder's certificate lacks the OCSPSigning usage")
        if not candidate.not_valid_before_utc <= now <= candidate.not_valid_after_utc:
            raise OcspError("the OCSP responder's certificate is expired or not yet valid")
        try:
            candidate.extensions.get_extension_for_class(x509.OCSPNoCheck)
        except x509.ExtensionNotFound:
            # Nothing here can check the responder's own revocation: only the CA's nocheck makes it acceptable.
            raise OcspError(
                "the OCSP responder's certificate lacks id-pkix-ocsp-nocheck, so its own revocation is unknown"
            ) from None
        return candidate
    raise OcspError("the OCSP response is signed by a key that is neither the authority nor its responder")


def _verify(public_key: object, signature: bytes, data: bytes, hash_algorithm: hashes.HashAlgorithm | None) -> None:
    if isinstance(public_key, rsa.RSAPublicKey) and hash_algorithm is not None:
        public_key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey) and hash_algorithm is not None:
        public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
    elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        public_key.verify(signature, data)
    else:
        raise OcspError("the OCSP response's signature algorithm is not supported")


def _check_nonce(response: ocsp.OCSPResponse, nonce: bytes | None) -> None:
    if nonce is None:
        return
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return  # not echoed (pre-signed responses): freshness is still enforced
    if echoed != nonce:
        raise OcspError("the OCSP response's nonce does not match the request")


# --------------------------------------------------------------------------------------------------
# The checker: responder choice, transport, cache
# --------------------------------------------------------------------------------------------------


class OcspChecker:
    """Asks responders through ``post`` and remembers the answers (see the module docstring).  Thread-safe;
    one per worker, kept across trust-store rebuilds."""

    def __init__(
        self,
        post: Post,
        *,
        cache_size: int = 2048,
        max_age_seconds: float = 3600,
        skew_seconds: float = 60,
        retry_seconds: float = 30,
        send_nonce: bool = True,
    ) -> None:
        self.post = post
        self.max_age = dt.timedelta(seconds=max_age_seconds)
        self.skew = dt.timedelta(seconds=skew_seconds)
        self.retry = dt.timedelta(seconds=retry_seconds)
        self.send_nonce = send_nonce
        self._answers: BoundedCache[tuple[str, int], OcspAnswer | _Failed] = BoundedCache(cache_size)
        # Per certificate being asked right now: its lock and how many threads hold or wait for it.  Entries
        # live only while someone is inside, so this is bounded by the number of threads.
        self._asking: dict[tuple[str, int], tuple[threading.Lock, int]] = {}
        self._asking_guard = threading.Lock()

    def check(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        issuer_thumbprint: str,
        now: dt.datetime,
        responder_url: str = "",
    ) -> OcspAnswer:
        """The verified status of ``certificate``, from the cache while it holds, else from the responder
        (``responder_url`` when given, else the certificate's AIA).  Raises ``OcspError``."""
        key = (issuer_thumbprint, certificate.serial_number)
        cached = self._cached(key, now)
        if cached is not None:
            return cached
        with self._one_asker(key):
            cached = self._cached(key, now)  # the answer another thread fetched while this one waited
            if cached is not None:
                return cached
            try:
                answer = self._ask(certificate, issuer, now, responder_url)
            except OcspError as error:
                self._answers.set(key, _Failed(str(error), now + self.retry))
                raise
            self._answers.set(key, answer)
            return answer

    def _cached(self, key: tuple[str, int], now: dt.datetime) -> OcspAnswer | None:
        """The answer held for ``key`` at ``now``, None when there is none; raises a failure still held."""
        cached = self._answers.get(key)
        if isinstance(cached, OcspAnswer) and cached.this_update - self.skew <= now < cached.cache_until:
            return cached
        if isinstance(cached, _Failed) and now < cached.retry_at:
            raise OcspError(cached.message)
        return None

    @contextmanager
    def _one_asker(self, key: tuple[str, int]) -> Iterator[None]:
        with self._asking_guard:
            entry = self._asking.get(key)
            lock, users = entry if entry is not None else (threading.Lock(), 0)
            self._asking[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._asking_guard:
                lock, users = self._asking[key]
                if users == 1:
                    del self._asking[key]
                else:
                    self._asking[key] = (lock, users - 1)

    def _ask(
        self, certificate: x509.Certificate, issuer: x509.Certificate, now: dt.datetime, responder_url: str
    ) -> OcspAnswer:
        url = responder_url or next(iter(responder_urls(certificate)), "")
        if not url:
            raise OcspError("no OCSP responder is known (no AIA OCSP URL and none configured on the authority)")
        nonce = os.urandom(16) if self.send_nonce else None
        try:
            data = self.post(url, build_request(certificate, issuer, nonce))
        except Exception as exc:  # the transport's own fixed text when it has one
            raise OcspError(f"the OCSP responder could not be reached ({_transport_text(exc)})") from None
        return verify_response(data, certificate, issuer, now, nonce=nonce, skew=self.skew, max_age=self.max_age)

    def clear(self) -> None:
        self._answers.clear()


def _transport_text(error: Exception) -> str:
    return str(error) if isinstance(error, FetchError) else "transport error"

"""OCSP end to end against a real responder: ``openssl ocsp -index ... -port ...`` started on loopback by the
test (scripts.ocsp_responder), answering from a CA database written from devpki-issued certificates.  The
pure layer (certauth.ocsp, certauth.trust) first, then the DRF API as nginx calls it."""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as x509_ocsp
from django.test import override_settings

from certauth import devpki
from certauth.fetch import fetch
from certauth.ocsp import OcspAnswer, OcspChecker, OcspError, build_request, responder_urls, verify_response
from certauth.reasons import CertificateRefused, Reason
from certauth.trust import Authority, TrustPolicy, TrustResult, TrustStore
from scripts.ocsp_responder import OcspResponder

from .conftest import failures


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CountingTransport:
    """certauth.fetch as the checker uses it, counting the responder round trips."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, url: str, request: bytes) -> bytes:
        self.calls += 1
        return fetch(url, timeout=5, max_bytes=65536, data=request, content_type="application/ocsp-request")


@dataclass
class OcspPki:
    ca: devpki.Issued
    responder: OcspResponder
    good: devpki.Issued
    good2: devpki.Issued
    revoked: devpki.Issued
    unknown: devpki.Issued
    no_aia: devpki.Issued
    directory: Path

    def responder_for(self, name: str, **kwargs: Any) -> OcspResponder:
        """Another responder for the same CA (its own port), not started."""
        return OcspResponder(self.directory, self.ca, name=name, **kwargs)

    def start(self, responder: OcspResponder) -> OcspResponder:
        return responder.start(good=[self.good, self.good2, self.no_aia], revoked=[self.revoked])


@pytest.fixture(scope="module")
def ocsp_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OcspPki]:
    directory = tmp_path_factory.mktemp("ocsp")
    ca = devpki.make_ca("certauth OCSP test CA")
    responder = OcspResponder(directory, ca, next_minutes=60)

    def issue(name: str) -> devpki.Issued:
        return devpki.issue_client(ca, name, ocsp_url=responder.url)

    pki = OcspPki(
        ca=ca,
        responder=responder,
        good=issue("ocsp-good"),
        good2=issue("ocsp-good-2"),
        revoked=issue("ocsp-revoked"),
        unknown=issue("ocsp-unknown"),  # never written to the responder's database
        no_aia=devpki.issue_client(ca, "ocsp-no-aia"),
        directory=directory,
    )
    pki.start(responder)
    try:
        yield pki
    finally:
        responder.stop()


def store(
    pki: OcspPki, checker: OcspChecker, *, fail_open: bool = False, ocsp_url: str = "", crl: bool = False
) -> TrustStore:
    policy = TrustPolicy(check_ocsp=True, check_crl=crl, revocation_fail_open=fail_open)
    authority = Authority.from_certificate(1, "ocsp CA", pki.ca.certificate, ocsp_url=ocsp_url)
    return TrustStore([authority], policy, ocsp=checker)


def evaluate(trust: TrustStore, issued: devpki.Issued, at: dt.datetime | None = None) -> TrustResult:
    return trust.evaluate(issued.certificate, [], at or now())


def refusal(trust: TrustStore, issued: devpki.Issued, at: dt.datetime | None = None) -> CertificateRefused:
    with pytest.raises(CertificateRefused) as info:
        evaluate(trust, issued, at)
    return info.value


# --- the pure layer against the real responder ------------------------------------------------------------
def test_good_revoked_and_unknown_answers_of_a_real_responder(ocsp_pki: OcspPki) -> None:
    assert responder_urls(ocsp_pki.good.certificate) == [ocsp_pki.responder.url]
    trust = store(ocsp_pki, OcspChecker(CountingTransport()))
    assert evaluate(trust, ocsp_pki.good).kind == "chained"
    revoked = refusal(trust, ocsp_pki.revoked)
    assert revoked.reason is Reason.CERTIFICATE_REVOKED and "OCSP" in revoked.detail
    assert "key_compromise" in revoked.detail
    unknown = refusal(trust, ocsp_pki.unknown)
    assert unknown.reason is Reason.UNTRUSTED_ISSUER and "status unknown" in unknown.detail


def test_the_warm_path_asks_no_responder(ocsp_pki: OcspPki) -> None:
    transport = CountingTransport()
    checker = OcspChecker(transport)
    first = evaluate(store(ocsp_pki, checker), ocsp_pki.good)
    assert transport.calls == 1
    # A rebuilt trust store (any registry change) keeps the worker's OCSP answers.
    second = evaluate(store(ocsp_pki, checker), ocsp_pki.good)
    assert transport.calls == 1 and second.kind == "chained"
    # The answer holds no longer than the responder's nextUpdate (-nmin 60).
    assert first.valid_until is not None and first.valid_until <= now() + dt.timedelta(minutes=61)


def test_the_answer_cache_is_bounded(ocsp_pki: OcspPki) -> None:
    transport = CountingTransport()
    checker = OcspChecker(transport, cache_size=1)
    for issued in (ocsp_pki.good, ocsp_pki.good2, ocsp_pki.good):
        evaluate(store(ocsp_pki, checker), issued)
    assert transport.calls == 3  # the first answer was evicted by the second


def test_concurrent_first_checks_of_one_certificate_ask_the_responder_once(ocsp_pki: OcspPki) -> None:
    """While a certificate's responder is being asked, another request for the same certificate waits for that
    answer instead of sending its own (a cold cache after a restart must not cost the responder one request per
    concurrent client request).  The first request's transport starts the second check and gives it every
    chance to finish on its own: it can only if it does not wait.  No timing decides the outcome: the join's
    bound only limits how long a waiting second check holds up the first."""
    ca, good = ocsp_pki.ca, ocsp_pki.good
    asked: list[str] = []
    second_status: list[str] = []
    second: list[threading.Thread] = []

    def check() -> OcspAnswer:
        return checker.check(good.certificate, ca.certificate, ca.thumbprint, now())

    def transport(url: str, request: bytes) -> bytes:
        asked.append(url)
        if len(asked) == 1:
            second.append(threading.Thread(target=lambda: second_status.append(check().status)))
            second[0].start()
            second[0].join(timeout=2)
        return fetch(url, timeout=5, max_bytes=65536, data=request, content_type="application/ocsp-request")

    checker = OcspChecker(transport)
    first = check()
    second[0].join(timeout=30)
    assert first.status == "good" and second_status == ["good"]
    assert len(asked) == 1, "the second check sent its own request while the first was in flight"


def test_a_responder_killed_mid_run_fails_closed_or_open_with_a_warning(ocsp_pki: OcspPki) -> None:
    responder = ocsp_pki.start(ocsp_pki.responder_for("killed"))
    transport = CountingTransport()
    checker = OcspChecker(transport)
    try:
        assert evaluate(store(ocsp_pki, checker, ocsp_url=responder.url), ocsp_pki.good).kind == "chained"
    finally:
        responder.stop()
    trust = store(ocsp_pki, checker, ocsp_url=responder.url)
    assert evaluate(trust, ocsp_pki.good).kind == "chained"  # answered from the cache: no network
    down = refusal(trust, ocsp_pki.good2)
    assert down.reason is Reason.OCSP_UNAVAILABLE and "could not be reached (connection refused)" in down.detail
    calls = transport.calls
    assert refusal(store(ocsp_pki, checker, ocsp_url=responder.url), ocsp_pki.good2).reason is Reason.OCSP_UNAVAILABLE
    assert transport.calls == calls  # a failure is remembered for OCSP_RETRY_SECONDS, not retried per request
    opened = evaluate(store(ocsp_pki, OcspChecker(transport), ocsp_url=responder.url, fail_open=True), ocsp_pki.good2)
    assert opened.revocation_warning and opened.revocation_warning_reason is Reason.OCSP_UNAVAILABLE
    assert opened.valid_until is not None and opened.valid_until <= now() + dt.timedelta(seconds=31)


def test_a_responder_that_never_answers_is_cut_at_the_deadline(ocsp_pki: OcspPki) -> None:
    silent = socket.socket()  # accepts connections (the kernel's backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/"

    def post(responder: str, request: bytes) -> bytes:
        return fetch(responder, timeout=0.5, max_bytes=65536, data=request, content_type="application/ocsp-request")

    try:
        refused = refusal(store(ocsp_pki, OcspChecker(post), ocsp_url=url), ocsp_pki.good)
    finally:
        silent.close()
    assert refused.reason is Reason.OCSP_UNAVAILABLE and "(timed out)" in refused.detail


def test_a_response_signed_by_an_unrelated_key_is_refused(ocsp_pki: OcspPki) -> None:
    stranger = devpki.make_ca("unrelated OCSP signer")
    responder = ocsp_pki.start(ocsp_pki.responder_for("wrong-signer", signer=stranger))
    try:
        trust = store(ocsp_pki, OcspChecker(CountingTransport()), ocsp_url=responder.url)
        refused = refusal(trust, ocsp_pki.good)
    finally:
        responder.stop()
    assert refused.reason is Reason.OCSP_UNAVAILABLE and "signed by a key" in refused.detail


def test_a_signer_of_the_same_ca_without_ocsp_signing_is_refused(ocsp_pki: OcspPki) -> None:
    plain_leaf = devpki.issue_client(ocsp_pki.ca, "not a responder")
    responder = ocsp_pki.start(ocsp_pki.responder_for("leaf-signer", signer=plain_leaf))
    try:
        refused = refusal(store(ocsp_pki, OcspChecker(CountingTransport()), ocsp_url=responder.url), ocsp_pki.good)
    finally:
        responder.stop()
    assert refused.reason is Reason.OCSP_UNAVAILABLE and "OCSPSigning" in refused.detail


def test_a_delegated_responder_with_ocsp_signing_is_accepted(ocsp_pki: OcspPki) -> None:
    delegated = devpki.issue_ocsp_responder(ocsp_pki.ca)
    responder = ocsp_pki.start(ocsp_pki.responder_for("delegated", signer=delegated))
    try:
        trust = store(ocsp_pki, OcspChecker(CountingTransport()), ocsp_url=responder.url)
        assert evaluate(trust, ocsp_pki.good).kind == "chained"
        assert refusal(trust, ocsp_pki.revoked).reason is Reason.CERTIFICATE_REVOKED
    finally:
        responder.stop()


def test_a_delegated_responder_without_ocsp_nocheck_is_refused(ocsp_pki: OcspPki) -> None:
    """Nothing checks a delegated responder certificate's own revocation (its responder would vouch for itself):
    only the CA's id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1) makes that acceptable.  Without it, a revoked (say,
    compromised) responder key would answer "good" for every certificate until the responder certificate
    expires: such a response is refused."""
    unchecked = devpki.issue_ocsp_responder(ocsp_pki.ca, ocsp_nocheck=False)
    responder = ocsp_pki.start(ocsp_pki.responder_for("no-nocheck", signer=unchecked))
    try:
        refused = refusal(store(ocsp_pki, OcspChecker(CountingTransport()), ocsp_url=responder.url), ocsp_pki.good)
    finally:
        responder.stop()
    assert refused.reason is Reason.OCSP_UNAVAILABLE and "ocsp-nocheck" in refused.detail


def test_a_response_past_its_next_update_is_refused_and_never_served_from_the_cache(ocsp_pki: OcspPki) -> None:
    responder = ocsp_pki.start(ocsp_pki.responder_for("short", next_minutes=1))
    transport = CountingTransport()
    checker = OcspChecker(transport)
    try:
        assert evaluate(store(ocsp_pki, checker, ocsp_url=responder.url), ocsp_pki.good).kind == "chained"
        # Ten minutes on (a "now" given, no sleeping): the cached answer's nextUpdate has passed, so the
        # responder is asked again, and its answer (nextUpdate one minute after the real clock) is stale too.
        later = now() + dt.timedelta(minutes=10)
        stale = refusal(store(ocsp_pki, checker, ocsp_url=responder.url), ocsp_pki.good, later)
    finally:
        responder.stop()
    assert transport.calls == 2
    assert stale.reason is Reason.OCSP_UNAVAILABLE and "stale" in stale.detail


def test_the_authority_responder_is_used_when_the_certificate_names_none(ocsp_pki: OcspPki) -> None:
    assert responder_urls(ocsp_pki.no_aia.certificate) == []
    none = refusal(store(ocsp_pki, OcspChecker(CountingTransport())), ocsp_pki.no_aia)
    assert none.reason is Reason.OCSP_UNAVAILABLE and "no OCSP responder is known" in none.detail
    trust = store(ocsp_pki, OcspChecker(CountingTransport()), ocsp_url=ocsp_pki.responder.url)
    assert evaluate(trust, ocsp_pki.no_aia).kind == "chained"


# --- responses the openssl responder does not produce: built here -------------------------------------------
def built_response(
    issued: devpki.Issued,
    ca: devpki.Issued,
    *,
    nonce: bytes | None,
    this_update: dt.datetime,
    next_update: dt.datetime | None,
    status: x509_ocsp.OCSPCertStatus = x509_ocsp.OCSPCertStatus.GOOD,
) -> bytes:
    revoked = status == x509_ocsp.OCSPCertStatus.REVOKED
    builder = (
        x509_ocsp.OCSPResponseBuilder()
        .add_response(
            cert=issued.certificate,
            issuer=ca.certificate,
            algorithm=hashes.SHA1(),
            cert_status=status,
            this_update=this_update,
            next_update=next_update,
            revocation_time=this_update if revoked else None,
            revocation_reason=x509.ReasonFlags.certificate_hold if revoked else None,
        )
        .responder_id(x509_ocsp.OCSPResponderEncoding.HASH, ca.certificate)
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    response = builder.sign(ca.private_key, hashes.SHA256())  # type: ignore[arg-type]
    return response.public_bytes(serialization.Encoding.DER)


def test_nonce_and_this_update_are_checked(ocsp_pki: OcspPki) -> None:
    ca, good = ocsp_pki.ca, ocsp_pki.good
    at = now().replace(microsecond=0)  # what ASN.1 GeneralizedTime keeps
    fresh = {"this_update": at - dt.timedelta(minutes=1), "next_update": at + dt.timedelta(hours=1)}
    sent = b"0123456789abcdef"
    assert build_request(good.certificate, ca.certificate, sent)  # a request carries the nonce
    answer = verify_response(built_response(good, ca, nonce=sent, **fresh), good.certificate, ca.certificate, at,
                             nonce=sent)  # fmt: skip
    assert answer.status == "good" and answer.cache_until == fresh["next_update"]
    # Responder id by key hash works; no echoed nonce is allowed (pre-signed responses).
    assert verify_response(built_response(good, ca, nonce=None, **fresh), good.certificate, ca.certificate, at,
                           nonce=sent).status == "good"  # fmt: skip
    with pytest.raises(OcspError, match="nonce"):
        verify_response(built_response(good, ca, nonce=b"replayed-nonce!!", **fresh), good.certificate,
                        ca.certificate, at, nonce=sent)  # fmt: skip
    future = {"this_update": at + dt.timedelta(hours=1), "next_update": at + dt.timedelta(hours=2)}
    with pytest.raises(OcspError, match="not valid yet"):
        verify_response(built_response(good, ca, nonce=None, **future), good.certificate, ca.certificate, at)
    with pytest.raises(OcspError, match="does not answer for this certificate"):
        verify_response(built_response(good, ca, nonce=None, **fresh), ocsp_pki.good2.certificate, ca.certificate, at)
    with pytest.raises(OcspError, match="not an OCSP response"):
        verify_response(b"<html>\ncertauth refused forged</html>", good.certificate, ca.certificate, at)


class ScriptedResponder:
    """An http.server on 127.0.0.1:<kernel's port> answering each OCSP POST with the next of ``answers`` (the
    last one again once they run out), counting the requests."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers, self.asked = answers, 0
        responder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = responder.answers[min(responder.asked, len(responder.answers) - 1)]
                responder.asked += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ocsp"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("first", [x509_ocsp.OCSPCertStatus.UNKNOWN, x509_ocsp.OCSPCertStatus.REVOKED])
def test_an_ocsp_unknown_refusal_lasts_no_longer_than_the_ocsp_answer(first: x509_ocsp.OCSPCertStatus) -> None:
    """A responder answers "unknown" for a certificate it has not heard of yet (a CA publishing with a delay),
    a transient state in RFC 6960; a "revoked" answer with reason certificateHold is released by the CA.  The
    trust store must keep such a refusal no longer than the OCSP answer it rests on (nextUpdate here), never
    until the leaf expires.  The clock is injected, nothing sleeps.  (Attack review 1, finding 6.)"""
    ca = devpki.make_ca("OCSP later-known CA")
    leaf = devpki.issue_client(ca, "brand new")
    at = now().replace(microsecond=0)
    later = at + dt.timedelta(hours=3)
    minute, hour = dt.timedelta(minutes=1), dt.timedelta(hours=1)
    server = ScriptedResponder(
        [
            built_response(leaf, ca, nonce=None, this_update=at - minute, next_update=at + hour, status=first),
            built_response(leaf, ca, nonce=None, this_update=later - minute, next_update=later + hour),
        ]
    )
    try:
        authority = Authority.from_certificate(1, "ca", ca.certificate, ocsp_url=server.url)
        trust = TrustStore([authority], TrustPolicy(check_ocsp=True), ocsp=OcspChecker(CountingTransport()))
        with pytest.raises(CertificateRefused) as first_refusal:
            trust.evaluate(leaf.certificate, [], at)
        assert first_refusal.value.reason in (Reason.UNTRUSTED_ISSUER, Reason.CERTIFICATE_REVOKED)
        # Within the answer's life the refusal is served from the store: no second request.
        with pytest.raises(CertificateRefused):
            trust.evaluate(leaf.certificate, [], at + dt.timedelta(minutes=30))
        assert server.asked == 1
        # Three hours on, the first answer (nextUpdate at + 1 h) is long gone: the responder must be asked
        # again, and it now knows the certificate.
        result = trust.evaluate(leaf.certificate, [], later)
    except CertificateRefused as refused:
        pytest.fail(f"still refused from the store's cache after the OCSP answer expired: {refused.detail}")
    finally:
        server.close()
    assert result.kind == "chained" and server.asked == 2


# --- through the DRF API ----------------------------------------------------------------------------------------
OCSP_MODE = {"REVOCATION_MODE": "ocsp"}


@pytest.fixture
def ocsp_authority(db: Any, ocsp_pki: OcspPki) -> Any:
    from certauth.authorities import add_authority, clear_trust_store

    clear_trust_store()
    return add_authority("ocsp CA", ocsp_pki.ca.cert_pem())


def refused(response: Any, reason: Reason) -> dict[str, Any]:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["reason"] == str(reason), body
    assert failures(reason=str(reason)), "no audit row"
    return body


@pytest.mark.django_db
def test_api_good_revoked_unknown(api: Any, register: Any, ocsp_pki: OcspPki, ocsp_authority: Any) -> None:
    for issued in (ocsp_pki.good, ocsp_pki.revoked, ocsp_pki.unknown):
        register(issued, identity=issued.common_name)
    with override_settings(CERTAUTH=OCSP_MODE):
        assert api.get("/api/whoami/", ocsp_pki.good).status_code == 200
        body = refused(api.get("/api/whoami/", ocsp_pki.revoked), Reason.CERTIFICATE_REVOKED)
        assert "OCSP" in body["detail"]
        body = refused(api.get("/api/whoami/", ocsp_pki.unknown), Reason.UNTRUSTED_ISSUER)
        assert "unknown" in body["detail"]
        assert api.get("/api/whoami/", ocsp_pki.good).status_code == 200  # warm


@pytest.mark.django_db
def test_api_responder_down_fails_closed_then_open_with_an_audit_row(
    api: Any, register: Any, ocsp_pki: OcspPki, ocsp_authority: Any
) -> None:
    from certauth.models import AuthenticationFailure

    down = ocsp_pki.responder_for("down")  # never started: nothing listens on its port
    ocsp_authority.ocsp_url = down.url
    ocsp_authority.save()
    register(ocsp_pki.good)
    with override_settings(CERTAUTH=OCSP_MODE):
        body = refused(api.get("/api/whoami/", ocsp_pki.good), Reason.OCSP_UNAVAILABLE)
        assert "could not be reached" in body["detail"]
    with override_settings(CERTAUTH={**OCSP_MODE, "REVOCATION_FAIL_OPEN": True}):
        assert api.get("/api/whoami/", ocsp_pki.good).status_code == 200
    accepted = AuthenticationFailure.objects.get(reason="ocsp_unavailable", detail__startswith="Accepted")
    assert accepted.identity is not None and accepted.identity.name == "billing"
    assert accepted.thumbprint_sha256 == ocsp_pki.good.thumbprint


@pytest.mark.django_db
def test_api_crl_and_ocsp_together(api: Any, register: Any, ocsp_pki: OcspPki, ocsp_authority: Any) -> None:
    from certauth.authorities import apply_crl

    register(ocsp_pki.good)
    register(ocsp_pki.revoked, identity="old")
    with override_settings(CERTAUTH={"REVOCATION_MODE": "crl+ocsp"}):
        # OCSP says good, but without a CRL the CRL half cannot answer.
        refused(api.get("/api/whoami/", ocsp_pki.good), Reason.CRL_UNAVAILABLE)
    apply_crl(ocsp_authority, devpki.make_crl(ocsp_pki.ca, []).public_bytes(serialization.Encoding.DER))
    ocsp_authority.save()
    with override_settings(CERTAUTH={"REVOCATION_MODE": "crl+ocsp"}):
        assert api.get("/api/whoami/", ocsp_pki.good).status_code == 200
        # The (empty) CRL does not list it; OCSP does: revoked.
        refused(api.get("/api/whoami/", ocsp_pki.revoked), Reason.CERTIFICATE_REVOKED)


def test_revocation_modes_are_checked(settings: Any) -> None:
    from certauth.checks import check_certauth_settings

    for mode, ok in (("ocsp", True), ("crl+ocsp", True), ("crl", True), ("oscp", False)):
        settings.CERTAUTH = {"REVOCATION_MODE": mode}
        ids = [message.id for message in check_certauth_settings()]
        assert ("certauth.E005" not in ids) is ok, (mode, ids)


@pytest.mark.django_db
def test_cli_adds_an_authority_with_its_ocsp_responder(ocsp_pki: OcspPki, tmp_path: Path) -> None:
    from django.core.management import call_command

    from certauth.models import TrustedAuthority

    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ocsp_pki.ca.cert_pem())
    call_command("certauth", "authority", "add", "--name", "ocsp CA", "--cert", str(ca_file),
                 "--ocsp-url", ocsp_pki.responder.url)  # fmt: skip
    assert TrustedAuthority.objects.get(name="ocsp CA").ocsp_url == ocsp_pki.responder.url


# --- above the anchor: an intermediate registered next to its root --------------------------------------------
@dataclass
class LayeredPki:
    """A root and an intermediate, both registered; the leaf's responder (the intermediate's) says good; the
    root runs two responders, one saying the intermediate is good, the other (named in the intermediate's
    AIA) that it is revoked."""

    root: devpki.Issued
    intermediate: devpki.Issued
    leaf: devpki.Issued
    root_good: OcspResponder
    root_revoked: OcspResponder
    root_down: OcspResponder  # never started


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LayeredPki]:
    directory = tmp_path_factory.mktemp("ocsp-layered")
    root = devpki.make_ca("certauth OCSP layered root")
    root_good = OcspResponder(directory, root, name="root-good", next_minutes=60)
    root_revoked = OcspResponder(directory, root, name="root-revoked", next_minutes=60)
    intermediate = devpki.make_ca("certauth OCSP layered intermediate", issuer=root, ocsp_url=root_revoked.url)
    intermediate_responder = OcspResponder(directory, intermediate, name="intermediate", next_minutes=60)
    leaf = devpki.issue_client(intermediate, "ocsp-under-intermediate", ocsp_url=intermediate_responder.url)
    pki = LayeredPki(
        root, intermediate, leaf, root_good, root_revoked, OcspResponder(directory, root, name="root-down")
    )
    started = [
        intermediate_responder.start(good=[leaf]),
        root_good.start(good=[intermediate]),
        root_revoked.start(revoked=[intermediate]),
    ]
    try:
        yield pki
    finally:
        for responder in started:
            responder.stop()


def layered_store(pki: LayeredPki, *, root_ocsp_url: str = "", fail_open: bool = False) -> TrustStore:
    authorities = [
        Authority.from_certificate(1, "root", pki.root.certificate, ocsp_url=root_ocsp_url),
        Authority.from_certificate(2, "intermediate", pki.intermediate.certificate),
    ]
    policy = TrustPolicy(check_ocsp=True, revocation_fail_open=fail_open)
    return TrustStore(authorities, policy, ocsp=OcspChecker(CountingTransport()))


def test_a_registered_intermediate_is_asked_about_at_its_roots_responder(layered: LayeredPki) -> None:
    """The intermediate is an anchor (nginx forwards the leaf alone), but its root is registered too: the
    root's responder is asked about the intermediate, as the root's CRL is.  Revoked there: every leaf under
    it is refused, with or without the forwarded chain."""
    good = layered_store(layered, root_ocsp_url=layered.root_good.url)  # the root authority's responder
    assert good.evaluate(layered.leaf.certificate, [], now()).kind == "chained"
    for forwarded in ([], [layered.intermediate.certificate]):
        with pytest.raises(CertificateRefused) as info:  # no ocsp_url on the root: the intermediate's AIA
            layered_store(layered).evaluate(layered.leaf.certificate, forwarded, now())
        assert info.value.reason is Reason.CERTIFICATE_REVOKED
        assert "OCSP" in info.value.detail
        assert "intermediate 'certauth OCSP layered intermediate'" in info.value.detail
        assert "'certauth OCSP layered root'" in info.value.detail
    # Revoked is revoked, failing open or not.
    with pytest.raises(CertificateRefused):
        layered_store(layered, fail_open=True).evaluate(layered.leaf.certificate, [], now())


def test_the_root_above_a_registered_intermediate_must_answer_too(layered: LayeredPki) -> None:
    """No answer about the intermediate is no answer about the chain: ocsp_unavailable, or accepted with a
    warning naming the intermediate when failing open."""
    refused = refusal(layered_store(layered, root_ocsp_url=layered.root_down.url), layered.leaf)
    assert refused.reason is Reason.OCSP_UNAVAILABLE
    assert "intermediate 'certauth OCSP layered intermediate'" in refused.detail
    accepted = layered_store(layered, root_ocsp_url=layered.root_down.url, fail_open=True).evaluate(
        layered.leaf.certificate, [], now()
    )
    assert "intermediate 'certauth OCSP layered intermediate'" in accepted.revocation_warning


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["ocsp", "crl+ocsp"])
def test_api_an_intermediate_revoked_at_its_roots_responder_refuses_leaves_under_it(
    api: Any, register: Any, layered: LayeredPki, mode: str
) -> None:
    from certauth.authorities import add_authority, clear_trust_store

    def crl(ca: devpki.Issued) -> bytes:
        return devpki.make_crl(ca, []).public_bytes(serialization.Encoding.DER)  # lists nothing

    clear_trust_store()
    root = add_authority("layered root", layered.root.cert_pem(), crl_data=crl(layered.root))
    add_authority("layered intermediate", layered.intermediate.cert_pem(), crl_data=crl(layered.intermediate))
    register(layered.leaf)
    with override_settings(CERTAUTH={"REVOCATION_MODE": mode}):
        root.ocsp_url = layered.root_good.url
        root.save()
        assert api.get("/api/whoami/", layered.leaf).status_code == 200
        root.ocsp_url = ""  # now the intermediate's AIA: the responder that lists it as revoked
        root.save()
        clear_trust_store()  # and forget the good answer (the worker's OCSP answers outlive a registry change)
        body = refused(api.get("/api/whoami/", layered.leaf), Reason.CERTIFICATE_REVOKED)
    assert "OCSP" in body["detail"] and "intermediate 'certauth OCSP layered intermediate'" in body["detail"]

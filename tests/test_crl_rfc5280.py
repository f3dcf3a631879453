"""CRLs read as RFC 5280 says (issue 16, class 3): a CRL certauth cannot apply as an authority's one full CRL
(a delta CRL, a CRL scoped by its IssuingDistributionPoint, any unknown critical extension) is refused and
never replaces the full CRL; CRLNumber never goes backwards; revocation applies to the whole chain, also
above an intermediate registered as an authority; ``crl-refresh`` and the admin say why a CRL was refused and
keep the previous one.  Real CRLs built with ``cryptography``'s ``CertificateRevocationListBuilder``."""

from __future__ import annotations

import datetime as dt
import http.server
import io
import threading
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import override_settings

from certauth import devpki
from certauth.reasons import CertificateRefused, Reason
from certauth.trust import Authority, TrustPolicy, TrustStore, parse_crl

from .conftest import failures


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def build_crl(
    issuer: devpki.Issued,
    serials: Sequence[int],
    *,
    number: int | None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    entry_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    last_update: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL the way a CA builds one, with the extensions (and criticality) given."""
    issued_at = last_update or now() - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(issued_at)
        .next_update(issued_at + dt.timedelta(days=1))
    )
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    for serial in serials:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(issued_at)
        for extension, critical in entry_extensions:
            entry = entry.add_extension(extension, critical=critical)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(issuer.private_key, hashes.SHA256())  # type: ignore[arg-type]


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def delta(issuer: devpki.Issued, serials: Sequence[int], number: int, base: int) -> x509.CertificateRevocationList:
    """A delta CRL: the changes since base CRL number ``base`` (here: nothing newly revoked)."""
    return build_crl(issuer, serials, number=number, extensions=[(x509.DeltaCRLIndicator(base), True)])


def idp(**scope: Any) -> x509.IssuingDistributionPoint:
    arguments: dict[str, Any] = {
        "full_name": None,
        "relative_name": None,
        "only_contains_user_certs": False,
        "only_contains_ca_certs": False,
        "only_some_reasons": None,
        "indirect_crl": False,
        "only_contains_attribute_certs": False,
    }
    return x509.IssuingDistributionPoint(**{**arguments, **scope})


def refusal(data: bytes, issuer: devpki.Issued) -> CertificateRefused:
    with pytest.raises(CertificateRefused) as info:
        parse_crl(data, issuer.certificate)
    assert info.value.reason is Reason.CRL_UNAVAILABLE
    return info.value


@pytest.fixture(scope="module")
def ca() -> devpki.Issued:
    return devpki.make_ca("crl scope root")


# --- what a CRL is accepted as (pure) ----------------------------------------------------------------------
def test_a_delta_crl_is_refused(ca: devpki.Issued) -> None:
    refused = refusal(der(delta(ca, [], number=11, base=10)), ca)
    assert "delta CRL" in refused.detail and "full" in refused.detail


@pytest.mark.parametrize(
    ("scope", "named"),
    [
        ({"only_contains_ca_certs": True}, "onlyContainsCACerts"),
        ({"only_contains_user_certs": True}, "onlyContainsUserCerts"),
        ({"only_contains_attribute_certs": True}, "onlyContainsAttributeCerts"),
        ({"only_some_reasons": frozenset({x509.ReasonFlags.key_compromise})}, "onlySomeReasons"),
        ({"indirect_crl": True}, "indirectCRL"),
    ],
)
def test_a_crl_scoped_by_its_issuing_distribution_point_is_refused(ca: devpki.Issued, scope: Any, named: str) -> None:
    crl = build_crl(ca, [], number=5, extensions=[(idp(**scope), True)])
    refused = refusal(der(crl), ca)
    assert named in refused.detail and "full CRL" in refused.detail


def test_an_unknown_critical_extension_refuses_the_crl(ca: devpki.Issued) -> None:
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.7"), b"\x05\x00")
    refused = refusal(der(build_crl(ca, [1], number=5, extensions=[(unknown, True)])), ca)
    assert "1.3.6.1.4.1.55555.7" in refused.detail and "critical" in refused.detail
    # The same extension, not critical, may be ignored (RFC 5280 5.2).
    assert parse_crl(der(build_crl(ca, [1], number=5, extensions=[(unknown, False)])), ca.certificate).is_revoked(1)


def test_a_critical_entry_extension_refuses_the_crl(ca: devpki.Issued) -> None:
    """certificateIssuer (always critical) makes a CRL indirect: its entries may be another CA's serials."""
    other = x509.CertificateIssuer([x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))])
    crl = build_crl(ca, [7, 8], number=5, entry_extensions=[(other, True)])
    refused = refusal(der(crl), ca)
    assert "certificateIssuer" in refused.detail or "2.5.29.29" in refused.detail
    # Non-critical entry extensions (reason code) are fine.
    reason = x509.CRLReason(x509.ReasonFlags.key_compromise)
    with_reason = build_crl(ca, [7], number=5, entry_extensions=[(reason, False)])
    assert parse_crl(der(with_reason), ca.certificate).is_revoked(7)


def client_naming_distribution_point(issuer: devpki.Issued, common_name: str, url: str | None) -> devpki.Issued:
    """A client certificate whose CRLDistributionPoints names ``url`` (devpki's leaves name none)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issued_at = now() - dt.timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(issued_at)
        .not_valid_after(issued_at + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if url is not None:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return devpki.Issued(builder.sign(issuer.private_key, hashes.SHA256()), key)  # type: ignore[arg-type]


def test_a_crl_partitioned_by_distribution_point_covers_only_its_partition(ca: devpki.Issued) -> None:
    here, elsewhere = "http://pki.example/part-1.crl", "http://pki.example/part-2.crl"
    in_partition = client_naming_distribution_point(ca, "in-partition", here)
    revoked_in_partition = client_naming_distribution_point(ca, "revoked-in-partition", here)
    other_partition = client_naming_distribution_point(ca, "other-partition", elsewhere)
    naming_none = client_naming_distribution_point(ca, "naming-none", None)
    point = idp(full_name=[x509.UniformResourceIdentifier(here)])
    crl = build_crl(ca, [revoked_in_partition.serial_number], number=5, extensions=[(point, True)])
    index = parse_crl(der(crl), ca.certificate)
    trust = TrustStore([Authority.from_certificate(1, "ca", ca.certificate, index)], TrustPolicy(check_crl=True))
    assert trust.evaluate(in_partition.certificate, [], now()).revocation_warning == ""
    with pytest.raises(CertificateRefused) as info:
        trust.evaluate(revoked_in_partition.certificate, [], now())
    assert info.value.reason is Reason.CRL_REVOKED
    # This CRL says nothing of the other partition, nor of a certificate naming no distribution point (that one
    # is on the CA's full CRL, RFC 5280 6.3.3 b.2.i): no usable CRL for them, never "not revoked".
    for outside in (other_partition, naming_none):
        with pytest.raises(CertificateRefused) as info:
            trust.evaluate(outside.certificate, [], now())
        assert info.value.reason is Reason.CRL_UNAVAILABLE and "distribution point" in info.value.detail


# --- revocation of the whole chain (pure) -------------------------------------------------------------------
def test_an_intermediate_registered_as_an_authority_is_still_checked_against_its_roots_crl() -> None:
    root = devpki.make_ca("chain root")
    intermediate = devpki.make_ca("chain intermediate", issuer=root)
    leaf = devpki.issue_client(intermediate, "under-revoked")

    def with_crl(id: int, ca: devpki.Issued, revokes: list[int]) -> Authority:
        index = parse_crl(der(devpki.make_crl(ca, revokes)), ca.certificate)
        return Authority.from_certificate(id, ca.common_name, ca.certificate, index)

    def trust(root_revokes: list[int], **policy: Any) -> TrustStore:
        authorities = [with_crl(1, root, root_revokes), with_crl(2, intermediate, [])]
        return TrustStore(authorities, TrustPolicy(check_crl=True, **policy))

    assert trust([]).evaluate(leaf.certificate, [], now()).kind == "chained"
    for forwarded in ([], [intermediate.certificate]):  # nginx sends the leaf alone; other proxies the chain
        with pytest.raises(CertificateRefused) as info:
            trust([intermediate.serial_number]).evaluate(leaf.certificate, forwarded, now())
        assert info.value.reason is Reason.CRL_REVOKED
        assert "'chain intermediate'" in info.value.detail and "'chain root'" in info.value.detail
    # Listed is listed, failing open or not.
    with pytest.raises(CertificateRefused):
        trust([intermediate.serial_number], revocation_fail_open=True).evaluate(leaf.certificate, [], now())


def test_the_root_above_a_registered_intermediate_needs_a_crl_too() -> None:
    root = devpki.make_ca("crl-less root")
    intermediate = devpki.make_ca("intermediate with crl", issuer=root)
    leaf = devpki.issue_client(intermediate, "leaf")
    index = parse_crl(der(devpki.make_crl(intermediate, [])), intermediate.certificate)
    authorities = [
        Authority.from_certificate(1, "root", root.certificate),
        Authority.from_certificate(2, "intermediate", intermediate.certificate, index),
    ]
    with pytest.raises(CertificateRefused) as info:
        TrustStore(authorities, TrustPolicy(check_crl=True)).evaluate(leaf.certificate, [], now())
    assert info.value.reason is Reason.CRL_UNAVAILABLE and "'crl-less root'" in info.value.detail
    accepted = TrustStore(authorities, TrustPolicy(check_crl=True, revocation_fail_open=True)).evaluate(
        leaf.certificate, [], now()
    )
    assert "'crl-less root'" in accepted.revocation_warning


# --- Django: refresh, upload, API -----------------------------------------------------------------------------
class _CrlHandler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def crl_server() -> Iterator[Any]:
    handler = type("Handler", (_CrlHandler,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/ca.crl"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


CRL_MODE = {"REVOCATION_MODE": "crl"}


def refresh(out: io.StringIO, err: io.StringIO) -> int:
    try:
        call_command("certauth", "crl-refresh", "--force", stdout=out, stderr=err)
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


@pytest.mark.django_db
@override_settings(CERTAUTH=CRL_MODE)
def test_crl_refresh_refuses_a_delta_crl_and_keeps_the_full_one(api, pki, register, trusted_root, crl_server) -> None:
    """The CA's distribution point serves a delta CRL (say, misconfigured, or an attacker on the plain-HTTP
    path replays one): applying it as the full CRL would un-revoke what the full CRL lists."""
    from certauth.models import TrustedAuthority

    register(pki.client)
    full = build_crl(pki.root, [pki.client.serial_number], number=10)
    crl_server.body = der(full)
    trusted_root.crl_url = crl_server.url
    trusted_root.save()
    out, err = io.StringIO(), io.StringIO()
    assert refresh(out, err) == 0, err.getvalue()
    refused_body = api.get("/api/whoami/", pki.client)
    assert refused_body.status_code == 401 and refused_body.json()["reason"] == "crl_revoked"

    crl_server.body = der(delta(pki.root, [], number=11, base=10))
    out, err = io.StringIO(), io.StringIO()
    refresh(out, err)
    message = err.getvalue()
    assert "FAILED test root: CRL refused: This is a delta CRL" in message
    assert "The previous CRL is kept until its nextUpdate " in message
    row = TrustedAuthority.objects.get(pk=trusted_root.pk)
    assert row.crl_der == der(full) and "delta CRL" in row.crl_error
    response = api.get("/api/whoami/", pki.client)
    assert response.status_code == 401 and response.json()["reason"] == "crl_revoked"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("scope", "named"),
    [({"only_contains_ca_certs": True}, "onlyContainsCACerts"), ({"indirect_crl": True}, "indirectCRL")],
)
@override_settings(CERTAUTH=CRL_MODE)
def test_a_scoped_crl_never_replaces_the_full_one(api, pki, register, trusted_root, scope: Any, named: str) -> None:
    from certauth.authorities import apply_crl

    register(pki.client)
    apply_crl(trusted_root, der(build_crl(pki.root, [pki.client.serial_number], number=10)))
    trusted_root.save()
    with pytest.raises(CertificateRefused) as info:
        apply_crl(trusted_root, der(build_crl(pki.root, [], number=11, extensions=[(idp(**scope), True)])))
    assert named in info.value.detail
    trusted_root.save()  # whatever apply_crl left on the row: nothing of the refused CRL
    response = api.get("/api/whoami/", pki.client)
    assert response.status_code == 401 and response.json()["reason"] == "crl_revoked"


@pytest.mark.django_db
@override_settings(CERTAUTH=CRL_MODE)
def test_a_delta_crl_already_stored_is_never_applied(api, pki, register, trusted_root) -> None:
    """A delta CRL stored before this check existed (or written into the row directly) is unusable: requests
    get crl_unavailable, not an empty revocation list."""
    register(pki.client)
    trusted_root.crl_der = der(delta(pki.root, [], number=11, base=10))
    trusted_root.crl_last_update = now()
    trusted_root.save()
    response = api.get("/api/whoami/", pki.client)
    assert response.status_code == 401 and response.json()["reason"] == "crl_unavailable"
    assert "delta CRL" in response.json()["detail"]


@pytest.mark.django_db
def test_crl_number_must_not_go_backwards(pki, trusted_root) -> None:
    from certauth.authorities import apply_crl

    later = now() - dt.timedelta(minutes=1)
    apply_crl(trusted_root, der(build_crl(pki.root, [pki.client.serial_number], number=10)))
    # Newer thisUpdate (so the old date check passes), but a lower number: an older CRL re-dated, refused.
    with pytest.raises(CertificateRefused) as info:
        apply_crl(trusted_root, der(build_crl(pki.root, [], number=9, last_update=later)))
    assert info.value.reason is Reason.CRL_UNAVAILABLE and "CRLNumber 9 is lower" in info.value.detail
    # A CRL without a number after a numbered one: refused too.
    with pytest.raises(CertificateRefused) as info:
        apply_crl(trusted_root, der(build_crl(pki.root, [], number=None, last_update=later)))
    assert "no CRLNumber" in info.value.detail
    # The same number, other content: refused; the very same CRL again (a re-fetch): accepted.
    with pytest.raises(CertificateRefused) as info:
        apply_crl(trusted_root, der(build_crl(pki.root, [], number=10, last_update=later)))
    assert "same CRLNumber (10)" in info.value.detail
    held = bytes(trusted_root.crl_der)
    assert apply_crl(trusted_root, held).is_revoked(pki.client.serial_number)
    # A higher number goes through.
    assert not apply_crl(trusted_root, der(build_crl(pki.root, [], number=11, last_update=later))).is_revoked(
        pki.client.serial_number
    )


@pytest.mark.django_db
def test_a_partition_crl_does_not_replace_the_full_crl(api, pki, register, trusted_root, settings) -> None:
    """Review 3, F4: a CA that partitions its CRLs numbers each distribution point's CRL in its own sequence
    (RFC 5280 5.2.3).  Someone on the plain-HTTP path serving the newer CRL of another partition in place of the
    full CRL must not un-revoke what only the full CRL lists."""
    from certauth.authorities import apply_crl

    settings.CERTAUTH = {**settings.CERTAUTH, **CRL_MODE}
    register(pki.client)
    full = build_crl(pki.root, [pki.client.serial_number], number=10)
    apply_crl(trusted_root, der(full))
    trusted_root.save()
    assert api.get("/api/whoami/", pki.client).json()["reason"] == "crl_revoked"
    other_partition = idp(full_name=[x509.UniformResourceIdentifier("http://pki.example/part-2.crl")])
    partition = build_crl(pki.root, [], number=11, extensions=[(other_partition, True)])
    with pytest.raises(CertificateRefused):  # accepted on main: another scope is not the full CRL's successor
        apply_crl(trusted_root, der(partition))
    trusted_root.save()
    response = api.get("/api/whoami/", pki.client)
    assert response.status_code == 401, response.json()
    assert response.json()["reason"] == "crl_revoked"
    # Refused, saying why, and the full CRL is kept.
    with pytest.raises(CertificateRefused) as info:
        apply_crl(trusted_root, der(partition))
    assert info.value.reason is Reason.CRL_UNAVAILABLE and "another scope" in info.value.detail
    assert "part-2.crl" in info.value.detail and bytes(trusted_root.crl_der) == der(full)


def test_a_partition_crl_is_succeeded_by_a_crl_of_its_own_partition_only(ca: devpki.Issued) -> None:
    from certauth.trust import check_crl_succession

    part_1, part_2 = (
        idp(full_name=[x509.UniformResourceIdentifier(f"http://pki.example/part-{n}.crl")]) for n in (1, 2)
    )
    held = build_crl(ca, [], number=5, extensions=[(part_1, True)])
    check_crl_succession(held, build_crl(ca, [], number=6, extensions=[(part_1, True)]))  # its own next CRL
    for other in (build_crl(ca, [], number=6, extensions=[(part_2, True)]), build_crl(ca, [], number=6)):
        with pytest.raises(CertificateRefused) as info:
            check_crl_succession(held, other)  # another partition, or a full CRL in place of a partition
        assert info.value.reason is Reason.CRL_UNAVAILABLE and "part-1.crl" in info.value.detail


@pytest.mark.django_db
def test_admin_crl_upload_says_why_a_crl_is_refused(pki, trusted_root, admin_client) -> None:
    from certauth.authorities import apply_crl
    from certauth.models import TrustedAuthority

    full = build_crl(pki.root, [pki.client.serial_number], number=10)
    apply_crl(trusted_root, der(full))
    trusted_root.save()
    response = admin_client.post(
        f"/admin/certauth/trustedauthority/{trusted_root.pk}/change/",
        {
            "name": trusted_root.name,
            "is_enabled": "on",
            "crl_url": "",
            "crl_file": SimpleUploadedFile("delta.crl", der(delta(pki.root, [], number=11, base=10))),
        },
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "This is a delta CRL" in page and "The previous CRL is kept" in page
    assert bytes(TrustedAuthority.objects.get(pk=trusted_root.pk).crl_der) == der(full)


def set_crls(pki: Any, root_revokes: list[int]) -> None:
    from certauth.authorities import apply_crl
    from certauth.models import TrustedAuthority

    for name, ca, serials in (("test root", pki.root, root_revokes), ("test intermediate", pki.intermediate, [])):
        row = TrustedAuthority.objects.get(name=name)
        apply_crl(row, der(devpki.make_crl(ca, serials)))
        row.save()


@pytest.mark.django_db
@override_settings(CERTAUTH={**CRL_MODE, "CHAIN_HEADER": "X-SSL-Client-Chain"})
def test_api_a_revoked_registered_intermediate_refuses_every_certificate_under_it(api, pki, register) -> None:
    """The intermediate is registered as an authority (nginx forwards the leaf alone) and listed in the root's
    CRL: its leaves are refused with or without the forwarded chain, and the detail names the intermediate."""
    register(pki.via_intermediate)
    set_crls(pki, [])
    assert api.get("/api/whoami/", pki.via_intermediate).status_code == 200
    set_crls(pki, [pki.intermediate.serial_number])
    chain = quote(pki.intermediate.cert_pem().decode(), safe="")
    for extra in ({}, {"HTTP_X_SSL_CLIENT_CHAIN": chain}):
        response = api.get("/api/whoami/", pki.via_intermediate, **extra)
        assert response.status_code == 401, response.content
        body = response.json()
        assert body["reason"] == "crl_revoked"
        assert "intermediate 'certauth test intermediate'" in body["detail"]
        assert "CRL of 'certauth test root'" in body["detail"]
    assert failures(reason="crl_revoked")


@pytest.mark.django_db
def test_a_refusal_says_when_the_crl_kept_is_already_stale(pki, trusted_root) -> None:
    from certauth.authorities import refusal_message

    assert "No CRL is held" in refusal_message(trusted_root, "Why.")
    stale = devpki.make_crl(
        pki.root, [], last_update=now() - dt.timedelta(days=8), next_update=now() - dt.timedelta(hours=1)
    )
    from certauth.authorities import apply_crl

    apply_crl(trusted_root, der(stale))
    message = refusal_message(trusted_root, "This is a delta CRL.")
    assert message.startswith("CRL refused: This is a delta CRL. The previous CRL is kept, but its nextUpdate")
    assert "has passed" in message and "crl_unavailable" in message


# --- succession against the row as stored, not as read before a download (attack review 1, F2) --------------
class _RacingCrlHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``body`` after running ``meanwhile()``: what happens while a CRL download is on the line."""

    body = b""
    meanwhile: Any = None

    def do_GET(self) -> None:
        type(self).meanwhile()
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.django_db(transaction=True)
def test_a_crl_refresh_cannot_roll_back_a_newer_crl_stored_while_it_downloaded() -> None:
    """refresh_due_crls reads the authorities, downloads (up to CRL_FETCH_TIMEOUT_SECONDS, a window someone on
    the CRL's plain-http path stretches at will by trickling), then stores.  A newer CRL stored meanwhile (an
    administrator's upload, the admin's "Fetch the CRL now", a second crl-refresh run) must not be overwritten
    by an older one: the succession check runs against the row as stored after the download.  Here the
    distribution point itself stores the newer CRL (as that concurrent writer, its own thread and database
    connection) before it answers with the older, validly signed one."""
    from django.db import connection

    from certauth.authorities import add_authority, apply_crl, refresh_due_crls
    from certauth.models import TrustedAuthority

    ca = devpki.make_ca("race CA")
    base = now().replace(microsecond=0)
    held = devpki.make_crl(ca, [], last_update=base - dt.timedelta(hours=3))
    replayed = devpki.make_crl(ca, [], last_update=base - dt.timedelta(hours=2))  # the one the path serves
    newer = devpki.make_crl(ca, [0xBAD], last_update=base - dt.timedelta(hours=1))  # revokes serial 0xBAD

    def meanwhile() -> None:
        try:
            row = TrustedAuthority.objects.get(name="race CA")
            apply_crl(row, der(newer))
            row.save()
        finally:
            connection.close()

    handler = type("Handler", (_RacingCrlHandler,), {"body": der(replayed), "meanwhile": staticmethod(meanwhile)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ca.crl"
        add_authority("race CA", ca.cert_pem(), crl_data=der(held), crl_url=url)
        [result] = refresh_due_crls()
    finally:
        server.shutdown()
        server.server_close()
    stored = TrustedAuthority.objects.get(name="race CA")
    # Either the refresh refuses to go back in time, or it leaves the newer CRL in place: never the older one.
    assert stored.crl_last_update == base - dt.timedelta(hours=1), (result, stored.crl_last_update)
    assert not result.ok and "refusing to go back in time" in result.message
    assert bytes(stored.crl_der) == der(newer)


@pytest.mark.django_db
def test_store_crl_checks_again_when_the_row_changed_between_its_read_and_its_write(
    pki, trusted_root, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite has no row locks (select_for_update is a no-op there): store_crl's write only matches the row
    it checked.  Here another writer stores a newer CRL right after store_crl's check passed and before its
    write; the write matches nothing, the check runs again on the newer row and refuses the older CRL."""
    from django.utils import timezone

    from certauth import authorities
    from certauth.models import TrustedAuthority

    base = now().replace(microsecond=0)
    authorities.store_crl(
        trusted_root, der(build_crl(pki.root, [], number=1, last_update=base - dt.timedelta(hours=3)))
    )
    older = build_crl(pki.root, [], number=2, last_update=base - dt.timedelta(hours=2))
    newer = build_crl(pki.root, [pki.client.serial_number], number=3, last_update=base - dt.timedelta(hours=1))
    real_apply, checks = authorities.apply_crl, []

    def apply_then_another_writer(row: Any, data: bytes, *args: Any) -> Any:
        index = real_apply(row, data, *args)
        checks.append(row.crl_last_update)
        if len(checks) == 1:  # between this check and store_crl's write, the newer CRL lands
            TrustedAuthority.objects.filter(pk=row.pk).update(
                crl_der=der(newer), crl_last_update=newer.last_update_utc, updated_at=timezone.now()
            )
        return index

    monkeypatch.setattr(authorities, "apply_crl", apply_then_another_writer)
    with pytest.raises(CertificateRefused) as info:
        authorities.store_crl(trusted_root, der(older))
    assert "refusing to go back in time" in info.value.detail
    assert len(checks) == 1  # the second check refused before it could record anything
    stored = TrustedAuthority.objects.get(pk=trusted_root.pk)
    assert bytes(stored.crl_der) == der(newer)
    # The caller's instance shows the CRL really kept, for refusal_message.
    assert trusted_root.crl_last_update == newer.last_update_utc


@pytest.mark.django_db
def test_a_delta_crl_served_at_the_crl_url_does_not_unrevoke_the_base_crl(
    api, pki, register, trusted_root, crl_server
) -> None:
    """A delta CRL (DeltaCRLIndicator, RFC 5280 5.2.4, always critical) is signed by the CA and newer than the
    base CRL; CAs that publish deltas (AD CS does by default) serve them over plain http next to the base CRL,
    so anyone on the path can swap one for the other.  crl-refresh must not store it in place of the base
    CRL: every revocation the base lists would be forgotten."""
    from certauth.authorities import apply_crl, clear_trust_store, refresh_due_crls

    register(pki.client)
    at = now().replace(microsecond=0)
    base = devpki.make_crl(pki.root, [pki.client.serial_number], last_update=at - dt.timedelta(hours=2))
    apply_crl(trusted_root, der(base))
    trusted_root.save()
    delta_crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.root.certificate.subject)
        .last_update(at - dt.timedelta(minutes=5))
        .next_update(at + dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(int(at.timestamp())), critical=False)
        .add_extension(x509.DeltaCRLIndicator(int(at.timestamp()) - 7200), critical=True)
        .sign(pki.root.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    with override_settings(CERTAUTH=CRL_MODE):
        clear_trust_store()
        assert api.get("/api/whoami/", pki.client).status_code == 401  # revoked by the base CRL
        crl_server.body = der(delta_crl)
        trusted_root.crl_url = crl_server.url
        trusted_root.save()
        refresh_due_crls(force=True)
        clear_trust_store()
        response = api.get("/api/whoami/", pki.client)
    assert response.status_code == 401, "the revoked certificate is accepted again after a delta CRL was fetched"
    assert response.json()["reason"] == "crl_revoked"


@pytest.mark.django_db
@pytest.mark.parametrize("upload", [False, True], ids=["other-fields", "older-crl-upload"])
def test_an_admin_save_never_writes_back_a_crl_older_than_one_stored_while_it_ran(
    pki, trusted_root, admin_client, upload: bool
) -> None:
    """The admin reads the row, then saves it whole: the CRL columns as read then (or a CRL uploaded against
    them) would undo a newer CRL crl-refresh stored meanwhile.  The newer CRL lands just before the admin
    writes (a pre_save receiver, the one moment in the request the race can hit); it stays."""
    from django.db.models.signals import pre_save
    from django.utils import timezone

    from certauth.authorities import apply_crl
    from certauth.models import TrustedAuthority

    base = now().replace(microsecond=0)
    apply_crl(trusted_root, der(build_crl(pki.root, [], number=1, last_update=base - dt.timedelta(hours=3))))
    trusted_root.save()
    older = build_crl(pki.root, [], number=2, last_update=base - dt.timedelta(hours=2))
    newer = build_crl(pki.root, [pki.client.serial_number], number=3, last_update=base - dt.timedelta(hours=1))
    landed = []

    def crl_refresh_lands(sender: Any, instance: Any, **kwargs: Any) -> None:
        if not landed:
            landed.append(True)
            TrustedAuthority.objects.filter(pk=instance.pk).update(
                crl_der=der(newer), crl_last_update=newer.last_update_utc, updated_at=timezone.now()
            )

    form = {"name": trusted_root.name, "is_enabled": "on", "crl_url": "", "notes": "edited"}
    if upload:
        form["crl_file"] = SimpleUploadedFile("older.crl", der(older))
    pre_save.connect(crl_refresh_lands, sender=TrustedAuthority)
    try:
        response = admin_client.post(f"/admin/certauth/trustedauthority/{trusted_root.pk}/change/", form, follow=True)
    finally:
        pre_save.disconnect(crl_refresh_lands, sender=TrustedAuthority)
    assert response.status_code == 200 and landed
    stored = TrustedAuthority.objects.get(pk=trusted_root.pk)
    assert stored.notes == "edited"  # the rest of the form was saved
    assert bytes(stored.crl_der) == der(newer), "the admin's save rolled the CRL back"
    if upload:
        assert "refusing to go back in time" in response.content.decode()

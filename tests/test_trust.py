"""The trust policy (certauth.trust, pure), identity-rule matching (certauth.matching), and the Django glue
around authorities and CRLs (certauth.authorities, the admin, the CLI).  Real certificates throughout."""

from __future__ import annotations

import datetime as dt
import http.server
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from hypothesis import given
from hypothesis import strategies as st

from certauth import devpki
from certauth.certificates import describe, thumbprint_of
from certauth.matching import rule_matches
from certauth.reasons import CertificateRefused, Reason
from certauth.trust import (
    Authority,
    TrustPolicy,
    TrustStore,
    is_self_signed,
    load_authority_certificate,
    map_verification_error,
    parse_crl,
)


def now() -> dt.datetime:
    """The current time, read where it is used: a value captured at import would be minutes old by the time a
    later test compares it with certificates and CRLs stamped with the real clock (a slow machine)."""
    return dt.datetime.now(dt.UTC)


@dataclass
class Chain:
    root: devpki.Issued
    intermediate: devpki.Issued
    other: devpki.Issued
    leaf: devpki.Issued
    via_intermediate: devpki.Issued
    self_signed: devpki.Issued
    expired_intermediate: devpki.Issued
    via_expired: devpki.Issued
    server_usage: devpki.Issued
    no_san: devpki.Issued
    foreign: devpki.Issued


@pytest.fixture(scope="module")
def chain() -> Chain:
    root = devpki.make_ca("trust root")
    intermediate = devpki.make_ca("trust intermediate", issuer=root)
    other = devpki.make_ca("unrelated CA")
    expired_intermediate = devpki.make_ca(
        "expired intermediate",
        issuer=root,
        not_before=now() - dt.timedelta(days=60),
        not_after=now() - dt.timedelta(days=1),
    )
    return Chain(
        root=root,
        intermediate=intermediate,
        other=other,
        leaf=devpki.issue_client(root, "leaf", dns_names=["leaf.clients.example"]),
        via_intermediate=devpki.issue_client(intermediate, "via-intermediate"),
        self_signed=devpki.self_signed_client("selfie"),
        expired_intermediate=expired_intermediate,
        via_expired=devpki.issue_client(expired_intermediate, "via-expired", not_before=now() - dt.timedelta(days=30)),
        server_usage=devpki.issue_client(root, "server-only", eku=("server_auth",)),
        no_san=devpki.issue_client(root, "no-san", include_san=False),
        foreign=devpki.issue_client(other, "foreign"),
    )


def authority(issued: devpki.Issued, id: int = 1, crl: Any = None, name: str = "") -> Authority:
    return Authority.from_certificate(id, name or issued.common_name, issued.certificate, crl)


def store(*cas: devpki.Issued, **policy: Any) -> TrustStore:
    return TrustStore([authority(ca, i) for i, ca in enumerate(cas, 1)], TrustPolicy(**policy))


def refused(store: TrustStore, leaf: devpki.Issued, forwarded: tuple[devpki.Issued, ...] = ()) -> CertificateRefused:
    with pytest.raises(CertificateRefused) as info:
        store.evaluate(leaf.certificate, [c.certificate for c in forwarded], now())
    assert "Certificate(" not in info.value.detail  # the library's repr never reaches clients
    return info.value


# --- chains -----------------------------------------------------------------------------------------------
def test_leaf_from_a_trusted_root(chain: Chain) -> None:
    result = store(chain.root).evaluate(chain.leaf.certificate, [], now())
    assert result.kind == "chained"
    assert result.chain == (chain.leaf.thumbprint, chain.root.thumbprint)
    assert result.anchor is not None and result.anchor.name == "trust root"
    assert result.revocation_warning == ""


def test_intermediate_from_the_forwarded_chain(chain: Chain) -> None:
    result = store(chain.root).evaluate(chain.via_intermediate.certificate, [chain.intermediate.certificate], now())
    assert result.chain == (chain.via_intermediate.thumbprint, chain.intermediate.thumbprint, chain.root.thumbprint)


def test_intermediate_registered_as_authority(chain: Chain) -> None:
    result = store(chain.root, chain.intermediate).evaluate(chain.via_intermediate.certificate, [], now())
    assert result.reaches(chain.intermediate.thumbprint)


def test_intermediate_neither_forwarded_nor_registered(chain: Chain) -> None:
    assert refused(store(chain.root), chain.via_intermediate).reason is Reason.UNTRUSTED_ISSUER


def test_leaf_from_another_ca(chain: Chain) -> None:
    assert refused(store(chain.root), chain.foreign).reason is Reason.UNTRUSTED_ISSUER


def test_no_authority_at_all(chain: Chain) -> None:
    assert refused(store(), chain.leaf).reason is Reason.UNTRUSTED_ISSUER


def test_expired_intermediate(chain: Chain) -> None:
    forwarded = refused(store(chain.root), chain.via_expired, (chain.expired_intermediate,))
    assert forwarded.reason is Reason.CHAIN_INVALID
    assert "expired" in forwarded.detail
    as_anchor = refused(store(chain.expired_intermediate), chain.via_expired)
    assert as_anchor.reason is Reason.CHAIN_INVALID


def test_server_auth_only_is_wrong_usage(chain: Chain) -> None:
    assert refused(store(chain.root), chain.server_usage).reason is Reason.WRONG_USAGE
    # VALIDATE_CERTIFICATE_USE off relaxes the library's EKU check too.
    lenient = store(chain.root, validate_certificate_use=False)
    assert lenient.evaluate(chain.server_usage.certificate, [], now()).kind == "chained"


def test_ca_certificate_is_not_a_client(chain: Chain) -> None:
    assert refused(store(chain.root), chain.intermediate).reason is Reason.WRONG_USAGE


def test_subject_alternative_name_only_when_required(chain: Chain) -> None:
    assert store(chain.root).evaluate(chain.no_san.certificate, [], now()).kind == "chained"
    strict = refused(store(chain.root, require_subject_alternative_name=True), chain.no_san)
    assert strict.reason is Reason.CHAIN_INVALID and "subjectAltName" in strict.detail


def test_validity_period_off_ignores_only_the_leafs_dates(chain: Chain) -> None:
    old_root = devpki.make_ca("old root", not_before=now() - dt.timedelta(days=90))
    expired_leaf = devpki.issue_client(
        old_root, "old", not_before=now() - dt.timedelta(days=30), not_after=now() - dt.timedelta(days=1)
    )
    assert refused(store(old_root), expired_leaf).reason is Reason.CHAIN_INVALID
    lenient = store(old_root, chain.root, validate_validity_period=False)
    assert lenient.evaluate(expired_leaf.certificate, [], now()).kind == "chained"
    assert refused(lenient, chain.via_expired, (chain.expired_intermediate,)).reason is Reason.CHAIN_INVALID


# --- allowed types ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("allowed", "self_signed", "chained"),
    [
        ("chained", Reason.SELF_SIGNED_NOT_ALLOWED, None),
        ("self_signed", None, Reason.CHAINED_NOT_ALLOWED),
        ("all", None, None),
    ],
)
def test_allowed_types(chain: Chain, allowed: str, self_signed: Reason | None, chained: Reason | None) -> None:
    trust = store(chain.root, allowed_types=allowed)
    for leaf, expected, kind in ((chain.self_signed, self_signed, "self_signed"), (chain.leaf, chained, "chained")):
        if expected is None:
            assert trust.evaluate(leaf.certificate, [], now()).kind == kind
        else:
            assert refused(trust, leaf).reason is expected


def test_all_still_validates_chained_certificates(chain: Chain) -> None:
    assert refused(store(chain.root, allowed_types="all"), chain.foreign).reason is Reason.UNTRUSTED_ISSUER


def test_self_signed_means_its_own_signature_verifies(chain: Chain) -> None:
    assert is_self_signed(chain.self_signed.certificate)
    assert not is_self_signed(chain.leaf.certificate)
    # Issuer name equal to the subject, but signed by someone else's key: not self-signed.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "impostor")])
    forged = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - dt.timedelta(hours=1))
        .not_valid_after(now() + dt.timedelta(days=1))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    assert not is_self_signed(forged)


def test_unknown_library_errors_become_chain_invalid() -> None:
    reason, detail = map_verification_error("validation failed: something new <Certificate(subject=...)>")
    assert reason is Reason.CHAIN_INVALID and "Certificate(" not in detail
    assert map_verification_error("candidates exhausted: RSA key is too weak")[0] is Reason.WEAK_CERTIFICATE


# --- CRLs ---------------------------------------------------------------------------------------------------
def crl_authority_store(ca: devpki.Issued, crl: x509.CertificateRevocationList | None, **policy: Any) -> TrustStore:
    index = parse_crl(crl.public_bytes(serialization.Encoding.DER), ca.certificate) if crl is not None else None
    return TrustStore([authority(ca, crl=index)], TrustPolicy(check_crl=True, **policy))


def test_crl_revoked_leaf(chain: Chain) -> None:
    trust = crl_authority_store(chain.root, devpki.make_crl(chain.root, [chain.leaf.serial_number]))
    assert refused(trust, chain.leaf).reason is Reason.CRL_REVOKED
    other_leaf = devpki.issue_client(chain.root, "still-good")
    assert trust.evaluate(other_leaf.certificate, [], now()).revocation_warning == ""


def test_crl_revoked_intermediate(chain: Chain) -> None:
    trust = crl_authority_store(chain.root, devpki.make_crl(chain.root, [chain.intermediate.serial_number]))
    revoked = refused(trust, chain.via_intermediate, (chain.intermediate,))
    assert revoked.reason is Reason.CRL_REVOKED and "intermediate" in revoked.detail


def test_stale_crl_fails_closed_or_open(chain: Chain) -> None:
    stale = devpki.make_crl(
        chain.root, [], last_update=now() - dt.timedelta(days=8), next_update=now() - dt.timedelta(hours=1)
    )
    assert refused(crl_authority_store(chain.root, stale), chain.leaf).reason is Reason.CRL_UNAVAILABLE
    accepted = crl_authority_store(chain.root, stale, revocation_fail_open=True).evaluate(
        chain.leaf.certificate, [], now()
    )
    assert "stale" in accepted.revocation_warning


def test_missing_crl(chain: Chain) -> None:
    assert refused(crl_authority_store(chain.root, None), chain.leaf).reason is Reason.CRL_UNAVAILABLE
    # An intermediate forwarded by the proxy has no CRL certauth knows of.
    trust = crl_authority_store(chain.root, devpki.make_crl(chain.root, []))
    assert refused(trust, chain.via_intermediate, (chain.intermediate,)).reason is Reason.CRL_UNAVAILABLE


def test_revoked_even_when_failing_open(chain: Chain) -> None:
    stale_but_listing = devpki.make_crl(
        chain.root, [chain.leaf.serial_number], next_update=now() - dt.timedelta(minutes=1)
    )
    trust = crl_authority_store(chain.root, stale_but_listing, revocation_fail_open=True)
    assert refused(trust, chain.leaf).reason is Reason.CRL_REVOKED


def forged_crl(issuer_name: x509.Name, signer: devpki.Issued, serials: list[int]) -> x509.CertificateRevocationList:
    revoked = [x509.RevokedCertificateBuilder().serial_number(s).revocation_date(now()).build() for s in serials]
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuer_name,
        last_update=now() - dt.timedelta(minutes=5),
        next_update=now() + dt.timedelta(days=1),
        revoked_certificates=revoked,
    )
    return builder.sign(signer.private_key, hashes.SHA256())  # type: ignore[arg-type]


def test_crl_with_a_bad_signature_is_refused(chain: Chain) -> None:
    bad = forged_crl(chain.root.certificate.subject, chain.other, [1])
    with pytest.raises(CertificateRefused) as info:
        parse_crl(bad.public_bytes(serialization.Encoding.PEM), chain.root.certificate)
    assert info.value.reason is Reason.CRL_UNAVAILABLE and "signature" in info.value.detail
    with pytest.raises(CertificateRefused) as info:
        parse_crl(devpki.make_crl(chain.other, []).public_bytes(serialization.Encoding.DER), chain.root.certificate)
    assert "different authority" in info.value.detail


def test_crl_with_100000_entries(chain: Chain) -> None:
    serials = list(range(10_000_000, 10_100_000))
    big = forged_crl(chain.root.certificate.subject, chain.root, serials)
    index = parse_crl(big.public_bytes(serialization.Encoding.DER), chain.root.certificate)
    assert len(index) == 100_000
    assert isinstance(index.revoked_serials, frozenset)  # hashed: constant-time membership
    assert index.is_revoked(10_000_000) and index.is_revoked(10_099_999) and index.is_revoked(10_054_321)
    assert not index.is_revoked(9_999_999) and not index.is_revoked(10_100_000)
    listed = devpki.issue_client(chain.root, "listed", serial=10_050_000)
    trust = TrustStore([authority(chain.root, crl=index)], TrustPolicy(check_crl=True))
    assert refused(trust, listed).reason is Reason.CRL_REVOKED
    assert trust.evaluate(chain.leaf.certificate, [], now()).kind == "chained"


# --- parsing arbitrary bytes: reasons only ----------------------------------------------------------------
def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    return st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255), st.integers(0, len(data))).map(
        lambda t: (data[: t[0]] + bytes([t[1]]) + data[t[0] + 1 :])[: t[2]]
    )


_ROOT = devpki.make_ca("property root")
_ROOT_PEM, _ROOT_DER = _ROOT.cert_pem(), _ROOT.certificate.public_bytes(serialization.Encoding.DER)
_CRL = devpki.make_crl(_ROOT, [1, 2, 3])
_CRL_PEM, _CRL_DER = _CRL.public_bytes(serialization.Encoding.PEM), _CRL.public_bytes(serialization.Encoding.DER)


@given(st.one_of(st.binary(max_size=2048), _mutations(_ROOT_PEM), _mutations(_ROOT_DER)))
def test_authority_parsing_never_raises_anything_but_a_reason(data: bytes) -> None:
    try:
        certificate = load_authority_certificate(data)
    except CertificateRefused as refused:
        assert isinstance(refused.reason, Reason) and refused.detail
    else:
        assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@given(st.one_of(st.binary(max_size=2048), _mutations(_CRL_PEM), _mutations(_CRL_DER)))
def test_crl_parsing_never_raises_anything_but_a_reason(data: bytes) -> None:
    try:
        index = parse_crl(data, _ROOT.certificate)
    except CertificateRefused as refused:
        assert refused.reason is Reason.CRL_UNAVAILABLE and refused.detail
    else:
        assert index.revoked_serials == {1, 2, 3}  # anything accepted carries the genuine signature


def test_authority_must_be_a_ca(chain: Chain) -> None:
    with pytest.raises(CertificateRefused) as info:
        load_authority_certificate(chain.leaf.cert_pem())
    assert info.value.reason is Reason.WRONG_USAGE and "not a CA" in info.value.detail
    with pytest.raises(CertificateRefused):
        load_authority_certificate(chain.leaf.key_pem())  # a private key is never accepted


# --- identity rule patterns ------------------------------------------------------------------------------
def test_rule_patterns(chain: Chain) -> None:
    issued = devpki.issue_client(
        chain.root,
        "billing-7",
        dns_names=["Billing.Clients.Example"],
        uris=["spiffe://prod.example/ns/billing/sa/api"],
        emails=["ops@example.org"],
    )
    info = describe(issued.certificate)
    assert rule_matches("subject_cn", "billing-7", info)
    assert rule_matches("subject_cn", "billing-*", info)
    assert not rule_matches("subject_cn", "Billing-*", info)  # CN: exact case
    assert rule_matches("dns_san", "*.clients.example", info)  # DNS: case-insensitive
    assert rule_matches("uri_san", "spiffe://prod.example/ns/billing/**", info)  # any depth: /** only
    assert not rule_matches("uri_san", "spiffe://prod.example/ns/billing/*", info)  # * is one segment
    assert not rule_matches("uri_san", "spiffe://staging.example/*", info)
    assert rule_matches("email_san", "ops@EXAMPLE.org", info)  # email: the domain case-insensitive...
    assert not rule_matches("email_san", "OPS@example.org", info)  # ...the local part exact (RFC 5321)
    assert not rule_matches("email_san", "", info)
    assert not rule_matches("dns_san", "billing", info)


# --- Django glue: services, fetch, CLI, admin ---------------------------------------------------------------
class _CrlHandler(http.server.BaseHTTPRequestHandler):
    body = b""
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
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


@pytest.mark.django_db
def test_crl_refresh_from_url(chain: Chain, crl_server: Any) -> None:
    from certauth.authorities import add_authority, due_for_refresh, refresh_due_crls
    from certauth.models import RegistryState, TrustedAuthority

    crl_server.body = devpki.make_crl(chain.root, [chain.leaf.serial_number]).public_bytes(serialization.Encoding.DER)
    row = add_authority("root", chain.root.cert_pem(), crl_url=crl_server.url)
    assert list(due_for_refresh()) == [row]
    generation = RegistryState.objects.get().generation
    [result] = refresh_due_crls()
    assert result.ok, result.message
    row = TrustedAuthority.objects.get(pk=row.pk)
    assert row.crl_der and row.crl_next_update is not None and row.crl_error == ""
    assert RegistryState.objects.get().generation > generation  # every worker reloads the trust store
    assert list(due_for_refresh()) == []
    # The server fails: the old CRL stays, the error is recorded.
    crl_server.status, crl_server.body = 404, b"gone"
    [result] = refresh_due_crls(force=True)
    assert not result.ok and "404" in result.message
    row = TrustedAuthority.objects.get(pk=row.pk)
    assert row.crl_der and "404" in row.crl_error
    # A CRL signed by another key is never stored.
    crl_server.status = 200
    crl_server.body = forged_crl(chain.root.certificate.subject, chain.other, [5]).public_bytes(
        serialization.Encoding.DER
    )
    [result] = refresh_due_crls(force=True)
    assert not result.ok and "signature" in result.message


@pytest.mark.django_db
def test_an_older_crl_replayed_by_the_distribution_point_is_refused(chain: Chain, crl_server: Any) -> None:
    """CRLs travel over plain HTTP: yesterday's validly signed CRL must not undo today's revocation."""
    from certauth.authorities import add_authority, refresh_due_crls
    from certauth.models import TrustedAuthority

    now = dt.datetime.now(dt.UTC)
    older = devpki.make_crl(chain.root, [], last_update=now - dt.timedelta(days=1))
    newer = devpki.make_crl(chain.root, [chain.leaf.serial_number], last_update=now - dt.timedelta(minutes=5))
    crl_server.body = newer.public_bytes(serialization.Encoding.DER)
    row = add_authority("root", chain.root.cert_pem(), crl_url=crl_server.url)
    [result] = refresh_due_crls(force=True)
    assert result.ok, result.message
    crl_server.body = older.public_bytes(serialization.Encoding.DER)
    [result] = refresh_due_crls(force=True)
    assert not result.ok and "before the one already held" in result.message
    row = TrustedAuthority.objects.get(pk=row.pk)
    assert row.crl_der == newer.public_bytes(serialization.Encoding.DER)


@pytest.mark.django_db
def test_crl_fetch_is_bounded(chain: Chain) -> None:
    import socket

    from certauth.authorities import CrlFetchError, fetch_crl

    with pytest.raises(CrlFetchError):
        fetch_crl("file:///etc/passwd")
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        with pytest.raises(CrlFetchError):
            fetch_crl(f"http://127.0.0.1:{silent.getsockname()[1]}/crl", timeout=0.3)
    finally:
        silent.close()


@pytest.mark.django_db
def test_cli_authority_add_and_crl_refresh(chain: Chain, crl_server: Any, tmp_path: Any) -> None:
    from django.core.management.base import CommandError

    from certauth.models import TrustedAuthority

    ca_file, leaf_file, crl_file = tmp_path / "ca.pem", tmp_path / "leaf.pem", tmp_path / "ca.crl"
    ca_file.write_bytes(chain.root.cert_pem())
    leaf_file.write_bytes(chain.leaf.cert_pem())
    crl_file.write_bytes(devpki.make_crl(chain.root, [42]).public_bytes(serialization.Encoding.PEM))
    out = io.StringIO()
    call_command("certauth", "authority", "add", "--name", "dev root", "--cert", str(ca_file), "--crl", str(crl_file),
                 "--crl-url", crl_server.url, stdout=out)
    row = TrustedAuthority.objects.get(name="dev root")
    assert row.thumbprint_sha256 == chain.root.thumbprint and row.is_enabled and row.crl_der
    assert "trusted authority dev root" in out.getvalue()
    call_command("certauth", "authority", "add", "--name", "again", "--cert", str(ca_file), stdout=out)
    assert "already trusted" in out.getvalue() and TrustedAuthority.objects.count() == 1
    with pytest.raises(CommandError, match="not a CA"):
        call_command("certauth", "authority", "add", "--name", "leaf", "--cert", str(leaf_file))
    call_command("certauth", "authority", "disable", "--name", "dev root", stdout=out)
    assert not TrustedAuthority.objects.get(name="dev root").is_enabled
    crl_server.body = devpki.make_crl(chain.root, [1, 2]).public_bytes(serialization.Encoding.DER)
    call_command("certauth", "crl-refresh", "--force", stdout=out)
    assert "ok     dev root: 2 revoked serials" in out.getvalue()


@pytest.mark.django_db
def test_admin_adds_authority_from_upload_and_refuses_non_ca(chain: Chain, admin_client: Any) -> None:
    from certauth.models import TrustedAuthority

    url = "/admin/certauth/trustedauthority/add/"
    response = admin_client.post(
        url,
        {
            "name": "leaf pretending",
            "is_enabled": "on",
            "certificate_text": chain.leaf.cert_pem().decode(),
        },
    )
    assert response.status_code == 200
    assert "not a CA certificate" in response.content.decode()
    der = chain.root.certificate.public_bytes(serialization.Encoding.DER)
    bad_crl = forged_crl(chain.root.certificate.subject, chain.other, [1]).public_bytes(serialization.Encoding.DER)
    response = admin_client.post(
        url,
        {
            "name": "uploaded root",
            "is_enabled": "on",
            "certificate_file": SimpleUploadedFile("root.der", der),
            "crl_file": SimpleUploadedFile("root.crl", bad_crl),
        },
    )
    assert response.status_code == 200 and "signature does not verify" in response.content.decode()
    good_crl = devpki.make_crl(chain.root, [7]).public_bytes(serialization.Encoding.PEM)
    response = admin_client.post(
        url,
        {
            "name": "uploaded root",
            "is_enabled": "on",
            "notes": "from the PKI team",
            "certificate_file": SimpleUploadedFile("root.der", der),
            "crl_file": SimpleUploadedFile("root.crl", good_crl),
        },
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    row = TrustedAuthority.objects.get(name="uploaded root")
    assert row.thumbprint_sha256 == thumbprint_of(chain.root.certificate)
    assert "CN=trust root" in row.subject and row.not_after == chain.root.certificate.not_valid_after_utc
    assert row.crl_der and row.crl_next_update is not None
    page = admin_client.get(f"/admin/certauth/trustedauthority/{row.pk}/change/").content.decode()
    assert row.thumbprint_sha256[:2].upper() in page and "Revoked serials in the CRL" in page


def test_der_ending_in_a_whitespace_byte_still_loads() -> None:
    """A DER signature ends in a random byte; one that looks like whitespace must not be stripped away."""
    for _ in range(2000):
        ca = devpki.make_ca("whitespace tail")
        der = ca.certificate.public_bytes(serialization.Encoding.DER)
        if der[-1:].isspace():
            break
    else:
        pytest.skip("no DER ending in a whitespace byte was generated")
    assert thumbprint_of(load_authority_certificate(der)) == ca.thumbprint
    crl = None
    for _ in range(2000):
        crl = devpki.make_crl(ca, [1]).public_bytes(serialization.Encoding.DER)
        if crl[-1:].isspace():
            break
    assert crl is not None and parse_crl(crl, ca.certificate).is_revoked(1)

"""The development PKI: files, permissions, chains, usages, CRL, PKCS#12 and reuse."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import DNSName, PolicyBuilder, Store, VerificationError

from certauth import devpki
from certauth.certificates import load_certificates, thumbprint_of
from certauth.devpki import (
    CLIENT_NAMES,
    DevPKI,
    create_dev_pki,
    issue_client,
    issue_server,
    make_ca,
    make_crl,
    self_signed_client,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPKI:
    return create_dev_pki(tmp_path_factory.mktemp("pki") / "dev")


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _client_verifier(*roots: x509.Certificate):
    return PolicyBuilder().store(Store(list(roots))).time(_now()).build_client_verifier()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- files -------------------------------------------------------------------------------------------


def test_writes_every_file_with_private_modes(pki: DevPKI) -> None:
    out = pki.out_dir
    expected = {
        "ca.pem",
        "ca.key",
        "intermediate-ca.pem",
        "intermediate-ca.key",
        "ca-bundle.pem",
        "other-ca.pem",
        "other-ca.key",
        "server.pem",
        "server.key",
        "ca.crl.pem",
        "manifest.json",
        "README.txt",
        "via-intermediate-chain.pem",
    }
    for name in CLIENT_NAMES:
        expected |= {pki.path(name, kind).name for kind in ("cert", "key", "p12", "bundle")}
        expected |= {f"{name}.p12", f"{name}-bundle.pem"}
    present = {p.name for p in out.iterdir()}
    assert expected <= present, expected - present
    assert _mode(out) == 0o700
    for path in out.iterdir():
        data = path.read_bytes()
        if b"PRIVATE KEY" in data or path.suffix == ".p12" or path.name == "manifest.json":
            assert _mode(path) == 0o600, path.name
        else:
            assert _mode(path) & 0o022 == 0, path.name
    for name in CLIENT_NAMES:
        assert _mode(pki.path(name, "key")) == 0o600
        assert b"PRIVATE KEY" in pki.path(name, "bundle").read_bytes()
        assert b"CERTIFICATE" in pki.path(name, "bundle").read_bytes()


def test_client_names_and_file_layout(pki: DevPKI) -> None:
    assert set(pki.names) == {
        "client",
        "client2",
        "unregistered",
        "expired",
        "not-yet-valid",
        "other-ca",
        "self-signed",
        "server-usage",
        "crl-revoked",
        "via-intermediate",
    }
    assert pki.path("client") == pki.out_dir / "client.pem"
    assert pki.path("client", "key") == pki.out_dir / "client.key"
    assert pki.path("client", "p12") == pki.out_dir / "client.p12"
    assert pki.path("client", "bundle") == pki.out_dir / "client-bundle.pem"
    assert pki.path("via-intermediate", "chain") == pki.out_dir / "via-intermediate-chain.pem"
    # The unrelated CA keeps other-ca.pem; the client it signed must not overwrite it.
    assert pki.path("other-root-ca") == pki.out_dir / "other-ca.pem"
    assert pki.path("other-ca") != pki.path("other-root-ca")
    assert pki.path("ca") == pki.out_dir / "ca.pem"
    assert pki.path("intermediate-ca", "key") == pki.out_dir / "intermediate-ca.key"
    assert pki.path("server", "key") == pki.out_dir / "server.key"
    assert pki.ca_bundle == pki.out_dir / "ca-bundle.pem"
    assert pki.crl == pki.out_dir / "ca.crl.pem"
    with pytest.raises(KeyError):
        pki.path("nobody")
    with pytest.raises(KeyError):
        pki.path("client", "chain")
    with pytest.raises(ValueError):
        pki.path("client", "pfx")


def test_common_names(pki: DevPKI) -> None:
    cns = {name: pki.manifest["certificates"][name]["subject_cn"] for name in pki.names}
    assert cns["client"] == "demo-client"
    assert cns["client2"] == "demo-client-next"
    assert cns["unregistered"] == "stranger"
    assert _cert(pki.path("ca")).subject.rfc4514_string().startswith("CN=certauth dev root CA")


def test_manifest_matches_files(pki: DevPKI) -> None:
    manifest = json.loads((pki.out_dir / "manifest.json").read_text())
    assert manifest == pki.manifest
    assert manifest["password"] == "dev-password"
    dt.datetime.fromisoformat(manifest["created"])
    for name, entry in manifest["certificates"].items():
        for kind in ("cert", "key", "p12", "bundle"):
            assert not Path(entry[kind]).is_absolute()
            assert (pki.out_dir / entry[kind]).is_file()
        certificate = _cert(pki.path(name))
        assert entry["thumbprint"] == thumbprint_of(certificate) == pki.thumbprint(name)
        assert dt.datetime.fromisoformat(entry["not_after"]) == certificate.not_valid_after_utc
    assert manifest["server"]["hosts"] == ["localhost", "127.0.0.1", "::1"]


def test_readme_and_docstrings_say_development_only(pki: DevPKI) -> None:
    readme = (pki.out_dir / "README.txt").read_text()
    assert "DEVELOPMENT" in readme and "NEVER" in readme and "PRODUCTION" in readme
    assert "DEVELOPMENT" in (devpki.__doc__ or "")
    assert "NEVER" in (create_dev_pki.__doc__ or "")
    assert "DEVELOPMENT" in pki.manifest["warning"]


def test_key_files_are_unencrypted_pkcs8_matching_the_certificates(pki: DevPKI) -> None:
    for name in [*CLIENT_NAMES, "server", "ca", "intermediate-ca", "other-root-ca"]:
        data = pki.path(name, "key").read_bytes()
        assert data.startswith(b"-----BEGIN PRIVATE KEY-----")
        key = serialization.load_pem_private_key(data, password=None)
        assert key.public_key() == _cert(pki.path(name)).public_key()


# --- chains and validity --------------------------------------------------------------------------------


def test_demo_clients_chain_to_the_root(pki: DevPKI) -> None:
    root = _cert(pki.path("ca"))
    verifier = _client_verifier(root)
    for name in ("client", "client2", "unregistered", "crl-revoked"):
        chain = verifier.verify(_cert(pki.path(name)), [])
        assert chain.chain[-1] == root


def test_via_intermediate_needs_the_intermediate(pki: DevPKI) -> None:
    root = _cert(pki.path("ca"))
    intermediate = _cert(pki.path("intermediate-ca"))
    leaf = _cert(pki.path("via-intermediate"))
    verified = _client_verifier(root).verify(leaf, [intermediate])
    assert verified.chain == [leaf, intermediate, root]
    with pytest.raises(VerificationError):
        _client_verifier(root).verify(leaf, [])
    chain_file = load_certificates(pki.path("via-intermediate", "chain").read_bytes())
    assert chain_file == [leaf, intermediate]


def test_ca_bundle_is_root_plus_intermediate(pki: DevPKI) -> None:
    bundle = load_certificates(pki.ca_bundle.read_bytes())
    assert bundle == [_cert(pki.path("ca")), _cert(pki.path("intermediate-ca"))]
    for ca in bundle:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
        ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        ca.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)


def test_bad_clients_are_refused_by_a_strict_verifier(pki: DevPKI) -> None:
    verifier = _client_verifier(_cert(pki.path("ca")))
    for name in ("expired", "not-yet-valid", "other-ca", "self-signed", "server-usage"):
        with pytest.raises(VerificationError):
            verifier.verify(_cert(pki.path(name)), [])


def test_other_ca_client_chains_to_the_other_ca_only(pki: DevPKI) -> None:
    leaf = _cert(pki.path("other-ca"))
    other = _cert(pki.path("other-root-ca"))
    assert leaf.issuer == other.subject
    _client_verifier(other).verify(leaf, [])


def test_validity_windows(pki: DevPKI) -> None:
    now = _now()
    expired = _cert(pki.path("expired"))
    assert expired.not_valid_after_utc < now
    assert now - expired.not_valid_before_utc > dt.timedelta(days=29)
    future = _cert(pki.path("not-yet-valid"))
    assert future.not_valid_before_utc > now + dt.timedelta(days=29)
    client = _cert(pki.path("client"))
    assert client.not_valid_before_utc <= now < client.not_valid_after_utc
    assert client.not_valid_after_utc - now > dt.timedelta(days=360)


def test_leaf_extensions(pki: DevPKI) -> None:
    leaf = _cert(pki.path("client"))
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://certauth.dev/demo-client"]
    assert san.get_values_for_type(x509.DNSName) == ["demo-client.clients.certauth.dev"]
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)


def test_server_usage_has_only_server_auth(pki: DevPKI) -> None:
    leaf = _cert(pki.path("server-usage"))
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_self_signed_is_a_self_issued_leaf(pki: DevPKI) -> None:
    leaf = _cert(pki.path("self-signed"))
    assert leaf.subject == leaf.issuer
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf.verify_directly_issued_by(leaf)


def test_server_certificate_covers_the_hosts(pki: DevPKI) -> None:
    server = _cert(pki.path("server"))
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    verifier = (
        PolicyBuilder().store(Store([_cert(pki.path("ca"))])).time(_now()).build_server_verifier(DNSName("localhost"))
    )
    verifier.verify(server, [])


# --- CRL and PKCS#12 --------------------------------------------------------------------------------------


def test_crl_lists_only_the_revoked_certificate(pki: DevPKI) -> None:
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    root = _cert(pki.path("ca"))
    assert crl.issuer == root.subject
    assert crl.is_signature_valid(root.public_key())
    revoked = _cert(pki.path("crl-revoked")).serial_number
    assert crl.get_revoked_certificate_by_serial_number(revoked) is not None
    assert crl.get_revoked_certificate_by_serial_number(_cert(pki.path("client")).serial_number) is None
    assert len(list(crl)) == 1
    assert crl.next_update_utc is not None
    assert dt.timedelta(days=6) < crl.next_update_utc - _now() <= dt.timedelta(days=7)


def test_p12_opens_with_the_password(pki: DevPKI) -> None:
    for name in CLIENT_NAMES:
        bundle = pkcs12.load_pkcs12(pki.path(name, "p12").read_bytes(), b"dev-password")
        assert bundle.cert is not None and bundle.key is not None
        assert bundle.cert.certificate == _cert(pki.path(name))
        assert bundle.key.public_key() == bundle.cert.certificate.public_key()
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(pki.path("client", "p12").read_bytes(), b"wrong")
    via = pkcs12.load_pkcs12(pki.path("via-intermediate", "p12").read_bytes(), b"dev-password")
    assert [c.certificate for c in via.additional_certs] == [_cert(pki.path("intermediate-ca"))]


# --- reuse and regeneration ---------------------------------------------------------------------------------


def _thumbprints(pki: DevPKI) -> dict[str, str]:
    return {name: pki.thumbprint(name) for name in [*pki.names, "server", "ca"]}


def test_second_call_reuses_and_overwrite_regenerates(tmp_path: Path) -> None:
    first = create_dev_pki(tmp_path / "pki", p12_password="first")
    second = create_dev_pki(tmp_path / "pki", p12_password="ignored-when-reused")
    assert _thumbprints(second) == _thumbprints(first)
    assert second.manifest == first.manifest
    assert second.p12_password == "first"
    assert DevPKI.load(tmp_path / "pki").manifest == first.manifest

    third = create_dev_pki(tmp_path / "pki", overwrite=True)
    before, after = _thumbprints(first), _thumbprints(third)
    assert all(before[name] != after[name] for name in before)
    assert third.p12_password == "dev-password"
    # The files on disk follow the manifest.
    assert thumbprint_of(_cert(third.path("client"))) == after["client"]


def test_regenerates_when_the_demo_client_is_about_to_expire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = create_dev_pki(tmp_path / "pki")
    real_now = devpki._utcnow()
    monkeypatch.setattr(devpki, "_utcnow", lambda: real_now + dt.timedelta(days=360))
    second = create_dev_pki(tmp_path / "pki")
    assert second.thumbprint("client") != first.thumbprint("client")
    third = create_dev_pki(tmp_path / "pki")
    assert third.thumbprint("client") == second.thumbprint("client")


def test_regenerates_when_a_file_is_missing(tmp_path: Path) -> None:
    first = create_dev_pki(tmp_path / "pki")
    first.path("client", "key").unlink()
    second = create_dev_pki(tmp_path / "pki")
    assert second.path("client", "key").is_file()
    assert second.thumbprint("client") != first.thumbprint("client")


def test_custom_hosts(tmp_path: Path) -> None:
    pki = create_dev_pki(tmp_path / "pki", hosts=("api.example.test", "10.0.0.7"))
    san = _cert(pki.path("server")).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]


def test_load_without_manifest_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DevPKI.load(tmp_path)


# --- low-level helpers -----------------------------------------------------------------------------------


def test_issued_helpers_round_trip() -> None:
    root = make_ca("unit root")
    leaf = issue_client(root, "unit-client", serial=4242)
    assert leaf.serial_number == 4242
    assert leaf.thumbprint == thumbprint_of(leaf.certificate)
    assert x509.load_pem_x509_certificate(leaf.cert_pem()) == leaf.certificate
    key = serialization.load_pem_private_key(leaf.key_pem(), None)
    assert key.public_key() == leaf.certificate.public_key()
    bundle = pkcs12.load_pkcs12(leaf.pkcs12("s3cret"), b"s3cret")
    assert bundle.cert is not None and bundle.cert.certificate == leaf.certificate


def test_issue_client_options() -> None:
    root = make_ca("unit root", key_type="rsa")
    assert isinstance(root.certificate.public_key(), rsa.RSAPublicKey)
    leaf = issue_client(
        root,
        "options",
        dns_names=["a.example"],
        uris=["spiffe://example/x"],
        emails=["ops@example.org"],
        eku=None,
        key_type="rsa",
    )
    assert isinstance(leaf.certificate.public_key(), rsa.RSAPublicKey)
    with pytest.raises(x509.ExtensionNotFound):
        leaf.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    san = leaf.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.example"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example/x"]
    assert san.get_values_for_type(x509.RFC822Name) == ["ops@example.org"]

    bare = issue_client(root, "no-san", include_san=False)
    with pytest.raises(x509.ExtensionNotFound):
        bare.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)

    both = issue_client(root, "both", eku=("client_auth", "server_auth"))
    assert list(both.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.SERVER_AUTH,
    ]
    with pytest.raises(ValueError):
        issue_client(root, "bad", eku=("teleport",))
    with pytest.raises(ValueError):
        issue_client(root, "bad", eku=())
    with pytest.raises(ValueError):
        issue_client(root, "bad", key_type="dsa")  # type: ignore[arg-type]


def test_intermediate_and_custom_dates() -> None:
    root = make_ca("unit root")
    start = _now() - dt.timedelta(days=2)
    end = _now() + dt.timedelta(days=2)
    intermediate = make_ca("unit intermediate", issuer=root, path_length=0, not_before=start, not_after=end)
    assert intermediate.certificate.issuer == root.certificate.subject
    assert intermediate.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    intermediate.certificate.verify_directly_issued_by(root.certificate)
    leaf = issue_client(intermediate, "deep")
    _client_verifier(root.certificate).verify(leaf.certificate, [intermediate.certificate])
    aki = leaf.certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = intermediate.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_make_crl_and_server_and_self_signed() -> None:
    root = make_ca("unit root")
    crl = make_crl(root, [1, 2, 3], next_update=_now() + dt.timedelta(hours=1))
    assert sorted(r.serial_number for r in crl) == [1, 2, 3]
    assert crl.is_signature_valid(root.certificate.public_key())
    server = issue_server(root, ["svc.internal"])
    eku = server.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    with pytest.raises(ValueError):
        issue_server(root, [])
    own = self_signed_client("lonely")
    assert own.certificate.subject == own.certificate.issuer
    own.certificate.verify_directly_issued_by(own.certificate)


def test_module_does_not_import_django() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import certauth.devpki, sys; assert 'django' not in sys.modules"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_a_stale_crl_keeps_this_update_before_next_update() -> None:
    # Only next_update given, already past: thisUpdate must still come first, however long ago "now" was read.
    root = devpki.make_ca("stale crl root")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    crl = devpki.make_crl(root, [7], next_update=past)
    assert crl.last_update_utc < crl.next_update_utc == past.replace(microsecond=0)


def test_ocsp_responder_certificate_and_aia_url() -> None:
    """The dev PKI issues a delegated OCSP responder (id-kp-OCSPSigning, issued by the CA) and, when asked, writes
    the responder's URL into a client certificate's Authority Information Access."""
    from cryptography.x509.oid import AuthorityInformationAccessOID

    ca = devpki.make_ca("ocsp dev CA")
    responder = devpki.issue_ocsp_responder(ca)
    usages = responder.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    responder.certificate.verify_directly_issued_by(ca.certificate)
    assert not responder.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Short-lived and marked id-pkix-ocsp-nocheck, as RFC 6960 4.2.2.2.1 advises (certauth requires the mark).
    responder.certificate.extensions.get_extension_for_class(x509.OCSPNoCheck)
    lifetime = responder.certificate.not_valid_after_utc - responder.certificate.not_valid_before_utc
    assert lifetime <= dt.timedelta(days=8)
    leaf = devpki.issue_client(ca, "with-aia", ocsp_url="http://ocsp.example.test/")
    access = leaf.certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location.value) for d in access] == [
        (AuthorityInformationAccessOID.OCSP, "http://ocsp.example.test/")
    ]
    plain = devpki.issue_client(ca, "without-aia")
    with pytest.raises(x509.ExtensionNotFound):
        plain.certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)

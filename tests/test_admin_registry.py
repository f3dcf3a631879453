"""The registry in the Django admin: register, see, rotate, revoke; driven through the Django test client
with real certificates, and checked against the API the way nginx calls it."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from certauth import services
from certauth.certificates import format_thumbprint
from certauth.forms import RegistrationForm
from certauth.models import AuthenticationFailure, CertificateIdentity, RegisteredCertificate, _hex_search_term

from .conftest import FixturePKI

pytestmark = pytest.mark.django_db

ADD = "admin:certauth_registeredcertificate_add"
ENTRIES = "admin:certauth_registeredcertificate_changelist"
IDENTITIES = "admin:certauth_certificateidentity_changelist"


def url(name: str, *args: Any) -> str:
    return reverse(name, args=args or None)


def entry_url(entry: RegisteredCertificate, view: str = "change") -> str:
    return reverse(f"admin:certauth_registeredcertificate_{view}", args=[entry.pk])


def add_data(identity: CertificateIdentity | None, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "identity": identity.pk if identity else "",
        "label": "",
        "predecessor": "",
        "pem_text": "",
        "pkcs12_password": "",
        "thumbprint": "",
        "thumbprint_not_before_0": "",
        "thumbprint_not_before_1": "",
        "thumbprint_not_after_0": "",
        "thumbprint_not_after_1": "",
    }
    data.update(fields)
    return data


def form_errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, f"expected the form again, got {response.status_code}"
    form = response.context["adminform"].form
    return {field: [str(message) for message in messages] for field, messages in form.errors.items()}


def fake_thumbprint(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


@pytest.fixture
def identity() -> CertificateIdentity:
    return CertificateIdentity.objects.create(name="billing", scopes="orders:read")


# --- register ----------------------------------------------------------------------------------------
def test_register_by_pasted_pem_fills_the_facts(admin_client, admin_user, identity, pki: FixturePKI) -> None:
    response = admin_client.post(url(ADD), add_data(identity, label="v1", pem_text=pki.client.cert_pem().decode()))
    assert response.status_code == 302, form_errors(response)
    entry = RegisteredCertificate.objects.get()
    assert entry.identity == identity
    assert entry.thumbprint_sha256 == pki.client.thumbprint
    assert entry.subject_cn == "billing-service"
    assert entry.issuer.startswith("CN=certauth test root")
    assert entry.serial_number == format(pki.client.serial_number, "X")
    assert entry.not_after == pki.client.certificate.not_valid_after_utc
    assert entry.subject_alternative_names["uri"]
    assert entry.created_by == admin_user
    assert entry.source == RegisteredCertificate.Source.CERTIFICATE
    page = admin_client.get(entry_url(entry)).content.decode()
    assert format_thumbprint(entry.thumbprint_sha256) in page
    assert 'name="thumbprint_sha256"' not in page  # facts are read-only: only the label is editable
    assert 'name="label"' in page


@pytest.mark.parametrize(
    "filename,encoding", [("client.pem", "pem"), ("client.crt", "pem"), ("client.cer", "der"), ("client.der", "der")]
)
def test_register_by_file_upload(admin_client, identity, pki: FixturePKI, filename: str, encoding: str) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    data = pki.client.certificate.public_bytes(Encoding.PEM if encoding == "pem" else Encoding.DER)
    upload = SimpleUploadedFile(filename, data)
    response = admin_client.post(url(ADD), add_data(identity, certificate_file=upload))
    assert response.status_code == 302, form_errors(response)
    assert RegisteredCertificate.objects.get().thumbprint_sha256 == pki.client.thumbprint


def test_register_by_pkcs12_keeps_only_the_public_certificate(admin_client, identity, pki: FixturePKI) -> None:
    bundle = SimpleUploadedFile("client.p12", pki.client.pkcs12("s3cret", cas=[pki.root.certificate]))
    response = admin_client.post(url(ADD), add_data(identity, certificate_file=bundle, pkcs12_password="s3cret"))
    assert response.status_code == 302, form_errors(response)
    entry = RegisteredCertificate.objects.get()
    assert entry.thumbprint_sha256 == pki.client.thumbprint  # the leaf, not the bundled CA
    stored = " ".join(str(value) for value in entry.__dict__.values())
    assert "PRIVATE KEY" not in stored
    assert pki.client.key_pem().decode().splitlines()[1] not in stored


def test_wrong_pkcs12_password_is_a_form_error(admin_client, identity, pki: FixturePKI) -> None:
    bundle = SimpleUploadedFile("client.pfx", pki.client.pkcs12("right"))
    response = admin_client.post(url(ADD), add_data(identity, certificate_file=bundle, pkcs12_password="wrong"))
    assert "wrong password" in form_errors(response)["certificate_file"][0]
    assert 'value="wrong"' not in response.content.decode()  # the password is never rendered back
    assert not RegisteredCertificate.objects.exists()


def test_register_by_typed_thumbprint_in_any_spelling(admin_client, identity, pki: FixturePKI) -> None:
    spelled = format_thumbprint(pki.client.thumbprint)  # AB:CD:... uppercase
    fields = {"thumbprint": spelled, "thumbprint_not_after_0": "2031-01-02", "thumbprint_not_after_1": "03:04:05"}
    response = admin_client.post(url(ADD), add_data(identity, **fields))
    assert response.status_code == 302, form_errors(response)
    entry = RegisteredCertificate.objects.get()
    assert entry.thumbprint_sha256 == pki.client.thumbprint
    assert entry.source == RegisteredCertificate.Source.THUMBPRINT
    assert entry.not_after == dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "fields,field,message",
    [
        ({}, "__all__", "Give the certificate"),
        ({"thumbprint": "ab" * 32, "pem_text": "x"}, "__all__", "one way only"),
        ({"pem_text": "hello"}, "pem_text", "neither PEM nor DER"),
        ({"thumbprint": "not a thumbprint"}, "thumbprint", "64 hexadecimal"),
        ({"thumbprint": "ab" * 32}, "thumbprint_not_after", "expiry date"),
    ],
)
def test_bad_input_is_a_form_error(admin_client, identity, fields: dict[str, str], field: str, message: str) -> None:
    errors = form_errors(admin_client.post(url(ADD), add_data(identity, **fields)))
    assert any(message in text for text in errors[field]), errors
    assert not RegisteredCertificate.objects.exists()


def test_pasted_private_key_is_refused(admin_client, identity, pki: FixturePKI) -> None:
    pasted = pki.client.key_pem().decode() + pki.client.cert_pem().decode()
    errors = form_errors(admin_client.post(url(ADD), add_data(identity, pem_text=pasted)))
    assert "private key" in errors["pem_text"][0]
    assert not RegisteredCertificate.objects.exists()


@pytest.mark.parametrize(
    "content", [b"", b"\x00\x01garbage", b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----"]
)
def test_unreadable_file_is_a_form_error(admin_client, identity, content: bytes) -> None:
    upload = SimpleUploadedFile("client.pem", content)
    errors = form_errors(admin_client.post(url(ADD), add_data(identity, certificate_file=upload)))
    assert errors["certificate_file"]
    assert not RegisteredCertificate.objects.exists()


def test_duplicate_thumbprint_is_a_form_error_naming_the_identity(admin_client, register, pki: FixturePKI) -> None:
    entry = register(pki.client, identity="first")
    other = CertificateIdentity.objects.create(name="second")
    errors = form_errors(admin_client.post(url(ADD), add_data(other, pem_text=pki.client.cert_pem().decode())))
    assert "already registered for identity 'first'" in errors["pem_text"][0]
    entry.revoke("key_compromise")
    spelled = format_thumbprint(pki.client.thumbprint).lower().replace(":", " ")
    fields = {"thumbprint": spelled, "thumbprint_not_after_0": "2031-01-02", "thumbprint_not_after_1": "00:00:00"}
    errors = form_errors(admin_client.post(url(ADD), add_data(other, **fields)))
    assert "revoked" in errors["thumbprint"][0] and "register it again" in errors["thumbprint"][0]
    assert RegisteredCertificate.objects.count() == 1


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pasted=st.text(max_size=300), raw=st.binary(max_size=300), name=st.sampled_from(["a.pem", "b.der", "c.p12", "d"])
)
def test_any_input_is_accepted_or_a_form_error_never_an_exception(identity, pasted: str, raw: bytes, name: str) -> None:
    for data, files in (
        (add_data(identity, pem_text=pasted), {}),
        (add_data(identity, pkcs12_password="pw"), {"certificate_file": SimpleUploadedFile(name, raw)}),
        (add_data(identity, thumbprint=pasted, thumbprint_not_after_0="2030-01-01", thumbprint_not_after_1="0:0"), {}),
    ):
        form = RegistrationForm(data, files)
        if not form.is_valid():
            assert form.errors
        else:  # only a well-formed typed thumbprint can be valid here
            assert form.canonical_thumbprint is not None


# --- the audit engineer's contract: ?from_failure=<pk> ----------------------------------------------------
def test_add_view_prefills_from_an_audited_failure(admin_client, api, identity, pki: FixturePKI) -> None:
    assert api.get("/api/whoami/", pki.stranger).status_code == 401
    failure = AuthenticationFailure.objects.get(reason="unknown_certificate")
    response = admin_client.get(f"{url(ADD)}?from_failure={failure.pk}&identity={identity.pk}")
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.initial["pem_text"] == failure.certificate_pem
    assert form.initial["identity"] == str(identity.pk)
    assert "BEGIN CERTIFICATE" in response.content.decode()
    # Saving the prefilled form registers the refused certificate; the client is then accepted.
    response = admin_client.post(url(ADD), add_data(identity, pem_text=form.initial["pem_text"]))
    assert response.status_code == 302, form_errors(response)
    assert api.get("/api/whoami/", pki.stranger).status_code == 200


def test_add_view_with_an_unknown_failure_warns(admin_client) -> None:
    response = admin_client.get(f"{url(ADD)}?from_failure=999999")
    assert response.status_code == 200
    assert "holds no certificate" in response.content.decode()
    assert "pem_text" not in response.context["adminform"].form.initial


@pytest.mark.parametrize(
    "query",
    [
        "from_failure=%C2%B2",  # "²": str.isdigit() says yes, int() says no -> ValueError
        "predecessor=%C2%B2",
        "identity=%C2%B2",  # handed to the autocomplete widget's query
        "from_failure=" + "9" * 5000,  # isdigit(), but int() refuses more than 4300 digits -> ValueError
        "predecessor=" + "9" * 5000,
        "from_failure=-1",
        "predecessor=0",
    ],
    ids=[
        "from_failure-superscript",
        "predecessor-superscript",
        "identity-superscript",
        "from_failure-5000-digits",
        "predecessor-5000-digits",
        "from_failure-negative",
        "predecessor-zero",
    ],
)
def test_add_form_prefill_parameters_never_answer_500(admin_client, query: str) -> None:
    """Attack review 2: ``int(x)`` guarded by ``x.isdigit()`` accepted Unicode digits (and overlong numbers)
    that ``int()`` rejects: an uncaught ValueError, a 500.  A bad primary key is ignored with a message."""
    admin_client.raise_request_exception = False
    response = admin_client.get(f"{url(ADD)}?{query}")
    assert response.status_code == 200, f"{query[:40]} -> {response.status_code}"
    initial = response.context["adminform"].form.initial
    assert "pem_text" not in initial
    assert not {"identity", "predecessor"} & set(initial)
    page = response.content.decode()
    assert "not a record number" in page or "holds no certificate" in page


def test_add_view_prefill_from_the_audit_needs_the_audit_view_permission(client, api, pki: FixturePKI) -> None:
    # A registry operator who may add certificates but not read the audit must not see an audit row's
    # certificate, CN or identity through the add form.
    assert api.get("/api/whoami/", pki.stranger).status_code == 401
    failure = AuthenticationFailure.objects.get(reason="unknown_certificate")
    assert failure.certificate_pem
    client.force_login(_staff("view_registeredcertificate", "add_registeredcertificate", "view_certificateidentity"))
    response = client.get(f"{url(ADD)}?from_failure={failure.pk}")
    assert response.status_code == 200
    assert "pem_text" not in response.context["adminform"].form.initial
    page = response.content.decode()
    assert failure.certificate_pem.splitlines()[1] not in page  # the certificate's body
    assert failure.subject_cn not in page
    assert "Prefilling from Authentication failures needs permission to view them" in page
    # With the audit view permission the same link prefills.
    auditor = User.objects.create_user("auditor", is_staff=True)
    auditor.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="certauth",
            codename__in=["add_registeredcertificate", "view_certificateidentity", "view_authenticationfailure"],
        )
    )
    client.force_login(auditor)
    response = client.get(f"{url(ADD)}?from_failure={failure.pk}")
    assert response.context["adminform"].form.initial["pem_text"] == failure.certificate_pem


def test_add_view_hides_sensitive_post_parameters(rf, admin_user) -> None:
    from django.contrib.admin.sites import site

    request = rf.post(url(ADD), {"pkcs12_password": "pw"})
    request.user = admin_user
    request._dont_enforce_csrf_checks = True
    model_admin = site._registry[RegisteredCertificate]
    try:
        model_admin.add_view(request)
    except Exception:  # noqa: S110 - the messages framework is absent on a bare request; we only need the marker
        pass
    assert set(request.sensitive_post_parameters) >= {"pkcs12_password", "pem_text"}


# --- see -----------------------------------------------------------------------------------------------
def test_identity_list_columns_and_expiry_warning(admin_client, register, pki: FixturePKI) -> None:
    now = timezone.now()
    used = register(pki.client, identity="billing")
    RegisteredCertificate.objects.filter(pk=used.pk).update(last_used_at=now - dt.timedelta(minutes=5))
    soon = services.register_thumbprint(used.identity, fake_thumbprint("soon"), not_after=now + dt.timedelta(days=3))
    services.register_thumbprint(
        CertificateIdentity.objects.create(name="idle"), fake_thumbprint("idle"), not_after=now + dt.timedelta(days=90)
    )
    response = admin_client.get(url(IDENTITIES))
    rows = {identity.name: identity for identity in response.context["cl"].result_list}
    assert rows["billing"].live_entry_count == 2
    assert rows["billing"].soonest_expiry == soon.not_after
    assert rows["billing"].last_used == now - dt.timedelta(minutes=5)
    assert rows["idle"].live_entry_count == 1
    assert rows["idle"].last_used is None
    page = response.content.decode()
    assert "1 certificate of an active identity expires within 30 days" in page
    assert "certauth-status--expiring" in page


def test_identity_filters(admin_client, register, pki: FixturePKI) -> None:
    now = timezone.now()
    fresh = register(pki.client, identity="fresh")
    RegisteredCertificate.objects.filter(pk=fresh.pk).update(last_used_at=now)
    expiring = CertificateIdentity.objects.create(name="expiring")
    services.register_thumbprint(expiring, fake_thumbprint("e"), not_after=now + dt.timedelta(days=10))
    register(pki.expired, identity="expired")
    register(pki.client2, identity="revoked").revoke("key_compromise")
    CertificateIdentity.objects.create(name="off", is_active=False)

    def names(query: str) -> set[str]:
        return {identity.name for identity in admin_client.get(f"{url(IDENTITIES)}?{query}").context["cl"].result_list}

    assert names("certificates=expiring") == {"expiring"}
    assert names("certificates=expired") == {"expired"}
    assert names("certificates=revoked") == {"revoked"}
    assert names("certificates=never_used") == {"expiring", "expired", "revoked", "off"}
    assert names("is_active__exact=0") == {"off"}


@pytest.mark.parametrize(
    "spelling",
    [
        lambda tp: format_thumbprint(tp),  # AB:CD:... uppercase with colons
        lambda tp: format_thumbprint(tp, " ").lower(),
        lambda tp: tp.upper(),
        lambda tp: "SHA256 Fingerprint=" + format_thumbprint(tp),
        lambda tp: format_thumbprint(tp[:16]),  # the first eight bytes, as shown in the list
    ],
)
def test_search_by_thumbprint_in_any_spelling(admin_client, register, pki: FixturePKI, spelling: Any) -> None:
    register(pki.client, identity="billing")
    register(pki.client2, identity="shipping")
    term = spelling(pki.client.thumbprint)
    identities = admin_client.get(url(IDENTITIES), {"q": term}).context["cl"].result_list
    assert [identity.name for identity in identities] == ["billing"]
    entries = admin_client.get(url(ENTRIES), {"q": term}).context["cl"].result_list
    assert [entry.thumbprint_sha256 for entry in entries] == [pki.client.thumbprint]


def test_search_by_name_subject_cn_and_serial(admin_client, register, pki: FixturePKI) -> None:
    register(pki.client, identity="billing")
    register(pki.stranger, identity="other")
    serial = format(pki.client.serial_number, "X")
    colon_serial = ":".join(serial[i : i + 2] for i in range(0, len(serial), 2)).lower()
    for term in ("billi", "billing-service", serial, colon_serial):
        identities = admin_client.get(url(IDENTITIES), {"q": term}).context["cl"].result_list
        assert [identity.name for identity in identities] == ["billing"], term


def test_entry_list_shows_status_badges_and_short_thumbprint(admin_client, register, pki: FixturePKI) -> None:
    register(pki.client)
    register(pki.expired)
    register(pki.not_yet_valid)
    register(pki.stranger).revoke("superseded")
    services.register_thumbprint(
        CertificateIdentity.objects.get(name="billing"),
        fake_thumbprint("soon"),
        not_after=timezone.now() + dt.timedelta(days=2),
    )
    page = admin_client.get(url(ENTRIES)).content.decode()
    for status, text in [
        ("valid", "Valid"),
        ("expiring", "Expiring soon"),
        ("expired", "Expired"),
        ("not_yet_valid", "Not yet valid"),
        ("revoked", "Revoked"),
    ]:
        assert f'certauth-status--{status}" title="' in page and f">{text}</span>" in page, status
    full = format_thumbprint(pki.client.thumbprint)
    assert f'title="{full}">{format_thumbprint(pki.client.thumbprint[:16])}…</code>' in page
    assert "certauth/admin.css" in page


@pytest.mark.parametrize("status", ["valid", "expiring", "expired", "not_yet_valid", "revoked"])
def test_status_filter_agrees_with_status(admin_client, register, pki: FixturePKI, status: str) -> None:
    entries = [register(pki.client), register(pki.expired), register(pki.not_yet_valid)]
    entries.append(register(pki.stranger))
    entries[-1].revoke()
    entries.append(
        services.register_thumbprint(
            entries[0].identity, fake_thumbprint("s"), not_after=timezone.now() + dt.timedelta(days=1)
        )
    )
    listed = admin_client.get(url(ENTRIES), {"status": status}).context["cl"].result_list
    expected = {entry.pk for entry in RegisteredCertificate.objects.all() if entry.status() == status}
    assert {entry.pk for entry in listed} == expected and expected


def _populate(count: int) -> None:
    now = timezone.now()
    for index in range(count):
        ident = CertificateIdentity.objects.create(name=f"client-{count}-{index:03}")
        old = services.register_thumbprint(
            ident, fake_thumbprint(f"{count}-{index}-a"), not_after=now + dt.timedelta(days=5)
        )
        services.add_successor(old, fake_thumbprint(f"{count}-{index}-b"), not_after=now + dt.timedelta(days=400))
        RegisteredCertificate.objects.filter(pk=old.pk).update(last_used_at=now)


@pytest.mark.parametrize("changelist", [IDENTITIES, ENTRIES])
def test_changelist_query_count_does_not_grow_with_rows(admin_client, changelist: str) -> None:
    counts = []
    for rows in (5, 50):
        _populate(rows if not counts else rows - 5)
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(url(changelist))
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == (rows if changelist == IDENTITIES else min(2 * rows, 50))
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


def test_identity_page_query_count_does_not_grow_with_entries(admin_client) -> None:
    counts = []
    for successors in (2, 20):
        ident = CertificateIdentity.objects.create(name=f"rotating-{successors}")
        entry = services.register_thumbprint(
            ident, fake_thumbprint(f"{successors}"), not_after=timezone.now() + dt.timedelta(days=9)
        )
        for index in range(successors):
            entry = services.add_successor(
                entry, fake_thumbprint(f"{successors}-{index}"), not_after=timezone.now() + dt.timedelta(days=99)
            )
        change = reverse("admin:certauth_certificateidentity_change", args=[ident.pk])
        admin_client.get(change)  # warm per-process caches (content types, permissions)
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(change).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


# --- rotate ---------------------------------------------------------------------------------------------
def test_rotation_through_the_admin(admin_client, admin_user, api, identity, pki: FixturePKI) -> None:
    response = admin_client.post(url(ADD), add_data(identity, pem_text=pki.client.cert_pem().decode()))
    assert response.status_code == 302, form_errors(response)
    old = RegisteredCertificate.objects.get()
    assert api.get("/api/whoami/", pki.client).status_code == 200

    # "Add successor" opens the registration form preset to the identity and the predecessor.
    response = admin_client.get(entry_url(old, "successor"))
    assert response.status_code == 302
    form = admin_client.get(response.url).context["adminform"].form
    assert form.initial["identity"] == str(identity.pk) and form.initial["predecessor"] == str(old.pk)
    upload = SimpleUploadedFile("next.pem", pki.client2.cert_pem())
    response = admin_client.post(url(ADD), add_data(identity, predecessor=old.pk, certificate_file=upload))
    assert response.status_code == 302, form_errors(response)
    new = RegisteredCertificate.objects.get(thumbprint_sha256=pki.client2.thumbprint)
    assert new.predecessor == old and new.identity == identity

    # Overlap: both certificates are accepted, and the admin shows that both are in use.
    assert api.get("/api/whoami/", pki.client).status_code == 200
    assert api.get("/api/whoami/", pki.client2).status_code == 200
    old.refresh_from_db()
    new.refresh_from_db()
    assert old.last_used_at is not None and new.last_used_at is not None
    page = admin_client.get(reverse("admin:certauth_certificateidentity_change", args=[identity.pk])).content.decode()
    inline = page.lower().split("certificates (newest first)")[1]
    assert inline.count('<time datetime="') == 2 and "never" not in inline
    rotation = admin_client.get(entry_url(old)).content.decode()
    assert "replaced by" in rotation and format_thumbprint(new.thumbprint_sha256[:16]) in rotation

    # Retire the old one: the confirmation names its successor and presets "superseded".
    response = admin_client.get(entry_url(old, "retire"))
    assert response.status_code == 200
    assert response.context["form"].initial == {"reason": "superseded"}
    assert format_thumbprint(new.thumbprint_sha256[:16]) in response.content.decode()
    response = admin_client.post(entry_url(old, "retire"), {"reason": "superseded"})
    assert response.status_code == 302
    old.refresh_from_db()
    assert old.revocation_reason == "superseded" and old.revoked_by == admin_user and old.revoked_at is not None

    refused = api.get("/api/whoami/", pki.client)
    assert refused.status_code == 401 and refused.json()["reason"] == "certificate_revoked"
    assert api.get("/api/whoami/", pki.client2).status_code == 200


def test_successor_must_belong_to_the_same_identity(admin_client, register, pki: FixturePKI) -> None:
    old = register(pki.client, identity="billing")
    other = CertificateIdentity.objects.create(name="other")
    data = add_data(other, predecessor=old.pk, pem_text=pki.client2.cert_pem().decode())
    assert "same identity" in form_errors(admin_client.post(url(ADD), data))["predecessor"][0]


def test_add_successor_and_retire_services(register, pki: FixturePKI, admin_user) -> None:
    old = register(pki.client)
    with pytest.raises(ValidationError):
        services.add_successor(old, fake_thumbprint("x"))
    new = services.add_successor(old, pki.client2.certificate, by=admin_user)
    assert new.predecessor == old and new.identity == old.identity and new.created_by == admin_user
    assert services.retire(old, by=admin_user) is True
    assert services.retire(old, by=admin_user) is False
    old.refresh_from_db()
    assert old.revocation_reason == "superseded"


# --- revoke ---------------------------------------------------------------------------------------------
def test_bulk_revoke_with_reason_on_a_confirmation_page(
    admin_client, admin_user, api, register, pki: FixturePKI
) -> None:
    first, second = register(pki.client, identity="a"), register(pki.client2, identity="b")
    keep = register(pki.stranger, identity="c")
    assert api.get("/api/whoami/", pki.client).status_code == 200  # cached as accepted in this worker
    selection = {"action": "revoke_selected", "_selected_action": [first.pk, second.pk], "index": 0}
    response = admin_client.post(url(ENTRIES), selection)
    assert response.status_code == 200
    assert response.templates[0].name == "admin/certauth/registeredcertificate/revoke_confirmation.html"
    assert response.context["total"] == 2
    assert not RegisteredCertificate.objects.revoked().exists()  # nothing happens before confirming

    confirm = {"action": "revoke_selected", "_selected_action": [first.pk, second.pk], "post": "yes"}
    response = admin_client.post(url(ENTRIES), {**confirm})  # no reason chosen: asked again
    assert response.status_code == 200 and response.context["form"].errors
    response = admin_client.post(url(ENTRIES), {**confirm, "reason": "key_compromise"})
    assert response.status_code == 302
    for entry in (first, second):
        entry.refresh_from_db()
        assert entry.revocation_reason == "key_compromise" and entry.revoked_by == admin_user
    keep.refresh_from_db()
    assert keep.revoked_at is None
    refused = api.get("/api/whoami/", pki.client)  # the very next request in this process
    assert refused.status_code == 401 and refused.json()["reason"] == "certificate_revoked"
    assert api.get("/api/whoami/", pki.stranger).status_code == 200


def test_per_entry_revoke(admin_client, api, register, pki: FixturePKI) -> None:
    entry = register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    page = admin_client.get(entry_url(entry)).content.decode()
    assert entry_url(entry, "revoke") in page and entry_url(entry, "retire") in page
    response = admin_client.get(entry_url(entry, "revoke"))
    assert response.status_code == 200 and "cannot be undone" in response.content.decode()
    assert admin_client.post(entry_url(entry, "revoke"), {"reason": "cessation_of_operation"}).status_code == 302
    entry.refresh_from_db()
    assert entry.revocation_reason == "cessation_of_operation"
    assert api.get("/api/whoami/", pki.client).json()["reason"] == "certificate_revoked"
    # Revoked: the one change left is raising the reason to key compromise (review 3, F3)...
    page = admin_client.get(entry_url(entry)).content.decode()
    assert entry_url(entry, "retire") not in page and "Revoke as key compromise" in page
    offered = admin_client.get(entry_url(entry, "revoke")).context["form"].fields["reason"].choices
    assert [value for value, _label in offered] == ["key_compromise"]
    assert admin_client.post(entry_url(entry, "revoke"), {"reason": "unspecified"}).status_code == 200  # not offered
    revoked_at = RegisteredCertificate.objects.get(pk=entry.pk).revoked_at
    assert admin_client.post(entry_url(entry, "revoke"), {"reason": "key_compromise"}).status_code == 302
    entry.refresh_from_db()
    assert entry.revocation_reason == "key_compromise" and entry.revoked_at == revoked_at
    assert "raised from cessation_of_operation to key_compromise" in str(LogEntry.objects.latest("pk").change_message)
    # ... and after that none.
    assert entry_url(entry, "revoke") not in admin_client.get(entry_url(entry)).content.decode()


def test_revocation_is_one_way_in_the_model_and_in_bulk(register, pki: FixturePKI, admin_user) -> None:
    entry = register(pki.client)
    entry.revoke("key_compromise")
    entry.revoked_at = None
    with pytest.raises(ValidationError):
        entry.save()
    revoked_at = RegisteredCertificate.objects.get().revoked_at
    assert services.revoke_many(RegisteredCertificate.objects.all(), "unspecified", by=admin_user) == 0
    entry = RegisteredCertificate.objects.get()
    assert entry.revoked_at == revoked_at and entry.revocation_reason == "key_compromise"


def action_names(changelist_response: Any) -> list[str]:
    form = changelist_response.context["action_form"]  # None when no action is available at all
    return [] if form is None else [name for name, _label in form.fields["action"].choices]


def _staff(*codenames: str) -> User:
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="certauth", codename__in=codenames))
    return user


def test_staff_without_revoke_permission_cannot_revoke(client, register, pki: FixturePKI) -> None:
    entry = register(pki.client)
    client.force_login(_staff("view_registeredcertificate", "add_registeredcertificate", "view_certificateidentity"))
    actions = action_names(client.get(url(ENTRIES)))
    assert "revoke_selected" not in actions and "retire_selected" not in actions
    response = client.post(
        url(ENTRIES),
        {"action": "revoke_selected", "_selected_action": [entry.pk], "post": "yes", "reason": "unspecified"},
    )
    assert response.status_code in (200, 302)
    assert client.get(entry_url(entry, "revoke")).status_code == 403
    assert client.post(entry_url(entry, "retire"), {"reason": "superseded"}).status_code == 403
    page = client.get(entry_url(entry)).content.decode()
    assert entry_url(entry, "revoke") not in page and entry_url(entry, "successor") in page
    identity_page = client.get(reverse("admin:certauth_certificateidentity_change", args=[entry.identity_id]))
    assert entry_url(entry, "revoke") not in identity_page.content.decode()
    entry.refresh_from_db()
    assert entry.revoked_at is None


def test_staff_with_revoke_permission_can_revoke(client, register, pki: FixturePKI) -> None:
    entry = register(pki.client)
    client.force_login(_staff("view_registeredcertificate", "revoke_registeredcertificate"))
    assert client.post(entry_url(entry, "revoke"), {"reason": "unspecified"}).status_code == 302
    entry.refresh_from_db()
    assert entry.revoked_by.username == "operator"


def test_view_only_staff_cannot_register(client) -> None:
    client.force_login(_staff("view_registeredcertificate"))
    assert client.get(url(ADD)).status_code == 403


def test_disable_identity_action(admin_client, admin_user, api, register, pki: FixturePKI) -> None:
    entry = register(pki.client)
    assert api.get("/api/whoami/", pki.client).status_code == 200
    selection = {"action": "disable_selected", "_selected_action": [entry.identity_id], "index": 0}
    assert admin_client.post(url(IDENTITIES), selection).status_code == 302
    identity = CertificateIdentity.objects.get()
    assert not identity.is_active and identity.disabled_by == admin_user and identity.disabled_at
    assert api.get("/api/whoami/", pki.client).json()["reason"] == "identity_disabled"


def test_disable_needs_its_own_permission(client, register, pki: FixturePKI) -> None:
    entry = register(pki.client)
    client.force_login(_staff("view_certificateidentity", "change_certificateidentity"))
    actions = action_names(client.get(url(IDENTITIES)))
    assert "disable_selected" not in actions
    change = reverse("admin:certauth_certificateidentity_change", args=[entry.identity_id])
    assert 'name="is_active"' not in client.get(change).content.decode()


# --- pure helpers -----------------------------------------------------------------------------------------
@given(
    thumbprint=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    separator=st.sampled_from(["", ":", " ", "-"]),
    upper=st.booleans(),
)
def test_hex_search_term_reads_any_thumbprint_spelling(thumbprint: str, separator: str, upper: bool) -> None:
    spelled = format_thumbprint(thumbprint, separator)
    assert _hex_search_term(spelled if upper else spelled.lower()) == thumbprint


@given(st.text(max_size=80))
def test_hex_search_term_is_hex_or_empty(text: str) -> None:
    result = _hex_search_term(text)
    assert result == "" or all(ch in "0123456789abcdef" for ch in result)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("expired", "certificate_expired"), ("server_usage", "wrong_usage"), ("root", "wrong_usage")],
)
def test_a_certificate_that_could_never_authenticate_is_a_form_error(
    admin_client, identity, pki: FixturePKI, name: str, reason: str
) -> None:
    pem = getattr(pki, name).cert_pem().decode()
    response = admin_client.post(url(ADD), add_data(identity, pem_text=pem))
    assert response.status_code == 200
    assert any(reason in message for message in form_errors(response)["pem_text"])
    assert not RegisteredCertificate.objects.exists()


def test_a_not_yet_valid_certificate_can_be_registered_ahead_of_a_rotation(admin_client, identity, pki) -> None:
    response = admin_client.post(url(ADD), add_data(identity, pem_text=pki.not_yet_valid.cert_pem().decode()))
    assert response.status_code == 302, form_errors(response)
    assert RegisteredCertificate.objects.get().status() == "not_yet_valid"


def test_identity_autocomplete_matches_names_only_with_the_exact_name_first(admin_client, pki) -> None:
    """Typing an identity's name must never preselect another identity whose certificate's CN contains it."""
    target = CertificateIdentity.objects.create(name="demo-client")
    other = CertificateIdentity.objects.create(name="billing")
    CertificateIdentity.objects.create(name="demo-client-legacy")
    services.register_certificate(other, pki.issue("demo-client-next").certificate)
    response = admin_client.get(
        "/admin/autocomplete/",
        {
            "term": "demo-client",
            "app_label": "certauth",
            "model_name": "registeredcertificate",
            "field_name": "identity",
        },
    )
    assert response.status_code == 200, response.content
    names = [item["text"] for item in response.json()["results"]]
    assert names[0] == target.name
    assert "billing" not in names


def test_only_a_superuser_may_delete_a_revoked_entry(client, admin_client, register, pki: FixturePKI) -> None:
    """Deleting a revoked entry undoes the revocation (re-registration, identity rules): delete permission alone
    must not be enough."""
    entry = register(pki.client)
    entry.revoke("key_compromise")
    client.force_login(_staff("view_registeredcertificate", "delete_registeredcertificate"))
    assert client.post(entry_url(entry, "delete"), {"post": "yes"}).status_code == 403
    assert RegisteredCertificate.objects.filter(pk=entry.pk).exists()
    live = register(pki.client2)
    assert client.post(entry_url(live, "delete"), {"post": "yes"}).status_code == 302  # a live one: allowed
    assert admin_client.post(entry_url(entry, "delete"), {"post": "yes"}).status_code == 302
    assert not RegisteredCertificate.objects.filter(pk=entry.pk).exists()


def test_an_identity_cannot_act_as_a_staff_user(django_user_model) -> None:
    """Linking a certificate to a staff or superuser account would open the admin without a password."""
    staff = django_user_model.objects.create_user("ops", is_staff=True)
    identity = CertificateIdentity(name="svc", user=staff)
    with pytest.raises(ValidationError) as excinfo:
        identity.full_clean()
    assert "user" in excinfo.value.message_dict
    service_user = django_user_model.objects.create_user("svc-bot")
    identity.user = service_user
    identity.full_clean()


def test_only_a_superuser_chooses_the_linked_user(client, admin_client, django_user_model) -> None:
    identity = CertificateIdentity.objects.create(name="svc")
    change = reverse("admin:certauth_certificateidentity_change", args=[identity.pk])
    client.force_login(_staff("view_certificateidentity", "change_certificateidentity"))
    assert 'name="user"' not in client.get(change).content.decode()
    assert 'name="user"' in admin_client.get(change).content.decode()

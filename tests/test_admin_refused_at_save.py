"""A registration refused when it is written (the registry changed between the admin form's checks and its
save) answers with a message and the page again, never a 500, and keeps nothing.

The race is made real, not mocked: when the registration service builds its new entry (after its checks,
before its insert) a ``post_init`` receiver registers the same certificate for another identity, as a
concurrent operator would in that window.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.db.models.signals import post_init
from django.urls import reverse

from certauth import services
from certauth.models import CertificateIdentity, RegisteredCertificate

from .conftest import FixturePKI
from .test_admin_identity_pages import identity_data
from .test_admin_registry import add_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def racer(pki: FixturePKI) -> Iterator[list[int]]:
    """Registers ``pki.client`` for identity "racer" when the service builds its new entry; counts its runs."""
    ran: list[int] = []

    def register_first(sender: Any, instance: RegisteredCertificate, **kwargs: Any) -> None:
        # A new entry with its identity set: only the service builds one (the form's own instance has none).
        if ran or instance.pk is not None or instance.identity_id is None:
            return
        ran.append(1)
        racer_identity, _created = services.get_or_create_identity("racer")
        services.register_certificate(racer_identity, pki.client.certificate)

    post_init.connect(register_first, sender=RegisteredCertificate, weak=False)
    try:
        yield ran
    finally:
        post_init.disconnect(register_first, sender=RegisteredCertificate)


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_a_certificate_registered_meanwhile_is_a_message_not_a_500(
    admin_client: Any, pki: FixturePKI, racer: list[int]
) -> None:
    identity = CertificateIdentity.objects.create(name="billing")
    add = reverse("admin:certauth_registeredcertificate_add")
    response = admin_client.post(add, add_data(identity, pem_text=pki.client.cert_pem().decode()))
    assert racer == [1]  # the race happened, after the form's checks had passed
    assert response.status_code == 302 and response["Location"] == add
    (text,) = messages_of(response)
    assert text.startswith("Nothing was saved:") and "already registered" in text and "racer" in text, text
    assert not RegisteredCertificate.objects.exists()  # the whole page's transaction rolled back


def test_an_identity_whose_first_certificate_was_registered_meanwhile_is_not_created(
    admin_client: Any, pki: FixturePKI, trusted_root: Any, racer: list[int]
) -> None:
    add = reverse("admin:certauth_certificateidentity_add")
    response = admin_client.post(add, identity_data("billing", pem_text=pki.client.cert_pem().decode()))
    assert racer == [1]
    assert response.status_code == 302 and response["Location"] == add
    (text,) = messages_of(response)
    assert text.startswith("Nothing was saved:") and "already registered" in text, text
    assert not CertificateIdentity.objects.filter(name__in=["billing", "racer"]).exists()
    assert not RegisteredCertificate.objects.exists()

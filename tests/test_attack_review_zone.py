"""Attack review: an IPv6 zone (``fe80::1%<anything>``) is no part of a client address certauth records."""

from __future__ import annotations

import logging

import pytest
from django.core.handlers.asgi import ASGIHandler

from certauth import authenticator

from .conftest import escaped, failures
from .test_attack_review_async import _asgi_get

pytestmark = pytest.mark.django_db(transaction=True)

#: A zone is any text after "%" (Python's ipaddress accepts it): here a NEL, a line break to str.splitlines()
#: and to several log viewers, followed by a forged log record.
ZONED = "fe80::1%\x85certauth accepted identity=root ip=10.0.0.1"


@pytest.mark.parametrize(
    ("client", "extra"),
    [
        # An ASGI server's proxy headers copied a client-written X-Forwarded-For entry into the peer address.
        (("fe80::1%\x85certauth accepted identity=root ip=10.0.0.1", 1), {"X-Forwarded-For": ZONED}),
        # A trusted proxy's client-address header (a proxy that passes X-Real-IP through, or a list).
        (("127.0.0.1", 1), {"X-Real-IP": ZONED}),
    ],
    ids=["peer", "client-ip-header"],
)
def test_an_ipv6_zone_is_dropped_from_recorded_addresses(pki, register, client, extra, caplog) -> None:
    register(pki.client)
    authenticator._rewrite_warned_at = None
    headers = {"X-SSL-Client-Cert": escaped(pki.client2), "X-SSL-Client-Verify": "SUCCESS", **extra}
    with caplog.at_level(logging.WARNING, logger="certauth"):
        status, body = _asgi_get(ASGIHandler(), "/api/whoami/", client, headers)
    assert status == 401, body
    [row] = failures()
    assert row.client_ip == "fe80::1", row.client_ip
    for record in caplog.records:
        assert "\x85" not in record.getMessage() and "identity=root" not in record.getMessage()

"""What proxies send for "no client certificate" (issue 12): empty, Apache's ``(null)``, ``-``, an unreplaced
placeholder of each proxy certauth documents.  Each is ``missing_certificate`` (not a refusal audited and logged
on every anonymous request), never a certificate, never more than no certificate; and a proxy's FAILED verdict
still names the refusal.  docs/SECURITY.md §40."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from certauth import forwarding
from certauth.forwarding import (
    ABSENT_MAX_LENGTH,
    PARSERS,
    is_absent,
    is_absent_verdict,
    parse_chain_header,
    parse_forwarded,
)
from certauth.models import AuthenticationFailure
from certauth.reasons import CertificateRefused, Reason

from .conftest import escaped
from .test_forwarding_formats import FORMATS, alb, certauth_for, envoy, pem, send, traefik

#: Every "no certificate" value certauth recognises, one per proxy spelling.
SENTINELS = [
    "",
    "   ",
    "\t\n",
    "(null)",  # Apache mod_headers, %{SSL_CLIENT_CERT}s without a certificate
    " (null) ",
    "-",
    '""',
    "''",
    "{http.request.tls.client.certificate_der_base64}",  # Caddy
    "{http.request.tls.client.certificate_pem}",
    "{tls_client_certificate_der_base64}",
    "%{SSL_CLIENT_CERT}s",  # Apache mod_headers
    "%{SSL_CLIENT_CERT}e",
    "%{SSL_CLIENT_CERT}",  # Apache ap_expr
    "%{SSL_CLIENT_CERT_CHAIN_0}s",
    "%[ssl_c_der,base64]",  # HAProxy
    "%[ssl_c_der,base64,url_enc]",
    "$ssl_client_escaped_cert",  # nginx
    "${ssl_client_escaped_cert}",
    "$ssl_client_cert",
    "%DOWNSTREAM_PEER_CERT%",  # Envoy
    "%REQ(x-ssl-client-cert)%",
]

#: Not "no certificate": malformed, and stay so (a verdict word, lookalikes, a placeholder glued to data).
NOT_ABSENT = [
    "NONE",
    "null",
    "None",
    "(null)x",
    "--",
    "{}",
    "{http.request.tls.client.certificate_der_base64}MIIB",
    "%{SSL_CLIENT_CERT}sx",
    "%[]",
    "$",
    "$1abc",
    "%AB%",
    "%2D%",
    "MIIB",
    "{" + "a" * ABSENT_MAX_LENGTH + "}",
]


@pytest.mark.parametrize("value", SENTINELS)
def test_sentinels_are_absent(value: str) -> None:
    assert is_absent(value)
    assert is_absent_verdict(value)


@pytest.mark.parametrize("value", NOT_ABSENT)
def test_lookalikes_are_not_absent(value: str) -> None:
    assert not is_absent(value)


@pytest.mark.parametrize("verdict", ["NONE", " NONE", "(null)", "-", "", "%{SSL_CLIENT_VERIFY}s", "$ssl_client_verify"])
def test_verdicts_that_say_no_certificate(verdict: str) -> None:
    assert is_absent_verdict(verdict)


@pytest.mark.parametrize("verdict", ["SUCCESS", "FAILED:certificate has expired", "GENEROUS", "none"])
def test_verdicts_that_are_verdicts(verdict: str) -> None:
    assert not is_absent_verdict(verdict)


@pytest.mark.parametrize("value", SENTINELS)
@pytest.mark.parametrize("fmt", sorted(PARSERS))
def test_every_sentinel_is_no_certificate_in_every_format(value: str, fmt: str) -> None:
    """An absent value hides no certificate: no dialect reads one from it (so "absent" never replaced an
    answer a certificate would have had), and as a chain header it is no chain."""
    with pytest.raises(CertificateRefused) as refused:
        parse_forwarded(value, fmt)
    assert refused.value.reason is Reason.MALFORMED_CERTIFICATE
    assert parse_chain_header(value, fmt) == ()


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_real_values_are_never_absent(pki, fmt: str) -> None:
    for issued in (pki.client, pki.root, pki.intermediate, pki.expired, pki.self_signed):
        value = FORMATS[fmt](issued)
        assert not is_absent(value)
        assert not is_absent(" " + value + "\n")
        assert not is_absent_verdict(value)
    for value in (
        envoy(pki.client, pki.intermediate),
        traefik(pki.client, pki.intermediate),
        traefik(pki.client, escaped=False),
        alb(pki.client, pki.intermediate),
        pem(pki.intermediate) + pem(pki.root),
        escaped(pki.intermediate),
    ):
        assert not is_absent(value)


_PLACEHOLDER_TEXT = st.from_regex(forwarding._PLACEHOLDER, fullmatch=True)
_SENTINEL_TEXT = st.builds(
    lambda blank_before, sentinel, blank_after: blank_before + sentinel + blank_after,
    st.text(" \t\r\n", max_size=3),
    st.sampled_from(SENTINELS) | _PLACEHOLDER_TEXT,
    st.text(" \t\r\n", max_size=3),
)


_NEAR_MISSES = st.text("{}%[]$(),-_.:abcdefghijklmnopqrstuvwxyzABC", max_size=80)


@given(value=_SENTINEL_TEXT | st.text(max_size=200) | _NEAR_MISSES)
def test_property_no_parseable_value_is_absent(value: str) -> None:
    """Whatever the text: when ``is_absent`` says "no certificate", no dialect can read a certificate from it
    (the contrapositive: a value some dialect parses is never absent)."""
    if not is_absent(value):
        return
    for fmt in PARSERS:
        with pytest.raises(CertificateRefused):
            parse_forwarded(value, fmt)


@given(data=st.binary(min_size=1, max_size=1200))
def test_property_base64_and_escaped_text_is_never_absent(data: bytes) -> None:
    """Encodings of any bytes (what a certificate looks like on the wire, whatever it holds) of a
    certificate's size are never absent: base64 has no placeholder character, and a URL escape is no name."""
    import base64
    from urllib.parse import quote

    text = base64.b64encode(data).decode()
    assert not is_absent(text)
    assert not is_absent(quote(text, safe=""))
    assert not is_absent(f":{text}:")


# --------------------------------------------------------------------------------------------------
# Through DRF and Django: each sentinel is missing_certificate, an anonymous visit leaves no refusal
# --------------------------------------------------------------------------------------------------


def assert_missing(response: Any) -> None:
    assert response.status_code == 401, response.content
    assert response.json()["reason"] == "missing_certificate", response.content
    assert response["WWW-Authenticate"] == 'ClientCertificate realm="api"'


@pytest.mark.django_db
@pytest.mark.parametrize("value", SENTINELS)
@pytest.mark.parametrize("verify", ["NONE", "(null)", None, "%{SSL_CLIENT_VERIFY}s"])
def test_api_sentinel_is_missing_certificate(api, value: str, verify: str | None) -> None:
    extra = {} if verify is None else {"HTTP_X_SSL_CLIENT_VERIFY": verify}
    response = api.get("/api/whoami/", None, HTTP_X_SSL_CLIENT_CERT=value, **extra)
    assert_missing(response)
    # The view needs a certificate: its 401 is audited as for no header at all (test_api.test_no_certificate).
    assert set(AuthenticationFailure.objects.values_list("reason", flat=True)) == {"missing_certificate"}


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("value", ["(null)", "-", "{http.request.tls.client.certificate_der_base64}", ""])
def test_api_sentinel_is_missing_in_every_format(api, fmt: str, value: str) -> None:
    with override_settings(CERTAUTH=certauth_for(fmt)):
        assert_missing(send(api, fmt, value))
    assert not AuthenticationFailure.objects.exclude(reason="missing_certificate").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["(null)", "{http.request.tls.client.certificate_der_base64}", ""])
def test_absent_with_a_failed_verdict_is_the_verdict(api, value: str) -> None:
    """A proxy that refused the certificate the client sent (its verdict FAILED) is a refusal, not anonymous."""
    response = api.get(
        "/api/whoami/", None, HTTP_X_SSL_CLIENT_CERT=value, HTTP_X_SSL_CLIENT_VERIFY="FAILED:certificate has expired"
    )
    assert response.status_code == 401
    assert response.json()["reason"] == "certificate_expired"
    response = api.get("/api/whoami/", None, HTTP_X_SSL_CLIENT_CERT=value, HTTP_X_SSL_CLIENT_VERIFY="GENEROUS")
    assert response.json()["reason"] == "proxy_verification_failed"
    assert AuthenticationFailure.objects.filter(reason="certificate_expired").exists()


@pytest.mark.django_db
def test_absent_from_an_untrusted_address_is_still_untrusted_proxy(api) -> None:
    """Only the proxy's "no certificate" is believed: a client that sends the header itself is refused."""
    response = api.get("/api/whoami/", None, HTTP_X_SSL_CLIENT_CERT="(null)", remote="198.51.100.9")
    assert response.json()["reason"] == "untrusted_proxy"


@pytest.mark.django_db
def test_absent_chain_header_is_no_chain(api, pki, register) -> None:
    """Apache sends ``(null)`` for SSL_CLIENT_CERT_CHAIN_0 of a certificate presented without its chain."""
    register(pki.client)
    with override_settings(CERTAUTH={"CHAIN_HEADER": "X-SSL-Client-Chain"}):
        for chain in ("(null)", "%{SSL_CLIENT_CERT_CHAIN_0}s", "{http.request.tls.client.certificate_chain}"):
            response = api.get("/api/whoami/", pki.client, HTTP_X_SSL_CLIENT_CHAIN=chain)
            assert response.status_code == 200, (chain, response.content)
    assert not AuthenticationFailure.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("value", SENTINELS)
def test_admin_login_page_leaves_no_refusal(client, value: str, caplog: pytest.LogCaptureFixture) -> None:
    """The admin's login page behind a proxy without a client certificate: no audit row, no refusal log
    line (before: proxy_verification_failed / malformed_certificate on every visit)."""
    caplog.set_level(logging.INFO, logger="certauth")
    meta = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_SSL_CLIENT_CERT": value, "HTTP_X_SSL_CLIENT_VERIFY": "NONE"}
    response = client.get("/admin/login/", **meta)
    assert response.status_code == 200
    response = client.get("/admin/", **meta)  # evaluates request.user: anonymous, sent to the login page
    assert response.status_code == 302
    assert not AuthenticationFailure.objects.exists()
    assert not [record for record in caplog.records if "refused" in record.getMessage()]


@pytest.mark.django_db
def test_session_user_keeps_its_rights_and_gains_none(client, django_user_model) -> None:
    """A logged-in user with an absent value is the session user, and an anonymous one is anonymous."""
    user = django_user_model.objects.create_superuser("root", "root@example.invalid", "x")
    client.force_login(user)
    response = client.get("/admin/", REMOTE_ADDR="127.0.0.1", HTTP_X_SSL_CLIENT_CERT="(null)")
    assert response.status_code == 200
    client.logout()
    response = client.get("/admin/", REMOTE_ADDR="127.0.0.1", HTTP_X_SSL_CLIENT_CERT="(null)")
    assert response.status_code == 302
    assert not AuthenticationFailure.objects.exists()


@pytest.mark.django_db
def test_async_absent_is_answered_on_the_loop_and_failed_is_not(api) -> None:
    """Under ASGI an absent value needs no thread (nothing to read or audit), like no header; a FAILED verdict
    is a refusal, audited from a thread."""
    from django.test import RequestFactory

    from certauth import authenticator

    def request(value: str, verify: str) -> Any:
        meta = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_SSL_CLIENT_CERT": value, "HTTP_X_SSL_CLIENT_VERIFY": verify}
        return RequestFactory().get("/", **meta)

    authenticator.config()  # built once (it reads files): _decide_on_loop never builds it
    for value in SENTINELS:
        outcome = authenticator._decide_on_loop(request(value, "NONE"))
        assert outcome is not None and outcome.reason is Reason.MISSING_CERTIFICATE, value
    assert authenticator._decide_on_loop(request("(null)", "FAILED:certificate has expired")) is None

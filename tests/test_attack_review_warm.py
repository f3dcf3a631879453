"""Attack review of the warm path (``authenticator._warm``) and the memoised helpers it calls on every request."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import RequestFactory

from certauth import authenticator
from certauth.proxies import MEMOISED_LENGTH

from .conftest import escaped

pytestmark = pytest.mark.django_db


def test_a_peer_address_of_any_length_is_not_memoised_by_the_proxy_allow_list(pki) -> None:
    """``ProxyAllowList.trusts`` (an lru_cache, first call of both the warm and the full path) is keyed by the
    peer's text.  An ASGI server's proxy headers let a client name that text (tests/test_attack_review_async.py),
    so each distinct long value used to be kept: 4096 of them, each as long as a header may be.  A REMOTE_ADDR
    longer than any address is no address: refused as before, and never memoised."""
    factory = RequestFactory()
    cfg = authenticator.config()
    before = cfg.proxies.trusts.cache_info().currsize
    for index in range(20):
        peer = f"{index:04d}" + "x" * (4 * MEMOISED_LENGTH)
        request = factory.get(
            "/api/whoami/",
            REMOTE_ADDR=peer,
            HTTP_X_SSL_CLIENT_CERT=escaped(pki.client),
            HTTP_X_SSL_CLIENT_VERIFY="SUCCESS",
        )
        outcome = authenticator.evaluate(request)
        assert str(outcome.reason) == "untrusted_proxy"
        assert peer not in (outcome.detail or "")  # the client's text is not echoed either
    # At most one entry (the "no address" answer), not one per distinct value.
    assert cfg.proxies.trusts.cache_info().currsize <= before + 1


def _request(pki: Any, **extra: Any) -> Any:
    return RequestFactory().get(
        "/api/whoami/",
        REMOTE_ADDR="127.0.0.1",
        HTTP_X_SSL_CLIENT_CERT=escaped(pki.client),
        HTTP_X_SSL_CLIENT_VERIFY="SUCCESS",
        **extra,
    )


def test_a_clock_stepped_back_before_the_certificate_began_is_not_answered_by_the_remembered_acceptance(
    pki, register, monkeypatch
) -> None:
    """Held: the remembered window starts at the instant it was decided (a POSIX timestamp); a clock stepped
    back before the certificate's notBefore gets the full path's refusal, sync and on the loop alike."""
    import datetime as dt

    register(pki.client)
    began = pki.client.certificate.not_valid_before_utc
    frozen = [began + dt.timedelta(seconds=5)]
    monkeypatch.setattr(authenticator, "_now", lambda tz: frozen[0])
    monkeypatch.setattr(authenticator, "_timestamp", lambda: frozen[0].timestamp())
    assert authenticator.evaluate(_request(pki)).ok
    assert authenticator.evaluate(_request(pki)).ok  # warm
    frozen[0] = began - dt.timedelta(seconds=1)
    assert authenticator._decide_on_loop(_request(pki)) is None  # not on the loop: a hop, then the full path
    assert str(authenticator.evaluate(_request(pki)).reason) == "certificate_not_yet_valid"


def test_a_linked_user_made_staff_by_a_queryset_update_is_refused_on_the_warm_path(pki, register) -> None:
    """Held: no signal fires for ``update()``, the registry does not move, the acceptance stays remembered;
    the linked user is loaded on every sync decision and the loop never answers for a linked identity."""
    from django.contrib.auth import get_user_model

    entry = register(pki.client)
    user = get_user_model().objects.create(username="svc")
    identity = entry.identity
    identity.user = user
    identity.save()
    assert authenticator.evaluate(_request(pki)).ok
    assert authenticator.evaluate(_request(pki)).ok  # warm
    get_user_model().objects.filter(pk=user.pk).update(is_staff=True)
    assert authenticator._decide_on_loop(_request(pki)) is None
    assert str(authenticator.evaluate(_request(pki)).reason) == "identity_disabled"


@pytest.mark.xfail(
    strict=True,
    reason="performance, not security: values that carry the chain after the leaf (aws_alb, traefik, envoy_xfcc "
    "with Chain/Subject/URI) end with the intermediate's PEM or the subject fields, so every client of one CA "
    "shares ACCEPTED_KEY_TAIL and their remembered acceptances evict each other (the warm path never serves "
    "with two alternating clients). Fix: file under the leaf's own tail (e.g. the characters before the first "
    "end marker or separator), a format-specific slice, not the value's.",
)
def test_two_clients_of_one_intermediate_are_both_remembered_with_a_chain_carrying_format(
    pki, register, settings
) -> None:
    from certauth import devpki

    from .test_forwarding_formats import alb

    settings.CERTAUTH = {
        **settings.CERTAUTH,
        "FORWARDING_FORMAT": "aws_alb",
        "CERTIFICATE_HEADER": "X-Amzn-Mtls-Clientcert",
    }
    other = devpki.issue_client(pki.intermediate, "via-intermediate-2")
    register(pki.via_intermediate, identity="first")
    register(other, identity="second")
    values = [alb(pki.via_intermediate, pki.intermediate), alb(other, pki.intermediate)]
    for value in values:
        request = RequestFactory().get(
            "/api/whoami/",
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_AMZN_MTLS_CLIENTCERT=value,
            HTTP_X_SSL_CLIENT_VERIFY="SUCCESS",
        )
        assert authenticator.evaluate(request).ok
    remembered = [authenticator.config().accepted.peek(authenticator.accepted_key(value, None)) for value in values]
    assert [getattr(accepted, "value", None) for accepted in remembered] == [(value, None) for value in values]


def test_the_loop_never_builds_the_config_which_reads_the_proxy_secret_file(pki, register, settings, tmp_path) -> None:
    """``_Config()`` opens and reads ``PROXY_SECRET_FILE`` (a blocking read, maybe on a network filesystem, and
    an error log when unusable): the first async request of a process or of a settings generation must make it
    in the thread, not on the event loop (which used to build it, through ``_warm`` or ``_arrival``)."""
    secret = tmp_path / "proxy-secret"
    secret.write_text("s" * 40)
    secret.chmod(0o600)
    settings.CERTAUTH = {**settings.CERTAUTH, "PROXY_SECRET": None, "PROXY_SECRET_FILE": str(secret)}
    register(pki.client)
    header = {"HTTP_X_CERTAUTH_PROXY_SECRET": "s" * 40}
    authenticator._config = None  # a new process
    assert authenticator._decide_on_loop(_request(pki, **header)) is None
    assert authenticator._decide_on_loop(RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", **header)) is None
    assert authenticator._config is None  # nothing read on the loop
    assert authenticator.evaluate(_request(pki, **header)).ok  # in the thread: builds it, remembers the acceptance
    assert authenticator._config is not None
    assert authenticator._decide_on_loop(_request(pki, **header)).ok  # and then the loop answers

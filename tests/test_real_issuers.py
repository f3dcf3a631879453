"""Issue 12: client certificates made by the real PKI tools (tests/pkitools.py: easy-rsa, mkcert, certtool,
cfssl, openssl), each with its own documented recipe, through the API in-process as nginx forwards them
(``$ssl_client_escaped_cert`` from a trusted proxy address), in both proxy modes:

* PROXY_VERIFIES_CERTIFICATE True: nginx said SUCCESS; certauth still requires the chain to end at a trusted
  authority and checks the leaf;
* PROXY_VERIFIES_CERTIFICATE False (``optional_no_ca``): nginx verified nothing (its verdict is FAILED), certauth
  builds and verifies the chain itself.

Each tool's CA (and intermediate) is added as a trusted authority the way ``manage.py certauth authority add``
does (``add_authority``), its client registered on an identity of its own."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import pytest
from django.test import override_settings

from certauth.authorities import add_authority
from certauth.models import TrustedAuthority
from certauth.reasons import Reason
from certauth.services import get_or_create_identity, register_certificate

from .conftest import CertClient, escaped, failures
from .pkitools import ACCEPTED, RealIssuers, ToolPKI, require_tool

pytestmark = pytest.mark.django_db

#: What nginx puts in $ssl_client_verify in optional_no_ca mode for a certificate it could not verify.
NGINX_UNVERIFIED = "FAILED:unable to get local issuer certificate"

MODES = {
    "proxy-verifies": ({"PROXY_VERIFIES_CERTIFICATE": True}, "SUCCESS"),
    "certauth-verifies": ({"PROXY_VERIFIES_CERTIFICATE": False}, NGINX_UNVERIFIED),
}


def trust(issued: ToolPKI) -> None:
    """Add the tool's CA and intermediates as trusted authorities (root first)."""
    for number, pem in enumerate(issued.authority_pems()):
        add_authority(f"{issued.case} CA {number}", pem, notes=f"made by {issued.tool}")


def register(issued: ToolPKI) -> None:
    identity, _ = get_or_create_identity(issued.identity)
    register_certificate(identity, issued.client())


def whoami(issued: ToolPKI, verify: str) -> Any:
    return CertClient().get("/api/whoami/", escaped(issued.client_pem()), verify=verify)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ACCEPTED)
def test_each_tools_client_authenticates(real_issuers: RealIssuers, case: str, mode: str) -> None:
    issued = real_issuers[case]
    settings, verify = MODES[mode]
    trust(issued)
    register(issued)
    with override_settings(CERTAUTH=settings):
        response = whoami(issued, verify)
    assert response.status_code == 200, response.content
    assert response.json()["identity"] == issued.identity
    assert not failures()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ["cfssl-intermediate", "openssl-intermediate"])
def test_a_tool_intermediate_forwarded_by_the_proxy(real_issuers: RealIssuers, case: str, mode: str) -> None:
    """Only the tool's root is trusted; the intermediate comes in the proxy's chain header (CHAIN_HEADER):
    refused without it, accepted with it."""
    issued = real_issuers[case]
    settings, verify = MODES[mode]
    add_authority(f"{case} root", issued.authority_pems()[0])
    register(issued)
    chain = {"HTTP_X_SSL_CLIENT_CHAIN": quote(issued.authority_pems()[1].decode(), safe="")}
    with override_settings(CERTAUTH={**settings, "CHAIN_HEADER": "X-SSL-Client-Chain"}):
        alone = whoami(issued, verify)
        forwarded = CertClient().get("/api/whoami/", escaped(issued.client_pem()), verify=verify, **chain)
    assert alone.status_code == 401 and alone.json()["reason"] == str(Reason.UNTRUSTED_ISSUER), alone.content
    assert forwarded.status_code == 200, forwarded.content
    assert forwarded.json()["identity"] == issued.identity


@pytest.mark.parametrize("mode", MODES)
def test_an_unregistered_tool_client_is_unknown(real_issuers: RealIssuers, mode: str) -> None:
    """Trusted CA, client not registered: 401 unknown_certificate (the chain is fine, the registry says no)."""
    issued = real_issuers["cfssl"]
    settings, verify = MODES[mode]
    trust(issued)
    with override_settings(CERTAUTH=settings):
        response = whoami(issued, verify)
    assert response.status_code == 401, response.content
    assert response.json()["reason"] == str(Reason.UNKNOWN_CERTIFICATE)


@pytest.mark.parametrize("mode", MODES)
def test_a_tool_client_whose_ca_is_not_trusted_is_refused(real_issuers: RealIssuers, mode: str) -> None:
    """Registered client, its CA not added: refused in both modes (nginx's SUCCESS is not enough)."""
    issued = real_issuers["certtool"]
    settings, verify = MODES[mode]
    register(issued)
    with override_settings(CERTAUTH=settings):
        response = whoami(issued, verify)
    assert response.status_code == 401, response.content
    assert response.json()["reason"] == str(Reason.UNTRUSTED_ISSUER)


def seed_v1_response(real_issuers: RealIssuers, mode: str) -> dict[str, Any]:
    issued = real_issuers["openssl-seed-v1"]
    assert issued.client().version.name == "v1"  # what the recipe makes: the premise of the test
    settings, verify = MODES[mode]
    trust(issued)
    register(issued)
    with override_settings(CERTAUTH=settings):
        response = whoami(issued, verify)
    assert response.status_code == 401, response.content
    return response.json()


@pytest.mark.parametrize("mode", MODES)
def test_the_tutorial_recipe_v1_client_is_refused(real_issuers: RealIssuers, mode: str) -> None:
    """The widely copied ``openssl x509 -req`` recipe without ``-extfile`` makes a v1 certificate: refused as
    unsupported, with an audit row, even registered and under a trusted CA."""
    body = seed_v1_response(real_issuers, mode)
    assert body["reason"] == str(Reason.UNSUPPORTED_CERTIFICATE), body
    assert failures(reason=str(Reason.UNSUPPORTED_CERTIFICATE))


@pytest.mark.parametrize("mode", MODES)
def test_the_v1_refusal_tells_how_to_reissue(real_issuers: RealIssuers, mode: str) -> None:
    """The detail says how to fix it: reissue with ``-extfile``."""
    body = seed_v1_response(real_issuers, mode)
    assert "-extfile" in body["detail"], body


def test_every_tool_authority_is_stored_as_given(real_issuers: RealIssuers) -> None:
    """The registry keeps each tool's CA under its own thumbprint (no tool output is rewritten on the way in)."""
    issued = real_issuers["mkcert"]
    trust(issued)
    stored = TrustedAuthority.objects.get(name="mkcert CA 0")
    assert stored.certificate_pem.encode() == issued.authority_pems()[0]


def test_a_missing_tool_skips_only_where_nobody_could_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI (root, or CERTAUTH_REQUIRE_TOOLS=1 under `make test`) must fail on a missing tool, never skip it."""
    absent = "certauth-no-such-pki-tool"
    monkeypatch.delenv("CERTAUTH_REQUIRE_TOOLS", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="install-system-deps"):
        require_tool(absent)
    monkeypatch.setenv("CERTAUTH_REQUIRE_TOOLS", "1")
    with pytest.raises(pytest.fail.Exception, match="CERTAUTH_REQUIRE_TOOLS"):
        require_tool(absent)
    monkeypatch.delenv("CERTAUTH_REQUIRE_TOOLS")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(pytest.fail.Exception, match="root"):
        require_tool(absent)

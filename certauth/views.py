"""The view nginx hands its own certificate refusals to (``error_page 495 496``, see certauth.nginxconf).

nginx refused the TLS client certificate (495) or got none although ``ssl_verify_client on`` wants one
(496).  It does not forward the refused request: it sends ``GET /-/certauth/refused`` without a body and
the client's request line in ``X-Certauth-Original-Method`` / ``X-Certauth-Original-URI``.  This view
answers certauth's JSON 401 with the reason and records the refusal, once, under the path the client
asked for.  It never answers 200: nginx has already refused.

And the Prometheus scrape URL (``metrics_view``, docs/metrics.md).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from . import metrics
from .authenticator import (
    config,
    evaluate,
    meta_key,
    proxy_check,
    proxy_detail,
    record_refusal,
    refusal_after_authentication,
)
from .conf import settings
from .decorators import authorization_refusal, refusal_response
from .nginxconf import ORIGINAL_METHOD_HEADER, ORIGINAL_URI_HEADER
from .reasons import Reason

_ORIGINAL_URI_KEY = meta_key(ORIGINAL_URI_HEADER)
_ORIGINAL_METHOD_KEY = meta_key(ORIGINAL_METHOD_HEADER)
_METHOD = re.compile(r"[A-Za-z]{1,16}")


def original_request_line(request: HttpRequest) -> tuple[str, str]:
    """``(method, path)`` the client sent, from the proxy's headers when the request comes from a trusted
    proxy (anyone else could write them); otherwise this request's own.  The path is decoded like
    ``request.path`` and has no query string."""
    meta = request.META
    method, path = request.method or "", request.path
    if not proxy_check(config(), meta)[1]:
        return method, path
    raw_method = meta.get(_ORIGINAL_METHOD_KEY, "")
    if _METHOD.fullmatch(raw_method):
        method = raw_method.upper()
    raw_uri = meta.get(_ORIGINAL_URI_KEY, "")
    if raw_uri:
        # WSGI hands header values over as latin-1; nginx passes the URI's bytes through as sent.
        encoded = raw_uri.split("?", 1)[0].encode("latin-1", "replace")
        path = unquote_to_bytes(encoded).decode("utf-8", "replace")
    return method, path


@csrf_exempt
def refused(request: HttpRequest) -> HttpResponse:
    """Answer a request nginx refused: certauth's reason (JSON 401, or 503 ``registry_unavailable`` while
    the database is down) and one audit row with the original method and path.  When certauth itself
    would accept the certificate, the answer is ``proxy_verification_failed``: the proxy's refusal
    stands.  Any method; no CSRF check; never touches the session."""
    method, path = original_request_line(request)
    outcome = evaluate(request, path=path, method=method)
    if outcome.ok:
        detail = proxy_detail(request.META.get(config().verify_key, ""))
        outcome = refusal_after_authentication(outcome, Reason.PROXY_VERIFICATION_FAILED, detail)
    # A no-op when evaluate() has recorded it already (every reason but missing_certificate).
    record_refusal(request, outcome, path=path, method=method)
    return refusal_response(outcome)


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus exposition (``certauth.metrics``), to the scrapers ``METRICS_ALLOW`` admits: ``loopback``, a
    client on this host talking to Django directly (``certauth.metrics.direct_loopback``); ``scope``, a client
    certificate whose identity holds ``METRICS_SCOPE`` (refusals answered and audited like the API's).  404
    while ``METRICS_ENABLED`` is off; 503 naming the fix without prometheus-client.  GET and HEAD only."""
    if not settings.METRICS_ENABLED:
        raise Http404("certauth metrics are off (CERTAUTH METRICS_ENABLED).")
    allow = metrics.allow_mode()
    if allow == "scope":
        outcome = evaluate(request)
        refusal = authorization_refusal(request, outcome, [settings.METRICS_SCOPE.strip()]) if outcome.ok else outcome
        if refusal is not None:
            record_refusal(request, refusal)
            return refusal_response(refusal)
    elif allow == "loopback":
        cfg = config()
        proxy_keys = (cfg.cert_key, cfg.verify_key, cfg.client_ip_key, cfg.proxy_secret_key, cfg.chain_key)
        if not metrics.direct_loopback(request.META, proxy_keys):
            detail = (
                "Metrics are served only to a client on this host that talks to Django directly, not through "
                "the proxy (CERTAUTH METRICS_ALLOW = 'loopback'). Scrape the application server's own address "
                "from this host, or set METRICS_ALLOW = 'scope' and scrape with a client certificate whose "
                f"identity holds {settings.METRICS_SCOPE!r}."
            )
            return JsonResponse({"detail": detail}, status=403)
    else:
        detail = (
            f"CERTAUTH METRICS_ALLOW = {settings.METRICS_ALLOW!r} (with METRICS_SCOPE {settings.METRICS_SCOPE!r}) "
            "admits no one: "
            "set 'loopback' or 'scope' with a scope (manage.py check, certauth.W021)."
        )
        return JsonResponse({"detail": detail}, status=403)
    try:
        body = metrics.exposition()
    except ImportError:
        detail = f"CERTAUTH METRICS_ENABLED is on but prometheus-client is not installed: {metrics.INSTALL_HINT}."
        return JsonResponse({"detail": detail}, status=503)
    except metrics.Unavailable as exc:
        return JsonResponse({"detail": f"{exc}."}, status=503)
    from prometheus_client import CONTENT_TYPE_LATEST

    response = HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response

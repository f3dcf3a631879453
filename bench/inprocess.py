"""Section 1: in-process per-request cost through Django's WSGI handler (same middleware, same JSON).

Rows: no auth (``/bench/open-certificate/``: the certificate view's JSON, unauthenticated), DRF
TokenAuthentication, certauth pinned warm, certauth cold (a never-seen certificate each request), the
outside harness's shape (``bench.warm_client``: test client and ASGI ``AsyncClient``, nginx's headers, a DRF
view with no authentication at all as the baseline), certauth with chain validation + CRL (warm), strict mode
(``REGISTRY_MAX_STALENESS_SECONDS = 0``: the generation read from the database per request), when Redis
answers on 127.0.0.1:6379 a 1 s bound with the shared counter read from Redis per request
(``SHARED_CACHE_ALIAS``), and OCSP against a real ``openssl ocsp`` on loopback (warm, and first sight).
Settings-dependent rows run in their own phase with the baseline measured again alongside them, and their
ratio is to that baseline."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.test import override_settings

from certauth import devpki

from . import certs, warm_client
from .driver import Driver, certificate_headers, environ
from .measure import Stats, alternating, interleaved
from .report import Row, ratio_verdict, us
from .views import PINNED_IDENTITY

SECTION = "1 in-process"


@dataclass(frozen=True)
class Sizes:
    rounds: int
    per_round: int
    warmup: int

    @property
    def total(self) -> int:
        return self.rounds * self.per_round


FULL = Sizes(rounds=20, per_round=250, warmup=300)
QUICK = Sizes(rounds=2, per_round=10, warmup=5)


def certauth_settings(**overrides: Any) -> override_settings:
    from django.conf import settings

    return override_settings(CERTAUTH={**settings.CERTAUTH, **overrides})


def trust_available() -> bool:
    return importlib.util.find_spec("certauth.trust") is not None


class Fixtures:
    """The identities, certificates, token and prebuilt requests of section 1."""

    def __init__(self, sizes: Sizes) -> None:
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        self.root = devpki.make_ca("certauth bench root")
        if trust_available():
            from .trust_setup import trust_root

            # The shipped default is ALLOWED_CERTIFICATE_TYPES "chained": the issuer must be trusted.
            trust_root(self.root)
        self.issuer = certs.FastIssuer(self.root)
        pinned = self.issuer.issue(PINNED_IDENTITY)
        cold = self.issuer.issue_many("bench-cold", sizes.total + sizes.warmup + 1)
        certs.register_many(PINNED_IDENTITY, [pinned])
        certs.register_many("bench-cold", cold)
        user, _ = get_user_model().objects.get_or_create(username="bench-token-user")
        token, _ = Token.objects.get_or_create(user=user)

        self.pinned_env = environ("/bench/certificate/", certificate_headers(certs.escaped(pinned)))
        # The baseline: the certificate view's JSON without authentication, next to it in the URLconf (not
        # /api/ping/, which resolves through the project's URLs: more patterns, a different body).
        self.ping_env = environ("/bench/open-certificate/", certificate_headers(certs.escaped(pinned)))
        self.token_env = environ("/bench/token/", {"HTTP_AUTHORIZATION": f"Token {token.key}"})
        self.cold_envs = [environ("/bench/certificate/", certificate_headers(certs.escaped(c))) for c in cold]
        self.pinned = pinned


def run(sizes: Sizes) -> list[Row]:
    driver = Driver()
    fixtures = Fixtures(sizes)
    phase_a: dict[str, Callable[[], object]] = {
        "no auth": driver.caller(fixtures.ping_env),
        "DRF TokenAuthentication": driver.caller(fixtures.token_env),
        "certauth pinned, warm": driver.caller(fixtures.pinned_env),
        "certauth pinned, cold (new certificate each request)": driver.sequence_caller(fixtures.cold_envs),
    }
    stats = interleaved(phase_a, rounds=sizes.rounds, per_round=sizes.per_round, warmup=sizes.warmup)
    paired = alternating(
        phase_a["no auth"],
        phase_a["certauth pinned, warm"],
        rounds=sizes.rounds,
        per_round=sizes.per_round,
        warmup=sizes.warmup,
    )
    base = stats["no auth"]
    token = stats["DRF TokenAuthentication"]
    warm = stats["certauth pinned, warm"]
    cold = stats["certauth pinned, cold (new certificate each request)"]
    rows = [
        _row("no auth (/bench/open-certificate/: the same view's JSON unauthenticated, baseline)", base, base, "", ""),
        _row("DRF TokenAuthentication", token, base, "", ""),
        _row(
            "certauth pinned, warm (batches interleaved with the rows above)",
            warm,
            base,
            "≤ 1.10x no-auth",
            ratio_verdict(warm.median_us / base.median_us, 1.10),
        ),
        Row(
            SECTION,
            "certauth pinned, warm vs no auth, alternating request by request (the WSGI handler)",
            f"{us(paired.b.median_us)} vs {us(paired.a.median_us)}",
            "",
            f"{paired.ratio:.2f}x",
            "≤ 1.05x no-auth",
            ratio_verdict(paired.ratio, 1.05),
            f"median of {len(paired.ratios)} per-round ratios, spread {paired.spread}",
        ),
        Row(
            SECTION,
            "certauth pinned warm vs TokenAuthentication",
            us(warm.median_us),
            us(warm.p99_us),
            f"{warm.median_us / token.median_us:.2f}x token",
            "≤ 0.80x token",
            ratio_verdict(warm.median_us / token.median_us, 0.80),
        ),
        Row(
            SECTION,
            "certauth pinned, cold (first sight)",
            us(cold.median_us),
            us(cold.p99_us),
            f"{cold.median_us / base.median_us:.2f}x (+{cold.median_us - base.median_us:,.0f} µs)",
            "≤ +1,000 µs over no-auth",
            "PASS" if cold.median_us - base.median_us <= 1000 else "MISS",
        ),
    ]
    # The shape of an outside measurement: Django's test clients, nginx's headers, DRF with no authentication.
    rows += warm_client.rows(
        rounds=sizes.rounds, per_round=sizes.per_round, warmup=sizes.warmup, section=SECTION, root=fixtures.root
    )
    rows += _strict(driver, fixtures, sizes)
    rows += _chain_and_crl(driver, fixtures, sizes)
    rows += _chain_and_ocsp(driver, fixtures, sizes)
    rows += _rule_admitted(driver, fixtures, sizes)
    return rows


def _row(name: str, stats: Stats, base: Stats, target: str, verdict: str, note: str = "") -> Row:
    return Row(
        SECTION,
        name,
        us(stats.median_us),
        us(stats.p99_us),
        f"{stats.median_us / base.median_us:.2f}x",
        target,
        verdict,
        note,
    )


REDIS = ("127.0.0.1", 6379)


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=0.5):
            return True
    except OSError:
        return False


def _strict(driver: Driver, fixtures: Fixtures, sizes: Sizes) -> list[Row]:
    def measure() -> dict[str, Stats]:
        return interleaved(
            {
                "no auth": driver.caller(fixtures.ping_env),
                "strict": driver.caller(fixtures.pinned_env),
            },
            rounds=sizes.rounds,
            per_round=sizes.per_round,
            warmup=sizes.warmup,
        )

    with certauth_settings(REGISTRY_MAX_STALENESS_SECONDS=0):
        stats = measure()
    rows = [
        _row(
            "certauth pinned, warm, strict (staleness 0: generation read from the database per request)",
            stats["strict"],
            stats["no auth"],
            "",
            "",
            "ratio to its own baseline",
        )
    ]
    # Strict mode never reads a shared cache (it cannot vouch for freshness, the database is read anyway);
    # with a bound, the shared counter is read on every request between the database reads.
    name = "certauth pinned, warm, staleness 1 s, shared Redis counter read per request (SHARED_CACHE_ALIAS)"
    if not redis_answers():
        return [*rows, Row(SECTION, name, "n/a (no Redis on 127.0.0.1:6379)")]
    from django.conf import settings

    redis = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://{REDIS[0]}:{REDIS[1]}/13",
        "KEY_PREFIX": f"certauth-bench-{uuid.uuid4().hex}",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
    with override_settings(CACHES={**settings.CACHES, "bench-shared": redis}):
        with certauth_settings(REGISTRY_MAX_STALENESS_SECONDS=1, SHARED_CACHE_ALIAS="bench-shared"):
            stats = measure()
        from django.core.cache import caches

        from certauth.registry import generation_key

        caches["bench-shared"].delete(generation_key())  # the only key certauth wrote (never FLUSHDB)
    rows.append(_row(name, stats["strict"], stats["no auth"], "", "", "ratio to its own baseline"))
    return rows


def _chain_and_crl(driver: Driver, fixtures: Fixtures, sizes: Sizes) -> list[Row]:
    name = "certauth chain validation + CRL, warm"
    if not trust_available():
        return [Row(SECTION, name, "n/a (trust policy not available)", target="≤ 1.15x no-auth", verdict="n/a")]
    from . import trust_setup

    with trust_setup.chain_and_crl(fixtures.root, revoked_serials=100):
        stats = interleaved(
            {"no auth": driver.caller(fixtures.ping_env), "chain": driver.caller(fixtures.pinned_env)},
            rounds=sizes.rounds,
            per_round=sizes.per_round,
            warmup=sizes.warmup,
        )
    ratio = stats["chain"].median_us / stats["no auth"].median_us
    return [_row(name, stats["chain"], stats["no auth"], "≤ 1.15x no-auth", ratio_verdict(ratio, 1.15))]


def _chain_and_ocsp(driver: Driver, fixtures: Fixtures, sizes: Sizes) -> list[Row]:
    """OCSP (REVOCATION_MODE "ocsp") against a real ``openssl ocsp`` on loopback: a warm request (the answer
    is cached until nextUpdate: no network), and first sight (a new certificate each request: chain
    validation plus one responder round trip)."""
    name = "certauth chain validation + OCSP, warm"
    if not trust_available() or shutil.which("openssl") is None:
        return [Row(SECTION, name, "n/a (no openssl)", target="≤ 1.10x no-auth", verdict="n/a")]
    from . import trust_setup

    # First sight is dominated by the round trip to a single-process responder: fewer samples suffice.
    first = Sizes(rounds=max(1, sizes.rounds // 4), per_round=max(1, sizes.per_round // 5), warmup=2)
    fresh = fixtures.issuer.issue_many("bench-ocsp-first", first.total + first.warmup + 1)
    certs.register_many("bench-ocsp-first", fresh)
    fresh_envs = [environ("/bench/certificate/", certificate_headers(certs.escaped(c))) for c in fresh]
    with trust_setup.chain_and_ocsp(fixtures.root, [fixtures.pinned, *fresh]):
        warm = interleaved(
            {"no auth": driver.caller(fixtures.ping_env), "ocsp": driver.caller(fixtures.pinned_env)},
            rounds=sizes.rounds,
            per_round=sizes.per_round,
            warmup=sizes.warmup,
        )
        cold = interleaved(
            {"no auth": driver.caller(fixtures.ping_env), "first": driver.sequence_caller(fresh_envs)},
            rounds=first.rounds,
            per_round=first.per_round,
            warmup=first.warmup,
        )
    ratio = warm["ocsp"].median_us / warm["no auth"].median_us
    extra = cold["first"].median_us - cold["no auth"].median_us
    return [
        _row(name, warm["ocsp"], warm["no auth"], "≤ 1.10x no-auth", ratio_verdict(ratio, 1.10)),
        Row(
            SECTION,
            "certauth chain validation + OCSP, first sight (one responder round trip on loopback)",
            us(cold["first"].median_us),
            us(cold["first"].p99_us),
            f"{cold['first'].median_us / cold['no auth'].median_us:.2f}x (+{extra:,.0f} µs)",
            "",
            "",
            "openssl ocsp (one process) on 127.0.0.1; includes chain validation of a never-seen certificate",
        ),
    ]


def _rule_admitted(driver: Driver, fixtures: Fixtures, sizes: Sizes) -> list[Row]:
    """A certificate admitted by an identity rule: not remembered like a pinned acceptance, so every request
    runs the registry lookups (entry, same-certificate check, rule match) from the per-worker caches."""
    name = "certauth rule-admitted, warm (registry caches, not the remembered acceptance)"
    if not trust_available():
        return [Row(SECTION, name, "n/a (trust policy not available)")]
    from certauth.models import CertificateIdentity, TrustedAuthority

    from .trust_setup import AUTHORITY_NAME

    CertificateIdentity.objects.update_or_create(
        name="bench-rule",
        defaults={
            "match_authority": TrustedAuthority.objects.get(name=AUTHORITY_NAME),
            "match_field": "uri_san",
            "match_pattern": "spiffe://bench/bench-rule",
        },
    )
    rule_env = environ("/bench/certificate/", certificate_headers(certs.escaped(fixtures.issuer.issue("bench-rule"))))
    stats = interleaved(
        {"no auth": driver.caller(fixtures.ping_env), "rule": driver.caller(rule_env)},
        rounds=sizes.rounds,
        per_round=sizes.per_round,
        warmup=sizes.warmup,
    )
    return [_row(name, stats["rule"], stats["no auth"], "", "", "ratio to its own baseline")]

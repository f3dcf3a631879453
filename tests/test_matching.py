"""The identity-rule pattern language (certauth.matching, pure): what '*' may cross, which names are names, which
patterns are refused, and which CAs may vouch for which kind of name.  Property-based tests (hypothesis) pin
the language against a small reference; real certificates carry the hostile names."""

from __future__ import annotations

import re

import pytest
from cryptography import x509
from hypothesis import example, given
from hypothesis import strategies as st

from certauth import devpki
from certauth.certificates import describe
from certauth.matching import (
    PatternError,
    constraints_cover,
    glob_matches,
    is_ambiguous,
    pattern_matches,
    rule_matches,
    validate_pattern,
)

from .nameutil import KELVIN, constrained_ca, leaf

# --- '*' in one part of a name -------------------------------------------------------------------------------
GLOB_TEXT = st.text(alphabet="ab*", max_size=12)


@given(pattern=GLOB_TEXT, value=st.text(alphabet="ab", max_size=12))
def test_glob_is_exactly_a_star_only_shell_glob(pattern: str, value: str) -> None:
    reference = "".join(".*" if c == "*" else re.escape(c) for c in pattern)
    assert glob_matches(pattern, value) == bool(re.fullmatch(reference, value, re.DOTALL))


def test_glob_has_no_backtracking_blowup() -> None:
    # A pattern that makes a backtracking matcher explore ~n^k paths: the leftmost-find matcher answers at once.
    assert not glob_matches("*a" * 40 + "*b", "a" * 4000)
    assert glob_matches("*a" * 40 + "*b", "a" * 4000 + "b")


# --- DNS names ------------------------------------------------------------------------------------------------
DNS_LABEL = st.text(alphabet="aAb-", min_size=1, max_size=4)
DNS_NAME = st.lists(DNS_LABEL, min_size=1, max_size=4).map(".".join)
DNS_PATTERN_LABEL = st.text(alphabet="aAb-*", min_size=1, max_size=4).filter(lambda label: "**" not in label)
DNS_PATTERN = st.lists(DNS_PATTERN_LABEL, min_size=1, max_size=4).map(".".join)


def _dns_reference(pattern: str, value: str) -> bool:
    """'*' = any run of characters but '.', ASCII case-insensitive."""
    regex = "".join("[^.]*" if c == "*" else re.escape(c) for c in pattern)
    return bool(re.fullmatch(regex, value, re.ASCII | re.IGNORECASE))


@given(pattern=DNS_PATTERN, value=DNS_NAME)
def test_dns_star_stays_within_one_label(pattern: str, value: str) -> None:
    matched = pattern_matches("dns_san", pattern, value)
    assert matched == _dns_reference(pattern, value)
    if matched:
        assert value.count(".") == pattern.count(".")


@given(pattern=DNS_PATTERN, value=DNS_NAME)
def test_a_leading_double_star_is_one_or_more_labels(pattern: str, value: str) -> None:
    deep = f"**.{pattern}"
    expected = any(_dns_reference(pattern, ".".join(value.split(".")[cut:])) for cut in range(1, value.count(".") + 1))
    assert pattern_matches("dns_san", deep, value) == expected


def test_dns_examples() -> None:
    assert pattern_matches("dns_san", "*.clients.example", "API.Clients.Example")
    assert not pattern_matches("dns_san", "*.clients.example", "a.b.clients.example")
    assert not pattern_matches("dns_san", "*.clients.example", "clients.example")
    assert pattern_matches("dns_san", "**.clients.example", "a.b.clients.example")
    assert pattern_matches("dns_san", "api-*.clients.example", "api-7.clients.example")
    assert not pattern_matches("dns_san", "*.clients.example", "a.clients.example.")  # trailing dot: not a name
    assert not pattern_matches("dns_san", "*.clients.example", "*.clients.example")  # a wildcard SAN is no name


# --- non-ASCII names never match ---------------------------------------------------------------------------------
#: Characters that lower() or casefold() turn into ASCII letters: a name holding one only looks like ASCII.
FOLDING_INTO_ASCII = [KELVIN, "\u017f", "\u0130", "\ufb01", "\u212b"]  # Kelvin, long s, dotted I, fi ligature, angstrom
PATTERNS_BY_FIELD = {
    "dns_san": ["*", "*.*", "**.*", "*.*.*"],
    "email_san": ["*@*", "*@*.*", "*@**.*"],
    "uri_san": ["spiffe://*/**", "https://*.*/**", "spiffe://**.*/**"],
    "subject_cn": ["*", "*.*", "* *"],
}


@given(field=st.sampled_from(sorted(PATTERNS_BY_FIELD)), data=st.data(), value=st.text(max_size=40))
def test_a_matched_name_is_always_ascii(field: str, data: st.DataObject, value: str) -> None:
    pattern = data.draw(st.sampled_from(PATTERNS_BY_FIELD[field]))
    if pattern_matches(field, pattern, value):
        assert value.isascii() and value.isprintable()


@pytest.mark.parametrize("character", FOLDING_INTO_ASCII)
@pytest.mark.parametrize(
    ("field", "ascii_value"),
    [("dns_san", "sfik.clients.example"), ("email_san", "sfik@clients.example"), ("uri_san", "spiffe://sfik/sa")],
)
def test_characters_that_fold_into_ascii_never_match(field: str, ascii_value: str, character: str) -> None:
    hostile = ascii_value.replace("k", character)
    assert hostile.casefold() != hostile  # it does fold...
    assert pattern_matches(field, ascii_value, ascii_value)
    assert not pattern_matches(field, ascii_value, hostile)  # ...but is not the name the rule spells
    assert not pattern_matches(field, hostile.casefold(), hostile)


def test_kelvin_sign_sans_of_a_real_certificate_match_no_ascii_rule() -> None:
    root = devpki.make_ca("kelvin root")
    issued = leaf(
        root,
        ["k"],
        dns=[f"{KELVIN}ey.clients.example"],
        emails=[f"ops@{KELVIN}ey.example"],
        uris=[f"spiffe://{KELVIN}ey.example/sa/api"],
    )
    info = describe(issued.certificate)
    assert info.dns_names == (f"{KELVIN}ey.clients.example",)  # the certificate does carry the sign
    for field, pattern in [
        ("dns_san", "key.clients.example"),
        ("dns_san", "*.clients.example"),
        ("email_san", "ops@key.example"),
        ("email_san", "*@*.example"),
        ("uri_san", "spiffe://key.example/sa/api"),
        ("uri_san", "spiffe://*.example/**"),
    ]:
        assert not rule_matches(field, pattern, info), (field, pattern)


# --- URIs -------------------------------------------------------------------------------------------------------
URI_SEGMENT = st.sampled_from(["a", "b", "A", "x.y", "ns", "..", ".", "", "%2f", "%2F", "%2e", "%20", "@", "a:b"])
URI_PATH = st.lists(URI_SEGMENT, min_size=1, max_size=4).map("/".join)
URI_HOST = st.sampled_from(["prod", "prod.example", "evil.example", "PROD", "u@prod", "prod:8443", "prod:x"])
URI_PATTERN_SEGMENT = st.sampled_from(["a", "b", "*", "ns", "x.y", "*.y", "a*"])


@given(host=URI_HOST, path=URI_PATH, pattern_path=st.lists(URI_PATTERN_SEGMENT, min_size=1, max_size=4))
def test_uri_star_stays_within_one_segment_and_hostile_paths_never_match(
    host: str, path: str, pattern_path: list[str]
) -> None:
    value = f"spiffe://{host}/{path}"
    for pattern in (f"spiffe://*/{'/'.join(pattern_path)}", f"spiffe://*/{'/'.join(pattern_path)}/**"):
        if not pattern_matches("uri_san", pattern, value):
            continue
        segments = path.split("/")
        assert "@" not in host  # no userinfo
        assert not {"", ".", ".."} & set(segments)
        assert "%2f" not in path.lower() and "%2e" not in path.lower()
        if not pattern.endswith("/**"):
            assert len(segments) == len(pattern_path)  # '*' crossed no '/'
        else:
            assert len(segments) > len(pattern_path)


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        # The two examples of the security review: '*' must not cross '/' in the path or reach it from the host.
        ("spiffe://*/ns/billing/sa/api", "spiffe://evil.example/x/ns/billing/sa/api"),
        ("https://*.example.com/svc", "https://evil.org/x.example.com/svc"),
        ("spiffe://prod.example/ns/billing/*", "spiffe://prod.example/ns/billing/sa/api"),
        ("spiffe://prod.example/ns/*/sa/api", "spiffe://prod.example/ns/billing/../../ns/billing/sa/api"),
        ("spiffe://prod.example/ns/**", "spiffe://prod.example/ns/billing/../../admin"),
        ("spiffe://prod.example/ns/**", "spiffe://prod.example/ns/./billing"),
        ("spiffe://prod.example/ns/**", "spiffe://prod.example/ns//billing"),
        ("spiffe://prod.example/ns/*/sa/api", "spiffe://prod.example/ns/billing%2fsa/sa/api"),
        ("spiffe://prod.example/ns/*/sa/api", "spiffe://prod.example/ns/%2e%2e/sa/api"),
        ("spiffe://prod.example/ns/*/sa/api", "spiffe://prod.example/ns/%62illing/sa/api"),  # %62 = b
        ("https://*.example.com/svc", "https://a.example.com@evil.org/svc"),
        ("https://*.example.com/svc", "https://evil.org\\@a.example.com/svc"),
        ("https://a.example.com/svc", "https://a.example.com/svc?x=1"),
        ("https://a.example.com/svc", "https://a.example.com/svc#frag"),
        ("https://a.example.com/svc", "https://a.example.com/svc/"),
        ("https://a.example.com/*", "https://a.example.com/Svc/"),
        ("spiffe://*/*", "spiffe://prod/"),  # a path of just "/" has no segment for '*' to match
    ],
)
def test_uri_tricks_never_match(pattern: str, value: str) -> None:
    validate_pattern("uri_san", pattern)
    assert not pattern_matches("uri_san", pattern, value)


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        ("spiffe://*/ns/billing/sa/api", "spiffe://prod/ns/billing/sa/api"),
        ("spiffe://*.example/ns/billing/sa/api", "spiffe://prod.example/ns/billing/sa/api"),
        ("spiffe://prod.example/ns/billing/**", "spiffe://prod.example/ns/billing/sa/api"),
        ("https://*.example.com/svc", "HTTPS://A.Example.COM/svc"),  # scheme and host: case-insensitive
        ("https://a.example.com:8443/svc-*", "https://a.example.com:8443/svc-7"),
        ("https://a.example.com/a%20b", "https://a.example.com/a%20b"),
        ("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", "URN:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
    ],
)
def test_uri_patterns_match_what_they_say(pattern: str, value: str) -> None:
    assert pattern_matches("uri_san", pattern, value)


def test_uri_path_and_port_are_exact() -> None:
    assert not pattern_matches("uri_san", "spiffe://prod/ns/billing", "spiffe://prod/ns/Billing")
    assert not pattern_matches("uri_san", "https://a.example/svc", "https://a.example:443/svc")


# --- emails and CNs -----------------------------------------------------------------------------------------------
def test_email_star_stays_in_the_local_part_or_one_label() -> None:
    assert pattern_matches("email_san", "*@example.org", "First.Last@Example.ORG")
    assert pattern_matches("email_san", "First.*@example.org", "First.Last@Example.ORG")
    assert not pattern_matches("email_san", "first.*@example.org", "First.Last@example.org")  # local part: exact
    assert not pattern_matches("email_san", "*@example.org", "a@evil.example.org")
    assert not pattern_matches("email_san", "*@example.org", "a@example.org@evil.example")
    assert not pattern_matches("email_san", "*@example.org", '"a@b"@example.org')
    assert pattern_matches("email_san", "ops@*.example.org", "ops@eu.example.org")
    assert not pattern_matches("email_san", "ops@*.example.org", "ops@a.eu.example.org")
    assert pattern_matches("email_san", "ops@**.example.org", "ops@a.eu.example.org")


def test_cn_star_never_crosses_dot_slash_or_at() -> None:
    assert pattern_matches("subject_cn", "billing-*", "billing-7")
    assert pattern_matches("subject_cn", "Billing *", "Billing Service")
    assert not pattern_matches("subject_cn", "billing-*", "Billing-7")  # CN: exact case
    for value in ("billing-7.evil.example", "billing-x/y", "billing-x@evil"):
        assert not pattern_matches("subject_cn", "billing-*", value)
    assert pattern_matches("subject_cn", "*.prod.example", "billing.prod.example")
    assert not pattern_matches("subject_cn", "billing", "billing\\x00")  # an escaped control character
    assert not pattern_matches("subject_cn", "billing*", "billing\\x0a")


@given(pattern=st.text(alphabet="ab*.@/ ", min_size=1, max_size=10), value=st.text(alphabet="ab.@/ ", max_size=10))
# Matching pairs, so the assertion below runs on every run (random pairs rarely match).
@example(pattern="a*.b", value="aab.b")
@example(pattern="*@a/*", value="b@a/ab")
def test_cn_star_never_crosses_a_separator(pattern: str, value: str) -> None:
    try:
        validate_pattern("subject_cn", pattern)
    except PatternError:
        return
    if pattern_matches("subject_cn", pattern, value):
        assert re.sub(r"[^./@]", "", value) == re.sub(r"[^./@]", "", pattern)  # the same separators, in order


@given(value=st.text(alphabet="ab.@/ ", min_size=1, max_size=12), data=st.data())
def test_cn_star_matches_anything_within_a_part(value: str, data: st.DataObject) -> None:
    if value != value.strip():
        return
    parts = re.split(r"([./@])", value)
    starred = [
        part
        if index % 2 or not data.draw(st.booleans())
        else data.draw(st.sampled_from(["*", f"*{part[1:]}", f"{part[:1]}*"]))
        for index, part in enumerate(parts)
    ]
    pattern = "".join(starred)
    if pattern != pattern.strip():
        return
    assert pattern_matches("subject_cn", pattern, value)
    if "*" in pattern:  # one more separator in the value: no longer the same parts
        assert not pattern_matches("subject_cn", pattern, value + ".x")


@given(
    pattern=st.from_regex(r"[ab*.]{1,5}@[ab*]{1,3}(\.[ab*]{1,3}){0,2}", fullmatch=True),
    value=st.one_of(st.from_regex(r"[aAb.]{1,5}@[aAb]{1,3}(\.[aAb]{1,3}){0,3}", fullmatch=True), st.emails()),
)
@example(pattern="a*@b.a", value="ab@b.a")
@example(pattern="*@**.a", value="b@a.b.a")
def test_email_star_never_crosses_the_at_or_a_domain_dot(pattern: str, value: str) -> None:
    try:
        validate_pattern("email_san", pattern)
    except PatternError:
        return
    if pattern_matches("email_san", pattern, value):
        assert value.count("@") == 1 and value.isascii()
        domain, pattern_domain = value.split("@")[1], pattern.split("@")[1]
        if pattern_domain.startswith("**."):  # any depth, written out: one or more labels
            assert domain.count(".") >= pattern_domain.count(".")
        else:
            assert domain.count(".") == pattern_domain.count(".")


@given(
    local=st.from_regex(r"[a-zA-Z0-9._+-]{1,12}", fullmatch=True).filter(
        lambda local: not local.startswith(".") and not local.endswith(".") and ".." not in local
    ),
    domain=st.from_regex(r"[a-zA-Z0-9-]{1,10}(\.[a-zA-Z0-9-]{1,10}){0,2}", fullmatch=True),
)
def test_an_email_local_part_compares_exactly_and_its_domain_case_insensitively(local: str, domain: str) -> None:
    """RFC 5321: the local part is case-sensitive, and the chain verifier compares a mailbox NameConstraint's local
    part exactly; folding it here would let a sub-CA excluded from ``ceo@victim.example`` mint ``CEO@...``."""
    assert pattern_matches("email_san", f"{local}@{domain}", f"{local}@{domain.swapcase()}")
    if local.swapcase() != local:
        assert not pattern_matches("email_san", f"{local}@{domain}", f"{local.swapcase()}@{domain}")
        assert not pattern_matches("email_san", f"{local.swapcase()}@{domain}", f"{local}@{domain}")


# --- patterns refused when saved ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "pattern", "message"),
    [
        ("subject_cn", "billing-?", "only wildcard is '*'"),
        ("dns_san", "[ab].clients.example", "only wildcard is '*'"),
        ("uri_san", "https://[::1]/svc", "only wildcard is '*'"),
        ("dns_san", "a.**.example", "leftmost label"),
        ("dns_san", "**", "at least one label"),
        ("dns_san", "a..example", "single dots"),
        ("dns_san", "clients.example.", "single dots"),
        ("dns_san", f"{KELVIN}ey.example", "ASCII"),
        ("email_san", "a@b@example.org", "exactly one '@'"),
        ("email_san", "**@example.org", "local part"),
        ("uri_san", "spiffe://prod/ns/**/api", "whole last segment"),
        ("uri_san", "spiffe://prod/ns/../api", "'..'"),
        ("uri_san", "spiffe://prod/ns/./api", "'.'"),
        ("uri_san", "spiffe://prod/ns/a%2Fb", "percent-encoded"),
        ("uri_san", "spiffe://prod/ns/", "trailing"),
        ("uri_san", "https://user@a.example/svc", "user information"),
        ("uri_san", "https://a.example:*/svc", "port"),
        ("uri_san", "urn:uuid:*", "matched exactly"),
        ("uri_san", "prod/ns/billing", "scheme"),
        ("subject_cn", "billing**", "'**'"),
        ("subject_cn", " billing", "spaces"),
    ],
)
def test_invalid_patterns_are_refused_with_a_reason(field: str, pattern: str, message: str) -> None:
    with pytest.raises(PatternError, match=re.escape(message)):
        validate_pattern(field, pattern)
    assert not pattern_matches(field, pattern, pattern)  # and a stored one matches nothing


def test_a_rule_on_an_unknown_field_matches_nothing_and_never_raises() -> None:
    info = describe(leaf(devpki.make_ca("unknown-field root"), ["billing-service"], dns=["a.example"]).certificate)
    assert not rule_matches("subject_o", "billing-service", info)
    assert not rule_matches("", "a.example", info)
    assert rule_matches("dns_san", "a.example", info)


# --- several CNs ----------------------------------------------------------------------------------------------
def test_a_subject_with_several_cns_is_ambiguous_for_a_cn_rule_only() -> None:
    root = devpki.make_ca("multi-cn root")
    info = describe(leaf(root, ["billing-service", "admin-service"], dns=["billing.clients.example"]).certificate)
    assert info.common_names == ("billing-service", "admin-service")
    assert is_ambiguous("subject_cn", info)
    assert not is_ambiguous("dns_san", info)
    single = describe(leaf(root, ["billing-service"], dns=["billing.clients.example"]).certificate)
    assert not is_ambiguous("subject_cn", single)


# --- name constraints: who may vouch for which kind of name ----------------------------------------------------
def test_a_name_constrained_ca_vouches_only_for_the_name_types_it_constrains() -> None:
    root = devpki.make_ca("nc root")
    plain = devpki.make_ca("plain intermediate", issuer=root)
    dns_only = constrained_ca(root, "team CA", permitted=[x509.DNSName("team.example")])
    email_excluded = constrained_ca(root, "mail CA", excluded=[x509.RFC822Name("evil.example")])
    for field in ("subject_cn", "dns_san", "uri_san", "email_san"):
        assert constraints_cover(field, [])  # issued directly by the rule's authority
        assert constraints_cover(field, [plain.certificate])  # an unconstrained CA vouches for any name
    assert constraints_cover("dns_san", [dns_only.certificate])
    assert not constraints_cover("subject_cn", [dns_only.certificate])  # name constraints never cover the CN
    assert not constraints_cover("uri_san", [dns_only.certificate])  # nor a type they do not name
    assert not constraints_cover("email_san", [dns_only.certificate])
    assert constraints_cover("email_san", [email_excluded.certificate])
    assert not constraints_cover("dns_san", [plain.certificate, email_excluded.certificate])  # any CA on the path


# --- cost of a request: rules x SANs ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_each_san_is_parsed_once_per_request_not_once_per_rule(api, pki, trusted_root, monkeypatch) -> None:
    """Review 4: ``matching.rule_matches`` re-parsed every SAN of the certificate for every stored rule, and
    ``compile_pattern``'s cache (1,024 entries) is smaller than a registry with more rules, so every rule was
    compiled again on every request.  A holder of a (constrained) sub-CA mints a fresh certificate per request
    (the per-certificate cache never hits) carrying a few hundred URI SANs (a DNS-only constraint does not
    restrict them): measured 3.4 s of CPU per request with 1,000 rules x 200 URIs, 17.5 s with 5,000 rules.
    Counted here, not timed: the value parser runs about once per SAN, not once per (rule, SAN), and the rules'
    patterns are compiled when the rules load, not per request."""
    from certauth import matching
    from certauth.models import CertificateIdentity
    from certauth.registry import registry

    CertificateIdentity.objects.bulk_create(
        CertificateIdentity(
            name=f"svc{i}",
            match_authority=trusted_root,
            match_field="uri_san",
            match_pattern=f"spiffe://prod.example/ns/team{i}/sa/*",
        )
        for i in range(1100)
    )
    registry.invalidate()
    parsed = [0]
    parse_uri = matching._PARSERS["uri_san"]

    def counting(value: str) -> object:
        parsed[0] += 1
        return parse_uri(value)

    monkeypatch.setitem(matching._PARSERS, "uri_san", counting)
    sans = [f"spiffe://prod.example/ns/n{i}/sa/x" for i in range(20)]
    first = leaf(pki.root, ["mallory"], uris=sans)
    assert api.get("/api/whoami/", first).status_code == 401
    misses = matching.compile_pattern.cache_info().misses
    second = leaf(pki.root, ["mallory"], uris=sans)  # a new certificate: no per-certificate cache helps
    parsed[0] = 0
    assert api.get("/api/whoami/", second).status_code == 401
    assert parsed[0] <= 2 * len(sans), f"{parsed[0]} URI parses for {len(sans)} SANs"
    assert matching.compile_pattern.cache_info().misses == misses, "the unchanged rules were compiled again"
    # ...and the precompiled rules still admit what they say.
    CertificateIdentity.objects.filter(name="svc7").update(match_pattern="spiffe://prod.example/ns/n3/sa/*")
    registry.invalidate()
    assert api.get("/api/whoami/", leaf(pki.root, ["svc"], uris=sans)).json()["identity"] == "svc7"

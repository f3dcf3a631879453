"""A tiny run of the benchmark code so it does not rot.  No timing is asserted: only that every
scenario answers what it should and that a table is produced."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.django_db(transaction=True)
def test_in_process_section_runs_and_every_scenario_answers(settings: Any) -> None:
    from bench import inprocess
    from bench.report import Report

    settings.ROOT_URLCONF = "bench.urls"
    rows = inprocess.run(inprocess.Sizes(rounds=1, per_round=3, warmup=1))
    names = [row.name for row in rows]
    assert names[0].startswith("no auth")
    assert any("TokenAuthentication" in name for name in names)
    assert any("cold" in name for name in names)
    assert any("strict" in name for name in names)
    # The outside harness's shape (bench.warm_client): sync test client and ASGI AsyncClient, both answered 200.
    assert any("WSGI test client" in name for name in names) and any("ASGI AsyncClient" in name for name in names)
    assert any("OCSP, warm" in name for name in names) and any("OCSP, first sight" in name for name in names)
    assert all(row.value for row in rows)
    table = Report(rows=rows).table()
    assert table.count("\n") == len(rows) + 1


def test_stats_median_and_p99() -> None:
    from bench.measure import Stats

    stats = Stats.of([1000 * n for n in range(1, 101)])
    assert stats.samples == 100
    assert stats.median_us == pytest.approx(50.5)
    assert stats.p99_us == pytest.approx(99.0)


def test_ab_output_parsing(tmp_path: Any, monkeypatch: Any) -> None:
    import subprocess

    from bench import endtoend

    csv_path = tmp_path / "ab.csv"
    csv_path.write_text("Percentage served,Time in ms\n50,1.250\n99,7.500\n")
    stdout = (
        "Complete requests:      100\nFailed requests:        0\nKeep-Alive requests:    100\n"
        "Requests per second:    1234.56 [#/sec] (mean)\n"
    )
    monkeypatch.setattr(
        subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=stdout, stderr="")
    )
    result = endtoend.ab("https://127.0.0.1:1/", tmp_path / "b.pem", requests=100, concurrency=1,
                         csv_path=csv_path, timeout=5)  # fmt: skip
    assert (result.rps, result.p50_ms, result.p99_ms, result.keep_alive, result.non_2xx) == (1234.56, 1.25, 7.5, 100, 0)


def test_open_whoami_twin_answers_exactly_what_whoami_answers(
    api, pki, register, settings, tmp_path, monkeypatch
) -> None:
    """The end-to-end baseline differs from /api/whoami/ only by authentication: same view code, same bytes."""
    from bench import views

    settings.ROOT_URLCONF = "bench.urls"
    register(pki.client, scopes="orders:read orders:write")
    pem = tmp_path / "client.pem"
    pem.write_bytes(pki.client.cert_pem())
    monkeypatch.setenv(views.WHOAMI_CERTIFICATE_ENV, str(pem))
    views._whoami_auth.cache_clear()
    try:
        whoami = api.get("/api/whoami/", pki.client)
        twin = api.get("/bench/open-whoami/")  # no certificate at all
    finally:
        views._whoami_auth.cache_clear()
    assert whoami.status_code == twin.status_code == 200
    assert twin.content == whoami.content

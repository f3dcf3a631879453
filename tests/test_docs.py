"""The README documents every setting and every reason code (so the docs cannot silently rot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from certauth.conf import DEFAULTS
from certauth.reasons import Reason

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`{name}`" in README


@pytest.mark.parametrize("reason", list(Reason), ids=[str(r) for r in Reason])
def test_every_reason_code_is_documented(reason: Reason) -> None:
    assert f"`{reason}`" in README


def test_the_two_commands_are_the_quick_start() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make run" in quick_start and "make test" in quick_start
